"""The real grader on real hand-ins built from a ``make`` copy: one ``grade-all`` run over a
class of sixteen, each hand-in testing one promise, then a look at each report.

The hand-ins: untouched stubs that patch gradcheck and pytest and load the teacher's
reference; the reference (without the copy's own plan); three layers exercises broken
by a syntax error, an endless loop, os._exit and sys.exit (and one that prints 24 MB);
a losses.py that imports a missing package and an SGD that eats memory; three sets of
other correct answers; planted bugs in every odd, then every even exercise; a backward
that reads what its own forward saved under another name; a copy one folder down; a
folder without a copy; and copies of these to make sixteen."""
import contextlib
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from acmr_np.assignment import isolate, plan as plans
from acmr_np.assignment.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
import assignment_solutions as solutions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PLAN = plans.load()
TIMEOUT = 5
N = {e.key: e.number for e in PLAN}

PATCHES = '''

# ---- a hand-in that tries to pass without doing the work ----
import acmr_np.gradcheck as _g
_g.relative_error = lambda a, n: 0.0
_g.scaled_error = lambda a, n: 0.0
try:
    import _pytest.reports as _r
    _r.TestReport.outcome = "passed"
except Exception:
    pass
'''

CHEAT = f'''import importlib
import sys
sys.path.insert(0, {str(ROOT)!r})
sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "_Sources"]  # the grader's importer
for name in [m for m in sys.modules if m.startswith("acmr_np")]:
    del sys.modules[name]
reference = importlib.import_module("acmr_np.layers")
return reference.Tanh.backward(self, dout)'''


def _edit(path, old, new):
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new), encoding="utf-8")


def build_class(copy, subs):
    """The sixteen hand-ins of the module's docstring, in ``subs``."""
    everything = {e.key: "reference" for e in PLAN}
    h = solutions.handin
    h(copy, subs / "stubs_patching", {"tanh_backward": CHEAT.splitlines()})
    layers = subs / "stubs_patching" / "acmr_np" / "layers.py"
    layers.write_text(layers.read_text(encoding="utf-8") + PATCHES, encoding="utf-8")
    _edit(subs / "stubs_patching" / "acmr_np" / "gradcheck.py", 'def relative_error(analytic, numeric):\n',
          'def relative_error(analytic, numeric):\n    return 0.0\n')
    h(copy, subs / "reference", everything)
    (subs / "reference" / "acmr_np" / "assignment" / "plan.json").unlink()  # the copy's scope, gone
    (subs / "reference" / "acmr_np" / "assignment" / "public.npz").unlink()
    h(copy, subs / "broken_layers", dict(everything, **{
        "tanh_backward": ["return dout * (1 - self.out *)"],
        "relu_forward": ["self.mask = x > 0", "while True:", "    pass"],
        "softmax_backward": ["import os", "os._exit(7)"],
        "grl_backward": ["raise SystemExit(3)"],
        "l2_normalize_forward": ['print("x" * 24_000_000)'] + solutions.reference_bodies()[N["l2_normalize_forward"]],
    }))
    h(copy, subs / "broken_files", dict(everything, sgd=["big = bytearray(100 * 2 ** 30)"]))
    _edit(subs / "broken_files" / "acmr_np" / "losses.py", '"""\nfrom .backend import get_array_module\n',
          '"""\nimport a_package_nobody_installed  # noqa\nfrom .backend import get_array_module\n')
    for i in range(3):
        h(copy, subs / f"alt{i}", solutions.bodies(f"alt{i}"))
    bugs = solutions.bodies("bug")
    for parity, name in ((1, "bugs_odd"), (0, "bugs_even")):
        h(copy, subs / name, {e.key: bugs[e.key] if e.number % 2 == parity else "reference" for e in PLAN})
    h(copy, subs / "own_forward", dict(everything, tanh_forward=["self.y = numpy.tanh(x)", "return self.y"],
                                       tanh_backward=["return dout * (1 - self.y ** 2)"]))
    (subs / "nested").mkdir()
    shutil.copytree(subs / "reference", subs / "nested" / "hw")
    (subs / "empty").mkdir()
    (subs / "empty" / "notes.txt").write_text("forgot to hand in")
    for name, like in (("stubs2", None), ("reference2", "reference"), ("reference3", "reference")):
        shutil.copytree(subs / like, subs / name) if like else shutil.copytree(copy, subs / name)
    h(copy, subs / "week1_done", {e.key: "reference" for e in PLAN if e.week == 1})
    return sorted(p.name for p in subs.iterdir())


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """(reports by student, the results folder, grade-all's seconds, printed lines)."""
    base = tmp_path_factory.mktemp("class")
    copy = base / "hw"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["make", str(copy)]) == 0
    names = build_class(copy, base / "submissions")
    assert len(names) == 16
    out = io.StringIO()
    t0 = time.monotonic()
    with contextlib.redirect_stdout(out):
        assert main(["grade-all", str(base / "submissions"), "--manifest", str(base / "hw.manifest.json"),
                     "--out", str(base / "results"), "--jobs", "2", "--timeout", str(TIMEOUT),
                     "--memory", "512"]) == 0
    seconds = time.monotonic() - t0
    reports = {n: json.loads((base / "results" / "reports" / f"{n}.json").read_text()) for n in names}
    return reports, base, seconds, out.getvalue().splitlines()


def scores(report):
    return {r["key"]: r["score"] for r in report["exercises"]}


def row(report, key):
    return next(r for r in report["exercises"] if r["key"] == key)


def full(report, keys):
    s = scores(report)
    return [k for k in keys if s[k] != PLAN.by_key[k].points]


# ---- what a hand-in does in its own process cannot change its score -----------------------

def test_untouched_stubs_score_zero_though_they_patch_gradcheck_pytest_and_load_the_reference(graded):
    reports, *_ = graded
    r = reports["stubs_patching"]
    assert r["score"] == 0 and all(x["checks_passed"] == 0 for x in r["exercises"])
    cheat = row(r, "tanh_backward")
    assert cheat["status"].startswith("error: ImportError: acmr_np") and "outside the hand-in's copy" in cheat["status"]
    assert any(n.startswith("review this exercise's code by hand: it uses import") for n in cheat["notes"])
    assert row(r, "tanh_forward")["status"] == "not started"
    assert any("acmr_np/gradcheck.py" in w and "the teacher's versions were used" in w for w in r["warnings"])
    assert reports["stubs2"]["score"] == 0


def test_no_tree_holds_the_answer_of_the_exercise_it_grades(tmp_path):
    """A job's tree holds the reference for what the exercise builds on, never for the
    exercise itself: a body that looked for its answer in the tree would find none."""
    from acmr_np.assignment import grade
    answers, _ = solutions.answer_lines()
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["make", str(tmp_path / "hw")]) == 0
    grader = grade.Grader(grade.scope_from_manifest(tmp_path / "hw.manifest.json"))
    for e in PLAN:
        student = (tmp_path / "hw" / "acmr_np" / e.file).read_text(encoding="utf-8")
        for variant in grader.variants(e):
            files, _ = grader.tree(e, student, variant)
            present = {x.strip() for text in files.values() for x in text.splitlines()}
            # its own lines: not also a line of another exercise's answer ("return self.out")
            own = answers[e.key] - {x for k, v in answers.items() if k != e.key for x in v}
            assert own or e.key == "grl_forward", e.key
            assert not own & present, (e.key, variant, sorted(own & present)[:3])
            if e.number != N["grl_forward"]:
                others = [d.key for d in PLAN.needs(e) if d.file != e.file or variant == "reference"]
                assert all(answers[k] & present for k in others if answers[k]), e.key  # the reference's


def test_the_child_cannot_import_the_teachers_package(tmp_path):
    path = isolate._make_shims(isolate.child_path(), tmp_path)
    assert str(ROOT) not in path
    code = "import sys; sys.path[:] = %r\ntry:\n    import acmr_np\nexcept ImportError:\n    print('no acmr_np')\n" % path
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "no acmr_np", proc.stdout + proc.stderr
    fake = tmp_path / "site"  # a site folder with an installed acmr_np: shimmed, the rest linked
    (fake / "acmr_np").mkdir(parents=True)
    (fake / "acmr_np-0.2.0.dist-info").mkdir()
    (fake / "numpy_like").mkdir()
    old = sys.path[:]
    try:
        sys.path.append(str(fake))
        (tmp_path / "shims").mkdir()
        path = isolate._make_shims(isolate.child_path(), tmp_path / "shims")
    finally:
        sys.path[:] = old
    # the fake folder's shim is the last (it was last on sys.path); an environment where
    # acmr_np itself is installed has a shim of its own site folder before it
    shim = [Path(p) for p in path if Path(p).parent == tmp_path / "shims"][-1]
    assert sorted(p.name for p in shim.iterdir()) == ["numpy_like"]
    assert all(not (Path(p) / "acmr_np").exists() for p in path if Path(p).parent == tmp_path / "shims")


# ---- correct answers, and where the points go -------------------------------------------------

def test_the_reference_scores_full_marks_on_the_teachers_scope(graded):
    reports, *_ = graded
    for name in ("reference", "reference2", "nested"):
        r = reports[name]
        assert r["score"] == r["points"] == sum(e.points for e in PLAN), (name, r["exercises"])
        assert all(x["status"] == "done" for x in r["exercises"])
    missing = reports["reference"]["warnings"]
    assert any("acmr_np/assignment/plan.json (missing)" in w for w in missing), missing


def test_three_other_correct_answers_of_every_exercise_score_full_marks(graded):
    reports, *_ = graded
    for name in ("alt0", "alt1", "alt2"):
        r = reports[name]
        assert r["score"] == r["points"], (name, [x for x in r["exercises"] if x["status"] != "done"])
        for x in r["exercises"]:  # every gradient 10x or more below its limit, as measured
            for c in x["checks_detail"]:
                assert c["error"] * 10 <= c["limit"], (name, x["key"], c)


def test_one_planted_bug_per_exercise_costs_that_exercise_and_no_other(graded):
    reports, *_ = graded
    for name, parity in (("bugs_odd", 1), ("bugs_even", 0)):
        s = scores(reports[name])
        for e in PLAN:
            if e.number % 2 == parity:
                assert s[e.key] < e.points, (name, e.key, row(reports[name], e.key))
            else:  # what it builds on is the reference's: a wrong neighbour costs it nothing
                assert s[e.key] == e.points, (name, e.key, row(reports[name], e.key))


def test_a_backward_that_reads_its_own_forwards_names_is_graded_with_it(graded):
    reports, *_ = graded
    r = reports["own_forward"]
    assert r["score"] == r["points"]
    notes = row(r, "tanh_backward")["notes"]
    assert any(n.startswith("graded with your own forward part: with the reference's, AttributeError") for n in notes)


def test_partial_work_scores_what_is_done(graded):
    reports, *_ = graded
    s = scores(reports["week1_done"])
    assert all(s[e.key] == e.points for e in PLAN if e.week == 1)
    assert all(s[e.key] == 0 for e in PLAN if e.week > 1)
    assert all(row(reports["week1_done"], e.key)["status"] == "not started" for e in PLAN if e.week > 1)


# ---- failures stay local ---------------------------------------------------------------------

def test_a_syntax_error_an_endless_loop_and_exits_cost_only_their_exercises(graded):
    reports, *_ = graded
    r = reports["broken_layers"]
    broken = {"tanh_backward": "error: SyntaxError: invalid syntax (your layers.py, line ",
              "relu_forward": f"error: did not finish within {TIMEOUT} s (an endless loop?)",
              "softmax_backward": "error: the process ended with exit status 7 before it finished",
              "grl_backward": "error: SystemExit: 3"}
    for key, status in broken.items():
        assert row(r, key)["status"].startswith(status) and scores(r)[key] == 0, row(r, key)
    assert full(r, [e.key for e in PLAN if e.key not in broken]) == []
    assert "x" * 100 in row(r, "l2_normalize_forward")["printed"]  # 24 MB printed: kept out, an excerpt shown
    assert len(row(r, "l2_normalize_forward")["printed"]) < 1000


def test_a_missing_package_and_too_much_memory_cost_only_the_code_that_needs_them(graded):
    reports, *_ = graded
    r = reports["broken_files"]
    for e in PLAN:
        if e.file == "losses.py":
            assert row(r, e.key)["status"].startswith("error: ModuleNotFoundError: No module named "
                                                      "'a_package_nobody_installed'"), row(r, e.key)
    assert row(r, "sgd")["status"].startswith("error: MemoryError")
    assert full(r, [e.key for e in PLAN if e.file != "losses.py" and e.key != "sgd"]) == []


def test_a_folder_without_a_copy_is_graded_zero_with_a_reason(graded):
    reports, *_ = graded
    r = reports["empty"]
    assert r["score"] == 0 and all(x["status"] == "error: no acmr_np/ folder in the hand-in" for x in r["exercises"])


def _grade(base, handin, out):
    """``grade`` of one hand-in with the class's manifest, one exercise at a time: its report."""
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["grade", str(handin), "--manifest", str(base / "hw.manifest.json"), "--jobs", "1",
                     "--timeout", str(TIMEOUT), "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_a_symbolic_link_is_not_graded(graded, tmp_path):
    """A hand-in whose exercise file (or whole package) links to an answered copy, here
    the reference hand-in, standing for the teacher's installed package: that exercise
    gets 0 with the reason; the hand-in's real files are graded as usual."""
    _, base, *_ = graded
    layers = next(e for e in PLAN if e.file == "layers.py")
    losses = next(e for e in PLAN if e.file == "losses.py")
    answered = base / "submissions" / "reference" / "acmr_np"
    linked_file = tmp_path / "linked_file"
    shutil.copytree(base / "submissions" / "stubs2", linked_file)
    shutil.copy(answered / "losses.py", linked_file / "acmr_np" / "losses.py")  # real work
    (linked_file / "acmr_np" / "layers.py").unlink()
    (linked_file / "acmr_np" / "layers.py").symlink_to(answered / "layers.py")
    linked_package = tmp_path / "linked_package"
    linked_package.mkdir()
    (linked_package / "acmr_np").symlink_to(answered, target_is_directory=True)
    reason = "error: your layers.py is a symbolic link or lies outside the hand-in; hand in the file itself"
    for handin, losses_score in ((linked_file, losses.points), (linked_package, 0)):
        report = _grade(base, handin, tmp_path / f"{handin.name}.json")
        assert row(report, layers.key)["score"] == 0 and row(report, layers.key)["status"] == reason, report
        assert row(report, losses.key)["score"] == losses_score, report


TAMPER = """import glob
me = type(self).forward.__code__.co_filename
work = me.rsplit("/", 4)[0]
src = work + "/26-reference/tree/acmr_np/"
for f in ("layers.py", "losses.py", "optim.py", "model.py"):
    for dst in glob.glob(work + "/*-*/tree/acmr_np/" + f):
        if not dst.startswith(src) and dst != me:
            numpy.fromfile(src + f, dtype=numpy.uint8).tofile(dst)
raise NotImplementedError("Exercise 1: not yet")"""


def test_code_that_rewrites_the_other_exercises_folders_gains_nothing(graded, tmp_path):
    """Exercise 1 runs first and copies the reference files that exercise 26's folder holds
    (everything 26 builds on) over the other exercises' trees. Those exercises are not run
    (their trees no longer have the hashes the grader wrote), score 0 and say why."""
    _, base, *_ = graded
    handin = tmp_path / "tamper"
    solutions.handin(base / "hw", handin, {"linear_forward": TAMPER.splitlines()})
    report = _grade(base, handin, tmp_path / "tamper.json")
    assert report["score"] == 0, scores(report)
    assert row(report, "linear_backward")["status"].startswith(
        "error: its grading folder was changed by another process before it ran"), report


def _leaver(marker, how):
    """A body that leaves a process behind (``how``: "setsid" after a double fork, or
    "setpgid"), which writes ``marker`` 3 s later, then raises the exercise's stub."""
    escape = "o.setsid()" if how == "setsid" else "o.setpgid(0, 0)"
    return f"""import os as o, time
if o.fork() == 0:
    {escape}
    if o.fork() == 0:
        time.sleep(3)
        open({str(marker)!r}, "w").write("still here")
    o._exit(0)
raise NotImplementedError("Exercise 1: not yet")""".splitlines()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the child subreaper is Linux's")
@pytest.mark.parametrize("how", ["setsid", "setpgid"])
def test_a_process_left_behind_is_killed_and_reported(graded, tmp_path, how):
    """Processes a hand-in starts in a session or process group of their own outlive the
    exercise's kill; the grading server adopts and kills them, and the report says so."""
    _, base, *_ = graded
    handin, marker = tmp_path / "leaver", tmp_path / "marker.txt"
    solutions.handin(base / "hw", handin, {"linear_forward": _leaver(marker, how)})
    report = _grade(base, handin, tmp_path / "leaver.json")
    time.sleep(4)
    assert not marker.exists()
    assert any(re.match(r"the hand-in's code started \d+ process\(es\) that outlived their exercise", w)
               for w in report["warnings"]), report["warnings"]


def test_one_line_of_no_real_work_scores_nothing(graded, tmp_path):
    """Returning None from Linear.backward passes its "returns None when input_grad is
    False" check, and returning lambda from train_step its lambda check: such checks count
    only beside a check that needs real work."""
    _, base, *_ = graded
    handin = tmp_path / "trivial"
    solutions.handin(base / "hw", handin, {"linear_backward": ["return None"],
                                           "train_step": ["return {}, self.model.config.lam_at(progress)"]})
    report = _grade(base, handin, tmp_path / "trivial.json")
    for key in ("linear_backward", "train_step"):
        r = row(report, key)
        assert r["score"] == 0 and r["checks_passed"] == 0, r
        assert sum(c["passed"] for c in r["checks_detail"]) == 1 and any("count only beside" in n for n in r["notes"])


REWRITE_RESULTS = """import glob
import os
job = type(self).train_step.__code__.co_filename.rsplit("/", 3)[0]
for other in glob.glob(os.path.dirname(job) + "/*/result.json"):
    if not other.startswith(job + "/"):
        open(other, "a").write(" ")
raise NotImplementedError("Exercise 26: not yet")"""

KILL_SERVER = """import os
os.kill(os.getppid(), 9)"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork and the server's kill are POSIX")
@pytest.mark.parametrize("attack", ["rewrite results", "kill the server"])
def test_a_later_exercise_cannot_rewrite_earlier_results_unnoticed(graded, tmp_path, attack):
    """Exercise 26 runs last. Rewriting the result files the earlier exercises left makes
    them refused ("changed by another process after it ended"); killing the grading server
    before it has hashed everything makes the report say the grade cannot be trusted."""
    _, base, *_ = graded
    handin = tmp_path / "late"
    body = REWRITE_RESULTS if attack == "rewrite results" else KILL_SERVER
    solutions.handin(base / "hw", handin, {"linear_forward": "reference", "train_step": body.splitlines()})
    report = _grade(base, handin, tmp_path / "late.json")
    if attack == "rewrite results":
        r = row(report, "linear_forward")
        assert r["score"] == 0 and r["status"].startswith(
            "error: its results were changed by another process after it ended"), r
    else:
        assert any(w.startswith("the grading server did not finish normally") for w in report["warnings"]), report


def test_results_planted_before_an_exercise_runs_do_not_count(graded, tmp_path):
    """Exercise 1 runs first and plants, in exercise 2's folder, the right outputs (the
    teacher's expected values, as if computed from the reference its tree holds), a
    result.json saying "ok", and a folder where exercise 2's printed output goes (so its
    own process cannot start writing). The server clears those files before exercise 2
    runs, and a process that did not end normally never counts as a result."""
    from acmr_np.assignment.grade import Grader, scope_from_manifest
    _, base, *_ = graded
    grader = Grader(scope_from_manifest(str(base / "hw.manifest.json")))
    e2 = next(e for e in grader.exercises if e.key == "linear_backward")
    np.savez(tmp_path / "planted.npz", **grader.expected(e2)[1])
    body = f"""import os, shutil
job = type(self).forward.__code__.co_filename.rsplit("/", 3)[0]
dst = os.path.join(os.path.dirname(job), "{e2.number}-reference")
shutil.copy({str(tmp_path / "planted.npz")!r}, os.path.join(dst, "outputs.npz"))
open(os.path.join(dst, "result.json"), "w").write('{{"status": "ok"}}')
os.mkdir(os.path.join(dst, "output.txt"))
raise NotImplementedError("Exercise 1: not yet")"""
    handin = tmp_path / "planter"
    solutions.handin(base / "hw", handin, {"linear_forward": body.splitlines()})
    report = _grade(base, handin, tmp_path / "planter.json")
    assert report["score"] == 0, scores(report)


# ---- the gradebook ---------------------------------------------------------------------------

def test_the_gradebook_has_a_row_feedback_and_a_report_per_student(graded):
    reports, base, _, printed = graded
    results = base / "results"
    with open(results / "grades.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["student", *[f"{e.number} {e.key}" for e in PLAN], "total"]
    assert [r[0] for r in table[1:]] == sorted(reports) and len(table) == 17
    for r in table[1:]:
        assert float(r[-1]) == pytest.approx(reports[r[0]]["score"], abs=1e-3)
        assert float(r[-1]) == pytest.approx(sum(float(x) for x in r[1:-1]), abs=1e-2)
    fb = (results / "feedback" / "bugs_odd.md").read_text()
    assert "## Exercise 3: `Tanh.forward` (layers.py): 0.00 / 1" in fb
    assert f"Hint: {PLAN.by_key['tanh_forward'].hint}." in fb and "the output on a 5 x 7 input: difference" in fb
    assert sorted(p.name for p in results.iterdir()) == ["feedback", "grades.csv", "reports"]
    assert len([x for x in printed if x.startswith("[")]) == 16 and "/16] " in printed[0]
    assert not list(base.glob(".results.*"))


def test_grade_all_is_faster_than_grading_one_after_another(graded, tmp_path):
    reports, base, seconds, _ = graded
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "acmr_np.assignment", "grade", str(base / "submissions" / "alt1"),
                           "--manifest", str(base / "hw.manifest.json"), "--jobs", "1", "--json",
                           str(tmp_path / "alt1.json")], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1"))
    one = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    single = json.loads((tmp_path / "alt1.json").read_text())
    assert scores(single) == scores(reports["alt1"])
    assert f"total: {single['points']:.2f} / {single['points']:g} points (26 of 26 exercises done)" in proc.stdout
    print(f"\ngrade-all, 16 hand-ins: {seconds:.1f} s; one grade: {one:.1f} s (x16 = {16 * one:.1f} s)")
    assert seconds < 16 * one


def test_grade_all_refuses_an_existing_results_folder_and_bad_input(graded, capsys):
    _, base, _, _ = graded
    m = str(base / "hw.manifest.json")
    cases = [(["grade-all", str(base / "submissions"), "--manifest", m, "--out", str(base / "results")],
              "already exists; the gradebook is never written over"),
             (["grade-all", str(base / "nowhere"), "--manifest", m, "--out", str(base / "r2")], "no such folder"),
             (["grade-all", str(base / "submissions"), "--manifest", str(base / "hw"), "--out", str(base / "r2")],
              "cannot read the manifest"),
             (["grade", str(base / "submissions" / "alt0")], "give --manifest FILE"),
             (["grade", str(base / "submissions" / "alt0"), "--exercises", "99"], "unknown exercise '99'"),
             (["grade", str(base / "submissions" / "alt0"), "--manifest", m, "--exercises", "1"],
              "--exercises and --plan are for grading without a manifest"),
             (["grade", str(base / "submissions" / "alt0"), "--manifest", m, "--json", m], "already exists")]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "Traceback" not in err, err
    assert not (base / "r2").exists()


def test_a_grading_process_that_cannot_start_is_reported_not_hidden(graded, monkeypatch):
    """The server never runs hand-in code, but its machine can fail it (no NumPy on the
    children's path, say): every exercise says so, with the server's own last line."""
    from acmr_np.assignment import grade
    _, base, _, _ = graded
    stdlib = [p for p in isolate.child_path() if "site-packages" not in str(p) and "tests" not in str(p)]
    monkeypatch.setattr(isolate, "child_path", lambda: stdlib)
    grader = grade.Grader(grade.scope_from_selection(PLAN, ["3"]))
    (r,) = grader.grade(base / "submissions" / "alt0")["exercises"]
    assert r["status"] == ("error: the grading process stopped before this exercise finished "
                           "(ModuleNotFoundError: No module named 'numpy')"), r["status"]
