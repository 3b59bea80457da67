"""Loss functions, each returning ``(loss, gradients)``.

``loss`` is a 0-d array on the inputs' backend (call ``float()`` to log it; that is a
device-to-host copy on CuPy, so the training loop does it only once per epoch) and the
gradients have the shapes of the inputs. Every loss is a mean over rows, so its size
does not depend on the batch size.

Equation numbers refer to Wang et al., "Adversarial Cross-Modal Retrieval", ACM MM 2017.
"""
from .backend import get_array_module


def _check_labels(labels, n, n_classes, who, check_values=True):
    """Integer class ids of shape (n,) in [0, n_classes); anything else is rejected.
    The range check reads the labels' min and max, which on CuPy waits for the device:
    check_values=False skips it where the labels are known to be good."""
    xp = get_array_module(labels)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"{who}: expected labels of shape ({n},), got {tuple(labels.shape)}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{who}: labels must be integer class ids, got dtype {labels.dtype}")
    if check_values and n and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(f"{who}: labels must lie in 0..{n_classes - 1}, got values from "
                         f"{int(labels.min())} to {int(labels.max())}")
    return xp


def softmax_cross_entropy(logits, labels, *, check_values=True):
    """Mean cross-entropy of a row-wise softmax: the label classifier's L_imd (Eq. 2)
    and the modality classifier's L_adv (Eq. 1).

    logits (N, C), labels (N,) integer ids in 0..C-1  ->  (loss, dlogits (N, C)).

      L = -(1/N) sum_n log p_n,y_n,   p = softmax(logits)
      dL/dlogits = (p - onehot(y)) / N

    Stable for logits of any magnitude: log p is computed as
    (z - max z) - log sum exp(z - max z), never as log(exp(z)/...).
    check_values=False skips the label range check (see _check_labels); the training
    step uses it for labels that datasets.py has already checked.
    """
    if logits.ndim != 2:
        raise ValueError(f"softmax_cross_entropy: expected logits of shape (N, C), got {tuple(logits.shape)}")
    n, c = logits.shape
    xp = _check_labels(labels, n, c, "softmax_cross_entropy", check_values)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_z = xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    log_p = shifted - log_z
    rows = xp.arange(n)
    loss = -log_p[rows, labels].mean()
    dlogits = xp.exp(log_p)
    dlogits[rows, labels] -= 1
    dlogits /= n
    return loss, dlogits


def cross_entropy(probs, labels):
    """Mean cross-entropy of probabilities that were already normalised (e.g. by a
    ``layers.Softmax``).   probs (N, C), labels (N,) -> (loss, dprobs (N, C)).

      L = -(1/N) sum_n log p_n,y_n,   dL/dp_n,y_n = -1 / (N p_n,y_n), 0 elsewhere.

    Softmax followed by this loss equals ``softmax_cross_entropy`` (a test checks it);
    the fused version is what training uses, because log(p) loses precision when p is
    tiny.
    """
    if probs.ndim != 2:
        raise ValueError(f"cross_entropy: expected probabilities of shape (N, C), got {tuple(probs.shape)}")
    n, c = probs.shape
    xp = _check_labels(labels, n, c, "cross_entropy")
    rows = xp.arange(n)
    picked = probs[rows, labels]
    loss = -xp.log(picked).mean()
    dprobs = xp.zeros_like(probs)
    dprobs[rows, labels] = -1.0 / (n * picked)
    return loss, dprobs


def _check_label_rows(logits, targets, who, check_values):
    """Logits (N, C) and a label matrix (N, C) of 0/1 rows (multi-label L_imd). The value
    check (0/1, and for the softmax form a 1 in every row) reads the whole matrix, which
    on CuPy waits for the device: check_values=False skips it (see _check_labels)."""
    xp = get_array_module(logits, targets)
    if logits.ndim != 2:
        raise ValueError(f"{who}: expected logits of shape (N, C), got {tuple(logits.shape)}")
    if tuple(targets.shape) != tuple(logits.shape):
        raise ValueError(f"{who}: expected a label matrix of the logits' shape {tuple(logits.shape)}, got "
                         f"{tuple(targets.shape)}")
    if check_values and targets.size and not bool(((targets == 0) | (targets == 1)).all()):
        raise ValueError(f"{who}: the label matrix must hold only 0 and 1")
    return xp


def softmax_label_cross_entropy(logits, targets, *, check_values=True):
    """L_imd (Eq. 2) with label VECTORS: the mean cross-entropy of a row-wise softmax
    against the normalised label vectors, the paper's form for multi-label data.

    logits (N, C), targets (N, C) 0/1 rows with at least one 1 each (any real or
    integer dtype)  ->  (loss, dlogits (N, C)) in the logits' dtype.

    Eq. 2 writes y_i . log p_i with y_i in R^c; for a pair with several labels we take
    y_i as a distribution, t_n = y_n / sum_k y_nk (each of its k labels gets 1/k):

      L = -(1/N) sum_n sum_k t_nk log p_nk,      p_n = softmax(z_n)

    Derivative: log p_nk = z_nk - log sum_j exp(z_nj), so d log p_nk / d z_nj =
    [k = j] - p_nj, and

      dL/dz_nj = -(1/N) sum_k t_nk ([k = j] - p_nj) = (p_nj sum_k t_nk - t_nj) / N
               = (p_nj - t_nj) / N                      (the t_n sum to 1)

    For one-hot rows this is softmax_cross_entropy exactly (a test checks it). Stable for
    logits of any magnitude: log p = (z - max z) - log sum exp(z - max z), and a label
    whose p underflows to 0 gives a large finite loss, never log(0): t * log p is taken
    from log p directly. A row of zeros has no distribution to match (t would be 0/0):
    check_values=True (the default) refuses it with the other value checks.
    """
    who = "softmax_label_cross_entropy"
    xp = _check_label_rows(logits, targets, who, check_values)
    n = logits.shape[0]
    counts = targets.sum(axis=1, keepdims=True, dtype=logits.dtype)          # (N, 1): labels per row
    if check_values and n and not bool((counts > 0).all()):
        raise ValueError(f"{who}: every row of the label matrix needs at least one 1")
    t = targets.astype(logits.dtype) / counts                                 # t_n = y_n / sum(y_n)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    loss = -(t * log_p).sum(axis=1).mean()
    dlogits = (xp.exp(log_p) - t) / n
    return loss, dlogits


def sigmoid_cross_entropy(logits, targets, *, check_values=True):
    """L_imd as one binary (sigmoid) cross-entropy per label, summed over the labels and
    averaged over the rows: the usual multi-label alternative to the softmax form
    (``ACMRConfig.label_loss = "sigmoid"``).

    logits (N, C), targets (N, C) 0/1 (any real or integer dtype)  ->  (loss, dlogits).

      L = -(1/N) sum_n sum_k [ y_nk log s(z_nk) + (1 - y_nk) log(1 - s(z_nk)) ],
      s(z) = 1 / (1 + exp(-z))

    With log s(z) = -softplus(-z), log(1 - s(z)) = -softplus(z) and softplus(z) -
    softplus(-z) = z, each term is softplus(z) - y z, so

      L = (1/N) sum_n sum_k [ softplus(z_nk) - y_nk z_nk ],
      dL/dz_nk = (s(z_nk) - y_nk) / N                  (softplus' = s)

    Each label is its own yes/no question, so a pair's labels do not compete for
    probability mass as in the softmax form. Stable for logits of any magnitude:
    softplus(z) = max(z, 0) + log(1 + exp(-|z|)) and s(z) = exp(min(z, 0)) /
    (1 + exp(-|z|)), whose exponents are never positive.
    """
    xp = _check_label_rows(logits, targets, "sigmoid_cross_entropy", check_values)
    n = logits.shape[0]
    y = targets.astype(logits.dtype)
    e = xp.exp(-xp.abs(logits))                                               # in (0, 1]
    softplus = xp.maximum(logits, 0) + xp.log1p(e)
    loss = (softplus - y * logits).sum(axis=1).mean()
    dlogits = (xp.exp(xp.minimum(logits, 0)) / (1 + e) - y) / n
    return loss, dlogits


def _check_triplet(anchor, positive, negative, who, mask):
    if not (anchor.ndim == 2 and anchor.shape == positive.shape == negative.shape):
        raise ValueError(f"{who}: anchor, positive and negative must have one shape (N, D), got "
                         f"{tuple(anchor.shape)}, {tuple(positive.shape)}, {tuple(negative.shape)}")
    if mask is not None and (tuple(mask.shape) != (anchor.shape[0],) or mask.dtype != bool):
        raise ValueError(f"{who}: mask must be a boolean array of shape ({anchor.shape[0]},), got "
                         f"{mask.dtype} {tuple(mask.shape)}")


def triplet_hinge(anchor, positive, negative, margin, mask=None):
    """The common triplet hinge with squared Euclidean distances, mean over rows.

    anchor, positive, negative (N, D)  ->  (loss, (d_anchor, d_positive, d_negative)).
    mask (N,) bool, optional: rows that are triplets at all; a False row (an anchor with
    no valid negative) contributes nothing to the loss or the gradients. The mean is
    still over all N rows.

      h_n = margin + ||a_n - p_n||^2 - ||a_n - q_n||^2      (q = the negative)
      L   = (1/N) sum_n max(0, h_n)

    Where h_n > 0 ("active" triplets):
      dL/dp_n = -(2/N)(a_n - p_n),  dL/dq_n = (2/N)(a_n - q_n),
      dL/da_n = (2/N)((a_n - p_n) - (a_n - q_n)) = -(dL/dp_n + dL/dq_n).
    Inactive triplets contribute nothing (we take the derivative 0 at the kink h = 0).
    """
    _check_triplet(anchor, positive, negative, "triplet_hinge", mask)
    n = anchor.shape[0]
    ap, aq = anchor - positive, anchor - negative
    h = margin + (ap * ap).sum(axis=1) - (aq * aq).sum(axis=1)
    active = (h > 0)[:, None]
    if mask is not None:
        active = active & mask[:, None]
    loss = (h * active[:, 0]).mean()
    d_positive = (-2.0 / n) * ap * active
    d_negative = (2.0 / n) * aq * active
    d_anchor = -(d_positive + d_negative)
    return loss, (d_anchor, d_positive, d_negative)


def pull_push(anchor, positive, negative, margin, weight, mask=None):
    """The paper's pull-plus-push form of L_imi (Eqs. 4-5), mean over rows.

    anchor, positive, negative (N, D)  ->  (loss, (d_anchor, d_positive, d_negative)).
    mask (N,) bool, optional: as in triplet_hinge (a False row has neither pull nor push).

      L = (1/N) sum_n [ ||a_n - p_n||^2 + weight * max(0, margin - ||a_n - q_n||^2) ]

    ``weight`` is the paper's lambda_t. The pull term always acts; the push term only
    while the negative is closer than the margin:
      dL/dp_n = -(2/N)(a_n - p_n)
      dL/dq_n =  (2/N) weight (a_n - q_n)   where margin - ||a_n - q_n||^2 > 0, else 0
      dL/da_n = -(dL/dp_n + dL/dq_n)
    The paper sums over triplets; we average so the scale does not depend on the batch
    size (a constant factor that alpha absorbs).
    """
    _check_triplet(anchor, positive, negative, "pull_push", mask)
    n = anchor.shape[0]
    ap, aq = anchor - positive, anchor - negative
    if mask is not None:
        ap = ap * mask[:, None]  # a masked row pulls nothing (and is pushed nothing, below)
    push = margin - (aq * aq).sum(axis=1)
    active = (push > 0)[:, None]
    if mask is not None:
        active = active & mask[:, None]
    loss = ((ap * ap).sum(axis=1) + weight * push * active[:, 0]).mean()
    d_positive = (-2.0 / n) * ap
    d_negative = (2.0 * weight / n) * aq * active
    d_anchor = -(d_positive + d_negative)
    return loss, (d_anchor, d_positive, d_negative)


def l2_penalty(weights, coef):
    """L_reg (Eq. 7), read as weight decay: coef * sum_l ||W_l||_F^2.

    weights: a list of arrays (the projectors' weight matrices; biases are not
    penalised) -> (loss, [dW_l]) with dL/dW_l = 2 coef W_l.
    (The training loop's fast path applies the same gradient inside its optimiser:
    acmr_np.fast.FastTrainer.)
    """
    if not weights:
        raise ValueError("l2_penalty: expected at least one weight array")
    loss = sum((w * w).sum() for w in weights) * coef
    return loss, [(2.0 * coef) * w for w in weights]
