"""Every tutorial runs as a plain script and exits 0, quickly, writing nothing into the
repository; each ends with its exercises; the figures also show inline as a notebook."""
import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
NAMES = ["01_numerical_gradients.py", "02_linear_layer.py", "03_tanh_softmax_cross_entropy.py",
         "04_optimizers.py", "05_triplet_losses.py", "06_gradient_reversal.py", "07_acmr_synthetic.py",
         "08_evaluation.py", "09_real_data_and_gpu.py"]
DISCUSSION = {"05_triplet_losses.py", "06_gradient_reversal.py", "07_acmr_synthetic.py"}
FIGURES = {"07_acmr_synthetic.py": 1, "08_evaluation.py": 3}   # PNG files each writes
LIMIT_S = 120  # the target is 30 s on 2 CPU cores; this only catches a tutorial gone badly wrong


def _listing(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if "__pycache__" not in p.parts)


def _cells(path):
    """The '# %%' cells of a tutorial: a list of (is_markdown, text)."""
    cells = re.split(r"^(?=# %%)", path.read_text(encoding="utf-8"), flags=re.M)
    return [(c.startswith("# %% [markdown]"), c) for c in cells if c.strip()]


def _run(path, tmp_path, *args):
    # TMPDIR: the tutorials' temporary output folders land in pytest's tmp_path.
    env = dict(os.environ, TMPDIR=str(tmp_path), MPLBACKEND="Agg")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(path), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    return proc, time.perf_counter() - t0


def test_the_tutorials_are_there_in_order():
    assert [p.name for p in TUTORIALS] == NAMES
    for p in TUTORIALS:
        text = p.read_text(encoding="utf-8")
        assert text.startswith("# %%"), f"{p.name}: not in the '# %%' cell format"
        assert "Result:" in text, f"{p.name}: should end in a visible result"
        number = int(p.name[:2])
        assert re.search(rf"^# # Tutorial {number}:", text, flags=re.M), f"{p.name}: title is not 'Tutorial {number}'"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.name for p in TUTORIALS])
def test_tutorial_ends_with_exercises(path):
    is_markdown, last = _cells(path)[-1]
    assert is_markdown and re.search(r"^# ## Exercises$", last, flags=re.M), \
        f"{path.name}: the last cell should be a markdown cell '## Exercises'"
    exercises = last.split("# ## Exercises", 1)[1]
    numbers = [int(n) for n in re.findall(r"^# (\d)\. ", exercises, flags=re.M)]
    assert numbers in ([1, 2], [1, 2, 3]), f"{path.name}: two or three numbered exercises, got {numbers}"
    assert "Measured" in exercises or "measured" in exercises, f"{path.name}: say what the exercises measured"
    if path.name in DISCUSSION:
        assert "# ## Questions for discussion" in last, f"{path.name}: questions for discussion are missing"
    # the Result line is printed before the exercises, by the last code cell
    code = [text for md, text in _cells(path) if not md]
    assert "Result:" in code[-1] or "Result:" in code[-2], f"{path.name}: the Result line should come last"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.name for p in TUTORIALS])
def test_tutorial_runs(path, tmp_path):
    before = _listing(ROOT / "tutorials")
    proc, seconds = _run(path, tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{path.name} exited {proc.returncode}:\n{out[-4000:]}"
    assert "Result:" in proc.stdout, f"{path.name} printed no result:\n{out[-2000:]}"
    assert "FAIL" not in proc.stdout, out[-4000:]
    assert seconds < LIMIT_S, f"{path.name} took {seconds:.0f} s"
    assert _listing(ROOT / "tutorials") == before, f"{path.name} wrote into tutorials/"
    if path.name in FIGURES and importlib.util.find_spec("matplotlib") is not None:
        pngs = list(tmp_path.glob("acmr_tutorial*/*.png"))
        assert len(pngs) == FIGURES[path.name] and all(p.stat().st_size > 0 for p in pngs), pngs
    print(f"{path.name}: {seconds:.1f} s")


def test_real_data_tutorial_skips_cleanly_without_the_data(tmp_path):
    path = next(p for p in TUTORIALS if p.name.startswith("09_"))
    proc, _ = _run(path, tmp_path, "--data", str(tmp_path / "no_such_file.mat"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "note: the Wikipedia .mat file was not found" in proc.stdout
    assert "Result: the real-data part was skipped" in proc.stdout


def test_figures_show_inline_as_a_notebook(tmp_path, monkeypatch):
    """Opened as a notebook (jupytext) and run in a Jupyter kernel, tutorial 8 shows its
    three figures as PNG outputs. Skipped without jupytext, nbclient and ipykernel."""
    for module in ("jupytext", "nbclient", "ipykernel", "matplotlib"):
        pytest.importorskip(module)
    import jupytext
    import nbclient

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = jupytext.read(ROOT / "tutorials" / "08_evaluation.py")
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    pngs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]
    assert len(pngs) == 3
