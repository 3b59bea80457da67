# %% [markdown]
# # Tutorial 5: the triplet losses of L_imi, triplets inside a batch, and unit-length embeddings
#
# The inter-modal invariance loss L_imi (ACMR Eqs. 3-6) pulls an image towards texts of
# its class and pushes it away from texts of other classes, and likewise for text
# anchors. It works on *triplets*: an anchor a (one modality), a positive p (the other
# modality, same class) and a negative q (the other modality, another class). Here:
#
# 1. the gradient of a squared distance;
# 2. the common triplet hinge, and why the gradient check avoids its kink;
# 3. the paper's pull-plus-push form (Eqs. 4-5), and how it behaves differently;
# 4. choosing triplets inside a mini-batch, and the gradient through "pick row i";
# 5. normalisation to unit length (cosine geometry), its Jacobian, and the whole L_imi
#    gradient.

# %%
import numpy as np

from acmr_np import triplets
from acmr_np.gradcheck import layer_errors, loss_errors, numerical_gradient, relative_error
from acmr_np.layers import L2Normalize
from acmr_np.losses import pull_push, triplet_hinge

rng = np.random.default_rng(0)
N, M = 6, 4     # 6 triplets in a 4-d common space


def check(what, err, tol=1e-7):
    """Print one check as 'what: relative error 3.1e-10 < 1e-7: OK' and assert it."""
    ok = err < tol
    tol_s = f"{tol:.0e}".replace("e-0", "e-")
    print(f"{what}: relative error {err:.1e} {'<' if ok else '>='} {tol_s}: {'OK' if ok else 'FAIL'}")
    assert ok, what

# %% [markdown]
# ## 1. The squared distance
#
# The distance in ACMR's triplets is the squared Euclidean distance
#
#     sqdist(a, p) = ||a - p||^2 = sum_j (a_j - p_j)^2
#
# (the paper writes it l2(v, t) and does not say "squared"; we use the square, as most
# implementations do: its gradient is linear and it is smooth at a = p. In these
# tutorials `l2` names only the L_reg coefficient.) Differentiating each term:
#
#     d||a - p||^2 / da = 2 (a - p)          d||a - p||^2 / dp = -2 (a - p)
#
# The anchor and the positive get opposite gradients: descending moves them towards
# each other.

# %%
a, pos = rng.normal(size=M), rng.normal(size=M)
numeric = numerical_gradient(lambda v: ((v - pos) ** 2).sum(), a.copy())
check("d||a - p||^2/da = 2 (a - p)", relative_error(2 * (a - pos), numeric))

# %% [markdown]
# ## 2. The triplet hinge
#
# For triplet n, with margin mu:
#
#     h_n = mu + ||a_n - p_n||^2 - ||a_n - q_n||^2,      L = (1/N) sum_n max(0, h_n)
#
# The triplet is satisfied, and contributes nothing, once the negative is farther than
# the positive by at least mu. Where h_n > 0 (an "active" triplet), by section 1:
#
#     dL/dp_n = -(2/N)(a_n - p_n)
#     dL/dq_n = +(2/N)(a_n - q_n)
#     dL/da_n = (2/N)(a_n - p_n) - (2/N)(a_n - q_n) = -(dL/dp_n + dL/dq_n)
#
# and all three are zero where h_n < 0. At h_n = 0 exactly max(0, .) has no derivative
# (a kink); we take 0 there.

# %%
A, P, Q = (rng.normal(size=(N, M)) for _ in range(3))
margin = 2.0
h = margin + ((A - P) ** 2).sum(1) - ((A - Q) ** 2).sum(1)
print("h_n per triplet:", np.round(h, 2), "-> active:", (h > 0).astype(int))
assert (h > 0).any() and (h < 0).any() and np.abs(h).min() > 1e-3   # both kinds, off the kink
errs = loss_errors(lambda a, p, q: triplet_hinge(a, p, q, margin), [A, P, Q])
for name, err in zip(("anchor", "positive", "negative"), errs):
    check(f"triplet hinge: dL/d{name}", err)
loss, (dA, dP, dQ) = triplet_hinge(A, P, Q, margin)
assert np.all(dA[h < 0] == 0) and np.allclose(dA, -(dP + dQ))
print("inactive triplets get exactly zero gradient; d_anchor = -(d_positive + d_negative)")

# %% [markdown]
# Why the tests keep every h_n away from 0: at a kink, the centered difference sees the
# function on both sides and returns the *average* of the two slopes, which matches
# neither one-sided derivative. Below we move triplet 0 exactly onto its kink. The
# backward is not wrong there; the function has no derivative at that point.

# %%
Qk = Q.copy()
d_ap = ((A[0] - P[0]) ** 2).sum()
direction = (A[0] - Q[0]) / np.linalg.norm(A[0] - Q[0])
Qk[0] = A[0] - direction * np.sqrt(margin + d_ap)     # ||a - q||^2 = mu + ||a - p||^2: h_0 = 0
h0 = margin + d_ap - ((A[0] - Qk[0]) ** 2).sum()
err_kink = loss_errors(lambda a, p, q: triplet_hinge(a, p, q, margin), [A, P, Qk])[0]
print(f"triplet 0 on its kink (h_0 = {h0:.1e}): anchor gradient relative error {err_kink:.1e}, "
      f"a 'failure' that only says the derivative does not exist there")
assert err_kink > 1e-3

# %% [markdown]
# ## 3. The paper's pull-plus-push form (Eqs. 4-5)
#
# The paper writes L_imi,V = sum [ sqdist(v, t+) + lambda_t max(0, mu - sqdist(v, t-)) ]
# (in its notation l2 for sqdist). Per triplet, averaged (the scale is absorbed by
# alpha), with w = lambda_t:
#
#     L = (1/N) sum_n [ ||a_n - p_n||^2 + w max(0, mu - ||a_n - q_n||^2) ]
#
#     dL/dp_n = -(2/N)(a_n - p_n)                      always: the pull never stops
#     dL/dq_n = +(2/N) w (a_n - q_n)   where mu - ||a_n - q_n||^2 > 0, else 0
#     dL/da_n = -(dL/dp_n + dL/dq_n)
#
# The difference from the hinge: the hinge is *relative* (it stops once the negative is
# mu farther than the positive), pull-push is *absolute* (it pulls positives together
# until they coincide, and pushes negatives out to radius sqrt(mu)).

# %%
mu, w = 3.0, 0.7
push = mu - ((A - Q) ** 2).sum(1)
assert (push > 0).any() and (push < 0).any() and np.abs(push).min() > 1e-3
errs = loss_errors(lambda a, p, q: pull_push(a, p, q, mu, w), [A, P, Q])
for name, err in zip(("anchor", "positive", "negative"), errs):
    check(f"pull-push: dL/d{name}", err)

print("\none triplet, the losses as the two distances change (mu = 1, w = 1):")
print("  ||a-p||^2  ||a-q||^2   hinge   pull-push")
for dp2, dq2 in ((0.0, 0.5), (0.5, 0.5), (0.5, 2.0), (2.0, 4.0), (0.0, 4.0)):
    a1 = np.zeros((1, 1))
    p1, q1 = np.array([[np.sqrt(dp2)]]), np.array([[-np.sqrt(dq2)]])
    print(f"  {dp2:9.1f}  {dq2:9.1f}  {float(triplet_hinge(a1, p1, q1, 1.0)[0]):6.2f}"
          f"  {float(pull_push(a1, p1, q1, 1.0, 1.0)[0]):9.2f}")
print("  (the hinge is 0 once the gap is mu; pull-push still pulls at (2, 4) and is 0 only at (0, >= 1))")

# %% [markdown]
# ## 4. Triplets inside a mini-batch, and the gradient of "pick row i"
#
# A batch holds B image-text pairs with labels. For each image anchor i,
# `triplets.sample` picks a text positive j+ (same label; the pair's own text is always
# allowed) and a text negative k- (another label): at random among the allowed ones, or
# the hardest negative (the closest differently-labelled text). The choice is a set of
# indices, not a differentiable function: we differentiate with the indices fixed.
#
# "Pick rows pos_idx of T" is a matrix product with a one-hot selection matrix,
# P_ij = 1 iff j = pos_idx_i:
#
#     T_pos = P T        so      dL/dT = P^T dL/dT_pos
#
# P^T *sums* the gradients of every anchor that picked the same text, as the chain rule
# demands for a variable used several times. The same matrix product runs on NumPy and
# CuPy (no scatter-add needed).

# %%
B = 8
labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
S_img, S_txt = rng.normal(size=(B, M)), rng.normal(size=(B, M))
noise = rng.random((B, B))
pos_idx, neg_idx, has_negative = triplets.sample(S_img, S_txt, labels, noise, "random")
assert np.all(labels[pos_idx] == labels) and np.all(labels[neg_idx] != labels)
print("\nimage anchors' labels:", labels, "\npositives (text ids):", pos_idx, "labels", labels[pos_idx],
      "\nnegatives (text ids):", neg_idx, "labels", labels[neg_idx])
Psel = triplets.selection_matrix(pos_idx, B, np.float64)
Qsel = triplets.selection_matrix(neg_idx, B, np.float64)
assert np.array_equal(Psel @ S_txt, S_txt[pos_idx])


def imi_images(s_img, s_txt):
    """L_imi,V on raw embeddings for fixed indices -> (loss, d_img, d_txt)."""
    loss, (d_a, d_p, d_q) = triplet_hinge(s_img, Psel @ s_txt, Qsel @ s_txt, 5.0)
    return loss, d_a, Psel.T @ d_p + Qsel.T @ d_q


_, d_img, d_txt = imi_images(S_img, S_txt)
check("L_imi,V: dL/d(image embeddings)",
      relative_error(d_img, numerical_gradient(lambda _: imi_images(S_img, S_txt)[0], S_img)))
check("L_imi,V: dL/d(text embeddings) = P^T d_pos + Q^T d_neg",
      relative_error(d_txt, numerical_gradient(lambda _: imi_images(S_img, S_txt)[0], S_txt)))

# %% [markdown]
# ## 5. Unit-length embeddings: the cosine geometry
#
# Retrieval ranks by cosine similarity, so acmr_np (with `distance="cosine"`, the
# default) measures the triplet distances between unit vectors u = s / ||s||: for unit
# vectors, ||u - v||^2 = 2 - 2 cos(u, v), and the loss works in the geometry it is scored
# in. The layer `L2Normalize` computes y = x / ||x|| row by row (normalisation to unit
# Euclidean length). Its Jacobian, from the
# quotient rule with d||x||/dx_k = x_k / ||x|| = y_k:
#
#     dy_j/dx_k = (delta_jk - y_j y_k) / ||x||
#
#     dx = (dout - y (dout . y)) / ||x||        (row by row)
#
# It removes the component of dout along y (moving x along itself does not change its
# direction), then scales by 1 / ||x||.

# %%
x = rng.normal(size=(N, M))
check("L2Normalize: dx = (dout - y (dout . y)) / ||x||", layer_errors(L2Normalize(), x, rng.normal(size=(N, M)))["x"])
u, v = L2Normalize().forward(x[:1]), L2Normalize().forward(x[1:2])
assert np.isclose(((u - v) ** 2).sum(), 2 - 2 * (u * v).sum())
print("unit vectors: ||u - v||^2 = 2 - 2 cos(u, v): OK")

# %% [markdown]
# Putting it together, as `ACMR.loss_and_grads` does for L_imi: normalise both
# modalities, image anchors against texts *and* text anchors against images, add the
# two directions (Eq. 6), and send each embedding's summed gradient back through its
# normalisation:
#
#     L_imi = L_imi,V(u_v, u_t) + L_imi,T(u_t, u_v),   u = s / ||s||
#     dL/ds_v = L2Normalize.backward(dL/du_v from both directions), same for s_t

# %%
noise2 = rng.random((2, B, B))
idx_v = triplets.sample(S_img, S_txt, labels, noise2[0], "random")   # image anchors
idx_t = triplets.sample(S_txt, S_img, labels, noise2[1], "random")   # text anchors
sel = {k: (triplets.selection_matrix(i[0], B, np.float64), triplets.selection_matrix(i[1], B, np.float64))
       for k, i in (("v", idx_v), ("t", idx_t))}
margin = 1.5


def l_imi(s_v, s_t):
    nv, nt = L2Normalize(), L2Normalize()
    u_v, u_t = nv.forward(s_v), nt.forward(s_t)
    (Pv, Qv), (Pt, Qt) = sel["v"], sel["t"]
    loss_v, (da_v, dp_v, dq_v) = triplet_hinge(u_v, Pv @ u_t, Qv @ u_t, margin)
    loss_t, (da_t, dp_t, dq_t) = triplet_hinge(u_t, Pt @ u_v, Qt @ u_v, margin)
    d_uv = da_v + Pt.T @ dp_t + Qt.T @ dq_t      # u_v is an anchor (V) and a candidate (T)
    d_ut = da_t + Pv.T @ dp_v + Qv.T @ dq_v
    return loss_v + loss_t, nv.backward(d_uv), nt.backward(d_ut)


loss, d_sv, d_st = l_imi(S_img, S_txt)
check("L_imi (both directions, unit length): dL/ds_v",
      relative_error(d_sv, numerical_gradient(lambda _: l_imi(S_img, S_txt)[0], S_img)))
check("L_imi (both directions, unit length): dL/ds_t",
      relative_error(d_st, numerical_gradient(lambda _: l_imi(S_img, S_txt)[0], S_txt)))
print(f"\nResult: L_imi = {float(loss):.4f} on a batch of {B} pairs; every gradient of it, through "
      "the triplet choice and the normalisation, agrees with centered differences.")

# %% [markdown]
# ## Questions for discussion
#
# - The hinge is *relative* and pull-push is *absolute* (section 3). With pull-push, what
#   happens to the common space if the pull wins everywhere, and how does working on
#   unit vectors (section 5) limit that?
# - Why is the distance squared? What would the gradient of ||a - p|| (not squared) be
#   at a = p, and what would that do to the numerical check?
# - "Pick row i" is differentiated as the product P T, whose gradient P^T sums over
#   anchors. Why must two anchors that picked the same text *add* their gradients?
# - The triplets are chosen by random numbers (or by distance, for the hardest negative),
#   and we differentiate with the choice held fixed. Why is that legitimate, and what
#   does the gradient *not* tell us?
# - The README reports that the hardest negatives lowered the validation mAP on
#   Wikipedia by about 0.028. Which property of the data makes the hardest negative a
#   bad teacher?
#
# ## Exercises
#
# 1. **The margin.** In section 2, count the active triplets (h_n > 0) for margins 0.1,
#    2 and 10. Measured: 1, 3 and 6 of the 6. With mu = 0.1 only triplet 2, whose
#    negative is closer than its positive, still receives a gradient; with mu = 10 every
#    triplet does and the hinge behaves like the plain difference
#    sqdist(a, p) - sqdist(a, q). Which margin suits unit vectors, whose squared
#    distances lie in [0, 4]?
# 2. **Hardest negatives.** In section 4 sample with `"hardest"` instead of `"random"`.
#    Measured: the negatives change for 6 of the 8 anchors, their mean squared distance
#    to the anchor falls from 5.82 to 3.38, and L_imi,V (margin 5) rises from 5.92 to
#    7.76. The gradient check still passes: why does it not care how the indices were
#    chosen?
# 3. **What normalisation hides.** After section 5, compute (d_sv * S_img).sum(axis=1):
#    every row is zero to rounding (measured 6e-17, against gradient entries up to 0.35).
#    Then evaluate `l_imi(3 * S_img, S_txt)`: the same loss (3.3492 both times) and a
#    gradient three times smaller. So the triplet term cannot set the length of the
#    embeddings at all. Which other term of ACMR's objective acts on their length?
