"""The label-posterior baseline (acmr_np/posterior.py): its hand-written gradient, the
fitted optimum, answers known in advance, reg chosen on validation only, embed."""
import dataclasses
import math

import numpy as np
import pytest
import scipy.optimize

from acmr_np import baselines
from acmr_np.datasets import make_split
from acmr_np.synthetic import make_synthetic
from acmr_np.errors import InputError
from acmr_np.gradcheck import numerical_gradient, relative_error
from acmr_np.metrics import evaluate_retrieval, paired_map
from acmr_np.posterior import (DEFAULT_REGS, fit_posterior, fit_select, fit_softmax_regression,
                               objective)


def _problem(rng, n=13, d=5, c=4):
    """Random standardised-looking features, labels using every class, and non-zero W, b."""
    x = rng.normal(size=(n, d))
    labels = np.concatenate([np.arange(c), rng.integers(c, size=n - c)])
    return x, labels, rng.normal(size=(d, c)), rng.normal(size=c)


def _loop_objective(w, b, x, labels, reg):
    """(P3) one sample and one entry at a time, with the math module: an independent reference."""
    n, d = x.shape
    c = w.shape[1]
    total = 0.0
    for i in range(n):
        z = [sum(x[i, k] * w[k, j] for k in range(d)) + b[j] for j in range(c)]
        top = max(z)
        log_sum = top + math.log(sum(math.exp(zj - top) for zj in z))
        total += log_sum - z[labels[i]]                 # -log softmax(z)[y_i]
    penalty = sum(w[k, j] ** 2 for k in range(d) for j in range(c))
    return total / n + 0.5 * reg * penalty


def test_gradient_matches_numerical_differences():
    rng = np.random.default_rng(0)
    x, labels, w, b = _problem(rng)               # non-square: d = 5, c = 4, n = 13
    reg = 0.3
    _, dw, db = objective(w, b, x, labels, reg)
    num_w = numerical_gradient(lambda _: objective(w, b, x, labels, reg)[0], w)
    num_b = numerical_gradient(lambda _: objective(w, b, x, labels, reg)[0], b)
    assert relative_error(dw, num_w) < 1e-7
    assert relative_error(db, num_b) < 1e-7
    # the penalty's share is not negligible here, so a missing reg * W would show
    assert np.abs(reg * w).max() > 0.1 * np.abs(dw).max()


def test_loss_matches_a_loop_over_samples():
    rng = np.random.default_rng(1)
    x, labels, w, b = _problem(rng, n=11, d=3, c=5)
    w *= 4.0                                      # large logits: the shift by the max matters
    for reg in (0.0, 0.7):
        assert objective(w, b, x, labels, reg)[0] == pytest.approx(_loop_objective(w, b, x, labels, reg),
                                                                   rel=1e-12)


def test_fit_reaches_the_minimum():
    rng = np.random.default_rng(2)
    n, d, c, reg = 60, 4, 3, 0.05
    raw = rng.normal(size=(n, d)) * [1.0, 10.0, 0.01, 3.0] + [5.0, -2.0, 0.0, 1.0]
    labels = np.concatenate([np.arange(c), rng.integers(c, size=n - c)])
    model = fit_softmax_regression(raw, labels, reg)
    assert model.converged and model.weight.shape == (d, c) and model.bias.shape == (c,)
    # standardised with the training statistics, recomputed here
    x = (raw - raw.mean(axis=0)) / raw.std(axis=0)
    np.testing.assert_allclose(model.mean, raw.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(model.std, raw.std(axis=0), rtol=1e-12)
    loss, dw, db = objective(model.weight, model.bias, x, labels, reg)
    assert max(np.abs(dw).max(), np.abs(db).max()) < 1e-6          # a stationary point
    assert model.loss == pytest.approx(_loop_objective(model.weight, model.bias, x, labels, reg), rel=1e-12)
    # (P6) = 0: the mean training posterior equals the class frequencies
    np.testing.assert_allclose(model.predict_proba(raw).mean(axis=0), np.bincount(labels) / n, atol=1e-6)
    # a solver that uses no gradient at all (Powell; the objective's value was checked
    # against the loop above) finds the same minimum
    def f(theta):
        return objective(theta[:d * c].reshape(d, c), theta[d * c:], x, labels, reg)[0]
    ref = scipy.optimize.minimize(f, np.zeros(d * c + c), method="Powell",
                                  options={"xtol": 1e-10, "ftol": 1e-13, "maxfev": 200000})
    assert loss == pytest.approx(ref.fun, abs=1e-8) and loss <= ref.fun + 1e-12
    np.testing.assert_allclose(model.weight.ravel(), ref.x[:d * c], atol=1e-3)


def test_constant_features_give_the_class_frequencies():
    """Known answer: standardised constant features are 0, so (P5) gives W = 0 and (P6)
    softmax(b) = the class frequencies, whatever reg is."""
    labels = np.array([0, 0, 0, 1, 2, 2])
    for reg in (1e-3, 1.0):
        model = fit_softmax_regression(np.full((6, 3), 7.0), labels, reg)
        np.testing.assert_array_equal(model.weight, 0.0)
        np.testing.assert_allclose(model.predict_proba(np.full((2, 3), 7.0)),
                                   [[0.5, 1 / 6, 1 / 3]] * 2, atol=1e-7)


def _separable(rng, n_per_class=20):
    """Two classes that one feature of each modality separates by a wide gap."""
    labels = np.repeat([0, 1], n_per_class)
    sign = 2.0 * labels - 1.0                      # -1, +1
    img = rng.normal(size=(2 * n_per_class, 6))
    img[:, 2] = 3.0 * sign + 0.3 * rng.normal(size=2 * n_per_class)
    txt = rng.normal(size=(2 * n_per_class, 3))
    txt[:, 0] = -2.0 * sign + 0.2 * rng.normal(size=2 * n_per_class)
    return img, txt, labels


def test_separable_classes_give_certain_posteriors_and_perfect_retrieval():
    rng = np.random.default_rng(3)
    img, txt, labels = _separable(rng)
    model = fit_posterior(img, txt, labels, reg=1e-4)
    img2, txt2, labels2 = _separable(rng)          # held-out pairs from the same rule
    p_img, p_txt = model.embed(img2, txt2)
    for p in (p_img, p_txt):
        assert p[np.arange(len(labels2)), labels2].min() > 0.99
    metrics = evaluate_retrieval(p_img, p_txt, labels2)
    assert metrics["map_img2txt"] == 1.0 and metrics["map_txt2img"] == 1.0
    # a strong penalty flattens the posteriors towards the class frequencies (1/2 each)
    flat = fit_posterior(img, txt, labels, reg=100.0).embed(img2, txt2)[0]
    assert np.abs(flat - 0.5).max() < 0.1


def test_embed_shapes_and_rows_that_sum_to_one():
    rng = np.random.default_rng(4)
    img, txt = rng.normal(size=(30, 7)), rng.normal(size=(30, 4))
    labels = np.arange(30) % 3
    model = fit_posterior(img, txt, labels, reg=0.01)
    assert model.n_classes == 3
    p_img, p_txt = model.embed(img[:9].astype(np.float32), txt[:5])   # n != m, float32 accepted
    assert p_img.shape == (9, 3) and p_txt.shape == (5, 3)
    assert p_img.dtype == np.float64 and p_txt.dtype == np.float64
    for p in (p_img, p_txt):
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
        assert p.min() > 0
    with pytest.raises(InputError, match="7"):
        model.embed(txt, txt)                      # image features of the wrong width
    # a class missing from train below the largest label still gets a column
    assert fit_posterior(img, txt, np.where(labels == 1, 2, labels), reg=0.01).n_classes == 3


def test_bad_input_is_one_line_input_error():
    rng = np.random.default_rng(5)
    img, txt = rng.normal(size=(10, 3)), rng.normal(size=(10, 2))
    for args, match in (((img, txt, np.zeros(10, int), 0.1), "only class 0"),
                        ((img, txt, np.arange(10) % 2, -1.0), "non-negative"),
                        ((img, txt, np.arange(10) % 2, float("nan")), "non-negative"),
                        ((img, txt, (np.arange(10) % 2).astype(float), 0.1), "integer"),
                        ((img, txt[:9], np.arange(10) % 2, 0.1), "paired"),
                        ((img, txt, np.arange(10) % 2 - 1, 0.1), "non-negative")):
        with pytest.raises(InputError, match=match) as info:
            fit_posterior(*args)
        assert "\n" not in str(info.value)
    data = make_synthetic(0, n_train=60, n_test=20, n_classes=3, d_img=4, d_txt=3)
    with pytest.raises(InputError, match="at least one"):
        fit_select(data.train, data.val, regs=())


def test_reg_is_chosen_on_validation_not_on_test():
    # Seed 7 of this small synthetic set is one where validation and test disagree:
    # validation prefers reg 0.1, the test split would prefer 0.001 (checked below).
    data = make_synthetic(7, n_train=300, n_test=120, n_classes=4, d_img=10, d_txt=6)
    regs = (1e-3, 1e-1, 1.0)
    model = fit_select(data.train, data.val, regs=regs)
    for reg, score in model.val_scores.items():     # the scores are validation mAP@all
        refit = fit_posterior(data.train.img, data.train.txt, data.train.labels, reg)
        assert score == pytest.approx(paired_map(*refit.embed(data.val.img, data.val.txt), data.val.labels))
    assert set(model.val_scores) == set(regs)
    assert model.reg == max(model.val_scores, key=model.val_scores.get) == 0.1
    on_test = fit_select(data.train, data.test, regs=regs)   # what choosing on test would do
    assert on_test.reg == 1e-3 != model.reg
    assert on_test.val_scores[1e-3] > on_test.val_scores[0.1]

    # run_baselines follows validation: its test numbers are those of the reg-0.1 model
    res, _ = baselines.run_baselines(data, posterior_regs=regs)
    post = res["posterior"]
    assert post["reg"] == 0.1 and post["val_map"] == model.val_scores[0.1]
    expected = evaluate_retrieval(*model.embed(data.test.img, data.test.txt), data.test.labels)
    assert {k: post[k] for k in expected} == expected
    # another test split (labels shuffled) changes the test numbers, not the choice
    shuffled = make_split(data.test.img, data.test.txt, np.random.default_rng(0).permutation(data.test.labels))
    res2, _ = baselines.run_baselines(dataclasses.replace(data, test=shuffled), posterior_regs=regs)
    assert res2["posterior"]["reg"] == 0.1
    assert res2["posterior"]["val_map_by_reg"] == post["val_map_by_reg"]
    assert res2["posterior"]["map_avg"] != post["map_avg"]


def test_default_grid_and_ties_go_to_the_larger_reg():
    assert DEFAULT_REGS == (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    # constant features: every reg gives the same posteriors, hence the same score
    labels = np.arange(40) % 2
    train = make_split(np.ones((40, 3)), np.ones((40, 2)), labels)
    model = fit_select(train, train, regs=(1e-3, 1e-2, 1e-1))
    assert len(set(model.val_scores.values())) == 1 and model.reg == 0.1
