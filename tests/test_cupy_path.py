"""The CuPy path of training and evaluation, run on the strict CuPy stand-in
(tests/cupy_standin.py) in float32 as trained, on every CI run: what the gpu-marked
tests (float64, a GPU) do not cover.

The stand-in computes with NumPy, so the device results must equal the NumPy backend's
bit for bit; with its reversed summation order (as a GPU's reductions may add) they must
agree to rounding. It also counts kernel launches, synchronisations and transfers: a
training step must not wait for the device or copy anything, an epoch and a validation
only at their ends (docs/PERFORMANCE.md quotes the numbers that
benchmarks/count_launches.py prints; they are asserted here).
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from acmr_np import ablations, baselines, fast, metrics, optim, plots, ranking, training
from acmr_np.config import ACMRConfig
from acmr_np.errors import InputError
from acmr_np.fast import FastTrainer
from acmr_np.model import ACMR
from acmr_np.synthetic import make_synthetic
from acmr_np.train import main
from acmr_np.trainer import Trainer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


@pytest.fixture
def cp(cupy_standin):
    return cupy_standin


def _same(dev, host, what=""):
    """A device array equal to a host array (or scalar) bit for bit, dtype and shape included."""
    assert type(dev).__module__ == "cupy", (what, type(dev))
    got, want = dev.get(), np.asarray(host)
    assert got.dtype == want.dtype and got.shape == want.shape, (what, got.dtype, want.dtype, got.shape, want.shape)
    assert np.array_equal(got, want, equal_nan=True), (what, np.abs(got - want).max())


def _counts(c):
    return c.syncs, c.transfers, c.launches


# ----------------------------------------------------------------------------- optimisers

SHAPES = {"big": (3, fast.BLOCK + 17), "small": (5,), "odd": (fast.BLOCK // 2 + 3, 3),
          "strided_grad": (2, fast.BLOCK + 3)}
DECAY = {"big": 2e-3, "small": 0.5, "strided_grad": 0.1}


def _grads(rng, dtype):
    grads = {k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()}
    grads["strided_grad"] = np.asfortranarray(grads["strided_grad"])  # not C-contiguous
    grads["view"] = rng.normal(size=(7, 4)).astype(dtype)
    return grads


def _params(rng, dtype, xp_asarray):
    """Parameters of SHAPES, plus "view": every other column of a (7, 8) array (strided)."""
    host = {k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()}
    base = rng.normal(size=(7, 8)).astype(dtype)
    dev = {k: xp_asarray(v) for k, v in host.items()}
    dev_base = xp_asarray(base)
    host["view"], dev["view"] = base[:, ::2], dev_base[:, ::2]
    return host, dev, base, dev_base


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_adam_is_the_blocked_adam_bit_for_bit_in_one_kernel_per_parameter(cp, dtype):
    """The blocked NumPy Adam (tests/test_fast.py: the textbook numbers) against the fused
    one on the device, with weight decay on some parameters, a strided gradient and a
    strided parameter. Launches per step, by hand: one kernel per parameter (5), one dot
    product per decayed parameter (3), one kernel adding the penalty up (1)."""
    rng = np.random.default_rng(1)
    host, dev, base, dev_base = _params(rng, dtype, cp.asarray)
    h_opt = fast.Adam(host, lr=3e-3, weight_decay=DECAY)
    d_opt = fast.Adam(dev, lr=3e-3, weight_decay=DECAY)
    assert all(buffers == [] for buffers in d_opt.scratch.values())  # the kernel needs no scratch
    for _ in range(3):
        grads = _grads(rng, dtype)
        d_grads = {k: cp.asarray(g) for k, g in grads.items()}
        h_penalty = h_opt.step(grads)
        with cp.counting() as c:
            d_penalty = d_opt.step(d_grads)
        assert _counts(c) == (0, 0, 5 + 3 + 1), c
        # the logged penalty is summed per parameter here, per block on the CPU: the same
        # value to rounding ("big" spans blocks)
        assert d_penalty.dtype == dtype and d_penalty.shape == ()
        np.testing.assert_allclose(d_penalty.get(), h_penalty, rtol=1e-6 if dtype == np.float32 else 1e-14)
        for k in host:
            _same(dev[k], host[k], k)
            _same(d_opt.state["m"][k], h_opt.state["m"][k], f"m {k}")
            _same(d_opt.state["v"][k], h_opt.state["v"][k], f"v {k}")
        _same(d_grads["big"], grads["big"])  # the gradients are left as they are
    _same(dev_base, base, "the strided parameter was updated in place")
    plain = fast.Adam({"x": dev["small"]})
    with cp.counting() as c:   # without decay: the kernel, and a zero penalty
        penalty = plain.step({"x": d_grads["small"]})
    assert c.launches == 1 + 1 and float(penalty) == 0 and penalty.dtype == dtype and penalty.shape == ()
    assert fast._fused(cp) is fast._fused(cp)  # compiled once per module (cupy.fuse caches in its object)


def test_fused_sgd_is_the_blocked_sgd_bit_for_bit_in_one_kernel_per_parameter(cp):
    rng = np.random.default_rng(4)
    host, dev, base, dev_base = _params(rng, np.float32, cp.asarray)
    h_opt, d_opt = fast.SGD(host, lr=0.1, momentum=0.9), fast.SGD(dev, lr=0.1, momentum=0.9)
    for _ in range(3):
        grads = _grads(rng, np.float32)
        d_grads = {k: cp.asarray(g) for k, g in grads.items()}
        h_opt.step(grads)
        with cp.counting() as c:
            d_opt.step(d_grads)
        assert _counts(c) == (0, 0, len(host)), c
    for k in host:
        _same(dev[k], host[k], k)
        _same(d_opt.state["velocity"][k], h_opt.state["velocity"][k], k)
    _same(dev_base, base)


@pytest.mark.parametrize("make", [lambda p: fast.Adam(p, lr=1e-2, weight_decay={"a": 0.1}),
                                  lambda p: fast.SGD(p, lr=0.1, momentum=0.9),
                                  lambda p: optim.Adam(p, lr=1e-2)],
                         ids=["fast.Adam", "fast.SGD", "optim.Adam"])
def test_optimiser_state_round_trip_on_the_device(cp, make):
    """state_dict copies each state array to the host once (one sync each) and nothing
    else; load_state_dict copies each back (one transfer each) and waits for nothing; the
    reloaded optimiser then continues exactly as the original."""
    rng = np.random.default_rng(2)
    params = {"a": cp.asarray(rng.normal(size=(6, 5)).astype(np.float32)),
              "b": cp.asarray(rng.normal(size=(5,)).astype(np.float32))}
    grads = [{k: cp.asarray(rng.normal(size=p.shape).astype(np.float32)) for k, p in params.items()}
             for _ in range(4)]
    opt = make(params)
    for g in grads[:2]:
        opt.step(g)
    n_arrays = len(opt.slots) * len(params)
    with cp.counting() as c:
        state = opt.state_dict()
    assert (c.syncs, c.transfers) == (n_arrays, n_arrays), c
    assert state["t"] == 2 and all(type(v) is np.ndarray and v.dtype == np.float32
                                   for k, v in state.items() if k != "t")
    copy = {k: p.copy() for k, p in params.items()}
    again = make(copy)
    with cp.counting() as c:
        again.load_state_dict(state)
    assert (c.syncs, c.transfers) == (0, n_arrays), c
    for g in grads[2:]:
        opt.step(g)
        again.step(g)
    for k in params:
        _same(copy[k], params[k].get(), k)


@pytest.mark.gpu
def test_fused_optimisers_on_a_real_gpu():
    """The fused kernels on real CuPy (the stand-in runs this too, with the gpu-marked tests):
    they compile and give NumPy's numbers to rounding (a GPU compiler may contract a * b + c
    into one rounding, so not bit for bit there)."""
    import cupy
    rng = np.random.default_rng(6)
    shapes = {"W": (300, 70), "b": (70,), "strided_grad": (40, 30)}
    host = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    for make in (lambda p: fast.Adam(p, lr=1e-2, weight_decay={"W": 0.1}),
                 lambda p: fast.SGD(p, lr=0.05, momentum=0.9)):
        h = {k: v.copy() for k, v in host.items()}
        d = {k: cupy.asarray(v) for k, v in host.items()}
        h_opt, d_opt = make(h), make(d)
        for _ in range(3):
            grads = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
            grads["strided_grad"] = np.asfortranarray(grads["strided_grad"])
            h_opt.step(grads)
            d_opt.step({k: cupy.asarray(g) for k, g in grads.items()})
        for k in host:
            assert d[k].dtype == np.float32
            np.testing.assert_allclose(cupy.asnumpy(d[k]), h[k], rtol=1e-5, atol=1e-6, err_msg=k)


# ----------------------------------------------------------------------------- training steps

D_IMG, D_TXT, C, B = 30, 20, 4, 64


def _models(cp, config, seed=0):
    """The same model on both backends (same initial draws, same input statistics)."""
    fit = np.random.default_rng(99)
    stats = fit.normal(size=(200, D_IMG)) * 3 + 1, fit.normal(size=(200, D_TXT)) * 2
    out = []
    for xp in (np, cp):
        m = ACMR(D_IMG, D_TXT, C, config, rng=np.random.default_rng(seed), xp=xp)
        m.img_projector.standardize.fit(stats[0])
        m.txt_projector.standardize.fit(stats[1])
        out.append(m)
    return out


def _batch(rng):
    return (rng.normal(size=(B, D_IMG)).astype(np.float32) * 3 + 1,
            rng.normal(size=(B, D_TXT)).astype(np.float32) * 2,
            rng.integers(0, C, size=B), rng.random((2, B, B), dtype=np.float32))


def _device_floats(model, trainer):
    """dtype of every float device array a step leaves behind: parameters, gradients, the
    layers' caches, the optimisers' state."""
    found = {}
    for part in model.PARTS + ("img_normalize", "txt_normalize"):
        obj = getattr(model, part)
        for i, layer in enumerate(getattr(obj, "layers", [obj])):
            for name, value in vars(layer).items():
                for k, a in (value.items() if isinstance(value, dict) else [(None, value)]):
                    if type(a).__module__ == "cupy":
                        found[f"{part}.{i}.{name}.{k}"] = a.dtype
    for name in ("opt_emb", "opt_adv"):
        for slot, arrays in getattr(trainer, name).state.items():
            found.update({f"{name}.{slot}.{k}": a.dtype for k, a in arrays.items()})
    return found


@pytest.mark.parametrize("overrides", [
    {},                                                  # the defaults: random sampling, hinge, cosine
    dict(triplet="pull_push", distance="euclidean"),
    dict(sampling="hardest", triplet="pull_push", push_weight=0.7),
])
@pytest.mark.parametrize("trainer_class", [FastTrainer, Trainer])
def test_float32_steps_on_the_device_are_numpys_bit_for_bit_without_a_sync(cp, overrides, trainer_class):
    config = ACMRConfig(k=2, **overrides)          # k = 2: the modality classifier steps too
    host, dev = _models(cp, config)
    host_trainer, dev_trainer = trainer_class(host), trainer_class(dev)
    rng = np.random.default_rng(3)
    for step in range(3):
        img, txt, labels, noise = _batch(rng)
        args = [cp.asarray(a) for a in (img, txt, labels, noise)]
        h_terms, h_lam = host_trainer.train_step(img, txt, labels, noise, progress=step / 10)
        with cp.counting() as c:
            d_terms, d_lam = dev_trainer.train_step(*args, progress=step / 10)
        assert (c.syncs, c.transfers) == (0, 0), c   # nothing waits, nothing is copied
        assert d_lam == h_lam and set(d_terms) == set(h_terms)
        for k in h_terms:
            _same(d_terms[k], h_terms[k], k)
        for k, p in host.named("params").items():
            _same(dev.named("params")[k], p, k)
    assert float(h_terms["L_imi"]) > 0 and 0 <= float(h_terms["adv_acc"]) <= 1
    floats = _device_floats(dev, dev_trainer)
    assert len(floats) > 40 and set(floats.values()) == {np.dtype(np.float32)}, floats


def test_fast_and_textbook_steps_agree_on_the_device(cp):
    """FastTrainer (fused Adam, L_reg as weight decay) and the textbook Trainer give the
    same parameters on the device too, to float32 rounding (Adam's bias corrections are
    folded; tests/test_model.py checks the same on NumPy)."""
    config = ACMRConfig(k=2, l2=0.01)
    _, a = _models(cp, config)
    _, b = _models(cp, config)
    ta, tb = FastTrainer(a), Trainer(b)
    rng = np.random.default_rng(4)
    for step in range(3):
        args = [cp.asarray(x) for x in _batch(rng)]
        ta.train_step(*args, progress=step / 3)
        tb.train_step(*args, progress=step / 3)
    for k, p in b.named("params").items():
        got, want = a.named("params")[k].get(), p.get()
        assert got.dtype == want.dtype, k
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8, err_msg=k)  # steps of ~1e-3 in float32


def test_a_step_with_the_gpus_summation_order_agrees_to_rounding(cp):
    """Sums and products added in reversed order (as a GPU may add them) move the last bits
    only: three steps agree with NumPy to float32 rounding, including entries whose exact
    value is 0 (hence the absolute tolerance)."""
    host, dev = _models(cp, ACMRConfig(k=2))
    ht, dt = FastTrainer(host), FastTrainer(dev)
    rng = np.random.default_rng(5)
    moved = False
    with cp.reversed_order():
        for step in range(3):
            img, txt, labels, noise = _batch(rng)
            ht.train_step(img, txt, labels, noise, progress=step / 3)
            terms, _ = dt.train_step(*[cp.asarray(a) for a in (img, txt, labels, noise)], progress=step / 3)
    for k, p in host.named("params").items():
        got = dev.named("params")[k].get()
        moved |= not np.array_equal(got, p)
        np.testing.assert_allclose(got, p, rtol=1e-4, atol=1e-6, err_msg=k)
    assert moved  # the order did change the rounding


def _loss_and_grads_launches(cp, model, batch):
    with cp.counting() as c:
        model.loss_and_grads(*batch, 0.01, l_reg=False)
    return c.launches


def _load_benchmark(name):
    path = os.path.join(ROOT, "benchmarks", f"{name}.py")
    if not os.path.isfile(path):
        pytest.skip(f"needs benchmarks/{name}.py of the source checkout")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launches_syncs_and_transfers_of_the_default_training_loop(cp):
    """benchmarks/count_launches.py on ACMRConfig defaults, batch 64 (the numbers
    docs/PERFORMANCE.md quotes), against counts made by hand:

    - a step of FastTrainer: loss_and_grads' launches (counted on their own here), plus one
      fused kernel per embedding-player parameter (10), one dot product per weight L_reg
      decays (4) and one kernel adding L_reg up (1); on the modality classifier's steps
      (every k-th, the first of a cycle) one kernel per its parameter (4) and a zero
      penalty (1). At most 220 launches; no sync, no transfer;
    - an epoch without its validation: the order of the pairs and one block of triplet
      noise copied in (2), the epoch's loss log copied out (1 sync), the divergence
      guard's finiteness flags of every parameter and moment (1 sync), and on an epoch that
      sets a new best the model's 18 state arrays copied out (4 + 4 projector W/b, 2 label
      classifier, 4 modality classifier, 4 standardisation statistics);
    - a validation: one copy (1 sync, 1 transfer) of both directions' APs and the inputs'
      finiteness flags; the validation pairs stay on the device."""
    r = _load_benchmark("count_launches").measure(cp)
    model = ACMR(128, 24, 10, ACMRConfig(), rng=np.random.default_rng(0), xp=cp)
    rng = np.random.default_rng(0)
    batch = [cp.asarray(a) for a in (rng.normal(size=(64, 128)).astype(np.float32),
                                     rng.normal(size=(64, 24)).astype(np.float32),
                                     rng.integers(0, 10, 64), rng.random((2, 64, 64), dtype=np.float32))]
    forward_backward = _loss_and_grads_launches(cp, model, batch)
    plain = forward_backward + 10 + 4 + 1
    assert r["fast_step"]["launches"] == [plain + 4 + 1] + [plain] * 4, r["fast_step"]
    assert max(r["fast_step"]["launches"]) <= 220
    assert (r["fast_step"]["syncs"], r["fast_step"]["transfers"]) == (0, 0)
    assert (r["textbook_step"]["syncs"], r["textbook_step"]["transfers"]) == (0, 0)
    assert min(r["textbook_step"]["launches"]) > 340  # the unfused optimiser, for comparison
    assert r["state_arrays"] == 18
    for epoch in ("epoch1", "epoch2"):
        e = r[epoch]
        assert e["steps"] == 29 and (e["syncs_in_steps"], e["transfers_in_steps"]) == (0, 0)
        syncs = 2 + 18 * e["new_best"]
        rest = e["epoch_minus_validation"]
        assert (rest["syncs"], rest["transfers"]) == (syncs, 2 + syncs), rest
        assert rest["by_kind"].get("transfer asarray") == 2
        val = e["validation"]
        assert (val["syncs"], val["transfers"]) == (1, 1), val
    assert r["epoch1"]["new_best"]  # the first epoch is always the best so far


# ----------------------------------------------------------------------------- evaluation

def _embeddings(n=300, dim=16, n_classes=6, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    centers = rng.normal(size=(n_classes, dim))
    img, txt = ((centers[labels] + rng.normal(scale=2.0, size=(n, dim))).astype(np.float32) for _ in range(2))
    img[:3] = img[3]   # exact ties
    return img, txt, labels


def _reference_aps(q, ql, g, gl, k=None):
    """AP as the metrics computed it before this work, independently: the full similarity
    matrix, a stable argsort, and the precisions accumulated in float64."""
    def unit(x):
        return x / np.maximum(np.sqrt((x * x).sum(axis=1, keepdims=True)), 1e-12)
    order = np.argsort(-(unit(q) @ unit(g).T), axis=1, kind="stable")[:, :k or g.shape[0]]
    rel = gl[order] == ql[:, None]
    hits = np.cumsum(rel, axis=1, dtype=np.float64)
    summed = np.where(rel, hits / np.arange(1.0, rel.shape[1] + 1), 0.0).sum(axis=1)
    return summed / np.maximum(hits[:, -1], 1.0)


def test_evaluation_on_the_device_equals_the_float64_reference_in_one_copy(cp):
    """Exact counts (int32) give the float64 quotients of before: the same numbers on both
    backends, for every chunk size; on the device each call copies to the host once."""
    img, txt, labels = _embeddings()
    di, dt, dl = cp.asarray(img), cp.asarray(txt), cp.asarray(labels)
    for k in (None, 10):
        want = _reference_aps(img, labels, txt, labels, k)
        assert np.array_equal(metrics.average_precisions(img, labels, txt, labels, k=k), want)
        for chunk_size in (None, 7, 300):
            with cp.counting() as c:
                got = metrics.average_precisions(di, dl, dt, dl, k=k, chunk_size=chunk_size)
            assert type(got) is np.ndarray and np.array_equal(got, want), (k, chunk_size)
            assert (c.syncs, c.transfers) == (1, 1), c
    ranks = np.arange(1, 301)
    rel = labels[np.argsort(-(ranking.l2_normalise(img, np) @ ranking.l2_normalise(txt, np).T),
                            axis=1, kind="stable")] == labels[:, None]
    hits = np.cumsum(rel, axis=1, dtype=np.float64)
    with cp.counting() as c:
        got = metrics.precision_at_k(di, dl, dt, dl, ks=[1, 5, 300])
    assert (c.syncs, c.transfers) == (1, 2), c   # ks in, the result (and flags) out
    assert np.array_equal(got, np.array([(hits[:, k - 1] / k).sum() for k in (1, 5, 300)]) / 300)
    with cp.counting() as c:
        precision, recall = metrics.precision_recall_curve(di, dl, dt, dl, chunk_size=64)
    assert (c.syncs, c.transfers) == (1, 1)
    want_p = np.zeros(300)
    want_r = np.zeros(300)
    for start in range(0, 300, 64):  # the same per-chunk float64 sums
        h = hits[start:start + 64]
        want_p += (h / ranks).sum(axis=0)
        want_r += (h / np.maximum(h[:, -1:], 1.0)).sum(axis=0)
    assert np.array_equal(precision, want_p / 300) and np.array_equal(recall, want_r / 300)
    with cp.counting() as c:   # both directions and both cutoffs: still one copy
        res = metrics.evaluate_retrieval(di, dt, labels, k=10)
    assert (c.syncs, c.transfers) == (1, 2) and res == metrics.evaluate_retrieval(img, txt, labels, k=10)
    assert res["map_img2txt"] == float(_reference_aps(img, labels, txt, labels).mean())
    with cp.counting() as c:
        assert metrics.paired_map(di, dt, dl) == metrics.paired_map(img, txt, labels)
    assert (c.syncs, c.transfers) == (1, 1)


def test_the_device_checks_finiteness_with_the_results(cp):
    img, txt, labels = _embeddings(n=40)
    for name, bad in (("query", 0), ("gallery", 1)):
        arrays = [img.copy(), txt.copy()]
        arrays[bad][5, 2] = np.nan if bad else np.inf
        with pytest.raises(InputError, match=f"^{name} embeddings contain NaN or inf$"):
            metrics.average_precisions(arrays[0], labels, arrays[1], labels)       # NumPy: up front
        with np.errstate(invalid="ignore"), cp.counting() as c:
            with pytest.raises(InputError, match=f"^{name} embeddings contain NaN or inf$"):
                metrics.average_precisions(cp.asarray(arrays[0]), labels, cp.asarray(arrays[1]), labels)
        assert c.syncs == 1  # the flags came back with the results
        for a, b in ((0, 1), (1, 0)):   # both directions at once: the check NumPy fails first is named
            with pytest.raises(InputError) as on_host:
                metrics.evaluate_retrieval(arrays[a], arrays[b], labels)
            with np.errstate(invalid="ignore"), pytest.raises(InputError) as on_device:
                metrics.evaluate_retrieval(cp.asarray(arrays[a]), cp.asarray(arrays[b]), labels)
            assert str(on_device.value) == str(on_host.value) == \
                f"{'query' if (a == 0) == (bad == 0) else 'gallery'} embeddings contain NaN or inf"


def test_the_device_checks_label_rows_with_the_results(cp):
    """Multi-label rows on the device: their 0/1 check travels with the results (one wait),
    and a bad row is refused with NumPy's message, before a bad embedding."""
    img, txt, _ = _embeddings(n=40)
    rows = (np.random.default_rng(5).random((40, 4)) < 0.5).astype(np.float32)
    rows[:, 0] = 1.0
    want = metrics.average_precisions(img, rows, txt, rows)
    with cp.counting() as c:
        got = metrics.average_precisions(cp.asarray(img), cp.asarray(rows), cp.asarray(txt), cp.asarray(rows))
    assert c.syncs == 1 and np.array_equal(got, want)
    bad, nan_img = rows.copy(), img.copy()
    bad[7, 2], nan_img[3, 1] = 2.0, np.nan
    for arrays in ((img, bad, txt, rows), (nan_img, bad, txt, rows)):
        with pytest.raises(InputError, match=r"^query label rows must hold only 0 and 1 \(multi-label data\)$"):
            metrics.average_precisions(*arrays)
        with np.errstate(invalid="ignore"), cp.counting() as c:
            with pytest.raises(InputError, match=r"^query label rows must hold only 0 and 1 \(multi-label data\)$"):
                metrics.average_precisions(*(cp.asarray(a) for a in arrays))
        assert c.syncs == 1


def test_the_chunk_size_is_chosen_per_backend(cp):
    assert ranking.default_chunk_size(np, 20000) == 256 == ranking.default_chunk_size(np, 10)
    assert ranking.default_chunk_size(cp, 20000) == (1 << 25) // 20000 == 1677
    assert ranking.default_chunk_size(cp, 10 ** 6) == 256          # never below NumPy's
    img, txt, labels = _embeddings(n=700)
    di, dt = cp.asarray(img), cp.asarray(txt)
    launches = {}
    for chunk_size in (None, 256, 700):
        with cp.counting() as c:
            metrics.average_precisions(di, labels, dt, labels, chunk_size=chunk_size)
        launches[chunk_size] = c.launches
    assert launches[None] == launches[700] < launches[256]  # 700 queries: one chunk on the device


@pytest.mark.parametrize("backend", ["numpy", "cupy"])
def test_the_default_chunk_size_follows_the_arrays_backend_and_gallery(cp, monkeypatch, backend):
    """chunk_size=None: NUMPY_CHUNK_SIZE queries at a time on NumPy, CUPY_CHUNK_ENTRIES //
    n_gallery on CuPy (the number of gallery items, not the embedding width). Small
    constants make the two rules give 3 and 5 rows on a gallery of 9 items of width 4."""
    monkeypatch.setattr(ranking, "NUMPY_CHUNK_SIZE", 3)
    monkeypatch.setattr(ranking, "CUPY_CHUNK_ENTRIES", 45)
    want = 3 if backend == "numpy" else 5
    rng = np.random.default_rng(8)
    q, g = rng.normal(size=(13, 4)), rng.normal(size=(9, 4))
    ql, gl = rng.integers(0, 2, size=13), rng.integers(0, 2, size=9)
    if backend == "cupy":
        q, g = cp.asarray(q), cp.asarray(g)
    rows = []
    real_rel, real_sort = metrics._ranked_relevance, ranking.stable_argsort_desc
    monkeypatch.setattr(metrics, "_ranked_relevance", lambda q, *a: rows.append(len(q)) or real_rel(q, *a))
    monkeypatch.setattr(ranking, "stable_argsort_desc", lambda sim, xp: rows.append(len(sim)) or real_sort(sim, xp))
    for call in (lambda: metrics.average_precisions(q, ql, g, gl),
                 lambda: metrics.precision_at_k(q, ql, g, gl, [1, 4]),
                 lambda: ranking.retrieve(q, g, k=2)):
        rows.clear()
        call()
        assert max(rows) == want and sum(rows) in (13, 26), rows


@pytest.mark.parametrize("label_loss", ["softmax", "sigmoid"])
def test_a_step_on_label_rows_does_not_wait_for_the_device(cp, label_loss):
    """Label rows are checked when the data is loaded; a training step checking their
    values again would wait for the device every step."""
    _, dev = _models(cp, ACMRConfig(label_loss=label_loss))
    trainer = FastTrainer(dev)
    rng = np.random.default_rng(4)
    img, txt, _, noise = _batch(rng)
    rows = (rng.random((B, C)) < 0.4).astype(np.float32)
    rows[np.arange(B), rng.integers(0, C, size=B)] = 1.0      # at least one label per pair
    args = [cp.asarray(a) for a in (img, txt, rows, noise)]
    with cp.counting() as c:
        terms, _ = trainer.train_step(*args, progress=0.5)
    assert (c.syncs, c.transfers) == (0, 0), c
    assert np.isfinite(float(terms["L_imd"])) and float(terms["L_imd"]) > 0


# ----------------------------------------------------------------------------- the command lines

SMALL = ["--img-hidden", "32", "--txt-hidden", "16", "--dim", "16", "--seed", "3", "--lr", "0.005"]
IGNORED = {"seconds", "checkpoint"}


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """A small synthetic data set as an .npz (the command lines' --data): seconds, not tens."""
    d = make_synthetic(seed=0, n_train=400, n_test=200, d_img=32, d_txt=12)
    path = tmp_path_factory.mktemp("data") / "small.npz"
    np.savez(path, **{f"{f}_{s}": getattr(getattr(d, s), a) for s in ("train", "val", "test")
                      for f, a in (("img", "img"), ("txt", "txt"), ("label", "labels"))})
    return str(path)


def _metrics(folder):
    with open(os.path.join(folder, "metrics.json")) as f:
        return {k: v for k, v in json.load(f).items() if k not in IGNORED}


def test_train_eval_only_resume_and_plots_on_cupy(cp, small_data, tmp_path, monkeypatch, capsys):
    """python -m acmr_np.train --backend cupy, in this process with the stand-in as cupy:
    the same numbers as --backend numpy (the stand-in computes with NumPy), --eval-only on
    the device, --plots from device embeddings, and --resume, which continues on the run's
    own backend unless --backend says otherwise, and says which."""
    saved = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: saved.append(path) or path)  # no PNG rendering
    small = SMALL + ["--data", small_data]
    with cp.counting() as c:
        assert main(["--epochs", "3", "--backend", "cupy", "--plots", "--out", str(tmp_path / "gpu")] + small) == 0
    assert "backend cupy" in capsys.readouterr().out and c.launches > 1000
    assert sorted(os.path.basename(p) for p in saved) == ["common_space.png", "retrieval_curves.png",
                                                          "training_curves.png"]
    assert (tmp_path / "gpu" / "examples.txt").exists()
    assert main(["--epochs", "3", "--out", str(tmp_path / "cpu")] + small) == 0
    full = _metrics(tmp_path / "gpu")
    assert full == _metrics(tmp_path / "cpu") and full["map_avg"] > 0.15

    with cp.counting() as c:
        assert main(["--eval-only", "--checkpoint", str(tmp_path / "gpu"), "--backend", "cupy",
                     "--out", str(tmp_path / "eval")]) == 0
    evaluated = _metrics(tmp_path / "eval")
    assert all(evaluated[k] == full[k] for k in ("map_img2txt", "map_txt2img", "map50_avg"))
    # the test evaluation: one copy for both directions' mAP, then one per direction for
    # precision@k and one per direction for Recall@K (the extra test-only figures)
    assert c.launches > 0 and c.by_kind["sync get"] == 5

    real_epoch = training.Training.train_epoch
    for backend, expected in ((None, "cupy"), ("numpy", "numpy")):
        cut = tmp_path / f"cut-{expected}"
        calls = {"n": 0}

        def interrupted(self):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
            return real_epoch(self)

        monkeypatch.setattr(training.Training, "train_epoch", interrupted)
        assert main(["--epochs", "3", "--backend", "cupy", "--out", str(cut)] + small) == 130
        monkeypatch.setattr(training.Training, "train_epoch", real_epoch)
        capsys.readouterr()
        with cp.counting() as c:
            assert main(["--resume", str(cut)] + (["--backend", backend] if backend else [])) == 0
        out = capsys.readouterr().out
        assert f"resuming {cut} after epoch 2 on backend {expected}" in out
        assert f"backend {expected}" in out.splitlines()[1]
        assert (c.launches > 1000) == (expected == "cupy"), c  # where the work was done
        assert _metrics(cut) == full   # the optimiser state crossed the checkpoint intact


def test_ablations_on_cupy_equal_numpy(cp, small_data, capsys):
    args = ["--data", small_data, "--epochs", "2", "--seeds", "0", "1", "--variants", "full ACMR", "without L_imi"]
    with cp.counting() as c:
        assert ablations.main(args + ["--backend", "cupy"]) == 0
    on_device = capsys.readouterr().out
    assert c.launches > 1000
    assert ablations.main(args) == 0
    assert capsys.readouterr().out == on_device and "without L_imi" in on_device


def test_baselines_run_on_the_host_even_where_cupy_is_importable(cp, small_data, capsys):
    """CCA and the label posterior have no device path: python -m acmr_np.baselines takes no
    --backend, and with CuPy importable it still touches no device."""
    with cp.counting() as c:
        assert baselines.main(["--data", small_data, "--dim", "8"]) == 0
    assert "CCA" in capsys.readouterr().out and c.as_dict() == {"syncs": 0, "transfers": 0, "launches": 0}


def test_both_benchmarks_run_on_cupy(cupy_standin_run):
    """Both benchmark scripts with --backend cupy, reduced, each of their worker processes
    on the stand-in (they would fail on a real GPU the same way if they failed here)."""
    for name in ("bench_train", "bench_eval"):
        if not os.path.isfile(os.path.join(ROOT, "benchmarks", f"{name}.py")):
            pytest.skip("needs benchmarks/ of the source checkout")
    proc, counts = cupy_standin_run(["benchmarks/bench_train.py", "--backend", "cupy", "--quick", "--cases",
                                     "shallow", "--matmul-n", "128", "--matmul-seconds", "0"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "gpu: cupy_standin" in proc.stdout and "shallow: done" in proc.stdout and "device pool" in proc.stdout
    workers = [r for r in counts if "--worker" in r["argv"]]
    assert len(workers) == 1 and workers[0]["launches"] > 10000
    proc, counts = cupy_standin_run(["benchmarks/bench_eval.py", "--backend", "cupy", "--n", "300"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(agree to 1e-6)" in proc.stdout and "mAP values differ by 0.0e+00" in proc.stdout
    assert f"acmr_np ranked {(1 << 25) // 300} queries per chunk" in proc.stdout  # the CuPy default
    acmr = [r for r in counts if "acmr_np" in r["argv"]]
    # per direction one copy of the APs (plus the timers' synchronisations, and one copy of
    # the embeddings for their size)
    assert len(acmr) == 1 and acmr[0]["by_kind"]["sync get"] == 2 + 1, acmr


def test_the_gpu_check_script_is_ready(tmp_path):
    """benchmarks/gpu_check.sh, the script to run when a GPU is lent, parses, and the
    commands it runs exist with the flags it gives them."""
    path = os.path.join(ROOT, "benchmarks", "gpu_check.sh")
    if not os.path.isfile(path) or shutil.which("bash") is None:
        pytest.skip("needs benchmarks/gpu_check.sh of the source checkout, and bash")
    assert subprocess.run(["bash", "-n", path]).returncode == 0
    text = open(path).read()
    assert "pytest -m gpu" in text and "--backend cupy" in text
    for script in ("bench_train.py", "bench_eval.py"):
        lines = [line for line in text.splitlines() if script in line and not line.lstrip().startswith("#")]
        assert lines, script
        help_text = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), "--help"],
                                   capture_output=True, text=True).stdout
        for line in lines:
            flags = [w.split("=")[0] for w in line.split() if w.startswith("--")]
            assert flags and all(f in help_text for f in flags), (line, help_text)
