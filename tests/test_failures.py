"""Failures a user meets: bad files from the command line, a diverging loss, an
interrupted write, and a training process stopped by a signal mid-epoch."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from acmr_np import model as model_module
from acmr_np.files import atomic_write, write_json
from acmr_np.train import main

FAST = ["--epochs", "3", "--img-hidden", "32", "--txt-hidden", "16", "--dim", "16"]


def _npz(path, **changes):
    rng = np.random.default_rng(0)
    arrays = dict(img_train=rng.normal(size=(60, 5)), txt_train=rng.normal(size=(60, 4)),
                  label_train=np.arange(60) % 3, img_test=rng.normal(size=(12, 5)),
                  txt_test=rng.normal(size=(12, 4)), label_test=np.arange(12) % 3)
    arrays.update(changes)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return str(path)


@pytest.mark.parametrize("make, message", [
    (lambda p: _npz(p / "d.npz", txt_test=None), "missing key(s) txt_test"),
    (lambda p: _npz(p / "d.npz", img_train=np.full((60, 5), np.nan)), "img_train has 300 NaN or infinite values"),
    (lambda p: _npz(p / "d.npz", label_train=np.arange(60) % 3 + 1), "label_test holds class 0 that label_train lacks"),
    (lambda p: _npz(p / "d.npz", label_train=np.zeros(60, int)), "holds only 1 class"),
    (lambda p: _npz(p / "d.npz", label_train=np.eye(3)[np.arange(60) % 3] + np.eye(3)[(np.arange(60) + 1) % 3]),
     "multi-label"),
    (lambda p: _npz(p / "d.npz", txt_test=np.ones((12, 7))), "txt_test has 7 columns but txt_train has 4"),
    (lambda p: str(p / "features.csv"), "features.csv"),
])
def test_bad_data_from_the_command_line(make, message, tmp_path, capsys):
    path = make(tmp_path)
    if path.endswith(".csv"):
        open(path, "w").write("1,2,3\n")
    out = tmp_path / "run"
    assert main(["--data", path, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m acmr_np.train: error: ")
    assert message in err
    assert not out.exists()  # nothing written for a run that never started


def test_truncated_npz_from_the_command_line(tmp_path, capsys):
    good = _npz(tmp_path / "good.npz")
    data = open(good, "rb").read()
    open(tmp_path / "cut.npz", "wb").write(data[:len(data) // 2])
    assert main(["--data", str(tmp_path / "cut.npz"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cut.npz" in err


def test_diverging_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    real = model_module.ACMR.loss_and_grads
    calls = {"n": 0}
    steps_per_epoch = 29  # 1800 training pairs, batch 64

    def poisoned(self, *args, **kwargs):
        calls["n"] += 1
        terms = real(self, *args, **kwargs)
        if calls["n"] == steps_per_epoch + 5:  # epoch 2, step 5
            terms["L_imd"] = terms["L_imd"] * np.nan
        return terms

    monkeypatch.setattr(model_module.ACMR, "loss_and_grads", poisoned)
    out = tmp_path / "run"
    assert main(FAST + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "L_imd became nan at epoch 2, step 5 of 29" in err
    assert f"the checkpoint of epoch 1 is kept in {out}/checkpoint.npz" in err
    ckpt = np.load(out / "checkpoint.npz")
    assert json.loads(str(ckpt["meta"]))["epoch"] == 1
    assert not (out / "metrics.json").exists()


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"map_avg": 0.5})

    def half_then_crash(f):
        f.write(b'{"map_avg": 0.')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_crash)
    assert json.load(open(target)) == {"map_avg": 0.5}
    assert os.listdir(tmp_path) == ["metrics.json"]  # no temporary left behind


def _train_cmd(out, extra=()):
    # small batches: many steps per epoch, so the signal lands inside an epoch
    return [sys.executable, "-m", "acmr_np.train", "--epochs", "4", "--batch-size", "8", "--img-hidden", "64",
            "--txt-hidden", "16", "--dim", "16", "--seed", "5", "--out", str(out), *extra]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_epoch_then_resume_equals_uninterrupted(tmp_path, sig):
    out = tmp_path / "cut"
    proc = subprocess.Popen(_train_cmd(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (out / "checkpoint.npz").exists():  # wait until the first epoch is saved
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.01)
    time.sleep(0.05)  # now well inside a later epoch
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (stdout, stderr)
    assert "Resume with: python -m acmr_np.train --resume" in stderr
    # every file on disk is complete: the checkpoint loads, config parses, no temporaries
    ckpt = np.load(out / "checkpoint.npz")
    saved_epoch = json.loads(str(ckpt["meta"]))["epoch"]
    assert 1 <= saved_epoch < 4
    assert f"checkpoint of epoch {saved_epoch}" in stderr
    json.load(open(out / "config.json"))
    assert sorted(os.listdir(out)) == ["checkpoint.npz", "config.json"]

    resumed = subprocess.run([sys.executable, "-m", "acmr_np.train", "--resume", str(out)],
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    full = subprocess.run(_train_cmd(tmp_path / "full"), capture_output=True, text=True, timeout=120)
    assert full.returncode == 0, full.stderr
    a, b = (json.load(open(d / "metrics.json")) for d in (out, tmp_path / "full"))
    for key in ("map_img2txt", "map_txt2img", "map50_img2txt", "map50_txt2img", "best_epoch", "best_val_map"):
        assert a[key] == b[key], key  # bit for bit


def test_atomic_write_gives_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "m.json", {})
    finally:
        os.umask(old)
    assert (os.stat(tmp_path / "m.json").st_mode & 0o777) == 0o644


def test_resume_refuses_an_edited_config_other_data_or_arrays_that_do_not_fit(tmp_path, capsys):
    data = _npz(tmp_path / "d.npz")
    out = tmp_path / "run"
    assert main(FAST + ["--data", data, "--out", str(out), "--epochs", "2", "--batch-size", "16"]) == 0
    good = json.load(open(out / "config.json"))
    # a hand-edited config.json: refused, naming what differs from the checkpoint
    cfg = json.loads(json.dumps(good))
    cfg["model"]["dim"], cfg["train"]["batch_size"] = 8, 0
    write_json(out / "config.json", cfg)
    capsys.readouterr()
    assert main(["--resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.json differs from the settings saved in checkpoint.npz " \
                                     "(model.dim, train.batch_size)" in err
    write_json(out / "config.json", good)
    # other data under the same path: refused by content
    _npz(tmp_path / "d.npz", img_train=np.random.default_rng(1).normal(size=(60, 5)))
    assert main(["--resume", str(out)]) == 2
    assert "is not the data this run was trained on" in capsys.readouterr().err
    _npz(tmp_path / "d.npz")
    # arrays that do not fit the model the checkpoint describes
    z = dict(np.load(out / "checkpoint.npz"))
    z["last/model/img_projector.0.W"] = np.zeros((5, 3), np.float32)
    np.savez(out / "checkpoint.npz", **z)
    assert main(["--resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not fit this run" in err and "img_projector.0.W has shape (5, 3)" in err
