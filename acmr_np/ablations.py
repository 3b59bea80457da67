"""python -m acmr_np.ablations: the paper's Table 5, on your data, over several seeds.

    python -m acmr_np.ablations --data wiki_data.mat --seeds 0 1 2 3 4

Each variant switches terms off in the training objective (Eq. 8 and the GRL) and
keeps every other setting at the defaults of python -m acmr_np.train:

    full ACMR           alpha L_imi + beta L_imd + L_reg, adversary through the GRL
    without L_adv       lambda = 0: the modality classifier still trains, but nothing
                        reaches the projectors through the GRL
    without L_imi       alpha = 0
    without L_imd       beta = 0
    L_imd only          alpha = 0 and lambda = 0

It prints img->txt / txt->img / average mAP@all on the test split, mean ± standard
deviation over the seeds (the best epoch on validation, as in python -m acmr_np.train),
and with --out writes every run's numbers to ablations.json.
"""
import dataclasses
import sys

import numpy

from .formats import load_dataset
from .backend import BACKENDS, get_backend
from .cli import ArgumentParser, Interrupted, describe_error, output_file, run_main
from .config import ACMRConfig, TrainConfig
from .errors import InputError
from .files import write_json
from .training import evaluate, fit

ABLATIONS = {
    "full ACMR": {},
    "without L_adv": {"lam": 0.0},
    "without L_imi": {"alpha": 0.0},
    "without L_imd": {"beta": 0.0},
    "L_imd only": {"alpha": 0.0, "lam": 0.0},
}
DIRECTIONS = ("map_img2txt", "map_txt2img", "map_avg")
PROG, OUTPUT = "python -m acmr_np.ablations", "ablations.json"


def run_ablations(data_path, seeds, *, base=None, train=None, variants=tuple(ABLATIONS), log=None):
    """Train every variant for every seed. Returns {variant: [test metrics per seed]}.
    base: the ACMRConfig the variants change (default: the defaults); train: a
    TrainConfig whose seed is replaced by each of ``seeds``."""
    base = base or ACMRConfig()
    train = train or TrainConfig()
    results = {}
    for name in variants:
        cfg = dataclasses.replace(base, **ABLATIONS[name])
        results[name] = []
        for seed in seeds:
            data = load_dataset(data_path, seed=seed, val_fraction=train.val_fraction)
            model, _ = fit(data, cfg, dataclasses.replace(train, seed=seed))
            metrics = evaluate(model, data.test)
            results[name].append(metrics)
            if log:
                log(f"{name:14s} seed {seed}: average mAP@all {metrics['map_avg']:.4f}")
    return results


def summarize(results):
    """{variant: {direction: (mean, std)}} with the sample standard deviation (ddof=1)."""
    out = {}
    for name, runs in results.items():
        out[name] = {}
        for key in DIRECTIONS:
            v = numpy.array([r[key] for r in runs])
            out[name][key] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0)
    return out


def format_summary(summary, n_seeds):
    lines = [f"test mAP@all, mean ± std over {n_seeds} seed(s)",
             f"{'variant':16s}{'img->txt':>18s}{'txt->img':>18s}{'average':>18s}"]
    for name, row in summary.items():
        cells = "".join(f"{m:11.4f} ± {s:.4f}" for m, s in (row[k] for k in DIRECTIONS))
        lines.append(f"{name:16s}{cells}")
    return "\n".join(lines)


def _main(argv):
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="data set (default: synthetic)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs, help="maximum epochs per run")
    p.add_argument("--patience", type=int, default=TrainConfig.patience,
                   help="early stopping per run (0: never stop early)")
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--backend", default="numpy", choices=BACKENDS)
    p.add_argument("--variants", nargs="+", default=list(ABLATIONS), choices=list(ABLATIONS), metavar="NAME",
                   help=f"a subset of: {', '.join(repr(v) for v in ABLATIONS)}")
    p.add_argument("--out", default=None, help="write ablations.json into this folder (checked for writing before "
                   "any training; an existing ablations.json is never replaced)")
    args = p.parse_args(argv)
    try:
        train = TrainConfig(epochs=args.epochs, patience=args.patience, batch_size=args.batch_size,
                            backend=args.backend)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    get_backend(args.backend)
    path = output_file(args.out, OUTPUT) if args.out else None  # checked (writable, new) before any training
    unsaved = f"{path} was not written" if path else "nothing was written"
    finished = []

    def log(line):
        finished.append(line)
        print(line, flush=True)

    try:
        results = run_ablations(args.data, args.seeds, train=train, variants=args.variants, log=log)
    except FloatingPointError as exc:  # training.Training's divergence guard
        raise InputError(f"training diverged after {len(finished)} finished runs: {exc}") from None
    except KeyboardInterrupt:
        raise Interrupted(f"after {len(finished)} of {len(args.variants) * len(args.seeds)} runs (their numbers "
                          f"are above); {unsaved}") from None
    summary = summarize(results)
    print(format_summary(summary, len(args.seeds)), flush=True)  # first: a failed write below loses nothing
    if path:
        try:
            write_json(path, {"data": args.data, "seeds": args.seeds, "epochs": args.epochs,
                              "patience": args.patience, "runs": results,
                              "summary": {k: {d: list(v) for d, v in row.items()} for k, row in summary.items()}},
                       overwrite=False)
        except KeyboardInterrupt:
            raise Interrupted(f"{unsaved} (the summary above is complete)") from None
        except OSError as exc:
            raise InputError(f"{describe_error(exc)}; the summary above is complete, but it is not saved") from None
        print(f"written: {path}")
    return 0


def main(argv=None):
    return run_main(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
