"""Triplet choice inside a mini-batch (acmr_np.triplets) against independent references:
plain loops over anchors, and small cases worked out by hand.

The gradient checks in test_model.py only show that the loss and its gradient agree for
whatever triplets were chosen; these tests say which triplets must be chosen."""
import numpy as np
import pytest

from acmr_np import triplets


def _loop_sample(anchor, other, labels, noise, strategy):
    """The reference: one anchor at a time, in plain Python. Positive = the same-label
    item of ``other`` with the largest noise; negative = the different-label item with the
    largest noise (random) or the smallest squared distance ||a_i - o_k||^2 (hardest),
    computed as a difference, not as the expansion the library uses."""
    B = len(labels)
    pos, neg, has = [], [], []
    for i in range(B):
        same = [j for j in range(B) if labels[j] == labels[i]]
        diff = [j for j in range(B) if labels[j] != labels[i]]
        pos.append(max(same, key=lambda j: noise[i, j]))
        has.append(bool(diff))
        if not diff:
            neg.append(None)
        elif strategy == "random":
            neg.append(max(diff, key=lambda k: noise[i, k]))
        else:
            neg.append(min(diff, key=lambda k: float(((anchor[i] - other[k]) ** 2).sum())))
    return pos, neg, has


def _batch(seed, B=12, m=4, n_classes=3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, size=B)
    labels[:n_classes] = np.arange(n_classes)  # every class present
    # raw (not unit-length) embeddings with very different norms, so the norm terms of
    # the squared distance matter, and an asymmetric noise matrix, so noise[i, j] and
    # noise[j, i] pick different items
    anchor = rng.normal(size=(B, m)) * rng.uniform(0.2, 3.0, size=(B, 1))
    other = rng.normal(size=(B, m)) * rng.uniform(0.2, 3.0, size=(B, 1))
    noise = rng.random((B, B))
    return anchor, other, labels, noise


def _check_unique_nearest(anchor, other, labels):
    """The nearest negative of every anchor is unique by a wide margin (no near-ties that
    rounding could flip), so the loop's answer is THE answer."""
    for i in range(len(labels)):
        d = sorted(float(((anchor[i] - other[k]) ** 2).sum()) for k in range(len(labels)) if labels[k] != labels[i])
        assert len(d) < 2 or d[1] - d[0] > 1e-6, (i, d[:2])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("strategy", triplets.STRATEGIES)
def test_sample_is_the_loop(seed, strategy):
    anchor, other, labels, noise = _batch(seed)
    if strategy == "hardest":
        _check_unique_nearest(anchor, other, labels)
    pos, neg, has = triplets.sample(anchor, other, labels, noise, strategy)
    ref_pos, ref_neg, ref_has = _loop_sample(anchor, other, labels, noise, strategy)
    assert pos.tolist() == ref_pos
    assert neg.tolist() == ref_neg
    assert has.dtype == bool and has.tolist() == ref_has == [True] * len(labels)
    # the rule itself, independent of any implementation
    assert all(labels[p] == labels[i] for i, p in enumerate(ref_pos))
    assert all(labels[q] != labels[i] for i, q in enumerate(ref_neg))


def test_hardest_negative_by_hand():
    """2-d points placed by hand. Anchor 0 (class 0) sits at (1, 0); the texts of class 1
    sit at (2, 0) (distance^2 1), (-1, 0) (4) and (0, 3) (10): the hardest negative is
    item 1, at (2, 0). Taking the farthest would pick (0, 3); flipping the sign of the
    cross term (||a + o||^2) would pick (-1, 0); the anchor's own partner (0.9, 0), of its
    own class and closer than all of them, must never be the negative."""
    labels = np.array([0, 1, 1, 1])
    other = np.array([[0.9, 0.0], [2.0, 0.0], [-1.0, 0.0], [0.0, 3.0]])
    anchor = np.array([[1.0, 0.0], [2.1, 0.0], [-1.0, 0.2], [0.0, 2.9]])
    noise = np.random.default_rng(0).random((4, 4))
    pos, neg, has = triplets.sample(anchor, other, labels, noise, "hardest")
    assert neg[0] == 1
    # the class-1 anchors have one candidate negative: text 0
    assert neg[1:].tolist() == [0, 0, 0]
    assert pos[0] == 0 and has.all()
    # the positive is still the random one (largest noise among the same label), not the closest
    for i in range(1, 4):
        assert pos[i] == 1 + int(np.argmax(noise[i, 1:]))


def test_hardest_uses_squared_distance_with_both_norms():
    """Two negatives at the same angle from the anchor, different lengths: the one whose
    squared distance ||a||^2 + ||o||^2 - 2 a.o is smaller wins, not the larger dot
    product (which ignores ||o||^2)."""
    labels = np.array([0, 1, 1])
    anchor = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    # text 1 at (3, 0): a.o = 3 (largest), distance^2 = 4; text 2 at (0.5, 0.5):
    # a.o = 0.5, distance^2 = 0.5 (closest)
    other = np.array([[5.0, 5.0], [3.0, 0.0], [0.5, 0.5]])
    noise = np.full((3, 3), 0.5)
    assert triplets.sample(anchor, other, labels, noise, "hardest")[1][0] == 2


def test_the_negative_is_never_of_the_anchors_class():
    """Same-class items are the closest of all here (each pair's partner is almost the
    anchor itself, another same-class item is next), yet only other classes are chosen."""
    rng = np.random.default_rng(5)
    labels = np.array([0, 0, 0, 1, 1, 2])
    centres = rng.normal(size=(3, 3)) * 10
    anchor = centres[labels] + 0.01 * rng.normal(size=(6, 3))
    other = anchor + 0.001 * rng.normal(size=(6, 3))
    for strategy in triplets.STRATEGIES:
        _, neg, has = triplets.sample(anchor, other, labels, rng.random((6, 6)), strategy)
        assert has.all()
        assert all(labels[q] != labels[i] for i, q in enumerate(neg.tolist())), (strategy, neg)


def test_random_strategy_by_hand():
    """noise rows written out: the positive is the same-label column with the largest
    noise (the row's partner need not win), the negative the other-label column with
    the largest noise; the embeddings play no part."""
    labels = np.array([0, 1, 0, 1])
    noise = np.array([[0.1, 0.9, 0.5, 0.2],    # same label: cols 0, 2 -> 2; other: 1, 3 -> 1
                      [0.8, 0.3, 0.1, 0.4],    # same: 1, 3 -> 3; other: 0, 2 -> 0
                      [0.7, 0.2, 0.6, 0.3],    # same: 0, 2 -> 0; other: 1, 3 -> 3
                      [0.0, 0.5, 0.9, 0.4]])   # same: 1, 3 -> 1; other: 0, 2 -> 2
    rng = np.random.default_rng(1)
    for _ in range(2):  # any embeddings: the same choice
        anchor, other = rng.normal(size=(4, 2)), rng.normal(size=(4, 2))
        pos, neg, has = triplets.sample(anchor, other, labels, noise, "random")
        assert pos.tolist() == [2, 3, 0, 1] and neg.tolist() == [1, 0, 3, 2] and has.all()
    # the transposed noise (noise[j, i] for anchor i) would choose differently
    pos_t, neg_t, _ = triplets.sample(anchor, other, labels, noise.T.copy(), "random")
    assert (pos_t.tolist(), neg_t.tolist()) != ([2, 3, 0, 1], [1, 0, 3, 2])


def test_has_negative_mask():
    rng = np.random.default_rng(2)
    a, o, noise = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)), rng.random((5, 5))
    for strategy in triplets.STRATEGIES:
        # one class only: no anchor has a negative
        pos, _, has = triplets.sample(a, o, np.full(5, 3), noise, strategy)
        assert has.dtype == bool and has.shape == (5,) and not has.any()
        assert pos.tolist() == np.argmax(noise, axis=1).tolist()  # every column is a positive
        # one item of another class: every anchor has one (the lone item's are the four others)
        labels = np.array([1, 1, 0, 1, 1])
        _, neg, has = triplets.sample(a, o, labels, noise, strategy)
        assert has.tolist() == [True] * 5
        assert neg.tolist()[:2] + neg.tolist()[3:] == [2, 2, 2, 2]
        assert labels[neg[2]] == 1


def test_mask_is_reported_in_the_loop_for_a_single_anchor_batch():
    pos, neg, has = triplets.sample(np.ones((1, 2)), np.ones((1, 2)), np.array([4]), np.zeros((1, 1)), "hardest")
    assert pos.tolist() == [0] and has.tolist() == [False] and neg.shape == (1,)


def test_selection_matrix_picks_rows():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(5, 3))
    idx = np.array([4, 0, 4, 2])
    P = triplets.selection_matrix(idx, 5, np.float64)
    assert P.shape == (4, 5) and P.dtype == np.float64
    np.testing.assert_array_equal(P @ X, X[idx])
    # P^T d sums the rows of d of the anchors that picked the same item
    d = rng.normal(size=(4, 3))
    expected = np.zeros((5, 3))
    for r, i in enumerate(idx):
        expected[i] += d[r]
    np.testing.assert_allclose(P.T @ d, expected, rtol=1e-15, atol=0)
    assert triplets.selection_matrix(idx, 5, np.float32).dtype == np.float32


def test_unknown_strategy():
    a = np.zeros((2, 2))
    with pytest.raises(ValueError, match="unknown triplet strategy 'semi': expected one of random, hardest"):
        triplets.sample(a, a, np.array([0, 1]), np.zeros((2, 2)), "semi")
