"""The command line: python -m acmr_np.assignment COMMAND (see the package docstring).

Bad input (a missing folder, an existing output, a plan that does not fit) is one line
on stderr and exit status 2; nothing is half-written. A student copy has only the
commands ``list`` and ``check``: the others are the teacher's, and their modules are
not in the copy.
"""
import argparse
import os
import sys

from .plan import AssignmentError

PROG = "python -m acmr_np.assignment"
TEACHER_ONLY = "is the teacher's command; a student copy has only 'list' and 'check'"


class UsageError(AssignmentError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UsageError(message)


def build_parser():
    p = _Parser(prog=PROG, description="Student copies without the answers, and grading a class.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    s = sub.add_parser("list", help="the exercises: number, key, function, points, week")
    s.add_argument("--plan", metavar="FILE", help="a plan file (default: the package's own)")
    s = sub.add_parser("plan", help="write a copy of the package's plan to edit")
    s.add_argument("out_file", metavar="FILE")
    s = sub.add_parser("make", help="write a student copy and, next to it, the teacher's manifest")
    s.add_argument("out_dir", metavar="OUT_DIR", help="a new (or empty) folder")
    s.add_argument("--plan", metavar="FILE", help="a plan file (default: the package's own)")
    s.add_argument("--exercises", nargs="+", metavar="SEL", help="what to hand out: numbers, ranges (1-4), "
                   "keys, weeks (week1, week1-2); default: every exercise")
    s.add_argument("--week", type=int, metavar="N", help="hand out week N's exercises, withhold later weeks'")
    s.add_argument("--withhold", nargs="+", metavar="SEL", help="exercises stubbed too but not handed out "
                   "(a later week's), so the copy holds none of their answers")
    s.add_argument("--manifest", metavar="FILE", help="where the manifest goes (default: OUT_DIR.manifest.json)")
    s = sub.add_parser("check", help="in a student copy: run the public checks of exercise N (default: all)")
    s.add_argument("numbers", nargs="*", type=int, metavar="N")
    for name in ("grade", "grade-all"):
        s = sub.add_parser(name, help="grade one hand-in" if name == "grade" else
                           "grade a folder of hand-ins, one sub-folder per student, in parallel")
        s.add_argument("handin" if name == "grade" else "submissions", metavar="HANDIN" if name == "grade"
                       else "SUBMISSIONS_DIR")
        s.add_argument("--manifest", metavar="FILE", help="the manifest make wrote (scope, points, hashes)")
        if name == "grade":
            s.add_argument("--exercises", nargs="+", metavar="SEL", help="without a manifest: what to grade")
            s.add_argument("--plan", metavar="FILE", help="without a manifest: the plan (default: the package's)")
            s.add_argument("--json", metavar="FILE", help="also write the report as JSON (a new file)")
        else:
            s.add_argument("--out", required=True, metavar="RESULTS_DIR", help="a new folder for the results")
        s.add_argument("--jobs", type=int, default=os.cpu_count() or 1, metavar="N",
                       help="processes at a time (default: the number of cores)")
        s.add_argument("--timeout", type=float, default=60.0, metavar="S", help="seconds per exercise (60)")
        s.add_argument("--memory", type=int, default=2048, metavar="MB", help="memory per exercise (2048 MiB)")
    return p


def _teacher(module):
    """Import a teacher-only module; in a student copy, say so in one line."""
    import importlib
    try:
        return importlib.import_module(f".{module}", __package__)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.endswith(f".{module}"):
            raise UsageError(f"'{sys.argv[1] if len(sys.argv) > 1 else module}' {TEACHER_ONLY}") from None
        raise


def _run(args):
    from . import plan as plans
    if args.command == "list":
        print(format_list(plans.load(args.plan)))
    elif args.command == "plan":
        from ..files import write_text
        if os.path.lexists(args.out_file):
            raise UsageError(f"{args.out_file} already exists; choose a new name")
        write_text(args.out_file, plans.load().dumps())
        print(f"wrote the plan to {args.out_file}: edit points, hints or weeks, then: "
              f"{PROG} make OUT --plan {args.out_file}")
    elif args.command == "check":
        from . import check
        return check.main(args.numbers)
    elif args.command == "make":
        make = _teacher("make")
        plan = plans.load(args.plan)
        handed, held = make.choose(plan, args.exercises, args.week, args.withhold)
        out, manifest = make.make(args.out_dir, plan, handed, held, args.manifest)
        print(f"wrote a student copy to {out}: exercises {_numbers(handed)}"
              + (f"; withheld (stubbed, not handed out): {_numbers(held)}" if held else ""))
        print(f"keep the manifest {manifest} (the teacher's: never hand it out); grade with: "
              f"{PROG} grade-all SUBMISSIONS --manifest {manifest} --out RESULTS")
    elif args.command == "grade":
        _check_limits(args)
        return _teacher("grade").main(args)
    else:
        _check_limits(args)
        return _teacher("gradebook").main(args)
    return 0


def _check_limits(args):
    """The grader's limits, refused in one line when they make no sense."""
    import math
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise UsageError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    if args.memory < 1:
        raise UsageError(f"--memory must be a positive number of MiB, got {args.memory}")
    if args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {args.jobs}")


def _numbers(exercises):
    return ", ".join(str(e.number) for e in exercises)


def format_list(plan):
    lines = [f"{'#':>3}  {'key':<22} {'function':<40} {'part':<16} {'points':>6} {'week':>4}"]
    for e in plan:
        lines.append(f"{e.number:>3}  {e.key:<22} {e.where:<40} {e.part:<16} {e.points:>6g} {e.week:>4}")
    lines.append(f"total: {sum(e.points for e in plan):g} points, about "
                 f"{sum(e.minutes for e in plan) / 60:.1f} hours (estimates)")
    return "\n".join(lines)


def main(argv=None):
    try:
        return _run(build_parser().parse_args(argv))
    except OSError as exc:  # any file-system failure: still one line
        reason = exc.strerror or str(exc) or type(exc).__name__
        print(f"{PROG}: error: {reason}" + (f": {exc.filename!r}" if exc.filename else ""), file=sys.stderr)
        return 2
    except AssignmentError as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
