"""The inputs of the losses, the whole model and the training step, kept off kinks.

Teacher-side only: make draws the public inputs with it, grade the hidden ones; a
student copy holds neither this module nor the inputs' drawing, only the stored public
inputs. Drawing needs the reference (it runs the projectors to see where each triplet's
hinge lies), which is why it is not in probes_model.py, which a copy holds.
"""
import numpy as np

from .probes_model import B, C, D_IMG, D_TXT, SHAPE


def model_inputs(rng, ref, config, prefix):
    """Parameters, features, labels and triplet noise for one setting, drawn again until
    every triplet's hinge lies 1e-3 or more from its kink (and, with random triplets, on
    both sides of it) and, in the cosine geometry, every embedding has length 0.5 or more:
    the curvature of x / ||x|| grows as 1 / ||x||^3, and with it the truncation error of
    centered differences (3.6e-8 measured for an embedding of length 0.1)."""
    for _ in range(200):
        model = ref.model.ACMR(D_IMG, D_TXT, C, ref.config.ACMRConfig(**SHAPE, **config), rng=rng, dtype=np.float64)
        params = {k: (p + rng.normal(scale=0.1, size=p.shape) if k.endswith(".b") else p)
                  for k, p in model.named("params").items()}  # non-zero biases, so they are checked too
        img, txt = rng.normal(size=(B, D_IMG)), rng.normal(size=(B, D_TXT))
        labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
        noise = rng.random((2, B, B))
        h, short = hinges(ref, model, params, img, txt, labels, noise)
        sides = config.get("sampling") != "random" or ((h > 0).sum() >= 3 and (h < 0).sum() >= 3)
        if not short and (h.size == 0 or (np.abs(h).min() > 1e-3 and sides)):
            out = {f"{prefix}/param/{k}": v for k, v in params.items()}
            out.update({f"{prefix}/img": img, f"{prefix}/txt": txt, f"{prefix}/labels": labels,
                        f"{prefix}/noise": noise})
            return out
    raise RuntimeError("no model inputs away from the hinge's kink were found")


def hinges(ref, model, params, img, txt, labels, noise):
    """(the argument of every triplet's max(0, .) in L_imi, both directions; whether an
    embedding is shorter than 0.5 in the cosine geometry)."""
    c = model.config
    for k, p in model.named("params").items():
        p[...] = params[k]
    s_v, s_t = model.img_projector.forward(img), model.txt_projector.forward(txt)
    short = c.distance == "cosine" and min(np.linalg.norm(s, axis=1).min() for s in (s_v, s_t)) < 0.5
    if c.alpha == 0:
        return np.zeros(0), short
    if c.distance == "cosine":
        s_v, s_t = (s / np.linalg.norm(s, axis=1, keepdims=True) for s in (s_v, s_t))
    out = []
    for a, o, nz in ((s_v, s_t, noise[0]), (s_t, s_v, noise[1])):
        p, q, _ = ref.triplets.sample(a, o, labels, nz, c.sampling)
        d_p, d_q = ((a - o[p]) ** 2).sum(axis=1), ((a - o[q]) ** 2).sum(axis=1)
        out.append(c.margin + d_p - d_q if c.triplet == "hinge" else c.margin - d_q)
    return np.concatenate(out), short


# ---- the losses' inputs ----------------------------------------------------------------

def _away_from_kink(rng, make, arg):
    """Triplets from ``make(rng)`` whose kink arguments ``arg(inp)`` (one per row) lie 0.05
    or more from 0, with two or more on each side, and active in the masked row (so that
    a mask ignored shows): drawn again until they are."""
    for _ in range(1000):
        inp = make(rng)
        a = arg(inp)
        if np.abs(a).min() > 0.05 and (a > 0).sum() >= 2 and (a < 0).sum() >= 2 and a[~inp["mask"]].min() > 0:
            return inp
    raise RuntimeError("no inputs away from the kink were found")


def _sq(u):
    return (u * u).sum(axis=1)


def _triplets(rng, **settings):
    mask = np.ones(6, bool)
    mask[rng.integers(6)] = False
    return dict({"a": rng.normal(size=(6, 4)), "p": rng.normal(size=(6, 4)), "q": rng.normal(size=(6, 4)),
                 "mask": mask}, **{k: np.array(v) for k, v in settings.items()})


LOSS_INPUTS = {
    "logits": lambda rng: {"logits": rng.normal(size=(6, 3)), "labels": rng.integers(0, 3, size=6)},
    "big_logits": lambda rng: {"logits": np.array([[1e4, -1e4, 0.0], [0.0, 1e4, -1e4]]) * rng.choice([1, -1]),
                               "labels": np.array([0, 2])},
    "probs": lambda rng: {"probs": rng.uniform(0.1, 1.0, size=(6, 3)), "labels": rng.integers(0, 3, size=6)},
    "triplets_active": lambda rng: dict(_triplets(rng, margin=100.0), mask=np.ones(6, bool)),
    "triplets_mixed": lambda rng: _away_from_kink(  # the hinge's argument, margin + d(a, p) - d(a, q)
        rng, lambda r: _triplets(r, margin=0.5), lambda i: 0.5 + _sq(i["a"] - i["p"]) - _sq(i["a"] - i["q"])),
    "pull_push_mixed": lambda rng: _away_from_kink(  # the push's argument, margin - d(a, q)
        rng, lambda r: _triplets(r, margin=3.0, weight=0.7), lambda i: 3.0 - _sq(i["a"] - i["q"])),
    "weights": lambda rng: {"w0": rng.normal(size=(4, 3)), "w1": rng.normal(size=(3, 2)), "coef": np.array(0.3)},
}
