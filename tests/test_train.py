"""The command line: outputs, determinism, evaluation of a checkpoint, resume, errors."""
import json
import sys

import numpy as np
import pytest

from acmr_np import train, training
from acmr_np.config import ACMRConfig, TrainConfig
from acmr_np.train import main

FAST = ["--epochs", "3", "--img-hidden", "32", "--txt-hidden", "16", "--dim", "16"]

IGNORED = {"seconds"}  # wall time differs between runs; every other number must not


def _metrics(folder):
    with open(folder / "metrics.json") as f:
        return {k: v for k, v in json.load(f).items() if k not in IGNORED}


def test_train_writes_outputs_and_is_deterministic(tmp_path, capsys):
    assert main(FAST + ["--out", str(tmp_path / "a"), "--seed", "3"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert sum(line.startswith("epoch ") for line in lines) == 3
    assert "val_mAP" in lines[2] and "lambda" in lines[2] and "adv_acc" in lines[2]
    assert lines[-3].startswith("test (700 pairs)") and "mAP@50" in lines[-1]  # the table comes last
    assert f"outputs: {tmp_path / 'a'}/metrics.json" in out
    m = _metrics(tmp_path / "a")
    for key in ("map_img2txt", "map_txt2img", "map_avg", "map50_img2txt", "map50_txt2img", "best_epoch"):
        assert key in m
    assert 0.15 < m["map_avg"] <= 1.0  # far above chance (0.1) even after 3 epochs
    # lambda follows the DANN ramp over the steps of the whole run (the authors' demo
    # indexed it by epoch; a loop that passed progress 0 would leave it at 0)
    meta = json.loads(str(np.load(tmp_path / "a" / "checkpoint.npz")["meta"]))
    steps = 29  # ceil(1800 / 64)
    for row in meta["history"]:
        p = (row["epoch"] * steps - 1) / (3 * steps)  # progress at the epoch's last step
        assert row["lam"] == pytest.approx(0.05 * (2 / (1 + np.exp(-10 * p)) - 1), rel=1e-12)
    assert meta["history"][-1]["lam"] > 0.04
    cfg = json.load(open(tmp_path / "a" / "config.json"))
    assert cfg["train"]["seed"] == 3 and cfg["source"]["data"] is None and cfg["model"]["dim"] == 16
    # the same seed gives the same numbers, bit for bit
    assert main(FAST + ["--out", str(tmp_path / "b"), "--seed", "3"]) == 0
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
    assert main(FAST + ["--out", str(tmp_path / "c"), "--seed", "4"]) == 0
    assert _metrics(tmp_path / "c")["map_avg"] != m["map_avg"]


def test_eval_only_reproduces_test_metrics(tmp_path, capsys):
    assert main(FAST + ["--out", str(tmp_path / "run"), "--seed", "1"]) == 0
    trained = _metrics(tmp_path / "run")
    capsys.readouterr()
    # by default the checkpoint's own data and seed: synthetic(seed=1), the same test split
    assert main(["--eval-only", "--checkpoint", str(tmp_path / "run" / "checkpoint.npz"),
                 "--out", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "note:" not in out
    evaluated = json.load(open(tmp_path / "eval" / "metrics.json"))
    for key in ("map_img2txt", "map_txt2img", "map50_img2txt"):
        assert evaluated[key] == trained[key]
    assert "mAP@all" in out.splitlines()[-2]
    # another data set is evaluated, with a note that it is not the training data
    assert main(["--eval-only", "--checkpoint", str(tmp_path / "run" / "checkpoint.npz"), "--seed", "2"]) == 0
    assert "note: synthetic(seed=2) is not the data set the checkpoint was trained on" in capsys.readouterr().out


def test_resume_after_interrupt_equals_uninterrupted_run(tmp_path, monkeypatch, capsys):
    args = FAST[:1] + ["4"] + FAST[2:] + ["--seed", "2"]
    assert main(args + ["--out", str(tmp_path / "full")]) == 0
    calls = {"n": 0}
    real_epoch = training.Training.train_epoch

    def interrupted_epoch(self):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # Ctrl-C during the third epoch
        return real_epoch(self)

    monkeypatch.setattr(training.Training, "train_epoch", interrupted_epoch)
    assert main(args + ["--out", str(tmp_path / "cut")]) == 130
    err = capsys.readouterr().err
    assert "checkpoint of epoch 2" in err and f"--resume {tmp_path / 'cut'}" in err
    assert not (tmp_path / "cut" / "metrics.json").exists()
    monkeypatch.setattr(training.Training, "train_epoch", real_epoch)
    assert main(["--resume", str(tmp_path / "cut")]) == 0
    assert "resuming" in capsys.readouterr().out
    assert _metrics(tmp_path / "cut") == _metrics(tmp_path / "full")


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
    (["--batch-size", "-5"], "--batch-size must be an integer >= 2, got -5"),
    (["--batch-size", "1"], "--batch-size must be an integer >= 2, got 1"),
    (["--lr", "0"], "--lr must be a finite number above 0, got 0.0"),
    (["--lr", "inf"], "--lr must be a finite number above 0, got inf"),
    (["--l2", "inf"], "--l2 must be a finite number >= 0, got inf"),
    (["--val-fraction", "1.5"], "--val-fraction must be between 0 and 1, got 1.5"),
    (["--batch-size", "5000"], "--batch-size 5000 is larger than the training set (1800 pairs)"),
    (["--triplet", "cosine"], "argument --triplet: invalid choice: 'cosine'"),
    (["--backend", "torch"], "argument --backend: invalid choice: 'torch'"),
    (["--img-hidden", "12,x"], "expected comma-separated layer widths"),
    (["--data", "/no/such/file.npz"], "/no/such/file.npz"),
    (["--eval-only"], "--eval-only needs --checkpoint"),
    (["--resume", "/no/such/run"], "--resume continues a run with the settings saved in it; remove --out"),
])
def test_bad_arguments_give_one_line(argv, message, tmp_path, capsys):
    assert main(argv + ["--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m acmr_np.train: error: ")
    assert message in err


def test_resume_errors(tmp_path, capsys):
    assert main(["--resume", str(tmp_path / "none")]) == 2
    assert f"--resume {tmp_path / 'none'}: no such run folder" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("a folder of the user's, not a run")
    assert main(["--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"--resume {tmp_path}: not a run folder" in err and "rm -r" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no lock file left in it
    (tmp_path / "config.json").write_text("{}")                        # a run that died before epoch 1
    assert main(["--resume", str(tmp_path)]) == 2
    assert f"--resume {tmp_path}: no checkpoint.npz there" in capsys.readouterr().err
    (tmp_path / "checkpoint.npz").write_text("{not an npz")
    assert main(["--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint.npz: not a readable acmr_np file" in err
    # every explicit setting is refused, even one equal to its default
    assert main(["--resume", str(tmp_path), "--epochs", "30", "--lr", "0.1"]) == 2
    assert "remove --lr (only --backend, --epochs and --override-lr may be given)" in capsys.readouterr().err


def test_out_that_cannot_be_created_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(FAST + ["--out", str(tmp_path / "file" / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot create the output folder" in err


def test_existing_out_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    assert main(FAST + ["--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "metrics.json").read_text() == "{}"


def test_cupy_without_cupy_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert main(["--backend", "cupy", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs CuPy, which is not installed" in err
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_checkpoint_of_another_shape_is_refused(tmp_path, capsys):
    assert main(FAST + ["--out", str(tmp_path / "run")]) == 0
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "other.npz", img_train=rng.normal(size=(40, 9)), txt_train=rng.normal(size=(40, 24)),
             label_train=np.arange(40) % 10, img_test=rng.normal(size=(20, 9)),
             txt_test=rng.normal(size=(20, 24)), label_test=np.arange(20) % 10)
    capsys.readouterr()
    assert main(["--eval-only", "--checkpoint", str(tmp_path / "run" / "checkpoint.npz"),
                 "--data", str(tmp_path / "other.npz")]) == 2
    assert "was trained with d_img=128, but" in capsys.readouterr().err


def test_plots_flag_writes_figures(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert main(FAST + ["--out", str(tmp_path / "run"), "--plots"]) == 0
    assert "figures: " in capsys.readouterr().out
    for name in ("training_curves.png", "retrieval_curves.png", "common_space.png"):
        data = (tmp_path / "run" / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000, name
    assert "relevant" in (tmp_path / "run" / "examples.txt").read_text()
    assert main(["--eval-only", "--checkpoint", str(tmp_path / "run" / "checkpoint.npz"), "--plots",
                 "--out", str(tmp_path / "eval")]) == 0
    assert (tmp_path / "eval" / "common_space.png").read_bytes().startswith(b"\x89PNG")


def test_figures_before_training_show_the_runs_starting_point(monkeypatch, tmp_path):
    # _write_figures builds the untrained model for the "before training" panel itself;
    # it must be the very model Training starts from: same weights, same standardisation.
    from acmr_np.synthetic import make_synthetic
    data = make_synthetic(0, n_train=160, n_test=80, n_classes=4, d_img=12, d_txt=6)
    cfg = ACMRConfig(img_hidden=(16,), txt_hidden=(8,), dim=8)
    passed = {}
    monkeypatch.setattr(train, "make_run_figures",
                        lambda out, model, data, history, before, class_names: passed.update(before=before) or {})
    run = training.Training(data, cfg, TrainConfig(epochs=1, batch_size=32, seed=5))  # its initial weights
    train._write_figures(str(tmp_path), run.model, data, None, cfg, 5, np)
    before = passed["before"]
    assert before is not run.model
    want = run.model.state_dict()  # parameters and the input standardisation
    assert list(before.state_dict()) == list(want) and "txt_projector.standardize.std" in want
    for k, a in want.items():
        np.testing.assert_array_equal(a, before.state_dict()[k], err_msg=k)


def test_plots_without_matplotlib_fails_before_training(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    assert main(FAST + ["--out", str(tmp_path / "run"), "--plots"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'acmr_np[plot]'" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.gpu
def test_training_on_cupy_end_to_end(tmp_path, capsys):
    assert main(FAST + ["--backend", "cupy", "--out", str(tmp_path / "gpu"), "--seed", "3"]) == 0
    assert "backend cupy" in capsys.readouterr().out
    gpu = _metrics(tmp_path / "gpu")
    assert main(FAST + ["--out", str(tmp_path / "cpu"), "--seed", "3"]) == 0
    cpu = _metrics(tmp_path / "cpu")
    assert gpu["map_avg"] > 0.15
    # float32 products differ in rounding between BLAS and cuBLAS, so the runs drift
    # apart slowly; after 3 epochs they still agree closely
    assert abs(gpu["map_avg"] - cpu["map_avg"]) < 0.03


def test_main_restores_the_sigterm_handler(tmp_path):
    import signal
    before = signal.getsignal(signal.SIGTERM)
    assert main(FAST + ["--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    assert signal.getsignal(signal.SIGTERM) is before


def test_eval_only_refuses_training_settings(tmp_path, capsys):
    assert main(["--eval-only", "--checkpoint", str(tmp_path), "--epochs", "3", "--lr", "0.1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--eval-only evaluates, it does not train: remove --lr, --epochs" in err
