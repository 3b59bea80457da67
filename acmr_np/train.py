"""python -m acmr_np.train: train ACMR, keep the best epoch on validation, test it.

    python -m acmr_np.train                                # embedded synthetic data
    python -m acmr_np.train --data wiki_data.mat --seed 1  # real features
    python -m acmr_np.train --resume runs/RUN              # continue an interrupted run
    python -m acmr_np.train --eval-only --checkpoint runs/RUN --data FILE

Each epoch prints one line (loss terms, lambda, modality-classifier accuracy,
validation mAP, seconds). The epoch with the best validation mAP@all is kept; the test
split is touched once, at the end. Outputs in --out (default: a new folder in runs/):
metrics.json, config.json (the settings, for reading), checkpoint.npz (the run's
settings and state: what --resume and --eval-only read). Every file is written atomically.
The training itself is acmr_np.training; this module is the command line around it.
"""
import argparse
import json
import os
import signal
import sys
import threading
import time

import numpy

from . import checkpoint
from .backend import get_backend
from .cli import ArgumentParser, fresh_folder, run_main
from .config import ACMRConfig, TrainConfig
from .errors import InputError
from .files import write_json
from .formats import load_dataset
from .metrics import relevance_protocol
from .model import ACMR
from .plots import make_run_figures, require_matplotlib  # matplotlib itself loads lazily
from .report import format_epoch, format_table
from .training import Training, evaluate

PROG = "python -m acmr_np.train"
METRICS, CONFIG, CHECKPOINT = "metrics.json", "config.json", checkpoint.CHECKPOINT


# ---- the command line -----------------------------------------------------------------

RUN_FLAGS = ("data", "out", "plots")  # besides the configurations' flags, what a new run takes


def build_parser():
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="a .npz, a Wikipedia .mat, or a DSCMR folder (default: the "
                   "synthetic set; with --eval-only, the checkpoint's data)")
    p.add_argument("--out", default=None, help="output folder, which must not exist yet or be empty "
                   "(default: a new folder in runs/)")
    p.add_argument("--plots", action="store_true", default=None,
                   help="also write figures (training curves, precision-recall against CCA, the common space "
                        "before/after) and retrieval examples into the output folder; needs matplotlib")
    TrainConfig.add_arguments(p, "training")
    ACMRConfig.add_arguments(p, "model")
    r = p.add_argument_group("resume and evaluation")
    r.add_argument("--resume", metavar="DIR", default=None,
                   help="continue the run in DIR from its last saved epoch, with its own settings (only "
                        "--backend may be given; default: the run's backend)")
    r.add_argument("--eval-only", action="store_true",
                   help="evaluate --checkpoint on the test split of --data (default: the checkpoint's data)")
    r.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="for --eval-only: a run folder, its checkpoint.npz, or a model file")
    return p


def _fresh_out(out):
    """Create the output folder (default: a new one under runs/); never overwrite one."""
    if out is None:
        base = os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
        out, i = base, 1
        while os.path.exists(out):
            i += 1
            out = f"{base}-{i}"
    return fresh_folder(out, hint=f", or continue it with --resume {out}")


def _settings(cls, args, base=None):
    """A configuration from the command line, with a bad value as a one-line InputError."""
    try:
        return cls.from_args(args, base)
    except (TypeError, ValueError) as exc:
        msg = str(exc)
        for name in cls.given(args):  # name the flag, not the field
            msg = msg.replace(f"{cls.__name__}: {name} ", f"{cls.flag(name)} ")
        raise InputError(msg) from None


def _write_figures(out, model, data, history, cfg, seed, xp):
    # The untrained model the run started from: Training's construction and first draws
    # from default_rng(seed), hence the same initial weights (tests/test_train.py checks).
    before = ACMR.for_data(data, cfg, rng=numpy.random.default_rng(seed), xp=xp)
    paths = make_run_figures(out, model, data, history, before=before)
    print("figures: " + ", ".join(sorted(paths.values())))


def _evaluate_only(args):
    if not args.checkpoint:
        raise InputError("--eval-only needs --checkpoint (a run folder, its checkpoint.npz or a model file)")
    if args.plots and not args.out:
        raise InputError("--eval-only --plots needs --out DIR for the figures")
    if args.plots:
        require_matplotlib()
    meta, arrays = checkpoint.read(args.checkpoint)
    run = meta["format"] == checkpoint.RUN
    saved = checkpoint.run_settings(meta, args.checkpoint)[1] if run else TrainConfig()
    # By default, the data the run was trained on, split with the same seed (the
    # synthetic set and a carved validation split both depend on it).
    train = _settings(TrainConfig, args, saved)
    path = args.data if args.data is not None else (meta["source"].get("data") if run else None)
    if path is None and not run and args.data is None:
        raise InputError("--eval-only with a model file needs --data (a model file does not name its data)")
    model = checkpoint.model_from(meta, arrays, args.checkpoint, train.backend)
    data = load_dataset(path, seed=train.seed, val_fraction=train.val_fraction)
    for key, have in (("d_img", data.d_img), ("d_txt", data.d_txt), ("n_classes", data.n_classes)):
        if meta["sizes"][key] != have:
            raise InputError(f"checkpoint {args.checkpoint} was trained with {key}={meta['sizes'][key]}, "
                             f"but {data.name} has {key}={have}")
    if run and data.fingerprint() != meta["data"]:
        print(f"note: {data.name} is not the data set the checkpoint was trained on")
    out = _fresh_out(args.out) if args.out else None
    metrics = evaluate(model, data.test)
    metrics["relevance"] = relevance_protocol(data.test.labels)  # "same class" or "shares a label"
    if out:
        write_json(os.path.join(out, METRICS), {**metrics, "checkpoint": os.path.abspath(args.checkpoint),
                                                "data": data.name})
        print(f"metrics written to {out}/{METRICS}")
        if args.plots:
            _write_figures(out, model, data, None, model.config, train.seed, model.xp)
    print(format_table(metrics, len(data.test), title=f"test on {data.name}"))


def _given_flags(args):
    """The flags given on the command line other than --resume and --backend."""
    flags = [f"--{k}" for k in RUN_FLAGS if getattr(args, k) is not None]
    flags += [ACMRConfig.flag(k) for k in ACMRConfig.given(args)]
    flags += [TrainConfig.flag(k) for k in TrainConfig.given(args) if k != "backend"]
    flags += ["--checkpoint"] * (args.checkpoint is not None)
    return flags


def _resume(args):
    """The run in --resume DIR, rebuilt from its checkpoint: (training, out, settings)."""
    given = _given_flags(args)
    if given:
        raise InputError(f"--resume continues a run with the settings saved in it; remove "
                         f"{', '.join(given)} (only --backend may be given)")
    out = args.resume
    path = os.path.join(out, CHECKPOINT)
    if not os.path.isdir(out):
        raise InputError(f"--resume {out}: no such run folder")
    if not os.path.isfile(path):
        raise InputError(f"--resume {out}: no {CHECKPOINT} there (no epoch of this run had finished); "
                         f"start it again with another --out, or delete the folder")
    meta, arrays = checkpoint.read(path)
    config, train = checkpoint.run_settings(meta, path)
    if args.backend is not None:
        train = TrainConfig.from_dict({**train.to_dict(), "backend": args.backend})
    try:
        with open(os.path.join(out, CONFIG)) as f:
            written = json.load(f)
    except (OSError, ValueError) as exc:
        raise InputError(f"{os.path.join(out, CONFIG)}: not a readable run configuration ({exc})") from None
    saved = {"model": meta["model"], "train": meta["train"]}
    differs = sorted(f"{part}.{k}" for part in saved for k in set(saved[part]) | set(written.get(part) or {})
                     if (written.get(part) or {}).get(k) != saved[part].get(k))
    if differs:
        raise InputError(f"--resume {out}: {CONFIG} differs from the settings saved in {CHECKPOINT} "
                         f"({', '.join(differs)}); a run continues with its own settings only")
    source = meta["source"]
    data = load_dataset(source.get("data"), seed=train.seed, val_fraction=train.val_fraction)
    if data.fingerprint() != meta["data"]:
        raise InputError(f"--resume {out}: the data ({data.name}) is not the data this run was trained on")
    training = Training(data, config, train)
    checkpoint.restore_run(training, meta, arrays, path)
    return training, out, {"data": source.get("data"), "plots": written.get("plots", False)}


def _train(args):
    if args.resume:
        training, out, run = _resume(args)
        print(f"resuming {out} after epoch {training.epoch} on backend {training.train.backend}")
    else:
        config, train = _settings(ACMRConfig, args), _settings(TrainConfig, args)
        if args.plots:
            require_matplotlib()
        get_backend(train.backend)  # a missing CuPy is reported before anything is made
        run = {"data": os.path.abspath(args.data) if args.data else None, "plots": bool(args.plots)}
        data = load_dataset(run["data"], seed=train.seed, val_fraction=train.val_fraction)
        try:
            training = Training(data, config, train)
        except ValueError as exc:
            raise InputError(str(exc).replace("batch_size", "--batch-size")) from None
        out = _fresh_out(args.out)
        write_json(os.path.join(out, CONFIG), {"model": config.to_dict(), "train": train.to_dict(), **run,
                                               "out": os.path.abspath(out)})
    data = training.data
    print(f"data: {data.name}: train {len(data.train)}, val {len(data.val)}, test {len(data.test)} pairs, "
          f"{f'{data.n_classes} labels (multi-label)' if data.multilabel else f'{data.n_classes} classes'}, image {data.d_img}-d, text {data.d_txt}-d; backend {training.train.backend}")

    saved = training.epoch  # the epoch whose checkpoint is complete on disk
    try:
        while training.epoch < training.epochs:
            try:
                row = training.train_epoch()
            except FloatingPointError as exc:
                kept = (f"the checkpoint of epoch {saved} is kept in {out}/{CHECKPOINT}" if saved
                        else "no epoch had finished, so there is no checkpoint")
                raise InputError(f"training diverged: {exc}; {kept}; try a smaller --lr") from None
            checkpoint.save_run(os.path.join(out, CHECKPOINT), training, source={"data": run["data"]})
            saved = training.epoch
            print(format_epoch(row, training.epochs), flush=True)
    except KeyboardInterrupt:
        if saved:
            print(f"\ninterrupted; the checkpoint of epoch {saved} is in {out}/{CHECKPOINT}. "
                  f"Resume with: {PROG} --resume {out}", file=sys.stderr)
        else:
            print(f"\ninterrupted before the first epoch finished; nothing to resume in {out}", file=sys.stderr)
        return 130

    training.use_best()
    metrics = evaluate(training.model, data.test)
    metrics.update(relevance=relevance_protocol(data.test.labels), best_epoch=training.best_epoch, best_val_map=training.history.best_val_map,
                   seconds=training.seconds, epochs=training.epochs, seed=training.train.seed, data=data.name)
    write_json(os.path.join(out, METRICS), metrics)
    if run["plots"]:
        _write_figures(out, training.model, data, training.history, training.config, training.train.seed,
                       training.model.xp)
    print(f"best epoch {training.best_epoch} (validation mAP {training.history.best_val_map:.4f}); "
          f"{training.seconds:.1f}s of training")
    print(f"outputs: {out}/{METRICS}, {out}/{CONFIG}, {out}/{CHECKPOINT}")
    print(format_table(metrics, len(data.test)))
    return 0


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def _main(argv):
    args = build_parser().parse_args(argv)
    if args.eval_only:
        _evaluate_only(args)
        return 0
    # SIGTERM (a scheduler, `kill`) is treated like Ctrl-C while training, and the
    # caller's handler is put back afterwards (main() may be called from Python).
    if threading.current_thread() is not threading.main_thread():
        return _train(args)  # signal handlers can only be set from the main thread
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        return _train(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv=None):
    return run_main(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
