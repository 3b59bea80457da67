"""L_imd (Eq. 2) for multi-label data: the label classifier's loss against label VECTORS.

The paper writes each pair's label as y_i in R^c. For single-label data that is a one-hot
vector and L_imd is losses.softmax_cross_entropy; with several labels per pair there are
two usual readings, each here with its forward and backward side by side:

- ``softmax_label_cross_entropy``: the paper's softmax (Eq. 2), against the label vector
  normalised to sum 1 (our choice: Eq. 2 leaves y_i unnormalised; ACMRConfig.label_loss
  = "softmax");
- ``sigmoid_cross_entropy``: one binary cross-entropy per label ("sigmoid").

Both return ``(loss, dlogits)`` like the losses in losses.py. (A module of its own so that a
classroom copy, whose exercises include the single-label softmax cross-entropy, can leave
out this derivation of the same gradient.)
"""
from .backend import get_array_module


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
    against the normalised label vectors (the normalisation is our choice, see below).

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
