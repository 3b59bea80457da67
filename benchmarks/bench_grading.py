"""How long grading a class takes: grade-all against one grade after another.

    python benchmarks/bench_grading.py [--handins 16] [--jobs N] [--serial K]

Makes a student copy in a temporary folder, builds hand-ins from it (in turn: the
reference, the three sets of other correct answers and the planted bugs of
tests/assignment_solutions.py, and untouched stubs), then times

- grade-all over all of them (--jobs at a time, default the number of cores), and
- ``python -m acmr_np.assignment grade`` on K of them (default all), one after another,
  each a fresh process as a teacher's shell loop would run it.

Prints both, per hand-in and in all (the serial total extrapolated to every hand-in
when K is smaller), and the machine's load before and after.
"""
import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import assignment_solutions as solutions  # noqa: E402
from acmr_np.assignment.cli import main  # noqa: E402


def build(base, n):
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["make", str(base / "hw")]) == 0
    kinds = ["reference", "alt0", "alt1", "alt2", "bug", "stubs"]
    everything = {k: "reference" for k in solutions.BUGS}
    for i in range(n):
        kind = kinds[i % len(kinds)]
        bodies = {} if kind == "stubs" else everything if kind == "reference" else solutions.bodies(kind)
        solutions.handin(base / "hw", base / "subs" / f"student{i:02d}_{kind}", bodies)
    return sorted((base / "subs").iterdir())


def main_(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--handins", type=int, default=16)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--serial", type=int, default=None, help="hand-ins graded one after another (default: all)")
    args = p.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        handins = build(base, args.handins)
        print(f"{len(handins)} hand-ins, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "acmr_np.assignment", "grade-all", str(base / "subs"), "--manifest",
                        str(base / "hw.manifest.json"), "--out", str(base / "results"), "--jobs", str(args.jobs)],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        together = time.monotonic() - t0
        k = args.serial if args.serial is not None else len(handins)
        t0 = time.monotonic()
        for h in handins[:k]:
            subprocess.run([sys.executable, "-m", "acmr_np.assignment", "grade", str(h), "--manifest",
                            str(base / "hw.manifest.json"), "--jobs", "1"], env=env, check=True,
                           stdout=subprocess.DEVNULL)
        serial = (time.monotonic() - t0) / max(1, k)
        print(f"grade-all --jobs {args.jobs}: {together:.1f} s ({together / len(handins):.2f} s per hand-in)")
        if k:
            print(f"grade, one after another ({k} timed): {serial:.2f} s per hand-in, "
                  f"{serial * len(handins):.1f} s for {len(handins)}")
        print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main_()
