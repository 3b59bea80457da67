"""Every loss against centered differences, with respect to each differentiable input,
away from the kinks; plus values against direct formulas and bad-input errors."""
import numpy as np
import pytest

from acmr_np import losses
from acmr_np.gradcheck import loss_errors

N, D, C = 6, 4, 3


@pytest.fixture
def rng():
    return np.random.default_rng(1)


def test_softmax_cross_entropy_gradient(rng):
    logits, labels = rng.normal(size=(N, C)), rng.integers(0, C, size=N)
    errors = loss_errors(lambda z: losses.softmax_cross_entropy(z, labels), [logits])
    assert errors[0] < 1e-7, errors


def test_softmax_cross_entropy_value_and_stability(rng):
    logits, labels = rng.normal(size=(N, C)), rng.integers(0, C, size=N)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    loss, _ = losses.softmax_cross_entropy(logits, labels)
    assert float(loss) == pytest.approx(-np.log(p[np.arange(N), labels]).mean(), rel=1e-12)
    # logits of magnitude 1e4: finite loss and gradient, and the right values
    big = np.array([[1e4, -1e4, 0.0], [0.0, 1e4, -1e4]])
    loss, grad = losses.softmax_cross_entropy(big, np.array([0, 2]))
    assert np.isfinite(float(loss)) and np.all(np.isfinite(grad))
    assert float(loss) == pytest.approx(0.5 * (0.0 + 2e4))
    np.testing.assert_allclose(grad, [[0, 0, 0], [0, 0.5, -0.5]], atol=1e-12)


def test_cross_entropy_on_probabilities_gradient(rng):
    probs = rng.uniform(0.1, 1.0, size=(N, C))
    labels = rng.integers(0, C, size=N)
    errors = loss_errors(lambda p: losses.cross_entropy(p, labels), [probs])
    assert errors[0] < 1e-7, errors


@pytest.mark.parametrize("bad, match", [
    (np.array([0, 1, 2, 3, 0, 1]), r"labels must lie in 0\.\.2, got values from 0 to 3"),
    (np.array([0, -1, 2, 1, 0, 1]), r"labels must lie in 0\.\.2"),
    (np.array([0.0, 1, 2, 1, 0, 1]), "labels must be integer class ids"),
    (np.array([0, 1, 2]), r"expected labels of shape \(6,\)"),
])
def test_cross_entropy_rejects_bad_labels(bad, match, rng):
    with pytest.raises(ValueError, match=match):
        losses.softmax_cross_entropy(rng.normal(size=(N, C)), bad)


def test_triplet_hinge_gradients_all_active(rng):
    a, p, q = (rng.normal(size=(N, D)) for _ in range(3))
    margin = 100.0  # every triplet active: the hinge is far from its kink
    errors = loss_errors(lambda a, p, q: losses.triplet_hinge(a, p, q, margin), [a, p, q])
    assert max(errors) < 1e-7, errors


def test_triplet_hinge_gradients_mixed(rng):
    a, p, q = (rng.normal(size=(N, D)) for _ in range(3))
    margin = 0.5
    h = margin + ((a - p) ** 2).sum(1) - ((a - q) ** 2).sum(1)
    assert (h > 0).any() and (h < 0).any() and np.abs(h).min() > 1e-3  # both sides, off the kink
    errors = loss_errors(lambda a, p, q: losses.triplet_hinge(a, p, q, margin), [a, p, q])
    assert max(errors) < 1e-7, errors
    loss, (da, dp, dq) = losses.triplet_hinge(a, p, q, margin)
    assert float(loss) == pytest.approx(np.maximum(h, 0).mean(), rel=1e-12)
    inactive = h < 0
    assert np.all(da[inactive] == 0) and np.all(dp[inactive] == 0) and np.all(dq[inactive] == 0)


def test_pull_push_gradients_mixed(rng):
    a, p, q = (rng.normal(size=(N, D)) for _ in range(3))
    margin, weight = 3.0, 0.7
    push = margin - ((a - q) ** 2).sum(1)
    assert (push > 0).any() and (push < 0).any() and np.abs(push).min() > 1e-3
    errors = loss_errors(lambda a, p, q: losses.pull_push(a, p, q, margin, weight), [a, p, q])
    assert max(errors) < 1e-7, errors
    loss, _ = losses.pull_push(a, p, q, margin, weight)
    expect = (((a - p) ** 2).sum(1) + weight * np.maximum(push, 0)).mean()
    assert float(loss) == pytest.approx(expect, rel=1e-12)


def test_triplet_shapes_must_agree(rng):
    a = rng.normal(size=(N, D))
    with pytest.raises(ValueError, match="must have one shape"):
        losses.triplet_hinge(a, a, a[:, :2], 1.0)
    with pytest.raises(ValueError, match="must have one shape"):
        losses.pull_push(a, a[:3], a, 1.0, 1.0)


def test_l2_penalty_gradient(rng):
    ws = [rng.normal(size=(D, C)), rng.normal(size=(C, 2))]
    coef = 0.3
    errors = loss_errors(lambda *w: losses.l2_penalty(list(w), coef), ws)
    assert max(errors) < 1e-7, errors
    loss, _ = losses.l2_penalty(ws, coef)
    assert float(loss) == pytest.approx(coef * sum((w ** 2).sum() for w in ws), rel=1e-12)


def test_label_range_check_can_be_skipped_and_probability_shape_is_checked(rng):
    logits = rng.normal(size=(N, C))
    good = rng.integers(0, C, size=N)
    a = losses.softmax_cross_entropy(logits, good)
    b = losses.softmax_cross_entropy(logits, good, check_values=False)
    assert float(a[0]) == float(b[0])
    with pytest.raises(ValueError, match="labels must lie in"):
        losses.softmax_cross_entropy(logits, good + C)
    with pytest.raises(ValueError, match="labels must be integer"):  # dtype and shape are always checked
        losses.softmax_cross_entropy(logits, good.astype(float), check_values=False)
    with pytest.raises(ValueError, match=r"expected probabilities of shape \(N, C\), got \(6,\)"):
        losses.cross_entropy(np.full(N, 0.5), good)


# A case worked out by hand, independent of the gradient check: row 0's triplet is
# inactive (margin 1 + 1 - 4 < 0), row 1's active (1 + 1 - 0.25 = 1.75).
HAND_A = np.array([[0.0, 0.0], [1.0, 1.0]])
HAND_P = np.array([[1.0, 0.0], [0.0, 1.0]])
HAND_Q = np.array([[0.0, 2.0], [1.5, 1.0]])


def test_triplet_hinge_by_hand():
    loss, (da, dp, dq) = losses.triplet_hinge(HAND_A, HAND_P, HAND_Q, 1.0)
    assert float(loss) == pytest.approx(1.75 / 2, rel=1e-15)
    # row 1: dh/dp = -2 (a - p) = (-2, 0), dh/dq = 2 (a - q) = (-1, 0), dh/da = 2 (q - p) = (3, 0); / N = 2
    np.testing.assert_array_equal(dp, [[0.0, 0.0], [-1.0, 0.0]])
    np.testing.assert_array_equal(dq, [[0.0, 0.0], [-0.5, 0.0]])
    np.testing.assert_array_equal(da, [[0.0, 0.0], [1.5, 0.0]])
    # a masked-out row contributes nothing; the mean is still over both rows
    loss, grads = losses.triplet_hinge(HAND_A, HAND_P, HAND_Q, 1.0, mask=np.array([True, False]))
    assert float(loss) == 0.0 and all(np.all(g == 0) for g in grads)
    loss, (da, dp, dq) = losses.triplet_hinge(HAND_A, HAND_P, HAND_Q, 1.0, mask=np.array([False, True]))
    assert float(loss) == pytest.approx(1.75 / 2, rel=1e-15) and dp[1].tolist() == [-1.0, 0.0]


def test_pull_push_by_hand():
    # row 0: pull 1, push max(0, 1 - 4) = 0; row 1: pull 1, push 0.5 * (1 - 0.25) = 0.375
    loss, (da, dp, dq) = losses.pull_push(HAND_A, HAND_P, HAND_Q, 1.0, 0.5)
    assert float(loss) == pytest.approx((1 + 1.375) / 2, rel=1e-15)
    np.testing.assert_array_equal(dp, [[1.0, 0.0], [-1.0, 0.0]])       # -(2/N)(a - p): every row pulls
    np.testing.assert_array_equal(dq, [[0.0, 0.0], [-0.25, 0.0]])      # (2 w/N)(a - q) where pushed
    np.testing.assert_array_equal(da, [[-1.0, 0.0], [1.25, 0.0]])
    loss, (da, dp, dq) = losses.pull_push(HAND_A, HAND_P, HAND_Q, 1.0, 0.5, mask=np.array([True, False]))
    assert float(loss) == pytest.approx(1 / 2, rel=1e-15)
    np.testing.assert_array_equal(dp, [[1.0, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(dq, np.zeros((2, 2)))
    np.testing.assert_array_equal(da, [[-1.0, 0.0], [0.0, 0.0]])


def test_triplet_mask_must_be_a_boolean_row_mask():
    for fn in (lambda m: losses.triplet_hinge(HAND_A, HAND_P, HAND_Q, 1.0, mask=m),
               lambda m: losses.pull_push(HAND_A, HAND_P, HAND_Q, 1.0, 0.5, mask=m)):
        with pytest.raises(ValueError, match=r"mask must be a boolean array of shape \(2,\), got int64 \(2,\)"):
            fn(np.array([1, 0]))
        with pytest.raises(ValueError, match=r"mask must be a boolean array of shape \(2,\), got bool \(3,\)"):
            fn(np.ones(3, bool))


def test_softmax_cross_entropy_gradient_by_hand():
    # two classes, logits (0, log 3): p = (1/4, 3/4); label 0 -> loss log 4, grad (p - onehot) / N
    loss, grad = losses.softmax_cross_entropy(np.array([[0.0, np.log(3.0)], [0.0, 0.0]]), np.array([0, 1]))
    assert float(loss) == pytest.approx((np.log(4.0) + np.log(2.0)) / 2, rel=1e-15)
    np.testing.assert_allclose(grad, [[-0.375, 0.375], [0.25, -0.25]], rtol=1e-15, atol=1e-16)


def test_l2_penalty_by_hand():
    loss, (g1, g2) = losses.l2_penalty([np.array([[1.0, 2.0]]), np.array([3.0])], 0.5)
    assert float(loss) == 0.5 * (1 + 4 + 9)
    np.testing.assert_array_equal(g1, [[1.0, 2.0]])
    np.testing.assert_array_equal(g2, [3.0])
    with pytest.raises(ValueError, match="at least one weight array"):
        losses.l2_penalty([], 0.5)
