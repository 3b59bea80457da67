"""The gradient check itself: it must pass a right backward and FAIL a wrong one."""
import numpy as np
import pytest

from acmr_np import layers
from acmr_np.gradcheck import layer_errors, numerical_gradient, relative_error, scaled_error


def test_numerical_gradient_of_known_function():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4))
    A = rng.normal(size=(3, 4))
    x0 = x.copy()
    # f(x) = sum(A * x^3)  ->  df/dx = 3 A x^2
    g = numerical_gradient(lambda x: (A * x ** 3).sum(), x)
    assert relative_error(3 * A * x ** 2, g) < 1e-8
    np.testing.assert_array_equal(x, x0)  # x is restored exactly


def test_relative_error_measure():
    assert relative_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert relative_error(np.array([1.0]), np.array([3.0])) == pytest.approx(0.5)
    assert relative_error(np.array([0.0]), np.array([0.0])) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        relative_error(np.zeros(2), np.zeros(3))


def test_scaled_error_measure():
    # hand-computed: max |a - n| = 0.5 (second entry), max(|a| + |n|) = 2 + 2.5 = 4.5
    a, n = np.array([1e-6, 2.0, -1.0]), np.array([2e-6, 2.5, -1.0])
    assert scaled_error(a, n) == pytest.approx(0.5 / 4.5)
    # the tiny first entry is off by a factor 2: elementwise that is an error of 1/3,
    # against the array's scale it is noise
    assert relative_error(a[:1], n[:1]) == pytest.approx(1 / 3)
    assert scaled_error(a, np.array([2e-6, 2.0, -1.0])) == pytest.approx(1e-6 / 4.0)
    assert scaled_error(np.zeros(3), np.zeros(3)) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        scaled_error(np.zeros(2), np.zeros(3))


class OnesUpstreamLinear(layers.Linear):
    """A student bug: the weight gradient ignores the upstream values (x^T 1 for x^T dout)."""

    def backward(self, dout):
        dx = super().backward(dout)
        # wrong: the upstream gradient summed as if it were all ones
        self.grads["W"][...] = self.x.T @ np.ones_like(dout)
        return dx


class ForgotDerivativeTanh(layers.Tanh):
    """Another classic bug: passing the upstream gradient through unchanged."""

    def backward(self, dout):
        return dout


class TransposedWeightGradLinear(layers.Linear):
    """dW = (x^T dout)^T: the transposed weight gradient, which fits only when W is square."""

    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["W"][...] = (self.x.T @ dout).T
        return dx


class SquareTransposeLinear(layers.Linear):
    """dx = dout W instead of dout W^T: only a square W lets this run at all."""

    def backward(self, dout):
        super().backward(dout)
        return dout @ self.params["W"]


def test_gradcheck_catches_wrong_backwards():
    rng = np.random.default_rng(2)
    x, g = rng.normal(size=(5, 4)), rng.normal(size=(5, 3))
    errors = layer_errors(OnesUpstreamLinear(4, 3, rng=rng, dtype=np.float64), x, g)
    assert errors["W"] > 1e-2 and errors["x"] < 1e-7
    errors = layer_errors(ForgotDerivativeTanh(), x, rng.normal(size=(5, 4)))
    assert errors["x"] > 1e-2
    # The square case: a transposed weight in dx is caught by a random W and g.
    xs, gs = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    errors = layer_errors(SquareTransposeLinear(4, 4, rng=rng, dtype=np.float64), xs, gs)
    assert errors["x"] > 1e-2
    errors = layer_errors(TransposedWeightGradLinear(4, 4, rng=rng, dtype=np.float64), xs, gs)
    assert errors["W"] > 1e-2 and errors["x"] < 1e-7


def test_all_ones_upstream_would_hide_a_bug():
    """Why the checks use a random upstream gradient: with g = 1 the bug above is invisible."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 4))
    errors = layer_errors(OnesUpstreamLinear(4, 3, rng=rng, dtype=np.float64), x, np.ones((5, 3)))
    assert errors["W"] < 1e-7  # the broken layer passes: an all-ones check proves nothing
