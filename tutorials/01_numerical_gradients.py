# %% [markdown]
# # Tutorial 1: the numerical gradient, the referee of every backward pass
#
# Run it as a script (`python tutorials/01_numerical_gradients.py`) or open it as a
# notebook (the README says how).
#
# Every layer of `acmr_np` has a hand-written `backward`. To trust one, we compare it
# with a derivative computed from the *forward* pass alone, by finite differences. That
# comparison is only as good as the finite differences, so we first work out their
# error. In this tutorial:
#
# 1. centered differences and their two errors: truncation (about h^2) and round-off
#    (about eps / h);
# 2. both errors measured on a function whose gradient we know, in float64 and float32;
# 3. the relative error, a scale-free yardstick, and the rule every check of this
#    package follows: float64, h = 1e-5, a correct backward is below 1e-7;
# 4. `acmr_np.gradcheck.numerical_gradient`, which does this for a whole array.
#
# (The package writes its arrays as `xp.something(...)` so that the same code runs on a
# GPU with CuPy; tutorial 9 shows how. Here everything is NumPy.)

# %%
import numpy as np

from acmr_np.gradcheck import numerical_gradient, relative_error

# %% [markdown]
# ## 1. Centered differences, and their two errors
#
# For a scalar function f of an array x, the derivative along element i is
#
#     df/dx_i ~ (f(x + h e_i) - f(x - h e_i)) / (2h)
#
# with e_i the array that is 1 at i and 0 elsewhere. Taylor expansion gives
#
#     f(x ± h e_i) = f(x) ± h f'(x) + h^2/2 f''(x) ± h^3/6 f'''(x) + ...
#
# so in the difference the even terms cancel and what is left is f'(x) + h^2/6 f'''(x)
# + ...: the **truncation** error is O(h^2). But f is computed in floating point with
# relative precision eps (2.2e-16 in float64, 1.2e-7 in float32): each of the two values
# carries an error of about eps |f|, and dividing their difference by 2h makes it about
# eps |f| / h (**round-off**). Small h: round-off wins; large h: truncation wins. The
# total, about h^2 + eps / h, is smallest near h = eps^(1/3): 6e-6 in float64, 5e-3 in
# float32.

# %% [markdown]
# ## 2. Both errors, measured
#
# f(x) = sum(tanh(x)) over a 4 x 3 array, whose gradient we know exactly:
# 1 - tanh(x)^2. We compare the two with the relative error of section 3 (read it as
# "how many digits agree": 1e-10 means about ten).

# %%
rng = np.random.default_rng(0)
x64 = rng.normal(size=(4, 3))
exact = 1 - np.tanh(x64) ** 2


def f(x):
    return np.tanh(x).sum()


print("   h       float64 error   float32 error")
errors = {}
for h in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-9):
    e64 = relative_error(exact, numerical_gradient(f, x64.copy(), h))
    e32 = relative_error(exact, numerical_gradient(f, x64.astype(np.float32), h))
    errors[h] = e64, e32
    print(f"{h:7.0e}   {e64:13.1e}   {e32:13.1e}")

# %% [markdown]
# Read the float64 column: the error falls as h^2 (1e-1 -> 1e-3: four orders of
# magnitude for two of h), bottoms out near h = 1e-5, and rises again when round-off
# takes over (1e-9). In float32 no h gets anywhere near 1e-7: a correct backward would
# look wrong.
#
# ## 3. The relative error, and the rule
#
# We compare an analytic gradient a with a numerical one n element by element:
#
#     max_i |a_i - n_i| / max(1e-8, |a_i| + |n_i|)
#
# The denominator makes it scale-free: a gradient of 1e6 and one of 1e-3 are judged
# alike (the 1e-8 floor keeps two zeros from dividing by zero). Hence the rule used in
# every test of this package (`acmr_np/gradcheck.py`): **float64 inputs, h = 1e-5, and a
# correct backward gives a relative error below 1e-7**. Training itself runs in float32
# (twice as fast, half the memory); only the checks need float64.

# %%
best64 = errors[1e-5][0]
print(f"float64, h = 1e-5: relative error {best64:.1e} < 1e-7: "
      f"{'OK' if best64 < 1e-7 else 'FAIL'}")
assert best64 < 1e-7
best32 = min(e32 for _, e32 in errors.values())
print(f"float32, best h:   relative error {best32:.1e} >= 1e-7: float32 cannot referee a backward")
assert best32 > 1e-7

# %% [markdown]
# ## 4. A whole array at once: `numerical_gradient`
#
# `numerical_gradient(f, x, h=1e-5)` runs the loop of section 1 over every element of
# x: it changes x[i] **in place** to x[i] + h and to x[i] - h, calls f each time, and
# puts the old value back. In place is what lets f ignore its argument and read x
# through a closure (a layer's weight array, say): that is how the later tutorials
# differentiate a loss by a parameter the loss only sees inside a layer. Two
# evaluations per element: keep the shapes small.
#
# Below, the same loop written out, and a check that x is left exactly as it was.

# %%
x = rng.normal(size=(2, 3))
saved = x.copy()
by_loop = np.zeros_like(x)
for i in np.ndindex(*x.shape):
    old = x[i]
    x[i] = old + 1e-5
    f_plus = f(x)
    x[i] = old - 1e-5
    f_minus = f(x)
    x[i] = old
    by_loop[i] = (f_plus - f_minus) / 2e-5
assert np.array_equal(numerical_gradient(f, x), by_loop) and np.array_equal(x, saved)
print("numerical_gradient = the loop of section 1, element by element, and x is restored bit for bit: OK")

print("\nResult: centered differences in float64 with h = 1e-5 agree with the exact gradient to "
      f"{best64:.1e}; float32 cannot do better than {best32:.1e}, so every check runs in float64.")

# %% [markdown]
# ## Exercises
#
# 1. **Forward differences.** Replace the centered difference by the forward difference
#    (f(x + h e_i) - f(x)) / h (copy the loop of section 4 and change two lines) and
#    redo the table of section 2 in float64. Expect the error to fall only as h, not
#    h^2 (one order of magnitude per order of h: measured 4.3e-2 at h = 1e-1, 4.3e-4 at
#    1e-3), and its best to be about sqrt(eps) = 1.5e-8, near h = 1e-8 (measured 1.8e-8
#    there, against 3.7e-11 for centered differences at h = 1e-5). Why is the best h
#    now sqrt(eps) rather than eps^(1/3)?
# 2. **Scale.** Multiply f by 1e6 (and the exact gradient with it) and redo the check
#    at h = 1e-5. The largest absolute difference grows a million-fold (measured 3.3e-11
#    -> 3.4e-5), the relative error does not move (3.8e-11 both times): why does a test
#    with an absolute tolerance not work for every layer?
# 3. **float32.** Find the best h for float32 in a finer sweep (3e-2, 1e-2, 3e-3, 1e-3).
#    Measured: 1.9e-4, 3.2e-5, 3.1e-5, 1.5e-4, so about 3e-5 at h = 3e-3 to 1e-2, near
#    eps^(1/3) = 5e-3 as section 1 predicts. What tolerance would a float32 check need,
#    and which bugs could hide under it?
