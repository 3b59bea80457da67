"""The classroom assignment: a student copy with stubbed functions, and its grading.

The copy must import; its graded checks must fail on the stubs; and they must pass
again, for the full score, once the reference bodies are put back."""
import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from acmr_np import assignment
from acmr_np.assignment import EXERCISES, PACKAGE, body_range, find_function, main, stub_source

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = {"Linear.backward", "Tanh.backward", "ReLU.backward", "Softmax.backward",
            "L2Normalize.backward", "GradientReversal.backward", "softmax_cross_entropy",
            "cross_entropy", "triplet_hinge", "pull_push", "l2_penalty", "Adam.step",
            "ACMR.loss_and_grads", "Trainer.train_step"}


def _grade_json(student, tmp_path, *extra):
    out = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.json"
    assert main(["grade", str(student), "--json", str(out), *extra]) == 0
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """A student copy with every exercise, made through the command line."""
    out = tmp_path_factory.mktemp("assignment") / "student"
    proc = subprocess.run([sys.executable, "-m", "acmr_np.assignment", "make", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"grade with: python -m acmr_np.assignment grade {out}" in proc.stdout
    return out


# ---- the exercise list -------------------------------------------------------------------

def test_exercises_cover_every_backward_the_grl_adam_and_the_training_step():
    assert REQUIRED <= {e.function for e in EXERCISES}
    assert [e.number for e in EXERCISES] == list(range(1, len(EXERCISES) + 1))
    assert len({e.key for e in EXERCISES}) == len(EXERCISES)
    for e in EXERCISES:
        assert e.checks and e.hint and e.teaches and e.points > 0 and e.minutes > 0, e.key
        assert all(u in assignment.BY_NUMBER and u != e.number for u in e.uses), e.key


def test_every_check_names_a_test_that_exists():
    files = sorted({c.split("::")[0] for e in EXERCISES for c in e.checks})
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           *files], cwd=ROOT, capture_output=True, text=True, timeout=300)
    collected = {line.strip() for line in proc.stdout.splitlines() if "::" in line}
    for e in EXERCISES:
        for check in e.checks:
            assert any(n == check or n.startswith(check + "[") for n in collected), \
                f"exercise {e.number} ({e.function}): no test {check}"


def test_reference_source_is_clean_and_every_exercise_can_be_stubbed():
    for e in EXERCISES:
        source = (ROOT / PACKAGE / e.file).read_text(encoding="utf-8")
        first, last = body_range(source, e.function, e.keep)
        body = "".join(source.splitlines(keepends=True)[first - 1:last])
        assert "NotImplementedError" not in body and "Exercise" not in body, e.function
        stub_source(source, e.function, e.message, e.keep)  # raises if the source changed shape
    for path in (ROOT / PACKAGE).glob("*.py"):
        if path.name != "assignment.py":
            assert 'NotImplementedError("Exercise' not in path.read_text(encoding="utf-8"), path


# ---- replacing a body ---------------------------------------------------------------------

SAMPLE = '''import math


class Box:
    """A box."""

    def area(self, w, h=2):  # the signature stays
        """Width times height.

        Multi-line docstring."""
        # a comment that goes with the body
        a = w * h

        return a

    def other(self):
        return 1


def scaled(x, *, k=3):
    if x < 0:
        raise ValueError("negative")
    y = x * k
    return math.sqrt(y)
'''


def test_stub_source_replaces_only_the_body():
    out = stub_source(SAMPLE, "Box.area", "Exercise 9: multiply")
    want = SAMPLE.replace('''        # a comment that goes with the body
        a = w * h

        return a
''', '''        raise NotImplementedError("Exercise 9: multiply")
''')
    assert out == want
    ns = {}
    exec(compile(out, "<stub>", "exec"), ns)
    with pytest.raises(NotImplementedError, match="Exercise 9: multiply"):
        ns["Box"]().area(1)
    assert ns["Box"]().other() == 1
    assert ns["Box"].area.__doc__ == "Width times height.\n\n        Multi-line docstring."


def test_stub_source_keeps_the_chosen_leading_statements():
    out = stub_source(SAMPLE, "scaled", "Exercise 3: " + "a long hint " * 12, keep="if x < 0")
    assert out.startswith(SAMPLE[:SAMPLE.index("    y = x * k")])
    assert "y = x * k" not in out and "math.sqrt" not in out
    ns = {}
    exec(compile(out, "<stub>", "exec"), ns)
    with pytest.raises(ValueError, match="negative"):
        ns["scaled"](-1)           # the kept input check still works
    with pytest.raises(NotImplementedError, match="Exercise 3: a long hint a long hint"):
        ns["scaled"](1)
    assert max(len(line) for line in out.splitlines()) <= 100


def test_stub_source_errors():
    with pytest.raises(assignment.AssignmentError, match="no function Box.volume"):
        stub_source(SAMPLE, "Box.volume", "x")
    with pytest.raises(assignment.AssignmentError, match="no body statement starts with 'z ='"):
        stub_source(SAMPLE, "scaled", "x", keep="z =")
    once = stub_source(SAMPLE, "scaled", "Exercise 1: x")
    with pytest.raises(assignment.AssignmentError, match="already raises NotImplementedError"):
        stub_source(once, "scaled", "Exercise 1: x")


# ---- the student copy ---------------------------------------------------------------------

def test_student_copy_layout(student):
    assert (student / PACKAGE / "__init__.py").is_file()
    assert (student / PACKAGE / "assignment.py").is_file()   # students can grade themselves
    assert (student / "tests" / "test_layers.py").is_file() and (student / "setup.py").is_file()
    assert not (student / "tests" / "test_tutorials.py").exists()
    assert not (student / "tests" / "test_assignment.py").exists()
    assert not (student / "tutorials").exists()               # the tutorials hold the answers
    assert not list(student.rglob("__pycache__"))
    manifest = json.loads((student / ".assignment.json").read_text())
    assert manifest["exercises"] == [e.number for e in EXERCISES]
    assert f"{PACKAGE}/layers.py" in manifest["sha256"]
    readme = (student / "EXERCISES.md").read_text()
    for e in EXERCISES:
        assert f"## Exercise {e.number}: `{e.function}`" in readme and e.checks[0] in readme


def test_stubs_keep_signature_docstring_and_every_other_line(student):
    for e in EXERCISES:
        ref = (ROOT / PACKAGE / e.file).read_text(encoding="utf-8")
        new = (student / PACKAGE / e.file).read_text(encoding="utf-8")
        ref_fn, new_fn = find_function(ast.parse(ref), e.function), find_function(ast.parse(new), e.function)
        assert ast.dump(ref_fn.args) == ast.dump(new_fn.args), e.function
        assert ast.get_docstring(ref_fn, clean=False) == ast.get_docstring(new_fn, clean=False), e.function
        last = new_fn.body[-1]
        assert isinstance(last, ast.Raise) and last.exc.func.id == "NotImplementedError", e.function
        assert ast.literal_eval(ast.Expression(last.exc.args[0])) == e.message
        # every line before the replaced part is unchanged (other stubs in the same file
        # come later or earlier, so compare up to this function's replaced part only)
        first, _ = body_range(ref, e.function, e.keep)
        ref_lines, new_lines = ref.splitlines(), new.splitlines()
        head = ref_lines[find_function(ast.parse(ref), e.function).lineno - 1:first - 1]
        at = new_fn.lineno - 1
        assert new_lines[at:at + len(head)] == head, e.function
    # files without exercises are byte-for-byte copies
    for name in ("gradcheck.py", "metrics.py", "triplets.py", "backend.py"):
        assert (student / PACKAGE / name).read_bytes() == (ROOT / PACKAGE / name).read_bytes()


def test_student_copy_imports_its_own_package(student):
    code = ("import acmr_np, acmr_np.layers, acmr_np.losses, acmr_np.optim, acmr_np.model, acmr_np.train;"
            "import numpy as np;"
            "print(acmr_np.__file__);"
            "t = acmr_np.layers.Tanh(); t.forward(np.zeros((1, 2)));\n"
            "try:\n    t.backward(np.ones((1, 2)))\nexcept NotImplementedError as e:\n    print('stub:', e)")
    env = dict(os.environ, PYTHONPATH=str(student), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "-c", code], cwd=student, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    where, stub = proc.stdout.splitlines()
    assert Path(where).resolve().is_relative_to(student.resolve())
    assert stub.startswith("stub: Exercise 2: ")


def test_graded_checks_fail_on_the_stubs_and_pass_with_the_reference(student, tmp_path, capsys):
    report = _grade_json(student, tmp_path)
    text = capsys.readouterr().out
    assert report["score"] == 0 and report["points"] == sum(e.points for e in EXERCISES)
    for row in report["exercises"]:
        assert row["checks_passed"] == 0 and row["checks"] >= 1, row
        assert row["status"].startswith(("not started", "blocked by")), row
        assert all(f["outcome"] == "failed" for f in row["failures"]), row
    assert f"total: 0.0 / {report['points']} points (0 of {len(EXERCISES)} exercises done)" in text
    assert not (student / ".pytest_cache").exists() and not list(student.rglob("__pycache__"))

    # put the reference bodies back: every check passes, full score
    restored = tmp_path / "restored"
    shutil.copytree(student, restored)
    for src in (ROOT / PACKAGE).glob("*.py"):
        shutil.copy2(src, restored / PACKAGE / src.name)
    report = _grade_json(restored, tmp_path)
    text = capsys.readouterr().out
    for row in report["exercises"]:
        assert row["status"] == "done" and row["checks_passed"] == row["checks"], row
    assert report["score"] == report["points"]
    assert f"total: {report['points']:.1f} / {report['points']} points ({len(EXERCISES)} of " in text


def test_a_subset_a_wrong_answer_and_grading_with_the_teachers_tests(tmp_path, capsys):
    out = tmp_path / "subset"
    assert main(["make", str(out), "--exercises", "2,grl", "adam", "14-14"]) == 0
    capsys.readouterr()
    assert json.loads((out / ".assignment.json").read_text())["exercises"] == [2, 11, 13, 14]
    shutil.copy2(ROOT / PACKAGE / "model.py", out / PACKAGE / "model.py")  # exercise 14 done right
    layers = (out / PACKAGE / "layers.py").read_text()
    assert "Exercise 2: " in layers and "Exercise 11: " in layers and "Exercise 1: " not in layers
    assert (out / PACKAGE / "losses.py").read_bytes() == (ROOT / PACKAGE / "losses.py").read_bytes()

    # a wrong Tanh.backward (the derivative forgotten), and a student who edited a test
    first, last = body_range(layers, "Tanh.backward")
    lines = layers.splitlines(keepends=True)
    lines[first - 1:last] = ["        return dout  # forgot the derivative\n"]
    (out / PACKAGE / "layers.py").write_text("".join(lines))
    test_file = out / "tests" / "test_layers.py"
    test_file.write_text(test_file.read_text() + "\n# edited\n")

    report = _grade_json(out, tmp_path)
    text = capsys.readouterr().out
    rows = {r["number"]: r for r in report["exercises"]}
    assert set(rows) == {2, 11, 13, 14}
    assert rows[2]["status"] == "failing" and rows[2]["score"] == 0
    assert rows[11]["status"] == "not started" and rows[13]["status"] == "not started"
    # right, but its checks run the missing GRL and the wrong tanh: the report says so
    assert rows[14]["status"] == ("blocked by exercise 11 (its checks run exercise 2, which fails: "
                                  "fix that first)"), rows[14]["status"]
    assert "exercise 2: tests/test_layers.py::test_smooth_activation_gradients[Tanh]: failed" in text
    assert report["changed_files"] == ["tests/test_layers.py"] and "warning:" in text

    # with the teacher's own tests the edited test file is not used, and not reported
    report = _grade_json(out, tmp_path, "--tests", str(ROOT / "tests"))
    assert report["changed_files"] == [] and report["tests"] == str((ROOT / "tests").resolve())
    assert {r["number"]: r["status"] for r in report["exercises"]}[2] == "failing"


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    for argv, message in [
        (["make", str(taken)], f"{taken} already exists and is not an empty folder"),
        (["make", str(tmp_path / "x"), "--exercises", "99"], "unknown exercise '99'"),
        (["grade", str(tmp_path / "nowhere")], "no acmr_np/ package there"),
        (["grade", str(taken)], "no acmr_np/ package there"),
        (["frobnicate"], "invalid choice"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, err)
    assert (taken / "keep.txt").read_text() == "mine" and len(list(taken.iterdir())) == 1
    assert not (tmp_path / "x").exists()


def test_paths_that_cannot_be_written_are_one_line_and_exit_2(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    student = tmp_path / "student"
    assert main(["make", str(student), "--exercises", "relu"]) == 0
    report = tmp_path / "report.json"
    report.write_text("an earlier report")
    capsys.readouterr()
    cases = [
        (["make", str(a_file / "x" / "y")], f"cannot create {a_file / 'x' / 'y'}: {a_file} is not a folder"),
        (["grade", str(student), "--json", str(tmp_path / "nowhere" / "r.json")],
         f"cannot write the report to {tmp_path / 'nowhere' / 'r.json'}: no folder"),
        (["grade", str(student), "--json", str(a_file / "r.json")], "cannot write the report to"),
        (["grade", str(student), "--json", str(report)], f"{report} already exists; the report is never "
                                                         f"written over a file"),
    ]
    if Path("/proc/self").is_dir():  # Linux: nothing can be created in /proc
        cases += [(["make", "/proc/xx/yy"], "cannot create /proc/xx/yy: "),
                  (["grade", str(student), "--json", "/proc/x/r.json"], "cannot write the report to /proc/x/r.json")]
    for argv, message in cases:
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert captured.err.count("\n") == 1 and message in captured.err, (argv, captured.err)
        assert "Traceback" not in captured.err
        if argv[0] == "grade":  # refused before any check ran
            assert captured.out == "", (argv, captured.out)
    assert report.read_text() == "an earlier report" and a_file.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "report.json", "student"]


def test_the_json_report_is_written_whole(tmp_path, capsys, monkeypatch):
    student = tmp_path / "student"
    assert main(["make", str(student), "--exercises", "relu"]) == 0
    report = _grade_json(student, tmp_path)
    assert report["points"] == 1 and report["exercises"][0]["status"] == "not started"
    assert "report written to" in capsys.readouterr().out
    assert not list(tmp_path.glob(".tmp-*"))  # written through a temporary file, renamed

    def disk_full(path, obj):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(assignment, "write_json", disk_full)
    target = tmp_path / "full.json"
    assert main(["grade", str(student), "--json", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot write the report to {target}: No space left on device" in err
    assert not target.exists()


def test_list_prints_every_exercise(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for e in EXERCISES:
        assert e.function in out and e.key in out


def test_a_copy_that_does_not_load_is_reported_not_crashed(tmp_path, capsys):
    out = tmp_path / "broken"
    assert main(["make", str(out), "--exercises", "relu"]) == 0
    layers = out / PACKAGE / "layers.py"
    layers.write_text(layers.read_text().replace("raise NotImplementedError(", "return dout +* (", 1))
    capsys.readouterr()
    report = _grade_json(out, tmp_path)
    (row,) = report["exercises"]
    assert row["status"] == "failing" and row["score"] == 0
    assert "could not load the tests" in row["failures"][0]["message"]
    assert "SyntaxError" in capsys.readouterr().out


# ---- what the checks catch ----------------------------------------------------------------

def _put_back(student, ex, edit=None, body=None):
    """Replace exercise ``ex``'s stub in a student copy with the reference body, changed by
    ``edit`` (old, new), or with ``body`` (source lines at the body's indentation)."""
    path = student / PACKAGE / ex.file
    copy = path.read_text(encoding="utf-8")
    first, last = body_range(copy, ex.function, ex.keep)
    if body is None:
        ref = (ROOT / PACKAGE / ex.file).read_text(encoding="utf-8")
        r_first, r_last = body_range(ref, ex.function, ex.keep)
        body = "".join(ref.splitlines(keepends=True)[r_first - 1:r_last])
        old, new = edit
        assert body.count(old) == 1, f"the reference {ex.function} changed: update this test ({old!r})"
        body = body.replace(old, new)
    lines = copy.splitlines(keepends=True)
    lines[first - 1:last] = [body]
    path.write_text("".join(lines), encoding="utf-8")


@pytest.mark.parametrize("edit, caught_by", [
    # L_imd without Eq. 2's factor 2: value and gradient consistent, so every gradient check passes
    (("l_imd, d_class_logits = 2 * l_imd, 2 * d_class_logits", "pass"), "L_imd"),
    # every row labelled modality 0 (images and texts alike)
    (("xp.concatenate([xp.zeros(B, xp.int64), xp.ones(B, xp.int64)])", "xp.zeros(2 * B, xp.int64)"),
     "L_adv"),
])
def test_wrong_loss_values_lose_points_in_exercise_14(edit, caught_by, tmp_path, capsys):
    ex = assignment.BY_KEY["acmr"]
    out = tmp_path / "copy"
    assert main(["make", str(out), "--exercises", str(ex.number)]) == 0
    _put_back(out, ex, edit=edit)
    capsys.readouterr()
    (row,) = _grade_json(out, tmp_path, "--tests", str(ROOT / "tests"))["exercises"]
    assert row["status"] == "failing" and row["score"] < ex.points, row
    values = [f for f in row["failures"] if "test_loss_values_against_an_independent_reference" in f["check"]]
    assert len(values) == 3 and all(caught_by in f["message"] for f in values), row["failures"]


def test_a_train_step_without_the_k_schedule_loses_points(tmp_path, capsys):
    ex = assignment.BY_KEY["train_step"]
    out = tmp_path / "copy"
    assert main(["make", str(out), "--exercises", str(ex.number)]) == 0
    _put_back(out, ex, body=(
        "        m = self.model\n"
        "        lam = m.config.lam_at(progress)\n"
        "        terms = m.loss_and_grads(img, txt, labels, noise, lam)\n"
        "        self.opt_emb.step(m.named('grads', m.EMBEDDING_PARTS))\n"
        "        self.opt_adv.step(m.named('grads', m.ADVERSARY_PARTS))  # every step: k ignored\n"
        "        self.step_count += 1\n"
        "        return terms, lam\n"))
    capsys.readouterr()
    (row,) = _grade_json(out, tmp_path, "--tests", str(ROOT / "tests"))["exercises"]
    assert row["status"] == "failing" and 0 < row["score"] < ex.points, row
    assert [f["check"] for f in row["failures"]] == \
        ["tests/test_model.py::test_training_changes_every_parameter_group_and_k_schedule",
         "tests/test_model.py::test_fast_trainer_is_the_textbook_trainer_bit_for_bit"]


def test_a_copy_with_one_stub_fails_only_the_tests_that_run_it(tmp_path, capsys):
    """The student's whole test suite, run in a copy with only the training step stubbed:
    every failure is one of the exercise's checks or a test that runs the stub (which
    grading reports as blocked); nothing else breaks (tests that need files the copy
    lacks, such as benchmarks/, skip)."""
    import xml.etree.ElementTree as ET

    ex = assignment.BY_KEY["train_step"]
    out = tmp_path / "copy"
    assert main(["make", str(out), "--exercises", str(ex.number)]) == 0
    capsys.readouterr()
    xml = tmp_path / "report.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"--junitxml={xml}", "-o", "junit_family=xunit1"], cwd=out,
                          env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"),
                          capture_output=True, text=True, timeout=600)
    assert xml.is_file(), proc.stdout[-2000:] + proc.stderr[-2000:]
    failed, skipped = {}, {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        node = f"{case.get('file')}::{case.get('name')}"
        for tag in ("failure", "error"):
            if case.find(tag) is not None:
                el = case.find(tag)
                failed[node] = (el.get("message") or "") + (el.text or "")
        if case.find("skipped") is not None:
            skipped[node] = case.find("skipped").get("message") or ""
    checks = {n for n in failed if any(n == c or n.startswith(c + "[") for c in ex.checks)}
    assert len(checks) == len(ex.checks), (sorted(checks), ex.checks)  # each check fails on the stub
    unrelated = {n: m[:400] for n, m in failed.items()
                 if n not in checks and f"Exercise {ex.number}: " not in m and ex.hint[-30:] not in m}
    assert not unrelated, unrelated
    bench = [n for n in skipped if n.startswith("tests/test_performance.py::test_benchmark")]
    assert bench and all("benchmarks/" in skipped[n] for n in bench), skipped
