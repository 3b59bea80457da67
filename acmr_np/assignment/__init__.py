"""Classroom assignments: student copies without the answers, and grading a class.

    python -m acmr_np.assignment list                 # the exercises of the plan
    python -m acmr_np.assignment plan FILE            # a copy of the plan to edit
    python -m acmr_np.assignment make OUT [--plan FILE] [--exercises SEL | --week N] [--withhold SEL]
    python -m acmr_np.assignment check [N]            # in a student copy: the public checks
    python -m acmr_np.assignment grade HANDIN --manifest M [--json FILE]
    python -m acmr_np.assignment grade-all SUBMISSIONS --manifest M --out RESULTS

Modules, each one idea:

- plan.py: the exercises as data (plan.json), and selections such as "1-4,adam,week2";
- regions.py: the answers marked in the reference (# BEGIN SOLUTION ... # END SOLUTION,
  Derivation paragraphs) and the blocks a copy has instead;
- make.py: writing a student copy and the teacher's manifest next to it;
- probes.py, probes_model.py: what each exercise is run on, and what is compared;
  draw.py: the inputs of the losses and the model, kept off kinks (teacher-side only);
- judge.py: expected values from the reference, and the verdict of each check;
- check.py: the public checks a student runs in their copy;
- child.py, isolate.py: running a hand-in's functions in child processes;
- grade.py: grading one hand-in; gradebook.py: a whole class; report.py: what they write;
- cli.py: the command line.

docs/TEACHING.md describes the workflow end to end.
"""
