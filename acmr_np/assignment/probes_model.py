"""The probes of the optimisers, the whole model and the training step (see probes.py).

Each builds small objects of the package in float64, sets every parameter from the
inputs the grader chose, calls the function under test, and returns what came out:
parameters after each optimiser step, loss terms and every gradient, lambda and the
step counts. Nothing here computes an expected value.
"""
import numpy as np

from .probes import GRADIENT, VALUE, Check, Probe


class _Draw:
    """draw.py, imported when inputs are drawn: the teacher's side only (make, grade).
    A student copy has the inputs stored in public.npz and no draw.py."""

    def __getattr__(self, name):
        from . import draw as module
        return getattr(module, name)


draw = _Draw()

# ---- optimisers --------------------------------------------------------------------------

STEPS = 5


class OptimizerProbe(Probe):
    """Five steps on two parameters (W (4, 3), b (3,)), the arrays the optimiser was given
    read back after every step: an update that rebinds them instead of changing them in
    place leaves them as they were."""
    modules = ("optim",)

    def __init__(self, cls, settings, resume=False):
        self.cls, self.settings, self.resume = cls, settings, resume
        self.checks = [Check("the parameters after each of 5 steps (changed in place)", ("W", "b"), VALUE)]
        if resume:
            self.checks.append(Check("a copy resumed from state_dict() after 2 steps continues exactly",
                                     ("W_resumed", "b_resumed"), VALUE))

    def inputs(self, rng, ref):
        return {"W0": rng.normal(size=(4, 3)), "b0": rng.normal(size=3),
                "gW": rng.normal(size=(STEPS, 4, 3)), "gb": rng.normal(size=(STEPS, 3))}

    def _steps(self, opt, inp, steps):
        for i in steps:
            opt.step({"W": inp["gW"][i].copy(), "b": inp["gb"][i].copy()})
            yield i

    def run(self, pkg, inp):
        cls = getattr(pkg.optim, self.cls)
        params = {"W": inp["W0"].copy(), "b": inp["b0"].copy()}
        held = dict(params)  # the arrays themselves, as the layers hold them
        opt = cls(params, **self.settings)
        after = [(held["W"].copy(), held["b"].copy()) for _ in self._steps(opt, inp, range(STEPS))]
        out = {"W": np.stack([w for w, _ in after]), "b": np.stack([b for _, b in after])}
        if self.resume:
            a = cls({"W": inp["W0"].copy(), "b": inp["b0"].copy()}, **self.settings)
            list(self._steps(a, inp, range(2)))
            b = cls({k: v.copy() for k, v in a.params.items()}, **self.settings)
            b.load_state_dict(a.state_dict())
            list(self._steps(b, inp, range(2, STEPS)))
            out.update(W_resumed=b.params["W"], b_resumed=b.params["b"])
        return out

    def explain(self, outputs, inp):
        w = outputs.get("W")
        if w is not None and np.shape(w) == (STEPS, 4, 3) and np.array_equal(w[-1], inp["W0"]):
            return "the parameter arrays did not change: update them in place (p -= ...), do not rebind them"
        return ""


# ---- the whole model ---------------------------------------------------------------------

B, D_IMG, D_TXT, C = 8, 6, 5, 3
SHAPE = dict(img_hidden=(7,), txt_hidden=(4,), dim=3, disc_hidden=5)
TERMS = ("L_imi", "L_imd", "L_adv", "L_reg", "adv_acc")
SETTINGS = (  # (name, label, config, lambda, the terms whose values are compared)
    ("hinge_cos", "hinge, random triplets, cosine", dict(triplet="hinge", sampling="random", distance="cosine",
                                                        margin=1.0, alpha=0.7, beta=1.3, l2=0.05), 0.4, TERMS),
    ("pull_euc", "pull-push, random triplets, euclidean", dict(triplet="pull_push", sampling="random",
                                                              distance="euclidean", margin=3.0, push_weight=0.7,
                                                              alpha=0.7, beta=1.3, l2=0.05), 0.4, TERMS),
    ("hard_cos", "hinge, hardest negatives, cosine", dict(triplet="hinge", sampling="hardest", distance="cosine",
                                                         margin=3.0, alpha=0.7, beta=1.3, l2=0.05), 0.4, TERMS),
    # With alpha = 0 the value reported for L_imi is a matter of taste (0, or the unused
    # term): not compared.
    ("adv_only", "L_adv alone (alpha = beta = 0, no L_reg): the reversed gradient reaches the projectors",
     dict(alpha=0.0, beta=0.0, l2=0.0), 0.3, ("L_imd", "L_adv", "L_reg", "adv_acc")),
)


def build_model(pkg, config, inp, prefix):
    """An ACMR of the small shape above, every parameter set from ``inp``."""
    cfg = pkg.config.ACMRConfig(**SHAPE, **config)
    model = pkg.model.ACMR(D_IMG, D_TXT, C, cfg, rng=np.random.default_rng(0), dtype=np.float64)
    for name, p in model.named("params").items():
        p[...] = inp[f"{prefix}/param/{name}"]
    return model


class ModelProbe(Probe):
    """ACMR.loss_and_grads in four settings, and once with l_reg=False."""
    modules = ("model", "config")

    def __init__(self):
        self.checks = []
        for name, label, _, _, compared in SETTINGS:
            self.checks += [Check(f"loss values ({label})", tuple(f"{name}/{t}" for t in compared), VALUE),
                            Check(f"gradient of every parameter ({label})", (f"{name}/grads",), GRADIENT)]
        self.checks.append(Check("l_reg=False leaves out L_reg and its gradient, nothing else",
                                 ("noreg/has_L_reg", "noreg/terms", "noreg/grads"), VALUE))

    def inputs(self, rng, ref):
        inp = {}
        for name, _, config, lam, _ in SETTINGS:
            inp.update(draw.model_inputs(rng, ref, config, name))
            inp[f"{name}/lam"] = np.array(lam)
        return inp

    def _call(self, pkg, inp, name, config, l_reg=True):
        model = build_model(pkg, config, inp, name)
        g = {k: inp[f"{name}/{k}"] for k in ("img", "txt", "labels", "noise")}
        terms = model.loss_and_grads(g["img"], g["txt"], g["labels"], g["noise"], float(inp[f"{name}/lam"]),
                                     **({} if l_reg else {"l_reg": False}))
        grads = np.concatenate([np.ravel(v) for v in model.named("grads").values()])
        return terms, grads

    def run(self, pkg, inp):
        out = {}
        for name, _, config, _, _ in SETTINGS:
            terms, out[f"{name}/grads"] = self._call(pkg, inp, name, config)
            for t in TERMS:
                if t in terms:
                    out[f"{name}/{t}"] = terms[t]
        name, _, config, _, _ = SETTINGS[0]
        terms, out["noreg/grads"] = self._call(pkg, inp, name, config, l_reg=False)
        out["noreg/has_L_reg"] = np.array(float("L_reg" in terms))
        out["noreg/terms"] = np.array([float(terms[t]) if t in terms else np.nan for t in TERMS if t != "L_reg"])
        return out

    def gradients(self, pkg, inp):
        """One scalar function per parameter array: L_emb - lam L_adv for the embedding
        player's, L_adv for the modality classifier's (Eqs. 9-10). The output is the
        concatenation of every parameter's gradient, so each entry is one (f, array)."""
        out = {}
        for name, _, config, lam, _ in SETTINGS:
            model = build_model(pkg, config, inp, name)
            c = model.config
            g = [inp[f"{name}/{k}"] for k in ("img", "txt", "labels", "noise")]

            def terms(_, model=model, g=g, lam=lam):
                return model.loss_and_grads(*g, lam)

            def emb(x, c=c, terms=terms, lam=lam):
                t = terms(x)
                return float(c.alpha * t["L_imi"] + c.beta * t["L_imd"] + t["L_reg"] - lam * t["L_adv"])

            parts = [(emb if not k.startswith("modality_classifier") else (lambda x, terms=terms: float(terms(x)["L_adv"])), p)
                     for k, p in model.named("params").items()]
            out[f"{name}/grads"] = parts
        return out


# ---- the training step -------------------------------------------------------------------

PROGRESS = (0.0, 0.1, 0.37, 1.0)
TRAIN_CONFIG = dict(k=3, lam=0.05, lam_schedule="dann", triplet="hinge", sampling="random",
                    distance="cosine", margin=1.0, alpha=0.7, beta=1.3, l2=0.05)


class TrainStepProbe(Probe):
    """Four steps of Trainer.train_step with k = 3, lambda on the DANN ramp."""
    modules = ("trainer", "config")
    checks = (Check("lambda at each step (the schedule at that progress)", ("lam",), VALUE, alone=False),
              Check("the loss terms each step returns", tuple(f"terms/{t}" for t in TERMS), VALUE),
              Check("the embedding player's parameters after each step", ("emb",), VALUE),
              Check("the modality classifier's parameters after each step (k = 3: it steps at steps 0 and 3)",
                    ("adv",), VALUE),
              Check("the step counts: step_count and each optimiser's t", ("counts",), VALUE))

    def inputs(self, rng, ref):
        return draw.model_inputs(rng, ref, TRAIN_CONFIG, "train")

    def run(self, pkg, inp):
        model = build_model(pkg, TRAIN_CONFIG, inp, "train")
        trainer = pkg.trainer.Trainer(model)
        g = [inp[f"train/{k}"] for k in ("img", "txt", "labels", "noise")]
        lams, terms, emb, adv = [], {t: [] for t in TERMS}, [], []
        for p in PROGRESS:
            t, lam = trainer.train_step(*g, progress=p)
            lams.append(float(lam))
            for k in TERMS:
                terms[k].append(float(t[k]) if k in t else np.nan)
            emb.append(np.concatenate([v.ravel() for v in model.named("params", model.EMBEDDING_PARTS).values()]))
            adv.append(np.concatenate([v.ravel() for v in model.named("params", model.ADVERSARY_PARTS).values()]))
        out = {"lam": np.array(lams), "emb": np.stack(emb), "adv": np.stack(adv),
               "counts": np.array([trainer.step_count, trainer.opt_emb.t, trainer.opt_adv.t], float)}
        out.update({f"terms/{k}": np.array(v) for k, v in terms.items()})
        return out


PROBES = {
    "sgd": OptimizerProbe("SGD", dict(lr=0.1, momentum=0.5)),
    "adam": OptimizerProbe("Adam", dict(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6), resume=True),
    "acmr": ModelProbe(),
    "train_step": TrainStepProbe(),
}
