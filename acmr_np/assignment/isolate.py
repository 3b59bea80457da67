"""Running hand-in code in child processes, and reading back what they produced.

``run_jobs`` starts child.py (``python -I -S -B``: no environment variables, no site
packages processed, no user folders) with a sys.path from ``child_path``: the standard
library and the site folders, where any folder holding the teacher's acmr_np (an
installed copy, an editable install's finder, the source checkout) is replaced by a
"shim" folder of links to everything else in it. So ``import acmr_np`` in a child can
only find the hand-in's copy; child.py checks that it did.

What comes back is data: one line per job from child.py (exit status, signal, timed
out), JOB/result.json (the exception, if any), JOB/outputs.npz (arrays, loaded without
pickles, at most MAX_OUTPUTS bytes), and the first and last lines of JOB/output.txt.
Nothing a hand-in does in its process can change how these are judged.
"""
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .child import result_digests  # the server's own hashing (child.py imports nothing from here)

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent.name
MAX_OUTPUTS = 64 * 2 ** 20
OUTPUT_MB = 64          # a child may write this much (prints included) before it is stopped
EXCERPT = 600           # characters of a child's printed output kept for the report


@dataclass
class Outcome:
    status: str          # "ok", "error" (an exception), "timeout", "crash" (no result written)
    message: str = ""    # one line, for the report
    kind: str = ""       # the exception's type
    where: tuple = None  # (file in the tree, line) of the innermost frame in the hand-in's code
    outputs: dict = None
    printed: str = ""    # an excerpt of what the child printed
    seconds: float = 0.0


def child_path(exclude=()):
    """sys.path for a child: this interpreter's, without the source checkout, and with a
    shim instead of any folder that holds an installed acmr_np."""
    out = []
    skip = {Path(p).resolve() for p in exclude} | {HERE.parents[1]}
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            if entry and os.path.isfile(entry):  # python3X.zip
                out.append(entry)
            continue
        p = Path(entry).resolve()
        if p in skip or (p / PACKAGE / "__init__.py").is_file() and (p / "setup.py").is_file():
            continue  # a source checkout of the package
        names = os.listdir(p)
        if any(n == PACKAGE or n.startswith((PACKAGE + "-", f"__editable__.{PACKAGE}", f"__editable___{PACKAGE}"))
               for n in names):
            out.append(("shim", str(p)))
        else:
            out.append(str(p))
    return out


def _make_shims(path, work):
    """Folders of links to everything in a site folder but the package: returned path."""
    out = []
    for i, entry in enumerate(path):
        if isinstance(entry, tuple):
            shim = work / f"shim{i}"
            shim.mkdir()
            for n in os.listdir(entry[1]):
                if n == PACKAGE or n.startswith(PACKAGE) or n.startswith("__editable__") or n.endswith(".pth"):
                    continue
                try:
                    os.symlink(os.path.join(entry[1], n), shim / n)
                except OSError:  # no links here (Windows without the right): child.py's check still holds
                    return [e if isinstance(e, str) else e[1] for e in path]
            out.append(str(shim))
        else:
            out.append(entry)
    return out


def prepare(work, timeout, memory_mb, jobs):
    """A new grader's folder in ``work``: child.py, the probes, and the child's config.
    One per round of jobs, under a name nobody can know in advance: the jobs of one round
    can write into ``work``, and must not be able to change the server of the next."""
    g = Path(tempfile.mkdtemp(prefix="_grader_", dir=work))
    (g / "_acmr_probes").mkdir(parents=True)
    (g / "_acmr_probes" / "__init__.py").write_text("", encoding="utf-8")
    for name in ("probes.py", "probes_model.py"):
        shutil.copy2(HERE / name, g / "_acmr_probes" / name)
    shutil.copy2(HERE / "child.py", g / "child.py")
    config = {"path": _make_shims(child_path(), g), "grader": str(g), "timeout": float(timeout),
              "memory_mb": int(memory_mb), "output_mb": OUTPUT_MB, "jobs": int(jobs)}
    (g / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return g


def _env(work):
    keep = {k: os.environ[k] for k in ("PATH", "SYSTEMROOT", "LANG", "LC_ALL") if k in os.environ}
    return dict(keep, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                TMPDIR=str(work), HOME=str(work))


def run_jobs(grader_dir, jobs, timeout, concurrency):
    """Run ``jobs`` ([(id, folder, {tree file: sha256})]) in one child.py server; ({id:
    Outcome}, the number of processes the jobs left behind, which the server killed, or -1
    if the server did not finish normally). The server runs a job only if its tree still
    has those hashes. The server
    kills a job that runs past ``timeout``; this side stops waiting for the server itself
    (it never runs hand-in code, but a machine can fail) well after that."""
    grader_dir = Path(grader_dir)
    cmd = [sys.executable, "-I", "-S", "-B", str(grader_dir / "child.py"), str(grader_dir / "config.json")]
    lines, got, left_behind, finished = {}, queue.Queue(), 0, False
    with open(grader_dir / "server.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                cwd=str(grader_dir), env=_env(grader_dir.parent))
        reader = threading.Thread(target=lambda: [got.put(x) for x in proc.stdout] + [got.put(None)], daemon=True)
        reader.start()
        try:
            proc.stdin.write("".join(json.dumps({"id": i, "dir": str(d), "tree": t}) + "\n"
                                     for i, d, t in jobs).encode())
            proc.stdin.close()
            rounds = -(-len(jobs) // max(1, concurrency))
            deadline = time.monotonic() + rounds * (timeout + 5) + 60
            while True:   # until the server ends, after its last line
                try:
                    raw = got.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if raw is None:  # the server ended
                    break
                line = json.loads(raw)
                if "left_behind" in line:
                    left_behind = int(line["left_behind"])
                    finished = True
                else:
                    lines[line["id"]] = line
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    why = ""
    if len(lines) < len(jobs):  # the server itself failed (it runs no hand-in code): say why
        log = (grader_dir / "server.log").read_text(encoding="utf-8", errors="replace").strip().splitlines()
        why = log[-1][:300] if log else f"exit status {proc.returncode}"
    if not finished:  # killed (by a job, say): what it reported before cannot be trusted either
        left_behind = -1
    return {i: read_outcome(d, lines.get(i), timeout, why) for i, d, _ in jobs}, left_behind


def _excerpt(path):
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(EXCERPT // 2).decode("utf-8", "replace")
            if size > EXCERPT:
                f.seek(max(EXCERPT // 2, size - EXCERPT // 2))
                head += f" [... {size} bytes in all ...] " + f.read().decode("utf-8", "replace")
        return head
    except OSError:
        return ""


def _changed_since(job, digests):
    return bool(digests) and result_digests(job) != digests


def read_outcome(job, line, timeout, server_failed=""):
    """The Outcome of a job from the files it left and its line from child.py."""
    job = Path(job)
    printed = _excerpt(job / "output.txt")
    seconds = (line or {}).get("seconds", 0.0)
    if line is None:
        return Outcome("crash", "the grading process stopped before this exercise finished"
                       + (f" ({server_failed})" if server_failed else ""), printed=printed)
    if line.get("tampered"):
        return Outcome("error", "its grading folder was changed by another process before it ran "
                       "(code of another exercise?): not run; review this hand-in by hand", "Tampered")
    if _changed_since(job, line.get("files", {})):
        return Outcome("error", "its results were changed by another process after it ended: "
                       "review this hand-in by hand", "Tampered", printed=printed)
    if line.get("timeout"):
        return Outcome("timeout", f"did not finish within {timeout:g} s (an endless loop?)", printed=printed,
                       seconds=seconds)
    try:
        if line.get("exit") != 0:   # the child exits 0 after writing its results, and only then
            raise ValueError
        result = json.loads((job / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        sig, code = line.get("signal"), line.get("exit")
        why = (f"was killed by signal {sig}" + (" (the CPU time limit)" if sig in (9, 24) else "")) if sig \
            else f"ended with exit status {code} before it finished (os._exit in the code?)"
        if (job / "output.txt").is_file() and (job / "output.txt").stat().st_size >= OUTPUT_MB * 2 ** 20:
            why = f"printed {OUTPUT_MB} MiB or more and was stopped"
        return Outcome("crash", f"the process {why}", printed=printed, seconds=seconds)
    if result.get("status") != "ok":
        where = tuple(result["where"]) if result.get("where") else None
        return Outcome("error", f"{result.get('type')}: {result.get('message', '')}".strip(), result.get("type", ""),
                       where, printed=printed, seconds=seconds)
    path = job / "outputs.npz"
    if not path.is_file() or path.stat().st_size > MAX_OUTPUTS:
        return Outcome("crash", "wrote no outputs, or more than 64 MiB of them", printed=printed, seconds=seconds)
    try:
        with np.load(path, allow_pickle=False) as data:
            outputs = {k: np.asarray(data[k], dtype=np.float64) for k in data.files}
    except (OSError, ValueError) as exc:
        return Outcome("crash", f"its outputs could not be read ({exc})", printed=printed, seconds=seconds)
    return Outcome("ok", outputs=outputs, printed=printed, seconds=seconds)
