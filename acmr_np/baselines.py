"""python -m acmr_np.baselines: CCA, label posterior, "no training" on the test split, ACMR's metric code.

    python -m acmr_np.baselines --data wiki_data.mat            # prints the table
    python -m acmr_np.baselines --data wiki_data.mat --out runs/baselines   # + baselines.json

The data are loaded and split exactly as ``python -m acmr_np.train`` does (same
``--seed`` and ``--val-fraction`` give the same validation split). CCA is fitted on the
training split, its number of components is chosen on the validation split, and the test
split is used once, for the table. The label posterior (one softmax regression per
modality, retrieval by the cosine of the class-probability vectors) is fitted on the
training split with its L2 strength chosen on the validation split, likewise. All three
are scored by ``metrics.evaluate_retrieval``: mAP@all and mAP@50, cosine similarity,
both directions. See acmr_np/cca.py and acmr_np/posterior.py for the methods themselves.
"""
import argparse
import sys

from .cca import DEFAULT_REG, NO_TRAINING_DIM, NoTraining, fit_select
from .cli import ArgumentParser, Interrupted, add_data_arguments, describe_error, output_file, run_main, source_of
from .errors import InputError
from .files import write_json
from .formats import load_source
from .metrics import evaluate_retrieval, relevance_protocol
from .posterior import DEFAULT_REGS
from .posterior import fit_select as fit_posterior_select

PROG = "python -m acmr_np.baselines"
OUTPUT = "baselines.json"


def run_baselines(data, *, reg=DEFAULT_REG, seed=0, dim=NO_TRAINING_DIM, posterior_regs=DEFAULT_REGS):
    """Fit and score the three baselines on a PairedDataset.

    Returns {"cca": {...}, "posterior": {...}, "no_training": {...}}: each holds the test
    metrics of ``evaluate_retrieval`` (map_img2txt, map_txt2img, map_avg, map50_*) and the
    settings that produced them; CCA adds the chosen n_components, its validation score
    and the validation score of every candidate; the posterior adds the chosen reg (from
    ``posterior_regs``), its validation score, the validation score of every reg, and
    each modality's L-BFGS-B iterations, convergence and largest final gradient entry.
    The fitted CCA is returned as well, for plots: (results, cca_model).
    """
    cca = fit_select(data.train, data.val, reg=reg)
    cca_metrics = evaluate_retrieval(*cca.embed(data.test.img, data.test.txt), data.test.labels)
    post = fit_posterior_select(data.train, data.val, regs=posterior_regs)
    post_metrics = evaluate_retrieval(*post.embed(data.test.img, data.test.txt), data.test.labels)
    raw = NoTraining(data.d_img, data.d_txt, dim=dim, seed=seed)
    raw_metrics = evaluate_retrieval(*raw.embed(data.test.img, data.test.txt), data.test.labels)
    results = {
        "cca": {**cca_metrics, "n_components": cca.n_components, "max_components": cca.max_components,
                "reg": cca.reg, "val_map": cca.val_scores[cca.n_components],
                "val_map_by_components": {str(k): v for k, v in cca.val_scores.items()},
                "canonical_correlations": [float(r) for r in cca.corrs]},
        "posterior": {**post_metrics, "reg": post.reg, "val_map": post.val_scores[post.reg],
                      "val_map_by_reg": {f"{r:g}": v for r, v in post.val_scores.items()},
                      "n_classes": post.n_classes,
                      **{f"{m}_{key}": getattr(getattr(post, m), key)
                         for m in ("img", "txt") for key in ("n_iter", "converged", "grad_max")}},
        "no_training": {**raw_metrics, "kind": raw.kind, "dim": raw.dim, "seed": seed},
    }
    return results, cca


def format_table(results, data):
    """The results of ``run_baselines`` as a plain-text table."""
    cca, post, raw = results["cca"], results["posterior"], results["no_training"]
    rows = [(f"CCA ({cca['n_components']} of {cca['max_components']} components, reg {cca['reg']:g})", cca),
            (f"label posterior (softmax regression per modality, reg {post['reg']:g})", post),
            (f"no training ({raw['kind']})", raw)]
    width = max(len(name) for name, _ in rows)
    lines = [f"baselines on {data.name}",
             f"test split: {len(data.test)} pairs, {data.n_classes} "
             f"{'labels (multi-label; relevant = shares a label)' if data.multilabel else 'classes'}; "
             f"CCA fitted on {len(data.train)} training pairs, components chosen on {len(data.val)} "
             f"validation pairs (validation mAP@all {cca['val_map']:.4f})",
             f"label posterior fitted on the same training pairs, reg chosen on validation from "
             f"{', '.join(post['val_map_by_reg'])} (validation mAP@all {post['val_map']:.4f})",
             "",
             f"{'method':<{width}}  {'metric':<8} {'img->txt':>8}  {'txt->img':>8}  {'average':>8}"]
    for name, m in rows:
        for label, key in (("mAP@all", "map"), ("mAP@50", "map50")):
            lines.append(f"{name if key == 'map' else '':<{width}}  {label:<8} {m[key + '_img2txt']:8.4f}  "
                         f"{m[key + '_txt2img']:8.4f}  {m[key + '_avg']:8.4f}")
    unconverged = [m for m in ("img", "txt") if not post[f"{m}_converged"]]
    if unconverged:  # the numbers stand, but say so: the optimum was not reached
        lines.append(f"note: the label posterior's L-BFGS-B stopped before converging for {', '.join(unconverged)}")
    return "\n".join(lines)


def build_parser():
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0],
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_arguments(p)
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the validation split (as in acmr_np.train) and of the random projections")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="part of train held out for validation when the data has no validation split")
    p.add_argument("--reg", type=float, default=DEFAULT_REG,
                   help="CCA ridge, relative to each covariance's mean variance")
    p.add_argument("--dim", type=int, default=NO_TRAINING_DIM,
                   help="size of the no-training random projections (used when d_img != d_txt)")
    p.add_argument("--out", default=None, help=f"folder to write {OUTPUT} into (created if missing; checked for "
                   f"writing before the work; an existing {OUTPUT} is never replaced)")
    return p


def _main(argv):
    args = build_parser().parse_args(argv)
    if not args.reg >= 0:  # also catches NaN
        raise InputError(f"--reg must be non-negative, got {args.reg}")
    if args.dim < 1:
        raise InputError(f"--dim must be positive, got {args.dim}")
    # the folder is checked before the work: it must take data, and baselines.json must not exist
    path = output_file(args.out, OUTPUT) if args.out is not None else None
    unsaved = f"{path} was not written" if path else "nothing was written"
    try:
        data = load_source(source_of(args), seed=args.seed, val_fraction=args.val_fraction)
        if data.test is None:
            raise InputError("the data has no test split: give --data with test arrays, or --test FILE")
        results, _ = run_baselines(data, reg=args.reg, seed=args.seed, dim=args.dim)
    except KeyboardInterrupt:
        raise Interrupted(unsaved) from None
    print(format_table(results, data), flush=True)  # printed first: a failed write below loses nothing
    if path:
        try:
            write_json(path, {**results, "data": data.name, "relevance": relevance_protocol(data.test.labels),
                              "seed": args.seed, "val_fraction": args.val_fraction,
                              "sizes": {s: len(getattr(data, s)) for s in ("train", "val", "test")}},
                       overwrite=False)
        except KeyboardInterrupt:
            raise Interrupted(f"{unsaved} (the table above is complete)") from None
        except OSError as exc:
            raise InputError(f"{describe_error(exc)}; the table above is complete, but it is not saved") from None
        print(f"written: {path}")
    return 0


def main(argv=None):
    return run_main(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
