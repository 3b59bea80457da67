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
from .backend import get_backend, to_host
from .cli import (ArgumentParser, Interrupted, add_data_arguments, deferred_interrupts, describe_error, run_main,
                  source_of)
from .config import ACMRConfig, TrainConfig
from .errors import InputError
from .files import write_json
from .files import save_npz
from .formats import SOURCE_KEYS, load_source, load_split
from .metrics import relevance_protocol
from .model import ACMR
from .plots import make_run_figures, require_matplotlib  # matplotlib itself loads lazily
from .report import format_epoch, format_table
from .runs import CHECKPOINT, CONFIG, EMBEDDINGS, HISTORY, METRICS, claim_out, discard, resume
from .training import Training, evaluate

PROG = "python -m acmr_np.train"
DEFAULT_THREADS = 1  # measured: docs/PERFORMANCE.md, "BLAS threads"


# ---- the command line -----------------------------------------------------------------



def build_parser():
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    add_data_arguments(p, "a whole data set: .npz, .h5/.hdf5, a folder of .npy files, a Wikipedia .mat or a "
                          "DSCMR folder (default: the synthetic set; with --eval-only, the checkpoint's data; a "
                          "file with only test arrays is evaluated as such)")
    p.add_argument("--out", default=None, help="output folder, which must not exist yet or be an empty folder; "
                   "it is claimed atomically and locked while the run lasts (default: a new folder in runs/)")
    p.add_argument("--plots", action="store_true", default=None,
                   help="also write figures (training curves, precision-recall against CCA, the common space "
                        "before/after) and retrieval examples into the output folder; needs matplotlib")
    p.add_argument("--save-embeddings", action="store_true", default=None,
                   help=f"also write the test split's common-space embeddings, labels and class names to "
                        f"{EMBEDDINGS} in the output folder")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, metavar="N",
                   help=f"BLAS threads for the matrix products (default: {DEFAULT_THREADS}; 0: the library's own "
                        f"choice); see the README's note on busy machines")
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
    # the labels as the data has them ("cat", 110, ...), where they are not the ids themselves
    names = [str(c) for c in data.classes] if list(data.classes) != list(range(data.n_classes)) else None
    paths = make_run_figures(out, model, data, history, before=before, class_names=names)
    print("figures: " + ", ".join(sorted(paths.values())))


def _eval_data(args, meta, run, train):
    """(split, name, data): the split --eval-only scores, its name, and the whole data set
    it belongs to (None for a file holding only a test split: a new held-out set)."""
    given = source_of(args)
    classes = meta.get("classes")
    if given["test"] and not (given["train"] or given["data"]):  # a new held-out set: its test arrays only
        if given["val"]:
            raise InputError("--eval-only --test FILE evaluates that file alone: remove --val")
        split, _ = load_split(given["test"], keys=given["keys"], classes=classes)
        return split, given["test"], None
    source = given if (given["data"] or given["train"]) else (meta["source"] if run else None)
    if source is None:
        raise InputError("--eval-only with a model file needs --data or --test (a model file does not name "
                         "its data)")
    try:
        data = load_source(source, seed=train.seed, val_fraction=train.val_fraction)
    except InputError as whole:
        if not source.get("data") or source.get("train"):
            raise
        try:  # not a whole data set: a file with the test arrays only?
            split, _ = load_split(source["data"], keys=source.get("keys"), classes=classes)
        except InputError:
            raise whole from None  # what a whole data set would need says more
        return split, source["data"], None
    if classes is not None and list(data.classes) != list(classes):
        raise InputError(f"checkpoint {args.checkpoint} was trained on the classes {list(classes)[:10]}, but "
                         f"{data.name} has {list(data.classes)[:10]}: their ids would mean other classes")
    return data.test, data.name, data


def _write_embeddings(path, model, split, classes):
    """The split's common-space embeddings (host float32), its label ids and the class
    names, as an .npz: img (n, m), txt (n, m), labels (n,) or (n, c), classes (c,) strings."""
    s_v, s_t = (to_host(e) for e in model.embed(split.img, split.txt))
    names = numpy.array([str(c) for c in (classes if classes is not None else range(model.n_classes))])
    save_npz(path, {"img": s_v, "txt": s_t, "labels": numpy.asarray(split.labels), "classes": names})
    print(f"embeddings written to {path}")


def _evaluate_only(args):
    if not args.checkpoint:
        raise InputError("--eval-only needs --checkpoint (a run folder, its checkpoint.npz or a model file)")
    if (args.plots or args.save_embeddings) and not args.out:
        raise InputError("--eval-only --plots / --save-embeddings needs --out DIR for the files")
    training_flags = ([ACMRConfig.flag(k) for k in ACMRConfig.given(args)]
                      + [TrainConfig.flag(k) for k in TrainConfig.given(args)
                         if k not in ("seed", "val_fraction", "backend")]  # these choose the data and device
                      + ["--resume"] * bool(args.resume) + ["--override-lr"] * (args.override_lr is not None)
                      + ["--config"] * (args.config is not None))
    if training_flags:
        raise InputError(f"--eval-only evaluates, it does not train: remove {', '.join(training_flags)}")
    if args.plots:
        require_matplotlib()
    meta, arrays = checkpoint.read(args.checkpoint)
    run = meta["format"] == checkpoint.RUN
    saved = checkpoint.run_settings(meta, args.checkpoint)[1] if run else TrainConfig()
    # By default, the data the run was trained on, split with the same seed (the
    # synthetic set and a carved validation split both depend on it).
    train = _settings(TrainConfig, args, saved)
    model = checkpoint.model_from(meta, arrays, args.checkpoint, train.backend)
    split, name, data = _eval_data(args, meta, run, train)
    if args.plots and data is None:
        raise InputError("--eval-only --plots needs a whole data set (its figures compare with CCA fitted on "
                         "the training split); give --data")
    sizes = {"d_img": split.img.shape[1], "d_txt": split.txt.shape[1]}
    if data is not None:
        sizes["n_classes"] = data.n_classes
    for key, have in sizes.items():
        if meta["sizes"][key] != have:
            raise InputError(f"checkpoint {args.checkpoint} was trained with {key}={meta['sizes'][key]}, "
                             f"but {name} has {key}={have}")
    if run and data is not None and data.fingerprint() != meta["data"]:
        print(f"note: {data.name} is not the data set the checkpoint was trained on")
    lock = claim_out(args.out) if args.out else None
    done = False
    try:
        metrics = evaluate(model, split)
        metrics["relevance"] = relevance_protocol(split.labels)  # "same class" or "shares a label"
        if lock:
            out = lock.folder
            write_json(os.path.join(out, METRICS), {**metrics, "checkpoint": os.path.abspath(args.checkpoint),
                                                    "data": name})
            done = True
            print(f"metrics written to {out}/{METRICS}")
            if args.save_embeddings:
                _write_embeddings(os.path.join(out, EMBEDDINGS), model, split, meta.get("classes"))
            if args.plots:
                try:
                    _write_figures(out, model, data, None, model.config, train.seed, model.xp)
                except KeyboardInterrupt:
                    raise Interrupted(f"while drawing the figures; {out}/{METRICS} is written") from None
        print(format_table(metrics, len(split.labels), title=f"test on {name}"))
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
        run = {**source_of(args), "plots": bool(args.plots), "save_embeddings": bool(args.save_embeddings)}
        data = load_source(run, seed=train.seed, val_fraction=train.val_fraction)
        if data.test is None:
            raise InputError("the data has no test split: give --data with test arrays, or --test FILE")
        try:
            training = Training(data, config, train)
        except ValueError as exc:
            raise InputError(str(exc).replace("batch_size", "--batch-size")) from None
        lock = claim_out(args.out)
        out = lock.folder
    try:
        if not args.resume:
            write_json(os.path.join(out, CONFIG), {
                "model": training.config.to_dict(), "train": training.train.to_dict(),
                "source": {k: run[k] for k in SOURCE_KEYS}, "plots": run["plots"],
                "save_embeddings": run["save_embeddings"], "out": os.path.abspath(out)})
        return _run(training, out, run, fresh=not args.resume)
    except BaseException:
        if not args.resume and not os.path.exists(os.path.join(out, CHECKPOINT)):
            discard(lock)  # nothing worth keeping: the same command can be run again
        raise
    finally:
        lock.release()


def _run(training, out, run, fresh):
    data = training.data
    kind = f"{data.n_classes} labels (multi-label)" if data.multilabel else f"{data.n_classes} classes"
    print(f"data: {data.name}: train {len(data.train)}, val {len(data.val)}, test {len(data.test)} pairs, "
          f"{kind}, image {data.d_img}-d, text {data.d_txt}-d; backend {training.train.backend}", flush=True)
    if fresh and list(data.classes) != list(range(data.n_classes)):  # said once, when the run starts
        shown = ", ".join(f"{i}={c}" for i, c in enumerate(data.classes[:12]))
        print(f"labels mapped to class ids in sorted order (saved with the run): {shown}"
              + (f", ... ({data.n_classes} in all)" if data.n_classes > 12 else ""))
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
            with deferred_interrupts():  # the epoch on disk and the one reported stay the same
                what = "the checkpoint"
                try:
                    checkpoint.save_run(path, training, source={k: run[k] for k in SOURCE_KEYS})
                    saved = training.epoch
                    what = HISTORY  # the per-epoch rows, for reading (the checkpoint holds them too)
                    write_json(os.path.join(out, HISTORY), list(training.history))
                except OSError as exc:
                    raise InputError(f"cannot write {what} of epoch {training.epoch}: {describe_error(exc)}; "
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
    if run.get("save_embeddings"):
        _write_embeddings(os.path.join(out, EMBEDDINGS), training.model, data.test, data.classes)
    if run["plots"]:
        try:
            _write_figures(out, training.model, data, training.history, training.config, training.train.seed,
                           training.model.xp)
        except KeyboardInterrupt:
            raise Interrupted(f"while drawing the figures; {out}/{METRICS} is written. Draw them with: "
                              f"{PROG} --eval-only --plots --checkpoint {out} --out DIR") from None
    print(summary)
    print(f"outputs: {out}/{METRICS}, {out}/{HISTORY}, {out}/{CONFIG}, {out}/{CHECKPOINT}")
    print(format_table(metrics, len(data.test)))
    return 0


def blas_threads(n):
    """A context that runs the matrix products on n BLAS threads (0: leave the library's
    own choice). Small products gain nothing from a second thread and lose much when the
    cores are busy (docs/PERFORMANCE.md); threadpoolctl changes the count in a running
    process, NumPy already loaded."""
    if n < 0:
        raise InputError(f"--threads must be 0 (the library's choice) or a positive count, got {n}")
    if n == 0:
        import contextlib
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # a dependency (setup.py): missing only where the package was not installed
        raise InputError("--threads needs threadpoolctl (pip install threadpoolctl, or install acmr_np with "
                         "pip); --threads 0 runs without it") from None
    return threadpool_limits(limits=n, user_api="blas")


def _main(argv):
    args = build_parser().parse_args(argv)
    with blas_threads(args.threads):
        if args.eval_only:
            _evaluate_only(args)
            return 0
        return _train(args)


def main(argv=None):
    return run_main(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
