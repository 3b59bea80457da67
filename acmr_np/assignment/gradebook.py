"""Grading a class: one folder per student, several at a time, into a gradebook.

    python -m acmr_np.assignment grade-all SUBMISSIONS_DIR --manifest M --out RESULTS_DIR [--jobs N]

SUBMISSIONS_DIR holds one folder per student, named by the student's id, each holding
the student's copy (its acmr_np/ folder, or one folder that holds it: a zip unpacked
into a folder of its own). RESULTS_DIR must not exist; it gets

    grades.csv              student, one column per exercise (its score), total
    feedback/<student>.md   per exercise: the score, what failed, the hint
    reports/<student>.json  everything grade knows (per check: measured error and limit)

It is filled under a temporary name next to RESULTS_DIR and renamed when every hand-in
is graded: a complete gradebook or none. The reference's expected values are computed
once for the class; ``--jobs`` hand-ins (default: the number of cores) are graded at a
time, each in child processes of its own. A progress line is printed per hand-in.
"""
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from ..files import write_json, write_text
from .grade import GradeError, Grader, scope_from_args
from .report import feedback, grades_csv


def students(submissions):
    folder = Path(submissions)
    if not folder.is_dir():
        raise GradeError(f"{submissions}: no such folder (expected one folder per student)")
    found = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise GradeError(f"{submissions}: no student folders in it (expected one folder per student, "
                         f"named by the student's id)")
    return found


def _safe(grader, path):
    """A hand-in's report; a failure of the grader itself is reported, not raised, so
    that one hand-in cannot stop the class's gradebook."""
    try:
        return grader.grade(path)
    except Exception as exc:  # a bug of the grader: say so in this student's report
        rows = [grader._row(e, [], "error", f"the grader failed on this hand-in ({type(exc).__name__}: {exc}); "
                            f"grade it alone with: python -m acmr_np.assignment grade {path}")
                for e in grader.exercises]
        return grader._report(path, rows, [], time.monotonic())


def grade_all(submissions, out, grader, jobs, log=sys.stdout):
    """Grade every student folder of ``submissions`` into the new folder ``out``."""
    out = Path(out)
    if os.path.lexists(out):
        raise GradeError(f"{out} already exists; the gradebook is never written over, choose a new --out")
    if not out.parent.is_dir():
        raise GradeError(f"cannot create {out}: no folder {out.parent}")
    folders = students(submissions)
    t0 = time.monotonic()
    grader.prepare()  # the reference's values, once for the class
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise GradeError(f"cannot create {out}: {exc.strerror or exc}") from None
    try:
        tmp.chmod(0o755)
        (tmp / "feedback").mkdir()
        (tmp / "reports").mkdir()
        reports = {}
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = {pool.submit(_safe, grader, f): f.name for f in folders}
            for done, fut in enumerate(as_completed(futures), 1):
                name = futures[fut]
                report = reports[name] = fut.result()
                write_json(tmp / "reports" / f"{name}.json", report)
                write_text(tmp / "feedback" / f"{name}.md", feedback(report, name))
                errors = sum(r["status"].startswith("error") for r in report["exercises"])
                print(f"[{done}/{len(folders)}] {name}: {report['score']:.2f} / {report['points']:g} points"
                      + (f", {errors} exercise(s) whose code did not run" if errors else "")
                      + f" ({report['seconds']:.1f} s)", file=log, flush=True)
        numbers = [e.number for e in grader.exercises]
        write_text(tmp / "grades.csv", grades_csv(sorted(reports.items()), numbers, grader.exercises))
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, time.monotonic() - t0


def main(args):
    grader = Grader(scope_from_args(args), args.timeout, args.memory, jobs=1)
    out, seconds = grade_all(args.submissions, args.out, grader, args.jobs)
    print(f"graded {len(students(args.submissions))} hand-ins in {seconds:.1f} s with {args.jobs} at a time: "
          f"{out / 'grades.csv'}, {out / 'feedback'}/, {out / 'reports'}/")
    return 0
