"""Every layer's backward against centered differences (float64, random upstream
gradient, non-square shapes), the GRL exactly, and NumPy against CuPy."""
import numpy as np
import pytest

from acmr_np import layers
from acmr_np.gradcheck import layer_errors
from acmr_np.losses import cross_entropy, softmax_cross_entropy

N, D, M = 5, 7, 3  # non-square everywhere: a transposed gradient cannot fit


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_linear_gradients(rng):
    layer = layers.Linear(D, M, rng=rng, dtype=np.float64)
    layer.params["b"][...] = rng.normal(size=M)  # a non-zero bias is part of the check
    errors = layer_errors(layer, rng.normal(size=(N, D)), rng.normal(size=(N, M)))
    assert set(errors) == {"x", "W", "b"}
    assert max(errors.values()) < 1e-7, errors


def test_linear_forward_values(rng):
    layer = layers.Linear(D, M, rng=rng, dtype=np.float64)
    x = rng.normal(size=(N, D))
    np.testing.assert_allclose(layer.forward(x), x @ layer.params["W"] + layer.params["b"])
    # Glorot uniform bound: |W| <= sqrt(6 / (D + M))
    assert np.abs(layer.params["W"]).max() <= np.sqrt(6 / (D + M))
    assert layer.params["W"].dtype == np.float64


def test_linear_backward_overwrites_grads(rng):
    layer = layers.Linear(D, M, rng=rng, dtype=np.float64)
    x, g = rng.normal(size=(N, D)), rng.normal(size=(N, M))
    layer.forward(x)
    layer.backward(g)
    layer.forward(x)
    layer.backward(g)
    np.testing.assert_allclose(layer.grads["W"], x.T @ g)  # once, not twice
    np.testing.assert_allclose(layer.grads["b"], g.sum(axis=0))


def test_linear_same_seed_same_weights():
    a = layers.Linear(D, M, rng=np.random.default_rng(3))
    b = layers.Linear(D, M, rng=np.random.default_rng(3))
    c = layers.Linear(D, M, rng=np.random.default_rng(4))
    assert a.params["W"].dtype == np.float32
    np.testing.assert_array_equal(a.params["W"], b.params["W"])
    assert not np.array_equal(a.params["W"], c.params["W"])


def test_linear_rejects_wrong_width(rng):
    layer = layers.Linear(D, M, rng=rng)
    with pytest.raises(ValueError, match=r"Linear\(7, 3\): expected input of shape \(N, 7\), got \(5, 6\)"):
        layer.forward(np.zeros((N, D - 1), np.float32))
    with pytest.raises(ValueError, match="expected input of shape"):
        layer.forward(np.zeros(D, np.float32))
    layer.forward(np.zeros((N, D), np.float32))
    with pytest.raises(ValueError, match=r"Linear\(7, 3\)\.backward: expected dout of shape \(5, 3\), got \(5, 7\)"):
        layer.backward(np.zeros((N, D), np.float32))


@pytest.mark.parametrize("make", [layers.Tanh, layers.Softmax, layers.L2Normalize])
def test_smooth_activation_gradients(make, rng):
    errors = layer_errors(make(), rng.normal(size=(N, D)), rng.normal(size=(N, D)))
    assert errors["x"] < 1e-7, errors


def test_relu_gradient_away_from_kink(rng):
    x = rng.normal(size=(N, D))
    x[np.abs(x) < 0.1] = 0.5  # keep every input at least h away from the kink at 0
    errors = layer_errors(layers.ReLU(), x, rng.normal(size=(N, D)))
    assert errors["x"] < 1e-7, errors


def test_activation_values(rng):
    x = rng.normal(size=(N, D))
    np.testing.assert_allclose(layers.Tanh().forward(x), np.tanh(x))
    np.testing.assert_allclose(layers.ReLU().forward(x), np.maximum(x, 0))
    p = layers.Softmax().forward(x)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p, np.exp(x) / np.exp(x).sum(axis=1, keepdims=True))
    y = layers.L2Normalize().forward(x)
    np.testing.assert_allclose(y, x / np.linalg.norm(x, axis=1, keepdims=True))
    assert np.all(layers.L2Normalize().forward(np.zeros((2, 3))) == 0)  # no NaN for a zero row
    big = layers.Softmax().forward(np.array([[1e4, 0.0, -1e4]]))
    np.testing.assert_allclose(big, [[1.0, 0.0, 0.0]])


def test_gradient_reversal_is_exact(rng):
    grl = layers.GradientReversal(lam=0.3)
    x, g = rng.normal(size=(N, D)), rng.normal(size=(N, D))
    assert grl.forward(x) is x
    np.testing.assert_array_equal(grl.backward(g), -0.3 * g)
    grl.lam = 2.5  # the schedule changes it between steps
    np.testing.assert_array_equal(grl.backward(g), -2.5 * g)
    assert grl.params == {} and grl.grads == {}


def test_softmax_then_cross_entropy_equals_fused(rng):
    logits = rng.normal(size=(N, M))
    labels = rng.integers(0, M, size=N)
    sm = layers.Softmax()
    loss, dprobs = cross_entropy(sm.forward(logits), labels)
    fused_loss, fused_dlogits = softmax_cross_entropy(logits, labels)
    assert float(loss) == pytest.approx(float(fused_loss), rel=1e-12)
    np.testing.assert_allclose(sm.backward(dprobs), fused_dlogits, rtol=1e-10, atol=1e-14)


def _cupy():
    import cupy
    return cupy


def _assert_same_up_to_summation_order(host, dev, scale):
    """Host and device results of one computation agree to rounding. A different
    summation order (cuBLAS, CuPy's reductions) moves an entry by a few ulps of the
    magnitude of the terms summed into it, not of the entry: where the exact answer is 0
    (L2Normalize.backward of a dout along y, a cancelling dot product) both sides are
    rounding noise, and a tolerance relative to the entry alone fails on noise.
    scale: a bound on the terms' magnitude (e.g. (|a| @ |b|).max() for a @ b)."""
    np.testing.assert_allclose(dev, host, rtol=1e-12, atol=1e-13 * scale)


def _product_scale(a, b):
    return float((np.abs(a) @ np.abs(b)).max())


def test_a_zero_answer_is_compared_at_the_scale_of_its_terms(rng):
    """Why the cross-backend comparisons carry an absolute tolerance: L2Normalize's
    backward of dout = x is exactly 0, and the same computation summed in another order
    (here: the features permuted, on the CPU) gives other rounding noise, so a tolerance
    relative to the entries alone would fail a right answer."""
    x = rng.normal(size=(N, D))
    perm = rng.permutation(D)
    a, b = layers.L2Normalize(), layers.L2Normalize()
    a.forward(x)
    b.forward(x[:, perm])
    one = a.backward(x)
    other = np.empty_like(one)
    other[:, perm] = b.backward(x[:, perm])
    assert np.abs(one).max() < 1e-15 and not np.array_equal(one, other)  # noise, and not the same noise
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(other, one, rtol=1e-12, atol=0)
    _assert_same_up_to_summation_order(one, other, D * float(np.abs(x).max()))


@pytest.mark.gpu
def test_layers_same_numbers_on_cupy(rng):
    cp = _cupy()
    x, g = rng.normal(size=(N, D)), rng.normal(size=(N, M))
    host = layers.Linear(D, M, rng=np.random.default_rng(1), dtype=np.float64)
    dev = layers.Linear(D, M, rng=np.random.default_rng(1), xp=cp, dtype=np.float64)
    W = host.params["W"]
    np.testing.assert_array_equal(W, dev.params["W"].get())
    _assert_same_up_to_summation_order(host.forward(x), dev.forward(cp.asarray(x)).get(), _product_scale(x, W))
    _assert_same_up_to_summation_order(host.backward(g), dev.backward(cp.asarray(g)).get(), _product_scale(g, W.T))
    _assert_same_up_to_summation_order(host.grads["W"], dev.grads["W"].get(), _product_scale(x.T, g))
    _assert_same_up_to_summation_order(host.grads["b"], dev.grads["b"].get(), float(np.abs(g).sum(axis=0).max()))
    # dout = x is along y for L2Normalize: its exact backward is 0, rounding noise on both sides
    for dout in (x, rng.normal(size=(N, D))):
        scale = D * float(np.abs(dout).max())  # bounds every sum over a row (|y| <= 1, |p| <= 1)
        for make in (layers.Tanh, layers.ReLU, layers.Softmax, layers.L2Normalize):
            a, b = make(), make()
            _assert_same_up_to_summation_order(a.forward(x), b.forward(cp.asarray(x)).get(), D * float(np.abs(x).max()))
            _assert_same_up_to_summation_order(a.backward(dout), b.backward(cp.asarray(dout)).get(), scale)


@pytest.mark.gpu
def test_layer_gradcheck_runs_on_cupy(rng):
    cp = _cupy()
    layer = layers.Linear(D, M, rng=rng, xp=cp, dtype=np.float64)
    errors = layer_errors(layer, cp.asarray(rng.normal(size=(N, D))), cp.asarray(rng.normal(size=(N, M))))
    assert max(errors.values()) < 1e-7, errors
