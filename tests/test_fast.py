"""The fast path (acmr_np.fast) against the textbook code it speeds up: the same numbers,
bit for bit (Adam: to rounding, its bias corrections folded). Also what the speed work must not change: float32 stays float32 through a
training step, and a skipped input gradient changes no weight gradient."""
import math

import numpy as np
import pytest

from acmr_np import fast, optim
from acmr_np.fast import FastTrainer, argsort_desc_float32
from acmr_np.layers import Linear
from acmr_np.metrics import average_precisions
from acmr_np.model import ACMR, ACMRConfig


def _arrays_of(obj):
    """Every NumPy array held directly in an object's attributes (dicts included)."""
    out = {}
    for name, value in vars(obj).items():
        if isinstance(value, np.ndarray):
            out[name] = value
        elif isinstance(value, dict):
            out.update({f"{name}[{k}]": v for k, v in value.items() if isinstance(v, np.ndarray)})
        elif isinstance(value, (list, tuple)):
            out.update({f"{name}{i}": v for i, v in enumerate(value) if isinstance(v, np.ndarray)})
    return out


@pytest.mark.parametrize("overrides", [
    {},  # the defaults
    dict(sampling="hardest", triplet="pull_push", distance="euclidean"),
])
def test_a_float32_step_holds_no_float64(overrides):
    rng = np.random.default_rng(0)
    B, d_img, d_txt, c = 12, 9, 7, 3
    model = ACMR(d_img, d_txt, c, ACMRConfig(img_hidden=(8,), txt_hidden=(6,), dim=5, disc_hidden=4,
                                             k=1, **overrides), rng=rng)
    model.img_projector.standardize.fit(rng.normal(size=(40, d_img)))  # float64 in
    model.txt_projector.standardize.fit(rng.normal(size=(40, d_txt)))
    img, txt = rng.normal(size=(B, d_img)), rng.normal(size=(B, d_txt))  # raw float64 features
    labels = np.arange(B) % c
    noise = rng.random((2, B, B), dtype=np.float32)
    trainer = FastTrainer(model)
    terms, _ = trainer.train_step(img, txt, labels, noise, progress=0.5)

    found = {}
    for part in model.PARTS:  # parameters, gradients and cached activations of every layer
        for i, layer in enumerate(getattr(model, part).layers):
            found.update({f"{part}.{i}.{k}": a for k, a in _arrays_of(layer).items()})
    for part in ("img_projector", "txt_projector"):
        found.update({f"{part}.standardize.{k}": a for k, a in _arrays_of(getattr(model, part).standardize).items()})
    for name in ("img_normalize", "txt_normalize", "grl"):
        found.update({f"{name}.{k}": a for k, a in _arrays_of(getattr(model, name)).items()})
    for name, opt in (("opt_emb", trainer.opt_emb), ("opt_adv", trainer.opt_adv)):
        for slot, arrays in opt.state.items():  # m and v
            found.update({f"{name}.{slot}.{k}": a for k, a in arrays.items()})
        for k, buffers in opt.scratch.items():
            found.update({f"{name}.scratch{i}.{k}": a for i, a in enumerate(buffers)})
    found.update({f"terms.{k}": np.asarray(v) for k, v in terms.items()})

    floats = {k: a.dtype for k, a in found.items() if a.dtype.kind in "fc"}
    assert floats and all(dt == np.float32 for dt in floats.values()), \
        {k: str(dt) for k, dt in floats.items() if dt != np.float32}
    # the check was not vacuous: every kind of array was there to be checked
    for needle in ("params[W]", "params[b]", "grads[W]", "grads[b]", ".0.x", ".1.out", "opt_emb.m.",
                   "opt_emb.v.", "opt_emb.scratch1.", "opt_adv.scratch0.", "terms.L_adv", "terms.adv_acc",
                   "terms.L_reg", "standardize.mean", "standardize.std"):
        assert any(needle in k for k in floats), needle
    if overrides.get("distance", "cosine") == "cosine":
        assert "img_normalize.norm" in floats


def _shapes():
    return {"big": (3, fast.BLOCK + 17), "small": (5,), "odd": (fast.BLOCK // 2 + 3, 3),
            "strided_grad": (2, fast.BLOCK + 3)}


def _folded_adam(p, g, m, v, t, lr=3e-3, b1=0.9, b2=0.999, eps=1e-8):
    """Adam with its bias corrections folded into the step size, on whole arrays, written
    the plain way (Kingma & Ba, Section 2): the reference fast.Adam must equal bit for bit."""
    corr2 = math.sqrt(1 - b2 ** t)
    lr_t, eps_t = lr * corr2 / (1 - b1 ** t), eps * corr2
    m *= b1
    m += g * (1 - b1)
    v *= b2
    v += g * g * (1 - b2)
    p -= m / (np.sqrt(v) + eps_t) * lr_t


def test_blocked_adam_is_the_folded_adam_bit_for_bit_and_the_textbook_to_rounding():
    """Blocks (with their block-long scratch), whole arrays, weight decay on some of them
    and a strided gradient: bit for bit the folded update on whole arrays of the gradient
    plus c p (what loss_and_grads returns with L_reg's gradient added), and optim.Adam's
    textbook numbers to float32 rounding: after 5 steps no parameter differs by more than
    1e-7 of the array's largest entry (measured: 5.3e-8, a few units in the last place)."""
    rng = np.random.default_rng(1)
    decay = {"big": 2e-3, "small": 0.5, "strided_grad": 0.1}
    params = {k: rng.normal(size=s).astype(np.float32) for k, s in _shapes().items()}
    folded = {k: (p.copy(), np.zeros_like(p), np.zeros_like(p)) for k, p in params.items()}
    plain_params = {k: p.copy() for k, p in params.items()}
    opt = fast.Adam(params, lr=3e-3, weight_decay=decay)
    plain = optim.Adam(plain_params, lr=3e-3)
    # scratch: one block long for blocked parameters, whole for small ones; a second
    # buffer (g + c p) only where there is weight decay
    assert [s.shape for s in opt.scratch["big"]] == [(fast.BLOCK,)] * 2
    assert [s.shape for s in opt.scratch["small"]] == [(5,)] * 2
    assert [s.shape for s in opt.scratch["odd"]] == [(fast.BLOCK,)]
    for t in range(1, 6):
        grads = {k: rng.normal(size=s).astype(np.float32) for k, s in _shapes().items()}
        grads["strided_grad"] = np.asfortranarray(grads["strided_grad"])  # not C-contiguous
        before = {k: g.copy() for k, g in grads.items()}
        expected_penalty = sum(c / 2 * np.sum(folded[k][0].astype(np.float64) ** 2) for k, c in decay.items())
        penalised = {k: g + np.float32(decay[k]) * folded[k][0] if k in decay else g for k, g in grads.items()}
        plain.step({k: g + np.float32(decay[k]) * plain_params[k] if k in decay else g for k, g in grads.items()})
        penalty = opt.step(grads)
        for k, (p, m, v) in folded.items():
            _folded_adam(p, penalised[k], m, v, t)
        assert penalty.dtype == np.float32
        np.testing.assert_allclose(penalty, expected_penalty, rtol=1e-5)
        for k in grads:
            np.testing.assert_array_equal(grads[k], before[k])  # step leaves the gradients alone
    worst = 0.0
    for k, (p, m, v) in folded.items():
        np.testing.assert_array_equal(params[k], p)
        np.testing.assert_array_equal(opt.state["m"][k], m)
        np.testing.assert_array_equal(opt.state["v"][k], v)
        assert params[k].dtype == np.float32
        diff = np.abs(params[k] - plain_params[k]).max() / np.abs(plain_params[k]).max()
        assert diff < 1e-7, (k, diff)
        worst = max(worst, float(diff))
    assert worst > 0  # the fold does move the last bits somewhere (else this test proves nothing)
    assert fast.Adam(params).step(grads) == 0


def test_blocked_sgd_is_the_textbook_sgd_bit_for_bit():
    rng = np.random.default_rng(4)
    params = {k: rng.normal(size=s).astype(np.float32) for k, s in _shapes().items()}
    plain_params = {k: p.copy() for k, p in params.items()}
    opt, plain = fast.SGD(params, lr=0.1, momentum=0.5), optim.SGD(plain_params, lr=0.1, momentum=0.5)
    for _ in range(3):
        grads = {k: rng.normal(size=s).astype(np.float32) for k, s in _shapes().items()}
        opt.step(grads)
        plain.step(grads)
    for k in params:
        np.testing.assert_array_equal(params[k], plain_params[k])


def test_adam_updates_a_non_contiguous_parameter_in_place():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(fast.BLOCK // 64 + 1, 128)).astype(np.float32)
    view = base[:, ::2]  # a strided view: updated whole, not in blocks
    expected = view.copy()
    fast.Adam({"w": view}, lr=3e-3).step({"w": np.ones_like(view)})
    _folded_adam(expected, np.ones_like(expected), np.zeros_like(expected), np.zeros_like(expected), 1)
    np.testing.assert_array_equal(base[:, ::2], expected)


def test_fast_optimisers_check_like_the_textbook_ones():
    with pytest.raises(ValueError, match=r"weight_decay names parameters it does not optimise: \['y'\]"):
        fast.Adam({"x": np.zeros(2)}, weight_decay={"y": 0.1})
    with pytest.raises(ValueError, match="coefficients must be >= 0"):
        fast.Adam({"x": np.zeros(2)}, weight_decay={"x": -0.1})
    with pytest.raises(ValueError, match=r"gradient x has shape \(3,\), the parameter \(2,\)"):
        fast.SGD({"x": np.zeros(2)}).step({"x": np.zeros(3)})


def test_fast_trainer_uses_the_blocked_optimisers_with_l_reg_as_decay():
    model = ACMR(5, 4, 3, ACMRConfig(img_hidden=(6,), txt_hidden=(6,), dim=3, l2=0.02),
                 rng=np.random.default_rng(0))
    trainer = FastTrainer(model)
    assert isinstance(trainer.opt_emb, fast.Adam) and isinstance(trainer.opt_adv, fast.Adam)
    assert trainer.opt_emb.weight_decay == {k: 0.04 for k in model.l_reg_weights()}
    assert trainer.opt_adv.weight_decay == {}
    no_decay = FastTrainer(ACMR(5, 4, 3, ACMRConfig(l2=0.0), rng=np.random.default_rng(0)))
    assert no_decay.opt_emb.weight_decay == {}


def test_skipping_the_input_gradient_changes_no_weight_gradient():
    rng = np.random.default_rng(3)
    x, dout = rng.normal(size=(6, 4)), rng.normal(size=(6, 3))
    full, skip = (Linear(4, 3, rng=np.random.default_rng(0), dtype=np.float64) for _ in range(2))
    skip.input_grad = False
    np.testing.assert_array_equal(full.forward(x), skip.forward(x))
    assert full.backward(dout).shape == (6, 4) and skip.backward(dout) is None
    for k in ("W", "b"):
        np.testing.assert_array_equal(full.grads[k], skip.grads[k])
    model = ACMR(5, 4, 3, ACMRConfig(img_hidden=(6,), txt_hidden=(6,), dim=3), rng=rng)
    for mlp in (model.img_projector, model.txt_projector):  # their input is data
        assert mlp.linears()[0].input_grad is False and all(l.input_grad for l in mlp.linears()[1:])
    for mlp in (model.label_classifier, model.modality_classifier):  # their input is s
        assert all(l.input_grad for l in mlp.linears())


def _tie_heavy_float32(rng, rows, cols):
    sim = rng.normal(size=(rows, cols)).astype(np.float32)
    sim[:, ::3] = np.round(sim[:, ::3], 1)  # many exact ties
    sim[:, 1::7] = 0.5
    sim[0, :4] = [-0.0, 0.0, -0.0, 0.0]     # equal values with different bits
    sim[1, :6] = [np.finfo(np.float32).max, -np.finfo(np.float32).max, np.finfo(np.float32).tiny,
                  -np.finfo(np.float32).tiny, 1e-45, -1e-45]
    return sim


def test_float32_ranking_is_the_stable_sort():
    rng = np.random.default_rng(4)
    for rows, cols in ((1, 1), (3, 2), (20, 997), (4, 20000)):
        sim = _tie_heavy_float32(rng, rows, cols) if cols >= 6 else rng.normal(size=(rows, cols)).astype(np.float32)
        order = argsort_desc_float32(sim)
        np.testing.assert_array_equal(order, np.argsort(-sim, axis=1, kind="stable"))
        assert order.dtype.kind == "i"


def test_float32_map_matches_float64_on_exact_similarities():
    # Unit axis vectors: every similarity is exactly 1, 0 or -1 in both precisions, so
    # both rank identically (ties by index) and must give the same AP, in any chunking.
    rng = np.random.default_rng(5)
    axes = np.vstack([np.eye(4), -np.eye(4)])
    q, g = axes[rng.integers(0, 8, 40)], axes[rng.integers(0, 8, 300)]
    ql, gl = rng.integers(0, 3, 40), rng.integers(0, 3, 300)
    want = average_precisions(q, ql, g, gl)
    for chunk_size in (1, 7, 40):
        got = average_precisions(q.astype(np.float32), ql, g.astype(np.float32), gl, chunk_size=chunk_size)
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(average_precisions(q.astype(np.float32), ql, g.astype(np.float32), gl, k=25),
                                  average_precisions(q, ql, g, gl, k=25))
