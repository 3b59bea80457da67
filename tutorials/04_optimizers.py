# %% [markdown]
# # Tutorial 4: optimisers: gradient descent, momentum and Adam, derived and checked
#
# Tutorials 2 and 3 computed gradients; an *optimiser* turns them into steps. Tutorial 3
# trained its classifier with `SGD(params, lr=0.5, momentum=0.9)`, and ACMR trains both
# of its players with Adam (tutorials 6 and 7). Here we derive what each of them does,
# on a problem whose answer we can write down, and check `acmr_np.optim` against it:
#
# 1. gradient descent on a quadratic: the closed form, and the largest stable step;
# 2. momentum: the velocity as a running sum, its closed form, and why it converges in
#    far fewer steps on an ill-conditioned problem;
# 3. Adam: two moving averages, their bias after t steps and the correction, and why the
#    correction matters most at step 1;
# 4. `acmr_np.fast`: the same updates, computed faster, to the last bits (SGD) or to rounding (Adam).
#
# Every optimiser of the package is built on a dict of named parameter arrays and
# `step(grads)` takes the gradients under the same names, updating each array **in
# place** (`p -= ...`): the layers hold those very arrays, so the model changes.

# %%
import numpy as np

from acmr_np import fast, optim

# %% [markdown]
# ## 1. Gradient descent on a quadratic
#
# f(x) = (1/2) sum_i a_i x_i^2, with curvatures a = (1, 10, 100): a bowl a hundred times
# steeper along x_3 than along x_1 (condition number kappa = a_max / a_min = 100). The
# gradient is g_i = a_i x_i and one step of gradient descent with learning rate lr is
#
#     x_i <- x_i - lr a_i x_i = (1 - lr a_i) x_i      so      x_i(t) = (1 - lr a_i)^t x_i(0)
#
# Each coordinate shrinks by its own factor |1 - lr a_i| per step. All of them shrink
# only if lr < 2 / a_max; the slowest is then the flattest direction, and the best
# single lr, 2 / (a_min + a_max), makes the worst factor (kappa - 1) / (kappa + 1) =
# 0.980: about 690 steps to shrink x by 1e-6. `optim.SGD` with momentum 0 is this
# update; we check it against the closed form.

# %%
a = np.array([1.0, 10.0, 100.0])
x0 = np.ones(3)


def descend(lr, momentum, steps, tol=None):
    """Run optim.SGD on f from x0; stop early once ||x|| < tol. Returns (steps taken, x)."""
    x = x0.copy()
    grad = {"x": np.zeros(3)}
    opt = optim.SGD({"x": x}, lr=lr, momentum=momentum)
    for t in range(steps):
        grad["x"][...] = a * x           # the gradient of f at the current x
        opt.step(grad)                   # x changes in place
        if tol is not None and np.linalg.norm(x) < tol:
            return t + 1, x
    return steps, x


lr = 0.015
_, x = descend(lr, 0.0, 50)
closed = (1 - lr * a) ** 50 * x0
print(f"SGD, 50 steps at lr {lr}: x = {np.array2string(x, precision=6)}, closed form "
      f"{np.array2string(closed, precision=6)}; largest difference {np.abs(x - closed).max():.1e}")
assert np.allclose(x, closed, rtol=1e-12, atol=0)

lr_gd = 2 / (a.min() + a.max())
steps_gd, _ = descend(lr_gd, 0.0, 10_000, tol=1e-6)
kappa = a.max() / a.min()
print(f"best plain lr 2/(a_min + a_max) = {lr_gd:.4f}: worst factor per step {(kappa - 1) / (kappa + 1):.4f}; "
      f"{steps_gd} steps to ||x|| < 1e-6 (prediction ln(1e-6) / ln(0.980) = "
      f"{np.log(1e-6) / np.log((kappa - 1) / (kappa + 1)):.0f})")
assert 650 < steps_gd < 750

# %% [markdown]
# ## 2. Momentum
#
# SGD with (heavy-ball) momentum keeps a velocity v:
#
#     v <- mu v + g          p <- p - lr v
#
# Unrolled, v_t = g_t + mu g_(t-1) + mu^2 g_(t-2) + ...: a running sum of past
# gradients, each weighted by a further factor mu per step. Where the gradients agree
# (a constant g), v_t = g (1 - mu^t) / (1 - mu), growing to g / (1 - mu): with mu = 0.9,
# ten times a plain step. Where they flip sign (the steep direction, overshooting),
# they cancel. First the constant gradient:

# %%
p = np.zeros(1)
opt = optim.SGD({"p": p}, lr=0.1, momentum=0.9)
for t in range(30):
    opt.step({"p": np.ones(1)})
v30 = opt.state["velocity"]["p"][0]
print(f"constant gradient 1, mu = 0.9: velocity after 30 steps {v30:.6f} = (1 - 0.9^30) / 0.1 = "
      f"{(1 - 0.9 ** 30) / 0.1:.6f}")
assert np.isclose(v30, (1 - 0.9 ** 30) / 0.1, rtol=1e-12)

# %% [markdown]
# On the quadratic, g_i = a_i x_i, so each coordinate follows a linear recurrence in the
# pair (x, v):
#
#     v_(t+1) = mu v_t + a x_t
#     x_(t+1) = x_t - lr v_(t+1) = (1 - lr a) x_t - lr mu v_t
#
#     [x; v]_(t+1) = M [x; v]_t,    M = [[1 - lr a, -lr mu], [a, mu]]
#
# so [x; v]_t = M^t [x_0; 0]: a closed form we can compute with a matrix power. M's
# eigenvalues decide everything: their product is det M = mu, and the iteration is
# stable while lr a < 2 (1 + mu) (momentum *raises* the largest stable step). The tuned
# choice (Polyak) lr = 4 / (sqrt(a_max) + sqrt(a_min))^2, mu = ((sqrt(kappa) - 1) /
# (sqrt(kappa) + 1))^2 makes every eigenvalue's size (sqrt(kappa) - 1) / (sqrt(kappa) + 1)
# = 0.818 per step instead of 0.980: the number of steps scales with sqrt(kappa), not
# kappa.

# %%
mu = 0.9
_, x = descend(lr, mu, 50)
closed = np.array([(np.linalg.matrix_power(np.array([[1 - lr * ai, -lr * mu], [ai, mu]]), 50)
                    @ np.array([1.0, 0.0]))[0] for ai in a])
print(f"SGD with momentum 0.9, 50 steps: largest difference from M^50 [x0; 0]: {np.abs(x - closed).max():.1e}")
assert np.allclose(x, closed, rtol=1e-10, atol=1e-15)

lr_hb = 4 / (np.sqrt(a.max()) + np.sqrt(a.min())) ** 2
mu_hb = ((np.sqrt(kappa) - 1) / (np.sqrt(kappa) + 1)) ** 2
steps_hb, _ = descend(lr_hb, mu_hb, 10_000, tol=1e-6)
print(f"tuned momentum (lr {lr_hb:.4f}, mu {mu_hb:.4f}): {steps_hb} steps to ||x|| < 1e-6, against "
      f"{steps_gd} without momentum")
print(f"(lr {lr_hb:.4f} is above plain descent's limit 2 / a_max = {2 / a.max():.4f}; momentum moved the "
      f"limit to 2 (1 + mu) / a_max = {2 * (1 + mu_hb) / a.max():.4f})")
assert steps_hb < steps_gd / 5 and lr_hb > 2 / a.max()

# %% [markdown]
# ## 3. Adam and its bias correction
#
# Adam (Kingma & Ba, 2015) keeps two moving averages per parameter, of the gradient and
# of its square, and scales each parameter's step by the second:
#
#     m <- b1 m + (1 - b1) g                  (b1 = 0.9)
#     v <- b2 v + (1 - b2) g^2                (b2 = 0.999)
#     m_hat = m / (1 - b1^t),   v_hat = v / (1 - b2^t)
#     p <- p - lr m_hat / (sqrt(v_hat) + eps)
#
# Unrolled from m_0 = 0: m_t = (1 - b1) sum_(s=1..t) b1^(t-s) g_s. The weights sum to
# (1 - b1)(1 + b1 + ... + b1^(t-1)) = 1 - b1^t, not 1: m_t is an average that is missing
# the weight b1^t it would have put on the (zero) starting value. If the gradients are
# all alike, m_t = (1 - b1^t) g, too small by exactly that factor, and dividing by
# 1 - b1^t (the **bias correction**) gives m_hat = g from the first step on. The same
# holds for v with b2.
#
# Consequence: with a constant gradient, m_hat / sqrt(v_hat) = g / |g|, so each step is
# lr in size (up to eps), whatever the scale of g: the learning rate is a step length,
# not a multiplier of the gradient. We check both claims on `optim.Adam`.

# %%
print("Adam, first step from p = 0 with gradient g (lr = 1e-3):")
for g in (1e-3, 1.0, 1e3):
    p = np.zeros(1)
    opt = optim.Adam({"p": p}, lr=1e-3)
    opt.step({"p": np.array([g])})
    m1, v1 = opt.state["m"]["p"][0], opt.state["v"]["p"][0]
    print(f"  g = {g:6.0e}: m = {m1:.1e} = 0.1 g, v = {v1:.1e} = 0.001 g^2, step {-p[0]:.8f} "
          f"= lr g / (|g| + eps)")
    assert np.isclose(m1, 0.1 * g, rtol=1e-12) and np.isclose(v1, 1e-3 * g * g, rtol=1e-12)
    assert np.isclose(-p[0], 1e-3 * g / (g + 1e-8), rtol=1e-12)

p = np.zeros(1)
opt = optim.Adam({"p": p}, lr=1e-3)
for t in range(25):
    opt.step({"p": np.array([2.0])})
print(f"constant gradient 2, after 25 steps: m = {opt.state['m']['p'][0]:.6f} = (1 - 0.9^25) 2 = "
      f"{(1 - 0.9 ** 25) * 2:.6f}, and every step was lr: p = {p[0]:.6f}")
assert np.isclose(opt.state["m"]["p"][0], (1 - 0.9 ** 25) * 2, rtol=1e-12)
assert np.isclose(p[0], -25e-3, rtol=1e-6)

# %% [markdown]
# An independent check: Adam written from the *unrolled* sums (no recursion), on twenty
# random gradients of a 4-element parameter, against `optim.Adam`'s recursion.

# %%
rng = np.random.default_rng(0)
gs = rng.normal(size=(20, 4)) * np.array([1e-3, 1.0, 10.0, 1e3])   # four very different scales
b1, b2, eps, lr_adam = 0.9, 0.999, 1e-8, 1e-2
p_ref = np.zeros(4)
for t in range(1, 21):
    w = (1 - b1) * b1 ** np.arange(t - 1, -1, -1)            # weights of g_1 .. g_t in m_t
    u = (1 - b2) * b2 ** np.arange(t - 1, -1, -1)
    m_t, v_t = w @ gs[:t], u @ gs[:t] ** 2
    assert np.isclose(w.sum(), 1 - b1 ** t)                   # the weights sum to 1 - b1^t
    p_ref -= lr_adam * (m_t / (1 - b1 ** t)) / (np.sqrt(v_t / (1 - b2 ** t)) + eps)
p = np.zeros(4)
opt = optim.Adam({"p": p}, lr=lr_adam)
for g in gs:
    opt.step({"p": g.copy()})
print(f"optim.Adam against the unrolled sums, 20 steps: largest relative difference "
      f"{np.abs(p - p_ref).max() / np.abs(p_ref).max():.1e}")
assert np.allclose(p, p_ref, rtol=1e-12, atol=0)

# %% [markdown]
# **Why the correction matters most at step 1.** Without it, the first step would be
# lr (1 - b1) g / sqrt((1 - b2) g^2) = lr 0.1 / 0.0316 = 3.16 lr, and over the next steps
# the factor (1 - b1^t) / sqrt(1 - b2^t) keeps growing, because v's average fills up a
# hundred times more slowly than m's: the uncorrected steps start too long exactly when
# the parameters are furthest from any sensible value. The correction makes every step
# lr-sized from t = 1; without it, Adam needs a warm-up.

# %%
t = np.arange(1, 2001)
factor = (1 - b1 ** t) / np.sqrt(1 - b2 ** t)
print("uncorrected step / corrected step, constant gradient: "
      + ", ".join(f"t = {s}: {factor[s - 1]:.2f}" for s in (1, 10, 100, 1000))
      + f"; largest {factor.max():.2f} at t = {t[factor.argmax()]}")
assert np.isclose(factor[0], np.sqrt(1000) / 10) and factor.max() > 6

# %% [markdown]
# ## 4. The fast path: the same numbers, faster
#
# `acmr_np.fast.SGD` and `fast.Adam` are these same updates, arranged for speed: on the
# CPU they update a large parameter one cache-sized block at a time (65,536 elements),
# so each block of p, g, m and v is read from memory once instead of a dozen times; on
# a GPU, one fused kernel per parameter. The training loop uses them
# (`fast.FastTrainer`, which also applies L_reg as Adam's weight decay). `fast.SGD`
# computes the same numbers bit for bit. `fast.Adam` also folds the two bias corrections
# into the step size and epsilon, the reordering Kingma & Ba themselves give for speed:
#
#     lr m_hat / (sqrt(v_hat) + eps) = lr_t m / (sqrt(v) + eps_t),
#     lr_t = lr sqrt(1 - b2^t) / (1 - b1^t),   eps_t = eps sqrt(1 - b2^t)
#
# (multiply the numerator and the denominator by sqrt(1 - b2^t)): two passes over the
# arrays fewer, the same value up to float32 rounding (`tests/test_fast.py`; the timings
# are in docs/PERFORMANCE.md). Here on a float32 parameter of 210,000 elements, four
# blocks, five steps:

# %%
w_text = rng.normal(size=(300, 700)).astype(np.float32)
w_fast = w_text.copy()
adam_text, adam_fast = optim.Adam({"w": w_text}), fast.Adam({"w": w_fast})
for _ in range(5):
    g = rng.normal(size=w_text.shape).astype(np.float32)
    adam_text.step({"w": g})
    adam_fast.step({"w": g})
apart = float(np.abs(w_text - w_fast).max() / np.abs(w_text).max())
assert apart < 1e-7 and not np.array_equal(w_text, w_fast * 0)
print(f"optim.Adam and fast.Adam after 5 steps on {w_text.size:,} float32 elements "
      f"({fast.BLOCK:,} per block): {int((w_text != w_fast).sum()):,} entries differ in their last bits, "
      f"by at most {apart:.1e} of the largest: float32 rounding")

print(f"\nResult: SGD matches (1 - lr a)^t and momentum matches M^t [x0; 0]; tuned momentum needs "
      f"{steps_hb} steps where plain descent needs {steps_gd}; Adam's bias correction makes its first "
      f"step lr instead of {factor[0]:.2f} lr, and fast.Adam reproduces optim.Adam to float32 rounding.")

# %% [markdown]
# ## Exercises
#
# 1. **Too long a step.** In section 1 call `descend(2.1 / 100, 0.0, 100)`. The steep
#    coordinate is multiplied by 1 - 2.1 = -1.1 per step: expect it to flip sign every
#    step and grow to 1.1^100 = 13,781 after 100 steps (measured 13,780.6, while x_1 and
#    x_2 still shrink). Now add momentum 0.9 at the same lr: it converges (measured
#    x_3 = 0.0028 after 100 steps, ||x|| < 1e-6 after 261), because the bound is now
#    2 (1 + 0.9) / 100 = 0.038; 2% above that bound, x_3 reaches 5.8e10 in 100 steps.
# 2. **Momentum, mistuned.** Keep section 2's tuned lr (0.0331) and change mu. Measured
#    steps to ||x|| < 1e-6: 95 at the tuned mu = 0.669, 272 at 0.9, 2,625 at 0.99, and
#    at 0.5 it diverges (the bound 2 (1 + 0.5) / 100 = 0.030 is below 0.0331). Too much
#    momentum makes the iteration ring: the eigenvalues of M have size sqrt(mu).
# 3. **eps is a scale.** Take Adam's first step with g = 1e-3 (section 3) for
#    eps = 1e-8, 1e-3 and 1. Measured steps: 9.99990e-4, 5.0e-4 and 1.0e-6. Below
#    |g| ~ eps, Adam stops normalising and becomes SGD with learning rate lr / eps. What
#    does that mean for a parameter whose gradients are all tiny?
