# %% [markdown]
# # Tutorial 5: the gradient reversal layer, and the minimax game in one backward pass
#
# ACMR has two players (Eqs. 9-10 of the paper):
#
#     theta_V, theta_T, theta_imd = argmin  L_emb - lambda L_adv        (the projectors)
#     theta_D                     = argmin  L_adv                       (the modality classifier D)
#
# D tries to tell image embeddings from text embeddings (L_adv is its cross-entropy);
# the projectors try to make that impossible, i.e. they *maximise* L_adv, while also
# minimising their own L_emb. One loss, descended by one player and ascended by the
# other: a minimax game.
#
# The gradient reversal layer (GRL; Ganin & Lempitsky, 2015) lets one ordinary backward
# pass serve both players. Placed between the common space and D:
#
#     forward:   GRL(s) = s                    (the identity)
#     backward:  dL/ds  = -lambda * dL/dGRL(s) (the upstream gradient, reversed and scaled)
#
# Everything *after* the GRL in the forward pass (D) receives the true gradient of L_adv
# and descends it. Everything *before* it (the projectors) receives -lambda dL_adv/ds,
# so descending its gradient ascends L_adv. This is not the derivative of any function of the forward
# pass (the identity's derivative is 1), so it is tested exactly, not numerically.

# %%
import numpy as np

from acmr_np.gradcheck import numerical_gradient, relative_error
from acmr_np.layers import GradientReversal, Linear
from acmr_np.losses import softmax_cross_entropy
from acmr_np.model import ACMRConfig
from acmr_np.optim import Adam

rng = np.random.default_rng(0)


def check(what, err, tol=1e-7):
    """Print one check as 'what: relative error 3.1e-10 < 1e-7: OK' and assert it."""
    ok = err < tol
    tol_s = f"{tol:.0e}".replace("e-0", "e-")
    print(f"{what}: relative error {err:.1e} {'<' if ok else '>='} {tol_s}: {'OK' if ok else 'FAIL'}")
    assert ok, what

# %% [markdown]
# ## 1. The layer itself, tested exactly

# %%
grl = GradientReversal(lam=0.3)
s, g = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
assert grl.forward(s) is s
assert np.array_equal(grl.backward(g), -0.3 * g)
grl.lam = 2.5                 # a schedule changes lambda between steps
assert np.array_equal(grl.backward(g), -2.5 * g)
print("GRL: forward is the identity, backward is exactly -lambda * upstream: OK")

# %% [markdown]
# ## 2. One backward pass, two players' gradients
#
# A miniature of ACMR. Features of two modalities, both with a class label. The image
# features are used as they are; the texts pass through a projector, a Linear layer
# s_t = x_t W_p + b_p. A shared label classifier (Linear + softmax cross-entropy, like
# L_imd) sees both, and a modality classifier D (Linear + softmax cross-entropy, L_adv;
# images 0, texts 1) sees both through the GRL:
#
#     s = [x_img; s_t]
#     L_cls = CE(classifier(s), y)           L_adv = CE(D(GRL(s)), modality)
#
# Backward: ds = classifier.backward(dL_cls) + GRL.backward(D.backward(dL_adv)); then the
# projector's backward on the text rows of ds. We verify the claim of section 1 with
# numerical gradients: the projector's gradient is that of L_cls - lambda L_adv, and D's
# gradient is that of L_adv (D never sees L_cls).

# %%
def make_data(rng, n):
    """Two classes separated along axis 0; the texts shifted by +3 along axis 1."""
    y = rng.integers(0, 2, size=n)
    img = np.c_[2.0 * (2 * y - 1), np.zeros(n)] + 0.7 * rng.normal(size=(n, 2))
    txt = np.c_[2.0 * (2 * y - 1), np.full(n, 3.0)] + 0.7 * rng.normal(size=(n, 2))
    return img, txt, y


class Toy:
    def __init__(self, lam, rng):
        self.proj = Linear(2, 2, rng=rng, dtype=np.float64)
        self.proj.params["W"][...] = np.eye(2)           # start as the identity
        self.cls = Linear(2, 2, rng=rng, dtype=np.float64)
        self.disc = Linear(2, 2, rng=rng, dtype=np.float64)
        self.grl = GradientReversal(lam)

    def step(self, img, txt, y):
        """Forward both losses and the one backward pass; fills every layer's grads."""
        n = len(y)
        s = np.vstack([img, self.proj.forward(txt)])
        l_cls, d_cls = softmax_cross_entropy(self.cls.forward(s), np.r_[y, y])
        modality = np.repeat([0, 1], n)
        logits = self.disc.forward(self.grl.forward(s))
        l_adv, d_adv = softmax_cross_entropy(logits, modality)
        ds = self.cls.backward(d_cls) + self.grl.backward(self.disc.backward(d_adv))
        self.proj.backward(ds[n:])                            # only texts went through it
        acc = float((logits.argmax(axis=1) == modality).mean())
        return float(l_cls), float(l_adv), acc, s


lam = 0.7
toy = Toy(lam, rng)
img, txt, y = make_data(rng, 12)
toy.step(img, txt, y)
proj_grad, disc_grad = toy.proj.grads["W"].copy(), toy.disc.grads["W"].copy()

emb_objective = lambda _: (lambda r: r[0] - lam * r[1])(toy.step(img, txt, y))   # noqa: E731
adv_objective = lambda _: toy.step(img, txt, y)[1]                                # noqa: E731
check("projector's gradient = d(L_cls - lambda L_adv)/dW_p",
      relative_error(proj_grad, numerical_gradient(emb_objective, toy.proj.params["W"])))
check("D's gradient = dL_adv/dW_D",
      relative_error(disc_grad, numerical_gradient(adv_objective, toy.disc.params["W"])))

# %% [markdown]
# ## 3. The game, played
#
# Now both players take Adam steps on their own gradients, with lambda = 0 (D learns,
# but the projector ignores it) and with lambda = 1 (the projector fights D). A linear D
# tells the modalities apart mainly by the difference of their means, so we watch the
# *modality gap* ||mean(s_img) - mean(s_txt)|| and D's accuracy. At the
# equilibrium D can do no better than guess: accuracy 0.5 and L_adv = ln 2 = 0.693 (the
# mean over the 2n rows; ACMR's L_adv sums the two modalities and sits at 2 ln 2). The
# label classifier must stay accurate throughout: the projector may not win by throwing
# the class information away. (A bigger D, as in ACMR, can use more than the means, and
# then the projector must match more of the two distributions.)

# %%
def play(lam, seed=1, steps=600, log_every=None):
    rng = np.random.default_rng(seed)
    img, txt, y = make_data(rng, 200)
    toy = Toy(lam, rng)
    emb = {"pW": toy.proj.params["W"], "pb": toy.proj.params["b"],
           "cW": toy.cls.params["W"], "cb": toy.cls.params["b"]}
    emb_g = {"pW": toy.proj.grads["W"], "pb": toy.proj.grads["b"],
             "cW": toy.cls.grads["W"], "cb": toy.cls.grads["b"]}
    opt_emb = Adam(emb, lr=0.02)
    opt_adv = Adam(dict(toy.disc.params), lr=0.1)     # D the faster learner, as usual
    for t in range(steps + 1):
        l_cls, l_adv, acc, s = toy.step(img, txt, y)
        if log_every and t % log_every == 0:
            gap = np.linalg.norm(s[:200].mean(0) - s[200:].mean(0))
            print(f"  step {t:3d}: L_cls {l_cls:.3f}  L_adv {l_adv:.3f}  D accuracy {acc:.2f}  gap {gap:.2f}")
        if t < steps:
            opt_emb.step(emb_g)
            opt_adv.step(dict(toy.disc.grads))
    label_acc = float((toy.cls.forward(s).argmax(axis=1) == np.r_[y, y]).mean())
    gap = float(np.linalg.norm(s[:200].mean(0) - s[200:].mean(0)))
    return {"L_adv": l_adv, "D_acc": acc, "gap": gap, "label_acc": label_acc}


print("lambda = 1: the projector plays against D")
with_grl = play(1.0, log_every=100)
without = play(0.0)
print(f"\n{'':12s}{'modality gap':>14s}{'D accuracy':>12s}{'L_adv':>8s}{'label accuracy':>16s}")
for name, r in (("lambda = 0", without), ("lambda = 1", with_grl)):
    print(f"{name:12s}{r['gap']:14.2f}{r['D_acc']:12.2f}{r['L_adv']:8.3f}{r['label_acc']:16.2f}")
assert without["D_acc"] > 0.85 and with_grl["D_acc"] < 0.6
assert with_grl["gap"] < 0.5 < without["gap"] and with_grl["label_acc"] > 0.95

# %% [markdown]
# Read the log: early on L_adv jumps up (the projector overshoots and D is briefly fooled
# the wrong way round), then the two settle at L_adv = ln 2, D at chance, and the gap
# near 0, while the label accuracy stays high. That is the equilibrium of Eq. 9-10.
#
# ## 4. In ACMR
#
# `acmr_np.model.ACMR.loss_and_grads` does exactly section 2 with the real parts: the
# common space s = [s_v; s_t] goes into the label classifier (L_imd) and, through
# `self.grl`, into the modality classifier m -> 50 -> 2 (L_adv); the projectors receive
# grad L_emb - lambda grad L_adv. `Trainer.train_step` then steps the embedding player
# every mini-batch and D every k-th (Algorithm 1, k = 5).
#
# The authors' public demo minimised only L_emb for the projectors and L_adv only over
# D's variables, so the reversed gradient never reached the projectors and the
# adversarial part of the model was dead (its logs show D's loss stuck at 2 ln 2).
# `tests/test_model.py` checks that in acmr_np the projectors' gradient contains exactly
# -lambda grad L_adv; section 2 above is the same check in miniature.
#
# lambda is not constant: the DANN schedule lambda_p = lambda (2 / (1 + exp(-10 p)) - 1),
# p the training progress, keeps the adversary off while the embeddings are still random
# and brings it in smoothly.

# %%
cfg = ACMRConfig()   # lam = 0.05, the paper's value, with the DANN ramp
ramp = [cfg.lam_at(p) for p in (0.0, 0.1, 0.25, 0.5, 1.0)]
print("\nDANN schedule, lambda at progress 0, 0.1, 0.25, 0.5, 1:", " ".join(f"{v:.4f}" for v in ramp))
assert ramp[0] == 0.0 and all(a < b for a, b in zip(ramp, ramp[1:]))
print(f"\nResult: with the GRL, one backward pass trained both players; the modality gap fell "
      f"from {without['gap']:.2f} (no adversary) to {with_grl['gap']:.2f}, D is at chance "
      f"({with_grl['D_acc']:.2f}), and the classes stayed apart (label accuracy {with_grl['label_acc']:.2f}).")
