"""Behaviours of the core that no other test pinned down: each test here was written for
mutants that survived the mutation run (docs/DEVELOPING.md), and checks its behaviour
against an independent reference (a closed form, a case worked by hand, the rule stated
in the docstring), never against the code under test. Grouped by module."""
import math
import re

import numpy as np
import pytest

import acmr_np
from acmr_np import fast, layers, losses, metrics, optim, training
from acmr_np.errors import InputError
from acmr_np.config import ACMRConfig, TrainConfig
from acmr_np.gradcheck import layer_errors, loss_errors, relative_error, scaled_error
from acmr_np.model import ACMR
from acmr_np.trainer import Trainer

SMALL = dict(img_hidden=(8,), txt_hidden=(6,), dim=4, disc_hidden=5)


def _data(n_train=40):
    return acmr_np.make_synthetic(0, n_train=n_train, n_test=12, n_classes=2, d_img=6, d_txt=5)


# ----------------------------------------------------------------------------- layers

def test_standardize_backward_divides_by_the_std():
    rng = np.random.default_rng(0)
    layer = layers.Standardize(4, dtype=np.float64)
    layer.fit(rng.normal(size=(50, 4)) * np.array([0.1, 1.0, 3.0, 20.0]) + 5.0)
    assert layer_errors(layer, rng.normal(size=(6, 4)), rng.normal(size=(6, 4)))["x"] < 1e-8
    dout = np.ones((1, 4))
    np.testing.assert_allclose(layer.backward(dout), dout / layer.std, rtol=1e-15)


def test_relu_derivative_at_the_kink_is_zero():
    relu = layers.ReLU()
    np.testing.assert_array_equal(relu.forward(np.array([[0.0, 2.0, -1.0]])), [[0.0, 2.0, 0.0]])
    np.testing.assert_array_equal(relu.backward(np.array([[5.0, 5.0, 5.0]])), [[0.0, 5.0, 0.0]])


def test_softmax_shifts_each_row_by_its_own_maximum():
    """A row of logits 1e4 beside a row of logits near 0: shifting every row by the
    matrix's maximum would underflow the second row to 0 / 0."""
    p = layers.Softmax().forward(np.array([[1e4, 0.0], [0.0, 1.0]]))
    e = math.e
    np.testing.assert_allclose(p, [[1.0, 0.0], [1 / (1 + e), e / (1 + e)]], rtol=1e-14)


@pytest.mark.parametrize("make, name", [(layers.Softmax, "Softmax"), (layers.L2Normalize, "L2Normalize")])
def test_row_layers_name_themselves_in_shape_errors(make, name):
    with pytest.raises(ValueError, match=rf"^{name}: expected input of shape \(N, D\), got \(3,\)$"):
        make().forward(np.zeros(3))


def test_standardize_fit_checks_computes_in_float64_and_keeps_constant_features():
    layer = layers.Standardize(2)  # float32 statistics, as in a model
    with pytest.raises(ValueError, match=r"^Standardize\(2\)\.fit: expected input of shape \(N, 2\), got \(5, 3\)$"):
        layer.fit(np.zeros((5, 3)))
    # float32 features around 1e4: their mean and std summed in float32 are off by 8 and 6.5
    x = (1e4 + np.random.default_rng(0).normal(size=(100000, 2))).astype(np.float32)
    layer.fit(x)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(layer.mean, x64.mean(axis=0), rtol=1e-7)
    np.testing.assert_allclose(layer.std, x64.std(axis=0), rtol=1e-6)
    # a constant feature (std 0) and one of std exactly 1e-12 get std 1: only shifted
    layer = layers.Standardize(3, dtype=np.float64)
    layer.fit(np.array([[5.0, 0.0, 1.0], [5.0, 2e-12, 3.0]]))
    np.testing.assert_array_equal(layer.std, [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(layer.forward(np.array([[5.0, 1e-12, 2.0]])), [[0.0, 0.0, 0.0]])


def test_linear_sizes_from_one_up():
    assert layers.Linear(1, 1, rng=np.random.default_rng(0)).forward(np.ones((2, 1), np.float32)).shape == (2, 1)
    for bad in ((0, 3), (3, 0)):
        with pytest.raises(ValueError, match=rf"^Linear: sizes must be positive, got in_dim={bad[0]}, out_dim={bad[1]}$"):
            layers.Linear(*bad, rng=np.random.default_rng(0))


def test_gradient_reversal_scale_defaults_to_one():
    g = np.array([[1.5, -2.0]])
    np.testing.assert_array_equal(layers.GradientReversal().backward(g), -g)


# ----------------------------------------------------------------------------- losses

def test_cross_entropy_names_itself_in_label_errors():
    with pytest.raises(ValueError, match=r"^cross_entropy: labels must lie in 0\.\.1, got values from 0 to 2$"):
        losses.cross_entropy(np.full((3, 2), 0.5), np.array([0, 1, 2]))


def test_loss_errors_name_the_loss():
    a = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"^softmax_cross_entropy: expected logits of shape \(N, C\), got \(3,\)$"):
        losses.softmax_cross_entropy(np.zeros(3), np.zeros(3, int))
    with pytest.raises(ValueError, match=r"^softmax_cross_entropy: labels must lie in 0\.\.2, got values from 0 to 3$"):
        losses.softmax_cross_entropy(a, np.array([0, 3]))
    for fn, name in ((lambda *x, **k: losses.triplet_hinge(*x, 1.0, **k), "triplet_hinge"),
                     (lambda *x, **k: losses.pull_push(*x, 1.0, 0.5, **k), "pull_push")):
        with pytest.raises(ValueError, match=rf"^{name}: anchor, positive and negative must have one shape"):
            fn(a, a, a[:, :2])
        # (N,) = (2,), not the width 3
        with pytest.raises(ValueError, match=rf"^{name}: mask must be a boolean array of shape \(2,\), got bool \(3,\)$"):
            fn(a, a, a, mask=np.ones(3, bool))
    with pytest.raises(ValueError, match="^l2_penalty: expected at least one weight array$"):
        losses.l2_penalty([], 1.0)


def test_unchecked_labels_are_not_read():
    """check_values=False skips the range check (it would wait for a GPU): a label of -1
    then indexes the last class, as NumPy indexing does, instead of being refused."""
    logits = np.random.default_rng(0).normal(size=(2, 3))
    unchecked = losses.softmax_cross_entropy(logits, np.array([-1, 0]), check_values=False)
    last = losses.softmax_cross_entropy(logits, np.array([2, 0]))
    assert float(unchecked[0]) == float(last[0])


def test_softmax_cross_entropy_shifts_each_row_by_its_own_maximum():
    loss, grad = losses.softmax_cross_entropy(np.array([[1e4, 0.0], [0.0, math.log(3.0)]]), np.array([0, 1]))
    assert float(loss) == pytest.approx(math.log(4 / 3) / 2, rel=1e-12)
    np.testing.assert_allclose(grad, [[0.0, 0.0], [0.125, -0.125]], rtol=1e-12, atol=1e-300)


def test_hinges_take_derivative_zero_at_the_kink():
    """Exactly at the kink (h = 0, or margin - d(a, n) = 0) the derivative taken is 0,
    as the docstrings say: the triplet is not active."""
    a, p, q = np.array([[0.0, 0.0]]), np.array([[1.0, 0.0]]), np.array([[0.0, 2.0]])
    loss, grads = losses.triplet_hinge(a, p, q, 3.0)           # h = 3 + 1 - 4 = 0
    assert float(loss) == 0.0 and all(np.all(g == 0) for g in grads)
    loss, (da, dp, dq) = losses.pull_push(a, p, q, 4.0, 0.5)    # push = 4 - 4 = 0
    assert float(loss) == 1.0 and np.all(dq == 0)
    np.testing.assert_array_equal(dp, [[2.0, 0.0]])             # the pull still acts


# ----------------------------------------------------------------------------- gradcheck

def test_relative_error_computes_in_float64():
    """float32 inputs are compared in float64: the answer is the float64 formula on the
    float32 values, not its float32 rounding."""
    a, n = np.array([0.1, 0.7], np.float32), np.array([0.3, 0.7000001], np.float32)
    a64, n64 = a.astype(np.float64), n.astype(np.float64)
    expected = max(abs(x - y) / (abs(x) + abs(y)) for x, y in zip(a64, n64))
    assert relative_error(a, n) == expected


class CubeScale:
    """y = x * w^3 (elementwise over features), a layer with a parameter whose centered
    difference has a known error: (w + h)^3 - (w - h)^3 = 2h (3 w^2 + h^2)."""

    def __init__(self, w):
        self.params, self.grads = {"w": w}, {"w": np.zeros_like(w)}

    def forward(self, x):
        self.x = x
        return x * self.params["w"] ** 3

    def backward(self, dout):
        self.grads["w"][...] = (dout * self.x).sum(axis=0) * 3 * self.params["w"] ** 2
        return dout * self.params["w"] ** 3


def test_the_callers_step_reaches_every_numerical_gradient():
    """With h = 0.1 the relative error of a cube's derivative is h^2 / (6 w^2 + h^2),
    by the closed form above: the step given is used for inputs and parameters alike."""
    rng = np.random.default_rng(1)
    w = np.array([0.5, -1.0, 2.0])
    x, dout = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    errors = layer_errors(CubeScale(w.copy()), x, dout, h=0.1)
    assert errors["w"] == pytest.approx(max(0.01 / (6 * w ** 2 + 0.01)), rel=1e-6)
    assert errors["x"] < 1e-12  # linear in x: exact for any step
    errors = loss_errors(lambda v: ((v ** 3).sum(), 3 * v ** 2), [w.copy()], h=0.1)
    assert errors[0] == pytest.approx(max(0.01 / (6 * w ** 2 + 0.01)), rel=1e-6)


def test_scaled_error_computes_in_float64():
    a, n = np.array([0.1, 0.7], np.float32), np.array([0.3, 0.7000001], np.float32)
    a64, n64 = a.astype(np.float64), n.astype(np.float64)
    assert scaled_error(a, n) == np.abs(a64 - n64).max() / (np.abs(a64) + np.abs(n64)).max()


# ----------------------------------------------------------------------------- optimisers

@pytest.mark.parametrize("module", [optim, fast])
def test_sgd_defaults_are_lr_001_and_momentum_09(module):
    p = {"x": np.array([1.0, -2.0])}
    opt = module.SGD(p)
    g1, g2 = np.array([1.0, 3.0]), np.array([-2.0, 0.5])
    opt.step({"x": g1})
    np.testing.assert_allclose(p["x"], [1.0 - 0.01, -2.0 - 0.03], rtol=1e-15)
    opt.step({"x": g2})
    v2 = 0.9 * g1 + g2
    np.testing.assert_allclose(p["x"], np.array([1.0 - 0.01, -2.0 - 0.03]) - 0.01 * v2, rtol=1e-15)
    assert opt.t == 2


@pytest.mark.parametrize("module", [optim, fast])
def test_sgd_without_momentum_is_plain_gradient_descent(module):
    p = {"x": np.array([1.0, 2.0])}
    opt = module.SGD(p, lr=0.5, momentum=0.0)
    for g in ([1.0, 1.0], [2.0, -2.0], [0.0, 4.0]):
        opt.step({"x": np.array(g)})
    np.testing.assert_allclose(p["x"], [1.0 - 0.5 * 3, 2.0 - 0.5 * 3], rtol=1e-15)
    assert opt.t == 3


def test_adam_counts_its_steps_and_fast_adam_takes_eps():
    rng = np.random.default_rng(2)
    p1, p2 = {"x": rng.normal(size=5)}, None
    p2 = {"x": p1["x"].copy()}
    a, b = optim.Adam(p1, lr=0.1, eps=0.5), fast.Adam(p2, lr=0.1, eps=0.5)
    x0 = p1["x"].copy()
    g = rng.normal(size=5)
    a.step({"x": g})
    b.step({"x": g})
    # first step: m_hat = g, v_hat = g^2, so the step is lr g / (|g| + eps)
    np.testing.assert_allclose(p1["x"], x0 - 0.1 * g / (np.abs(g) + 0.5), rtol=1e-14)
    np.testing.assert_allclose(p2["x"], p1["x"], rtol=1e-14)  # (fast: the folded form, to rounding)
    assert a.t == b.t == 1


def test_fast_adam_accepts_zero_weight_decay():
    p = {"x": np.array([1.0, 2.0])}
    opt = fast.Adam(p, weight_decay={"x": 0.0})
    assert float(opt.step({"x": np.array([1.0, 1.0])})) == 0.0


@pytest.mark.parametrize("module", [optim, fast])
def test_optimiser_state_errors_name_the_optimiser_and_at_most_five_names(module):
    params = {f"p{i}": np.zeros(2) for i in range(7)}
    opt = module.SGD(params)
    with pytest.raises(ValueError, match=r"^SGD: the saved state does not fit: missing "
                                         r"\['velocity/p0', 'velocity/p1', 'velocity/p2', 'velocity/p3', "
                                         r"'velocity/p4'\], unexpected \['velocity/q0', 'velocity/q1', "
                                         r"'velocity/q2', 'velocity/q3', 'velocity/q4'\]$"):
        opt.load_state_dict({"t": 0, **{f"velocity/q{i}": np.zeros(2) for i in range(7)}})
    state = opt.state_dict()
    state["velocity/p3"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"^SGD: the saved velocity/p3 has shape \(3,\), the parameter \(2,\)$"):
        opt.load_state_dict(state)


def test_optimiser_state_round_trip_keeps_every_moment():
    rng = np.random.default_rng(3)
    a = optim.SGD({"x": rng.normal(size=3)}, lr=0.1)
    a.step({"x": rng.normal(size=3)})
    b = optim.SGD({"x": a.params["x"].copy()}, lr=0.1)
    b.load_state_dict(a.state_dict())
    assert b.t == 1
    np.testing.assert_array_equal(b.state["velocity"]["x"], a.state["velocity"]["x"])


@pytest.mark.parametrize("module", [optim, fast])
def test_optimiser_errors_name_the_optimiser(module):
    with pytest.raises(ValueError, match="^Adam: no parameters to optimise$"):
        module.Adam({})
    with pytest.raises(ValueError, match="^SGD: learning rate must be positive, got 0$"):
        module.SGD({"x": np.zeros(2)}, lr=0)
    opt = module.Adam({"x": np.zeros(2)})
    with pytest.raises(ValueError, match=r"^Adam\.step: gradient names differ from the parameters "
                                         r"\(missing \['x'\], unexpected \['y'\]\)$"):
        opt.step({"y": np.zeros(2)})
    with pytest.raises(ValueError, match=r"^Adam\.step: gradient x has shape \(3,\), the parameter \(2,\)$"):
        opt.step({"x": np.zeros(3)})


@pytest.mark.parametrize("module", [optim, fast])
def test_adam_betas_from_zero_up_to_but_not_one(module):
    p = {"x": np.array([1.0, -1.0])}
    opt = module.Adam(p, lr=0.1, beta1=0.0, beta2=0.0)
    opt.step({"x": np.array([2.0, -3.0])})   # no averaging: each step is lr * g / (|g| + eps)
    np.testing.assert_allclose(p["x"], [0.9, -0.9], rtol=1e-7)
    for b1, b2 in ((1.0, 0.5), (0.5, 1.0), (1.5, 0.5), (0.5, 1.5), (-0.1, 0.5)):
        with pytest.raises(ValueError, match=rf"^Adam: betas must be in \[0, 1\), got {b1}, {b2}$"):
            module.Adam({"x": np.zeros(2)}, beta1=b1, beta2=b2)


def test_fast_adam_updates_a_parameter_of_exactly_one_block_whole():
    """Blocks are for parameters of MORE than one block: one of exactly BLOCK elements
    gets whole-array scratch, like the small ones."""
    side = int(math.isqrt(fast.BLOCK))
    opt = fast.Adam({"w": np.zeros((side, side), np.float32), "big": np.zeros((side, side + 1), np.float32)})
    assert [s.shape for s in opt.scratch["w"]] == [(side, side)]
    assert [s.shape for s in opt.scratch["big"]] == [(fast.BLOCK,)]


# ----------------------------------------------------------------------------- trainer

@pytest.mark.parametrize("make", [Trainer, fast.FastTrainer])
def test_trainer_state_round_trip_continues_bit_for_bit(make):
    """Two steps, then the state moves to a fresh trainer (other initial weights): both
    continue with the same parameters, optimiser moments and step count (the k schedule)."""
    data = _data()
    cfg = ACMRConfig(**SMALL, k=3)
    a = make(ACMR.for_data(data, cfg, rng=np.random.default_rng(0)))
    b = make(ACMR.for_data(data, cfg, rng=np.random.default_rng(1)))
    batch = list(training.batches(data.train, 9, np.random.default_rng(5)))
    for s in range(2):
        a.train_step(*batch[s], progress=s / 6)
    b.load_state_dict(a.state_dict())
    assert b.step_count == 2 and b.opt_emb.t == 2 and b.opt_adv.t == 1
    for s in range(2, 4):
        a.train_step(*batch[s], progress=s / 6)
        b.train_step(*batch[s], progress=s / 6)
    assert a.opt_adv.t == b.opt_adv.t == 2  # the modality classifier stepped at step 3 in both
    for k, p in a.model.named("params").items():
        np.testing.assert_array_equal(b.model.named("params")[k], p, err_msg=k)
    for k, v in a.opt_adv.state_dict().items():
        np.testing.assert_array_equal(b.opt_adv.state_dict()[k], v, err_msg=k)


def test_trainer_refuses_what_is_not_a_model():
    for make in (Trainer, fast.FastTrainer):
        with pytest.raises(TypeError, match="^Trainer: expected an ACMR model, got str$"):
            make("model")


# ----------------------------------------------------------------------------- model

def test_for_data_builds_on_the_requested_dtype():
    model = ACMR.for_data(_data(), ACMRConfig(**SMALL), rng=np.random.default_rng(0), dtype=np.float64)
    assert {p.dtype for p in model.named("params").values()} == {np.dtype(np.float64)}
    assert model.img_projector.standardize.mean.dtype == np.float64


def test_embedding_checks_and_chunks():
    data = _data()
    model = ACMR.for_data(data, ACMRConfig(**SMALL), rng=np.random.default_rng(0))
    x, t = data.test.img, data.test.txt           # 12 rows, 6 and 5 features
    whole_img, whole_txt = model.embed_images(x), model.embed_texts(t)
    assert model.embed_images(x[:1]).shape == (1, 4)  # one row is a valid input
    sizes = []
    for projector in (model.img_projector, model.txt_projector):
        real = projector.forward
        projector.forward = lambda raw, real=real: sizes.append(len(raw)) or real(raw)
    s_v, s_t = model.embed(x, t, chunk_size=5)
    assert sizes == [5, 5, 2, 5, 5, 2]               # at most chunk_size rows at a time, both modalities
    np.testing.assert_allclose(s_v, whole_img, rtol=1e-6)
    np.testing.assert_allclose(s_t, whole_txt, rtol=1e-6)
    with pytest.raises(ValueError, match=r"^expected features of shape \(n, d\) with n >= 1, got \(0, 6\)$"):
        model.embed_images(x[:0])
    with pytest.raises(ValueError, match=r"^expected features of shape \(n, d\) with n >= 1, got \(6,\)$"):
        model.embed_images(x[0])


def test_model_state_errors_name_at_most_five_parts():
    model = ACMR(6, 5, 2, ACMRConfig(**SMALL), rng=np.random.default_rng(0))
    names = sorted(model.state_dict())
    assert len(names) > 5
    listed = ", ".join(repr(n) for n in names[:5])
    with pytest.raises(ValueError, match=rf"^the saved model does not fit: missing \[{listed}\], "
                                         rf"unexpected \['a0', 'a1', 'a2', 'a3', 'a4'\]$"):
        model.load_state_dict({f"a{i}": np.zeros(1) for i in range(7)})


def test_acmr_sizes_config_and_dtype():
    rng = np.random.default_rng(0)
    model = ACMR(1, 1, 2, rng=rng)                      # sizes from 1 (and 2 classes) up
    assert model.config == ACMRConfig() and model.dtype == np.float32
    assert ACMR(1, 1, 2, rng=rng, dtype=np.float64).dtype == np.float64
    with pytest.raises(TypeError, match="^ACMR: config must be an ACMRConfig, got dict$"):
        ACMR(1, 1, 2, {}, rng=rng)
    for args, bad in (((0, 1, 2), "d_img must be a positive integer, got 0"),
                      ((1, 2.5, 2), "d_txt must be a positive integer, got 2.5"),
                      ((True, 1, 2), "d_img must be a positive integer, got True"),
                      ((1, 1, -3), "n_classes must be a positive integer, got -3"),
                      ((1, 1, 1), "n_classes must be at least 2, got 1")):
        with pytest.raises(ValueError, match=f"^ACMR: {bad}$"):
            ACMR(*args, rng=rng)


@pytest.mark.parametrize("triplet", ["hinge", "pull_push"])
def test_one_class_batches_and_alpha_zero_leave_l_imi_out(triplet):
    """A batch of one class (no negatives) or alpha = 0: L_imi is 0 in the model's own
    dtype and the gradients are those of the objective without it (noise=None)."""
    rng = np.random.default_rng(4)
    img, txt = rng.normal(size=(6, 6)), rng.normal(size=(6, 5))
    for labels, alpha in ((np.full(6, 1), 1.0), (np.array([0, 1, 0, 1, 0, 1]), 0.0)):
        cfg = ACMRConfig(**SMALL, triplet=triplet, alpha=alpha)
        a, b = (ACMR(6, 5, 2, cfg, rng=np.random.default_rng(0)) for _ in range(2))
        terms = a.loss_and_grads(img, txt, labels, rng.random((2, 6, 6)), lam=0.3)
        b.loss_and_grads(img, txt, labels, None, lam=0.3)
        assert float(terms["L_imi"]) == 0.0 and terms["L_imi"].dtype == np.float32, (labels, alpha)
        for k, g in b.named("grads").items():
            np.testing.assert_array_equal(a.named("grads")[k], g, err_msg=k)


def test_the_training_step_does_not_read_label_values(monkeypatch):
    """loss_and_grads asks both cross-entropies not to check the labels' range (data.py
    checked them once; on a GPU each check would wait for the device)."""
    seen = []
    real = losses.softmax_cross_entropy
    monkeypatch.setattr(losses, "softmax_cross_entropy",
                        lambda logits, labels, **kw: seen.append(kw.get("check_values", True)) or real(logits, labels, **kw))
    rng = np.random.default_rng(0)
    ACMR(6, 5, 2, ACMRConfig(**SMALL), rng=rng).loss_and_grads(
        rng.normal(size=(4, 6)), rng.normal(size=(4, 5)), np.array([0, 1, 0, 1]), rng.random((2, 4, 4)), 0.1)
    assert seen == [False, False]


# ----------------------------------------------------------------------------- training

def test_batches_accept_exactly_the_integers_from_1_to_n():
    data = _data()
    n = len(data.train)
    rng = np.random.default_rng(0)
    assert [len(b.labels) for b in training.batches(data.train, 1, rng)] == [1] * n
    assert [len(b.labels) for b in training.batches(data.train, n, rng)] == [n]
    for bad in (0, n + 1, True, 2.5):
        with pytest.raises(ValueError, match=rf"^batches: batch_size must be an integer from 1 to the {n} pairs, "
                                             rf"got {bad!r}$"):
            next(training.batches(data.train, bad, rng))


def test_batches_in_blocks_that_do_not_divide_the_epoch(monkeypatch):
    """9 steps drawn 4 at a time (4 + 4 + 1): the same batches as drawn at once, and no
    empty ones at the end."""
    data = _data(n_train=40)  # 36 training pairs, 9 batches of 4
    whole = list(training.batches(data.train, 4, np.random.default_rng(3)))
    monkeypatch.setattr(training, "NOISE_BLOCK_BYTES", 4 * 2 * 4 * 4 * 4)
    blocked = list(training.batches(data.train, 4, np.random.default_rng(3)))
    assert len(whole) == len(blocked) == 9
    for a, b in zip(whole, blocked):
        np.testing.assert_array_equal(a.img, b.img)
        np.testing.assert_array_equal(a.noise, b.noise)


def test_training_defaults_and_refusals():
    data = _data(n_train=80)  # 72 training pairs: room for the default batch of 64
    run = training.Training(data)
    assert run.config == ACMRConfig() and run.train == TrainConfig()
    assert isinstance(run.trainer, fast.FastTrainer)
    assert type(training.Training(data, fast=False).trainer) is Trainer
    small = _data()
    n = len(small.train)
    one_batch = training.Training(small, ACMRConfig(**SMALL), TrainConfig(epochs=1, batch_size=n))
    assert one_batch.steps_per_epoch == 1
    with pytest.raises(ValueError, match=rf"^batch_size {n + 1} is larger than the training set \({n} pairs\)$"):
        training.Training(small, ACMRConfig(**SMALL), TrainConfig(batch_size=n + 1))
    for config, train in ((ACMRConfig().to_dict(), TrainConfig()), (ACMRConfig(), TrainConfig().to_dict())):
        with pytest.raises(TypeError, match="^Training: config must be an ACMRConfig and train a TrainConfig$"):
            training.Training(small, config, train)


def test_epoch_times_are_measured_and_summed():
    import time
    run = training.Training(_data(), ACMRConfig(**SMALL), TrainConfig(epochs=2, batch_size=8))
    rows = []
    for _ in range(2):
        t0 = time.perf_counter()
        rows.append(run.train_epoch())
        elapsed = time.perf_counter() - t0
        assert 0 <= rows[-1]["val_seconds"] <= rows[-1]["seconds"] <= elapsed
    assert run.seconds == rows[0]["seconds"] + rows[1]["seconds"]


def test_run_hands_each_row_to_the_callback():
    run = training.Training(_data(), ACMRConfig(**SMALL), TrainConfig(epochs=2, batch_size=8))
    rows = []
    run.run(rows.append)
    assert rows == list(run.history) and [r["epoch"] for r in rows] == [1, 2]
    with pytest.raises(ValueError, match="^no epoch has finished: there is no best epoch to use$"):
        training.Training(_data(), ACMRConfig(**SMALL), TrainConfig(epochs=2, batch_size=8)).use_best()


def test_fit_passes_its_settings_on(monkeypatch):
    data, cfg = _data(), ACMRConfig(**SMALL)
    made = []
    real = training.Training.__init__

    def init(self, *args, **kwargs):
        real(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(training.Training, "__init__", init)
    model, _ = acmr_np.fit(data, cfg, TrainConfig(epochs=1, batch_size=8))
    assert model.config == cfg and isinstance(made[-1].trainer, fast.FastTrainer)
    acmr_np.fit(data, cfg, TrainConfig(epochs=1, batch_size=8), fast=False)
    assert type(made[-1].trainer) is Trainer


def test_evaluate_uses_the_k_given():
    data = _data()
    model = ACMR.for_data(data, ACMRConfig(**SMALL), rng=np.random.default_rng(0))
    out = training.evaluate(model, data.test, k=3)
    assert {"map_img2txt", "map_txt2img", "map_avg", "map3_img2txt", "map3_txt2img", "map3_avg"} <= set(out)
    assert not [key for key in out if key.startswith("map50")]


# ----------------------------------------------------------------------------- metrics

def _ap_loop(q, ql, g, gl, k=None):
    """AP of every query by a loop: cosine similarity, ties by gallery index."""
    out = []
    for i in range(len(q)):
        sims = [float(q[i] @ g[j] / np.linalg.norm(q[i]) / np.linalg.norm(g[j])) for j in range(len(g))]
        order = sorted(range(len(g)), key=lambda j: (-sims[j], j))[:k]
        hits, total = 0, 0.0
        for r, j in enumerate(order, start=1):
            if gl[j] == ql[i]:
                hits += 1
                total += hits / r
        out.append(total / hits if hits else 0.0)
    return np.array(out)


def test_paired_map_is_the_mean_of_both_directions():
    from acmr_np.metrics import paired_map
    rng = np.random.default_rng(7)
    img, txt = rng.normal(size=(15, 4)), rng.normal(size=(15, 4))
    labels = rng.integers(0, 3, size=15)
    i2t, t2i = _ap_loop(img, labels, txt, labels).mean(), _ap_loop(txt, labels, img, labels).mean()
    assert i2t != pytest.approx(t2i, abs=1e-3)  # the two directions differ here
    assert paired_map(img, txt, labels) == pytest.approx((i2t + t2i) / 2, abs=1e-12)
    assert paired_map(img, txt, labels, chunk_size=4) == pytest.approx((i2t + t2i) / 2, abs=1e-12)


def test_recall_of_a_query_with_one_relevant_item():
    """Gallery (1, 0), (0, 1), (-1, 0); the query (1, 0.1) of class 5 ranks them 0, 1, 2,
    and only item 1 is of class 5: recall 0, 1, 1 and precision 0, 1/2, 1/3."""
    from acmr_np.metrics import precision_recall_curve
    g = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    p, r = precision_recall_curve(np.array([[1.0, 0.1]]), np.array([5]), g, np.array([1, 5, 2]))
    np.testing.assert_allclose(r, [0.0, 1.0, 1.0], rtol=1e-15)
    np.testing.assert_allclose(p, [0.0, 1 / 2, 1 / 3], rtol=1e-15)


def test_every_metric_ranks_at_most_chunk_size_queries_at_once(monkeypatch):
    """Memory grows with chunk_size * n_gallery: each function passes its chunk_size on."""
    from acmr_np import metrics, ranking
    rng = np.random.default_rng(8)
    q, g = rng.normal(size=(7, 3)), rng.normal(size=(9, 3))
    ql, gl = rng.integers(0, 2, size=7), rng.integers(0, 2, size=9)
    rows = []
    real_rel, real_sort = metrics._ranked_relevance, ranking.stable_argsort_desc
    monkeypatch.setattr(metrics, "_ranked_relevance", lambda q, *a: rows.append(len(q)) or real_rel(q, *a))
    for module, name in ((metrics, "_stable_argsort_desc"), (ranking, "stable_argsort_desc")):
        monkeypatch.setattr(module, name, lambda sim, xp: rows.append(len(sim)) or real_sort(sim, xp))
    calls = {
        "average_precisions": lambda: metrics.average_precisions(q, ql, g, gl, chunk_size=3),
        "mean_average_precision": lambda: metrics.mean_average_precision(q, ql, g, gl, chunk_size=3),
        "paired_map": lambda: metrics.paired_map(q, q, ql, chunk_size=3),
        "precision_at_k": lambda: metrics.precision_at_k(q, ql, g, gl, [1, 4], chunk_size=3),
        "precision_recall_curve": lambda: metrics.precision_recall_curve(q, ql, g, gl, chunk_size=3),
        "evaluate_retrieval": lambda: metrics.evaluate_retrieval(q, q, ql, k=4, chunk_size=3),
        "retrieve": lambda: ranking.retrieve(q, g, k=2, chunk_size=3),
    }
    for name, call in calls.items():
        rows.clear()
        call()
        assert rows and max(rows) == 3, (name, rows)


def test_retrieve_defaults_and_shapes():
    from acmr_np.ranking import retrieve
    rng = np.random.default_rng(9)
    q, g = rng.normal(size=(2, 3)), rng.normal(size=(12, 3))
    idx, scores = retrieve(q, g)
    assert idx.shape == scores.shape == (2, 10)          # k = 10 by default
    idx, _ = retrieve(q[:1], g[:1], k=3)                  # one query, one gallery item
    assert idx.tolist() == [[0]]
    idx, _ = retrieve(np.ones((2, 1)), np.array([[2.0], [-1.0]]), k=1)   # width 1
    assert idx.tolist() == [[0], [0]]
    for bad_q, bad_g in ((q[0], g), (q, g[0]), (q[:0], g), (q, g[:0])):
        with pytest.raises(ValueError, match="^retrieve: expected non-empty query"):
            retrieve(bad_q, bad_g)
    with pytest.raises(acmr_np.metrics.InputError, match="^k must be a positive integer, got 0$"):
        retrieve(q, g, k=0)
    with pytest.raises(acmr_np.metrics.InputError, match="^chunk_size must be a positive integer, got 0$"):
        retrieve(q, g, chunk_size=0)


def test_metric_argument_errors_name_the_argument():
    from acmr_np.metrics import InputError, precision_at_k
    from acmr_np.ranking import rank_gallery
    q, ql = np.ones((3, 2)), np.zeros(3, int)
    with pytest.raises(InputError, match="^top must be a positive integer, got 0$"):
        rank_gallery(q, q, top=0)
    with pytest.raises(InputError, match="^ks must hold at least one k$"):
        precision_at_k(q, ql, q, ql, ks=[])
    with pytest.raises(InputError, match="^each k in ks must be a positive integer, got 0$"):
        precision_at_k(q, ql, q, ql, ks=[0])


def test_metric_integer_arguments_and_embedding_checks():
    from acmr_np.metrics import InputError, average_precisions
    q, ql = np.ones((3, 2)), np.zeros(3, int)
    for bad in (True, 2.0, 0):
        with pytest.raises(InputError, match=f"^chunk_size must be a positive integer, got {bad!r}$"):
            average_precisions(q, ql, q, ql, chunk_size=bad)
    with pytest.raises(InputError, match="^k must be a positive integer, got 0$"):
        average_precisions(q, ql, q, ql, k=0)
    for name, args in (("query", (q[:0], ql[:0], q, ql)), ("gallery", (q, ql, q[:0], ql[:0]))):
        with pytest.raises(InputError, match=rf"^{name} embeddings must be a non-empty 2-D array \(n, dim\), "
                                             rf"got shape \(0, 2\)$"):
            average_precisions(*args)
    with pytest.raises(InputError, match=r"^query embeddings must be a non-empty 2-D array \(n, dim\), got shape \(2,\)$"):
        average_precisions(q[0], ql[:1], q, ql)
    with pytest.raises(InputError, match="^gallery labels must be a 1-D array of integer class ids"):
        average_precisions(q, ql, q, ql.astype(float))


# ----------------------------------------------------------------------------- second run
# Written for the survivors of the mutation run on the code after the redesign (ranking.py,
# label rows, the fused CuPy kernels); grouped by module as above.

# optimisers

@pytest.mark.parametrize("module", [optim, fast])
def test_adam_default_learning_rate_is_1e_3(module):
    """Adam's first step moves each parameter by lr * g / (|g| + eps): 1e-3 against the
    sign of its gradient (Kingma and Ba's default step size)."""
    p = {"x": np.array([0.0, 0.0])}
    module.Adam(p).step({"x": np.array([0.5, -4.0])})
    np.testing.assert_allclose(p["x"], [-1e-3 * 0.5 / (0.5 + 1e-8), 1e-3 * 4.0 / (4.0 + 1e-8)], rtol=1e-9)


# model

def test_embedding_takes_lists_of_rows_as_arrays():
    model = ACMR(6, 5, 2, ACMRConfig(**SMALL), rng=np.random.default_rng(0))
    rows = np.random.default_rng(1).normal(size=(3, 6)).astype(np.float32)
    np.testing.assert_array_equal(model.embed_images(rows.tolist()), model.embed_images(rows))
    with pytest.raises(ValueError, match=r"^expected features of shape \(n, d\) with n >= 1, got \(0,\)$"):
        model.embed_texts([])


# training

def _run(**config):
    return training.Training(_data(), ACMRConfig(**{**SMALL, **config}), TrainConfig(epochs=3, batch_size=8))


def test_an_epoch_runs_with_numpys_float_warnings_silenced(monkeypatch):
    """The divergence guard reports overflow and NaN in one line; NumPy's own warnings
    (over, invalid, divide) would print before it: train_epoch turns all three off."""
    run = _run()
    monkeypatch.setattr(run, "_train_epoch", lambda: dict(np.geterr()))
    inside = run.train_epoch()
    assert {k: inside[k] for k in ("over", "invalid", "divide")} == dict.fromkeys(("over", "invalid", "divide"), "ignore")


def test_epochs_count_up_and_each_row_carries_the_learning_rate():
    run = _run(lr=3e-3)
    rows = [run.train_epoch() for _ in range(3)]
    assert run.epoch == 3 and [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["lr"] for r in rows] == [3e-3] * 3


def test_the_objective_is_alpha_imi_plus_beta_imd_plus_reg_plus_adv():
    run = _run(alpha=0.3, beta=2.0)
    terms = {"L_imi": 1.0, "L_imd": 10.0, "L_reg": 100.0, "L_adv": 1000.0}
    assert run.objective(terms) == pytest.approx(0.3 + 20.0 + 100.0 + 1000.0, rel=1e-15)


def test_the_start_loss_is_the_first_steps_objective(monkeypatch):
    run = _run(alpha=0.5, beta=3.0)
    seen = []
    real = run.trainer.train_step

    def spy(*args, **kwargs):
        terms, lam = real(*args, **kwargs)
        seen.append({k: float(v) for k, v in terms.items()})
        return terms, lam

    monkeypatch.setattr(run.trainer, "train_step", spy)
    run.train_epoch()
    first = seen[0]
    assert len(seen) > 1 and seen[1] != first
    want = 0.5 * first["L_imi"] + 3.0 * first["L_imd"] + first["L_reg"] + first["L_adv"]
    assert run.start_loss == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("start, loss, diverged", [
    (2.0, 2.0 * training.GROWTH_LIMIT, False),          # exactly the limit: not more than it
    (2.0, 2.0 * training.GROWTH_LIMIT * 1.001, True),
    (1e-3, 1e-3 * training.GROWTH_LIMIT * 1.5, True),   # a small first loss is its own scale
    (0.0, 1e-6 * training.GROWTH_LIMIT * 0.9, False),   # below 1e-6 the scale is 1e-6
    (0.0, 1e-6 * training.GROWTH_LIMIT * 1.1, True),
])
def test_the_divergence_guard_compares_with_the_limit_times_the_first_loss(monkeypatch, start, loss, diverged):
    """Diverged when the epoch's loss is more than GROWTH_LIMIT times max(first step's, 1e-6)."""
    run = _run()
    values = iter([start, loss])
    monkeypatch.setattr(run, "objective", lambda terms: next(values))
    if not diverged:
        run.train_epoch()
        assert run.epoch == 1 and len(run.history) == 1
        return
    with pytest.raises(FloatingPointError) as err:
        run.train_epoch()
    assert str(err.value) == (f"the loss grew from {start:.4g} at the first step to {loss:.4g} in epoch 1 "
                              f"(more than {training.GROWTH_LIMIT:g}-fold)")


def test_non_finite_weights_and_state_are_named():
    run = _run()
    run.train_epoch()
    params = run.model.named("params")
    name = list(params)[3]           # not the first: the message names the one that is bad
    params[name][0] = np.inf
    with pytest.raises(FloatingPointError, match=rf"^{name} holds NaN or infinite values after epoch 1$"):
        run.check_finite()
    params[name][0] = 0.0
    slot, state = next(iter(run.trainer.opt_adv.state.items()))
    key = list(state)[1]
    state[key][...] = np.nan
    with pytest.raises(FloatingPointError, match=rf"^opt_adv/{slot}/{key} holds NaN or infinite values after epoch 1$"):
        run.check_finite()


def test_non_finite_validation_embeddings_are_one_line():
    run = _run()
    params = run.model.named("params")
    params[next(k for k in params if k.startswith("img_projector"))][...] = np.nan
    with pytest.raises(FloatingPointError, match=r"^the validation embeddings hold NaN or infinite values after epoch 0$"):
        run.validation_map()


def test_evaluate_reports_precision_and_recall_in_both_directions_against_loops():
    data = _data()
    model = ACMR.for_data(data, ACMRConfig(**SMALL), rng=np.random.default_rng(0))
    split, n = data.test, len(data.test.labels)
    out = training.evaluate(model, split, precision_ks=(1, n, n + 1), recall_ks=(2, n))
    s_v, s_t = (np.asarray(e, dtype=np.float64) for e in model.embed(split.img, split.txt))
    labels = np.asarray(split.labels)
    for key, (q, g) in (("img2txt", (s_v, s_t)), ("txt2img", (s_t, s_v))):
        qn, gn = q / np.linalg.norm(q, axis=1, keepdims=True), g / np.linalg.norm(g, axis=1, keepdims=True)
        sim = qn @ gn.T
        hits_at_1, partner_in_2 = [], []
        for i in range(n):
            top = max(range(n), key=lambda j: (sim[i, j], -j))
            hits_at_1.append(labels[top] == labels[i])
            partner_in_2.append(sum(sim[i, j] > sim[i, i] for j in range(n)) < 2)
        assert out[f"precision_at_1_{key}"] == pytest.approx(np.mean(hits_at_1), abs=1e-12)
        # at k = n every gallery item is retrieved: the share of the query's class
        share = np.mean([np.mean(labels == labels[i]) for i in range(n)])
        assert out[f"precision_at_{n}_{key}"] == pytest.approx(share, abs=1e-12)
        assert f"precision_at_{n + 1}_{key}" not in out       # more than the gallery: left out
        assert out[f"recall_at_2_{key}"] == pytest.approx(np.mean(partner_in_2), abs=1e-12)
        assert f"recall_at_1_{key}" not in out and f"recall_at_{n}_{key}" not in out  # trivially 1: left out


# metrics and ranking

def test_label_errors_name_the_side_and_label_rows_must_be_as_wide():
    rng = np.random.default_rng(2)
    q, g = rng.normal(size=(2, 3)), rng.normal(size=(3, 3))
    rows3 = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]])
    with pytest.raises(InputError, match=r"^query label rows must hold only 0 and 1 \(multi-label data\)$"):
        metrics.average_precisions(q, np.array([[2, 0, 0], [0, 1, 0]]), g, rows3)
    with pytest.raises(InputError, match=r"^query labels of shape \(2, 4\) and gallery labels of shape \(3, 3\)"):
        metrics.average_precisions(q, np.array([[1, 0, 0, 0], [0, 1, 0, 0]]), g, rows3)


def test_recall_at_k_takes_one_pair_and_refuses_what_is_not_paired():
    from acmr_np.ranking import recall_at_k
    np.testing.assert_array_equal(recall_at_k(np.ones((1, 1)), np.ones((1, 1)), ks=(1, 3)), [1.0, 1.0])
    for q, g in ((np.ones((3, 2)), np.ones((3, 4))), (np.ones(3), np.ones(3)), (np.ones((0, 2)), np.ones((0, 2))),
                 (np.ones((3, 0)), np.ones((3, 0)))):
        with pytest.raises(InputError, match=rf"^recall_at_k: expected paired embeddings of one shape "
                                                     rf"\(n, d\), n and d >= 1, got {re.escape(str(q.shape))} "
                                                     rf"and {re.escape(str(g.shape))}$"):
            recall_at_k(q, g)
    x = np.eye(3)
    with pytest.raises(InputError, match=r"^each k in ks must be a positive integer, got 0$"):
        recall_at_k(x, x, ks=(1, 0))
    with pytest.raises(InputError, match=r"^chunk_size must be a positive integer, got 0$"):
        recall_at_k(x, x, chunk_size=0)
    with pytest.raises(InputError, match=r"^chunk_size must be a positive integer, got 0$"):
        acmr_np.retrieve(x, x, k=1, chunk_size=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_embeddings_are_refused_not_ranked(dtype):
    """All-NaN queries would score a perfect Recall@K (no item is "more similar" than
    NaN), and NaN sorts first in the float32 ranking but last in the float64 one."""
    from acmr_np.ranking import recall_at_k
    q = np.eye(4, dtype=dtype)
    bad = q.copy()
    bad[1, 2] = np.nan
    for a, b in ((bad, q), (q, bad)):
        with pytest.raises(InputError, match=r"^recall_at_k: the embeddings contain NaN or inf$"):
            recall_at_k(a, b)
        with pytest.raises(InputError, match=r"^retrieve: the embeddings contain NaN or inf$"):
            acmr_np.retrieve(a, b, k=2)
