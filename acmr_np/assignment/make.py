"""Writing a student copy without the answers, and the teacher's manifest beside it.

The copy is the package with every marked answer of the chosen exercises replaced (see
regions.py), and of the withheld ones too (a later week's), so a week's copy carries
no answer of a future week. It also holds:

- ``acmr_np/assignment/`` with only what a student needs: ``check`` and ``list``, the
  copy's own plan.json (its exercises and hints) and public.npz (the public checks'
  inputs and expected values, numbers computed here from the reference);
- ``tests/test_exercises.py``: the public checks as pytest tests, no reference code;
- ``EXERCISES.md``, a short README.md of its own, and setup.py, pyproject.toml, LICENSE so
  that it installs.

Left out: the package's own tests and tutorials (they contain answers), the grader,
and the modules that hold an answer in other words (ANSWER_MODULES). The fast path
(fast.py) runs the textbook code instead (FAST_PATH): its blocked optimiser steps and
training step would be the answers of exercises in optim.py and trainer.py.

The manifest (``OUT.manifest.json``, next to the copy and never inside it) is the
teacher's: the plan, which exercises were handed out and withheld, the grading seed
(hidden inputs), and a SHA-256 of every file of the copy as handed out.
"""
import hashlib
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..files import atomic_write, write_json
from . import judge, probes, regions
from .plan import AssignmentError, PlanError

PACKAGE_DIR = Path(__file__).resolve().parents[1]
ROOT = PACKAGE_DIR.parent
PACKAGE = PACKAGE_DIR.name
TOP_FILES = ("setup.py", "pyproject.toml", "LICENSE")  # a copy's README.md is its own (COPY_README)
COPY_README = """# acmr_np: a classroom copy

This folder is a student copy of acmr_np (Adversarial Cross-Modal Retrieval, ACM MM 2017,
from scratch in NumPy): some functions are yours to write, and `EXERCISES.md` lists
them, with their points and hints. Until an exercise is done, what uses it stops with
its hint ("Exercise N: ...").

```bash
pip install -e .                                   # from this folder
python -m acmr_np.assignment check                 # every exercise's public checks
python -m acmr_np.assignment check 3               # one exercise, each check and what to expect
python -m pytest -q                                # the same checks, as tests
```

Run them from this folder: they check the acmr_np they find, and `check` prints which.
Your teacher grades the copy you hand back with hidden inputs of their own.
"""
# modules that hold an answer in other words: softmax regression by hand, and the label
# losses' derivation of the softmax cross-entropy's gradient (the softmax exercises' answers)
ANSWER_MODULES = ("posterior.py", "baselines.py", "label_losses.py")
STUDENT_TOOLS = ("__init__.py", "__main__.py", "cli.py", "plan.py", "probes.py", "probes_model.py",
                 "judge.py", "check.py")
PUBLIC_SEED = 20170801          # the public checks' inputs; grading draws its own (manifest)
FAST_NOTE = "# (a student copy runs the textbook code here: the fast version holds answers)"
FAST_PATH = {  # fast.py function -> its body in a student copy
    "SGD.step": ["super().step(grads)"],
    "Adam.step": ["if self.weight_decay:",
                  "    raise NotImplementedError(\"fast.Adam's weight decay is not part of a student copy\")",
                  "return super().step(grads)"],
    "FastTrainer.make_optimizers": ["super().make_optimizers()"],
    "_make_fused": ["raise NotImplementedError(\"fast.py's fused GPU kernels are not part of a student copy\")"],
    "Adam._fused_step": ["raise NotImplementedError(\"fast.py's fused GPU kernels are not part of a student copy\")"],
    "FastTrainer.train_step": ["return super().train_step(img, txt, labels, noise, progress)"],
}
MANIFEST_FORMAT = "acmr_np assignment manifest"
STUDENT_TESTS = '''"""The public checks of this copy's exercises, one test each.

python -m acmr_np.assignment check N prints one exercise's checks in detail."""
import pytest

from acmr_np.assignment import check

EXERCISES = check.copy_plan().exercises


@pytest.mark.parametrize("number", [e.number for e in EXERCISES],
                         ids=[f"{e.number}-{e.key}" for e in EXERCISES])
def test_exercise(number):
    result = check.run(number)
    assert result.passed, result.text
'''


class MakeError(AssignmentError):
    """Bad input for make: printed as one line, exit status 2."""


def sha256(data):
    return hashlib.sha256(data if isinstance(data, bytes) else data.encode("utf-8")).hexdigest()


def package_sources(root=ROOT):
    """{path relative to the root: text} of every module of the package, the
    assignment tools excluded (a copy gets its own selection of them)."""
    base = Path(root) / PACKAGE
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8")
            for p in sorted(base.rglob("*.py")) if "__pycache__" not in p.parts
            and p.relative_to(base).parts[0] != "assignment"}


def locate(plan, sources):
    """{exercise number: Region} in the reference, every marked region accounted for:
    by an exercise of the plan (a function's regions in the order forward, backward), or
    by FAST_PATH. Anything else is an error naming the file and line."""
    found, claimed = {}, set()
    for rel, text in sources.items():
        name = rel.split("/", 1)[1]
        by_function = {}
        for r in regions.solution_regions(text, rel):
            by_function.setdefault(r.function, []).append(r)
        regions.derivations(text, rel)  # raises for a paragraph outside a function's docstring
        for function, regs in by_function.items():
            mine = [e for e in plan if e.file == name and e.function == function]
            if name == "fast.py" and function in FAST_PATH and not mine:
                claimed.add((rel, function))
                continue
            mine.sort(key=lambda e: ("forward", "update", "forward+backward", "backward").index(e.part))
            if len(mine) != len(regs):
                raise MakeError(f"{rel}: {function} has {len(regs)} marked region(s) but the plan has "
                                f"{len(mine)} exercise(s) for it")
            found.update({e.number: r for e, r in zip(mine, regs)})
    missing = [e for e in plan if e.number not in found]
    if missing:
        e = missing[0]
        raise MakeError(f"exercise {e.number} ({e.key}): no marked region (# BEGIN SOLUTION) in "
                        f"{PACKAGE}/{e.file}::{e.function}")
    unknown = sorted(set(plan.by_key) - set(probes.table()))
    if unknown:
        raise MakeError(f"exercise {plan.by_key[unknown[0]].number} ({unknown[0]}): no probe checks it; a new "
                        f"exercise needs one in acmr_np/assignment/probes.py")
    return found


def template(plan, stubbed, later, sources):
    """The package files of a copy, {relative path: text}: the regions of ``stubbed``
    exercises (numbers; ``later`` the withheld among them) replaced by blocks that raise
    with the hint, their functions' Derivation paragraphs cut, fast.py on the textbook path."""
    where = locate(plan, sources)
    out = {}
    for rel, text in sources.items():
        name = rel.split("/", 1)[1]
        if name in ANSWER_MODULES:
            continue
        edits, mine = [], [plan.by_number[n] for n in stubbed if plan.by_number[n].file == name]
        for e in mine:
            r = where[e.number]
            body = regions.raise_lines(e.message(later=e.number in later), r.indent)
            edits.append((r.start, r.end + 1, regions.block_lines(e.number, body, r.indent)))
        for p in regions.derivations(text, rel):
            numbers = sorted(e.number for e in mine if e.function == p.function)
            if numbers:
                edits.append((p.start, p.end, [regions.derivation_placeholder(numbers, p.indent)]))
        if name == "fast.py":
            for r in regions.solution_regions(text, rel):
                if r.function in FAST_PATH:
                    edits.append((r.start, r.end + 1, [r.indent + FAST_NOTE]
                                  + [r.indent + line for line in FAST_PATH[r.function]]))
        out[rel] = regions.replace_lines(text, edits)
    return out


def choose(plan, exercises=None, week=None, withhold=None):
    """(handed out, withheld): Exercise lists. ``week`` hands out that week's exercises
    and withholds every later week's; a handed-out exercise may not build on a withheld one."""
    from .plan import parse_selection
    if week is not None:
        if exercises:
            raise MakeError("give --week or --exercises, not both")
        handed = [e for e in plan if e.week == week]
        if not handed:
            raise MakeError(f"no exercise of week {week} in the plan (weeks: "
                            f"{', '.join(str(w) for w in sorted({e.week for e in plan}))})")
        held = [e for e in plan if e.week > week]
    else:
        handed = parse_selection(plan, exercises) if exercises else list(plan)
        held = []
    held = sorted({e.number: e for e in held + parse_selection(plan, withhold or [])}.values(), key=lambda e: e.number)
    both = [e.number for e in handed if e in held]
    if both:
        raise MakeError(f"exercise {both[0]} is both handed out and withheld")
    for e in handed:
        for d in plan.needs(e):
            if d in held:
                raise MakeError(f"exercise {e.number} ({e.key}) builds on exercise {d.number} ({d.key}), which is "
                                f"withheld: hand it out too, or withhold {e.number} as well")
    return handed, held


def public_data(plan, handed, ref=None):
    """{name: array} of public.npz: for each exercise, its public inputs and the
    reference's values for its value checks (numbers only: no code)."""
    ref = ref or probes.Package()
    table, out = probes.table(), {}
    for e in handed:
        probe = table[e.key]
        inp = probe.inputs(np.random.default_rng([PUBLIC_SEED, e.number]), ref)
        want = judge.expected(probe, ref, inp, gradients=False)
        out.update({f"{e.key}/in/{k}": np.asarray(v) for k, v in inp.items()})
        out.update({f"{e.key}/want/{k}": v for k, v in want.items()})
    return out


def _check_target(out, manifest):
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MakeError(f"{out} already exists and is not an empty folder; choose a new one")
    if manifest.exists() or manifest.is_symlink():
        raise MakeError(f"{manifest} already exists; a manifest is never written over, choose a new one")
    for target in (out, manifest):
        above = next((p for p in target.absolute().parents if p.exists()), None)
        if above is not None and not above.is_dir():
            raise MakeError(f"cannot create {target}: {above} is not a folder")


def make(out_dir, plan, handed, held, manifest_path=None, root=ROOT):
    """Write the student copy to ``out_dir`` and the manifest next to it. Returns
    (copy path, manifest path). Both are built under temporary names and renamed into
    place: an interrupted make leaves neither half-written."""
    out = Path(out_dir)
    manifest_path = Path(manifest_path) if manifest_path else out.parent / f"{out.name}.manifest.json"
    _check_target(out, manifest_path)
    try:
        sources = package_sources(root)
    except OSError as exc:
        raise MakeError(f"cannot read the package in {root}: {exc.strerror or exc}") from None
    stubbed = [e.number for e in handed + held]
    files = template(plan, stubbed, {e.number for e in held}, sources)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        manifest_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise MakeError(f"cannot create {out}: {exc.strerror or exc}") from None
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the copy is meant to be handed out
        _write_copy(tmp, files, plan, handed, root)
        digests = {p.relative_to(tmp).as_posix(): sha256(p.read_bytes())
                   for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {"format": MANIFEST_FORMAT, "version": 1, "copy": out.name, "plan": plan.to_json(),
                    "exercises": [e.number for e in handed], "withheld": [e.number for e in held],
                    "grading_seed": secrets.randbits(31), "files": digests,
                    "reference": sha256("".join(sources[k] for k in sorted(sources)))}
        write_json(tmp / ".manifest.json", manifest)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp / ".manifest.json", manifest_path)
        os.replace(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise MakeError(f"cannot write the student copy to {out}: {exc.strerror or exc}") from None
        raise
    return out, manifest_path


def _write_copy(tmp, files, plan, handed, root):
    root = Path(root)
    for rel, text in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text, encoding="utf-8")
    tools = tmp / PACKAGE / "assignment"
    tools.mkdir()
    for name in STUDENT_TOOLS:
        shutil.copy2(PACKAGE_DIR / "assignment" / name, tools / name)
    (tools / "plan.json").write_text(plan.subset([e.number for e in handed]).dumps(), encoding="utf-8")
    data = public_data(plan, handed)
    atomic_write(tools / "public.npz", lambda f: np.savez(f, **data))
    (tmp / "tests").mkdir()
    (tmp / "tests" / "test_exercises.py").write_text(STUDENT_TESTS, encoding="utf-8")
    for name in TOP_FILES:
        if (root / name).is_file():
            shutil.copy2(root / name, tmp / name)
    (tmp / "README.md").write_text(COPY_README, encoding="utf-8")  # setup.py reads it; the project's
    # README would point to modules, tutorials and tests a copy does not hold
    lines = {}
    for e in handed:  # where each block ends up, for EXERCISES.md
        blocks, _ = regions.exercise_blocks(files[f"{PACKAGE}/{e.file}"])
        lines[e.number] = blocks[e.number][0] + 1
    from .report import student_readme
    (tmp / "EXERCISES.md").write_text(student_readme(plan, handed, lines), encoding="utf-8")


def read_manifest(path):
    """The manifest at ``path`` as a dict, checked enough to grade with."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise MakeError(f"cannot read the manifest {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise MakeError(f"{path}: not valid JSON; give the .manifest.json that make wrote") from None
    if not isinstance(obj, dict) or obj.get("format") != MANIFEST_FORMAT:
        raise MakeError(f"{path}: not a manifest of {PACKAGE} assignments (give the .manifest.json make wrote)")
    try:
        from .plan import from_json
        obj["plan"] = from_json(obj["plan"], f"{path} (its plan)")
    except (KeyError, PlanError) as exc:
        raise MakeError(str(exc) if isinstance(exc, PlanError) else f"{path}: no plan in it") from None
    return obj
