# %% [markdown]
# # Tutorial 2: one Linear layer, forward and backward, checked numerically
#
# The affine map y = x W + b is most of ACMR's arithmetic: both feature projectors,
# the label classifier and the modality classifier are stacks of it. Here we derive its
# backward pass by hand, write it in three lines of NumPy, compare it with
# `acmr_np.layers.Linear.backward`, and check both against numerical gradients
# (tutorial 1). At the end: two classic bugs, and why a check with an all-ones
# upstream gradient would let one of them through.

# %%
import numpy as np

from acmr_np.gradcheck import layer_errors, numerical_gradient, relative_error
from acmr_np.layers import Linear

rng = np.random.default_rng(0)
N, D, M = 5, 4, 3   # batch rows, input features, output features: all different on purpose


def check(what, err, tol=1e-7):
    """Print one check as 'what: relative error 3.1e-10 < 1e-7: OK' and assert it."""
    ok = err < tol
    tol_s = f"{tol:.0e}".replace("e-0", "e-")
    print(f"{what}: relative error {err:.1e} {'<' if ok else '>='} {tol_s}: {'OK' if ok else 'FAIL'}")
    assert ok, what

# %% [markdown]
# ## 1. Forward
#
# x is (N, D): N rows (the mini-batch), D features. W is (D, M), b is (M,):
#
#     y_nm = sum_d x_nd W_dm + b_m          y = x W + b,  (N, M)
#
# b is added to every row (NumPy broadcasting). `Linear` draws W from the Glorot uniform
# distribution, U(-a, a) with a = sqrt(6 / (D + M)), and sets b = 0. We work in float64,
# as every gradient check must (tutorial 1).

# %%
layer = Linear(D, M, rng=rng, dtype=np.float64)
layer.params["b"][...] = rng.normal(size=M)   # a non-zero bias, so its gradient is tested
x = rng.normal(size=(N, D))
y = layer.forward(x)
assert np.allclose(y, x @ layer.params["W"] + layer.params["b"])
print("forward: x", x.shape, "@ W", layer.params["W"].shape, "+ b", layer.params["b"].shape,
      "-> y", y.shape)

# %% [markdown]
# ## 2. Backward, derived
#
# Somewhere above this layer there is a scalar loss L. Backpropagation hands the layer
# `dout` = dL/dy, an (N, M) array, and asks for three things: dL/dW and dL/db (to update
# the parameters) and dL/dx (to pass further down). The chain rule sums over every
# output element that depends on the variable:
#
#     dL/dW_dm = sum_n sum_k dL/dy_nk * dy_nk/dW_dm
#
# and dy_nk/dW_dm = x_nd when k = m, else 0. So
#
#     dL/dW_dm = sum_n x_nd dout_nm      ->   dW = x^T dout      (D, N)(N, M) = (D, M)
#     dL/db_m  = sum_n dout_nm           ->   db = column sums of dout       (M,)
#     dL/dx_nd = sum_m dout_nm W_dm      ->   dx = dout W^T      (N, M)(M, D) = (N, D)
#
# The shapes are a free sanity check: each gradient has the shape of its variable, and
# there is only one way to multiply the available arrays to get it. The bias gradient
# is a *sum* over rows because b was broadcast (copied) to every row in the forward
# pass: a variable used N times collects N gradient contributions.

# %%
dout = rng.normal(size=(N, M))        # a RANDOM upstream gradient (section 4 says why)


def linear_backward(x, W, dout):
    dW = x.T @ dout
    db = dout.sum(axis=0)
    dx = dout @ W.T
    return dx, dW, db


dx, dW, db = linear_backward(x, layer.params["W"], dout)
layer.forward(x)
dx_layer = layer.backward(dout)        # the package's version; fills layer.grads
assert np.allclose(dx, dx_layer) and np.allclose(dW, layer.grads["W"]) and np.allclose(db, layer.grads["b"])
print("our three lines agree with acmr_np.layers.Linear.backward")

# %% [markdown]
# ## 3. Checked numerically
#
# A layer outputs an array, but the numerical gradient needs a scalar function. We build
# one whose gradient is exactly what `backward(dout)` claims to return:
#
#     f(x, W, b) = sum_nm y_nm dout_nm       so   df/dy = dout
#
# and then df/dW must equal `backward`'s dW, and so on. `numerical_gradient(f, arr)`
# perturbs `arr` in place, one element at a time, so f reads the current W and b through
# the layer.

# %%
def f(_):
    return (layer.forward(x) * dout).sum()


check("dL/dx", relative_error(dx, numerical_gradient(f, x)))
check("dL/dW", relative_error(dW, numerical_gradient(f, layer.params["W"])))
check("dL/db", relative_error(db, numerical_gradient(f, layer.params["b"])))

# %% [markdown]
# `acmr_np.gradcheck.layer_errors(layer, x, dout)` does exactly the above for any layer,
# with respect to the input and every parameter. The tests (`tests/test_layers.py`) use it
# and so does the classroom grader.

# %%
errors = layer_errors(layer, x, dout)
for name, err in errors.items():
    check(f"layer_errors['{name}']", err)

# %% [markdown]
# ## 4. Two bugs, and why the upstream gradient must be random
#
# Bug 1: a student writes dW = x^T 1 (the upstream gradient summed as if it were all
# ones). With a random `dout` the check catches it at once. With dout = ones, the wrong
# formula and the right one coincide (x^T 1 = x^T dout), and the check passes: **an
# all-ones upstream gradient proves nothing**.
#
# Bug 2: dx = dout W instead of dout W^T. With non-square W (D != M) it does not even
# run; with a square W it runs and is wrong. Non-square shapes and random values
# catch both.

# %%
class BuggyLinear(Linear):
    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["W"][...] = self.x.T @ np.ones_like(dout)   # the bug: ignores dout's values
        return dx


buggy = BuggyLinear(D, M, rng=rng, dtype=np.float64)
err_random = layer_errors(buggy, x, rng.normal(size=(N, M)))["W"]
err_ones = layer_errors(buggy, x, np.ones((N, M)))["W"]
print(f"bug 1 with a random upstream gradient: dW relative error {err_random:.1e} (caught)")
print(f"bug 1 with an all-ones upstream gradient: dW relative error {err_ones:.1e} (missed!)")
assert err_random > 1e-2 and err_ones < 1e-7


class SquareBug(Linear):
    def backward(self, dout):
        super().backward(dout)
        return dout @ self.params["W"]          # the bug: W instead of W^T


sq = SquareBug(4, 4, rng=rng, dtype=np.float64)
err_sq = layer_errors(sq, rng.normal(size=(N, 4)), rng.normal(size=(N, 4)))["x"]
print(f"bug 2 (square W, dx = dout W): dx relative error {err_sq:.1e} (caught)")
assert err_sq > 1e-2

# %% [markdown]
# ## Result

# %%
print("\nResult: Linear's backward is dW = x^T dout, db = column sums of dout, dx = dout W^T;")
print("all three agree with centered differences to "
      f"{max(errors.values()):.1e} (< 1e-7), and the check catches both planted bugs.")

# %% [markdown]
# ## Exercises
#
# 1. **A bias gradient that averages.** Write a third bug, `db = dout.mean(axis=0)`
#    instead of the sum (subclass `Linear` as in section 4), and check it with
#    `layer_errors`. Measured: dx and dW pass (9e-10, 3e-11), db fails with a relative
#    error of 0.6667 in every element. Show that it must be exactly (N - 1) / (N + 1)
#    for a batch of N = 5 rows.
# 2. **Bug 2 with honest shapes.** Build `SquareBug(4, 3, ...)` (D != M) and run
#    `layer_errors` on it. Expect no number at all: `dout @ W` multiplies (5, 3) by
#    (4, 3) and NumPy raises `ValueError: matmul: ... size 4 is different from 3`. Which
#    other transposition bugs would a square check let through?
# 3. **Overwrite, never accumulate.** `Linear.backward` writes its gradients into
#    `self.grads`; a version that adds to them (`self.grads[k] += ...`) passes a first
#    `layer_errors` (measured 3e-11) because the arrays start at zero. Call
#    `layer_errors` a second time on the same layer: measured relative error 0.3333 for
#    W and b (the gradients are now doubled), while dx still passes. Why 1/3, and why
#    does the optimiser in tutorial 4 rely on the overwrite?
