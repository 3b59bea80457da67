"""Two baselines that share ACMR's evaluation: regularised CCA, and no training at all.

Canonical correlation analysis (Hotelling, 1936) is the classic linear answer to the
question ACMR asks: find a projection of the images, X (n, d_x), and one of the texts,
Y (n, d_y), such that paired items land close together. It uses the pairing only, never
the class labels, and it has a closed-form solution.

With Xc, Yc the column-centred training features and n the number of pairs:

    C_xx = Xc^T Xc / (n - 1) + r_x I,    r_x = reg * trace(Xc^T Xc / (n - 1)) / d_x
    C_yy = Yc^T Yc / (n - 1) + r_y I,    r_y = reg * trace(Yc^T Yc / (n - 1)) / d_y
    C_xy = Xc^T Yc / (n - 1)

The ridge r I keeps C_xx invertible when features are collinear or d > n; making it
relative to the mean variance (trace / d) makes ``reg`` independent of the features'
scale (the Wikipedia image features are histograms with entries around 1/128).
CCA asks for directions a (d_x,), b (d_y,) that maximise the correlation

    rho = a^T C_xy b / sqrt(a^T C_xx a * b^T C_yy b).

Substituting a = C_xx^{-1/2} u and b = C_yy^{-1/2} v turns this into maximising
u^T T v over unit vectors u, v, with the whitened cross-covariance

    T = C_xx^{-1/2} C_xy C_yy^{-1/2}      (d_x, d_y),

whose answer is the singular value decomposition T = U diag(rho) V^T: the k-th pair of
canonical directions is a_k = C_xx^{-1/2} u_k, b_k = C_yy^{-1/2} v_k, and the singular
value rho_k is the k-th canonical correlation (1 >= rho_1 >= rho_2 >= ... >= 0). The
inverse square roots come from symmetric eigendecompositions, C = Q diag(w) Q^T =>
C^{-1/2} = Q diag(w^{-1/2}) Q^T. On the training data (with reg = 0) the projections
Xc A and Yc B each have identity covariance and cross-covariance diag(rho).

The common space keeps the first K pairs of directions: an image x maps to
(x - mean_x) A[:, :K], a text y to (y - mean_y) B[:, :K], and retrieval ranks by cosine
similarity there, exactly as for ACMR. K is chosen on the validation split by the
average of the two directions' mAP@all (``fit_select``); the test split is never looked at.

The "no training" baseline (``NoTraining``) is the floor: raw features compared by
cosine where the two modalities have the same size, otherwise both projected by fixed,
seeded random Gaussian matrices to a common size. Nothing is fitted, so its mAP is
chance level unless the raw features happen to be aligned.

Everything here runs in float64 on the host (NumPy/SciPy); the matrices are at most
d x d, so this is fast for the feature sizes ACMR is used with.
"""
from dataclasses import dataclass, field

import numpy
import scipy.linalg

from .backend import to_host
from .errors import InputError
from .metrics import paired_map

DEFAULT_REG = 1e-3       # ridge, relative to each covariance's mean variance
NO_TRAINING_DIM = 64     # common size of the random projections


def _as_features(x, name):
    """Any array-like (n, d) -> host float64 (n, d), refusing what CCA cannot use."""
    x = numpy.asarray(to_host(x), dtype=numpy.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(f"{name} features must be a non-empty 2-D array (n, d), got shape {x.shape}")
    if not numpy.isfinite(x).all():
        raise InputError(f"{name} features contain NaN or inf")
    return x


def _inverse_sqrt(c, name):
    """C^{-1/2} of a symmetric positive definite C (d, d) via C = Q diag(w) Q^T."""
    w, q = scipy.linalg.eigh(c)
    if w[0] <= 1e-12 * max(w[-1], 1e-300):
        raise InputError(f"the {name} covariance is singular (constant or collinear features, "
                         f"or more features than pairs); use a ridge reg > 0")
    return (q / numpy.sqrt(w)) @ q.T  # Q diag(w^{-1/2}) Q^T


@dataclass
class CCA:
    """A fitted CCA: centring and projection of each modality.

    mean_img (d_img,), mean_txt (d_txt,); w_img (d_img, K_max), w_txt (d_txt, K_max):
    the canonical directions A and B as columns, best first; corrs (K_max,): the
    canonical correlations rho_k of the training data (regularised: slightly below the
    unregularised ones when reg > 0); n_components: the K used by ``embed``;
    reg: the relative ridge; val_scores: {K: validation mAP@all average} when K was
    chosen on validation (``fit_select``), else empty.
    """
    mean_img: numpy.ndarray
    mean_txt: numpy.ndarray
    w_img: numpy.ndarray
    w_txt: numpy.ndarray
    corrs: numpy.ndarray
    n_components: int
    reg: float
    val_scores: dict = field(default_factory=dict)

    @property
    def max_components(self):
        return self.w_img.shape[1]

    def embed(self, img, txt, n_components=None):
        """Project paired features into the common space.

        img (n, d_img), txt (m, d_txt), any float dtype or backend ->
        (img_emb (n, K), txt_emb (m, K)) host float64, with K = n_components or the
        fitted ``self.n_components``:  img_emb = (img - mean_img) A[:, :K], likewise txt.
        """
        k = self.n_components if n_components is None else int(n_components)
        if not 1 <= k <= self.max_components:
            raise InputError(f"n_components must be between 1 and {self.max_components}, got {k}")
        img, txt = _as_features(img, "image"), _as_features(txt, "text")
        for name, x, mean in (("image", img, self.mean_img), ("text", txt, self.mean_txt)):
            if x.shape[1] != mean.shape[0]:
                raise InputError(f"{name} features have {x.shape[1]} columns; this CCA was "
                                 f"fitted on {mean.shape[0]}")
        return (img - self.mean_img) @ self.w_img[:, :k], (txt - self.mean_txt) @ self.w_txt[:, :k]


def fit_cca(img, txt, reg=DEFAULT_REG, n_components=None):
    """Fit regularised CCA on paired training features (see the module docstring).

    img (n, d_img), txt (n, d_txt): row i of each is the same pair; reg >= 0: ridge
    relative to each covariance's mean variance. Computes every direction,
    K_max = min(d_img, d_txt, n - 1); ``n_components`` (default K_max) is the K that
    ``embed`` uses. Returns a CCA.
    """
    x, y = _as_features(img, "image"), _as_features(txt, "text")
    n = x.shape[0]
    if y.shape[0] != n:
        raise InputError(f"CCA needs paired data: {n} images but {y.shape[0]} texts")
    if n < 2:
        raise InputError(f"CCA needs at least 2 pairs, got {n}")
    if not (isinstance(reg, (int, float)) and reg >= 0 and numpy.isfinite(reg)):
        raise InputError(f"reg must be a non-negative number, got {reg!r}")
    mean_x, mean_y = x.mean(axis=0), y.mean(axis=0)           # (d_x,), (d_y,)
    xc, yc = x - mean_x, y - mean_y
    cxx = xc.T @ xc / (n - 1)                                   # (d_x, d_x)
    cyy = yc.T @ yc / (n - 1)                                   # (d_y, d_y)
    cxy = xc.T @ yc / (n - 1)                                   # (d_x, d_y)
    for c in (cxx, cyy):
        c += reg * numpy.trace(c) / c.shape[0] * numpy.eye(c.shape[0])
    cxx_is, cyy_is = _inverse_sqrt(cxx, "image"), _inverse_sqrt(cyy, "text")
    t = cxx_is @ cxy @ cyy_is                                   # (d_x, d_y) whitened cross-covariance
    u, rho, vt = scipy.linalg.svd(t, full_matrices=False)       # rho sorted descending
    k_max = min(x.shape[1], y.shape[1], n - 1)
    w_x = cxx_is @ u[:, :k_max]                                 # (d_x, K_max)  a_k = C_xx^{-1/2} u_k
    w_y = cyy_is @ vt[:k_max].T                                 # (d_y, K_max)  b_k = C_yy^{-1/2} v_k
    k = k_max if n_components is None else int(n_components)
    if not 1 <= k <= k_max:
        raise InputError(f"n_components must be between 1 and {k_max}, got {n_components}")
    return CCA(mean_x, mean_y, w_x, w_y, rho[:k_max], k, float(reg))


def candidate_components(k_max):
    """The K tried on validation: every K from 2 to 16, then 24, 32, 48, 64, 96, 128, ...
    (powers of two and the points halfway between them), always ending with k_max.
    K = 1 is left out unless it is the only choice: cosine similarity in one dimension
    is only +1 or -1, a ranking made almost entirely of ties."""
    if k_max <= 1:
        return [1]
    ks = set(range(2, min(k_max, 16) + 1)) | {k_max}
    k = 16
    while k < k_max:
        ks.update({min(k * 3 // 2, k_max), min(2 * k, k_max)})
        k *= 2
    return sorted(ks)


def fit_select(train, val, reg=DEFAULT_REG, candidates=None):
    """CCA fitted on ``train``, its number of components chosen on ``val``.

    train, val: splits with .img (n, d_img), .txt (n, d_txt), .labels (n,). Every K in
    ``candidates`` (default ``candidate_components(K_max)``) is scored by the average
    mAP@all on val; the smallest K with the best score wins. Returns the CCA with
    n_components = that K and val_scores = {K: score}.
    """
    model = fit_cca(train.img, train.txt, reg=reg)
    ks = candidate_components(model.max_components) if candidates is None else sorted(set(candidates))
    if not ks or not all(1 <= int(k) <= model.max_components for k in ks):
        raise InputError(f"candidate component counts must lie in 1..{model.max_components}, got {ks}")
    scores = {int(k): paired_map(*model.embed(val.img, val.txt, int(k)), val.labels) for k in ks}
    best = max(scores, key=lambda k: (scores[k], -k))  # best score, then the smallest K
    model.n_components, model.val_scores = best, scores
    return model


class NoTraining:
    """The "no training" floor: nothing is learnt from the data.

    If d_img == d_txt, ``embed`` returns the raw features themselves (compared by
    cosine). Otherwise each modality is multiplied by a fixed Gaussian matrix,
    R_img (d_img, dim) and R_txt (d_txt, dim) with N(0, 1/dim) entries drawn from
    numpy.random.default_rng(seed), so that the two land in one dim-sized space.
    A random projection roughly preserves cosines within a modality (Johnson-
    Lindenstrauss) but relates nothing across modalities: mAP near chance is expected.
    """

    def __init__(self, d_img, d_txt, dim=NO_TRAINING_DIM, seed=0):
        self.d_img, self.d_txt = int(d_img), int(d_txt)
        if self.d_img == self.d_txt:
            self.dim, self.r_img, self.r_txt = self.d_img, None, None
            self.kind = "raw features"
        else:
            if int(dim) < 1:
                raise InputError(f"the random projection size must be positive, got {dim}")
            rng = numpy.random.default_rng(seed)
            self.dim = int(dim)
            self.r_img = rng.normal(scale=self.dim ** -0.5, size=(self.d_img, self.dim))
            self.r_txt = rng.normal(scale=self.dim ** -0.5, size=(self.d_txt, self.dim))
            self.kind = f"random projections to {self.dim}-d, seed {seed}"

    def embed(self, img, txt):
        """img (n, d_img), txt (m, d_txt) -> (n, dim), (m, dim) host float64."""
        img, txt = _as_features(img, "image"), _as_features(txt, "text")
        if img.shape[1] != self.d_img or txt.shape[1] != self.d_txt:
            raise InputError(f"expected {self.d_img}-d images and {self.d_txt}-d texts, "
                             f"got {img.shape[1]} and {txt.shape[1]}")
        if self.r_img is None:
            return img, txt
        return img @ self.r_img, txt @ self.r_txt
