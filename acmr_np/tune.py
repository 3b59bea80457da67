"""python -m acmr_np.tune: random search over ACMR's settings, scored on validation only.

    python -m acmr_np.tune --data wiki_data.mat --trials 20 --seeds 0 1 2 --out runs/tune
    python -m acmr_np.tune --resume runs/tune            # continue an interrupted search

Each trial draws every model setting from the ranges in SPACE (below), trains one run
per seed, and is scored by the mean over the seeds of the best validation mAP@all
(the epoch each run would keep). The test split is never loaded into a score: choose
here, then train the best settings once with ``python -m acmr_np.train`` and report
its test numbers.

Trial t's settings depend only on the search's --search-seed and t, so an interrupted
search continues with the very trials it would have run. Outputs in --out:
tune.json (the search's own settings), trials.csv (one row per finished trial: its
settings, the validation mAP of each seed, the mean, the seconds), best.json (the best
trial's ACMRConfig, usable as ``python -m acmr_np.train --config best.json``); each
rewritten atomically after every trial. Trials run in parallel processes (--jobs), each
with one BLAS thread: small matrices gain nothing from more, and lose a lot when the
cores are shared.
"""
import csv
import io
import json
import math
import os
import sys
import time

import numpy

from .cli import ArgumentParser, Interrupted, add_data_arguments, fresh_folder, lock_folder, run_main, source_of
from .config import ACMRConfig, TrainConfig
from .errors import InputError
from .files import write_json, write_text

PROG = "python -m acmr_np.tune"
SETTINGS, TRIALS, BEST = "tune.json", "trials.csv", "best.json"

# The search space: (kind, arguments). "log": log-uniform on [lo, hi]; "uniform": uniform;
# "int": integers lo..hi; "choice": one of the values. Ranges span what the paper and
# later work used around the defaults (lr and l2 over two decades, alpha and beta over
# 0.1..10 as the paper's grid 0.01..100 narrowed to where training is stable here).
SPACE = {
    "lr": ("log", 1e-4, 1e-2),
    "img_hidden": ("choice", [(256,), (512,), (1024,), (512, 256)]),
    "txt_hidden": ("choice", [(64,), (128,), (256,), (256, 128)]),
    "dim": ("choice", [32, 64, 128, 256]),
    "alpha": ("log", 0.1, 10.0),
    "beta": ("log", 0.1, 10.0),
    "l2": ("log", 1e-5, 1e-2),
    "margin": ("uniform", 0.1, 2.0),
    "lam": ("uniform", 0.0, 0.2),
    "k": ("int", 1, 10),
    "triplet": ("choice", ["hinge", "pull_push"]),
    "distance": ("choice", ["cosine", "euclidean"]),
    "sampling": ("choice", ["random", "hardest"]),
}


def draw(search_seed, trial):
    """The ACMRConfig of trial number ``trial`` (0-based) of a search: a function of the
    two numbers alone (its own generator), so a resumed search draws the same trials."""
    rng = numpy.random.default_rng([search_seed, trial])
    values = {}
    for name, (kind, *args) in SPACE.items():
        if kind == "log":
            values[name] = float(math.exp(rng.uniform(math.log(args[0]), math.log(args[1]))))
        elif kind == "uniform":
            values[name] = float(rng.uniform(args[0], args[1]))
        elif kind == "int":
            values[name] = int(rng.integers(args[0], args[1] + 1))
        else:
            values[name] = args[0][int(rng.integers(len(args[0])))]
    if values["distance"] == "euclidean":  # squared distances between raw tanh outputs reach 4 m
        values["margin"] *= values["dim"] / 2
    return ACMRConfig(**values)


def run_trial(job):
    """One trial (in a worker process): train one run per seed, return its row."""
    from .formats import load_source
    from .training import Training

    config, train, source, seeds = job
    t0 = time.perf_counter()
    scores = []
    for seed in seeds:
        settings = TrainConfig.from_dict({**train.to_dict(), "seed": seed})
        data = load_source(source, seed=seed, val_fraction=settings.val_fraction)
        run = Training(data, config, settings)
        try:
            run.run()
            scores.append(run.history.best_val_map)
        except FloatingPointError:  # a diverging setting scores nothing: it is a result, not a crash
            scores.append(float("nan"))
    return {"scores": scores, "seconds": time.perf_counter() - t0}


def _row(trial, config, result):
    row = {"trial": trial}
    row.update({k: ",".join(map(str, v)) if isinstance(v, list) else v for k, v in config.to_dict().items()})
    finite = [s for s in result["scores"] if math.isfinite(s)]
    row["val_map_mean"] = sum(result["scores"]) / len(result["scores"]) if len(finite) == len(result["scores"]) \
        else float("nan")
    row.update({f"val_map_seed{i}": s for i, s in enumerate(result["scores"])})
    row["seconds"] = round(result["seconds"], 2)
    return row


def _csv(rows):
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def command_line(config, settings):
    """The python -m acmr_np.train command that trains ``config`` with the search's data
    and training settings."""
    d, parts = ACMRConfig().to_dict(), ["python -m acmr_np.train"]
    source = _source(settings)
    for key, flag in (("data", "--data"), ("train", "--train"), ("val", "--val"), ("test", "--test")):
        if source.get(key):
            parts.append(f"{flag} {source[key]}")
    if source.get("keys"):
        parts.append("--keys " + ",".join(f"{k}={v}" for k, v in source["keys"].items()))
    for k, v in settings["train"].items():
        if k != "seed" and v != TrainConfig().to_dict()[k]:
            parts.append(f"{TrainConfig.flag(k)} {v}")
    for k, v in config.to_dict().items():
        if v != d[k]:
            parts.append(f"{ACMRConfig.flag(k)} {','.join(map(str, v)) if isinstance(v, list) else v}")
    return " ".join(parts)


def _read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def search(out, settings, log=print):
    """Run the trials of ``settings`` not yet in out/trials.csv; write the outputs."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    import multiprocessing

    path = os.path.join(out, TRIALS)
    rows = _read_rows(path) if os.path.exists(path) else []
    done = {int(r["trial"]) for r in rows}
    train = TrainConfig.from_dict(settings["train"], where=os.path.join(out, SETTINGS))
    todo = [t for t in range(settings["trials"]) if t not in done]
    if done:
        log(f"resuming {out}: {len(done)} of {settings['trials']} trials done")
    # Workers are fresh processes with one BLAS thread each (set before they import NumPy).
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    jobs = {t: (draw(settings["search_seed"], t), train, _source(settings), settings["seeds"]) for t in todo}
    with ProcessPoolExecutor(settings["jobs"], mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_trial, job): t for t, job in jobs.items()}
        for future in as_completed(futures):
            t = futures[future]
            row = _row(t, jobs[t][0], future.result())
            rows = sorted(rows + [row], key=lambda r: int(r["trial"]))
            write_text(path, _csv(rows))
            best = max(rows, key=lambda r: _score(r))
            if int(best["trial"]) == t:
                write_json(os.path.join(out, BEST), {"trial": t, "val_map_mean": row["val_map_mean"],
                                                     "model": jobs[t][0].to_dict()})
            log(f"trial {t + 1:3d}/{settings['trials']}  val mAP {row['val_map_mean']:.4f}  "
                f"({', '.join(f'{s:.4f}' for s in future.result()['scores'])})  {row['seconds']:.1f}s  "
                f"best so far: trial {int(best['trial']) + 1} ({_score(best):.4f})")
    return rows


def _source(settings):
    """A search's data source (tune.json's "source"; searches of earlier versions wrote "data")."""
    return settings.get("source") or {"data": settings.get("data")}


def _score(row):
    v = float(row["val_map_mean"])
    return v if math.isfinite(v) else -1.0


def build_parser():
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    add_data_arguments(p)
    # (every default None: --resume refuses any flag given, and a new search fills them in)
    p.add_argument("--trials", type=int, default=None, help="number of settings to try (default: 20)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="one run per seed and trial; a trial scores the mean (default: 0 1 2)")
    p.add_argument("--search-seed", type=int, default=None, help="seeds the settings drawn (default: 0)")
    p.add_argument("--jobs", type=int, default=None,
                   help="trials run at once, in separate processes (default: the number of cores)")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"maximum epochs per run (default: {TrainConfig.epochs})")
    p.add_argument("--patience", type=int, default=None,
                   help=f"early stopping per run (default: {TrainConfig.patience})")
    p.add_argument("--batch-size", type=int, default=None, help=f"(default: {TrainConfig.batch_size})")
    p.add_argument("--out", default=None, help="output folder (must not exist yet, or be empty)")
    p.add_argument("--resume", metavar="DIR", default=None, help="continue the search in DIR")
    return p


NEW_SEARCH = {"trials": 20, "seeds": [0, 1, 2], "search_seed": 0, "jobs": os.cpu_count() or 1,
              "epochs": TrainConfig.epochs, "patience": TrainConfig.patience, "batch_size": TrainConfig.batch_size}


def _main(argv):
    args = build_parser().parse_args(argv)
    given = [f"--{k.replace('_', '-')}" for k, v in vars(args).items() if v is not None and k != "resume"]
    if args.resume and given:
        raise InputError(f"--resume continues a search with the settings saved in it; remove {', '.join(given)}")
    for k, v in NEW_SEARCH.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.resume:
        out = args.resume
        try:
            with open(os.path.join(out, SETTINGS)) as f:
                settings = json.load(f)
        except (OSError, ValueError) as exc:
            raise InputError(f"--resume {out}: no readable {SETTINGS} ({exc})") from None
        lock = lock_folder(out)  # a search is continued by one process at a time
    else:
        if args.out is None:
            raise InputError("--out DIR is needed: where trials.csv and best.json go")
        if args.trials < 1 or args.jobs < 1:
            raise InputError("--trials and --jobs must be positive")
        try:
            train = TrainConfig(epochs=args.epochs, patience=args.patience, batch_size=args.batch_size)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        from .formats import load_source
        source = source_of(args)
        load_source(source, seed=args.seeds[0])  # bad data is reported before anything is made
        lock = fresh_folder(args.out)  # claimed atomically; the lock ends with this process
        out = lock.folder
        settings = {"source": source, "trials": args.trials,
                    "seeds": args.seeds, "search_seed": args.search_seed, "jobs": args.jobs,
                    "train": train.to_dict()}
        write_json(os.path.join(out, SETTINGS), settings)
    try:
        rows = search(out, settings, log=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        raise Interrupted(f"finished trials are in {out}/{TRIALS}. Resume with: {PROG} --resume {out}") from None
    finally:
        lock.release()
    best = max(rows, key=_score)
    config = ACMRConfig.from_dict(json.load(open(os.path.join(out, BEST)))["model"])
    print(f"best: trial {int(best['trial']) + 1}, mean validation mAP {_score(best):.4f} over seeds "
          f"{' '.join(map(str, settings['seeds']))}; outputs: {out}/{TRIALS}, {out}/{BEST}")
    print("train it with:\n  " + command_line(config, settings))
    return 0


def main(argv=None):
    return run_main(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
