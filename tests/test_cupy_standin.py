"""The strict CuPy stand-in (tests/cupy_standin.py), on every CI run (no GPU needed).

First the stand-in itself: what it refuses, what it counts (on examples counted by hand),
fuse, bit-equality with NumPy and the reversed-order mode. Then the package's pieces that
do not depend on the training loop, run under it in float32 and compared with the NumPy
backend bit for bit (the stand-in computes with NumPy), with their syncs and launches."""
import json
import os
import sys

import numpy as np
import pytest

import cupy_standin
from acmr_np import backend, layers, losses, metrics, triplets

N, D, M = 6, 9, 4  # non-square everywhere


FIXTURE_MODULES = []  # every stand-in the fixture handed to a test of this file


@pytest.fixture
def cp(cupy_standin):
    FIXTURE_MODULES.append(cupy_standin)
    return cupy_standin


def _same(dev, host):
    """A device array equal to a NumPy array (or scalar) bit for bit, dtype and shape included."""
    assert type(dev).__module__ == "cupy", type(dev)
    got, want = dev.get(), np.asarray(host)
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, want.dtype, got.shape, want.shape)
    assert np.array_equal(got, want, equal_nan=True), (got, want)


def _counts(c):
    return (c.syncs, c.transfers, c.launches)


# ----------------------------------------------------------------------------- the stand-in

def test_device_arrays_are_recognised_as_cupy(cp):
    x = cp.asarray(np.arange(3.0))
    assert type(x).__module__ == "cupy" and type(x).__name__ == "ndarray" and isinstance(x, cp.ndarray)
    assert backend.get_array_module(x) is cp and backend.get_array_module(np.ones(2)) is np
    assert cp.get_array_module(x) is cp and cp.get_array_module(np.ones(2)) is np
    assert backend.get_backend("cupy") is cp and backend.cupy_available() and cp.is_available()
    assert sys.modules["cupy"] is cp and backend.backend_name(cp) == "cupy"


def test_two_stand_ins_share_no_state():
    a, b = cupy_standin.new_module(), cupy_standin.new_module()
    a.zeros(3)
    assert a.counts() == {"syncs": 0, "transfers": 0, "launches": 1}
    assert b.counts() == {"syncs": 0, "transfers": 0, "launches": 0}
    assert a.ndarray is not b.ndarray


def test_the_fixture_leaves_no_stand_in_behind():
    # runs after the test above (file order): none of the fixture's stand-ins is still `cupy`
    if not FIXTURE_MODULES:
        pytest.skip("run together with the tests above it")
    assert sys.modules.get("cupy") not in FIXTURE_MODULES
    assert sys.modules.get("cupy.cuda") not in [m.cuda for m in FIXTURE_MODULES]


def test_implicit_conversions_raise_type_error(cp):
    x, host = cp.asarray(np.arange(6.0).reshape(2, 3)), np.ones(3)
    implicit = [lambda: np.asarray(x), lambda: np.array(x), lambda: x.__array__(),
                lambda: np.array(list(x)),                   # iterating gives device rows
                lambda: x + host, lambda: host + x, lambda: x * [1.0, 2.0, 3.0], lambda: host < x,
                lambda: cp.exp(host), lambda: np.exp(x, out=np.empty((2, 3))),
                lambda: cp.sum(host), lambda: cp.zeros_like(host), lambda: cp.where(x > 0, host, 0.0),
                lambda: np.concatenate([x, host[None]]), lambda: x.dot(host),
                lambda: range(x[0, 1]), lambda: [1, 2, 3][x[0, 1]],   # no __index__, as in CuPy
                lambda: np.testing.assert_array_equal(x, x.get())]
    for i, f in enumerate(implicit):
        with pytest.raises(TypeError):
            f()
            pytest.fail(f"case {i} converted implicitly")
    # what CuPy does accept: scalars, and NumPy's functions dispatched to CuPy's
    assert isinstance(np.exp(x), cp.ndarray) and isinstance(np.float32(2) * x, cp.ndarray)
    assert isinstance(np.concatenate([x, x]), cp.ndarray) and isinstance(x[0], cp.ndarray)


def test_only_cupy_names_and_keywords(cp):
    x = cp.asarray(np.arange(6.0))
    for name in ("errstate", "seterr", "float_", "linalg", "random", "asfarray", "counts_"):
        with pytest.raises(AttributeError):
            getattr(cp, name)
    with pytest.raises(AttributeError):
        x.tobytes()                        # in CuPy, but not in the allow-list: refused loudly
    for call in (lambda: cp.sum(x, where=x > 0), lambda: cp.zeros(3, like=x), lambda: cp.max(x, initial=0),
                 lambda: x.max(initial=0), lambda: x.sum(where=x > 0), lambda: cp.exp(x, where=x > 0),
                 lambda: cp.asarray([1.0], device="cuda"), lambda: cp.arange(3, like=x),
                 lambda: cp.argmax(x, axis=0, out=None, foo=1)):
        with pytest.raises(TypeError):
            call()
    with pytest.raises(ValueError, match="kind"):
        cp.argsort(x, kind="quicksort")
    with pytest.raises(ValueError, match="zero-size"):     # cupy/cupy#8116
        cp.bincount(cp.asarray(np.array([], np.int64)), minlength=3)


def test_explicit_transfers_and_syncs_are_counted(cp):
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    with cp.counting() as c:
        x = cp.asarray(host)                        # host -> device
    assert _counts(c) == (0, 1, 0)
    with cp.counting() as c:
        y = cp.array([1.0, 2.0])                    # host list -> device
        cp.asarray(x)                               # already on the device: nothing
        cp.asarray(x, dtype=np.float64)             # a cast on the device
    assert _counts(c) == (0, 1, 1)
    s = x.sum()                                     # a 0-d device array
    for read in (float, int, bool, lambda a: a.item(), lambda a: a.tolist(), lambda a: a.get(),
                 cp.asnumpy, repr):
        with cp.counting() as c:
            read(s)
        assert _counts(c) == (1, 1, 0), read
    with cp.counting() as c:
        cp.cuda.Device().synchronize()
        cp.cuda.runtime.deviceSynchronize()
    assert _counts(c) == (2, 0, 0)
    assert float(s) == 15.0 and y.get().tolist() == [1.0, 2.0]
    assert cp.asnumpy(host) is not None and type(x.get()) is np.ndarray


def test_launches_counted_by_hand(cp):
    x = cp.asarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    w = cp.asarray(np.ones((4, 2), np.float32))
    cases = [  # (what, expected launches)
        (lambda: x * 2 + 1, 2), (lambda: -x, 1), (lambda: x @ w, 1), (lambda: cp.matmul(x, w), 1),
        (lambda: x.sum(axis=0), 1), (lambda: cp.exp(x).max(), 2), (lambda: cp.zeros(3), 1),
        (lambda: cp.arange(5), 1), (lambda: cp.empty(3), 0), (lambda: cp.zeros_like(x), 1),
        (lambda: x[1:, ::2], 0), (lambda: x.T, 0), (lambda: x.reshape(4, 3), 0), (lambda: x[1], 0),
        (lambda: x[cp.arange(2)], 2), (lambda: x.astype(np.float64), 1), (lambda: x.copy(), 1),
        (lambda: cp.where(x > 3, x, 0.0), 2), (lambda: cp.concatenate([x, x]), 1),
        (lambda: cp.argsort(-x, axis=1), 2), (lambda: cp.cumsum(x, axis=1), 1),
    ]
    for i, (f, launches) in enumerate(cases):
        with cp.counting() as c:
            f()
        assert _counts(c) == (0, 0, launches), (i, c)
    with cp.counting() as c:
        x += 1                               # in place: one kernel
        x[0, :] = 0.0                        # a scatter
        x[:, 1] *= 2                         # Python: v = x[:, 1] (a view); v *= 2; x[:, 1] = v (a copy)
    assert _counts(c) == (0, 0, 4)
    with cp.counting() as c:
        x[np.array([0, 2])]                  # a host index is copied to the device, then a gather
    assert _counts(c) == (0, 1, 1)
    with cp.counting() as c:
        x[x > 5]                             # comparison, then a masked gather whose size is read back
    assert _counts(c) == (1, 1, 2)
    with cp.counting() as c:
        cp.nonzero(x)                        # count (read back), then fill
    assert _counts(c) == (1, 1, 2)
    with cp.counting() as c:                 # (x < 0).any() and int(x.max()) read back, then zeros + kernel
        cp.bincount(cp.asarray(np.array([0, 2, 2])), minlength=4)
    assert _counts(c) == (2, 3, 5)           # 3 transfers: the host index array, and the 2 reads


def test_counting_blocks_nest_and_the_total_accumulates(cp):
    cp.reset_counts()
    with cp.counting() as outer:
        cp.zeros(2)
        with cp.counting() as inner:
            float(cp.ones(2).sum())
        cp.empty(2)
    assert _counts(inner) == (1, 1, 2) and _counts(outer) == (1, 1, 3)
    assert cp.counts() == {"syncs": 1, "transfers": 1, "launches": 3}
    assert inner.by_kind == {"sync float": 1, "transfer float": 1}
    cp.reset_counts()
    assert cp.counts() == {"syncs": 0, "transfers": 0, "launches": 0}


def test_fuse_is_one_launch_and_bit_equal(cp):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 7), dtype=np.float32), rng.standard_normal((5, 7), dtype=np.float32)

    def f(x, y):  # six elementwise operations: tanh, *, unary -, exp, /, +
        return cp.tanh(x) * y + cp.exp(-x) / 2

    fused = cp.fuse(f)
    xa, xb = cp.asarray(a), cp.asarray(b)
    with cp.counting() as c:
        r = fused(xa, xb)
    assert _counts(c) == (0, 0, 1)
    with cp.counting() as c:
        f(xa, xb)
    assert _counts(c) == (0, 0, 6)
    _same(r, np.tanh(a) * b + np.exp(-a) / 2)
    assert cp.fuse(kernel_name="k")(f)(xa, 2.0).shape == (5, 7)
    with pytest.raises(TypeError):
        fused(xa, b)                                        # a host array
    with pytest.raises(TypeError, match="fuse"):
        cp.fuse(lambda x: float(x.sum()))(xa)               # no values back to Python inside a kernel


def test_arithmetic_is_numpy_bit_for_bit(cp):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((33, 65), dtype=np.float32), rng.standard_normal((65, 17), dtype=np.float32)
    da, db = cp.asarray(a), cp.asarray(b)
    _same(da @ db, a @ b)
    _same(cp.matmul(da, db), np.matmul(a, b))
    _same(da.sum(axis=1), a.sum(axis=1))
    _same(cp.sum(da), a.sum())
    _same(da.mean(axis=0, keepdims=True), a.mean(axis=0, keepdims=True))
    _same(cp.tanh(da) / (1 + da * da), np.tanh(a) / (1 + a * a))
    _same(cp.cumsum(da > 0, axis=1, dtype=np.float64), np.cumsum(a > 0, axis=1, dtype=np.float64))
    _same(cp.argsort(-da, axis=1), np.argsort(-a, axis=1, kind="stable"))
    _same(cp.vdot(da[0], da[1]), np.vdot(a[0], a[1]))


def test_reversed_order_changes_float_rounding_not_integers(cp):
    # by hand: 1 + 1e8 rounds to 1e8 in float32, so left to right gives 0, right to left 1
    v = cp.asarray(np.array([1.0, 1e8, -1e8], np.float32))
    assert float(v.sum()) == 0.0
    with cp.reversed_order():
        assert float(v.sum()) == 1.0 and float(cp.sum(v)) == 1.0
    rng = np.random.default_rng(2)
    a = rng.standard_normal((64, 1000), dtype=np.float32)
    ints = rng.integers(-2 ** 40, 2 ** 40, size=(64, 1000))
    b = rng.standard_normal((1000, 8), dtype=np.float32)
    da, di, db = cp.asarray(a), cp.asarray(ints), cp.asarray(b)
    with cp.reversed_order():
        rows, prod = da.sum(axis=1).get(), (da @ db).get()
        _same(di.sum(axis=1), ints.sum(axis=1))                # integers: exact in any order
        _same(cp.sum(di), ints.sum())
    assert not np.array_equal(rows, a.sum(axis=1))             # float32: the last bits move...
    np.testing.assert_allclose(rows, a.sum(axis=1), rtol=0, atol=1e-4)   # ...and only those
    assert not np.array_equal(prod, a @ b)
    np.testing.assert_allclose(prod, a @ b, rtol=0, atol=1e-4)


@pytest.mark.skipif(not os.environ.get("CUPY_API_JSON"),
                    reason="set CUPY_API_JSON to a snapshot of CuPy's namespace (cupy_api.json) to check the allow-lists")
def test_allow_lists_match_the_cupy_namespace_snapshot():
    api = json.load(open(os.environ["CUPY_API_JSON"]))
    assert api["version"] == cupy_standin.VERSION
    ns, nd = api["cupy"], api["ndarray"]

    def ours(sig):
        return [(p.name, p.kind.name, p.default is not p.empty) for p in sig.parameters.values()]

    def params(spec):  # the snapshot is read from docstrings: after *args, parameters are keyword-only
        out, star = [], False
        for p in spec["params"]:
            kind = "KEYWORD_ONLY" if star and p["kind"] == "POSITIONAL_OR_KEYWORD" else p["kind"]
            star = star or p["kind"] == "VAR_POSITIONAL"
            out.append((p["name"], kind, p["default"] and not kind.startswith("VAR")))
        return out

    for name in cupy_standin.UFUNCS:
        assert ns[name]["kind"] == "ufunc", name
    for name, sig in cupy_standin._FUNC_SIGS.items():
        if name == "matmul":  # a gufunc: we take a subset of its keywords
            assert {"out", "dtype", "casting"} <= {n for n, _, _ in params(ns[name])}
            continue
        assert ns[name]["kind"] == "function" and ours(sig) == params(ns[name]), name
    for name, sig in cupy_standin._METHOD_SIGS.items():
        assert nd[name]["kind"] == "method" and ours(sig) == params(nd[name]), name
    for name in cupy_standin.TYPES:
        assert ns[name]["kind"] == "type" and ns[name]["numpy_same"], name
    for name in cupy_standin.CONSTANTS:
        assert ns[name]["kind"] == "other", name
    for name in cupy_standin.STANDIN_API:  # the stand-in's own names shadow nothing of CuPy's
        assert name not in ns, name


# ----------------------------------------------------------------------------- the package under it

def _layer_pair(cp, name):
    rng = np.random.default_rng(3)
    if name.startswith("Linear"):
        host = layers.Linear(D, M, rng=np.random.default_rng(1), dtype=np.float32)
        dev = layers.Linear(D, M, rng=np.random.default_rng(1), xp=cp, dtype=np.float32)
        b = rng.standard_normal(M, dtype=np.float32)
        host.params["b"][...] = b
        dev.params["b"][...] = cp.asarray(b)
        host.input_grad = dev.input_grad = name == "Linear"
        return host, dev, M
    make = {"Tanh": layers.Tanh, "ReLU": layers.ReLU, "Softmax": layers.Softmax,
            "L2Normalize": layers.L2Normalize, "GradientReversal": lambda: layers.GradientReversal(0.7)}[name]
    return make(), make(), D


# Launches per forward + backward, counted by hand from layers.py:
#   Linear:    x @ W, y += b | matmul(out=dW), sum(out=db), dout @ W.T
#   Tanh:      tanh | out * out, 1 - ., dout * .
#   ReLU:      x > 0, x * mask | dout * mask
#   Softmax:   max, x - max, exp, sum, e / sum | dout * p, sum, dout - ., p * .
#   L2Normalize: x * x, sum, sqrt, maximum, x / norm | dout * y, sum, y * ., dout - ., / norm
#   GradientReversal: (identity) | -lam * dout
LAYER_LAUNCHES = {"Linear": 5, "Linear(input_grad=False)": 4, "Tanh": 4, "ReLU": 3, "Softmax": 9,
                  "L2Normalize": 10, "GradientReversal": 1}


@pytest.mark.parametrize("name", list(LAYER_LAUNCHES))
def test_layer_forward_backward_bit_equal_and_counted(cp, name):
    rng = np.random.default_rng(4)
    host, dev, out_dim = _layer_pair(cp, name)
    x, g = rng.standard_normal((N, D), dtype=np.float32), rng.standard_normal((N, out_dim), dtype=np.float32)
    xd, gd = cp.asarray(x), cp.asarray(g)
    with cp.counting() as c:
        y_dev = dev.forward(xd)
        dx_dev = dev.backward(gd)
    assert _counts(c) == (0, 0, LAYER_LAUNCHES[name]), c   # no sync, no transfer in a layer
    _same(y_dev, host.forward(x))
    dx_host = host.backward(g)
    if dx_host is None:
        assert dx_dev is None
    else:
        _same(dx_dev, dx_host)
    assert set(dev.grads) == set(host.grads)
    for k in host.grads:
        _same(dev.grads[k], host.grads[k])
        _same(dev.params[k], host.params[k])


def test_losses_bit_equal_and_their_syncs(cp):
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((N, 3), dtype=np.float32)
    labels = rng.integers(0, 3, size=N)
    a, p, q = (rng.standard_normal((N, D), dtype=np.float32) * 0.5 for _ in range(3))
    ws = [rng.standard_normal((D, M), dtype=np.float32), rng.standard_normal((M, 2), dtype=np.float32)]
    probs = layers.Softmax().forward(logits)
    to = cp.asarray
    cases = [  # (name, host call, device call, syncs: the label range check reads min and max)
        ("softmax_cross_entropy", lambda: losses.softmax_cross_entropy(logits, labels),
         lambda: losses.softmax_cross_entropy(to(logits), to(labels)), 2),
        ("softmax_cross_entropy, check_values=False",
         lambda: losses.softmax_cross_entropy(logits, labels, check_values=False),
         lambda: losses.softmax_cross_entropy(to(logits), to(labels), check_values=False), 0),
        ("cross_entropy", lambda: losses.cross_entropy(probs, labels),
         lambda: losses.cross_entropy(to(probs), to(labels)), 2),
        ("triplet_hinge", lambda: losses.triplet_hinge(a, p, q, 0.5),
         lambda: losses.triplet_hinge(to(a), to(p), to(q), 0.5), 0),
        ("pull_push", lambda: losses.pull_push(a, p, q, 2.0, 0.3),
         lambda: losses.pull_push(to(a), to(p), to(q), 2.0, 0.3), 0),
        ("l2_penalty", lambda: losses.l2_penalty(ws, 1e-3), lambda: losses.l2_penalty([to(w) for w in ws], 1e-3), 0),
    ]
    for name, host_call, dev_call, syncs in cases:
        loss_h, grads_h = host_call()
        with cp.counting() as c:
            loss_d, grads_d = dev_call()
        assert c.syncs == syncs and c.transfers - c.syncs == c.by_kind["transfer asarray"], (name, c)
        assert loss_d.shape == (), name          # a 0-d device array, as CuPy returns
        _same(loss_d, loss_h)
        grads_h = grads_h if isinstance(grads_h, (tuple, list)) else (grads_h,)
        grads_d = grads_d if isinstance(grads_d, (tuple, list)) else (grads_d,)
        assert len(grads_d) == len(grads_h), name
        for gd, gh in zip(grads_d, grads_h):
            _same(gd, gh)
    active = ((a - p) ** 2).sum(1) - ((a - q) ** 2).sum(1) + 0.5 > 0
    assert active.any() and not active.all()     # the hinge case had both kinds of triplets


@pytest.mark.parametrize("strategy", triplets.STRATEGIES)
def test_triplet_sampling_bit_equal_without_syncs(cp, strategy):
    rng = np.random.default_rng(6)
    B = 16
    anchor, other = rng.standard_normal((B, 5), dtype=np.float32), rng.standard_normal((B, 5), dtype=np.float32)
    labels, noise = rng.integers(0, 4, size=B), rng.random((B, B), dtype=np.float32)
    want = triplets.sample(anchor, other, labels, noise, strategy)
    args = [cp.asarray(v) for v in (anchor, other, labels, noise)]
    with cp.counting() as c:
        got = triplets.sample(*args, strategy)
        sel = triplets.selection_matrix(got[0], B, np.float32)
    assert c.syncs == 0 and c.transfers == 0, c
    for g, w in zip(got, want):
        _same(g, w)
    _same(sel, triplets.selection_matrix(want[0], B, np.float32))
    with pytest.raises(TypeError):  # host noise with device embeddings: CuPy's where refuses it
        triplets.sample(*args[:3], noise, strategy)


def _embeddings(n=700, dim=16, n_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    centers = rng.normal(size=(n_classes, dim))
    img, txt = ((centers[labels] + rng.normal(scale=2.0, size=(n, dim))).astype(np.float32) for _ in range(2))
    return img, txt, labels


def test_metrics_bit_equal(cp):
    img, txt, labels = _embeddings()
    di, dt = cp.asarray(img), cp.asarray(txt)
    assert metrics.evaluate_retrieval(di, dt, labels) == metrics.evaluate_retrieval(img, txt, labels)
    for ks in ([1], [1, 10, 50, 700]):
        got = metrics.precision_at_k(di, labels, dt, labels, ks=ks)
        assert type(got) is np.ndarray and np.array_equal(got, metrics.precision_at_k(img, labels, txt, labels, ks=ks))
    for got, want in zip(metrics.precision_recall_curve(dt, labels, di, cp.asarray(labels), chunk_size=100),
                         metrics.precision_recall_curve(txt, labels, img, labels, chunk_size=100)):
        assert type(got) is np.ndarray and np.array_equal(got, want)


def test_evaluate_retrieval_syncs_on_700_pairs(cp):
    """Device embeddings and host labels, as train.py evaluates a split. Counted by hand from
    metrics.py: the host labels go to the device once for both directions; per direction
    the finiteness flags and the 3 chunks of 256 queries stay on the device (AP by a
    cumulative sum); then ONE copy brings both directions' APs (mAP@all and mAP@50 each)
    and the 4 flags back: 1 sync, 2 transfers for the call, whatever the chunk size."""
    img, txt, labels = _embeddings()
    di, dt = cp.asarray(img), cp.asarray(txt)
    for chunk_size in (256, None):   # 3 chunks per direction, or the CuPy default: 1
        with cp.counting() as c:
            metrics.evaluate_retrieval(di, dt, labels, chunk_size=chunk_size)
        assert (c.syncs, c.transfers) == (1, 2), c
        assert c.by_kind["sync get"] == 1 and c.by_kind["transfer asarray"] == 1, c
        assert not any("bincount" in kind or "nonzero" in kind or "bool" in kind for kind in c.by_kind)


def test_metrics_under_reversed_order_agree_to_rounding(cp):
    img, txt, labels = _embeddings(seed=1)
    want = metrics.evaluate_retrieval(img, txt, labels)
    with cp.reversed_order():
        got = metrics.evaluate_retrieval(cp.asarray(img), cp.asarray(txt), labels)
    assert got == pytest.approx(want, abs=1e-6)


def test_run_with_cupy_standin_in_a_subprocess(cupy_standin_run):
    code = ("import subprocess, sys, numpy, cupy\n"
            "x = cupy.asarray(numpy.arange(4.0))\n"
            "print(float((x * 2).sum()))\n"
            "subprocess.run([sys.executable, '-c', 'import cupy; cupy.zeros(2)'], check=True)\n")
    proc, counts = cupy_standin_run(["-c", code])
    assert proc.returncode == 0 and proc.stdout.strip() == "12.0", proc.stderr
    parent, child = sorted(counts, key=lambda r: r["syncs"], reverse=True)   # the child also got the stand-in
    assert (parent["syncs"], parent["transfers"], parent["launches"]) == (1, 2, 2)
    assert (child["syncs"], child["transfers"], child["launches"]) == (0, 0, 1)


def test_metrics_when_a_chunk_has_no_relevant_item(cp):
    """A chunk of queries with no relevant item (in the gallery, or in the top k) leaves
    nothing for bincount to count; CuPy's bincount raises on an empty array (it reads
    x.max(), cupy/cupy#8116) where NumPy's returns zeros. The AP of such queries is 0."""
    q = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    g = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]], np.float32)
    q_labels, g_labels = np.array([0, 7, 2]), np.array([0, 1, 2])   # class 7: not in the gallery
    for k, chunk_size in ((None, 1), (1, 1), (1, 2), (None, 3)):
        want = metrics.average_precisions(q, q_labels, g, g_labels, k=k, chunk_size=chunk_size)
        got = metrics.average_precisions(cp.asarray(q), q_labels, cp.asarray(g), g_labels, k=k,
                                         chunk_size=chunk_size)
        assert np.array_equal(got, want), (k, chunk_size)
    assert want[1] == 0.0   # by hand: query 1 has no relevant item


def test_benchmark_refusal_test_runs_where_cupy_is_usable(cupy_standin_run):
    """tests/test_performance.py's refusal test, run where `import cupy` works and a device
    is 'usable' (the stand-in): it must run and pass, not skip."""
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
    if not os.path.isfile(os.path.join(root, "benchmarks", "bench_train.py")):
        pytest.skip("needs benchmarks/ of the source checkout (absent here, e.g. in a student copy)")
    proc, _ = cupy_standin_run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                                "tests/test_performance.py", "-k", "refuse", "-W", "ignore"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "4 passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-3000:]


def test_the_gpu_tests_pass_on_the_stand_in(cupy_standin_run):
    """Every test marked gpu, run in a process where `import cupy` gives the stand-in (so
    they are not skipped): on a CPU-only CI the CuPy path of training and evaluation runs
    too. The stand-in adds up its sums and products in reversed order here, as a GPU's
    reductions and cuBLAS may: the tests' comparisons with NumPy must tolerate another
    rounding, also where the exact answer is 0. (In a student copy the exercises' stubs
    break that path on purpose; the grader runs its own checks, so this one is left out
    there.)"""
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
    if os.path.exists(os.path.join(root, ".assignment.json")):
        pytest.skip("a student copy (python -m acmr_np.assignment make): its stubs fail the GPU tests")
    proc, _ = cupy_standin_run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "-rs", "tests"],
                               reverse=True)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in summary and "skipped" not in summary and "failed" not in summary, proc.stdout[-3000:]
