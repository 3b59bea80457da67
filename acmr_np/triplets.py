"""Choosing triplets inside a mini-batch for the inter-modal invariance loss L_imi.

For an anchor from one modality (say image i) we need a positive from the OTHER
modality with the same label (text j+) and a negative with a different label (text k-),
ACMR Eqs. 4-5. For multi-label data (labels as 0/1 rows) a positive shares at least
one label with the anchor and a negative shares none: items that share a label are the
items retrieval counts as relevant (metrics.py), so the triplets pull together what
the evaluation rewards. Everything here is vectorised over the batch: a choice "among the
allowed columns of row i" is an argmax over a masked matrix.

Two strategies:
- ``"random"``: the positive and the negative are drawn uniformly among the allowed
  items (the argmax of uniform noise restricted to the allowed columns).
- ``"hardest"``: the positive is random as above; the negative is the closest
  differently-labelled item in the common space (hardest-negative mining,
  Schroff et al. 2015), the one that violates the margin most.

The choice is a set of indices, not a differentiable function: the loss's gradient is
taken with the indices held fixed. We express "pick row idx_i" as a product with a
one-hot selection matrix P (P_ij = 1 iff j = idx_i): picked = P @ other, and the
gradient flows back as P^T @ d_picked, which also sums the contributions of an item
picked by several anchors. A matrix product runs on every backend (no scatter-add).

An anchor whose batch holds no item of another class (multi-label: no item that shares
none of its labels) has no negative; ``sample`` says so in a mask, and the loss leaves that anchor out. That is
decided here, on the device, so the training step never waits for the host.

The uniform noise comes from the caller: the training loop draws it on the host from
the run's seeded numpy Generator, a block of steps at a time (training.batches), so both
backends see the same triplets and no random numbers are made inside a training step.
"""
import numpy

from .backend import get_array_module

STRATEGIES = ("random", "hardest")


def selection_matrix(idx, n, dtype):
    """(B,) indices -> (B, n) one-hot rows: P @ X picks rows idx of X."""
    xp = get_array_module(idx)
    return (idx[:, None] == xp.arange(n)[None, :]).astype(dtype)


def sample(anchor, other, labels, noise, strategy):
    """Pick a positive and a negative in ``other`` for every anchor.

    anchor (B, m), other (B, m): embeddings of the two modalities of one batch;
    labels shared by both (they are pairs): (B,) integer ids, or (B, c) 0/1 label rows
    (multi-label: allowed positives share a label with the anchor, negatives share
    none); noise (B, B) uniform in [0, 1); strategy in STRATEGIES.
    Returns (pos_idx, neg_idx, has_negative): (B,) integer indices into ``other`` and a
    (B,) bool mask, False for an anchor with no allowed negative in the batch (its
    neg_idx is then meaningless and the loss must leave the anchor out).
    """
    xp = get_array_module(anchor)
    if labels.ndim == 2:
        # (Y Y^T)_ij counts the labels i and j share, exactly in floating point (small
        # integers); a product on the device, so nothing waits for the host.
        y = labels.astype(anchor.dtype)
        same = (y @ y.T) > 0                   # (B, B): shares a label = allowed positive
    else:
        same = labels[:, None] == labels[None, :]  # (B, B): allowed positives
    has_negative = ~same.all(axis=1)
    # The pair's own partner (the diagonal) is always a valid positive (a label row has
    # at least one 1), so every row has at least one allowed entry.
    pos_idx = xp.argmax(xp.where(same, noise, -1.0), axis=1)
    if strategy == "random":
        neg_idx = xp.argmax(xp.where(same, -1.0, noise), axis=1)
    elif strategy == "hardest":
        # squared distances ||a_i||^2 + ||o_k||^2 - 2 a_i . o_k for all pairs at once
        dist = (anchor * anchor).sum(axis=1)[:, None] + (other * other).sum(axis=1)[None, :] \
            - 2.0 * anchor @ other.T
        neg_idx = xp.argmin(xp.where(same, numpy.inf, dist), axis=1)
    else:
        raise ValueError(f"unknown triplet strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    return pos_idx, neg_idx, has_negative
