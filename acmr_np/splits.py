"""The validation split carved out of the training pairs, when the data has none.

Seeded and stratified, so that validation sees every class in proportion: for class ids,
class by class (``stratified_split``); for multi-label data, an iterative stratification
over the labels, rarest first (Sechidis, Tsoumakas and Vlahavas, 2011:
``iterative_stratified_split``). The test split is never used to choose anything.
"""
import numpy as np

from .errors import input_error as _fail


def stratified_split(labels, fraction, rng):
    """Split indices 0..n-1 into (keep_idx, val_idx), both sorted, class by class.

    labels: (n,) class ids >= 0. Each class with m items sends round(fraction * m) of
    them (at random, from ``rng``) to the validation part, but at least 1 and at most
    m - 1 when m >= 2, so both parts see every such class; a class with a single item
    stays in the kept part. A 0/1 label matrix (n, c) (multi-label data) is split by
    ``iterative_stratified_split``.
    """
    labels = np.asarray(labels)
    if not 0 < fraction < 1:
        raise _fail(f"val_fraction must be strictly between 0 and 1, got {fraction}")
    if labels.ndim == 2:
        return iterative_stratified_split(labels, fraction, rng)
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or (len(labels) and labels.min() < 0):
        raise _fail("stratified_split: labels must be a 1-D array of non-negative integers")
    n = len(labels)
    perm = rng.permutation(n)
    order = perm[np.argsort(labels[perm], kind="stable")]  # grouped by class, shuffled within each
    grouped = labels[order]
    counts = np.bincount(labels)
    n_val = np.where(counts >= 2, np.clip(np.floor(fraction * counts + 0.5), 1, counts - 1), 0)
    rank = np.arange(n) - (np.cumsum(counts) - counts)[grouped]  # position within its class
    is_val = rank < n_val[grouped]
    return np.sort(order[~is_val]), np.sort(order[is_val])


def iterative_stratified_split(labels, fraction, rng):
    """Split the rows of a 0/1 label matrix (n, c) into (keep_idx, val_idx), both sorted,
    so that every label has about ``fraction`` of its pairs in validation.

    A pair carries several labels, so its labels cannot each be stratified on their own.
    This is iterative stratification (Sechidis, Tsoumakas and Vlahavas, ECML PKDD 2011)
    for two parts, vectorised over pairs:

      order the pairs at random (``rng``, its only use);
      while a pair is unassigned:
          take the label l held by the fewest unassigned pairs (ties: the lower column);
          of its m unassigned pairs, send the first k (in the random order) to validation
          and the rest to the kept part, with
              k = clip(round(fraction * n_l - v_l), 0, m)
          where n_l is the label's number of pairs and v_l how many of them validation
          already holds (pairs assigned for rarer labels before).

    Sechidis et al. assign the m pairs one at a time, each to the part whose remaining
    demand for label l is largest; for two parts, whose demands for l add up to m, that
    greedy sends exactly round(fraction n_l - v_l) of them to validation (up to how a
    tie at .5 is broken), so k is its closed form, and which k pairs go is random either
    way. Rare labels come first because they have the least room: a rare label's pairs
    are placed while both parts can still take them. One pass per label; each pass reads
    one column, so the cost is O(n c). Validation holds about fraction * n pairs (not
    exactly: a pair counts for all of its labels). A label with few pairs may get none in
    validation (round(0.1 * 3) = 0), and one whose pairs all went to validation for
    rarer labels' sake is missing from the kept part (rare; the model still has a
    column for it).
    """
    y = np.asarray(labels)
    if y.ndim != 2 or y.dtype.kind not in "biu":
        raise _fail("iterative_stratified_split: labels must be a 0/1 integer or boolean matrix (n, c)")
    n = len(y)
    order = rng.permutation(n)
    yo = np.asarray(y[order], dtype=bool)                 # (n, c) rows in the random order
    unassigned = np.ones(n, dtype=bool)
    to_val = np.zeros(n, dtype=bool)
    remaining = yo.sum(axis=0, dtype=np.int64)            # unassigned pairs holding each label
    wanted = fraction * remaining                         # fraction * n_l
    in_val = np.zeros(y.shape[1], dtype=np.int64)         # v_l
    while remaining.any():
        label = int(np.argmin(np.where(remaining > 0, remaining, np.iinfo(np.int64).max)))
        pairs = np.flatnonzero(yo[:, label] & unassigned)  # its unassigned pairs, in random order
        k = int(np.clip(np.floor(wanted[label] - in_val[label] + 0.5), 0, len(pairs)))
        to_val[pairs[:k]] = True
        unassigned[pairs] = False
        remaining -= yo[pairs].sum(axis=0, dtype=np.int64)
        in_val += yo[pairs[:k]].sum(axis=0, dtype=np.int64)
    return np.sort(order[~to_val]), np.sort(order[to_val])
