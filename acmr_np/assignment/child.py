"""The grading child: runs a hand-in's functions and sends back only arrays.

Started by isolate.py, never imported by the grader:

    python -I -S -B child.py CONFIG.json        # reads job folders on stdin, one per line

It runs with a sys.path of its own (CONFIG's ``path``: the standard library and the
site folders, with the teacher's acmr_np left out), imports NumPy and the probes once,
and then, for each job, forks a process that

- starts a session of its own (so that it and what it starts in that session can be killed
  together; a process it puts in a new session of its own escapes: TEACHING.md's trust model),
  sets its limits (address space, size of files written, no core dumps), sends its
  stdout and stderr to JOB/output.txt and reads stdin from /dev/null;
- imports ``acmr_np`` from JOB/tree (the hand-in's code, the reference for what the
  exercise builds on), from the bytes this process read and checked against the
  grader's sha256 just before the fork (``read_tree``: a tree changed by another
  process is not run), and checks that every acmr_np module came from there;
- runs the exercise's probe on JOB/inputs.npz and writes JOB/outputs.npz (arrays only,
  no pickles) and JOB/result.json, or JOB/result.json with the exception that stopped it.

This process only forks and waits: no hand-in code ever runs in it. It kills a job
that runs past its time, with everything the job started, and writes one line per
finished job to stdout: {"id", "exit", "signal", "timeout", "seconds"}. On Linux it is
the jobs' "child subreaper": a process a job leaves behind (in a new session or process
group of its own included) is adopted by it when the job ends and killed; the last line,
{"left_behind": N}, counts them. Where fork is
missing (Windows), each job is a new process instead (slower; same protocol).
"""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

RESULT_FILES = ("result.json", "outputs.npz")   # what a job writes for the grader to read


def _setup(config):
    sys.path[:] = config["path"]
    sys.path.insert(0, config["grader"])   # _acmr_probes: the probes, copied out of the package
    # What every job needs, imported once here so that each fork starts with it: NumPy,
    # and the standard-library modules the package's core modules import. No hand-in
    # code runs in this process.
    import argparse, dataclasses, io, math  # noqa: E401, F401
    import numpy
    buf = io.BytesIO()  # np.savez and np.load import zipfile and more on first use: here, once
    numpy.savez(buf, x=numpy.zeros(1))
    buf.seek(0)
    numpy.load(buf, allow_pickle=False)["x"]
    from _acmr_probes import probes
    return probes.table()


def _write_json(path, obj):
    # No temporary name and rename: the parent reads only after this process has ended,
    # and a half-written file (the process killed while writing) does not parse.
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)


def _innermost(exc, tree):
    """(file relative to the tree, line) of the innermost frame in the tree, or None."""
    tb, found = exc.__traceback__, None
    while tb is not None:
        path = os.path.abspath(tb.tb_frame.f_code.co_filename)
        if path.startswith(tree + os.sep):
            found = (os.path.relpath(path, tree).replace(os.sep, "/"), tb.tb_lineno)
        tb = tb.tb_next
    return found


def _limits(config):
    try:
        import resource
    except ImportError:  # not on Windows
        return
    vm = 0
    try:
        with open("/proc/self/status") as f:
            vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    except (OSError, StopIteration, ValueError):
        pass
    for name, value in (("RLIMIT_AS", vm + config["memory_mb"] * 2 ** 20),
                        ("RLIMIT_FSIZE", config["output_mb"] * 2 ** 20),
                        ("RLIMIT_CORE", 0), ("RLIMIT_CPU", int(config["timeout"]) + 2)):
        if hasattr(resource, name):
            try:
                resource.setrlimit(getattr(resource, name), (value, value))
            except (ValueError, OSError):
                pass  # a limit the system does not allow lowering: the wall-clock timeout still holds


def read_tree(job, digests):
    """The package's sources of JOB/tree, {relative path: bytes}, read now and checked
    against the sha256 the grader recorded when it wrote them; None if any differs or is
    missing: another process (another exercise's code, say) changed the tree."""
    sources = {}
    for rel, digest in digests.items():
        try:
            with open(os.path.join(job, "tree", *rel.split("/")), "rb") as f:
                data = f.read()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() != digest:
            return None
        sources[rel] = data
    return sources


class _Sources:
    """A meta-path finder and loader that imports acmr_np and its modules from the
    sources read_tree checked, in memory: what the files on disk say afterwards does not
    matter. (Their __file__ is still the path in the tree, for tracebacks.)"""

    def __init__(self, tree, sources):
        self.tree, self.sources = tree, sources

    def find_spec(self, name, path=None, target=None):
        import importlib.util
        parts = name.split(".")
        if parts[0] != "acmr_np":
            return None
        for rel, package in (("/".join(parts) + "/__init__.py", True), ("/".join(parts) + ".py", False)):
            if rel in self.sources:
                origin = os.path.join(self.tree, *rel.split("/"))
                spec = importlib.util.spec_from_loader(name, self, origin=origin, is_package=package)
                spec.has_location = True
                if package:
                    spec.submodule_search_locations = [os.path.dirname(origin)]
                return spec
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__file__ = module.__spec__.origin
        rel = os.path.relpath(module.__file__, self.tree).replace(os.sep, "/")
        exec(compile(self.sources[rel], module.__file__, "exec"), module.__dict__)


def run_job(job, table, sources):
    """Run one job in this (already isolated) process and write its result files."""
    import numpy as np
    tree = os.path.join(job, "tree")
    result = {"status": "ok"}
    try:
        with open(os.path.join(job, "job.json"), encoding="utf-8") as f:
            key = json.load(f)["key"]
        with np.load(os.path.join(job, "inputs.npz"), allow_pickle=False) as data:
            inputs = {k: data[k] for k in data.files}
        sys.meta_path.insert(0, _Sources(tree, sources))
        sys.path.insert(0, tree)
        from _acmr_probes import probes
        raw = table[key].run(probes.Package(), inputs)
        outside = sorted(m for m, mod in list(sys.modules.items()) if (m == "acmr_np" or m.startswith("acmr_np."))
                         and not os.path.abspath(getattr(mod, "__file__", None) or tree).startswith(tree + os.sep))
        if outside:
            raise ImportError(f"{outside[0]} was imported from outside the hand-in's copy; the grader only "
                              f"runs the hand-in's own package")
        arrays = {k: np.asarray(v, dtype=np.float64) for k, v in raw.items()}  # None, say: TypeError
        with open(os.path.join(job, "outputs.npz"), "wb") as f:
            np.savez(f, **arrays)
    except BaseException as exc:  # anything: SystemExit and KeyboardInterrupt included
        result = {"status": "error", "type": type(exc).__name__, "message": str(exc)[:2000],
                  "where": _innermost(exc, tree)}
    _write_json(os.path.join(job, "result.json"), result)


def _child(job, config, table, sources):
    """In the forked process: isolate, run, and never return."""
    code = 0
    try:
        os.setsid()
        _limits(config)
        out = os.open(os.path.join(job, "output.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.closerange(3, 256)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        run_job(job, table, sources)
    except BaseException:
        code = 3
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
        os._exit(code)


def _kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def _prctl(option, value):
    """Linux's prctl(option, value) on this process; whether it took effect (False
    elsewhere, or where the system refuses it)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _adopt_orphans():
    """Make this process the "child subreaper" (Linux): a process a job starts and leaves
    behind, even in a session or process group of its own, becomes this process's child
    when its parent ends, instead of init's, so ``_kill_orphans`` can find it."""
    return _prctl(36, 1)   # PR_SET_CHILD_SUBREAPER


def _kill_orphans(running, killed):
    """Kill this process's children that are not running jobs: what jobs left behind.
    Adds their pids to ``killed``."""
    me = os.getpid()
    try:
        names = [n for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return
    for n in names:
        try:
            with open(f"/proc/{n}/stat", encoding="utf-8", errors="replace") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        pid = int(n)
        if ppid == me and pid not in running and pid not in killed:
            killed.add(pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _private():
    """Linux: this process (and the jobs it forks) not "dumpable": /proc/PID/fd and
    ptrace are then closed to other processes of the same user (not to root), so a job
    cannot write lines into this server's stdout pipe."""
    _prctl(4, 0)   # PR_SET_DUMPABLE, 0


def serve(config):
    table = _setup(config)
    _private()
    adopting = hasattr(os, "fork") and _adopt_orphans()
    killed = set()   # processes jobs left behind, killed
    jobs = [json.loads(line) for line in sys.stdin if line.strip()]
    timeout, width = config["timeout"], max(1, config["jobs"])
    running = {}   # pid -> (job, start)
    todo = list(reversed(jobs))
    while todo or running:
        while todo and len(running) < width:
            job = todo.pop()
            # read and checked here, in this process that runs no hand-in code, just before
            # the job starts: the child imports these bytes, not the files
            sources = read_tree(job["dir"], job["tree"])
            if sources is None:
                _report(job, {"exit": None, "signal": None, "timeout": False, "tampered": True}, time.monotonic())
                continue
            _clear(job["dir"])   # whatever was planted where this job writes its results
            if hasattr(os, "fork"):
                pid = os.fork()
                if pid == 0:
                    _child(job["dir"], config, table, sources)
                running[pid] = (job, time.monotonic())
            else:  # Windows: one process per job
                t0 = time.monotonic()
                cmd = [sys.executable, "-I", "-S", "-B", os.path.abspath(__file__), "job", job["dir"]]
                try:
                    p = subprocess.run(cmd, input=json.dumps(dict(config, tree=job["tree"])), text=True, timeout=timeout,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    line = {"exit": p.returncode, "signal": None, "timeout": False}
                except subprocess.TimeoutExpired:
                    line = {"exit": None, "signal": None, "timeout": True}
                _report(job, line, t0)
        pid, status = os.waitpid(-1, os.WNOHANG) if running or (adopting and killed) else (0, 0)
        if pid and pid not in running:   # an orphan we adopted, ended
            continue
        if pid:
            job, t0 = running.pop(pid)
            _kill_group(pid)  # anything the job started and left behind
            if adopting:
                _kill_orphans(running, killed)
            # the result files as they are now: the grader reads them later, and refuses
            # them if anything changed them in between
            _report(job, {"exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                          "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                          "timeout": False, "files": result_digests(job["dir"])}, t0)
            continue
        now = time.monotonic()
        for pid, (job, t0) in list(running.items()):
            if now - t0 > timeout:
                _kill_group(pid)
                os.waitpid(pid, 0)
                running.pop(pid)
                if adopting:
                    _kill_orphans(running, killed)
                _report(job, {"exit": None, "signal": None, "timeout": True}, t0)
        time.sleep(0.003)
    while adopting:   # kill and reap what is left, including what a killed orphan's own
        _kill_orphans(running, killed)   # children become when they are adopted in turn
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                time.sleep(0.01)
        except ChildProcessError:
            break
    sys.stdout.write(json.dumps({"left_behind": len(killed)}) + "\n")
    sys.stdout.flush()


def _clear(job):
    for name in (*RESULT_FILES, "output.txt"):
        path = os.path.join(job, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


def result_digests(job):
    """{name: sha256, or None if missing} of the result files a job left: taken here as
    soon as the job and what it started were killed, and again by the grader (isolate.py)
    when it reads them; they must agree."""
    out = {}
    for name in RESULT_FILES:
        try:
            with open(os.path.join(job, name), "rb") as f:
                out[name] = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            out[name] = None
    return out


def _report(job, line, t0):
    line.update(id=job["id"], seconds=round(time.monotonic() - t0, 3))
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    if sys.argv[1] == "job":  # the Windows path: one job in this process
        cfg = json.loads(sys.stdin.read())
        table = _setup(cfg)
        sources = read_tree(sys.argv[2], cfg["tree"])
        if sources is None:
            sys.exit(4)
        run_job(sys.argv[2], table, sources)
    else:
        serve(json.load(open(sys.argv[1], encoding="utf-8")))
