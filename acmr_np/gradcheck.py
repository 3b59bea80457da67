"""Numerical gradient checks: the referee for every backward pass in this package.

Students and teachers use these directly (the assignments are graded with them).
Method (ACMR.md section 8): centered differences in float64,

    df/dx_i ~ (f(x + h e_i) - f(x - h e_i)) / (2h),   h = 1e-5,

whose error is O(h^2); compared with the analytic gradient by the relative error

    max_i |a_i - n_i| / max(1e-8, |a_i| + |n_i|),

which is below 1e-7 for a correct backward away from kinks (a hinge at 0, a ReLU at 0).

To check a layer, we turn its vector output into a scalar with a RANDOM upstream
gradient g: f(x) = sum(forward(x) * g), so df/dx = backward(g). An all-ones g would
hide some bugs (it cannot tell a transposed gradient from the right one when the
shapes are square), which is why the helpers below take g as an argument.
"""
import numpy

from .backend import get_array_module


def numerical_gradient(f, x, h=1e-5):
    """Centered-difference gradient of a scalar function.

    f: a callable taking ``x`` and returning a scalar (a float or 0-d array); it may
       also ignore its argument and read ``x`` through a closure, because ``x`` is
       perturbed IN PLACE (and restored exactly afterwards).
    x: the array (NumPy or CuPy, float64 for meaningful results) to differentiate by.
    Returns an array like ``x``. One pair of evaluations per element: use small shapes.
    """
    xp = get_array_module(x)
    grad = xp.zeros(x.shape, dtype=numpy.float64)
    for i in numpy.ndindex(*x.shape):
        old = x[i].item()
        x[i] = old + h
        f_plus = float(f(x))
        x[i] = old - h
        f_minus = float(f(x))
        x[i] = old
        grad[i] = (f_plus - f_minus) / (2 * h)
    return grad


def relative_error(analytic, numeric):
    """max |a - n| / max(1e-8, |a| + |n|) over all elements, as a Python float."""
    xp = get_array_module(analytic, numeric)
    a = xp.asarray(analytic, dtype=numpy.float64)
    n = xp.asarray(numeric, dtype=numpy.float64)
    if a.shape != n.shape:
        raise ValueError(f"relative_error: shapes differ, {a.shape} vs {n.shape}")
    return float((xp.abs(a - n) / xp.maximum(1e-8, xp.abs(a) + xp.abs(n))).max())


def scaled_error(analytic, numeric):
    """max |a - n| / max(1e-8, max(|a| + |n|)): the worst elementwise difference measured
    against the array's own scale, as a Python float.

    For a whole model the numerical gradient of every element carries the same absolute
    round-off (about eps |f| / h), so ``relative_error`` of an element 1000 times smaller
    than its neighbours sits at the noise floor even when the backward is right. This
    measure keeps a wrong gradient of any block that matters in view (its error is then
    of order 1) without failing a right one on rounding.
    """
    xp = get_array_module(analytic, numeric)
    a = xp.asarray(analytic, dtype=numpy.float64)
    n = xp.asarray(numeric, dtype=numpy.float64)
    if a.shape != n.shape:
        raise ValueError(f"scaled_error: shapes differ, {a.shape} vs {n.shape}")
    return float(xp.abs(a - n).max() / max(1e-8, float((xp.abs(a) + xp.abs(n)).max())))


def layer_errors(layer, x, dout, h=1e-5):
    """Relative errors of a layer's backward against numerical gradients.

    layer: any object with forward/backward/params/grads (see layers.py), in float64.
    x (N, D): the input; dout: a random upstream gradient shaped like the output.
    Returns {"x": error of dx, name: error of grads[name] for every parameter}.
    """
    def f(_):
        return (layer.forward(x) * dout).sum()

    layer.forward(x)
    dx = layer.backward(dout)
    analytic = {"x": dx, **{k: g.copy() for k, g in layer.grads.items()}}
    errors = {"x": relative_error(analytic["x"], numerical_gradient(f, x, h))}
    for k, p in layer.params.items():
        errors[k] = relative_error(analytic[k], numerical_gradient(f, p, h))
    return errors


def loss_errors(loss_fn, inputs, h=1e-5):
    """Relative errors of a loss's analytic gradients.

    loss_fn: called as loss_fn(*inputs) -> (loss, grads) where grads is one array
    (single differentiable input) or a tuple with one array per input in ``inputs``.
    inputs: the float64 arrays to differentiate by (non-array arguments such as labels
    or a margin go into loss_fn through a closure or functools.partial).
    Returns a list of errors, one per input.
    """
    _, grads = loss_fn(*inputs)
    if not isinstance(grads, (tuple, list)):
        grads = (grads,)
    grads = [g.copy() for g in grads]
    return [relative_error(g, numerical_gradient(lambda _: loss_fn(*inputs)[0], x, h))
            for g, x in zip(grads, inputs)]
