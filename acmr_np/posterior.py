"""A label-posterior baseline: one softmax regression per modality, retrieval by the
cosine between the two modalities' class-probability vectors.

Where CCA (cca.py) uses only the pairing, this baseline uses only the labels: each
modality learns, on its own, to predict the class, and an image and a text are close
when they are predicted to belong to the same classes. It is the "semantic matching"
idea of Rasiwasia et al. (2010), the paper that introduced the Wikipedia features, and
the reference `../shared/ACMR.md` quotes (0.278 / 0.212 / 0.245 on Wikipedia): a
method that learns a common space from the labels, as ACMR's L_imd does, should beat it.

For one modality with training features X (n, d) and labels y_i in 0..c-1:

    standardise:  X~ = (X - 1 mu^T) / sigma        mu, sigma (d,): the training split's
                                                    mean and std (sigma = 1 where 0)
    logits:       Z = X~ W + 1 b^T                  W (d, c), b (c,)              (P1)
    posterior:    P_ik = exp(Z_ik) / sum_j exp(Z_ij)                              (P2)
    objective:    J(W, b) = -(1/n) sum_i log P_{i, y_i} + (reg/2) ||W||_F^2       (P3)

with its gradient, written by hand (Y (n, c) the one-hot labels):

    dJ/dZ = (P - Y) / n                    (losses.softmax_cross_entropy)         (P4)
    dJ/dW = X~^T dJ/dZ + reg W                                                    (P5)
    dJ/db = 1^T dJ/dZ                      (the bias is not penalised)            (P6)

J is convex (a log-sum-exp of affine maps plus a convex penalty) and strictly convex in
W for reg > 0, so the minimiser does not depend on the starting point; we start at
zero and run SciPy's L-BFGS-B in float64, which makes the fit deterministic (on one
BLAS with one thread count: another thread count changes the round-off, and with it
L-BFGS-B's stopping point, moving mAP by less than 1e-5; docs/RESULTS.md). Because
the bias is not penalised, (P6) = 0 at the optimum: the mean fitted posterior over the
training split equals the class frequencies (a test checks this).

Retrieval: an image v and a text t map to p_V(v) = softmax(W_V^T v~ + b_V) and
p_T(t) = softmax(W_T^T t~ + b_T), both in the c-simplex, and every query ranks the
other modality by cos(p_V(v), p_T(t)), exactly as ACMR's embeddings are ranked
(``embed`` returns the two probability matrices; ``metrics.evaluate_retrieval`` scores
them unchanged).

Why standardise. The penalty (reg/2)||W||^2 treats every weight alike, but a weight's
size depends on its feature's unit: the Wikipedia image features are histograms with
entries around 1/128, whose weights would have to be about 100 times those of unit-
scale features and would be penalised 10^4 times as much. Standardising with the
training statistics makes one ``reg`` mean the same for every feature and for both
modalities (and conditions the problem for L-BFGS). ACMR standardises its inputs the
same way (model.py, set_input_stats); CCA, for the same reason, scales its ridge by
each covariance's mean variance. Only the training split's statistics are used.

Why choose reg on validation. reg trades fitting the training labels against
over-fitting them, and the best trade depends on the data. It is chosen, like CCA's
number of components and ACMR's epoch, on the validation split, by the quantity that is
finally reported: the average of the two directions' mAP@all (``metrics.paired_map``),
not the validation cross-entropy. One reg serves both modalities (a single grid,
``DEFAULT_REGS``, six decades). The test split is never looked at while fitting or
choosing: ``fit_select`` does not receive it.

Multi-label data (labels as 0/1 rows y_i (c,), at least one 1 each). We keep ONE softmax
per modality and fit it to the normalised label vectors t_i = y_i / sum(y_i), i.e. (P3)
with the data term -(1/n) sum_i t_i . log P_i (label_losses.softmax_label_cross_entropy,
dJ/dZ = (P - T) / n in (P4)): the form of ACMR's default L_imd, so the baseline and the
model learn from the labels in the same way, and the embedding stays a probability
vector over the labels, compared by cosine as before. (The alternative, one logistic
regression per label, would be c independent problems; it is left out.) The optimum
still matches the mean: the mean fitted posterior equals the mean of the t_i.

Everything here runs in float64 on the host (NumPy/SciPy); one evaluation of J costs
two (n, d) x (d, c) products, with no loop over samples.
"""
from dataclasses import dataclass, field

import numpy
import scipy.optimize

from .backend import to_host
from .cca import _as_features
from .errors import InputError
from .label_losses import softmax_label_cross_entropy
from .losses import softmax_cross_entropy
from .metrics import paired_map

# The reg tried on validation: six decades. On standardised features the data term's
# gradient is O(1), so reg = 1 flattens the posteriors strongly and 1e-5 barely
# penalises at all. Measured (docs/RESULTS.md): validation chose 1e-2 on the synthetic
# data and 1e-5 to 1e-2 on Wikipedia, whose validation scores no longer move below
# 1e-4 (reg 0 scored within 1e-4 of 1e-5), so the grid needs no smaller values there.
DEFAULT_REGS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
MAX_ITER = 5000        # L-BFGS-B iterations; the fits measured here need far fewer
GTOL = 1e-7            # stop when every gradient entry is below this (J is O(1))
FTOL = 1e-13           # or when J stops falling (relative), near float64 round-off


def _as_labels(labels, n, name):
    """Class ids (n,) -> host int64, refusing anything but non-negative integers; 0/1
    label rows (n, c) (multi-label) -> host float64, at least one 1 per row."""
    labels = numpy.asarray(to_host(labels))
    if labels.ndim == 2 and labels.shape[0] == n and labels.dtype.kind in "biuf":
        if not ((labels == 0) | (labels == 1)).all():
            raise InputError(f"{name} label rows must hold only 0 and 1")
        if not labels.any(axis=1).all():
            raise InputError(f"{name} label rows need at least one 1 each; row "
                             f"{int(numpy.flatnonzero(~labels.any(axis=1))[0])} has none")
        return labels.astype(numpy.float64)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise InputError(f"{name} labels must have shape ({n},), got {labels.shape}")
    if not numpy.issubdtype(labels.dtype, numpy.integer):
        raise InputError(f"{name} labels must be integer class ids, got dtype {labels.dtype}")
    if labels.min() < 0:
        raise InputError(f"{name} labels must be non-negative class ids, got {int(labels.min())}")
    return labels.astype(numpy.int64)


def _check_reg(reg):
    if isinstance(reg, bool) or not isinstance(reg, (int, float, numpy.floating)) \
            or not (numpy.isfinite(reg) and reg >= 0):
        raise InputError(f"reg must be a non-negative number, got {reg!r}")
    return float(reg)


def _softmax(z):
    """Row-wise softmax (P2) of z (n, c), shifted by the row maximum so exp never overflows."""
    e = numpy.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def objective(weight, bias, x, labels, reg):
    """The objective (P3) and its gradient (P5, P6).

    weight (d, c), bias (c,), x (n, d) standardised features, labels (n,) in 0..c-1
    or 0/1 label rows (n, c), reg >= 0  ->  (J as a float, dJ/dW (d, c), dJ/db (c,)).
    The data term and dJ/dZ (P4) come from losses.softmax_cross_entropy (label rows:
    label_losses.softmax_label_cross_entropy, against y_i / sum(y_i)).
    """
    xent = softmax_label_cross_entropy if labels.ndim == 2 else softmax_cross_entropy
    data_loss, dlogits = xent(x @ weight + bias, labels)                    # (P1), (P4)
    loss = float(data_loss) + 0.5 * reg * float((weight * weight).sum())    # (P3)
    return loss, x.T @ dlogits + reg * weight, dlogits.sum(axis=0)          # (P5), (P6)


@dataclass
class SoftmaxRegression:
    """One modality's fitted posterior model.

    mean, std (d,): the training split's standardisation; weight (d, c), bias (c,): the
    minimiser of (P3); reg: its L2 strength; loss: J there (training split); grad_max:
    the largest |entry| of the gradient there (near 0 when converged); n_iter: L-BFGS-B
    iterations; converged: whether L-BFGS-B reported success.
    """
    mean: numpy.ndarray
    std: numpy.ndarray
    weight: numpy.ndarray
    bias: numpy.ndarray
    reg: float
    loss: float
    grad_max: float
    n_iter: int
    converged: bool

    def predict_proba(self, x, name="input"):
        """Raw features x (n, d), any float dtype or backend -> P (n, c) host float64 (P1, P2)."""
        x = _as_features(x, name)
        if x.shape[1] != self.mean.shape[0]:
            raise InputError(f"{name} features have {x.shape[1]} columns; this model was "
                             f"fitted on {self.mean.shape[0]}")
        return _softmax((x - self.mean) / self.std @ self.weight + self.bias)


def fit_softmax_regression(x, labels, reg, n_classes=None):
    """Minimise (P3) on raw training features x (n, d) with labels (n,) (or 0/1 label
    rows (n, c): the normalised label vectors are the targets).

    n_classes defaults to max(labels) + 1 (label rows: their number of columns, which
    n_classes must then equal). Standardises x with its own mean and std,
    starts at W = 0, b = 0 and runs L-BFGS-B with the hand-written gradient.
    Returns a SoftmaxRegression.
    """
    x = _as_features(x, "training")
    n, d = x.shape
    labels = _as_labels(labels, n, "training")
    reg = _check_reg(reg)
    if labels.ndim == 2:  # label rows: the columns are the labels
        present = numpy.flatnonzero(labels.any(axis=0))
        top, c = labels.shape[1] - 1, labels.shape[1]
        if n_classes is not None and int(n_classes) != c:
            raise InputError(f"n_classes is {n_classes} but the label rows have {c} columns")
    else:
        present = numpy.unique(labels)
        top = int(labels.max())
        c = top + 1 if n_classes is None else int(n_classes)
    if present.size < 2:
        raise InputError(f"the training split holds only class {int(present[0])}; "
                         f"a label posterior needs at least 2 classes")
    if c <= top:
        raise InputError(f"n_classes is {c} but the training labels reach {top}")
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = numpy.where(std > 1e-12, std, 1.0)   # a constant feature is only shifted to 0
    xs = (x - mean) / std                       # (n, d) standardised, float64

    def fun(theta):
        # theta = [W.ravel(), b]: L-BFGS-B works on one flat float64 vector
        loss, dw, db = objective(theta[:d * c].reshape(d, c), theta[d * c:], xs, labels, reg)
        return loss, numpy.concatenate([dw.ravel(), db])

    res = scipy.optimize.minimize(fun, numpy.zeros(d * c + c), jac=True, method="L-BFGS-B",
                                  options={"maxiter": MAX_ITER, "gtol": GTOL, "ftol": FTOL})
    weight, bias = res.x[:d * c].reshape(d, c).copy(), res.x[d * c:].copy()
    loss, dw, db = objective(weight, bias, xs, labels, reg)
    grad_max = float(max(numpy.abs(dw).max(), numpy.abs(db).max()))
    return SoftmaxRegression(mean, std, weight, bias, reg, loss, grad_max, int(res.nit), bool(res.success))


@dataclass
class LabelPosterior:
    """The fitted baseline: one SoftmaxRegression per modality, both with one reg.

    val_scores: {reg: validation mAP@all average} when reg was chosen on validation
    (``fit_select``), else empty.
    """
    img: SoftmaxRegression
    txt: SoftmaxRegression
    reg: float
    val_scores: dict = field(default_factory=dict)

    @property
    def n_classes(self):
        return self.img.weight.shape[1]

    def embed(self, img, txt):
        """img (n, d_img), txt (m, d_txt), raw features of any float dtype or backend ->
        (P_img (n, c), P_txt (m, c)) host float64: each row a class-probability vector
        (sums to 1), compared across modalities by cosine, like cca.CCA.embed's output."""
        return self.img.predict_proba(img, "image"), self.txt.predict_proba(txt, "text")


def fit_posterior(img, txt, labels, reg):
    """Both modalities' softmax regressions on one training split, with one reg.
    img (n, d_img), txt (n, d_txt), labels (n,) -> LabelPosterior. The class count is
    max(labels) + 1 for both, so their probability vectors live in one space."""
    img, txt = _as_features(img, "image"), _as_features(txt, "text")
    if img.shape[0] != txt.shape[0]:
        raise InputError(f"paired data expected: {img.shape[0]} images but {txt.shape[0]} texts")
    labels = _as_labels(labels, img.shape[0], "training")
    c = labels.shape[1] if labels.ndim == 2 else int(labels.max()) + 1
    return LabelPosterior(fit_softmax_regression(img, labels, reg, c),
                          fit_softmax_regression(txt, labels, reg, c), _check_reg(reg))


def fit_select(train, val, regs=DEFAULT_REGS):
    """The posterior baseline fitted on ``train``, its reg chosen on ``val``.

    train, val: splits with .img (n, d_img), .txt (n, d_txt), .labels (n,). For every
    reg in ``regs`` both models are fitted on train and scored by the average mAP@all on
    val (``metrics.paired_map``); the best score wins, and among equal scores the largest
    reg (the smoothest model). Returns that LabelPosterior, with val_scores = {reg: score}.
    """
    regs = sorted({_check_reg(r) for r in regs}) if regs is not None else []
    if not regs:
        raise InputError("regs must hold at least one L2 strength")
    models, scores = {}, {}
    for reg in regs:
        models[reg] = fit_posterior(train.img, train.txt, train.labels, reg)
        scores[reg] = paired_map(*models[reg].embed(val.img, val.txt), val.labels)
    best = max(scores, key=lambda r: (scores[r], r))   # best score, then the largest reg
    model = models[best]
    model.val_scores = scores
    return model
