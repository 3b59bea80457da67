import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from acmr_np.backend import cupy_available

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def pytest_collection_modifyitems(config, items):
    # GPU tests carry @pytest.mark.gpu; skip them cleanly where no CUDA device is usable.
    if cupy_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy with a usable CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def cupy_standin(monkeypatch):
    """The strict CuPy stand-in (tests/cupy_standin.py) as ``cupy`` for one test: a fresh
    module with fresh counters, taken out of sys.modules again afterwards. Yields the
    module: ``cupy_standin.asarray(...)``, ``cupy_standin.counts()``,
    ``with cupy_standin.counting() as c: ...``, ``with cupy_standin.reversed_order(): ...``."""
    import cupy_standin as standin  # tests/ is on sys.path (pytest's rootdir conftest)
    mod = standin.new_module(reverse=False)
    for name, module in standin.modules(mod).items():
        monkeypatch.setitem(sys.modules, name, module)
    yield mod


def run_with_cupy_standin(args, *, cwd=None, env=None, timeout=600, reverse=False, counts_file=None):
    """Run ``python ARGS`` (e.g. ["-m", "acmr_np.train", "--backend", "cupy", ...] or
    ["-c", code]) in a subprocess in which ``import cupy`` gives the stand-in (through
    tests/standin_site/sitecustomize.py; its own subprocesses get it too).

    Returns (proc, counts): the CompletedProcess (text stdout/stderr) and a list with one
    dict per Python process that ran, {"argv", "syncs", "transfers", "launches", "by_kind"}.
    ``reverse``: reductions add in reversed order. ``counts_file``: where the processes write
    their counts (default: a new temporary file)."""
    import tempfile
    if counts_file is None:
        fd, counts_file = tempfile.mkstemp(prefix="cupy_standin_counts_", suffix=".jsonl")
        os.close(fd)
    Path(counts_file).write_text("")
    full_env = dict(os.environ if env is None else env)
    full_env.update(CUPY_STANDIN="1", CUPY_STANDIN_COUNTS=str(counts_file),
                    CUPY_STANDIN_REVERSE="1" if reverse else "0", PYTHONDONTWRITEBYTECODE="1")
    full_env["PYTHONPATH"] = os.pathsep.join([str(TESTS / "standin_site"), str(ROOT)]
                                             + [p for p in [full_env.get("PYTHONPATH")] if p])
    proc = subprocess.run([sys.executable, *args], cwd=cwd or ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
    lines = Path(counts_file).read_text().splitlines()
    return proc, [json.loads(line) for line in lines if line.strip()]


@pytest.fixture
def cupy_standin_run(tmp_path):
    """``run_with_cupy_standin`` with its counts file in the test's tmp_path."""
    def run(args, **kwargs):
        kwargs.setdefault("counts_file", tmp_path / "cupy_standin_counts.jsonl")
        return run_with_cupy_standin(args, **kwargs)
    return run
