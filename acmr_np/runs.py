"""A run's folder on disk: claiming it for a new run, and resuming the run it holds.

A new run claims its --out folder atomically and holds its lock while it lasts
(cli.claim_folder); a run that saved nothing is removed again (``discard``), so the same
command can simply be run again. ``resume`` rebuilds a run from its folder: it locks it,
removes a killed process's unfinished temporaries, checks config.json against the
settings saved in the checkpoint and the data against its fingerprint, and applies the
changes --resume may make (--epochs, --override-lr, --backend), each recorded in the run
(``record``). The command line around it is train.py.
"""
import contextlib
import dataclasses
import json
import os
import re
import time

from . import checkpoint
from .cli import claim_folder, deferred_interrupts, lock_folder
from .config import ACMRConfig, TrainConfig
from .errors import InputError
from .files import TMP_PREFIX, write_json
from .formats import SOURCE_KEYS, load_source
from .training import Training

METRICS, CONFIG, CHECKPOINT = "metrics.json", "config.json", checkpoint.CHECKPOINT
HISTORY, EMBEDDINGS = "history.json", "embeddings.npz"
# the temporary of an atomic write (files.atomic_write) of a file a run writes, left by a killed process
ORPHAN = re.compile(re.escape(TMP_PREFIX) + r"[a-z0-9_]{8}(checkpoint\.npz|config\.json|metrics\.json|history\.json"
                    r"|embeddings\.npz|examples\.txt|[a-z_]+\.png)$")
RUN_FLAGS = ("data", "train_file", "val_file", "test_file", "keys", "out", "plots", "config", "save_embeddings")
# (besides the configurations' flags, what a new run takes)
CONFIG_KEYS = {"model", "train", "source", "plots", "save_embeddings", "out", "changes"}  # what config.json holds


RESUME_FLAGS = ("backend", "epochs")  # the configurations' flags --resume takes (and --override-lr)


def _has_run(names):
    return CHECKPOINT in names


def claim_out(out):
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


def discard(lock):
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


def given_flags(args):
    """The flags given on the command line that --resume does not take."""
    flags = [f"--{k}" for k in RUN_FLAGS if getattr(args, k) is not None]
    flags += [ACMRConfig.flag(k) for k in ACMRConfig.given(args)]
    flags += [TrainConfig.flag(k) for k in TrainConfig.given(args) if k not in RESUME_FLAGS]
    flags += ["--checkpoint"] * (args.checkpoint is not None)
    return flags


def changes(args, out, meta, config, train):
    """What this --resume changes (--epochs, --override-lr, --backend): (change, config,
    train), where change is {} or {"after_epoch": E, name: [old, new], ...}."""
    done, change = meta["epoch"], {}
    finished = os.path.exists(os.path.join(out, METRICS))
    if args.epochs is not None and args.epochs != train.epochs:
        least = done + 1 if finished else done  # a finished run needs at least one epoch more
        if args.epochs < least:
            raise InputError(f"--resume {out}: --epochs {args.epochs} is below the {done} epochs this run has "
                             f"already trained; give {'more than' if finished else 'at least'} {done}")
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


def resume(args):
    """The run in --resume DIR, locked and rebuilt from its checkpoint: (training, lock, run)."""
    given = given_flags(args)
    if given:
        raise InputError(f"--resume continues a run with the settings saved in it; remove "
                         f"{', '.join(given)} (only --backend, --epochs and --override-lr may be given)")
    out = args.resume
    path = os.path.join(out, CHECKPOINT)
    if not os.path.isdir(out):
        raise InputError(f"--resume {out}: no such run folder")
    if not any(os.path.isfile(os.path.join(out, n)) for n in (CONFIG, CHECKPOINT)):
        # checked before the lock, which would leave a lock file in any folder given
        raise InputError(f"--resume {out}: not a run folder (a run writes {CONFIG} and {CHECKPOINT} "
                         f"there); give the folder a run's --out named")
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
        unknown = sorted(set(written) - CONFIG_KEYS)
        if unknown:
            raise InputError(f"--resume {out}: {CONFIG} holds entries a run does not write ({', '.join(unknown)}); "
                             f"a run continues with its own settings only")
        # (the source is compared as the run wrote it; checkpoints of older runs lack its keys)
        saved = {"model": meta["model"], "train": meta["train"],
                 "source": {k: meta["source"].get(k) for k in SOURCE_KEYS}}
        differs = sorted(f"{part}.{k}" for part in saved
                         for k in set(saved[part]) | set(written.get(part) or {})
                         if (written.get(part) or {}).get(k) != saved[part].get(k))
        if differs and _interrupted_change(meta, written, differs):
            # killed between the two writes of a change (record): config.json is one step behind
            written = {**written, "model": meta["model"], "train": meta["train"], "changes": meta["changes"]}
            write_json(os.path.join(out, CONFIG), written)
            print(f"note: {CONFIG} lacked the last change recorded in {CHECKPOINT} ({', '.join(differs)}); "
                  f"written again from it")
        elif differs:
            raise InputError(f"--resume {out}: {CONFIG} differs from the settings saved in {CHECKPOINT} "
                             f"({', '.join(differs)}); a run continues with its own settings only (a change "
                             f"is made with --epochs or --override-lr, and recorded)")
        change, config, train = changes(args, out, meta, config, train)
        source = meta["source"]
        data = load_source(source, seed=train.seed, val_fraction=train.val_fraction)
        if data.fingerprint() != meta["data"]:
            raise InputError(f"--resume {out}: the data ({data.name}) is not the data this run was trained on")
        training = Training(data, config, train)
        checkpoint.restore_run(training, meta, arrays, path)
        if change:
            training.changes.append(change)
            record(out, training, source, written, change)
        return training, lock, {**{k: source.get(k) for k in SOURCE_KEYS}, "plots": bool(written.get("plots", False)),
                                "save_embeddings": bool(written.get("save_embeddings", False))}
    except BaseException:
        lock.release()
        raise


CHANGED = {"epochs": ("train", "epochs"), "backend": ("train", "backend"), "lr": ("model", "lr")}


def _interrupted_change(meta, written, differs):
    """Whether config.json differs from the checkpoint only by the checkpoint's last change,
    holding the values from before it: what a kill between record's two writes leaves."""
    changes = meta.get("changes") or []
    if not changes or written.get("changes", []) != changes[:-1]:
        return False
    last = changes[-1]
    fields = {f"{part}.{key}": last[name][0] for name, (part, key) in CHANGED.items() if name in last}
    return set(differs) <= set(fields) and all(
        written.get(f.split(".")[0], {}).get(f.split(".")[1]) == old for f, old in fields.items() if f in differs)


def record(out, training, source, written, change):
    """Write a --resume's change into the run at once (checkpoint, then config.json, with
    signals held back between the two), and put aside the metrics of a finished run that
    is being extended."""
    done = change["after_epoch"]
    with deferred_interrupts():
        checkpoint.save_run(os.path.join(out, CHECKPOINT), training, source=source)
        write_json(os.path.join(out, CONFIG), {**written, "model": training.config.to_dict(),
                                               "train": training.train.to_dict(), "changes": training.changes})
        for name in (METRICS, EMBEDDINGS):  # a finished run's results, put aside as they were
            if os.path.exists(os.path.join(out, name)):
                stem, ext = os.path.splitext(name)
                os.replace(os.path.join(out, name), os.path.join(out, f"{stem}-epoch{done}{ext}"))
                print(f"note: the {stem} of the run as it was after epoch {done} are now {stem}-epoch{done}{ext}")
    words = {"epochs": "epochs", "lr": "learning rate", "backend": "backend"}
    print("changed from epoch " + str(done + 1) + ": " + ", ".join(
        f"{words[k]} {change[k][0]} -> {change[k][1]}" for k in words if k in change)
        + (" (lambda's ramp now spans the new length)" if "epochs" in change
           and training.config.lam_schedule == "dann" else ""))
