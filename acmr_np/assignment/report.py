"""What make and grade write for people: EXERCISES.md, the grade table, feedback, the CSV."""
import csv
import io

PACKAGE = "acmr_np"
DEPENDENCIES = ("Each exercise is graded with the teacher's reference for the exercises it builds on, so a "
                "mistake costs only the exercise it is in.")


def _points(x):
    return f"{x:g} point{'s' if x != 1 else ''}"


def student_readme(plan, handed, lines):
    """EXERCISES.md of a student copy: what to write, where, and how to check it."""
    total = sum(e.points for e in handed)
    out = [
        "# ACMR from scratch: exercises", "",
        f"This copy of `{PACKAGE}` has {len(handed)} pieces of code for you to write. Each sits "
        "between two lines like these, in the file and function named below:", "",
        "```python", "        # BEGIN EXERCISE 4", "        raise NotImplementedError(\"Exercise 4: <hint>\")",
        "        # END EXERCISE 4", "```", "",
        "Replace the `raise` line with your code and **keep the two marker lines**: the grader "
        "finds your code between them. The docstrings say what to compute; where a derivation "
        "was, the line `Derivation: yours to write` asks you to do it on paper first.", "",
        "Check an exercise at any time, from this folder (the one holding `acmr_np/`):", "",
        "```bash", "python -m acmr_np.assignment check 4     # one exercise, every check and its error",
        "python -m acmr_np.assignment check       # all of them", "python -m pytest -q                      # the same checks as tests",
        "```", "",
        "A gradient is compared with centered differences of your own forward pass (relative "
        "error, expect below 1e-7); a forward pass with values the reference computed for this "
        "copy. Passing them is a good sign, not the grade: grading uses other inputs.", "",
        "Work in the order of the numbers: a backward pass uses what its forward pass saved, and "
        "later exercises use earlier ones (the ACMR objective calls the layers and losses).", "",
        "| # | function | file:line | points | builds on |", "|---|---|---|---|---|",
    ]
    for e in handed:
        deps = ", ".join(str(d.number) for d in plan.needs(e)) or "-"
        out.append(f"| {e.number} | `{e.function}` | `{PACKAGE}/{e.file}:{lines[e.number]}` | "
                   f"{e.points:g} | {deps} |")
    out += ["", f"Total: {_points(total)}.", ""]
    for e in handed:
        out += [f"## Exercise {e.number}: `{e.function}` ({e.part}, {_points(e.points)})", "",
                f"What it teaches: {e.teaches}.", "", f"Hint: {e.hint}.", "",
                f"Check it: `python -m acmr_np.assignment check {e.number}`", ""]
    return "\n".join(out)


def format_grade(report):
    """The text table of one hand-in's grade."""
    lines = [f"grading {report['handin']} ({report['scope']})", DEPENDENCIES, "",
             f"{'#':>3}  {'function':<44} {'checks':>7} {'points':>11}  status"]
    for r in report["exercises"]:
        where = f"{r['file']}::{r['function']}"
        lines.append(f"{r['number']:>3}  {where:<44} {r['checks_passed']:>3}/{r['checks']:<3} "
                     f"{r['score']:>5.2f}/{r['points']:<5g}  {r['status']}")
    done = sum(r["status"] == "done" for r in report["exercises"])
    lines += ["", f"total: {report['score']:.2f} / {report['points']:g} points "
                  f"({done} of {len(report['exercises'])} exercises done)"]
    details = [(r, f) for r in report["exercises"] for f in r["failures"]]
    if details:
        lines += ["", "what failed:"]
        lines += [f"  exercise {r['number']}: {f}" for r, f in details[:40]]
        if len(details) > 40:
            lines.append(f"  ... and {len(details) - 40} more (the JSON report has them all)")
    notes = [(r, n) for r in report["exercises"] for n in r["notes"]]
    if notes:
        lines += ["", "notes:"] + [f"  exercise {r['number']}: {n}" for r, n in notes]
    for w in report["warnings"]:
        lines += ["", f"warning: {w}"]
    return "\n".join(lines)


def feedback(report, student):
    """feedback/<student>.md: per exercise, the score, what failed and the hint."""
    out = [f"# Feedback for {student}", "",
           f"Total: **{report['score']:.2f} / {report['points']:g}** points.", "", DEPENDENCIES, ""]
    for w in report["warnings"]:
        out += [f"> Note: {w}", ""]
    for r in report["exercises"]:
        out += [f"## Exercise {r['number']}: `{r['function']}` ({r['file']}): "
                f"{r['score']:.2f} / {r['points']:g}", "", f"Status: {r['status']}.", ""]
        if r["failures"]:
            out += ["What failed:", ""] + [f"- {f}" for f in r["failures"]] + [""]
        if r["notes"]:
            out += [f"- {n}" for n in r["notes"]] + [""]
        if r["status"] != "done":
            out += [f"Hint: {r['hint']}.", ""]
    return "\n".join(out)


def _number(x):
    """A score for the CSV: four decimals, without trailing zeros (2, 1.3333)."""
    return f"{x:.4f}".rstrip("0").rstrip(".")


def grades_csv(rows, numbers, exercises=()):
    """grades.csv: one row per student, one column per exercise (its score), the total."""
    keys = {e.number: e.key for e in exercises}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["student", *[f"{n} {keys[n]}" if n in keys else str(n) for n in numbers], "total"])
    for student, report in rows:
        scores = {r["number"]: r["score"] for r in report["exercises"]}
        w.writerow([student, *[_number(scores.get(n, 0.0)) for n in numbers], _number(report["score"])])
    return buf.getvalue()
