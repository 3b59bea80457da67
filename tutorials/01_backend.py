# %% [markdown]
# # Tutorial 1: the array backend, and why gradient checks run in float64
#
# Run it as a script (`python tutorials/01_backend.py`) or open it as a notebook in an
# editor that reads the `# %%` cell format (VS Code, PyCharm, JupyterLab with jupytext).
#
# `acmr_np` writes every computation as `xp.something(...)`, where `xp` is a *module*:
# either `numpy` (CPU) or `cupy` (an NVIDIA GPU). CuPy copies NumPy's interface, so the
# same lines run on both. In this tutorial:
#
# 1. how a function finds its `xp` (from its arguments, never from a global setting);
# 2. how arrays move between host (CPU) and device (GPU): always explicitly;
# 3. the numerical gradient, the referee of every later tutorial, and why it needs
#    float64 and a step h of about 1e-5.

# %%
import numpy as np

from acmr_np.backend import (backend_name, cupy_available, get_array_module, get_backend,
                             to_device, to_host)
from acmr_np.errors import InputError
from acmr_np.gradcheck import numerical_gradient, relative_error

# %% [markdown]
# ## 1. Choosing a backend by name
#
# `get_backend("numpy")` returns the `numpy` module itself. `get_backend("cupy")` returns
# `cupy`, or raises `InputError` with the reason (not installed, or no usable CUDA
# device). There is no silent fallback: if you asked for the GPU and cannot have it, you
# are told.

# %%
xp = get_backend("numpy")
assert xp is np
print("get_backend('numpy') is the numpy module:", xp is np)
try:
    get_backend("cupy")
    print("get_backend('cupy') works here: a CUDA device is usable")
except InputError as exc:
    print("get_backend('cupy') refused, with the reason:\n   ", exc)
try:
    get_backend("tensorflow")
except InputError as exc:
    print("an unknown name is refused too:", exc)

# %% [markdown]
# ## 2. Backend-agnostic code: take `xp` from the arrays
#
# A function that must work on both backends asks its *inputs* which module they belong
# to: `get_array_module(x)` returns `cupy` for a CuPy array and `numpy` otherwise. This
# is how every layer in `acmr_np/layers.py` is written. Below, a row-wise softmax
#
#     p_ij = exp(x_ij - max_k x_ik) / sum_l exp(x_il - max_k x_ik)
#
# (subtracting the row maximum changes nothing mathematically, it cancels in the ratio,
# but keeps exp() from overflowing) written once for both backends.

# %%
def softmax_rows(x):
    xp = get_array_module(x)          # numpy or cupy, whichever holds x
    e = xp.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


x = np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, 1000.0]])
p = softmax_rows(x)
print("softmax rows:\n", p)
assert np.allclose(p.sum(axis=1), 1.0) and np.allclose(p[1], 1 / 3)
print(f"each row sums to 1, and logits of 1000 did not overflow: OK "
      f"(module used: {backend_name(get_array_module(x))})")

# %% [markdown]
# ## 3. Moving arrays: `to_device` and `to_host`
#
# `to_device(a, xp, dtype)` puts a host array on the backend `xp` (a copy to the GPU for
# CuPy; for NumPy just a cast). `to_host(a)` brings any array back as NumPy. Nothing in
# the package moves data implicitly, because a hidden GPU-to-CPU copy inside a training
# step costs more than the step. The model's weights are drawn on the host from a seeded
# NumPy generator and then moved with `to_device`: a NumPy run and a CuPy run start from
# the very same numbers.

# %%
host = np.arange(6, dtype=np.float64).reshape(2, 3)
dev = to_device(host, xp, np.float32)
back = to_host(dev)
print("dtype on the backend:", dev.dtype, "| round trip equal:", np.array_equal(back, host))
assert back.dtype == np.float32 and np.array_equal(back, host)
if cupy_available():
    import cupy
    d = to_device(host, cupy)
    assert type(d).__module__.startswith("cupy") and np.array_equal(to_host(d), host)
    print("CuPy round trip through the GPU: OK")
else:
    print("(CuPy with a CUDA device is not available here; tutorial 8 shows the GPU run)")

# %% [markdown]
# ## 4. The numerical gradient: the referee for every backward pass
#
# Every layer in this package has a hand-written `backward`. To trust it, we compare it
# with a derivative computed from the *forward* pass alone, by centered differences:
#
#     df/dx_i ~ (f(x + h e_i) - f(x - h e_i)) / (2h)
#
# Taylor expansion gives f(x ± h e_i) = f(x) ± h f'(x) + h^2/2 f''(x) ± h^3/6 f'''(x) + ...,
# so the even terms cancel and the error is O(h^2) (truncation). But f is computed in
# floating point with relative precision eps (2.2e-16 in float64, 1.2e-7 in float32), and
# dividing a difference of two rounded values by 2h adds an error of about eps * |f| / h
# (round-off). Small h: round-off wins; large h: truncation wins. The total,
# h^2 + eps / h, is smallest near h = eps^(1/3): 6e-6 in float64, 5e-3 in float32.
#
# We compare the analytic gradient a with the numerical one n by the relative error
#
#     max_i |a_i - n_i| / max(1e-8, |a_i| + |n_i|)
#
# which is scale-free (a gradient of 1e6 and one of 1e-3 are judged alike).
#
# Let us watch both error sources on f(x) = sum(tanh(x)), whose gradient we know:
# 1 - tanh(x)^2.

# %%
rng = np.random.default_rng(0)
x64 = rng.normal(size=(4, 3))
exact = 1 - np.tanh(x64) ** 2

print("   h       float64 error   float32 error")
errors = {}
for h in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-9):
    e64 = relative_error(exact, numerical_gradient(lambda x: np.tanh(x).sum(), x64.copy(), h))
    x32 = x64.astype(np.float32)
    e32 = relative_error(exact, numerical_gradient(lambda x: np.tanh(x).sum(), x32, h))
    errors[h] = e64, e32
    print(f"{h:7.0e}   {e64:13.1e}   {e32:13.1e}")

# %% [markdown]
# Read the float64 column: the error falls as h^2 (1e-1 -> 1e-3: four orders), bottoms out
# near h = 1e-5, and rises again when round-off takes over (1e-9). In float32 no h gets
# anywhere near 1e-7: a correct backward would look wrong. Hence the rule used in every
# test of this package (`acmr_np/gradcheck.py`): **float64 inputs, h = 1e-5, a correct
# backward gives a relative error below 1e-7.** Training itself runs in float32 (twice
# as fast, half the memory); only the checks need float64.

# %%
best64 = errors[1e-5][0]
print(f"float64, h = 1e-5: relative error {best64:.1e} < 1e-7: "
      f"{'OK' if best64 < 1e-7 else 'FAIL'}")
assert best64 < 1e-7
worst32 = min(e32 for _, e32 in errors.values())
print(f"float32, best h:   relative error {worst32:.1e} >= 1e-7: float32 cannot referee a backward")
assert worst32 > 1e-7
print("\nResult: one code path for NumPy and CuPy, explicit host/device copies, and a "
      "numerical gradient we can trust in float64.")
