"""Each ablation switch really removes its term: its gradient contribution is zero."""
import dataclasses
import json

import numpy as np
import pytest

from acmr_np.ablations import ABLATIONS, format_summary, main, summarize
from acmr_np.model import ACMR, ACMRConfig

B = 8


def _grads(cfg, seed=0, noise=True, perturb_adversary=False):
    rng = np.random.default_rng(seed)
    model = ACMR(6, 5, 3, cfg, rng=rng, dtype=np.float64)
    if perturb_adversary:
        for p in model.named("params", model.ADVERSARY_PARTS).values():
            p += rng.normal(size=p.shape)
    data_rng = np.random.default_rng(99)
    img, txt = data_rng.normal(size=(B, 6)), data_rng.normal(size=(B, 5))
    labels = np.arange(B) % 3
    noise_arr = data_rng.random((2, B, B)) if noise else None
    terms = model.loss_and_grads(img, txt, labels, noise_arr, lam=cfg.lam)
    return {k: g.copy() for k, g in model.named("grads").items()}, terms


def _cfg(**kw):
    return ACMRConfig(img_hidden=(7,), txt_hidden=(4,), dim=3, disc_hidden=5, margin=3.0, **kw)


def test_without_imi_removes_the_triplet_gradient():
    cfg = dataclasses.replace(_cfg(), **ABLATIONS["without L_imi"])
    with_noise, _ = _grads(cfg, noise=True)
    without, _ = _grads(cfg, noise=False)  # no triplets at all
    for k in with_noise:
        np.testing.assert_array_equal(with_noise[k], without[k])
    full, _ = _grads(_cfg(), noise=True)
    assert not np.allclose(full["img_projector.0.W"], with_noise["img_projector.0.W"])


def test_without_imd_removes_the_label_gradient():
    cfg = dataclasses.replace(_cfg(), **ABLATIONS["without L_imd"])
    grads, _ = _grads(cfg)
    for k, g in grads.items():
        if k.startswith("label_classifier"):
            assert np.all(g == 0), k
    full, _ = _grads(_cfg())
    assert np.abs(full["label_classifier.0.W"]).max() > 1e-3


def test_without_adv_removes_the_reversed_gradient():
    """With lambda = 0, the modality classifier's weights do not affect the projectors'
    gradient at all (the GRL passes nothing), while they do in full ACMR."""
    cfg = dataclasses.replace(_cfg(lam_schedule="constant"), **ABLATIONS["without L_adv"])
    a, _ = _grads(cfg)
    b, _ = _grads(cfg, perturb_adversary=True)
    for k in a:
        if not k.startswith("modality_classifier"):
            np.testing.assert_array_equal(a[k], b[k])
    full = _cfg(lam_schedule="constant", lam=0.5)
    a, _ = _grads(full)
    b, _ = _grads(full, perturb_adversary=True)
    assert not np.allclose(a["img_projector.0.W"], b["img_projector.0.W"])


def test_label_only_has_neither_triplet_nor_adversary():
    cfg = dataclasses.replace(_cfg(lam_schedule="constant"), **ABLATIONS["L_imd only"])
    a, _ = _grads(cfg, noise=True)
    b, _ = _grads(cfg, noise=False, perturb_adversary=True)
    for k in a:
        if not k.startswith("modality_classifier"):
            np.testing.assert_array_equal(a[k], b[k])


def test_summary_statistics():
    results = {"full ACMR": [{"map_img2txt": 0.3, "map_txt2img": 0.2, "map_avg": 0.25},
                             {"map_img2txt": 0.5, "map_txt2img": 0.2, "map_avg": 0.35}]}
    s = summarize(results)
    assert s["full ACMR"]["map_img2txt"] == pytest.approx((0.4, np.std([0.3, 0.5], ddof=1)))
    assert s["full ACMR"]["map_txt2img"][1] == 0.0
    text = format_summary(s, 2)
    assert "full ACMR" in text and "0.4000 ± 0.1414" in text


def test_command_line_runs_every_variant(tmp_path, capsys):
    assert main(["--seeds", "0", "1", "--epochs", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    table = out[out.index("test mAP@all"):]
    for name in ABLATIONS:
        assert name in table
    saved = json.load(open(tmp_path / "ablations.json"))
    assert saved["epochs"] == 1 and saved["patience"] == 50 and set(saved["runs"]) == set(ABLATIONS)
    assert all(len(runs) == 2 for runs in saved["runs"].values())


def test_command_line_errors(capsys):
    assert main(["--variants", "no such"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_out_is_checked_before_training_and_never_overwritten(tmp_path, capsys):
    (tmp_path / "ablations.json").write_text("{}")
    assert main(["--seeds", "0", "--epochs", "1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ablations.json already exists" in err
    assert (tmp_path / "ablations.json").read_text() == "{}"
    (tmp_path / "file").write_text("x")
    assert main(["--seeds", "0", "--epochs", "1", "--out", str(tmp_path / "file" / "sub")]) == 2
    out, err = capsys.readouterr()
    assert "cannot create the output folder" in err and "seed 0" not in out  # no training was done
