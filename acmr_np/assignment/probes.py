"""What each exercise is checked on: its inputs, the calls made, and what is compared.

A probe runs in three places, always on ``pkg`` (the package's modules by attribute):

- in the grader's own process, on the teacher's reference, for the expected values and
  the numerical gradients (``judge.expected``);
- in a grading child process, on a hand-in (``child.py``), which sends back only the
  arrays ``run`` returns;
- in a student's ``check``, on their own copy.

So this module holds no answer: it builds layers and models, calls the functions under
test on the inputs it is given, and returns what they produced. ``inputs`` chooses the
inputs (for the grader: from its own seed, so a hand-in cannot know them in advance);
it is given the reference so that it can keep inputs away from kinks (a hinge at 0).

Each probe lists its checks: a ``value`` check compares outputs with the reference's
outputs on the same inputs; a ``gradient`` check compares them with centered
differences (h = 1e-5) of the reference's forward pass (the grader) or the student's own
(``check``). The measure and the limits are in judge.py, with the measurements behind them.
"""
import importlib
from dataclasses import dataclass

import numpy as np

VALUE, GRADIENT = "value", "gradient"


@dataclass(frozen=True)
class Check:
    label: str        # what is checked, in words
    outputs: tuple    # the names of ``run``'s outputs it compares
    kind: str         # VALUE or GRADIENT
    alone: bool = True  # False: a check one line of no real work passes (returning None, or
                        # lambda); it counts only beside a passing check that counts alone


class Package:
    """The modules of a package by attribute (``pkg.layers``), imported on first use:
    only what a probe needs, so a broken layers.py cannot stop a losses exercise."""

    def __init__(self, name="acmr_np"):
        self._name = name

    def __getattr__(self, module):
        if module.startswith("_"):
            raise AttributeError(module)
        return importlib.import_module(f"{self._name}.{module}")


def loss_only(fn, invoke):
    """The loss that the forward part of the loss function ``fn`` computed when
    ``invoke()`` calls it: its first return value or, while its backward part still
    raises an exercise's stub, ``loss`` in its frame."""
    try:
        return invoke()[0]
    except NotImplementedError as exc:
        tb = exc.__traceback__
        while tb.tb_next is not None:
            tb = tb.tb_next
        local = tb.tb_frame.f_locals
        if str(exc).startswith("Exercise ") and tb.tb_frame.f_code.co_name == fn.__name__ and "loss" in local:
            return local["loss"]
        raise


def _copy(inp):
    return {k: np.array(v, copy=True) for k, v in inp.items()}


class Probe:
    modules = ()      # the package modules it calls
    checks = ()

    def inputs(self, rng, ref):
        raise NotImplementedError

    def run(self, pkg, inp):
        raise NotImplementedError

    def gradients(self, pkg, inp):
        """{output name: (f, array)}: output = d f / d array, f a scalar function that
        reads ``array``, which the numerical derivative perturbs in place."""
        return {}


# ---- layers ------------------------------------------------------------------------------

N, D, M = 5, 7, 3     # non-square everywhere: a transposed gradient cannot fit


def _layer(pkg, cls, inp):
    if cls == "Linear":
        layer = pkg.layers.Linear(D, M, rng=np.random.default_rng(0), dtype=np.float64)
        layer.params["W"][...] = inp["W"]
        layer.params["b"][...] = inp["b"]
        return layer
    if cls == "GradientReversal":
        return pkg.layers.GradientReversal(lam=0.3)
    return getattr(pkg.layers, cls)()


class LayerForward(Probe):
    modules = ("layers",)

    def __init__(self, cls):
        self.cls = cls
        self.checks = [Check("the output on a 5 x 7 input", ("y",), VALUE)]
        if cls == "Softmax":
            self.checks.append(Check("the output for logits of magnitude 1e4 (stability)", ("y_big",), VALUE))
        if cls == "L2Normalize":
            self.checks.append(Check("a zero row gives zeros, not NaN", ("y_zero",), VALUE))

    def inputs(self, rng, ref):
        inp = {"x": rng.normal(size=(N, D))}
        if self.cls == "Linear":
            inp.update(W=rng.normal(scale=0.5, size=(D, M)), b=rng.normal(size=M))
        if self.cls == "Softmax":
            inp["x_big"] = np.array([[1e4, 0.0, -1e4], [0.0, -1e4, 1e4], [5e3, 5e3, -1e4]]) * rng.choice([1, -1])
        if self.cls == "L2Normalize":
            inp["x_zero"] = rng.normal(size=(3, D))
            inp["x_zero"][1] = 0.0
        return inp

    def run(self, pkg, inp):
        out = {"y": _layer(pkg, self.cls, inp).forward(inp["x"].copy())}
        for name in ("x_big", "x_zero"):
            if name in inp:
                out["y" + name[1:]] = _layer(pkg, self.cls, inp).forward(inp[name].copy())
        return out


class LayerBackward(Probe):
    modules = ("layers",)

    def __init__(self, cls):
        self.cls = cls
        if cls == "GradientReversal":  # a rule, not a derivative: compared exactly with the reference's
            self.checks = [Check("dx for lam = 0.3", ("dx",), VALUE),
                           Check("dx after lam is changed to 2.5 (a schedule changes it between steps)",
                                 ("dx_again",), VALUE)]
            return
        self.checks = [Check("dL/dx", ("dx",), GRADIENT)]
        if cls == "Linear":
            self.checks += [Check("dL/dW", ("dW",), GRADIENT), Check("dL/db", ("db",), GRADIENT),
                            Check("a second forward and backward overwrites the gradients (no +=)",
                                  ("dW_again", "db_again"), GRADIENT),
                            Check("returns None when input_grad is False", ("none",), VALUE, alone=False)]

    def inputs(self, rng, ref):
        x = rng.normal(size=(N, D))
        if self.cls == "ReLU":  # every input at least 0.1 from the kink at 0: h = 1e-5 never crosses it
            x = np.where(np.abs(x) < 0.1, np.sign(x + 1e-300) * (0.1 + np.abs(x)), x)
        inp = {"x": x, "dout": rng.normal(size=(N, M if self.cls == "Linear" else D))}
        if self.cls == "Linear":
            inp.update(W=rng.normal(scale=0.5, size=(D, M)), b=rng.normal(size=M))
        return inp

    def run(self, pkg, inp):
        layer = _layer(pkg, self.cls, inp)
        layer.forward(inp["x"].copy())
        out = {"dx": layer.backward(inp["dout"].copy())}
        if self.cls == "GradientReversal":
            layer.lam = 2.5
            out["dx_again"] = layer.backward(inp["dout"].copy())
        if self.cls == "Linear":
            out.update(dW=layer.grads["W"].copy(), db=layer.grads["b"].copy())
            layer.forward(inp["x"].copy())
            layer.backward(inp["dout"].copy())
            out.update(dW_again=layer.grads["W"].copy(), db_again=layer.grads["b"].copy())
            layer.input_grad = False
            layer.forward(inp["x"].copy())
            out["none"] = np.array([float(layer.backward(inp["dout"].copy()) is None)])
        return out

    def gradients(self, pkg, inp):
        if self.cls == "GradientReversal":
            return {}
        layer = _layer(pkg, self.cls, inp)
        x, dout = inp["x"].copy(), inp["dout"]

        def f(_):
            return float((layer.forward(x) * dout).sum())

        out = {"dx": (f, x)}
        if self.cls == "Linear":
            out.update(dW=(f, layer.params["W"]), db=(f, layer.params["b"]),
                       dW_again=(f, layer.params["W"]), db_again=(f, layer.params["b"]))
        return out


# ---- losses ------------------------------------------------------------------------------

# Each loss: its differentiable inputs (in the order of its gradients), the call, and its
# cases: (name, label, how its inputs are drawn (draw.LOSS_INPUTS, the teacher's side),
# whether its gradient is checked numerically). The case of logits of magnitude 1e4 is
# compared with the reference's gradient instead: centered differences of a loss that
# large carry round-off of about 1e-7.
LOSSES = {
    "softmax_cross_entropy": (("logits",), lambda fn, i: fn(i["logits"], i["labels"]), [
        ("random", "random logits", "logits", True),
        ("big", "logits of magnitude 1e4 (stability)", "big_logits", False)]),
    "cross_entropy": (("probs",), lambda fn, i: fn(i["probs"], i["labels"]), [
        ("random", "probabilities in [0.1, 1]", "probs", True)]),
    "triplet_hinge": (("a", "p", "q"), lambda fn, i: fn(i["a"], i["p"], i["q"], float(i["margin"]),
                                                       mask=i.get("mask")), [
        ("active", "every triplet active (margin 100, a mask of all True)", "triplets_active", True),
        ("mixed", "active and inactive triplets, one row masked", "triplets_mixed", True)]),
    "pull_push": (("a", "p", "q"), lambda fn, i: fn(i["a"], i["p"], i["q"], float(i["margin"]),
                                                   float(i["weight"]), mask=i.get("mask")), [
        ("mixed", "pushes on and off, one row masked", "pull_push_mixed", True)]),
    "l2_penalty": (("w0", "w1"), lambda fn, i: fn([i["w0"], i["w1"]], float(i["coef"])), [
        ("random", "two weight matrices", "weights", True)]),
}


def _prefixed(case, inp):
    return {k[len(case) + 1:]: v for k, v in inp.items() if k.startswith(case + "/")}


class LossProbe(Probe):
    modules = ("losses",)

    def __init__(self, fn_name, part):
        self.fn_name, self.part = fn_name, part
        self.diff, self.call, self.cases = LOSSES[fn_name]
        if part == "forward":
            self.checks = [Check(f"the loss ({label})", (f"{case}/loss",), VALUE)
                           for case, label, _, _ in self.cases]
        else:
            self.checks = [Check(f"dL/d{name} ({label})", (f"{case}/d{name}",), GRADIENT if numeric else VALUE)
                           for case, label, _, numeric in self.cases for name in self.diff]

    def inputs(self, rng, ref):
        from .draw import LOSS_INPUTS  # the teacher's side only
        return {f"{case}/{k}": np.asarray(v) for case, _, how, _ in self.cases
                for k, v in LOSS_INPUTS[how](rng).items()}

    def run(self, pkg, inp):
        fn, out = getattr(pkg.losses, self.fn_name), {}
        for case, _, _, _ in self.cases:
            args = _prefixed(case, _copy(inp))
            if self.part == "forward":
                out[f"{case}/loss"] = loss_only(fn, lambda: self.call(fn, args))
            else:
                grads = self.call(fn, args)[1]
                grads = grads if isinstance(grads, (tuple, list)) else (grads,)
                if len(grads) != len(self.diff):
                    raise ValueError(f"{self.fn_name} returned {len(grads)} gradient(s), expected {len(self.diff)}")
                out.update({f"{case}/d{name}": g for name, g in zip(self.diff, grads)})
        return out

    def gradients(self, pkg, inp):
        fn, out = getattr(pkg.losses, self.fn_name), {}
        for case, _, _, numeric in self.cases:
            if numeric and self.part == "backward":
                args = _prefixed(case, _copy(inp))
                f = (lambda a: lambda _: float(self.call(fn, a)[0]))(args)
                out.update({f"{case}/d{name}": (f, args[name]) for name in self.diff})
        return out


_LAYERS = {"linear": "Linear", "tanh": "Tanh", "relu": "ReLU", "softmax": "Softmax",
           "l2_normalize": "L2Normalize", "grl": "GradientReversal"}
_LOSSES = {"softmax_xent": "softmax_cross_entropy", "xent": "cross_entropy", "triplet_hinge": "triplet_hinge",
           "pull_push": "pull_push", "l2_penalty": "l2_penalty"}


def table():
    """{exercise key: probe} for every exercise a plan may name."""
    from .probes_model import PROBES
    out = dict(PROBES)
    for key, cls in _LAYERS.items():
        out[f"{key}_forward"], out[f"{key}_backward"] = LayerForward(cls), LayerBackward(cls)
    for key, fn in _LOSSES.items():
        out[f"{key}_forward"], out[f"{key}_backward"] = LossProbe(fn, "forward"), LossProbe(fn, "backward")
    return out
