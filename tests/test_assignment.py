"""Student copies without the answers: the markers, the plan, make, and the public checks.

The grader is tested in test_assignment_grading.py; its limits in
test_assignment_tolerances.py."""
import ast
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from acmr_np.assignment import make, plan as plans, regions
from acmr_np.assignment.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
import assignment_solutions as solutions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PLAN = plans.load()


def run(cwd, *args, env_extra=None):
    """``python -m acmr_np.assignment ARGS`` in ``cwd``, importing whatever acmr_np is there."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONDONTWRITEBYTECODE="1", OPENBLAS_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "acmr_np.assignment", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    """A student copy with every exercise, made through the command line."""
    out = tmp_path_factory.mktemp("copy") / "hw"
    proc = run(ROOT, "make", str(out), env_extra={"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert f"keep the manifest {out}.manifest.json" in proc.stdout
    return out


def texts_of(folder):
    out = {}
    for p in Path(folder).rglob("*"):
        if p.is_file() and p.suffix != ".npz":
            out[p] = p.read_text(encoding="utf-8")
    return out


# ---- the markers ---------------------------------------------------------------------------

def test_every_layer_and_loss_has_a_forward_and_a_backward_exercise():
    for cls in ("Linear", "Tanh", "ReLU", "Softmax", "L2Normalize", "GradientReversal"):
        assert {e.part for e in PLAN if e.function.startswith(cls + ".")} == {"forward", "backward"}, cls
    for fn in ("softmax_cross_entropy", "cross_entropy", "triplet_hinge", "pull_push", "l2_penalty"):
        assert sorted(e.part for e in PLAN if e.function == fn) == ["backward", "forward"], fn
    assert {"SGD.step", "Adam.step", "ACMR.loss_and_grads", "Trainer.train_step"} <= {e.function for e in PLAN}
    make.locate(PLAN, make.package_sources())  # every region has its exercise, every exercise its region


def test_stripping_the_answers_and_putting_them_back_gives_the_original_files():
    sources = make.package_sources()
    where = make.locate(PLAN, sources)
    copy = make.template(PLAN, [e.number for e in PLAN], set(), sources)
    restored = 0
    for rel, text in sources.items():
        if rel.split("/")[1] in make.ANSWER_MODULES:
            assert rel not in copy
            continue
        lines = text.splitlines()
        back = regions.splice(copy[rel], {n: lines[r.start:r.end + 1] for n, r in where.items()
                                          if f"acmr_np/{PLAN.by_number[n].file}" == rel})[0]
        edits = []
        ref_paragraphs = {p.function: p for p in regions.derivations(text, rel)}
        for i, line in enumerate(back.splitlines()):
            if line.strip().startswith("Derivation: yours to write"):
                fn = next(f for f, _, last, node in regions.functions(back) if node.lineno <= i + 1 <= last)
                p = ref_paragraphs[fn]
                edits.append((i, i + 1, lines[p.start:p.end]))
        for fn, first, last, node in regions.functions(back):  # the fast path's bodies
            if rel.endswith("fast.py") and fn in make.FAST_PATH:
                r = next(r for r in regions.solution_regions(text, rel) if r.function == fn)
                note = next(i for i in range(first - 1, last) if back.splitlines()[i].strip() == make.FAST_NOTE)
                edits.append((note, last, lines[r.start:r.end + 1]))
        back = regions.replace_lines(back, edits)
        assert back == text, rel
        restored += back != copy[rel]
    assert restored >= 6  # layers, losses, optim, model, trainer, fast


def test_the_reference_reads_like_a_textbook():
    """Markers are few and quiet: two lines per region, nothing else added."""
    for rel, text in make.package_sources().items():
        marks = [x for x in text.splitlines() if "SOLUTION" in x]
        assert all(x.strip() in (regions.BEGIN, regions.END) for x in marks), rel
    assert sum(len(regions.solution_regions(t)) for t in make.package_sources().values()) == \
        len(PLAN) + len(make.FAST_PATH)  # the exercises, and fast.py's bodies a copy replaces


# ---- the plan --------------------------------------------------------------------------------

def test_the_plan_file_round_trips(tmp_path, capsys):
    shipped = plans.DEFAULT.read_text(encoding="utf-8")
    assert PLAN.dumps() == shipped and plans.from_json(json.loads(shipped)) == PLAN
    assert main(["plan", str(tmp_path / "mine.json")]) == 0
    assert (tmp_path / "mine.json").read_text(encoding="utf-8") == shipped
    assert plans.load(tmp_path / "mine.json") == PLAN
    assert "make OUT --plan" in capsys.readouterr().out


def test_selections():
    pick = plans.parse_selection
    assert [e.number for e in pick(PLAN, ["1-3,tanh_backward", "week3"])] == [1, 2, 3, 4, 25, 26]
    assert [e.week for e in pick(PLAN, ["week1-2"])] == [1] * 12 + [2] * 12
    for bad in ("99", "week9", "nope", "3-1"):
        with pytest.raises(plans.PlanError, match=f"unknown exercise '{bad}'"):
            pick(PLAN, [bad])


def test_a_teachers_plan_changes_points_and_hints(tmp_path, capsys):
    data = json.loads(PLAN.dumps())
    tanh = next(x for x in data["exercises"] if x["key"] == "tanh_backward")
    tanh["points"], tanh["hint"] = 5, "think of cosh"
    (tmp_path / "mine.json").write_text(json.dumps(data), encoding="utf-8")
    assert main(["make", str(tmp_path / "hw"), "--plan", str(tmp_path / "mine.json"), "--exercises", "3,4"]) == 0
    layers = (tmp_path / "hw" / "acmr_np" / "layers.py").read_text(encoding="utf-8")
    assert 'raise NotImplementedError("Exercise 4: think of cosh")' in layers
    assert "Hint: think of cosh." in (tmp_path / "hw" / "EXERCISES.md").read_text(encoding="utf-8")
    assert "| 4 | `Tanh.backward` |" in (tmp_path / "hw" / "EXERCISES.md").read_text(encoding="utf-8")
    copy_plan = plans.load(tmp_path / "hw" / "acmr_np" / "assignment" / "plan.json")
    assert [e.number for e in copy_plan] == [3, 4] and copy_plan.by_number[4].points == 5
    manifest = make.read_manifest(tmp_path / "hw.manifest.json")
    assert manifest["plan"].by_number[4].points == 5 and manifest["exercises"] == [3, 4]
    assert main(["list", "--plan", str(tmp_path / "mine.json")]) == 0
    assert "total: 42 points" in capsys.readouterr().out


@pytest.mark.parametrize("change, message", [
    (lambda d: d["exercises"][0].update(points="2"), "exercise 1 (linear_forward): points must be a number"),
    (lambda d: d["exercises"][0].update(colour="red"), "unknown field 'colour'"),
    (lambda d: d["exercises"][1].update(number=1), "two exercises have the same number"),
    (lambda d: d["exercises"][0].update(builds_on=["linear_backward"]), "builds_on goes round in a circle"),
    (lambda d: d["exercises"][0].update(builds_on=["nope"]), "builds_on names 'nope'"),
    (lambda d: d["exercises"][-1].update(key="one_step"), "exercise 26 (one_step): no probe checks it"),
    (lambda d: d["exercises"][0].update(function="Linear.fwd"), "Linear.forward has 1 marked region(s) but the "
                                                                "plan has 0"),
    (lambda d: d.update(version=2), "plan version 2"),
])
def test_a_bad_plan_is_one_line(change, message, tmp_path, capsys):
    data = json.loads(PLAN.dumps())
    change(data)
    (tmp_path / "bad.json").write_text(json.dumps(data), encoding="utf-8")
    assert main(["make", str(tmp_path / "hw"), "--plan", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]


# ---- the copy --------------------------------------------------------------------------------

def test_no_answer_of_the_reference_is_anywhere_in_the_copy(copy):
    answers, excluded = solutions.answer_lines()
    # lines also in code the student is given ("self.t += 1", "else:", "return x"), or in a
    # module a copy leaves out (label_losses.py)
    assert len(excluded) <= 16, sorted(excluded)
    assert set(answers) == {e.key for e in PLAN} | {"fast path"}
    # every exercise keeps answer lines of its own to look for, but the identity ("return x")
    assert [k for k, v in answers.items() if not v] == ["grl_forward"]
    files = texts_of(copy)
    assert copy / "tests" / "test_exercises.py" in files and copy / "EXERCISES.md" in files
    for path, text in files.items():
        present = {x.strip() for x in text.splitlines()}
        for key, lines in answers.items():
            assert not lines & present, (key, path, sorted(lines & present)[:3])
    with zipfile.ZipFile(copy / "acmr_np" / "assignment" / "public.npz") as z:  # numbers only
        assert all(n.endswith(".npy") for n in z.namelist())
    for e in PLAN:  # every stub raises the exercise's own hint
        tree = ast.parse((copy / "acmr_np" / e.file).read_text(encoding="utf-8"))
        raises = [ast.literal_eval(n.exc.args[0]) for n in ast.walk(tree) if isinstance(n, ast.Raise)
                  and isinstance(n.exc, ast.Call) and getattr(n.exc.func, "id", "") == "NotImplementedError"
                  and n.exc.args and isinstance(n.exc.args[0], (ast.Constant, ast.JoinedStr))
                  and str(ast.literal_eval(n.exc.args[0])).startswith(f"Exercise {e.number}:")]
        assert raises == [f"Exercise {e.number}: {e.hint}"], e.key


def test_the_copy_holds_the_package_and_the_students_tools_only(copy):
    tools = sorted(p.name for p in (copy / "acmr_np" / "assignment").iterdir())
    assert tools == sorted(make.STUDENT_TOOLS + ("plan.json", "public.npz"))
    assert sorted(p.name for p in (copy / "tests").iterdir()) == ["test_exercises.py"]
    assert not (copy / "tutorials").exists() and not (copy / "docs").exists()
    assert not any((copy / "acmr_np" / m).exists() for m in make.ANSWER_MODULES)
    assert not list(copy.rglob("__pycache__")) and not list(copy.parent.glob(".hw.*"))
    manifest = json.loads((copy.parent / "hw.manifest.json").read_text())
    assert not (copy / "hw.manifest.json").exists() and not list(copy.rglob("*manifest*"))
    assert manifest["files"]["acmr_np/gradcheck.py"] == make.sha256((copy / "acmr_np/gradcheck.py").read_bytes())
    for command in (["make", "x"], ["grade", "."], ["grade-all", ".", "--out", "r"]):
        proc = run(copy, *command)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "is the teacher's command; a student copy has only 'list' and 'check'" in proc.stderr


def test_check_prints_each_error_and_what_to_expect(copy, tmp_path):
    proc = run(copy, "check", "4")
    assert proc.returncode == 1 and "it needs exercise 3 (Tanh.forward) first" in proc.stdout, proc.stdout
    proc = run(copy, "check", "3")
    assert proc.returncode == 1 and f"not started: Exercise 3: {PLAN.by_number[3].hint}" in proc.stdout
    bodies = solutions.reference_bodies()
    done = solutions.handin(copy, tmp_path / "mine", {"tanh_forward": "reference",
                                                     "tanh_backward": solutions.bodies("bug")["tanh_backward"]})
    proc = run(done, "check", "3", "4")
    assert proc.returncode == 1, proc.stdout
    lines = proc.stdout.splitlines()
    assert any("the output on a 5 x 7 input" in x and "difference 0.0e+00 from the stored values" in x
               and x.endswith("ok") for x in lines), proc.stdout
    bad = next(x for x in lines if x.strip().startswith("dL/dx"))
    assert "relative error" in bad and "(expect below 1e-07)  FAILED" in bad
    good = solutions.handin(copy, tmp_path / "good", {"tanh_forward": "reference", "tanh_backward": "reference"})
    proc = run(good, "check", "4")
    assert proc.returncode == 0, proc.stdout
    line = next(x for x in proc.stdout.splitlines() if x.strip().startswith("dL/dx"))
    assert float(line.split("relative error")[1].split()[0]) < 1e-8 and line.endswith("ok")
    assert not any(b.strip() in proc.stdout for n in (3, 4) for b in bodies[n] if b.strip())  # no answer shown
    assert proc.stdout.startswith(f"checking the acmr_np at {good / 'acmr_np'}\n")  # the copy itself
    (good / "acmr_np" / "assignment" / "public.npz").unlink()
    proc = run(good, "check", "4")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "public.npz is missing" in proc.stderr


def test_a_later_weeks_copy_alone_builds_on_reference_code(tmp_path, capsys):
    """A copy of exercises that build on others not handed out (week 3 alone): those stay
    reference code in the copy, and the copy's plan keeps only its own dependencies."""
    out = tmp_path / "hw3"
    assert main(["make", str(out), "--exercises", "25,26"]) == 0
    own = plans.load(out / "acmr_np" / "assignment" / "plan.json")
    assert [e.number for e in own] == [25, 26]
    assert own.by_key["train_step"].builds_on == ("acmr",) and own.by_key["acmr"].builds_on == ()
    # the layers (what 25 builds on) are the reference's, unchanged
    assert (out / "acmr_np" / "layers.py").read_text() == (ROOT / "acmr_np" / "layers.py").read_text()


def test_a_copy_for_two_weeks_withholds_the_third_and_passes_once_filled(tmp_path):
    out = tmp_path / "weeks12"
    proc = run(ROOT, "make", str(out), "--exercises", "week1-2", "--withhold", "week3",
               env_extra={"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert "withheld (stubbed, not handed out): 25, 26" in proc.stdout
    answers, _ = solutions.answer_lines()
    files = texts_of(out)
    for key in ("acmr", "train_step", "fast path"):
        for path, text in files.items():
            assert not answers[key] & {x.strip() for x in text.splitlines()}, (key, path)
    model = (out / "acmr_np" / "model.py").read_text(encoding="utf-8")
    assert "Exercise 25 (a later week's exercise, not this assignment's): " in model
    assert [e.number for e in plans.load(out / "acmr_np/assignment/plan.json")] == list(range(1, 25))
    filled = solutions.handin(out, tmp_path / "filled", {e.key: "reference" for e in PLAN if e.week <= 2})
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=filled,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "24 passed" in proc.stdout, proc.stdout[-2000:]


def test_a_filled_copy_trains_on_the_textbook_path(copy, tmp_path):
    """In a copy the fast path runs the textbook code the student wrote: training works."""
    filled = solutions.handin(copy, tmp_path / "filled", {e.key: "reference" for e in PLAN})
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    maps = []
    for where, extra in ((filled, {}), (ROOT, {"PYTHONPATH": str(ROOT)})):
        out = tmp_path / f"run{len(maps)}"
        proc = subprocess.run([sys.executable, "-m", "acmr_np.train", "--epochs", "1", "--out", str(out)],
                              cwd=where, env=dict(env, OPENBLAS_NUM_THREADS="1", **extra), capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        maps.append(json.loads((out / "metrics.json").read_text())["map_avg"])
    # the textbook path: the fast path's numbers up to rounding (Adam's folded bias corrections)
    assert abs(maps[0] - maps[1]) < 1e-3 and maps[0] > 0.15


@pytest.mark.parametrize("argv, message", [
    (["make", "{taken}"], "{taken} already exists and is not an empty folder"),
    (["make", "{tmp}/new", "--manifest", "{taken}/keep.txt"], "keep.txt already exists; a manifest is never"),
    (["make", "{tmp}/x", "--exercises", "99"], "unknown exercise '99'"),
    (["make", "{tmp}/x", "--week", "1", "--exercises", "1"], "give --week or --exercises, not both"),
    (["make", "{tmp}/x", "--week", "7"], "no exercise of week 7 in the plan (weeks: 1, 2, 3)"),
    (["make", "{tmp}/x", "--exercises", "25", "--withhold", "4"], "exercise 25 (acmr) builds on exercise 4"),
    (["make", "{tmp}/x", "--exercises", "4", "--withhold", "4"], "exercise 4 is both handed out and withheld"),
    (["make", "{taken}/keep.txt/x"], "keep.txt is not a folder"),
    (["plan", "{taken}/keep.txt"], "keep.txt already exists"),
    (["frobnicate"], "invalid choice"),
    (["grade", "{taken}", "--exercises", "1", "--timeout", "-1"], "--timeout must be a positive number"),
    (["grade", "{taken}", "--exercises", "1", "--timeout", "nan"], "--timeout must be a positive number"),
    (["grade", "{taken}", "--exercises", "1", "--memory", "0"], "--memory must be a positive number"),
    (["grade-all", "{taken}", "--manifest", "{taken}/keep.txt", "--out", "{tmp}/r", "--jobs", "0"],
     "--jobs must be at least 1, got 0"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    fmt = {"taken": str(taken), "tmp": str(tmp_path)}
    assert main([a.format(**fmt) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.format(**fmt) in err and "Traceback" not in err, err
    assert (taken / "keep.txt").read_text() == "mine" and len(list(taken.iterdir())) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_a_copy_has_its_own_readme_and_unfinished_code_says_so_in_one_line(copy, tmp_path):
    readme = (copy / "README.md").read_text(encoding="utf-8")
    assert readme.startswith("# acmr_np: a classroom copy") and "tutorials" not in readme
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-m", "acmr_np.train", "--epochs", "1", "--out", str(tmp_path / "r")],
                          cwd=copy, env=dict(env, OPENBLAS_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("python -m acmr_np.train: error: this copy's code is not finished: Exercise ")
    assert not (tmp_path / "r").exists()
