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
import json
import os
import sys

import numpy

from . import checkpoint
from .backend import get_backend
from .cli import ArgumentParser, Interrupted, deferred_interrupts, describe_error, run_main
from .config import ACMRConfig, TrainConfig
from .errors import InputError
from .files import write_json
from .formats import load_dataset
from .metrics import relevance_protocol
from .model import ACMR
from .plots import make_run_figures, require_matplotlib  # matplotlib itself loads lazily
from .report import format_epoch, format_table
from .runs import CHECKPOINT, CONFIG, METRICS, claim_out, discard, resume
from .training import Training, evaluate

PROG = "python -m acmr_np.train"


# ---- the command line -----------------------------------------------------------------



def build_parser():
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="a .npz, a Wikipedia .mat, or a DSCMR folder (default: the "
                   "synthetic set; with --eval-only, the checkpoint's data)")
    p.add_argument("--out", default=None, help="output folder, which must not exist yet or be an empty folder; "
                   "it is claimed atomically and locked while the run lasts (default: a new folder in runs/)")
    p.add_argument("--plots", action="store_true", default=None,
                   help="also write figures (training curves, precision-recall against CCA, the common space "
                        "before/after) and retrieval examples into the output folder; needs matplotlib")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="model settings from a JSON file (e.g. the best.json of python -m acmr_np.tune, or a "
                        "run's config.json); flags given as well override it")
    TrainConfig.add_arguments(p, "training")
    ACMRConfig.add_arguments(p, "model")
    r = p.add_argument_group("resume and evaluation")
    r.add_argument("--resume", metavar="DIR", default=None,
                   help="continue the run in DIR from its last saved epoch, with its own settings; only --backend "
                        "(default: the run's), --epochs (a new length, at least the epochs done: to extend a "
                        "run) and --override-lr may be given, and each change is recorded in the run")
    r.add_argument("--override-lr", metavar="LR", type=float, default=None,
                   help="with --resume: continue with this learning rate instead of the run's (e.g. after it "
                        "diverged); recorded in config.json, the checkpoint and the history rows")
    r.add_argument("--eval-only", action="store_true",
                   help="evaluate --checkpoint on the test split of --data (default: the checkpoint's data)")
    r.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="for --eval-only: a run folder, its checkpoint.npz, or a model file")
    return p


def _settings(cls, args, base=None):
    """A configuration from the command line, with a bad value as a one-line InputError."""
    try:
        return cls.from_args(args, base)
    except (TypeError, ValueError) as exc:
        msg = str(exc)
        for name in cls.given(args):  # name the flag, not the field
            msg = msg.replace(f"{cls.__name__}: {name} ", f"{cls.flag(name)} ")
        raise InputError(msg) from None


def _config_file(path):
    """The ACMRConfig in a JSON file: {"model": {...}} (best.json, config.json) or the
    settings themselves; None without a file."""
    if path is None:
        return None
    try:
        with open(path) as f:
            d = json.load(f)
        return ACMRConfig.from_dict(d.get("model", d) if isinstance(d, dict) else d, where=path)
    except OSError as exc:
        raise InputError(f"--config {path}: {exc.strerror or exc}") from None
    except (TypeError, ValueError) as exc:  # JSON syntax, unknown or mistyped settings
        raise InputError(f"--config {path}: {exc}" if path not in str(exc) else str(exc)) from None


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
    if args.override_lr is not None or args.resume:
        raise InputError("--eval-only does not take --resume or --override-lr (it evaluates, it does not train)")
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
    lock = claim_out(args.out) if args.out else None
    done = False
    try:
        metrics = evaluate(model, data.test)
        metrics["relevance"] = relevance_protocol(data.test.labels)  # "same class" or "shares a label"
        if lock:
            out = lock.folder
            write_json(os.path.join(out, METRICS), {**metrics, "checkpoint": os.path.abspath(args.checkpoint),
                                                    "data": data.name})
            done = True
            print(f"metrics written to {out}/{METRICS}")
            if args.plots:
                try:
                    _write_figures(out, model, data, None, model.config, train.seed, model.xp)
                except KeyboardInterrupt:
                    raise Interrupted(f"while drawing the figures; {out}/{METRICS} is written") from None
        print(format_table(metrics, len(data.test), title=f"test on {data.name}"))
    finally:
        if lock and not done:
            discard(lock)
        elif lock:
            lock.release()


def _kept(out, saved):
    if saved:
        return f"the checkpoint of epoch {saved} is kept in {out}/{CHECKPOINT}"
    return f"no epoch had been saved, so nothing is kept ({out} is removed)"


def _train(args):
    if args.override_lr is not None and not args.resume:
        raise InputError("--override-lr is for --resume (a new run takes --lr)")
    if args.resume:
        training, lock, run = resume(args)
        out = lock.folder
        print(f"resuming {out} after epoch {training.epoch} on backend {training.train.backend}")
    else:
        config, train = _settings(ACMRConfig, args, _config_file(args.config)), _settings(TrainConfig, args)
        if args.plots:
            require_matplotlib()
        get_backend(train.backend)  # a missing CuPy is reported before anything is made
        run = {"data": os.path.abspath(args.data) if args.data else None, "plots": bool(args.plots)}
        data = load_dataset(run["data"], seed=train.seed, val_fraction=train.val_fraction)
        try:
            training = Training(data, config, train)
        except ValueError as exc:
            raise InputError(str(exc).replace("batch_size", "--batch-size")) from None
        lock = claim_out(args.out)
        out = lock.folder
    try:
        if not args.resume:
            write_json(os.path.join(out, CONFIG), {"model": training.config.to_dict(),
                                                   "train": training.train.to_dict(), **run,
                                                   "out": os.path.abspath(out)})
        return _run(training, out, run, fresh=not args.resume)
    except BaseException:
        if not args.resume and not os.path.exists(os.path.join(out, CHECKPOINT)):
            discard(lock)  # nothing worth keeping: the same command can be run again
        raise
    finally:
        lock.release()


def _run(training, out, run, fresh):
    data = training.data
    print(f"data: {data.name}: train {len(data.train)}, val {len(data.val)}, test {len(data.test)} pairs, "
          f"{f'{data.n_classes} labels (multi-label)' if data.multilabel else f'{data.n_classes} classes'}, image {data.d_img}-d, text {data.d_txt}-d; backend {training.train.backend}",
          flush=True)
    path = os.path.join(out, CHECKPOINT)
    saved = training.epoch  # the epoch whose checkpoint is complete on disk
    try:
        while training.stop_reason() is None:
            try:
                row = training.train_epoch()
            except FloatingPointError as exc:
                lr = training.config.lr
                advice = (f"continue it with a smaller learning rate: {PROG} --resume {out} --override-lr {lr / 10:g}"
                          if saved else f"start again with a smaller --lr (this run's: {lr:g})")
                raise InputError(f"training diverged: {exc}; {_kept(out, saved)}"
                                 f"{' (that epoch passed the check: its weights are finite)' if saved else ''}; "
                                 f"{advice}") from None
            try:
                with deferred_interrupts():  # the epoch on disk and the one reported stay the same
                    checkpoint.save_run(path, training, source={"data": run["data"]})
                    saved = training.epoch
            except OSError as exc:
                raise InputError(f"cannot write the checkpoint of epoch {training.epoch}: {describe_error(exc)}; "
                                 f"{_kept(out, saved)}") from None
            print(format_epoch(row, training.epochs), flush=True)
    except KeyboardInterrupt:
        if saved:
            raise Interrupted(f"the checkpoint of epoch {saved} is in {path}. Resume with: {PROG} --resume {out}") \
                from None
        raise Interrupted(f"no epoch had finished, so there is nothing to resume ({out} is removed)") from None

    resume = f"{PROG} --resume {out}"
    stopped_early = training.epoch < training.epochs
    if stopped_early:
        print(f"stopped after epoch {training.epoch}: {training.stop_reason()}")
    try:
        training.use_best()
        metrics = evaluate(training.model, data.test)
    except KeyboardInterrupt:
        raise Interrupted(f"after training, before the test metrics were written; the checkpoint of epoch "
                          f"{saved} is in {path}. Write them with: {resume}") from None
    metrics.update(relevance=relevance_protocol(data.test.labels), best_epoch=training.best_epoch, best_val_map=training.history.best_val_map,
                   seconds=training.seconds, epochs=training.epoch, max_epochs=training.epochs,
                   stopped_early=stopped_early, seed=training.train.seed, data=data.name)
    summary = (f"best epoch {training.best_epoch} (validation mAP {training.history.best_val_map:.4f}); "
               f"{training.seconds:.1f}s of training")
    try:
        write_json(os.path.join(out, METRICS), metrics)
    except KeyboardInterrupt:
        raise Interrupted(f"after training, before the test metrics were written; the checkpoint of epoch "
                          f"{saved} is in {path}. Write them with: {resume}") from None
    except OSError as exc:
        print(summary)
        print(format_table(metrics, len(data.test)))
        raise InputError(f"{describe_error(exc)}; the checkpoint of epoch {saved} is kept in {path}: write the "
                         f"metrics with {resume} once there is room") from None
    if run["plots"]:
        try:
            _write_figures(out, training.model, data, training.history, training.config, training.train.seed,
                           training.model.xp)
        except KeyboardInterrupt:
            raise Interrupted(f"while drawing the figures; {out}/{METRICS} is written. Draw them with: "
                              f"{PROG} --eval-only --plots --checkpoint {out} --out DIR") from None
    print(summary)
    print(f"outputs: {out}/{METRICS}, {out}/{CONFIG}, {out}/{CHECKPOINT}")
    print(format_table(metrics, len(data.test)))
    return 0


def _main(argv):
    args = build_parser().parse_args(argv)
    if args.eval_only:
        _evaluate_only(args)
        return 0
    return _train(args)


def main(argv=None):
    return run_main(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
