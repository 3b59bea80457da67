"""The README's Python examples run as written (in a fresh folder)."""
import json
import os
import re

import numpy as np
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


def test_your_own_features_runs(tmp_path, monkeypatch, capsys):
    """Every block of the section in order: the python blocks in one namespace, each
    command of the bash block as a process of this interpreter."""
    import shlex
    import subprocess
    import sys

    monkeypatch.chdir(tmp_path)
    text = open(README, encoding="utf-8").read()
    section = re.search(r"^## Your own features\n(.*?)(?=^## )", text, flags=re.M | re.S).group(1)
    namespace = {}
    for lang, block in re.findall(r"```(python|bash)\n(.*?)```", section, flags=re.S):
        if lang == "python":
            exec(compile(block, "README.md", "exec"), namespace)
            continue
        for line in block.strip().splitlines():
            argv = shlex.split(line)
            assert argv[:2] == ["python", "-m"], line
            proc = subprocess.run([sys.executable] + argv[1:], capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
            if "--eval-only" not in argv:
                assert "labels mapped to class ids in sorted order (saved with the run): 0=cat, 1=dog, 2=fox, " \
                       "3=owl" in proc.stdout
    # what the section says the run folder holds, checked against the files
    run = tmp_path / "runs" / "mine"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.npz", "config.json", "embeddings.npz",
                                                     "history.json", "metrics.json"]
    metrics = json.load(open(run / "metrics.json"))
    for key in ("map_avg", "map50_avg", "precision_at_1_img2txt", "precision_at_50_txt2img",
                "recall_at_1_img2txt", "recall_at_10_txt2img"):
        assert 0 <= metrics[key] <= 1, key
    assert metrics["map_avg"] > 0.6   # four well-separated classes: far above chance (0.25)
    history = json.load(open(run / "history.json"))
    assert [r["epoch"] for r in history] == list(range(1, len(history) + 1)) and "val_map" in history[0]
    saved = namespace["saved"]
    assert saved["classes"].tolist() == ["cat", "dog", "fox", "owl"]
    model, data_labels = namespace["model"], np.load(tmp_path / "my_features" / "label_test.npy")
    np.testing.assert_array_equal(saved["labels"], np.searchsorted(["cat", "dog", "fox", "owl"], data_labels))
    np.testing.assert_array_equal(saved["img"], model.embed_images(np.load(tmp_path / "my_features" / "img_test.npy")))
    assert namespace["best"].shape == (3, 5)
    new_metrics = json.load(open(tmp_path / "runs" / "mine-new" / "metrics.json"))
    assert new_metrics["map_avg"] > 0.6 and new_metrics["data"].endswith("new_pairs.npz")


def test_figures_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for block in _section_code("Figures"):
        exec(compile(block, "README.md", "exec"), namespace)
    assert (tmp_path / "training_curves.png").read_bytes().startswith(b"\x89PNG")
    assert "relevant" in capsys.readouterr().out and len(namespace["history"]) == 5
