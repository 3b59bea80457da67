"""The Python API: batches, the explicit loop against fit, the model's own rules
(standardisation, anchors without negatives), state and model files, configurations."""
import argparse
import json
import math

import numpy as np
import pytest

import acmr_np
from acmr_np import checkpoint, training
from acmr_np.config import ACMRConfig, TrainConfig
from acmr_np.synthetic import make_synthetic
from acmr_np.model import ACMR
from acmr_np.trainer import Trainer

SMALL = dict(img_hidden=(16,), txt_hidden=(8,), dim=8)


def _data():
    return make_synthetic(0, n_train=160, n_test=80, n_classes=4, d_img=12, d_txt=6)


def test_every_public_name_is_there():
    for name in acmr_np.__all__:
        assert getattr(acmr_np, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        acmr_np.nope


def test_batches_cover_every_pair_once_and_reshuffle():
    data = _data()
    rng = np.random.default_rng(0)
    n = len(data.train)
    orders = []
    for _ in range(2):
        seen = []
        for b in training.batches(data.train, 32, rng):
            assert b.noise.shape == (2, len(b.labels), len(b.labels)) and b.noise.dtype == np.float32
            assert b.img.shape[1] == data.d_img and len(b.img) == len(b.txt) == len(b.labels) <= 32
            # find each batch row back in the training split (rows are distinct)
            rows = [int(np.flatnonzero((data.train.img == x).all(axis=1))[0]) for x in b.img]
            np.testing.assert_array_equal(data.train.labels[rows], b.labels)
            seen += rows
        assert sorted(seen) == list(range(n))        # each pair exactly once per epoch
        orders.append(seen)
    assert orders[0] != orders[1]                     # a fresh order every epoch
    assert n == 144 and [len(b.labels) for b in training.batches(data.train, 50, rng)] == [50, 50, 44]


def test_batch_noise_does_not_depend_on_the_block_size(monkeypatch):
    data = _data()
    whole = list(training.batches(data.train, 16, np.random.default_rng(3)))
    monkeypatch.setattr(training, "NOISE_BLOCK_BYTES", 3 * 2 * 16 * 16 * 4)  # 3 steps a block
    blocked = list(training.batches(data.train, 16, np.random.default_rng(3)))
    assert len(whole) == len(blocked) == 9
    for a, b in zip(whole, blocked):
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.noise, b.noise)
    assert not np.array_equal(whole[0].noise, whole[1].noise)  # a new draw every step
    with pytest.raises(ValueError, match="batch_size must be an integer from 1 to the 144 pairs"):
        next(training.batches(data.train, 145, np.random.default_rng(0)))


def test_the_explicit_loop_is_what_fit_does():
    """The loop the README shows (batches + Trainer.train_step) gives the very parameters
    of Training with the textbook trainer, bit for bit, and fit's fast path (Adam with its
    bias corrections folded) the same ones to float32 rounding."""
    data, cfg = _data(), ACMRConfig(**SMALL)
    epochs, B = 2, 32
    rng = np.random.default_rng(7)
    model = ACMR.for_data(data, cfg, rng=rng)
    trainer = Trainer(model)
    total = epochs * math.ceil(len(data.train) / B)
    for _ in range(epochs):
        for b in acmr_np.batches(data.train, B, rng):
            trainer.train_step(b.img, b.txt, b.labels, b.noise, progress=trainer.step_count / total)
    run = training.Training(data, cfg, TrainConfig(epochs=epochs, batch_size=B, seed=7), fast=False)
    run.run()
    fast = training.Training(data, cfg, TrainConfig(epochs=epochs, batch_size=B, seed=7))
    fast.run()
    for k, p in model.named("params").items():
        np.testing.assert_array_equal(run.model.named("params")[k], p, err_msg=k)
        # 2 epochs of float32 steps of about lr = 1e-3: rounding moves them by ~1e-9
        np.testing.assert_allclose(fast.model.named("params")[k], p, rtol=1e-4, atol=1e-7, err_msg=k)


def test_fit_returns_the_best_epoch_and_never_scores_test(monkeypatch):
    data = _data()
    rows = []
    scored = []
    real = training.paired_map
    monkeypatch.setattr(training, "paired_map", lambda s_v, s_t, labels: scored.append(len(labels))
                        or real(s_v, s_t, labels))
    model, history = acmr_np.fit(data, ACMRConfig(**SMALL), TrainConfig(epochs=4, batch_size=32, seed=1),
                                 callback=rows.append)
    assert rows == list(history) and [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert scored == [len(data.val)] * 4               # validation only, once per epoch
    vals = [r["val_map"] for r in history]
    assert history.best_epoch == int(np.argmax(vals)) + 1 and history.best_val_map == max(vals)
    # the model returned is the best epoch's: its validation mAP is that epoch's
    assert real(*model.embed(data.val.img, data.val.txt), data.val.labels) == max(vals)


def test_history_best_epoch_is_the_first_maximum():
    h = training.History([{"epoch": 1, "val_map": 0.2}, {"epoch": 2, "val_map": 0.5},
                          {"epoch": 3, "val_map": 0.5}, {"epoch": 4, "val_map": 0.1}])
    assert h.best_epoch == 2 and h.best_val_map == 0.5
    assert training.History().best_epoch == 0


def test_embedding_applies_the_stored_standardisation():
    data = _data()
    model = ACMR.for_data(data, ACMRConfig(**SMALL), rng=np.random.default_rng(0))
    raw = data.test.img[:5].astype(np.float64)
    mean, std = data.train.img.astype(np.float64).mean(0), data.train.img.astype(np.float64).std(0)
    x = ((raw - mean) / std).astype(np.float32)
    P = model.named("params")
    expected = np.tanh(np.tanh(x @ P["img_projector.0.W"] + P["img_projector.0.b"]) @ P["img_projector.2.W"]
                       + P["img_projector.2.b"])
    np.testing.assert_allclose(model.embed_images(raw), expected, rtol=1e-5, atol=1e-6)
    # the projector itself standardises: there is no way to feed it unstandardised features
    np.testing.assert_array_equal(model.img_projector.forward(raw), model.embed_images(raw))
    np.testing.assert_array_equal(model.embed_texts(data.test.txt), model.embed(data.test.img, data.test.txt)[1])
    bad = data.test.img[:4].copy()
    bad[2, 5] = np.nan
    with pytest.raises(ValueError, match=r"^features must be finite: row 2, column 5 holds nan$"):
        model.embed_images(bad)
    with pytest.raises(ValueError, match=r"Standardize\(12\): expected input of shape \(N, 12\), got \(3, 6\)"):
        model.embed_images(data.test.txt[:3])


def test_anchors_without_a_negative_are_left_out_inside_the_model():
    """A batch of one class has no negatives: L_imi is 0 and contributes no gradient,
    whatever the caller passes as noise (the model's rule, not the loop's)."""
    rng = np.random.default_rng(2)
    cfg = ACMRConfig(img_hidden=(5,), txt_hidden=(4,), dim=3, disc_hidden=4, alpha=1.0)
    with_imi = ACMR(6, 5, 3, cfg, rng=np.random.default_rng(0), dtype=np.float64)
    without = ACMR(6, 5, 3, cfg, rng=np.random.default_rng(0), dtype=np.float64)
    img, txt = rng.normal(size=(6, 6)), rng.normal(size=(6, 5))
    labels = np.full(6, 2)
    terms = with_imi.loss_and_grads(img, txt, labels, rng.random((2, 6, 6)), lam=0.3)
    without.loss_and_grads(img, txt, labels, None, lam=0.3)
    assert float(terms["L_imi"]) == 0.0
    for k, g in without.named("grads").items():
        np.testing.assert_array_equal(with_imi.named("grads")[k], g, err_msg=k)


def test_model_state_round_trip_and_refusals():
    data = _data()
    a = ACMR.for_data(data, ACMRConfig(**SMALL), rng=np.random.default_rng(0))
    b = ACMR(data.d_img, data.d_txt, data.n_classes, ACMRConfig(**SMALL), rng=np.random.default_rng(9))
    state = a.state_dict()
    b.load_state_dict(state)
    np.testing.assert_array_equal(a.embed_images(data.test.img), b.embed_images(data.test.img))
    state["img_projector.0.W"] = state["img_projector.0.W"][:, :3]
    with pytest.raises(ValueError, match=r"img_projector.0.W has shape \(12, 3\), this model's \(12, 16\)"):
        b.load_state_dict(state)
    del state["img_projector.0.W"]
    with pytest.raises(ValueError, match=r"missing \['img_projector.0.W'\]"):
        b.load_state_dict(state)


def test_save_and_load_model(tmp_path):
    data = _data()
    model, _ = acmr_np.fit(data, ACMRConfig(**SMALL), TrainConfig(epochs=2, batch_size=32))
    path = acmr_np.save_model(tmp_path / "m.npz", model)
    again = acmr_np.load_model(path)
    assert again.config == model.config
    np.testing.assert_array_equal(again.embed_texts(data.test.txt), model.embed_texts(data.test.txt))
    # another file format version is refused with one line
    z = dict(np.load(path))
    meta = json.loads(str(z["meta"]))
    meta["version"] = 1
    z["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "old.npz", **z)
    with pytest.raises(checkpoint.InputError, match="file format version 1, this one reads 2"):
        acmr_np.load_model(tmp_path / "old.npz")
    z["meta"] = np.array(json.dumps({**meta, "version": 2}))
    z["model/img_projector.0.W"] = z["model/img_projector.0.W"].astype(np.int32)
    np.savez(tmp_path / "ints.npz", **z)
    with pytest.raises(checkpoint.InputError, match="holds int32 values; expected floating point"):
        acmr_np.load_model(tmp_path / "ints.npz")


def test_load_model_from_a_run_folder(tmp_path):
    from acmr_np.train import main
    assert main(["--epochs", "2", "--img-hidden", "16", "--txt-hidden", "8", "--dim", "8",
                 "--out", str(tmp_path / "run")]) == 0
    data = make_synthetic(0)
    folder, ckpt = acmr_np.load_model(tmp_path / "run"), acmr_np.load_model(tmp_path / "run" / "checkpoint.npz")
    metrics = json.load(open(tmp_path / "run" / "metrics.json"))
    assert acmr_np.evaluate(folder, data.test)["map_avg"] == metrics["map_avg"]
    np.testing.assert_array_equal(folder.embed_images(data.test.img), ckpt.embed_images(data.test.img))


def test_retrieve_against_a_loop():
    rng = np.random.default_rng(4)
    q, g = rng.normal(size=(7, 5)), rng.normal(size=(30, 5))
    g[3] = g[8]  # a tie: the lower index ranks first
    idx, scores = acmr_np.retrieve(q, g, k=4, chunk_size=3)
    for i in range(7):
        sims = [float(q[i] @ g[j] / np.linalg.norm(q[i]) / np.linalg.norm(g[j])) for j in range(30)]
        want = sorted(range(30), key=lambda j: (-sims[j], j))[:4]
        assert idx[i].tolist() == want
        np.testing.assert_allclose(scores[i], [sims[j] for j in want], rtol=1e-12)
    assert acmr_np.retrieve(q, g, k=100)[0].shape == (7, 30)
    with pytest.raises(ValueError, match="one width"):
        acmr_np.retrieve(q, g[:, :4])


def test_configurations_check_types_and_round_trip():
    cfg = ACMRConfig(img_hidden=[64, 32], lr=1)
    assert cfg.img_hidden == (64, 32) and cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert ACMRConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="run.json: unknown ACMRConfig setting\\(s\\) nope"):
        ACMRConfig.from_dict({"nope": 1}, where="run.json")
    with pytest.raises(TypeError, match="run.json: TrainConfig: epochs must be an integer, got '10'"):
        TrainConfig.from_dict({"epochs": "10"}, where="run.json")
    with pytest.raises(TypeError, match="epochs must be an integer, got True"):
        TrainConfig(epochs=True)
    with pytest.raises(ValueError, match="backend must be one of numpy, cupy"):
        TrainConfig(backend="torch")


def test_every_setting_has_a_flag_with_help():
    for cls in (ACMRConfig, TrainConfig):
        parser = argparse.ArgumentParser()
        cls.add_arguments(parser)
        actions = {a.dest: a for a in parser._actions if a.dest != "help"}
        assert set(actions) == {f.name for f in cls.__dataclass_fields__.values()}
        for name, action in actions.items():
            assert action.help and "(default: " in action.help, name
            assert action.option_strings == ["--" + name.replace("_", "-")]
        args = parser.parse_args([])
        assert cls.given(args) == {} and cls.from_args(args) == cls()
    parser = argparse.ArgumentParser()
    ACMRConfig.add_arguments(parser)
    args = parser.parse_args(["--img-hidden", "1024,512", "--distance", "euclidean", "--lr", "1e-3"])
    assert ACMRConfig.given(args) == {"img_hidden": (1024, 512), "distance": "euclidean", "lr": 1e-3}
    assert ACMRConfig.from_args(args).img_hidden == (1024, 512)


def test_early_stopping_after_patience_epochs_without_a_better_validation_map(monkeypatch):
    scripted = iter([0.1, 0.3, 0.2, 0.25, 0.29, 0.5, 0.6])   # best at epoch 2, then 3 worse
    monkeypatch.setattr(training.Training, "validation_map", lambda self: next(scripted))
    run = training.Training(_data(), ACMRConfig(**SMALL), TrainConfig(epochs=7, batch_size=32, patience=3))
    run.run()
    assert run.epoch == 5 and run.best_epoch == 2
    assert run.stop_reason() == "no better validation mAP for 3 epochs (patience 3; best: epoch 2)"
    run.use_best()  # the kept model is epoch 2's
    np.testing.assert_array_equal(run.model.state_dict()["img_projector.0.W"], run.best_state["img_projector.0.W"])
    # patience 0 never stops early; the maximum always stops
    scripted = iter([0.5, 0.1, 0.1, 0.1])
    run = training.Training(_data(), ACMRConfig(**SMALL), TrainConfig(epochs=4, batch_size=32, patience=0))
    run.run()
    assert run.epoch == 4 and run.stop_reason() == "the maximum of 4 epochs"
