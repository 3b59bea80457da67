"""Kernel launches, synchronisations and transfers of the CuPy path, counted without a GPU.

    python benchmarks/count_launches.py                  # ACMRConfig defaults, batch 64
    python benchmarks/count_launches.py --batch-size 256 --json counts.json

Runs the real training loop (acmr_np.training.Training on the embedded synthetic data,
seed 0, two epochs) with ``--backend cupy`` on the strict CuPy stand-in of the test suite
(tests/cupy_standin.py: NumPy underneath, CuPy 14.2's names and rules, and counters), so
it needs the source checkout, not a GPU. What it counts is what a GPU profile would show
approximately: one launch per elementwise operation, reduction, matrix product, copy,
gather or filled creation, one per ``cupy.fuse`` call; a synchronisation wherever the
host waits for the device (a value read back, a data-dependent shape); a transfer per
copy in either direction. Printed:

- per training step, for the training loop's FastTrainer and for the textbook Trainer:
  the launches of each step of one cycle of k steps (the modality classifier steps on the
  first of them), their mean, and the syncs and transfers inside the steps (0 expected);
- per epoch without its validation, and per validation (Training.validation_map), for the
  second epoch (the first also copies the new best epoch's parameters, which any epoch
  that improves on the best does: the third line says how many copies that is).

docs/PERFORMANCE.md quotes its output. To count an older version of the package, put
that version first on PYTHONPATH; the stand-in is always this checkout's.
"""
import argparse
import importlib.util
import json
import os
import sys

try:
    import acmr_np  # noqa: F401  (installed, or run from the repository root)
except ImportError:  # `python benchmarks/count_launches.py` from a checkout without install
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

STANDIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests", "cupy_standin.py")


def load_standin():
    """tests/cupy_standin.py as a module (it is part of the source checkout's test suite)."""
    if not os.path.isfile(STANDIN):
        raise SystemExit(f"count_launches: needs {os.path.normpath(STANDIN)} (the source checkout's CuPy stand-in)")
    spec = importlib.util.spec_from_file_location("cupy_standin", STANDIN)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("cupy_standin", module)
    spec.loader.exec_module(module)
    return module


def _counts(c):
    return {"launches": c.launches, "syncs": c.syncs, "transfers": c.transfers, "by_kind": dict(c.by_kind)}


def measure(cp, config=None, batch_size=64, seed=0):
    """The counts, as a dict, with ``cp`` the stand-in installed as ``cupy`` (sys.modules).
    config: an ACMRConfig (default: the defaults)."""
    from acmr_np.config import ACMRConfig, TrainConfig
    from acmr_np.synthetic import make_synthetic
    from acmr_np.trainer import Trainer
    from acmr_np.training import Training, batches

    config_name = "defaults" if config is None or config == ACMRConfig() else f"{config.to_dict()}"
    config = config or ACMRConfig()
    data = make_synthetic(seed=seed)
    run = Training(data, config, TrainConfig(epochs=2, batch_size=batch_size, seed=seed, backend="cupy"))
    out = {"config": config.to_dict(), "config_name": config_name, "batch_size": batch_size, "k": config.k}

    # one cycle of k steps of each trainer, on the run's own batches (the first step of a
    # cycle also steps the modality classifier)
    steps = []
    for b in batches(run.train_arrays, batch_size, run.rng):
        steps.append(b)
        if len(steps) == config.k:
            break
    for name, trainer in (("fast_step", run.trainer), ("textbook_step", Trainer(run.model))):
        per_step = []
        for b in steps:
            with cp.counting() as c:
                trainer.train_step(b.img, b.txt, b.labels, b.noise, progress=0.5)
            per_step.append(_counts(c))
        out[name] = {"launches": [s["launches"] for s in per_step],
                     "mean_launches": sum(s["launches"] for s in per_step) / len(per_step),
                     "syncs": sum(s["syncs"] for s in per_step),
                     "transfers": sum(s["transfers"] for s in per_step)}

    # whole epochs of a fresh run, each split into its steps, its validation and the rest
    run = Training(data, config, TrainConfig(epochs=2, batch_size=batch_size, seed=seed, backend="cupy"))
    step_counts, val_counts = [], []
    real_step, real_val = run.trainer.train_step, run.validation_map

    def counted_step(*args, **kwargs):
        with cp.counting() as c:
            result = real_step(*args, **kwargs)
        step_counts.append(_counts(c))
        return result

    def counted_validation():
        with cp.counting() as c:
            result = real_val()
        val_counts.append(_counts(c))
        return result

    run.trainer.train_step, run.validation_map = counted_step, counted_validation
    for epoch in (1, 2):
        step_counts.clear()
        with cp.counting() as c:
            run.train_epoch()
        total, val = _counts(c), val_counts[-1]
        rest = {k: total[k] - val[k] for k in ("launches", "syncs", "transfers")}
        rest["by_kind"] = {k: v - val["by_kind"].get(k, 0) for k, v in total["by_kind"].items()
                           if v - val["by_kind"].get(k, 0)}
        out[f"epoch{epoch}"] = {"steps": len(step_counts), "epoch_minus_validation": rest, "validation": val,
                                "syncs_in_steps": sum(s["syncs"] for s in step_counts),
                                "transfers_in_steps": sum(s["transfers"] for s in step_counts),
                                "new_best": run.history.best_epoch == epoch}
    out["state_arrays"] = len(run.model.state_dict())
    return out


def report(r):
    k = r["k"]
    lines = [f"ACMRConfig {r['config_name']}, batch {r['batch_size']}, k = {k}; "
             f"counted on the CuPy stand-in (tests/cupy_standin.py)"]
    for name, title in (("fast_step", "FastTrainer.train_step (the training loop)"),
                        ("textbook_step", "Trainer.train_step (textbook)")):
        s = r[name]
        lines.append(f"{title}: launches per step {s['launches']} (mean {s['mean_launches']:.1f} over the "
                     f"{k}-step cycle), syncs {s['syncs']}, transfers {s['transfers']} in those {k} steps")
    for epoch in ("epoch1", "epoch2"):
        e = r[epoch]
        rest, val = e["epoch_minus_validation"], e["validation"]
        lines.append(f"{epoch} ({e['steps']} steps{', a new best' if e['new_best'] else ''}): "
                     f"inside its steps {e['syncs_in_steps']} syncs, {e['transfers_in_steps']} transfers; "
                     f"the epoch without its validation: {rest['syncs']} syncs, {rest['transfers']} transfers, "
                     f"{rest['launches']} launches {rest['by_kind']}")
        lines.append(f"  its validation: {val['syncs']} syncs, {val['transfers']} transfers, "
                     f"{val['launches']} launches {val['by_kind']}")
    lines.append(f"(an epoch that sets a new best also copies the model's {r['state_arrays']} state arrays "
                 f"to the host: Training.best_state)")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the counts to this file")
    args = p.parse_args(argv)
    cp = load_standin().install(reverse=False)
    result = measure(cp, batch_size=args.batch_size, seed=args.seed)
    print(report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
