"""The public checks: what a student runs in their copy to see where an exercise stands.

    python -m acmr_np.assignment check        # every exercise of this copy
    python -m acmr_np.assignment check 4      # one

Each check prints the error it measured and what to expect, CS231n-style:

    dL/dx                       relative error 2.9e-11  (expect below 1e-07)  ok

- a gradient is compared with centered differences (h = 1e-5) of YOUR forward pass:
  the relative error max |a - n| / max(1e-8, |a| + |n|) (for the whole model, the
  scaled error of gradcheck.scaled_error; see its docstring);
- anything else (a forward pass, a loss value, parameters after optimiser steps) is
  compared with numbers stored in acmr_np/assignment/public.npz, which the teacher's
  reference computed on the same inputs when this copy was made.

Passing these checks is a good sign, not a grade: the grader runs the same kind of
checks on other inputs, with its own reference for everything your exercise builds on.
"""
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import judge, probes
from .plan import DEFAULT, AssignmentError, load

HERE = Path(__file__).resolve().parent
PUBLIC = HERE / "public.npz"


@dataclass
class Result:
    number: int
    passed: bool
    status: str                       # passed, failing, not started, or "needs exercise N"
    verdicts: list = field(default_factory=list)
    text: str = ""


def copy_plan():
    return load(DEFAULT)


def _public(key, plan, number):
    """(inputs, values to expect) of one exercise: from public.npz in a student copy;
    computed from the reference in the source checkout (where make could write them)."""
    if PUBLIC.is_file():
        with np.load(PUBLIC, allow_pickle=False) as data:
            pick = {k: data[k] for k in data.files if k.startswith(key + "/")}
        inp = {k.split("/", 2)[2]: v for k, v in pick.items() if k.split("/")[1] == "in"}
        want = {k.split("/", 2)[2]: v for k, v in pick.items() if k.split("/")[1] == "want"}
        return inp, want
    try:
        from .make import public_data  # only in the source checkout, which has the reference
    except ImportError:
        raise AssignmentError(f"{PUBLIC} is missing: take it from the copy as it was handed out") from None
    data = public_data(plan, [plan.by_number[number]])
    return ({k.split("/", 2)[2]: v for k, v in data.items() if k.split("/")[1] == "in"},
            {k.split("/", 2)[2]: v for k, v in data.items() if k.split("/")[1] == "want"})


def stub_number(exc):
    """N when ``exc`` is an exercise stub's NotImplementedError("Exercise N: ..."), else None."""
    text = str(exc)
    if isinstance(exc, NotImplementedError) and text.startswith("Exercise "):
        word = text[len("Exercise "):].split(":")[0].split(" ")[0]
        return int(word) if word.isdigit() else None
    return None


def where(exc):
    """' (acmr_np/layers.py, line 123)': the innermost line of the package that raised."""
    tb, found = exc.__traceback__, ""
    while tb is not None:
        path = Path(tb.tb_frame.f_code.co_filename)
        if "acmr_np" in path.parts and "assignment" not in path.parts:
            found = f" ({'/'.join(path.parts[path.parts.index('acmr_np'):])}, line {tb.tb_lineno})"
        tb = tb.tb_next
    return found


def _failed(e, plan, exc, what):
    n = stub_number(exc)
    if n == e.number:
        return "not started", f"  not started: {exc}"
    if n is not None:
        other = plan.by_number.get(n)
        name = f" ({other.function})" if other else ""
        return f"needs exercise {n}", f"  {what} needs exercise {n}{name} first: its stub raised"
    return "failing", f"  {what} raised {type(exc).__name__}: {exc}{where(exc)}"


def run(number, plan=None, out=None):
    """Run the public checks of exercise ``number``; print them to ``out`` (a file) if
    given. Returns a Result."""
    plan = plan or copy_plan()
    e = plan.by_number[number]
    probe = probes.table()[e.key]
    lines = [f"Exercise {e.number} ({e.key}): {e.function} in acmr_np/{e.file}, "
             f"{e.points:g} point{'s' if e.points != 1 else ''}"]
    inp, want = _public(e.key, plan, number)
    pkg = probes.Package()
    status, verdicts = "failing", []
    try:
        outputs, reason = judge.as_arrays(probe.run(pkg, {k: np.array(v, copy=True) for k, v in inp.items()}))
        if reason:
            raise TypeError(reason)
    except Exception as exc:  # the student's code: anything can come out of it
        status, line = _failed(e, plan, exc, "it")
        lines.append(line)
    else:
        try:
            want.update(judge.gradient_values(probe, pkg, {k: np.array(v, copy=True) for k, v in inp.items()}))
        except Exception as exc:
            status, line = _failed(e, plan, exc, "the numerical gradient (of your forward pass)")
            lines.append(line)
        for check in probe.checks:
            if check.kind == probes.GRADIENT and not all(o in want for o in check.outputs):
                continue
            v = judge.verdict(check, outputs, want)
            verdicts.append(v)
            source = "" if check.kind == probes.GRADIENT else " from the stored values"
            measured = f"{v.measure} {v.error:.1e}{source}" if v.error == v.error else v.note
            label = v.label if len(v.label) <= 56 else v.label + "\n" + " " * 58  # a long label: a line of its own
            lines.append(f"  {label:<56} {measured}  (expect below {v.limit:.0e})  {'ok' if v.passed else 'FAILED'}")
            if not v.passed and v.error == v.error and v.note:
                lines.append(f"      {v.note}")
        if verdicts and len(verdicts) == len(probe.checks) and all(v.passed for v in verdicts):
            status = "passed"
        explain = getattr(probe, "explain", None)
        if status != "passed" and explain and explain(outputs, inp):
            lines.append(f"  note: {explain(outputs, inp)}")
    passed = status == "passed"
    ok = sum(v.passed for v in verdicts)
    lines.append(f"  {ok} of {len(probe.checks)} checks pass" + ("" if passed else f": {status}"))
    text = "\n".join(lines)
    if out is not None:
        print(text, file=out)
    return Result(number, passed, status, verdicts, text)


def main(numbers, out=sys.stdout):
    """``check [N ...]``: exit status 0 when every check passes, 1 otherwise."""
    plan = copy_plan()
    chosen = numbers or [e.number for e in plan]
    unknown = [n for n in chosen if n not in plan.by_number]
    if unknown:
        raise AssignmentError(f"this copy has no exercise {unknown[0]}; its exercises are "
                         f"{', '.join(str(e.number) for e in plan)}")
    # say which package is checked: run from outside a copy, Python finds the installed one
    where = HERE.parent
    print(f"checking the acmr_np at {where}" + ("" if PUBLIC.is_file() else
          " (the reference, NOT a student copy: to check your code, run this from your copy's folder)"),
          file=out)
    results = []
    for n in chosen:
        results.append(run(n, plan, out))
        print(file=out)
    if len(results) > 1:
        done = [r.number for r in results if r.passed]
        print(f"{len(done)} of {len(results)} exercises pass their public checks"
              + (f": {', '.join(map(str, done))}" if done else ""), file=out)
    return 0 if all(r.passed for r in results) else 1
