"""The gradient check itself: it must pass a right backward and FAIL a wrong one."""
import numpy as np
import pytest

from acmr_np import layers
from acmr_np.gradcheck import layer_errors, loss_errors, numerical_gradient, relative_error, scaled_error


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


def test_numerical_gradient_is_the_centered_difference_with_step_h():
    """For f = sum(c x^3) the centered difference is exactly c (3 x^2 + h^2): a closed
    form that pins both the formula (a forward difference gives c (3x^2 + 3xh + h^2))
    and the step (h = 1e-5 by default: h^2 = 1e-10 at x = 0)."""
    rng = np.random.default_rng(4)
    x, c = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    for h in (0.1, 0.01):
        np.testing.assert_allclose(numerical_gradient(lambda x: (c * x ** 3).sum(), x, h=h),
                                   c * (3 * x ** 2 + h ** 2), rtol=1e-9)
    zero = np.zeros(4)
    np.testing.assert_allclose(numerical_gradient(lambda x: (x ** 3).sum(), zero), np.full(4, 1e-10), rtol=1e-6)
    # f may read x through a closure (x is perturbed in place), and any shape works
    y = rng.normal(size=(2, 2, 2))
    g = numerical_gradient(lambda _: float((y ** 2).sum()), y)
    assert g.shape == y.shape and g.dtype == np.float64
    np.testing.assert_allclose(g, 2 * y, rtol=1e-8)


def test_relative_error_is_the_worst_element_with_a_floor_of_1e8():
    # elementwise errors 0, 0, 0 and |1 - 3| / 4 = 0.5: the max, not the mean (0.125)
    assert relative_error(np.ones(4), np.array([1.0, 1.0, 1.0, 3.0])) == pytest.approx(0.5)
    assert relative_error(np.array([[1.0, 3.0], [1.0, 1.0]]), np.ones((2, 2))) == pytest.approx(0.5)
    # small gradients are compared relatively: 1e-3 against 2e-3 is off by a third
    assert relative_error(np.array([1e-3]), np.array([2e-3])) == pytest.approx(1 / 3)
    # below 1e-8 the denominator stops shrinking: 1e-9 against 0 is 1e-9 / 1e-8
    assert relative_error(np.array([0.0]), np.array([1e-9])) == pytest.approx(0.1)
    assert relative_error(np.array([-1e-9]), np.array([1e-9])) == pytest.approx(0.2)
    # sign matters: a gradient of the wrong sign has error 1
    assert relative_error(np.array([2.0, 1.0]), np.array([-2.0, 1.0])) == pytest.approx(1.0)


def test_scaled_error_floor_and_scale():
    assert scaled_error(np.array([1e-3, 0.0]), np.array([2e-3, 0.0])) == pytest.approx(1 / 3)
    assert scaled_error(np.zeros(2), np.array([1e-9, 0.0])) == pytest.approx(0.1)
    # the scale is the array's largest |a| + |n|, not their sum nor the mean
    assert scaled_error(np.array([1.0, 1.0, 1.0]), np.array([1.0, 1.0, 1.5])) == pytest.approx(0.5 / 2.5)
    assert scaled_error(np.array([[2.0, 0.0], [0.0, 0.0]]), np.array([[2.0, 0.0], [0.0, 0.1]])) \
        == pytest.approx(0.1 / 4.0)


def _three_inputs(grad_of_c):
    """f(a, b, c) = sum(a * b) + sum(c^2), gradients (b, a, grad_of_c(c))."""
    def f(a, b, c):
        return (a * b).sum() + (c ** 2).sum(), (b.copy(), a.copy(), grad_of_c(c))
    return f


def test_loss_errors_checks_every_input_in_order():
    rng = np.random.default_rng(5)
    a, b, c = rng.normal(size=(3, 2)), rng.normal(size=(3, 2)), rng.normal(size=(4,))
    errors = loss_errors(_three_inputs(lambda c: 2 * c), [a, b, c])
    assert len(errors) == 3 and max(errors) < 1e-8, errors
    errors = loss_errors(_three_inputs(lambda c: c), [a, b, c])        # the last one is wrong
    assert errors[0] < 1e-8 and errors[1] < 1e-8 and errors[2] == pytest.approx(1 / 3, rel=1e-6), errors

    def wrong_second(a, b, c):
        loss, (da, db, dc) = _three_inputs(lambda c: 2 * c)(a, b, c)
        return loss, (da, -db, dc)
    errors = loss_errors(wrong_second, [a, b, c])
    assert errors[0] < 1e-8 and errors[1] == pytest.approx(1.0) and errors[2] < 1e-8, errors
    # a loss of one input may return its gradient as a bare array
    assert loss_errors(lambda x: ((x ** 2).sum(), 2 * x), [c])[0] < 1e-8
    assert loss_errors(lambda x: ((x ** 2).sum(), 3 * x), [c])[0] == pytest.approx(0.2, rel=1e-6)


class BiasMeanLinear(layers.Linear):
    """A bias gradient averaged over the batch instead of summed."""

    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["b"][...] = dout.mean(axis=0)
        return dx


def test_layer_errors_reports_each_parameter_separately():
    rng = np.random.default_rng(6)
    x, g = rng.normal(size=(5, 4)), rng.normal(size=(5, 3))
    errors = layer_errors(BiasMeanLinear(4, 3, rng=rng, dtype=np.float64), x, g)
    assert set(errors) == {"x", "W", "b"}
    assert errors["b"] == pytest.approx((1 - 1 / 5) / (1 + 1 / 5), rel=1e-6)  # |s/5 - s| / (|s/5| + |s|)
    assert errors["x"] < 1e-8 and errors["W"] < 1e-8
    # a step h of the caller's choice is used
    errors = layer_errors(layers.Tanh(), x, rng.normal(size=(5, 4)), h=1e-2)
    assert 1e-7 < errors["x"] < 1e-3
