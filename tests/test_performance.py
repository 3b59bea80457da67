"""The benchmark scripts: their FLOP counts by hand, their data, their refusals.
(What the fast path must not change: tests/test_fast.py.)"""
import importlib.util
import os
import sys
import types

import numpy as np
import pytest

from acmr_np.model import ACMR, ACMRConfig

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)


def _load_benchmark(name):
    """The module benchmarks/<name>.py of the source checkout. A student copy made by
    ``python -m acmr_np.assignment make`` has no benchmarks/ folder (nor has the grader's
    temporary folder, nor an installed package): the tests that need it skip there."""
    path = os.path.join(ROOT, "benchmarks", f"{name}.py")
    if not os.path.isfile(path):
        pytest.skip(f"needs benchmarks/{name}.py of the source checkout (absent here, e.g. in a "
                    f"student copy made by python -m acmr_np.assignment make)")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_flop_count_by_hand():
    bench = _load_benchmark("bench_train")
    cfg = ACMRConfig(img_hidden=(8,), txt_hidden=(6,), dim=5, disc_hidden=4, sampling="hardest")
    model = ACMR(9, 7, 3, cfg, rng=np.random.default_rng(0))
    b = 10
    projectors = 2 * b * (2 * 9 * 8 + 3 * 8 * 5 + 2 * 7 * 6 + 3 * 6 * 5)  # first layers: no dx
    classifiers = 2 * (2 * b) * 3 * (5 * 3 + 5 * 4 + 4 * 2)
    triplets = 2 * 5 * 2 * b * b * 5                                       # 4 selections + distances
    assert bench.step_flops(model, b) == projectors + classifiers + triplets
    assert bench.step_flops(model, b, every_input_grad=True) == \
        projectors + 2 * b * (9 * 8 + 7 * 6) + classifiers + triplets
    assert bench.epoch_flops(model, 25, 10) == 2 * bench.step_flops(model, 10) + bench.step_flops(model, 5)


def test_benchmark_splits_share_the_class_structure():
    # Validation and test pairs must come from the training split's classes, or the
    # validation mAP that closes each benchmark epoch would mean nothing.
    data = _load_benchmark("bench_train").make_data(64, 16, seed=0)
    for modality in ("img", "txt"):
        def class_means(split):
            x, y = getattr(split, modality), split.labels
            return np.stack([x[y == c].mean(axis=0) for c in range(data.n_classes)])
        train = class_means(data.train)
        for split in (data.val, data.test):
            dist = ((class_means(split)[:, None] - train[None]) ** 2).sum(axis=2)
            assert (dist.argmin(axis=1) == np.arange(data.n_classes)).all(), modality


@pytest.mark.parametrize("name", ["bench_train", "bench_eval"])
@pytest.mark.parametrize("without", ["not installed", "no usable device"])
def test_benchmarks_refuse_cupy_clearly_without_it(name, without, capsys, monkeypatch):
    # CuPy is taken away here (its import fails, or it finds no device), so this test runs,
    # and checks the same thing, whether or not CuPy is usable on this machine
    fake = None if without == "not installed" else types.SimpleNamespace(is_available=lambda: False)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert _load_benchmark(name).main(["--backend", "cupy"]) == 2
    err = capsys.readouterr().err
    assert "cupy" in err.lower() and "Traceback" not in err
