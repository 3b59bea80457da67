"""Grading one hand-in. The grader owns the verdict; the hand-in only produces arrays.

For every exercise in the teacher's scope (the manifest make wrote, or --exercises),
the grader builds a package tree from the copy as handed out: the hand-in's file for
that exercise, with the reference put back for every other exercise's block (in that
file and in all others), so an exercise is graded on its own code and the parts it
builds on are the reference's: one wrong tanh costs the tanh exercise, nothing else.
Every other file is the teacher's version, whatever the hand-in has there.

A backward pass whose forward pass is an exercise too is also run with the student's
own forward part ("your forward"), and the better of the two counts: a backward that
reads what its own forward saved under other names is not failed for that.

Each tree runs in its own child process (isolate.py, child.py) on inputs drawn from the
grading seed; the expected values and numerical gradients come from the teacher's
reference, here; judge.py compares. A syntax error, an exception, an endless loop, a
crash or os._exit costs the exercises whose tree holds it, each with a one-line reason.
"""
import ast
import hashlib
import json
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import write_json
from . import judge, make, probes, regions
from .isolate import Outcome, prepare, run_jobs
from .plan import AssignmentError, PlanError, load, parse_selection
from .report import format_grade

PACKAGE = make.PACKAGE
SUSPICIOUS = re.compile(r"\b(open|exec|eval|compile|__import__|globals|breakpoint)\s*\(|\b(import|from)\s+(os|sys|"
                        r"importlib|subprocess|pathlib|shutil|inspect|ctypes|gc|builtins|runpy|pickle|socket|"
                        r"signal|resource|_acmr_probes)\b|__file__|sys\.modules|__builtins__|__subclasses__")


class GradeError(AssignmentError):
    """Bad input for grade: printed as one line, exit status 2."""


@dataclass
class Scope:
    plan: object
    numbers: list
    withheld: list
    seed: int
    files: dict      # {relative path: sha256} of the copy as handed out ({} without a manifest)
    source: str


def scope_from_manifest(path):
    try:
        m = make.read_manifest(path)
    except make.MakeError as exc:
        raise GradeError(str(exc)) from None
    return Scope(m["plan"], list(m["exercises"]), list(m.get("withheld", [])), int(m["grading_seed"]),
                 dict(m["files"]), f"the scope of the manifest {path}")


def scope_from_selection(plan, selection, seed=0):
    chosen = parse_selection(plan, selection)
    return Scope(plan, [e.number for e in chosen], [], seed, {},
                 f"exercises {', '.join(str(e.number) for e in chosen)} (no manifest: unchanged files are "
                 f"judged against this version of the package)")


def find_package(handin):
    """The folder of a hand-in that holds acmr_np/: the hand-in itself, or its only
    sub-folder that does (a zip unpacked into a folder of its own)."""
    handin = Path(handin)
    if (handin / PACKAGE).is_dir():
        return handin
    inner = [p for p in handin.iterdir() if (p / PACKAGE).is_dir()] if handin.is_dir() else []
    return inner[0] if len(inner) == 1 else None


_IMPORT = re.compile(r"^[ \t]*from[ \t]+(\.|acmr_np\.?)(\w*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#]+)"
                     r"|^[ \t]*import[ \t]+acmr_np\.(\w+)", re.M)


def _imports(text):
    """The package modules a module imports: relative imports, or acmr_np.x (a text
    search, not a parse: it runs for every module of every tree)."""
    out = set()
    for dot, module, names, plain in _IMPORT.findall(text):
        if plain:
            out.add(plain)
        elif module:
            out.add(module)
        elif dot:
            out.update(n.split(" as ")[0].strip() for n in names.strip("()").replace("\n", " ").split(","))
    out.discard("")
    return out


class Grader:
    """Grades hand-ins against one scope; the reference's expected values are computed
    once and shared by every hand-in (grade-all)."""

    def __init__(self, scope, timeout=60.0, memory_mb=2048, jobs=1, root=make.ROOT):
        self.scope, self.plan = scope, scope.plan
        self.timeout, self.memory_mb, self.jobs = float(timeout), int(memory_mb), max(1, int(jobs))
        try:
            sources = make.package_sources(root)
            where = make.locate(self.plan, sources)
            self.template = make.template(self.plan, scope.numbers + scope.withheld, set(scope.withheld), sources)
        except (make.MakeError, regions.RegionError) as exc:
            raise GradeError(f"the plan does not fit this version of the package: {exc}") from None
        self.exercises = [self.plan.by_number[n] for n in scope.numbers]
        self.answers = {n: sources[f"{PACKAGE}/{self.plan.by_number[n].file}"].splitlines()[r.start:r.end + 1]
                        for n, r in where.items()}
        self.resolved = {rel: regions.splice(t, {n: self.answers[n] for n in regions.exercise_blocks(t)[0]})[0]
                         for rel, t in self.template.items()}
        self.table = probes.table()
        self.warnings = []
        mine = {rel: make.sha256(t) for rel, t in self.template.items()}
        if scope.files and any(scope.files.get(rel) != h for rel, h in mine.items()):
            self.warnings.append("the package has changed since make wrote this copy: it is graded against "
                                 "the current reference")
        self.digests = scope.files or mine
        self._expected, self._imports = {}, {}

    def imports(self, text):
        if text not in self._imports:
            self._imports[text] = _imports(text)
        return self._imports[text]

    def expected(self, e):
        """(inputs, expected values) of exercise e: drawn from the grading seed, computed
        with the teacher's reference in this process, once."""
        if e.number not in self._expected:
            probe, ref = self.table[e.key], probes.Package()
            inp = probe.inputs(np.random.default_rng([self.scope.seed, e.number]), ref)
            self._expected[e.number] = (inp, judge.expected(probe, ref, inp))
        return self._expected[e.number]

    def prepare(self):
        for e in self.exercises:
            self.expected(e)

    # ---- the trees -------------------------------------------------------------------
    def variants(self, e):
        partner = self.plan.partner(e)
        return ["reference", "own"] if partner and partner.number in self.scope.numbers else ["reference"]

    def tree(self, e, student, variant):
        """({relative path: text}, line map of the exercise's file) for one job, or a
        str: why it cannot run."""
        rel = f"{PACKAGE}/{e.file}"
        blocks, problems = regions.exercise_blocks(student)
        if e.number not in blocks:
            why = next((p for p in problems if f"EXERCISE {e.number}'" in p), "")
            return (f"the lines '# BEGIN EXERCISE {e.number}' and '# END EXERCISE {e.number}' are not both in "
                    f"your {e.file}" + (f" ({why})" if why else "") + ": the grader finds your code between them")
        keep = {e.number}
        partner = self.plan.partner(e)
        if variant == "own" and partner:
            keep.add(partner.number)
        hold = {x.number for x in self.plan.same_function(e)} if e.part == "forward" else set()
        choices = {}
        for n in blocks:
            if n in hold:  # the rest of a loss function: not run while its forward part is graded
                choices[n] = regions.raise_lines(f"Exercise {n}: held back while exercise {e.number} is graded", "")
            elif n not in keep and n in self.answers:
                choices[n] = self.answers[n]
        text, line_map = regions.splice(student, choices)
        try:
            ast.parse(text)
        except SyntaxError as exc:
            line = line_map[exc.lineno - 1] if exc.lineno and exc.lineno <= len(line_map) else None
            return f"SyntaxError: {exc.msg} (your {e.file}" + (f", line {line})" if line else ")")
        files = dict(self.resolved, **{rel: text})
        needed, todo = {"__init__"}, [*self.table[e.key].modules, e.file[:-3]]
        while todo:
            m = todo.pop()
            if m not in needed and f"{PACKAGE}/{m}.py" in files:
                needed.add(m)
                todo.extend(self.imports(files[f"{PACKAGE}/{m}.py"]))
        return {f"{PACKAGE}/{m}.py": files[f"{PACKAGE}/{m}.py"] for m in needed}, line_map

    # ---- one hand-in -----------------------------------------------------------------
    def grade(self, handin):
        """The report (a dict) of one hand-in; never raises for what a hand-in contains."""
        t0 = time.monotonic()
        root = find_package(handin)
        warnings = list(self.warnings)
        if root is None:
            rows = [self._row(e, [], "error", f"no {PACKAGE}/ folder in the hand-in") for e in self.exercises]
            return self._report(handin, rows, warnings + [f"no {PACKAGE}/ folder in {handin}"], t0)
        texts, reasons = {}, {}
        inside = Path(handin).resolve()
        for e in self.exercises:
            rel = f"{PACKAGE}/{e.file}"
            path = root / rel
            # a link could point at the teacher's own (answered) package on this machine
            if path.is_symlink() or not path.resolve().is_relative_to(inside):
                reasons[rel] = (f"your {e.file} is a symbolic link or lies outside the hand-in; "
                                f"hand in the file itself")
                continue
            try:
                texts[rel] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reasons[rel] = f"your {e.file} could not be read ({getattr(exc, 'strerror', None) or exc})"
        warnings += self._changed(root, texts)
        with tempfile.TemporaryDirectory(prefix="acmr_grade_") as tmp:
            work = Path(tmp).resolve()
            left = []   # processes the hand-in's code left behind (killed by the grading server)
            outcomes = self._round(work, texts, reasons, [(e, "reference") for e in self.exercises], left)
            # A backward pass that fails next to the reference's forward part is run once
            # more with the student's own: it may read what that one saved, under its names.
            again = [(e, "own") for e in self.exercises if "own" in self.variants(e)
                     and not self._passes(e, outcomes[e.number, "reference"][0])]
            if again:
                outcomes.update(self._round(work, texts, reasons, again, left))
            if -1 in left:
                warnings.append("the grading server did not finish normally (killed by the hand-in's code?): "
                                "this hand-in's grade cannot be trusted; review it by hand")
            elif sum(left):
                warnings.append(f"the hand-in's code started {sum(left)} process(es) that outlived their "
                                f"exercise (killed by the grader): review this hand-in by hand")
        rows = []
        for e in self.exercises:
            per = [(v, *outcomes[e.number, v]) for v in self.variants(e) if (e.number, v) in outcomes]
            rows.append(self._judge(e, per, texts.get(f"{PACKAGE}/{e.file}", "")))
        return self._report(handin, rows, warnings, t0)

    def _round(self, work, texts, reasons, pairs, left):
        """Build the trees of (exercise, variant) pairs and run them in one child server:
        {(number, variant): (Outcome, line map of the exercise's file)}."""
        jobs, out = [], {}
        for e, v in pairs:
            rel = f"{PACKAGE}/{e.file}"
            built = reasons.get(rel) or self.tree(e, texts[rel], v)
            if isinstance(built, str):  # it cannot even run: a syntax error, missing markers
                out[e.number, v] = (Outcome("error", built, built.split(":")[0] if ":" in built else ""), None)
                continue
            files, line_map = built
            d = work / f"{e.number}-{v}"
            digests = {}
            for f, text in files.items():
                (d / "tree" / f).parent.mkdir(parents=True, exist_ok=True)
                data = text.encode("utf-8")
                (d / "tree" / f).write_bytes(data)
                if f.endswith(".py"):
                    digests[f] = hashlib.sha256(data).hexdigest()
            np.savez(d / "inputs.npz", **self.expected(e)[0])
            (d / "job.json").write_text(json.dumps({"key": e.key}), encoding="utf-8")
            jobs.append((f"{e.number}-{v}", d, digests))
            out[e.number, v] = (None, line_map)
        ran, left_behind = ({}, 0) if not jobs else \
            run_jobs(prepare(work, self.timeout, self.memory_mb, self.jobs), jobs, self.timeout, self.jobs)
        left.append(left_behind)
        for e, v in pairs:
            if out[e.number, v][0] is None:
                out[e.number, v] = (ran[f"{e.number}-{v}"], out[e.number, v][1])
        return out

    def _passes(self, e, outcome):
        want = self.expected(e)[1]
        return outcome.status == "ok" and all(judge.verdict(c, outcome.outputs, want).passed
                                              for c in self.table[e.key].checks)

    def _changed(self, root, texts):
        """Warnings for files that differ from the copy as handed out: the teacher's
        version is used for them. An exercise file changed outside its blocks keeps the
        change (the student's helpers and imports), with a note."""
        mine = {f"{PACKAGE}/{e.file}" for e in self.exercises}
        changed, outside = [], []
        for rel, digest in sorted(self.digests.items()):
            p = root / rel
            if rel in mine:
                if rel in texts and _outside_blocks(texts[rel]) != _outside_blocks(self.template.get(rel, "")):
                    outside.append(rel)
            elif not p.is_file():
                changed.append(f"{rel} (missing)")
            elif make.sha256(p.read_bytes()) != digest:
                changed.append(rel)
        out = []
        if changed:
            out.append("these files differ from the copy as handed out; the teacher's versions were used: "
                       + ", ".join(changed))
        if outside:
            out.append("changed outside the exercise blocks (the changes were kept and graded with the "
                       "exercises in them): " + ", ".join(outside))
        return out

    def _judge(self, e, per, student):
        inp, want = self.expected(e)
        probe = self.table[e.key]
        best = None
        for variant, outcome, line_map in per:
            if outcome.status != "ok":
                continue
            verdicts = [judge.verdict(c, outcome.outputs, want) for c in probe.checks]
            if best is None or sum(v.passed for v in verdicts) > sum(v.passed for v in best[1]):
                best = (variant, verdicts, outcome)
        notes = []
        block = _block_text(student, e.number)
        if block and SUSPICIOUS.search(block):
            notes.append(f"review this exercise's code by hand: it uses {SUSPICIOUS.search(block).group(0).strip()}")
        first = per[0][1]
        if best is None:
            reason = _reason(e, first, per[0][2])
            status = "not started" if first.kind == "NotImplementedError" and \
                first.message.startswith(f"NotImplementedError: Exercise {e.number}:") else "error"
            return self._row(e, [], status, reason, notes, first.printed)
        variant, verdicts, outcome = best
        if variant == "own":
            notes.append("graded with your own forward part: with the reference's, "
                         + (_reason(e, first, per[0][2]) if first.status != "ok" else "fewer checks passed"))
        failures = [f"{v.label}: " + (f"{v.measure} {v.error:.1e} (limit {v.limit:.0e})" if v.error == v.error
                                      else v.note) for v in verdicts if not v.passed]
        explain = getattr(probe, "explain", None)
        if failures and explain and explain(outcome.outputs, inp):
            notes.append(explain(outcome.outputs, inp))
        return self._row(e, verdicts, "done" if not failures else "failing", "", notes, outcome.printed, failures)

    def _row(self, e, verdicts, status, reason="", notes=(), printed="", failures=()):
        """One exercise's line of the report. status: done, failing, not started, error;
        reason: for an error, the one line that says what stopped the code."""
        checks = self.table[e.key].checks
        n = len(checks)
        # a check that one line of no real work passes counts only beside real work
        real = any(v.passed and c.alone for v, c in zip(verdicts, checks))
        passed = sum(v.passed and (c.alone or real) for v, c in zip(verdicts, checks))
        if not real and any(v.passed for v in verdicts):
            notes = [*notes, "the checks passed here (" + ", ".join(v.label for v in verdicts if v.passed)
                     + ") count only beside one of the others"]
        return {"number": e.number, "key": e.key, "file": e.file, "function": e.function, "points": e.points,
                "checks": n, "checks_passed": passed, "score": e.points * passed / n,
                "status": f"error: {reason}" if status == "error" else status,
                "failures": list(failures) if failures else [reason] if status == "error" else [],
                "checks_detail": [{"check": v.label, "passed": v.passed, "error": v.error if v.error == v.error
                                   else None, "limit": v.limit, "measure": v.measure, "note": v.note}
                                  for v in verdicts],
                "notes": list(notes), "hint": e.hint, "printed": printed,
                "graded_with_reference_for": [d.number for d in self.plan.needs(e)]}

    def _report(self, handin, rows, warnings, t0):
        return {"handin": str(handin), "scope": self.scope.source, "exercises": rows,
                "score": sum(r["score"] for r in rows), "points": sum(r["points"] for r in rows),
                "warnings": warnings, "seconds": round(time.monotonic() - t0, 2)}


def _reason(e, outcome, line_map):
    """One line: what stopped the exercise's code, at the student's own line number."""
    msg = " ".join(outcome.message.split())[:300]
    if outcome.where and line_map and outcome.where[0] == f"{PACKAGE}/{e.file}":
        line = outcome.where[1]
        mapped = line_map[line - 1] if 0 < line <= len(line_map) else None
        if mapped:
            msg += f" (your {e.file}, line {mapped})"
    return msg


def _block_text(text, number):
    blocks, _ = regions.exercise_blocks(text)
    if number not in blocks:
        return ""
    b, e = blocks[number]
    return "\n".join(text.splitlines()[b + 1:e])


def _outside_blocks(text):
    blocks, _ = regions.exercise_blocks(text)
    return regions.splice(text, {n: ["#"] for n in blocks})[0]


def check_json_target(path):
    """Refuse a --json FILE that exists (never written over) or cannot be written, before grading."""
    target = Path(path)
    if target.exists() or target.is_symlink():
        raise GradeError(f"{target} already exists; a report is never written over a file, choose a new name")
    if not target.parent.is_dir():
        raise GradeError(f"cannot write the report to {target}: no folder {target.parent}")


def scope_from_args(args):
    if args.manifest:
        if getattr(args, "exercises", None) or getattr(args, "plan", None):
            raise GradeError("--exercises and --plan are for grading without a manifest; "
                             "with --manifest, the manifest says what is graded")
        return scope_from_manifest(args.manifest)
    if getattr(args, "exercises", None):
        try:
            return scope_from_selection(load(getattr(args, "plan", None)), args.exercises)
        except PlanError as exc:
            raise GradeError(str(exc)) from None
    raise GradeError("give --manifest FILE (the manifest make wrote next to the copy) or --exercises SEL")


def main(args):
    """``grade HANDIN``: print the report; exit status 0 whatever the score."""
    if args.json:
        check_json_target(args.json)
    if not Path(args.handin).is_dir():
        raise GradeError(f"{args.handin}: no such folder")
    grader = Grader(scope_from_args(args), args.timeout, args.memory, args.jobs)
    report = grader.grade(args.handin)
    print(format_grade(report))
    if args.json:
        check_json_target(args.json)  # again: grading took a while
        try:
            write_json(args.json, report)
        except OSError as exc:
            raise GradeError(f"cannot write the report to {args.json}: {exc.strerror or exc}") from None
        print(f"report written to {args.json}")
    return 0
