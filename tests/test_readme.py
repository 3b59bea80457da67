"""The README's Python examples run as written (in a fresh folder)."""
import os
import re

import pytest

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def _section_code(title):
    """The ```python blocks of the README section titled ``title``, in order."""
    if not os.path.isfile(README):
        pytest.skip("no README.md next to tests/ (e.g. an installed package)")
    text = open(README, encoding="utf-8").read()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, flags=re.M | re.S)
    assert match, f"README has no section '## {title}'"
    blocks = re.findall(r"```python\n(.*?)```", match.group(1), flags=re.S)
    assert blocks, f"README section '{title}' has no python code"
    return blocks


def test_from_python_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for block in _section_code("From Python"):
        exec(compile(block, "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "kept epoch" in out and "map_avg" in out
    assert (tmp_path / "acmr.npz").is_file()
    # what the example computed, checked against independent expectations
    idx, scores = namespace["indices"], namespace["scores"]
    assert idx.shape == scores.shape == (5, 3) and (scores[:, :-1] >= scores[:, 1:]).all()
    history = namespace["history"]
    assert history.best_epoch == max(history, key=lambda r: r["val_map"])["epoch"]
    assert len(namespace["data"].train) == 1620          # 90% of the 1,800 pairs given as train
    assert namespace["trainer"].step_count == 3 * 26     # 3 epochs of ceil(1620 / 64) steps
    assert sorted(os.listdir(tmp_path)) == ["acmr.npz"]  # nothing else written
