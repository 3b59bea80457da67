# %% [markdown]
# # Tutorial 6: the gradient reversal layer, and the minimax game in one backward pass
#
# ACMR has two players (Eqs. 9-10 of Wang et al., "Adversarial Cross-Modal Retrieval",
# ACM Multimedia 2017):
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
# Now both players take Adam steps (tutorial 4) on their own gradients, with lambda = 0
# (D learns, but the projector ignores it) and with lambda = 1 (the projector fights D).
# A linear D tells the modalities apart mainly by the difference of their means, so we
# watch the *modality gap*, mean(s_txt) - mean(s_img). We print it **signed**: its
# component along the gap at step 0 (the texts start 3 above the images on axis 1), so
# a negative value means the texts have been pushed past the images. At the equilibrium
# D can do no better than guess: accuracy 0.5 and L_adv = ln 2 = 0.693 (the mean over
# the 2n rows; ACMR's L_adv sums the two modalities and sits at 2 ln 2). The label
# classifier must stay accurate throughout: the projector may not win by throwing the
# class information away. (A bigger D, as in ACMR, can use more than the means, and then
# the projector must match more of the two distributions.)

# %%
LOG_AT = (0, 10, 20, 30, 40, 50, 60, 70, 80, 100, 150, 200, 300, 400, 500, 600)


def play(lam, seed=1, steps=600, lr_d=0.1, log=False):
    """Both players' Adam steps for `steps` steps. Returns the last step's numbers and,
    per step, D's accuracy, L_adv and the signed gap."""
    rng = np.random.default_rng(seed)
    img, txt, y = make_data(rng, 200)
    toy = Toy(lam, rng)
    emb = {"pW": toy.proj.params["W"], "pb": toy.proj.params["b"],
           "cW": toy.cls.params["W"], "cb": toy.cls.params["b"]}
    emb_g = {"pW": toy.proj.grads["W"], "pb": toy.proj.grads["b"],
             "cW": toy.cls.grads["W"], "cb": toy.cls.grads["b"]}
    opt_emb = Adam(emb, lr=0.02)
    opt_adv = Adam(dict(toy.disc.params), lr=lr_d)    # D the faster learner, as usual
    trace, direction = [], None
    for t in range(steps + 1):
        l_cls, l_adv, acc, s = toy.step(img, txt, y)
        diff = s[200:].mean(0) - s[:200].mean(0)          # mean(s_txt) - mean(s_img)
        direction = diff / np.linalg.norm(diff) if direction is None else direction
        trace.append((acc, l_adv, float(diff @ direction)))
        if log and t in LOG_AT:
            print(f"  step {t:3d}: L_cls {l_cls:.3f}  L_adv {l_adv:.3f}  D accuracy {acc:.2f}  "
                  f"gap {np.linalg.norm(diff):.2f} (signed {diff @ direction:+.2f})")
        if t < steps:
            opt_emb.step(emb_g)
            opt_adv.step(dict(toy.disc.grads))
    label_acc = float((toy.cls.forward(s).argmax(axis=1) == np.r_[y, y]).mean())
    return {"L_adv": l_adv, "D_acc": acc, "gap": float(np.linalg.norm(diff)), "label_acc": label_acc,
            "trace": np.array(trace)}


print("lambda = 1: the projector plays against D")
with_grl = play(1.0, log=True)
without = play(0.0)
print(f"\n{'':12s}{'modality gap':>14s}{'D accuracy':>12s}{'L_adv':>8s}{'label accuracy':>16s}")
for name, r in (("lambda = 0", without), ("lambda = 1", with_grl)):
    print(f"{name:12s}{r['gap']:14.2f}{r['D_acc']:12.2f}{r['L_adv']:8.3f}{r['label_acc']:16.2f}")
assert without["D_acc"] > 0.85 and with_grl["D_acc"] < 0.6
assert with_grl["gap"] < 0.5 < without["gap"] and with_grl["label_acc"] > 0.95

# %% [markdown]
# Read the log. For twenty steps D gets *better* (accuracy 0.95 at step 10) while the
# projector drags the texts towards the images. The projector does not stop at the
# images: it ascends L_adv, and for a D that still separates the old positions the way
# up is to carry the texts across, to where D expects images. The signed gap turns
# negative at step 34, and D, which learnt the old side, is now wrong more often than
# right: it is **fooled the wrong way round**, and L_adv, its cross-entropy, rises far
# above ln 2 (a confident classifier that is wrong pays more than one that guesses).
# Then D relearns the new side, the projector swings back, and the swings die down: L_adv
# settles at ln 2, D at chance and the gap near 0, while the label accuracy stays high.
# That is the equilibrium of Eqs. 9-10. Below, the overshoot, measured over every step:

# %%
acc_t, l_adv_t, signed_t = with_grl["trace"].T
early = slice(0, 100)
print(f"first 100 steps: D accuracy below 0.5 at {int((acc_t[early] < 0.5).sum())} of them, lowest "
      f"{acc_t[early].min():.2f} (step {int(acc_t[early].argmin())}); signed gap first negative at step "
      f"{int(np.argmax(signed_t < 0))}, lowest {signed_t.min():+.2f}; L_adv highest {l_adv_t.max():.2f} "
      f"(step {int(l_adv_t.argmax())}), against ln 2 = {np.log(2):.3f}")
assert acc_t[early].min() < 0.45 and signed_t.min() < -1.0 and l_adv_t.max() > 2 * np.log(2)

# %% [markdown]
# ## 4. In ACMR
#
# `acmr_np.model.ACMR.loss_and_grads` does exactly section 2 with the real parts: the
# common space s = [s_v; s_t] goes into the label classifier (L_imd) and, through
# `self.grl`, into the modality classifier m -> 50 -> 2 (L_adv); the projectors receive
# grad L_emb - lambda grad L_adv. `acmr_np.Trainer.train_step` then steps the embedding
# player every mini-batch and D only every k-th (Algorithm 1, k = 5): in ACMR, D is the
# *slower* player, and tutorial 7 measures what that does to its accuracy.
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

# %% [markdown]
# ## Questions for discussion
#
# - The GRL's backward is -lambda times the upstream gradient, but its forward is the
#   identity, whose derivative is 1. So the GRL does not compute the derivative of
#   anything: of which objective is the projectors' update then a descent direction, and
#   why can no single scalar function have both players' gradients as its gradient?
# - What happens to D's accuracy (adv_acc in ACMR's logs) when lambda is 0? Is a D at
#   100% then a sign that something is broken?
# - The projector ascends L_adv, a cross-entropy, which has no upper bound. Why does that
#   make it overshoot (section 3's log) instead of stopping where D is at chance?
# - D at chance means only that *this* D cannot tell the modalities apart. Does it mean
#   the two distributions in the common space are the same? What does a linear D miss?
# - Why does the DANN schedule start lambda at 0, and what could go wrong if the
#   adversary were at full strength while the embeddings are still random?
# - The authors' demo lost the reversed term and its D sat at chance anyway (loss
#   2 ln 2). Why is "D at chance" no evidence that the adversary works?
#
# ## Exercises
#
# 1. **No reversal.** Play with `play(-1.0)`: the "GRL" then passes +1 times the
#    gradient, so the projector *helps* D. Measured after 600 steps: gap 9.88 (against
#    2.32 with lambda = 0 and 0.08 with lambda = 1), D accuracy 1.00, L_adv 0.000, label
#    accuracy still 1.00. Which term keeps the gap from growing without bound?
# 2. **A slow discriminator.** Give D a tenth of its learning rate, `play(1.0, lr_d=0.01)`,
#    and look at D's accuracy over the last 300 steps (`r["trace"][301:, 0]`). Measured:
#    mean 0.465, below 0.5 at 46% of those steps, and as low as 0.10 (step 73), against
#    0.507 and 23% with lr_d = 0.1. A D that learns more slowly than the projector moves
#    is systematically fooled the wrong way round: tutorial 7 finds the same in ACMR,
#    where D steps only every fifth step.
# 3. **Noise or signal?** Rerun `play(1.0, seed=s)` for s = 2, 3, 4. Measured: D ends at
#    0.500, 0.497 and 0.517, the gap at 0.06, 0.05 and 0.02, but the share of the last
#    300 steps with D below 0.5 is 0%, 68% and 0% (seed 1: 23%). At the equilibrium one
#    step's accuracy above or below 0.5 says nothing; a mean over many steps that stays
#    below 0.5, as in exercise 2, does.
