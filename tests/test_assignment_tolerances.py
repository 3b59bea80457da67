"""The grader's limits against measurement: the reference and three other correct answers
of every exercise, on the grader's inputs for several seeds, must sit 10x or more below
each limit; and one planted bug per exercise must fail. In-process (no child processes):
the same probes and the same judge as the grader, on packages built beside the reference.

python -m pytest -s tests/test_assignment_tolerances.py prints the table of worst errors;
ACMR_TOLERANCE_SEEDS=20 in the environment measures over 20 seeds (docs/TEACHING.md)."""
import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from acmr_np.assignment import judge, make, plan as plans, probes, regions

sys.path.insert(0, str(Path(__file__).resolve().parent))
import assignment_solutions as solutions  # noqa: E402

SEEDS = tuple(range(int(os.environ.get("ACMR_TOLERANCE_SEEDS", "3"))))  # more: the table in docs/TEACHING.md
SOLUTIONS = ("reference", "alt0", "alt1", "alt2")


def build(root, name, which):
    """A package ``name`` in ``root``: the reference with every exercise's block filled
    with the ``which`` bodies ("reference", "bug", "altN"). Returns its Package."""
    plan = plans.load()
    files = make.template(plan, [e.number for e in plan], set(), make.package_sources())
    bodies = solutions.reference_bodies() if which == "reference" else \
        {plan.by_key[k].number: v for k, v in solutions.bodies(which).items()}
    for rel, text in files.items():
        path = Path(root) / name / rel.split("/", 1)[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(regions.fill(text, bodies), encoding="utf-8")
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    return probes.Package(name)


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    root = tmp_path_factory.mktemp("solutions")
    yield {w: build(root, f"acmr_{w}", w) for w in SOLUTIONS + ("bug",)}
    sys.path.remove(str(root))
    for m in [m for m in sys.modules if m.startswith(tuple(f"acmr_{w}" for w in SOLUTIONS + ("bug",)))]:
        del sys.modules[m]


@pytest.fixture(scope="module")
def measured(packages):
    """{(key, check label, solution): worst error over SEEDS} and the bug's verdicts."""
    plan, table, ref = plans.load(), probes.table(), probes.Package()
    worst, bug = {}, {}
    for seed in SEEDS:
        for e in plan:
            probe = table[e.key]
            inp = probe.inputs(np.random.default_rng([seed, e.number]), ref)
            want = judge.expected(probe, ref, inp)
            for which, pkg in packages.items():
                try:
                    with np.errstate(all="ignore"):  # a planted bug may overflow
                        out, why = judge.as_arrays(probe.run(pkg, {k: np.array(v, copy=True)
                                                                   for k, v in inp.items()}))
                except Exception as exc:  # a planted bug may raise; a correct answer may not
                    assert which == "bug", (e.key, which, exc)
                    out, why = {}, str(exc)
                assert not why or which == "bug", (e.key, which, why)
                for check in probe.checks:
                    v = judge.verdict(check, out, want)
                    if which == "bug":
                        bug.setdefault(e.key, []).append(v)
                    else:
                        k = (e.key, check.label, which)
                        worst[k] = max(worst.get(k, 0.0), v.error if v.error == v.error else np.inf)
    return worst, bug


def test_correct_answers_sit_ten_times_below_every_limit(measured, capsys):
    worst, _ = measured
    table = probes.table()
    rows = []
    for e in plans.load():
        for check in table[e.key].checks:
            errors = [worst[(e.key, check.label, w)] for w in SOLUTIONS]
            limit = judge.LIMITS[check.kind]
            rows.append((e.number, check.label, limit, errors))
            assert max(errors) * 10 <= limit, (e.key, check.label, dict(zip(SOLUTIONS, errors)))
    with capsys.disabled():
        print(f"\n{'#':>3} {'check':<70} {'limit':>7}  " + "  ".join(f"{w:>9}" for w in SOLUTIONS))
        for n, label, limit, errors in rows:
            print(f"{n:>3} {label[:70]:<70} {limit:7.0e}  " + "  ".join(f"{x:9.1e}" for x in errors))


def test_every_gradient_exercise_has_three_other_correct_answers():
    for e in plans.load():
        if e.part in ("backward", "forward+backward"):
            alts = solutions.model_alternatives() if e.key == "acmr" else solutions.ALTERNATIVES[e.key]
            assert len(alts) >= 3, e.key


def test_a_planted_bug_fails_every_exercise(measured):
    _, bug = measured
    for e in plans.load():
        assert not all(v.passed for v in bug[e.key]), (e.key, [(v.label, v.error) for v in bug[e.key]])
