"""python -m acmr_np.tune: trials drawn from the documented space, deterministic and
resumable; scores from validation only; the best trial reproduced by --config."""
import csv
import json

import numpy as np
import pytest

from acmr_np import training, tune
from acmr_np.config import ACMRConfig, TrainConfig
from acmr_np.train import main as train_main


def test_trials_are_drawn_inside_the_space_and_depend_only_on_seed_and_number():
    configs = [tune.draw(3, t) for t in range(40)]
    assert configs[5] == tune.draw(3, 5) and configs[5] != tune.draw(4, 5)
    for c in configs:
        for name, (kind, *args) in tune.SPACE.items():
            v = getattr(c, name)
            if kind in ("log", "uniform", "int"):
                lo, hi = args
                if name == "margin" and c.distance == "euclidean":
                    lo, hi = lo * c.dim / 2, hi * c.dim / 2
                assert lo <= v <= hi, (name, v)
            else:
                assert v in [tuple(x) if isinstance(x, list) else x for x in args[0]], (name, v)
    # every choice is drawn somewhere in 40 trials, and log-uniform spreads over the decades
    assert {c.distance for c in configs} == {"cosine", "euclidean"}
    lrs = np.log10([c.lr for c in configs])
    assert lrs.min() < -3.3 and lrs.max() > -2.7


def test_a_trial_is_scored_on_validation_only(monkeypatch):
    scored = []
    real = training.paired_map
    monkeypatch.setattr(training, "paired_map", lambda a, b, labels: scored.append(len(labels)) or real(a, b, labels))
    cfg = ACMRConfig(img_hidden=(16,), txt_hidden=(8,), dim=8)
    result = tune.run_trial((cfg, TrainConfig(epochs=2), {"data": None}, [0, 1]))
    assert set(scored) == {200}                       # the synthetic validation split, never the 700 test pairs
    assert len(result["scores"]) == 2 and all(0 < s <= 1 for s in result["scores"])


def test_search_writes_resumes_and_its_best_trains(tmp_path, capsys):
    out = tmp_path / "search"
    args = ["--trials", "2", "--seeds", "0", "--epochs", "1", "--jobs", "2", "--out", str(out)]
    assert tune.main(args) == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "trials.csv")))
    assert [r["trial"] for r in rows] == ["0", "1"]
    assert "trial   1/2" in printed and "trial   2/2" in printed   # a progress line per trial
    for r in rows:
        assert float(r["val_map_mean"]) == float(r["val_map_seed0"])
        assert ACMRConfig.from_dict({**tune.draw(0, int(r["trial"])).to_dict()}).lr == pytest.approx(float(r["lr"]))
    best = json.load(open(out / "best.json"))
    assert best["trial"] == max(range(2), key=lambda t: float(rows[t]["val_map_mean"]))
    assert "python -m acmr_np.train --epochs 1" in printed
    # resume: a lost row is trained again, to the same number
    lost = rows[1]
    with open(out / "trials.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerow(rows[0])
    assert tune.main(["--resume", str(out), "--trials", "5"]) == 2   # a search continues as it was
    assert "remove --trials" in capsys.readouterr().err
    assert tune.main(["--resume", str(out)]) == 0
    assert "resuming" in capsys.readouterr().out
    again = list(csv.DictReader(open(out / "trials.csv")))
    assert again[1]["val_map_mean"] == lost["val_map_mean"]
    # the best trial's settings train from --config
    assert train_main(["--config", str(out / "best.json"), "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    saved = json.load(open(tmp_path / "run" / "config.json"))["model"]
    assert saved == best["model"]


def test_tune_errors_are_one_line(tmp_path, capsys):
    assert tune.main(["--trials", "2"]) == 2
    assert "--out DIR is needed" in capsys.readouterr().err
    assert tune.main(["--out", str(tmp_path / "x"), "--data", str(tmp_path / "none.npz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.npz" in err and not (tmp_path / "x").exists()
    assert tune.main(["--resume", str(tmp_path / "nothing")]) == 2
    (tmp_path / "bad.json").write_text('{"model": {"dim": "x"}}')
    assert train_main(["--config", str(tmp_path / "bad.json"), "--out", str(tmp_path / "r")]) == 2
    assert "dim must be an integer" in capsys.readouterr().err
