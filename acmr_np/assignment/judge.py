"""Comparing what a function produced with what it should have: the verdict of one check.

Expected values come from the teacher's reference in the process that calls
``expected`` (the grader's own, never a hand-in's): the reference's outputs for value
checks, and centered differences (h = 1e-5, float64) of the reference's forward pass
for gradient checks. A student's ``check`` calls it on their own copy instead.

One measure for everything, the relative error against the array's own scale,

    max_i |a_i - e_i| / max(1e-8, max_i (|a_i| + |e_i|))      (gradcheck.scaled_error)

and not the elementwise max_i |a_i - e_i| / max(1e-8, |a_i| + |e_i|) of CS231n: the
centered differences of every entry carry about the same absolute round-off, so the
elementwise error of an entry near zero is round-off over a tiny number. Measured on
the reference itself over 20 seeds of the grader's inputs, the elementwise error
reaches 2.2e-7 (Linear.backward), 8.2e-7 (Softmax.backward), 1.6e-6 (the triplet hinge)
and 1.3e-6 (the whole model), all above 1e-7, while the scaled error stays at or below
1.6e-9 everywhere. A wrong gradient of any block that matters is off by 1e-2 to 1 in
this measure.

The limits (tests/test_assignment_tolerances.py measures the reference and three other
correct answers of every gradient exercise against them on every run, and asserts a
margin of 10 or more; docs/TEACHING.md has the table):

- gradients: 1e-7, what students are told to expect;
- values (forward outputs, losses, parameters after optimiser steps, lambda): 1e-9;
  correct alternatives differ from the reference by rounding, 5.6e-16 at most.
"""
from dataclasses import dataclass

import numpy as np

from ..gradcheck import numerical_gradient, scaled_error
from .probes import GRADIENT

LIMITS = {"gradient": 1e-7, "value": 1e-9}


@dataclass
class Verdict:
    label: str
    passed: bool
    error: float        # the measured error (nan when nothing could be compared)
    limit: float
    measure: str        # "relative error" (a gradient) or "difference" (a value), both to the array's scale
    note: str = ""      # why it failed, when the error alone does not say


def gradient_values(probe, pkg, inp):
    """{output: numerical derivative} for every gradient output of ``probe``, computed
    with the functions of ``pkg``. An output made of several arrays (the whole model's
    parameters) is their derivatives, flattened and concatenated."""
    out = {}
    for name, spec in probe.gradients(pkg, inp).items():
        parts = spec if isinstance(spec, list) else [spec]
        out[name] = np.concatenate([numerical_gradient(f, x).ravel() for f, x in parts]) \
            if isinstance(spec, list) else numerical_gradient(*spec)
    return out


def expected(probe, ref, inp, gradients=True):
    """What the checks of ``probe`` compare with, from the reference package ``ref``: its
    outputs (for value checks) and, unless ``gradients`` is False, the numerical gradients."""
    copy = {k: np.array(v, copy=True) for k, v in inp.items()}
    values = {c for check in probe.checks if check.kind != GRADIENT for c in check.outputs}
    out = {k: np.asarray(v, dtype=np.float64) for k, v in probe.run(ref, copy).items() if k in values}
    if gradients:
        out.update(gradient_values(probe, ref, {k: np.array(v, copy=True) for k, v in inp.items()}))
    return out


def verdict(check, outputs, want):
    """The verdict of one check: every output it names against ``want`` (from
    ``expected``); the worst error decides."""
    limit = LIMITS[check.kind]
    label = "relative error" if check.kind == GRADIENT else "difference"
    worst = 0.0
    for name in check.outputs:
        if name not in outputs:
            return Verdict(check.label, False, float("nan"), limit, label, f"{name}: nothing was produced")
        a, e = np.asarray(outputs[name], dtype=np.float64), np.asarray(want[name], dtype=np.float64)
        if a.shape != e.shape:
            return Verdict(check.label, False, float("nan"), limit, label,
                           f"{name}: shape {a.shape}, expected {e.shape}")
        both_nan = np.isnan(a) & np.isnan(e)  # "not reported" in both: the same
        if not np.all(np.isfinite(a) | both_nan):
            return Verdict(check.label, False, float("nan"), limit, label, f"{name}: NaN or inf")
        if a.size:
            worst = max(worst, scaled_error(np.where(both_nan, 0, a), np.where(both_nan, 0, e)))
    return Verdict(check.label, worst < limit, worst, limit, label)


def as_arrays(raw):
    """A probe's outputs as float64 arrays, or ({}, reason) when one is not numeric
    (None returned instead of an array, say)."""
    out = {}
    for k, v in raw.items():
        try:
            a = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            return {}, f"{k}: expected an array, got {type(v).__name__}"
        out[k] = a
    return out, ""
