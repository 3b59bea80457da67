"""Failures a user meets: bad files from the command line, a diverging loss, an
interrupted write, and a training process stopped by a signal mid-epoch."""
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np
import pytest

from acmr_np import checkpoint, formats, train, training
from acmr_np import model as model_module
from acmr_np.checkpoint import load_model
from acmr_np.errors import InputError
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


EPOCHS = 4
# The interrupted run waits in the middle of its second epoch (after 10 of its batches)
# until the test has sent its signal (a file the test writes then): however busy the
# machine, the signal lands inside an epoch. The numbers are the plain run's.
WAITING = """
import os, sys, time
import acmr_np.training
real, calls = acmr_np.training.batches, []
def batches_that_wait(*args, **kwargs):
    calls.append(1)
    for i, batch in enumerate(real(*args, **kwargs)):
        if len(calls) == 2 and i == 10:
            while not os.path.exists(os.environ["ACMR_TEST_SIGNALLED"]):
                time.sleep(0.01)
        yield batch
acmr_np.training.batches = batches_that_wait
from acmr_np.train import main
sys.exit(main(sys.argv[1:]))
"""


def _train_cmd(out, extra=(), waiting=False):
    # small batches: many steps per epoch, so the signal lands inside an epoch
    start = [sys.executable, "-c", WAITING] if waiting else [sys.executable, "-m", "acmr_np.train"]
    return start + ["--epochs", str(EPOCHS), "--batch-size", "8", "--img-hidden", "64",
                    "--txt-hidden", "16", "--dim", "16", "--seed", "5", "--out", str(out), *extra]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_epoch_then_resume_equals_uninterrupted(tmp_path, sig):
    out, signalled = tmp_path / "cut", tmp_path / "signalled"
    proc = subprocess.Popen(_train_cmd(out, waiting=True), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, ACMR_TEST_SIGNALLED=str(signalled)))
    deadline = time.time() + 60
    while not (out / "checkpoint.npz").exists():  # wait until the first epoch is saved
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(sig)   # the run is (or soon will be) waiting inside epoch 2: the signal lands there
    signalled.write_text("")
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (stdout, stderr)
    assert "Resume with: python -m acmr_np.train --resume" in stderr
    # every file on disk is complete: the checkpoint loads, config parses, no temporaries
    ckpt = np.load(out / "checkpoint.npz")
    saved_epoch = json.loads(str(ckpt["meta"]))["epoch"]
    assert saved_epoch == 1
    assert f"checkpoint of epoch {saved_epoch}" in stderr
    json.load(open(out / "config.json"))
    assert sorted(os.listdir(out)) == ["checkpoint.npz", "config.json", "history.json"]

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
    # a finished run has nothing to resume: the message says how to extend it
    assert main(["--resume", str(out)]) == 2
    assert f"this run has finished (epoch 2 of 2; metrics.json is written), so there is nothing to resume; " \
           f"to train it further, give a new length: --resume {out} --epochs N with N > 2" in capsys.readouterr().err
    (out / "metrics.json").unlink()  # as if stopped during the final evaluation: resumable from here on
    # a hand-edited config.json: refused, naming what differs from the checkpoint
    cfg = json.loads(json.dumps(good))
    cfg["model"]["dim"], cfg["train"]["batch_size"] = 8, 0
    write_json(out / "config.json", cfg)
    capsys.readouterr()
    assert main(["--resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.json differs from the settings saved in checkpoint.npz " \
                                     "(model.dim, train.batch_size)" in err
    # ... so is another data path, and an entry a run never writes
    write_json(out / "config.json", {**good, "source": {**good["source"], "data": str(tmp_path / "other.npz")}})
    assert main(["--resume", str(out)]) == 2
    assert "differs from the settings saved in checkpoint.npz (source.data)" in capsys.readouterr().err
    write_json(out / "config.json", {**good, "extra": 1})
    assert main(["--resume", str(out)]) == 2
    assert "config.json holds entries a run does not write (extra)" in capsys.readouterr().err
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


# ---- one output folder, one run: the atomic claim and the lock (issue 15, case 1) ---------------

RACER = """
import os, sys, time
from acmr_np import cli
base, n, t0, gap = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
for i in range(n):
    start = t0 + i * gap
    while time.time() < start - 0.003:
        time.sleep(0.001)
    while time.time() < start:   # both processes leave this loop at the same instant
        pass
    folder = os.path.join(base, str(i))
    t = time.time()
    try:
        lock = cli.fresh_folder(folder)
    except Exception as exc:
        print(i, "lost", t, type(exc).__name__, " ".join(str(exc).split()), flush=True)
        continue
    with open(os.path.join(folder, "config.json"), "w") as f:   # what a run writes first
        f.write(str(os.getpid()))
    print(i, "won", t, flush=True)
"""


def test_two_processes_racing_for_one_out_folder_never_both_win(tmp_path):
    """Two processes claim the same 24 folders at the same instants (half of them already
    made and empty, as a user may make them): each folder has exactly one winner, whose
    file is the only one in it, and the loser gets an InputError, never another's folder."""
    n, gap = 24, 0.03
    for i in range(0, n, 2):
        (tmp_path / str(i)).mkdir()
    t0 = time.time() + 1.5  # both interpreters have started by then, even on a busy machine
    cmd = [sys.executable, "-c", RACER, str(tmp_path), str(n), str(t0), str(gap)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0 and not err, err
    results = {}
    for pid_index, (out, _) in enumerate(outputs):
        for line in out.splitlines():
            i, verdict, t, *why = line.split(" ", 4)
            results.setdefault(int(i), []).append((verdict, float(t), why))
    for i in range(n):
        verdicts = sorted(v for v, _, _ in results[i])
        assert verdicts == ["lost", "won"], (i, results[i])
        loser = next(why for v, _, why in results[i] if v == "lost")
        assert loser[0] == "InputError" and str(tmp_path / str(i)) in loser[1], loser
        assert sorted(os.listdir(tmp_path / str(i))) == [".acmr_np.lock", "config.json"]  # the winner's, untouched


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 2-epoch run on the synthetic data: tests copy it (``_copy_run``)."""
    out = tmp_path_factory.mktemp("base") / "run"
    assert main(FAST + ["--epochs", "2", "--out", str(out)]) == 0
    return out


def _copy_run(run, dest, finished=True):
    shutil.copytree(run, dest)
    if not finished:  # as if stopped during the final evaluation: --resume writes the metrics
        (dest / "metrics.json").unlink()
    return dest


def _dead_pid():
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(p.stdout)


def test_resume_is_refused_while_another_process_holds_the_run(finished_run, tmp_path, capsys):
    out = _copy_run(finished_run, tmp_path / "run", finished=False)
    # a process holding the run folder (a training, a --resume): the second is refused, naming it
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from acmr_np import cli; "
                               "cli.lock_folder(sys.argv[1]); print('locked', flush=True); time.sleep(120)",
                               str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        assert main(["--resume", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{out} is in use by process {holder.pid}, which holds its lock" in err
        assert f"(kill {holder.pid})" in err
    finally:
        holder.kill()  # SIGKILL: no clean-up, its .lock file stays behind
        holder.wait()
    assert (out / ".acmr_np.lock").read_text().split()[0] == str(holder.pid)
    # ... as does a temporary of a checkpoint write it was killed in
    (out / ".tmp-k1ll3d_4checkpoint.npz").write_bytes(b"half a checkpoint")
    (out / ".tmp-notes.txt").write_text("not ours: stays")
    capsys.readouterr()
    assert main(["--resume", str(out), "--epochs", "3"]) == 0
    stdout = capsys.readouterr().out
    assert f"note: the lock of process {holder.pid}, which no longer runs (killed?), is taken over" in stdout
    assert "removed 1 unfinished temporary file(s) of a killed process: .tmp-k1ll3d_4checkpoint.npz" in stdout
    assert sorted(os.listdir(out)) == [".tmp-notes.txt", "checkpoint.npz", "config.json", "history.json",
                                       "metrics.json"]  # no lock


def test_two_resumes_of_one_run_at_once_train_it_once(finished_run, tmp_path):
    out = _copy_run(finished_run, tmp_path / "run")
    cmd = [sys.executable, "-m", "acmr_np.train", "--resume", str(out), "--epochs", "3"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.returncode, *out) for p, out in [(p, p.communicate(timeout=120)) for p in procs]]
    assert sorted(rc for rc, _, _ in results) == [0, 2], results
    _, _, err = next(r for r in results if r[0] == 2)
    # refused while the other trains, or (if it came late) because the other had finished
    assert err.count("\n") == 1 and ("is in use by process" in err or "this run has finished (epoch 3 of 3" in err)
    assert json.load(open(out / "config.json"))["changes"] == [{"after_epoch": 2, "epochs": [2, 3]}]


# ---- checkpoints a resume or an evaluation must refuse in one line (issue 15, cases 2, 4, 6) -----

W = "last/model/img_projector.0.W"


def _edit(path, change):
    """Rewrite a checkpoint after ``change(meta, arrays)`` (object arrays allowed)."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")))
    change(meta, arrays)
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)


def _set(d, key, value):
    d[key] = value


def _rows(meta, change):
    change(meta["history"][0])


def _npy_header(shape, descr="<f4"):
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


def _replace_member(path, name, data):
    with zipfile.ZipFile(path) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    members[name] = data
    with zipfile.ZipFile(path, "w") as z:
        for k, v in members.items():
            z.writestr(k, v)


def _flip_a_byte(path):
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(W + ".npy")
    raw = bytearray(path.read_bytes())
    raw[info.header_offset + 30 + len(info.filename) + info.file_size // 2] ^= 0xFF  # inside the array's data
    path.write_bytes(bytes(raw))


def _with_best(meta, arrays, bad_shape):
    meta["best_is_last"] = False
    for k in [k for k in arrays if k.startswith("last/model/")]:
        arrays["best/" + k[len("last/model/"):]] = arrays[k]
    arrays["best/img_projector.0.W"] = arrays["best/img_projector.0.W"][:, :bad_shape]


def _nest_deep(path):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = str(arrays.pop("meta"))
    meta = meta[:meta.rindex("}")] + ', "deep": ' + "[" * 100000 + "]" * 100000 + "}"
    np.savez(path, meta=np.array(meta), **arrays)


DAMAGED = {  # what is wrong: (how to make it, what the one line says)
    "a flipped byte": (_flip_a_byte, "damaged or not an acmr_np file (BadZipFile: Bad CRC-32"),
    "a huge declared shape": (lambda p: _replace_member(p, W + ".npy", _npy_header((10 ** 12, 10 ** 6)) + b"\0" * 64),
                              "declares shape (1000000000000, 1000000) of float32 (4,000,000,000,000,000,000 "
                              "bytes) but 64 bytes are stored"),
    "a member that is not an array": (lambda p: _replace_member(p, "notes.txt", b"hello"),
                                      "holds 'notes.txt', which is not an array"),
    "an object array": (lambda p: _edit(p, lambda m, a: _set(a, W, np.array([None, 1], dtype=object))),
                        "array last/model/img_projector.0.W holds Python objects"),
    "a string array": (lambda p: _edit(p, lambda m, a: _set(a, W, np.full((128, 32), "x"))),
                       "array last/model/img_projector.0.W holds <U1 values; expected floating point"),
    "int weights": (lambda p: _edit(p, lambda m, a: _set(a, W, a[W].astype(np.int32))),
                    "holds int32 values; expected floating point"),
    "bool weights": (lambda p: _edit(p, lambda m, a: _set(a, W, a[W] > 0)), "holds bool values; expected floating"),
    "complex weights": (lambda p: _edit(p, lambda m, a: _set(a, W, a[W].astype(np.complex64))),
                        "holds complex64 values; expected floating point"),
    "NaN weights": (lambda p: _edit(p, lambda m, a: _set(a, W, a[W] * np.nan)), "holds NaN or infinite values"),
    "meta without rng": (lambda p: _edit(p, lambda m, a: m.pop("rng")), "its meta record has no field 'rng'"),
    "a mistyped epoch": (lambda p: _edit(p, lambda m, a: _set(m, "epoch", "2")), "a mistyped field 'epoch'"),
    "a huge epoch": (lambda p: _edit(p, lambda m, a: _set(m, "epoch", 10 ** 30)), "says epoch 10000000000"),
    "epoch past the run's length": (lambda p: _edit(p, lambda m, a: _set(m, "epoch", 3)),
                                    "says epoch 3 of a 2-epoch run with 2 rows of history"),
    "a history row without val_map": (lambda p: _edit(p, lambda m, a: _rows(m, lambda r: r.pop("val_map"))),
                                      "row 1 of its history has no val_map"),
    "a history row with a string": (lambda p: _edit(p, lambda m, a: _rows(m, lambda r: _set(r, "L_imi", "x"))),
                                    "row 1 of its history has a mistyped or non-finite L_imi"),
    "a history row that is a list": (lambda p: _edit(p, lambda m, a: _set(m["history"], 0, [1, 2])),
                                     "row 1 of its history is a list, not a record"),
    "a bad random state": (lambda p: _edit(p, lambda m, a: _set(m["rng"]["state"], "state", 2 ** 300)),
                           "its random generator state is not a PCG64 state"),
    "a bad start_loss": (lambda p: _edit(p, lambda m, a: _set(m, "start_loss", "x")),
                         "a mistyped field 'start_loss'"),
    "a malformed change": (lambda p: _edit(p, lambda m, a: _set(m, "changes", [{"after_epoch": 1, "lr": 5}])),
                           "its meta record has a malformed change {'after_epoch': 1, 'lr': 5}"),
    "a huge model": (lambda p: _edit(p, lambda m, a: _set(m["model"], "img_hidden", [10 ** 12])),
                     "its settings and sizes describe a model of 145,000,000,002,114 numbers, but its "
                     "last/model/ arrays hold 6,754"),
    "a bool size": (lambda p: _edit(p, lambda m, a: _set(m["sizes"], "d_img", True)), "a bad size d_img=True"),
    "one class": (lambda p: _edit(p, lambda m, a: _set(m["sizes"], "n_classes", 1)), "a bad size n_classes=1"),
    "a data path that is a number": (lambda p: _edit(p, lambda m, a: _set(m["source"], "data", 7)),
                                     "names its data 7; expected a path or null"),
    "meta nested too deep": (_nest_deep, "its meta record is not valid JSON (maximum recursion depth"),
    "a wrong step count": (lambda p: _edit(p, lambda m, a: _set(a, "last/step_count", np.array(7))),
                           "does not fit this run: its step count 7 is not epoch 2 x 29 steps per epoch"),
    "best/ arrays of another shape": (lambda p: _edit(p, lambda m, a: _with_best(m, a, 3)),
                                      "does not fit this run: the saved model does not fit: img_projector.0.W has "
                                      "shape (128, 3), this model's (128, 32)"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_a_damaged_checkpoint_is_one_line_and_changes_nothing(case, finished_run, tmp_path, capsys):
    out = _copy_run(finished_run, tmp_path / "run", finished=False)
    damage, message = DAMAGED[case]
    damage(out / "checkpoint.npz")
    before = (out / "checkpoint.npz").read_bytes()
    rc = main(["--resume", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("python -m acmr_np.train: error: "), err
    assert message in err
    # nothing was changed: the file is as it was, no lock or temporary is left, and no metrics
    assert (out / "checkpoint.npz").read_bytes() == before
    assert sorted(os.listdir(out)) == ["checkpoint.npz", "config.json", "history.json"]


@pytest.mark.parametrize("case", ["a flipped byte", "a huge declared shape", "a huge model", "NaN weights",
                                  "a bad random state", "a history row without val_map"])
def test_a_damaged_checkpoint_is_refused_by_eval_only_and_load_model(case, finished_run, tmp_path, capsys):
    out = _copy_run(finished_run, tmp_path / "run")
    DAMAGED[case][0](out / "checkpoint.npz")
    assert main(["--eval-only", "--checkpoint", str(out), "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and DAMAGED[case][1] in err
    assert not (tmp_path / "eval").exists()
    with pytest.raises(InputError, match="checkpoint.npz: "):
        load_model(out)


# ---- what --resume may change, and how it is recorded (issue 15, cases 2 and 3) ------------------

def test_extending_a_finished_run_is_explicit_and_recorded(finished_run, tmp_path, capsys):
    out = _copy_run(finished_run, tmp_path / "run")
    first = json.load(open(out / "metrics.json"))
    assert main(["--resume", str(out), "--epochs", "1"]) == 2
    assert "--epochs 1 is below the 2 epochs this run has already trained; give more than 2" in capsys.readouterr().err
    assert main(["--resume", str(out), "--epochs", "4"]) == 0
    stdout = capsys.readouterr().out
    assert "changed from epoch 3: epochs 2 -> 4 (lambda's ramp now spans the new length)" in stdout
    assert "metrics of the run as it was after epoch 2 are now metrics-epoch2.json" in stdout
    assert json.load(open(out / "metrics-epoch2.json")) == first
    cfg = json.load(open(out / "config.json"))
    assert cfg["train"]["epochs"] == 4 and cfg["changes"] == [{"after_epoch": 2, "epochs": [2, 4]}]
    meta = json.loads(str(np.load(out / "checkpoint.npz")["meta"]))
    assert meta["changes"] == cfg["changes"] and meta["train"] == cfg["train"] and meta["epoch"] == 4
    # lambda's ramp: epochs 1-2 ran over 2 x 29 steps, epochs 3-4 over the new 4 x 29
    steps = 29
    for row, total in zip(meta["history"], (2, 2, 4, 4)):
        p = (row["epoch"] * steps - 1) / (total * steps)
        assert row["lam"] == pytest.approx(0.05 * (2 / (1 + np.exp(-10 * p)) - 1), rel=1e-12)
    assert json.load(open(out / "metrics.json"))["epochs"] == 4
    assert main(["--resume", str(out)]) == 2  # and config.json still agrees with the checkpoint: finished
    assert "this run has finished (epoch 4 of 4" in capsys.readouterr().err


def test_resume_uses_the_runs_backend_unless_backend_is_given(finished_run, tmp_path, monkeypatch, capsys):
    out = _copy_run(finished_run, tmp_path / "run", finished=False)
    # a run trained on the GPU (its settings say so), resumed where there is no CuPy
    _edit(out / "checkpoint.npz", lambda m, a: _set(m["train"], "backend", "cupy"))
    cfg = json.load(open(out / "config.json"))
    cfg["train"]["backend"] = "cupy"
    write_json(out / "config.json", cfg)
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert main(["--resume", str(out)]) == 2
    assert "needs CuPy, which is not installed" in capsys.readouterr().err
    assert main(["--resume", str(out), "--backend", "numpy"]) == 0
    stdout = capsys.readouterr().out
    assert "changed from epoch 3: backend cupy -> numpy" in stdout and "on backend numpy" in stdout
    assert json.load(open(out / "config.json"))["changes"] == [{"after_epoch": 2, "backend": ["cupy", "numpy"]}]


def _blow_up_in_epoch(n, lr):
    """Training.train_epoch, with the learning rate of both players raised to ``lr`` from
    epoch ``n`` on: a run that is fine and then explodes."""
    real = training.Training.train_epoch

    def train_epoch(self):
        if self.epoch + 1 >= n:
            self.trainer.opt_emb.lr = self.trainer.opt_adv.lr = lr
        return real(self)
    return train_epoch


@pytest.mark.parametrize("argv, why", [
    (["--batch-size", "270", "--lr", "1e30"], "epoch 1"),  # was: 'the checkpoint of epoch 1 is kept' (weights 1e30)
    (["--lr", "1e38"], "epoch 1"),                          # was: 'query embeddings contain NaN or inf'
    (["--lr", "1e9"], "the loss grew from"),                # was: rc 0 with L_reg 3.6e19
])
def test_a_diverging_run_keeps_nothing_it_cannot_use(argv, why, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(FAST + ["--epochs", "2"] + argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: training diverged: " in err and why in err
    assert f"no epoch had been saved, so nothing is kept ({out} is removed); start again with a smaller --lr" in err
    assert not out.exists()  # so the same command, with a sane --lr, can be run again


def test_divergence_keeps_the_last_finite_epoch_and_resume_takes_a_smaller_lr(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    monkeypatch.setattr(training.Training, "train_epoch", _blow_up_in_epoch(2, 1e9))
    assert main(FAST + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training diverged: the loss grew from" in err and "in epoch 2 (more than" in err
    assert (f"the checkpoint of epoch 1 is kept in {out}/checkpoint.npz (that epoch passed the check: its weights "
            f"are finite); continue it with a smaller learning rate: python -m acmr_np.train --resume {out} "
            f"--override-lr 0.0001") in err
    meta, arrays = checkpoint.read(out)  # refuses NaN and inf
    assert meta["epoch"] == 1 and max(float(np.abs(a).max()) for k, a in arrays.items() if "/model/" in k) < 10
    monkeypatch.undo()
    assert main(["--resume", str(out), "--lr", "1e-4"]) == 2  # a setting is not changed by the back door
    assert "remove --lr (only --backend, --epochs and --override-lr may be given)" in capsys.readouterr().err
    assert main(["--resume", str(out), "--override-lr", "0"]) == 2
    assert "--override-lr must be a finite number above 0, got 0.0" in capsys.readouterr().err
    assert main(["--resume", str(out), "--override-lr", "1e-4"]) == 0
    assert "changed from epoch 2: learning rate 0.001 -> 0.0001" in capsys.readouterr().out
    cfg = json.load(open(out / "config.json"))
    assert cfg["model"]["lr"] == 1e-4 and cfg["changes"] == [{"after_epoch": 1, "lr": [1e-3, 1e-4]}]
    meta = json.loads(str(np.load(out / "checkpoint.npz")["meta"]))
    assert [row["lr"] for row in meta["history"]] == [1e-3, 1e-4, 1e-4]
    assert main(FAST + ["--override-lr", "1e-4", "--out", str(tmp_path / "new")]) == 2
    assert "--override-lr is for --resume (a new run takes --lr)" in capsys.readouterr().err


def test_fit_raises_on_divergence_too():
    from acmr_np.synthetic import make_synthetic
    from acmr_np.config import ACMRConfig, TrainConfig
    data = make_synthetic(0, n_train=160, n_test=80, n_classes=4, d_img=12, d_txt=6)
    cfg = ACMRConfig(img_hidden=(16,), txt_hidden=(8,), dim=8, lr=1e9)
    with pytest.raises(FloatingPointError, match="the loss grew from .* in epoch 1"):
        training.fit(data, cfg, TrainConfig(epochs=2, batch_size=32))


# ---- signals from the first line of main to the last write (issue 15, case 4) ----------------------

def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("stage", ["load_dataset", "Training", "evaluate", "make_run_figures"])
def test_an_interrupt_outside_the_epoch_loop_is_one_line(stage, tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    monkeypatch.setattr(formats if stage == "load_dataset" else train, stage, _interrupt)
    plots = ["--plots"] if stage == "make_run_figures" else []
    assert main(FAST + ["--epochs", "1", "--out", str(out)] + plots) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m acmr_np.train: interrupted"), err
    if stage in ("load_dataset", "Training"):
        assert not out.exists()
    elif stage == "evaluate":
        assert (f"after training, before the test metrics were written; the checkpoint of epoch 1 is in "
                f"{out}/checkpoint.npz. Write them with: python -m acmr_np.train --resume {out}") in err
        assert sorted(os.listdir(out)) == ["checkpoint.npz", "config.json", "history.json"]
        monkeypatch.undo()
        assert main(["--resume", str(out)]) == 0 and (out / "metrics.json").exists()
    else:
        assert (f"while drawing the figures; {out}/metrics.json is written. Draw them with: python -m "
                f"acmr_np.train --eval-only --plots --checkpoint {out} --out DIR") in err


SLOW_LOAD = """
import sys, time
import acmr_np.ablations, acmr_np.formats, acmr_np.train
def slow(*args, **kwargs):
    print("loading", flush=True)
    time.sleep(60)
acmr_np.formats.load_dataset = acmr_np.ablations.load_dataset = slow
tool = __import__("acmr_np." + sys.argv[1], fromlist=["main"])
sys.exit(tool.main(sys.argv[2:]))
"""


@pytest.mark.parametrize("tool", ["train", "baselines", "ablations"])
def test_sigterm_while_loading_the_data_is_one_line(tool, tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SLOW_LOAD, tool, "--out", str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "loading\n"
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and stderr.count("\n") == 1, stderr
    assert stderr.startswith(f"python -m acmr_np.{tool}: interrupted"), stderr
    if tool != "train":
        assert f"{tmp_path / 'out'}/{tool}.json was not written" in stderr


def test_a_signal_just_after_a_checkpoint_names_that_epoch(tmp_path, monkeypatch, capsys):
    real = checkpoint.save_run

    def save_then_signal(*args, **kwargs):
        real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # arrives between the write and the bookkeeping

    monkeypatch.setattr(checkpoint, "save_run", save_then_signal)
    out = tmp_path / "run"
    assert main(FAST + ["--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert f"interrupted; the checkpoint of epoch 1 is in {out}/checkpoint.npz" in err
    assert json.loads(str(np.load(out / "checkpoint.npz")["meta"]))["epoch"] == 1


# ---- folders and files that cannot take the output (issue 15, cases 5 and 6) -----------------------

def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _small_npz(path):
    from acmr_np.synthetic import make_synthetic
    data = make_synthetic(1, n_train=300, n_test=120, n_classes=4, d_img=10, d_txt=6)
    np.savez(path, **{f"{f}_{s}": getattr(getattr(data, s), a) for s in ("train", "val", "test")
                      for f, a in (("img", "img"), ("txt", "txt"), ("label", "labels"))})
    return str(path)


def _study(tool, tmp_path):
    """(module, argv, name of the function doing the work) of a small baselines / ablations study."""
    from acmr_np import ablations, baselines
    if tool == "baselines":
        return baselines, ["--data", _small_npz(tmp_path / "d.npz")], "run_baselines"
    return ablations, ["--seeds", "0", "--epochs", "1", "--variants", "full ACMR"], "run_ablations"


@pytest.mark.parametrize("tool", ["baselines", "ablations"])
@pytest.mark.parametrize("problem", ["full", "read-only"])
def test_an_output_folder_that_cannot_take_the_result_is_refused_before_the_work(tool, problem, tmp_path,
                                                                                  monkeypatch, capsys):
    module, argv, work = _study(tool, tmp_path)
    calls = []
    monkeypatch.setattr(module, work, lambda *a, **k: calls.append(1))
    out = tmp_path / "out"
    out.mkdir()
    if problem == "full":
        monkeypatch.setattr(os, "fsync", _no_space)
        why = "No space left on device"
    elif os.geteuid() != 0:
        out.chmod(0o555)
        why = "Permission denied"
    else:  # root writes anywhere: a read-only file system is what stops it
        real = tempfile.mkstemp
        monkeypatch.setattr(tempfile, "mkstemp", lambda *a, dir=None, **k: (_ for _ in ()).throw(
            OSError(errno.EROFS, os.strerror(errno.EROFS))) if dir == str(out) else real(*a, dir=dir, **k))
        why = "Read-only file system"
    assert module.main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot write into the output folder {out}: {why}" in err
    assert calls == [] and os.listdir(out) == []  # no work done, nothing left


@pytest.mark.parametrize("tool", ["baselines", "ablations"])
def test_the_summary_is_printed_when_the_final_write_fails(tool, tmp_path, monkeypatch, capsys):
    module, argv, work = _study(tool, tmp_path)
    real = getattr(module, work)

    def work_then_disk_full(*args, **kwargs):
        result = real(*args, **kwargs)
        monkeypatch.setattr(os, "fsync", _no_space)  # the disk fills up during the work
        return result

    monkeypatch.setattr(module, work, work_then_disk_full)
    out = tmp_path / "out"
    assert module.main(argv + ["--out", str(out)]) == 2
    stdout, err = capsys.readouterr()
    assert ("CCA (" if tool == "baselines" else "test mAP@all, mean ± std over 1 seed(s)") in stdout
    assert err.count("\n") == 1 and (f"{out}/{tool}.json: cannot write it: No space left on device; the "
                                     f"{'table' if tool == 'baselines' else 'summary'} above is complete, but it "
                                     f"is not saved") in err
    assert os.listdir(out) == []  # no temporary left either


def test_a_result_written_meanwhile_by_another_run_is_not_overwritten(tmp_path, monkeypatch, capsys):
    from acmr_np import baselines
    module, argv, work = _study("baselines", tmp_path)
    out = tmp_path / "out"
    real = baselines.run_baselines

    def work_while_another_writes(*args, **kwargs):
        (out / "baselines.json").write_text("{}")
        return real(*args, **kwargs)

    monkeypatch.setattr(baselines, "run_baselines", work_while_another_writes)
    assert baselines.main(argv + ["--out", str(out)]) == 2
    stdout, err = capsys.readouterr()
    assert "CCA (" in stdout and "baselines.json: already exists" in err and "not overwritten" in err
    assert (out / "baselines.json").read_text() == "{}"


@pytest.mark.parametrize("tool", ["baselines", "ablations"])
def test_an_interrupted_study_is_one_line(tool, tmp_path, monkeypatch, capsys):
    module, argv, work = _study(tool, tmp_path)
    monkeypatch.setattr(module, work, _interrupt)
    assert module.main(argv + ["--out", str(tmp_path / "out")]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted" in err and f"{tool}.json was not written" in err


def test_a_full_disk_names_the_file_and_what_is_kept(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    calls = {"n": 0}
    real = os.fsync

    def fourth_fsync_fails(fd):  # config.json, epoch 1's checkpoint and history.json, then the disk is full
        calls["n"] += 1
        if calls["n"] == 4:
            _no_space()
        real(fd)

    monkeypatch.setattr(os, "fsync", fourth_fsync_fails)
    assert main(FAST + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and (f"cannot write the checkpoint of epoch 2: {out}/checkpoint.npz: cannot write "
                                     f"it: No space left on device; the checkpoint of epoch 1 is kept in "
                                     f"{out}/checkpoint.npz") in err
    assert sorted(os.listdir(out)) == ["checkpoint.npz", "config.json", "history.json"]  # no temporary, no lock
    monkeypatch.undo()  # room again: the run continues from epoch 1
    assert main(["--resume", str(out)]) == 0


def test_a_folder_whose_run_died_before_its_first_checkpoint_says_what_to_do(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    pid = _dead_pid()
    (out / ".acmr_np.lock").write_text(f"{pid} {socket.gethostname()}\n")  # what kill -9 leaves
    assert main(FAST + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and (f"{out} holds a run that stopped before saving its first checkpoint (process "
                                     f"{pid} no longer runs): there is nothing in it to resume; remove it (rm -r "
                                     f"{out}) or choose another output folder") in err
    assert main(["--resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert (f"no checkpoint.npz there: the run stopped before saving its first epoch, so there is nothing to "
            f"resume; remove the folder (rm -r {out}) and start the run again") in err


def test_ctrl_c_before_the_first_checkpoint_leaves_the_folder_free(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    monkeypatch.setattr(training.Training, "train_epoch", _interrupt)
    assert main(FAST + ["--out", str(out)]) == 130
    assert (f"interrupted; no epoch had finished, so there is nothing to resume ({out} is removed)"
            in capsys.readouterr().err)
    assert not out.exists()
    monkeypatch.undo()
    assert main(FAST + ["--epochs", "1", "--out", str(out)]) == 0  # the same command again
    # a folder made beforehand (empty) is taken, and given back empty
    (tmp_path / "made").mkdir()
    monkeypatch.setattr(training.Training, "train_epoch", _interrupt)
    assert main(FAST + ["--out", str(tmp_path / "made")]) == 130
    assert os.listdir(tmp_path / "made") == []


def test_the_help_says_what_out_accepts(capsys):
    from acmr_np.train import build_parser
    text = " ".join(build_parser().format_help().split())
    assert "must not exist yet or be an empty folder; it is claimed atomically and locked while the run lasts" in text


def test_a_change_cut_between_its_two_writes_is_completed(finished_run, tmp_path, capsys):
    out = _copy_run(finished_run, tmp_path / "run")
    before = json.load(open(out / "config.json"))
    assert main(["--resume", str(out), "--epochs", "3"]) == 0
    write_json(out / "config.json", before)  # as if killed after the checkpoint's write, before config.json's
    (out / "metrics.json").unlink()
    capsys.readouterr()
    assert main(["--resume", str(out)]) == 0
    assert "note: config.json lacked the last change recorded in checkpoint.npz (train.epochs); written again" \
        in capsys.readouterr().out
    assert json.load(open(out / "config.json"))["changes"] == [{"after_epoch": 2, "epochs": [2, 3]}]
    # an edit that is not that is still refused, as is a config.json of another shape
    good = json.load(open(out / "config.json"))
    write_json(out / "config.json", {**good, "train": [1, 2]})
    assert main(["--resume", str(out), "--epochs", "4"]) == 2
    assert "config.json: not a readable run configuration (not a JSON object with model and train settings)" \
        in capsys.readouterr().err
    cfg = json.loads(json.dumps(good))
    cfg["train"]["epochs"] = 7
    write_json(out / "config.json", cfg)
    assert main(["--resume", str(out), "--epochs", "4"]) == 2
    assert "config.json differs from the settings saved in checkpoint.npz (train.epochs)" in capsys.readouterr().err
