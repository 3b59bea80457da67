"""CCA recovers a planted shared signal; its components are chosen on validation only;
the no-training baseline; the command line, whose table and baselines.json hold the
numbers of the fitted models (label posterior included; see also test_posterior.py)."""
import dataclasses
import json

import numpy as np
import pytest

from acmr_np import baselines, posterior
from acmr_np.cca import NoTraining, candidate_components, fit_cca, fit_select
from acmr_np.metrics import evaluate_retrieval, paired_map
from acmr_np.datasets import make_split
from acmr_np.formats import load_dataset
from acmr_np.synthetic import make_synthetic
from acmr_np.errors import InputError


def _planted(n, rng, noise_var=0.05, d_x=12, d_y=9):
    """Two views sharing one latent z (n,): view = [z + e, independent noise] @ mixing.

    e ~ N(0, noise_var) separately per view, so corr(z + e_x, z + e_y) = 1 / (1 + noise_var):
    the first canonical correlation. Everything else is independent between views.
    The mixing matrices are fixed (seed 0) so that train and held-out data share them.
    """
    mix = np.random.default_rng(0)
    m_x = mix.normal(size=(d_x, d_x)) * mix.uniform(0.1, 10, size=d_x)  # features of very different scales
    m_y = mix.normal(size=(d_y, d_y))
    z = rng.normal(size=n)
    x = np.column_stack([z + rng.normal(scale=noise_var ** 0.5, size=n), rng.normal(size=(n, d_x - 1))]) @ m_x
    y = np.column_stack([z + rng.normal(scale=noise_var ** 0.5, size=n), rng.normal(size=(n, d_y - 1))]) @ m_y
    return x + 3.0, y - 1.0, z  # offsets: CCA must centre


def test_cca_recovers_a_planted_shared_signal():
    rng = np.random.default_rng(1)
    x, y, _ = _planted(4000, rng)
    cca = fit_cca(x, y, reg=1e-6)
    assert cca.max_components == 9
    assert cca.corrs[0] == pytest.approx(1 / 1.05, abs=0.01)   # the planted correlation, 0.952
    assert cca.corrs[1] < 0.15                                  # the rest is chance correlation
    # On held-out pairs the first canonical variates agree with each other and with z.
    x2, y2, z2 = _planted(2000, rng)
    img, txt = cca.embed(x2, y2, n_components=1)
    assert img.shape == (2000, 1) and txt.shape == (2000, 1)
    assert np.corrcoef(img[:, 0], txt[:, 0])[0, 1] > 0.9
    assert abs(np.corrcoef(img[:, 0], z2)[0, 1]) > 0.95


def test_cca_directions_whiten_each_view_and_diagonalise_the_cross_covariance():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 7)) @ rng.normal(size=(7, 7))
    y = x[:, :5] @ rng.normal(size=(5, 5)) + rng.normal(size=(500, 5))
    cca = fit_cca(x, y, reg=0.0)
    img, txt = cca.embed(x, y)               # all 5 components, training data
    n = len(x)
    np.testing.assert_allclose(img.T @ img / (n - 1), np.eye(5), atol=1e-8)
    np.testing.assert_allclose(txt.T @ txt / (n - 1), np.eye(5), atol=1e-8)
    np.testing.assert_allclose(img.T @ txt / (n - 1), np.diag(cca.corrs), atol=1e-8)
    assert np.all(np.diff(cca.corrs) <= 1e-12) and 0 <= cca.corrs[-1] and cca.corrs[0] <= 1
    # the ridge shrinks every canonical correlation
    assert np.all(fit_cca(x, y, reg=0.5).corrs < cca.corrs)


def test_singular_covariance_needs_a_ridge():
    rng = np.random.default_rng(3)
    hist = rng.random((50, 6))
    hist /= hist.sum(axis=1, keepdims=True)   # rows sum to 1: collinear, like Wikipedia's histograms
    with pytest.raises(InputError, match="reg > 0"):
        fit_cca(hist, rng.normal(size=(50, 3)), reg=0.0)
    assert fit_cca(hist, rng.normal(size=(50, 3)), reg=1e-3).max_components == 3
    with pytest.raises(InputError, match="paired"):
        fit_cca(hist, rng.normal(size=(49, 3)))


def test_candidate_components():
    assert candidate_components(1) == [1]
    assert candidate_components(10) == list(range(2, 11))
    assert candidate_components(100) == list(range(2, 17)) + [24, 32, 48, 64, 96, 100]


def _small_data(seed=0):
    return make_synthetic(seed, n_train=300, n_test=120, n_classes=4, d_img=10, d_txt=6)


def test_components_are_chosen_on_validation_only():
    data = _small_data()
    cca = fit_select(data.train, data.val, reg=1e-3)
    assert set(cca.val_scores) == set(candidate_components(6))
    for k, score in cca.val_scores.items():   # the scores are validation mAP@all ...
        assert score == pytest.approx(paired_map(*cca.embed(data.val.img, data.val.txt, k), data.val.labels))
    best = max(cca.val_scores.values())        # ... and the smallest K with the best one wins
    assert cca.n_components == min(k for k, s in cca.val_scores.items() if s == best)

    # Another test split (labels shuffled) changes the test numbers, not the choice.
    shuffled = make_split(data.test.img, data.test.txt, np.random.default_rng(0).permutation(data.test.labels))
    other = dataclasses.replace(data, test=shuffled)
    res, fitted = baselines.run_baselines(data)
    res2, fitted2 = baselines.run_baselines(other)
    assert res["cca"]["n_components"] == res2["cca"]["n_components"]
    assert res["cca"]["val_map"] == res2["cca"]["val_map"]
    np.testing.assert_array_equal(fitted.w_img, fitted2.w_img)
    assert res["cca"]["map_avg"] != res2["cca"]["map_avg"]
    # CCA beats doing nothing on this data
    assert res["cca"]["map_avg"] > res["no_training"]["map_avg"] + 0.05


def test_no_training_baseline_shapes():
    rng = np.random.default_rng(4)
    img, txt = rng.normal(size=(7, 10)), rng.normal(size=(5, 6))
    nt = NoTraining(10, 6, dim=16, seed=3)
    a, b = nt.embed(img, txt)
    assert a.shape == (7, 16) and b.shape == (5, 16)
    np.testing.assert_array_equal(a, NoTraining(10, 6, dim=16, seed=3).embed(img, txt)[0])  # seeded
    assert not np.allclose(a, NoTraining(10, 6, dim=16, seed=4).embed(img, txt)[0])
    same = NoTraining(6, 6)                    # equal sizes: the raw features themselves
    a, b = same.embed(txt, txt)
    np.testing.assert_array_equal(a, txt)
    assert same.kind == "raw features"
    with pytest.raises(InputError):
        nt.embed(txt, txt)


def test_cli_missing_file_is_one_line_and_exit_2(capsys, tmp_path):
    assert baselines.main(["--data", str(tmp_path / "nope.mat")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m acmr_np.baselines: error: ")
    assert "nope.mat" in err
    for argv in (["--reg", "-1"], ["--seed", "x"], ["--bogus"]):
        assert baselines.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("python -m acmr_np.baselines: error: ")


def test_cli_prints_the_table_and_writes_json(capsys, tmp_path):
    data = _small_data(1)
    path = tmp_path / "small.npz"
    np.savez(path, **{f"{f}_{s}": getattr(getattr(data, split), attr)
                      for s, split in (("train", "train"), ("val", "val"), ("test", "test"))
                      for f, attr in (("img", "img"), ("txt", "txt"), ("label", "labels"))})
    assert baselines.main(["--data", str(path), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "CCA (" in out and "no training (random projections to 64-d, seed 0)" in out and "mAP@all" in out
    saved = json.loads((tmp_path / "out" / "baselines.json").read_text())
    assert set(saved["cca"]) >= {"map_img2txt", "map_txt2img", "map_avg", "n_components", "val_map"}
    assert set(saved["posterior"]) >= {"map_img2txt", "map_txt2img", "map_avg", "map50_avg", "reg", "val_map",
                                       "val_map_by_reg", "img_converged", "txt_converged"}
    # the numbers are those of the models fitted here, on the same splits, scored by evaluate_retrieval
    loaded = load_dataset(str(path), seed=0)
    post = posterior.fit_select(loaded.train, loaded.val)
    cca = fit_select(loaded.train, loaded.val)
    for name, model in (("posterior", post), ("cca", cca)):
        expected = evaluate_retrieval(*model.embed(loaded.test.img, loaded.test.txt), loaded.test.labels)
        assert {k: saved[name][k] for k in expected} == pytest.approx(expected, abs=1e-12)
    assert saved["posterior"]["reg"] == post.reg and saved["cca"]["n_components"] == cca.n_components
    assert saved["posterior"]["val_map_by_reg"] == pytest.approx({f"{r:g}": v for r, v in post.val_scores.items()})
    assert saved["posterior"]["img_converged"] and saved["posterior"]["txt_converged"]
    # ... and the table prints them: the posterior's mAP@all row, to 4 decimals
    row = next(line for line in out.splitlines() if line.startswith("label posterior ("))
    assert f"reg {post.reg:g})" in row
    assert [float(v) for v in row.split()[-3:]] == [round(saved["posterior"][k], 4)
                                                   for k in ("map_img2txt", "map_txt2img", "map_avg")]
    assert saved["sizes"] == {"train": 300 - len(data.val), "val": len(data.val), "test": 120}
    # a second run into the same folder is refused, and the first result stays
    before = (tmp_path / "out" / "baselines.json").read_text()
    assert baselines.main(["--data", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "baselines.json already exists" in capsys.readouterr().err
    assert (tmp_path / "out" / "baselines.json").read_text() == before
