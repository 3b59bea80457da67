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

    Stable for logits of any magnitude (1e4, say): finite loss and gradient.
    check_values=False skips the label range check (see _check_labels); the training
    step uses it for labels that datasets.py has already checked.

    Derivation: dL/dlogits = (p - onehot(y)) / N. log p is computed as
    (z - max z) - log sum exp(z - max z), never as log(exp(z)/...).
    """
    if logits.ndim != 2:
        raise ValueError(f"softmax_cross_entropy: expected logits of shape (N, C), got {tuple(logits.shape)}")
    n, c = logits.shape
    xp = _check_labels(labels, n, c, "softmax_cross_entropy", check_values)
    # BEGIN SOLUTION
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_z = xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    log_p = shifted - log_z
    rows = xp.arange(n)
    loss = -log_p[rows, labels].mean()
    # END SOLUTION
    # BEGIN SOLUTION
    dlogits = xp.exp(log_p)
    dlogits[rows, labels] -= 1
    dlogits /= n
    # END SOLUTION
    return loss, dlogits


def cross_entropy(probs, labels):
    """Mean cross-entropy of probabilities that were already normalised (e.g. by a
    ``layers.Softmax``).   probs (N, C), labels (N,) -> (loss, dprobs (N, C)).

      L = -(1/N) sum_n log p_n,y_n

    Softmax followed by this loss equals ``softmax_cross_entropy`` (a test checks it);
    the fused version is what training uses, because log(p) loses precision when p is
    tiny.

    Derivation: dL/dp_n,y_n = -1 / (N p_n,y_n), 0 elsewhere.
    """
    if probs.ndim != 2:
        raise ValueError(f"cross_entropy: expected probabilities of shape (N, C), got {tuple(probs.shape)}")
    n, c = probs.shape
    xp = _check_labels(labels, n, c, "cross_entropy")
    # BEGIN SOLUTION
    rows = xp.arange(n)
    picked = probs[rows, labels]
    loss = -xp.log(picked).mean()
    # END SOLUTION
    # BEGIN SOLUTION
    dprobs = xp.zeros_like(probs)
    dprobs[rows, labels] = -1.0 / (n * picked)
    # END SOLUTION
    return loss, dprobs


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

    At the kink h_n = 0 the derivative is taken as 0.

    Derivation: where h_n > 0 ("active" triplets):
      dL/dp_n = -(2/N)(a_n - p_n),  dL/dq_n = (2/N)(a_n - q_n),
      dL/da_n = (2/N)((a_n - p_n) - (a_n - q_n)) = -(dL/dp_n + dL/dq_n).
    Inactive triplets contribute nothing.
    """
    _check_triplet(anchor, positive, negative, "triplet_hinge", mask)
    n = anchor.shape[0]
    # BEGIN SOLUTION
    ap, aq = anchor - positive, anchor - negative
    h = margin + (ap * ap).sum(axis=1) - (aq * aq).sum(axis=1)
    active = (h > 0)[:, None]
    if mask is not None:
        active = active & mask[:, None]
    loss = (h * active[:, 0]).mean()
    # END SOLUTION
    # BEGIN SOLUTION
    d_positive = (-2.0 / n) * ap * active
    d_negative = (2.0 / n) * aq * active
    d_anchor = -(d_positive + d_negative)
    # END SOLUTION
    return loss, (d_anchor, d_positive, d_negative)


def pull_push(anchor, positive, negative, margin, weight, mask=None):
    """The paper's pull-plus-push form of L_imi (Eqs. 4-5), mean over rows.

    anchor, positive, negative (N, D)  ->  (loss, (d_anchor, d_positive, d_negative)).
    mask (N,) bool, optional: as in triplet_hinge (a False row has neither pull nor push).

      L = (1/N) sum_n [ ||a_n - p_n||^2 + weight * max(0, margin - ||a_n - q_n||^2) ]

    ``weight`` is the paper's lambda_t. The paper sums over triplets; we average so the
    scale does not depend on the batch size (a constant factor that alpha absorbs).

    Derivation: the pull term always acts; the push term only while the negative is
    closer than the margin:
      dL/dp_n = -(2/N)(a_n - p_n)
      dL/dq_n =  (2/N) weight (a_n - q_n)   where margin - ||a_n - q_n||^2 > 0, else 0
      dL/da_n = -(dL/dp_n + dL/dq_n)
    """
    _check_triplet(anchor, positive, negative, "pull_push", mask)
    n = anchor.shape[0]
    # BEGIN SOLUTION
    ap, aq = anchor - positive, anchor - negative
    if mask is not None:
        ap = ap * mask[:, None]  # a masked row pulls nothing (and is pushed nothing, below)
    push = margin - (aq * aq).sum(axis=1)
    active = (push > 0)[:, None]
    if mask is not None:
        active = active & mask[:, None]
    loss = ((ap * ap).sum(axis=1) + weight * push * active[:, 0]).mean()
    # END SOLUTION
    # BEGIN SOLUTION
    d_positive = (-2.0 / n) * ap
    d_negative = (2.0 * weight / n) * aq * active
    d_anchor = -(d_positive + d_negative)
    # END SOLUTION
    return loss, (d_anchor, d_positive, d_negative)


def l2_penalty(weights, coef):
    """L_reg (Eq. 7), read as weight decay: coef * sum_l ||W_l||_F^2.

    weights: a list of arrays (the projectors' weight matrices; biases are not
    penalised) -> (loss, [dL/dW_l], one array shaped like each W_l).
    (The training loop's fast path applies the same gradient inside its optimiser:
    acmr_np.fast.FastTrainer.)

    Derivation: dL/dW_l = 2 coef W_l.
    """
    if not weights:
        raise ValueError("l2_penalty: expected at least one weight array")
    # BEGIN SOLUTION
    loss = sum((w * w).sum() for w in weights) * coef
    # END SOLUTION
    # BEGIN SOLUTION
    grads = [(2.0 * coef) * w for w in weights]
    # END SOLUTION
    return loss, grads
