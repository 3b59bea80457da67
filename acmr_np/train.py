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
import contextlib
import dataclasses
import json
import os
import re
import sys
import time

import numpy

from . import checkpoint
from .backend import get_backend
from .cli import (ArgumentParser, Interrupted, claim_folder, deferred_interrupts, lock_folder, run_main,
                  describe_error)
from .config import ACMRConfig, TrainConfig
from .errors import InputError
from .files import TMP_PREFIX, write_json
from .formats import load_dataset
from .metrics import relevance_protocol
from .model import ACMR
from .plots import make_run_figures, require_matplotlib  # matplotlib itself loads lazily
from .report import format_epoch, format_table
from .training import Training, evaluate

PROG = "python -m acmr_np.train"
METRICS, CONFIG, CHECKPOINT = "metrics.json", "config.json", checkpoint.CHECKPOINT
# the temporary of an atomic write (files.atomic_write) of a file a run writes, left by a killed process
ORPHAN = re.compile(re.escape(TMP_PREFIX) + r"[a-z0-9_]{8}(checkpoint\.npz|config\.json|metrics\.json|examples\.txt"
                    r"|[a-z_]+\.png)$")


# ---- the command line -----------------------------------------------------------------

RUN_FLAGS = ("data", "out", "plots", "config")  # besides the configurations' flags, what a new run takes
RESUME_FLAGS = ("backend", "epochs")  # the configurations' flags --resume takes (and --override-lr)


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


def _has_run(names):
    return CHECKPOINT in names


def _claim_out(out):
    """Claim the output folder (default: a new one under runs/) for this run: a FolderLock."""
    if out is not None:
        return claim_folder(out, hint=f", or continue its run with --resume {out}", resumable=_has_run)
    base = os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs("runs", exist_ok=True)
    for i in range(1, 1000):
        out = base if i == 1 else f"{base}-{i}"
        try:
            os.mkdir(out)  # atomic: two runs started in the same second get different folders
        except FileExistsError:
            continue
        lock = claim_folder(out)
        lock.created = True
        return lock
    raise InputError(f"cannot find a free folder name {base}-N under runs/; give --out")


def _discard(lock):
    """Remove what a run wrote into its folder before it saved anything worth keeping (its
    config.json, unfinished temporaries), the lock, and the folder itself if the run made it."""
    for name in os.listdir(lock.folder):
        if name == CONFIG or name.startswith(TMP_PREFIX):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(lock.folder, name))
    lock.release()
    if lock.created:
        with contextlib.suppress(OSError):
            os.rmdir(lock.folder)


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
    lock = _claim_out(args.out) if args.out else None
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
            _discard(lock)
        elif lock:
            lock.release()


def _given_flags(args):
    """The flags given on the command line that --resume does not take."""
    flags = [f"--{k}" for k in RUN_FLAGS if getattr(args, k) is not None]
    flags += [ACMRConfig.flag(k) for k in ACMRConfig.given(args)]
    flags += [TrainConfig.flag(k) for k in TrainConfig.given(args) if k not in RESUME_FLAGS]
    flags += ["--checkpoint"] * (args.checkpoint is not None)
    return flags


def _changes(args, out, meta, config, train):
    """What this --resume changes (--epochs, --override-lr, --backend): (change, config,
    train), where change is {} or {"after_epoch": E, name: [old, new], ...}."""
    done, change = meta["epoch"], {}
    if args.epochs is not None and args.epochs != train.epochs:
        if args.epochs < done:
            raise InputError(f"--resume {out}: --epochs {args.epochs} is below the {done} epochs this run has "
                             f"already trained; give at least {done}")
        change["epochs"] = [train.epochs, args.epochs]
    if args.override_lr is not None and args.override_lr != config.lr:
        change["lr"] = [config.lr, args.override_lr]
    if args.backend is not None and args.backend != train.backend:
        change["backend"] = [train.backend, args.backend]
    try:
        if "lr" in change:
            config = dataclasses.replace(config, lr=args.override_lr)
        train = dataclasses.replace(train, **{k: change[k][1] for k in ("epochs", "backend") if k in change})
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc).replace("ACMRConfig: lr ", "--override-lr ")
                         .replace("TrainConfig: epochs ", "--epochs ")) from None
    left = train.epochs - done
    if not left and os.path.exists(os.path.join(out, METRICS)):
        raise InputError(f"--resume {out}: this run has finished (epoch {done} of {train.epochs}; {METRICS} is "
                         f"written), so there is nothing to resume; to train it further, give a new length: "
                         f"--resume {out} --epochs N with N > {done}")
    if not left and "lr" in change:
        raise InputError(f"--resume {out}: --override-lr has no epoch left to act on (epoch {done} of "
                         f"{train.epochs}); add --epochs N with N > {done} to train further")
    return ({"after_epoch": done, **change} if change else {}), config, train


def _resume(args):
    """The run in --resume DIR, locked and rebuilt from its checkpoint: (training, lock, run)."""
    given = _given_flags(args)
    if given:
        raise InputError(f"--resume continues a run with the settings saved in it; remove "
                         f"{', '.join(given)} (only --backend, --epochs and --override-lr may be given)")
    out = args.resume
    path = os.path.join(out, CHECKPOINT)
    if not os.path.isdir(out):
        raise InputError(f"--resume {out}: no such run folder")
    lock = lock_folder(out)  # before anything is read: a running process may be writing
    try:
        if lock.previous:
            pid, host = lock.previous
            print(f"note: the lock of process {pid}, which no longer runs (killed?), is taken over")
        orphans = [n for n in os.listdir(out) if ORPHAN.match(n)] if os.path.isfile(os.path.join(out, CONFIG)) else []
        for name in orphans:  # nobody else writes here while we hold the lock: a killed process's
            os.unlink(os.path.join(out, name))
        if orphans:
            print(f"note: removed {len(orphans)} unfinished temporary file(s) of a killed process: "
                  f"{', '.join(orphans)}")
        if not os.path.isfile(path):
            raise InputError(f"--resume {out}: no {CHECKPOINT} there: the run stopped before saving its first "
                             f"epoch, so there is nothing to resume; remove the folder (rm -r {out}) and start "
                             f"the run again")
        meta, arrays = checkpoint.read(path)
        config, train = checkpoint.run_settings(meta, path)
        try:
            with open(os.path.join(out, CONFIG)) as f:
                written = json.load(f)
            if not isinstance(written, dict) or not all(isinstance(written.get(k, {}), dict)
                                                        for k in ("model", "train")):
                raise ValueError("not a JSON object with model and train settings")
        except (OSError, ValueError) as exc:
            raise InputError(f"{os.path.join(out, CONFIG)}: not a readable run configuration ({exc})") from None
        saved = {"model": meta["model"], "train": meta["train"]}
        differs = sorted(f"{part}.{k}" for part in saved
                         for k in set(saved[part]) | set(written.get(part) or {})
                         if (written.get(part) or {}).get(k) != saved[part].get(k))
        if differs and _interrupted_change(meta, written, differs):
            # killed between the two writes of a change (_record): config.json is one step behind
            written = {**written, "model": meta["model"], "train": meta["train"], "changes": meta["changes"]}
            write_json(os.path.join(out, CONFIG), written)
            print(f"note: {CONFIG} lacked the last change recorded in {CHECKPOINT} ({', '.join(differs)}); "
                  f"written again from it")
        elif differs:
            raise InputError(f"--resume {out}: {CONFIG} differs from the settings saved in {CHECKPOINT} "
                             f"({', '.join(differs)}); a run continues with its own settings only (a change "
                             f"is made with --epochs or --override-lr, and recorded)")
        change, config, train = _changes(args, out, meta, config, train)
        source = meta["source"]
        data = load_dataset(source.get("data"), seed=train.seed, val_fraction=train.val_fraction)
        if data.fingerprint() != meta["data"]:
            raise InputError(f"--resume {out}: the data ({data.name}) is not the data this run was trained on")
        training = Training(data, config, train)
        checkpoint.restore_run(training, meta, arrays, path)
        if change:
            training.changes.append(change)
            _record(out, training, source, written, change)
        return training, lock, {"data": source.get("data"), "plots": bool(written.get("plots", False))}
    except BaseException:
        lock.release()
        raise


CHANGED = {"epochs": ("train", "epochs"), "backend": ("train", "backend"), "lr": ("model", "lr")}


def _interrupted_change(meta, written, differs):
    """Whether config.json differs from the checkpoint only by the checkpoint's last change,
    holding the values from before it: what a kill between _record's two writes leaves."""
    changes = meta.get("changes") or []
    if not changes or written.get("changes", []) != changes[:-1]:
        return False
    last = changes[-1]
    fields = {f"{part}.{key}": last[name][0] for name, (part, key) in CHANGED.items() if name in last}
    return set(differs) <= set(fields) and all(
        written.get(f.split(".")[0], {}).get(f.split(".")[1]) == old for f, old in fields.items() if f in differs)


def _record(out, training, source, written, change):
    """Write a --resume's change into the run at once (checkpoint, then config.json, with
    signals held back between the two), and put aside the metrics of a finished run that
    is being extended."""
    done = change["after_epoch"]
    with deferred_interrupts():
        checkpoint.save_run(os.path.join(out, CHECKPOINT), training, source=source)
        write_json(os.path.join(out, CONFIG), {**written, "model": training.config.to_dict(),
                                               "train": training.train.to_dict(), "changes": training.changes})
        if os.path.exists(os.path.join(out, METRICS)):
            os.replace(os.path.join(out, METRICS), os.path.join(out, f"metrics-epoch{done}.json"))
            print(f"note: the metrics of the run as it was after epoch {done} are now metrics-epoch{done}.json")
    words = {"epochs": "epochs", "lr": "learning rate", "backend": "backend"}
    print("changed from epoch " + str(done + 1) + ": " + ", ".join(
        f"{words[k]} {change[k][0]} -> {change[k][1]}" for k in words if k in change)
        + (" (lambda's ramp now spans the new length)" if "epochs" in change
           and training.config.lam_schedule == "dann" else ""))


def _kept(out, saved):
    if saved:
        return f"the checkpoint of epoch {saved} is kept in {out}/{CHECKPOINT}"
    return f"no epoch had been saved, so nothing is kept ({out} is removed)"


def _train(args):
    if args.override_lr is not None and not args.resume:
        raise InputError("--override-lr is for --resume (a new run takes --lr)")
    if args.resume:
        training, lock, run = _resume(args)
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
        lock = _claim_out(args.out)
        out = lock.folder
    try:
        if not args.resume:
            write_json(os.path.join(out, CONFIG), {"model": training.config.to_dict(),
                                                   "train": training.train.to_dict(), **run,
                                                   "out": os.path.abspath(out)})
        return _run(training, out, run, fresh=not args.resume)
    except BaseException:
        if not args.resume and not os.path.exists(os.path.join(out, CHECKPOINT)):
            _discard(lock)  # nothing worth keeping: the same command can be run again
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
