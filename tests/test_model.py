"""The whole ACMR objective against numerical gradients, the gradient reversal wired
into the projectors, and training that moves every part."""
import numpy as np
import pytest

from acmr_np import triplets
from acmr_np.gradcheck import numerical_gradient, scaled_error
from acmr_np.fast import FastTrainer
from acmr_np.model import ACMR, ACMRConfig
from acmr_np.trainer import Trainer

B, D_IMG, D_TXT, C = 8, 6, 5, 3


def _setup(seed=0, **overrides):
    rng = np.random.default_rng(seed)
    cfg = ACMRConfig(img_hidden=(7,), txt_hidden=(4,), dim=3, disc_hidden=5, **overrides)
    model = ACMR(D_IMG, D_TXT, C, cfg, rng=rng, dtype=np.float64)
    for k, p in model.named("params").items():  # non-zero biases, so they are checked too
        if k.endswith(".b"):
            p[...] = rng.normal(scale=0.1, size=p.shape)
    img, txt = rng.normal(size=(B, D_IMG)), rng.normal(size=(B, D_TXT))
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    noise = rng.random((2, B, B))
    return model, img, txt, labels, noise


def _objectives(model, img, txt, labels, noise, lam):
    """The two scalar functions the players descend (Eqs. 9-10)."""
    c = model.config

    def terms():
        return model.loss_and_grads(img, txt, labels, noise, lam)

    def emb_objective(_):  # L_emb - lam L_adv, seen by the projectors and label classifier
        t = terms()
        return c.alpha * t["L_imi"] + c.beta * t["L_imd"] + t["L_reg"] - lam * t["L_adv"]

    def adv_objective(_):  # L_adv, seen by the modality classifier
        return terms()["L_adv"]

    return emb_objective, adv_objective


@pytest.mark.parametrize("overrides", [
    dict(triplet="hinge", sampling="random", distance="euclidean", margin=1.0),
    dict(triplet="hinge", sampling="hardest", distance="euclidean", margin=5.0),
    dict(triplet="pull_push", sampling="random", distance="euclidean", margin=3.0, push_weight=0.7),
    dict(triplet="hinge", sampling="random", distance="cosine", margin=1.0),
    dict(triplet="hinge", sampling="hardest", distance="cosine", margin=3.0),
    dict(triplet="pull_push", sampling="random", distance="cosine", margin=2.0, push_weight=0.7),
])
def test_whole_objective_gradient(overrides):
    model, img, txt, labels, noise = _setup(alpha=0.7, beta=1.3, l2=0.05, **overrides)
    h = _hinge_arguments(model, img, txt, labels, noise)
    assert np.abs(h).min() > 1e-3  # every triplet well away from its kink
    if overrides["sampling"] == "random":  # both sides of the hinge are exercised
        assert (h > 0).sum() >= 3 and (h < 0).sum() >= 3, h
    lam = 0.4
    emb_objective, adv_objective = _objectives(model, img, txt, labels, noise, lam)
    model.loss_and_grads(img, txt, labels, noise, lam)
    analytic = {k: g.copy() for k, g in model.named("grads").items()}
    params = model.named("params")
    assert len(params) == 2 * 2 + 2 * 2 + 2 + 4  # every part, every W and b
    for name, p in params.items():
        f = adv_objective if name.startswith("modality_classifier") else emb_objective
        # scaled_error, not relative_error: a whole model has gradient entries 1e4 times
        # smaller than others, whose elementwise error is round-off (1.2e-7 measured for a
        # correct backward); the scaled error of a correct one is 1.8e-9 (h = 1e-5, the
        # six settings here), 50x below the limit, and of a wrong one of order 1.
        err = scaled_error(analytic[name], numerical_gradient(f, p))
        assert err < 1e-7, (name, err)


def _hinge_arguments(model, img, txt, labels, noise):
    """The argument of every triplet's max(0, .) in L_imi, for both directions:
    mu + l2(a, p) - l2(a, n) (hinge) or mu - l2(a, n) (pull_push). Positive = active."""
    c = model.config
    s_v, s_t = model.img_projector.forward(img), model.txt_projector.forward(txt)
    if c.distance == "cosine":
        s_v, s_t = (s / np.linalg.norm(s, axis=1, keepdims=True) for s in (s_v, s_t))
    out = []
    for a, o, nz in ((s_v, s_t, noise[0]), (s_t, s_v, noise[1])):
        p, q, _ = triplets.sample(a, o, labels, nz, c.sampling)
        d_p, d_q = ((a - o[p]) ** 2).sum(axis=1), ((a - o[q]) ** 2).sum(axis=1)
        out.append(c.margin + d_p - d_q if c.triplet == "hinge" else c.margin - d_q)
    return np.concatenate(out)


def test_projectors_receive_the_reversed_adversarial_gradient():
    """With alpha = beta = 0 and no L_reg, the projectors' gradient is exactly
    -lambda times the gradient of L_adv: the adversarial game reaches them."""
    model, img, txt, labels, noise = _setup(alpha=0.0, beta=0.0, l2=0.0)
    lam = 0.3
    model.loss_and_grads(img, txt, labels, noise, lam)
    grads = {k: g.copy() for k, g in model.named("grads").items()}

    def l_adv(_):
        return model.loss_and_grads(img, txt, labels, noise, lam)["L_adv"]

    for name, p in model.named("params", ("img_projector", "txt_projector")).items():
        expected = -lam * numerical_gradient(l_adv, p)
        assert np.abs(expected).max() > 1e-6, name  # the adversarial term is really there
        # scaled_error, as in test_whole_objective_gradient: the elementwise relative error
        # of the smallest entries (1e-3 of the largest) is round-off, up to 3.7e-8 for a
        # right backward over seeds 0-2; the scaled error stays below 3e-10.
        assert scaled_error(grads[name], expected) < 1e-7, name
        # and the reversed term is not the un-reversed one (the sign is what the GRL does)
        assert scaled_error(grads[name], -expected) > 0.5, name
    # and the label classifier, which L_adv does not touch, gets nothing
    for name, g in model.named("grads", ("label_classifier",)).items():
        assert np.all(g == 0), name


def test_lambda_schedules():
    cfg = ACMRConfig(lam=0.05, lam_schedule="dann")
    assert cfg.lam_at(0.0) == 0.0
    assert cfg.lam_at(1.0) == pytest.approx(0.05 * (2 / (1 + np.exp(-10)) - 1))
    assert cfg.lam_at(0.1) < cfg.lam_at(0.5) < cfg.lam_at(1.0)
    assert ACMRConfig(lam=0.05, lam_schedule="constant").lam_at(0.0) == 0.05


@pytest.mark.parametrize("bad, error, match", [
    (dict(triplet="cosine"), ValueError, "ACMRConfig: triplet must be one of hinge, pull_push, got 'cosine'"),
    (dict(sampling="semi"), ValueError, "sampling must be one of random, hardest"),
    (dict(lam_schedule="step"), ValueError, "lam_schedule must be one of constant, dann"),
    (dict(distance="manhattan"), ValueError, "distance must be one of cosine, euclidean"),
    (dict(k=0), ValueError, "k must be an integer >= 1, got 0"),
    (dict(k=2.5), TypeError, "k must be an integer, got 2.5"),
    (dict(lr=0.0), ValueError, "lr must be a finite number above 0, got 0.0"),
    (dict(lr=float("inf")), ValueError, "lr must be a finite number above 0, got inf"),
    (dict(l2=float("nan")), ValueError, "l2 must be a finite number >= 0"),
    (dict(dim=0), ValueError, "dim must be an integer >= 1"),
    (dict(img_hidden=(64, 0)), ValueError, "img_hidden must hold positive widths"),
    (dict(img_hidden="64"), TypeError, "img_hidden must be a sequence of integers"),
    (dict(alpha="2"), TypeError, "alpha must be a number, got '2'"),
])
def test_bad_settings(bad, error, match):
    with pytest.raises(error, match=match):
        ACMRConfig(**bad)


def test_train_step_follows_the_lambda_schedule():
    model, img, txt, labels, noise = _setup(k=3, lam=0.05, lam_schedule="dann")
    trainer = Trainer(model)
    for p in (0.0, 0.1, 0.37, 1.0):
        terms, lam = trainer.train_step(img, txt, labels, noise, progress=p)
        assert lam == pytest.approx(0.05 * (2 / (1 + np.exp(-10 * p)) - 1), rel=1e-12, abs=1e-15)
        assert model.grl.lam == lam and set(terms) == {"L_imi", "L_imd", "L_reg", "L_adv", "adv_acc"}
    assert trainer.step_count == 4


def test_training_changes_every_parameter_group_and_k_schedule():
    model, img, txt, labels, noise = _setup(k=3)
    before = {k: v.copy() for k, v in model.named("params").items()}
    trainer = Trainer(model)
    adv_before = []
    for step in range(4):
        adv_before.append(model.named("params", ("modality_classifier",))["modality_classifier.0.W"].copy())
        trainer.train_step(img, txt, labels, noise, progress=0.25 * step)
    assert trainer.step_count == 4
    after = model.named("params")
    for name in before:  # every array of every part, the label classifier included
        assert not np.array_equal(before[name], after[name]), name
    # the modality classifier stepped at steps 0 and 3 only (k = 3)
    assert trainer.opt_adv.t == 2 and trainer.opt_emb.t == 4
    assert not np.array_equal(adv_before[0], adv_before[1])
    np.testing.assert_array_equal(adv_before[1], adv_before[2])
    np.testing.assert_array_equal(adv_before[2], adv_before[3])


def test_trainer_state_that_does_not_fit_is_a_clear_error():
    model = _setup()[0]
    state = Trainer(model).state_dict()
    del state["opt_emb/v/img_projector.0.W"]
    other = Trainer(model)
    with pytest.raises(ValueError, match=r"opt_emb: Adam: the saved state does not fit: "
                                         r"missing \['v/img_projector.0.W'\]"):
        other.load_state_dict(state)
    assert other.opt_adv.t == 0  # nothing was loaded, not even the parts that fit


def test_loss_and_grads_without_l_reg():
    """l_reg=False leaves out L_reg's value and its gradient 2 l2 W, and nothing else."""
    model, img, txt, labels, noise = _setup(l2=0.05)
    full = model.loss_and_grads(img, txt, labels, noise, 0.3)
    with_reg = {k: g.copy() for k, g in model.named("grads").items()}
    rest = model.loss_and_grads(img, txt, labels, noise, 0.3, l_reg=False)
    assert set(full) - set(rest) == {"L_reg"} and full["L_reg"] > 0
    for k in rest:
        assert float(rest[k]) == float(full[k]), k
    params = model.named("params")
    decayed = set(model.l_reg_weights())
    assert decayed == {k for k in params if k.startswith(("img_projector.", "txt_projector.")) and k.endswith(".W")}
    for k, g in model.named("grads").items():
        expected = with_reg[k] - 2 * 0.05 * params[k] if k in decayed else with_reg[k]
        np.testing.assert_allclose(g, expected, rtol=1e-12, atol=1e-14, err_msg=k)


def test_fast_trainer_is_the_textbook_trainer_to_rounding():
    """FastTrainer leaves L_reg to the embedding player's blocked Adam (weight decay 2 l2
    on the projectors' weights) and folds Adam's bias corrections; the textbook Trainer
    (loss_and_grads's own L_reg, optim.Adam) reaches the same parameters to rounding
    (float64: within 1e-13 of each array's scale; measured 1e-16) and the same loss terms."""
    fast, img, txt, labels, noise = _setup(k=2, l2=0.05)
    plain = _setup(k=2, l2=0.05)[0]
    assert fast.l_reg_weights() == ["img_projector.0.W", "img_projector.2.W",
                                    "txt_projector.0.W", "txt_projector.2.W"]
    fast_trainer, plain_trainer = FastTrainer(fast), Trainer(plain)
    for step in range(4):
        terms, lam = fast_trainer.train_step(img, txt, labels, noise, progress=step / 4)
        reference, lam_ref = plain_trainer.train_step(img, txt, labels, noise, progress=step / 4)
        assert lam == lam_ref
        for k in ("L_imi", "L_imd", "L_reg", "L_adv", "adv_acc"):
            assert float(terms[k]) == pytest.approx(float(reference[k]), rel=1e-12, abs=1e-15), k
    assert fast_trainer.opt_adv.t == plain_trainer.opt_adv.t == 2
    moved = 0.0
    for k, p in plain.named("params").items():
        diff = np.abs(fast.named("params")[k] - p).max() / np.abs(p).max()
        assert diff < 1e-13, (k, diff)
        moved = max(moved, diff)


def _reference_terms(model, img, txt, labels, noise):
    """Every loss term recomputed from the parameters with plain NumPy and loops over
    anchors: an independent check of the VALUES the gradient checks differentiate."""
    c, P = model.config, model.named("params")

    def mlp(prefix, x, n_linear, last_tanh):
        for i in range(n_linear):
            x = x @ P[f"{prefix}.{2 * i}.W"] + P[f"{prefix}.{2 * i}.b"]
            if last_tanh or i < n_linear - 1:
                x = np.tanh(x)
        return x

    def mean_ce(logits, y):
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return -np.mean([logp[i, y[i]] for i in range(len(y))])

    s_v = mlp("img_projector", img, 2, True)
    s_t = mlp("txt_projector", txt, 2, True)
    l_imd = mean_ce(mlp("label_classifier", s_v, 1, False), labels) \
        + mean_ce(mlp("label_classifier", s_t, 1, False), labels)                      # Eq. 2
    l_adv = mean_ce(mlp("modality_classifier", s_v, 2, False), np.zeros(B, int)) \
        + mean_ce(mlp("modality_classifier", s_t, 2, False), np.ones(B, int))          # Eq. 1
    l_reg = c.l2 * sum((P[k] ** 2).sum() for k in P if k.endswith(".W") and "projector" in k)  # Eq. 7

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True) if c.distance == "cosine" else x

    def one_direction(anchor, other, noise):                                           # Eqs. 4-5
        total = 0.0
        for i in range(B):
            same = [j for j in range(B) if labels[j] == labels[i]]
            diff = [j for j in range(B) if labels[j] != labels[i]]
            p = max(same, key=lambda j: noise[i, j])
            q = max(diff, key=lambda j: noise[i, j])
            d_p = ((anchor[i] - other[p]) ** 2).sum()
            d_q = ((anchor[i] - other[q]) ** 2).sum()
            if c.triplet == "hinge":
                total += max(0.0, c.margin + d_p - d_q)
            else:
                total += d_p + c.push_weight * max(0.0, c.margin - d_q)
        return total / B

    u_v, u_t = unit(s_v), unit(s_t)
    l_imi = one_direction(u_v, u_t, noise[0]) + one_direction(u_t, u_v, noise[1])
    return {"L_imi": l_imi, "L_imd": l_imd, "L_reg": l_reg, "L_adv": l_adv}


@pytest.mark.parametrize("overrides", [
    dict(triplet="hinge", distance="cosine", margin=1.5),
    dict(triplet="hinge", distance="euclidean", margin=2.0),
    dict(triplet="pull_push", distance="cosine", margin=2.0, push_weight=0.7),
])
def test_loss_values_against_an_independent_reference(overrides):
    model, img, txt, labels, noise = _setup(l2=0.05, sampling="random", **overrides)
    terms = model.loss_and_grads(img, txt, labels, noise, lam=0.3)
    expected = _reference_terms(model, img, txt, labels, noise)
    for k, v in expected.items():
        assert float(terms[k]) == pytest.approx(v, rel=1e-10), k
    assert expected["L_imi"] > 0 and expected["L_adv"] > 0


@pytest.mark.gpu
def test_training_steps_same_numbers_on_cupy():
    """The same model, inputs and triplet noise on both backends, in float64: the
    gradients and three training steps agree to rounding."""
    import cupy as cp
    host, img, txt, labels, noise = _setup(k=2, sampling="hardest")
    dev = ACMR(D_IMG, D_TXT, C, host.config, rng=np.random.default_rng(0), xp=cp, dtype=np.float64)
    for k, p in dev.named("params").items():
        p[...] = cp.asarray(host.named("params")[k])
    args_dev = (cp.asarray(img), cp.asarray(txt), cp.asarray(labels), cp.asarray(noise))
    t_host = host.loss_and_grads(img, txt, labels, noise, 0.3)
    t_dev = dev.loss_and_grads(*args_dev, 0.3)
    for k in t_host:
        assert float(t_dev[k]) == pytest.approx(float(t_host[k]), rel=1e-10), k
    for k, g in host.named("grads").items():
        np.testing.assert_allclose(cp.asnumpy(dev.named("grads")[k]), g, rtol=1e-9, atol=1e-12, err_msg=k)
    trainers = Trainer(host), Trainer(dev)
    for step in range(3):
        trainers[0].train_step(img, txt, labels, noise, progress=step / 3)
        trainers[1].train_step(*args_dev, progress=step / 3)
    for k, p in host.named("params").items():
        np.testing.assert_allclose(cp.asnumpy(dev.named("params")[k]), p, rtol=1e-8, atol=1e-10, err_msg=k)


@pytest.mark.parametrize("make", [Trainer, FastTrainer])
@pytest.mark.parametrize("lr_adv", [0.0, 0.02])
def test_each_player_steps_with_its_own_learning_rate(make, lr_adv):
    """Adam's first step moves every parameter by lr * g / (|g| + eps) (m_hat = g and
    v_hat = g^2 after one step): the modality classifier by lr_adv, or by lr when lr_adv
    is 0 (the default), the embedding player by lr."""
    model, img, txt, labels, noise = _setup(k=2, lr=3e-3, lr_adv=lr_adv, l2=0.0)  # lr not the default
    before = {k: v.copy() for k, v in model.named("params").items()}
    lam = model.config.lam_at(0.5)
    model.loss_and_grads(img, txt, labels, noise, lam)
    grads = {k: g.copy() for k, g in model.named("grads").items()}
    make(model).train_step(img, txt, labels, noise, progress=0.5)
    expected_lr = {part: 3e-3 for part in model.EMBEDDING_PARTS}
    expected_lr["modality_classifier"] = lr_adv if lr_adv else 3e-3
    after = model.named("params")
    for k, g in grads.items():
        lr = expected_lr[k.split(".")[0]]
        np.testing.assert_allclose(after[k] - before[k], -lr * g / (np.abs(g) + 1e-8), rtol=1e-6, atol=1e-15,
                                   err_msg=k)


def _modality_accuracy(model, img, txt):
    """The modality classifier's accuracy, by hand: images are modality 0, texts 1; a row
    is right when the logit of its own modality is the larger of the two."""
    P = model.named("params")
    right = 0
    for x, projector, own in ((img, model.img_projector, 0), (txt, model.txt_projector, 1)):
        for s in projector.forward(x):
            h = np.tanh(s @ P["modality_classifier.0.W"] + P["modality_classifier.0.b"])
            logits = h @ P["modality_classifier.2.W"] + P["modality_classifier.2.b"]
            right += int(logits[own] > logits[1 - own])
    return right / (len(img) + len(txt))


@pytest.mark.parametrize("seed", [0, 1])
def test_adv_acc_is_the_modality_classifiers_accuracy(seed):
    model, img, txt, labels, noise = _setup(seed)
    expected = _modality_accuracy(model, img, txt)
    assert expected not in (0.5, 0.0, 1.0)  # 11/16 and 5/16: a swapped or inverted count would differ
    terms = model.loss_and_grads(img, txt, labels, noise, lam=0.3)
    assert float(terms["adv_acc"]) == expected
