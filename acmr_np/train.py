"""python -m acmr_np.train: train ACMR, keep the best epoch on validation, test it.

    python -m acmr_np.train                                # embedded synthetic data
    python -m acmr_np.train --data wiki_data.mat --seed 1  # real features
    python -m acmr_np.train --resume runs/RUN              # continue an interrupted run
    python -m acmr_np.train --eval-only --checkpoint runs/RUN/checkpoint.npz --data FILE

Each epoch prints one line (loss terms, lambda, modality-classifier accuracy,
validation mAP, seconds). The epoch with the best validation mAP@all is kept; the test
split is touched once, at the end. Outputs in --out (default: a new folder in runs/):
metrics.json, config.json, checkpoint.npz (best parameters, plus the last epoch's full
training state for --resume). Every file is written atomically.
"""
import argparse
import json
import math
import os
import signal
import sys
import threading
import time

import numpy

from . import formats as data_module
from .backend import BACKENDS, get_backend, to_device, to_host
from .cli import ArgumentParser, fresh_folder, run_main
from .errors import InputError
from .files import save_npz, write_json
from .metrics import evaluate_retrieval, paired_map
from .model import ACMR, LAMBDA_SCHEDULES, TRIPLET_FORMS, ACMRConfig, Trainer, load_model_arrays
from .plots import initial_model, make_run_figures, require_matplotlib  # matplotlib itself loads lazily
from .triplets import STRATEGIES

TERMS = ("L_imi", "L_imd", "L_reg", "L_adv", "adv_acc")
CHECKPOINT, METRICS, CONFIG = "checkpoint.npz", "metrics.json", "config.json"


# ---- the training loop ---------------------------------------------------------------

class Run:
    """Everything one training run carries from epoch to epoch, and its checkpoint."""

    def __init__(self, data, cfg, *, epochs, batch_size, seed, xp, source=None):
        if batch_size > len(data.train):
            raise InputError(f"--batch-size {batch_size} is larger than the training set "
                             f"({len(data.train)} pairs)")
        self.data, self.cfg, self.epochs, self.batch_size, self.seed = data, cfg, epochs, batch_size, seed
        self.source = source or {}  # where the data came from: {"data": path or None, "val_fraction"}
        self.rng = numpy.random.default_rng(seed)
        self.model = ACMR.for_data(data, cfg, rng=self.rng, xp=xp)
        self.trainer = Trainer(self.model)
        # the training set, standardised and moved to the device once for the whole run
        img, txt = self.model.standardize(data.train.img, data.train.txt)
        self.train_arrays = (img, txt, to_device(data.train.labels, xp))
        self.epoch, self.history, self.seconds = 0, [], 0.0
        self.best_epoch, self.best_val, self.best_params = 0, -1.0, None

    @property
    def steps_per_epoch(self):
        return math.ceil(len(self.data.train) / self.batch_size)

    def train_epoch(self):
        """One pass over the training set in a fresh random order. Returns the log row."""
        xp, B = self.model.xp, self.batch_size
        t0 = time.perf_counter()
        train = self.data.train
        img, txt, labels = self.train_arrays
        n, steps = len(train), self.steps_per_epoch
        total_steps = self.epochs * steps

        # All random numbers of the epoch are drawn here, on the host, from the run's
        # seeded generator: the order of the pairs, and the noise that picks triplets.
        perm = self.rng.permutation(n)
        noise = to_device(self.rng.random((steps, 2, B, B), dtype=numpy.float32), xp)
        perm_dev = to_device(perm, xp)
        # A batch with one class has no negatives: L_imi is skipped for it (known here,
        # on the host, so the step itself never waits for the device).
        multi_class = [len(numpy.unique(train.labels[perm[s * B:(s + 1) * B]])) > 1 for s in range(steps)]

        # The loss terms stay on the device until the end of the epoch.
        step_log = xp.zeros((steps, len(TERMS)), dtype=numpy.float64)
        for s in range(steps):
            idx = perm_dev[s * B:(s + 1) * B]
            b = min(B, n - s * B)
            terms, lam = self.trainer.train_step(
                img[idx], txt[idx], labels[idx], noise[s, :, :b, :b] if multi_class[s] else None,
                progress=self.trainer.step_count / total_steps)
            step_log[s] = xp.stack([terms[k] for k in TERMS])
        step_log = to_host(step_log)  # the one device-to-host copy of the epoch
        self.epoch += 1
        bad = ~numpy.isfinite(step_log)
        if bad.any():
            s, t = numpy.argwhere(bad)[0]
            raise FloatingPointError(f"{TERMS[t]} became {step_log[s, t]} at epoch {self.epoch}, "
                                     f"step {s + 1} of {steps}")
        # epoch means weighted by batch size (the last batch may be smaller)
        sizes = numpy.minimum(B, n - B * numpy.arange(steps))
        row = {"epoch": self.epoch, **{k: float(sizes @ step_log[:, i] / n) for i, k in enumerate(TERMS)},
               "lam": lam}
        row["val_map"] = self.validation_map()
        row["seconds"] = time.perf_counter() - t0
        self.seconds += row["seconds"]
        self.history.append(row)
        if row["val_map"] > self.best_val:
            self.best_epoch, self.best_val = self.epoch, row["val_map"]
            self.best_params = {k: v.copy() for k, v in self.model.named("params").items()}
        return row

    def fit(self, log=None):
        """Train the remaining epochs without writing files (ablations, notebooks), load
        the best epoch, and return its test metrics. ``log``: called with each epoch line."""
        while self.epoch < self.epochs:
            row = self.train_epoch()
            if log:
                log(format_epoch(row, self.epochs))
        self.use_best()
        return evaluate_split(self.model, self.data.test)

    def validation_map(self):
        """Mean of the two directions' mAP@all on the validation split."""
        val = self.data.val
        return paired_map(*self.model.embed(val.img, val.txt), val.labels)

    def use_best(self):
        """Load the best epoch's parameters into the model (for the test)."""
        for k, v in self.model.named("params").items():
            v[...] = self.best_params[k]

    # ---- checkpoint --------------------------------------------------------------------
    def meta(self):
        return {"epoch": self.epoch, "epochs": self.epochs, "batch_size": self.batch_size, "seed": self.seed,
                "history": self.history, "seconds": self.seconds, "best_epoch": self.best_epoch,
                "best_val": self.best_val, "rng": self.rng.bit_generator.state,
                "model": self.cfg.to_dict(), "data": self.data.fingerprint(), "source": self.source}

    def state_arrays(self):
        """Host arrays: the best parameters (what --eval-only uses), the last epoch's
        full training state (what --resume uses), and the metadata as JSON."""
        out = {f"best/{k}": to_host(v) for k, v in self.best_params.items()}
        out.update({f"last/{k}": numpy.asarray(v) for k, v in self.trainer.state_dict().items()})
        out["meta"] = numpy.array(json.dumps(self.meta()))
        return out

    def save(self, folder):
        save_npz(os.path.join(folder, CHECKPOINT), self.state_arrays())

    def restore(self, ckpt, meta):
        """Continue from a checkpoint written by ``save`` (same settings and data);
        ``meta``: its metadata, as ``read_checkpoint`` returns it."""
        self.trainer.load_state_dict(_under(ckpt, "last/"))
        self.rng.bit_generator.state = meta["rng"]
        self.epoch, self.history, self.seconds = meta["epoch"], meta["history"], meta["seconds"]
        self.best_epoch, self.best_val = meta["best_epoch"], meta["best_val"]
        xp = self.model.xp
        self.best_params = {k: to_device(v, xp) for k, v in _under(ckpt, "best/").items()}


def _under(ckpt, prefix):
    """The arrays of a checkpoint whose names start with ``prefix``, without it."""
    return {k[len(prefix):]: ckpt[k] for k in ckpt.files if k.startswith(prefix)}


def read_checkpoint(path):
    """Open a checkpoint.npz, or say clearly why it cannot be used."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such checkpoint file")
    try:
        ckpt = numpy.load(path, allow_pickle=False)
        meta = json.loads(str(ckpt["meta"]))
    except Exception as exc:  # truncated, not an npz, or not one of ours
        raise InputError(f"{path}: not a readable acmr_np checkpoint ({type(exc).__name__}: {exc})") from None
    return ckpt, meta


def model_from_checkpoint(ckpt, meta, xp):
    """Rebuild the best model saved in a checkpoint."""
    d = meta["data"]
    model = ACMR(d["d_img"], d["d_txt"], d["n_classes"], ACMRConfig(**meta["model"]),
                 rng=numpy.random.default_rng(0), xp=xp)
    arrays = {f"param/{k}": v for k, v in _under(ckpt, "best/").items()}  # the best epoch's parameters
    arrays.update({k: v for k, v in _under(ckpt, "last/").items() if k.startswith("input/")})
    load_model_arrays(model, arrays)
    return model


def evaluate_split(model, split):
    """Test-protocol numbers (mAP@all, mAP@50, both directions) of a model on one split."""
    s_v, s_t = model.embed(split.img, split.txt)
    return evaluate_retrieval(s_v, s_t, split.labels, k=50)


def format_table(metrics, n_test, title="test"):
    return (f"{title} ({n_test} pairs)   img->txt  txt->img   average\n"
            f"  mAP@all            {metrics['map_img2txt']:8.4f}  {metrics['map_txt2img']:8.4f}  {metrics['map_avg']:8.4f}\n"
            f"  mAP@50             {metrics['map50_img2txt']:8.4f}  {metrics['map50_txt2img']:8.4f}  {metrics['map50_avg']:8.4f}")


def format_epoch(row, epochs):
    return (f"epoch {row['epoch']:3d}/{epochs}  L_imi {row['L_imi']:.4f}  L_imd {row['L_imd']:.4f}  "
            f"L_reg {row['L_reg']:.4f}  L_adv {row['L_adv']:.4f}  lambda {row['lam']:.4f}  "
            f"adv_acc {row['adv_acc']:.3f}  val_mAP {row['val_map']:.4f}  {row['seconds']:.2f}s")


# ---- the command line -----------------------------------------------------------------

def _widths(text):
    try:
        widths = tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer widths like 256,128, got {text!r}")
    if any(w <= 0 for w in widths):
        raise argparse.ArgumentTypeError(f"layer widths must be positive, got {text!r}")
    return widths


def build_parser():
    d = ACMRConfig()
    p = ArgumentParser(prog="python -m acmr_np.train", description=__doc__.split("\n")[0],
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=None, help="a .npz, a Wikipedia .mat, or a DSCMR folder (default: the "
                   "synthetic set; with --eval-only, the checkpoint's data)")
    p.add_argument("--backend", default="numpy", choices=BACKENDS)
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (both players)")
    p.add_argument("--seed", type=int, default=None,
                   help="seeds everything: initial weights, batches, triplets, the validation split, the "
                        "synthetic data (default 0; with --eval-only, the checkpoint's)")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="part of train held out for validation when the data has no validation split "
                        "(default 0.1; with --eval-only, the checkpoint's)")
    p.add_argument("--out", default=None, help="output folder (must not exist yet); default: a new one in runs/")
    g = p.add_argument_group("model")
    g.add_argument("--img-hidden", type=_widths, default=d.img_hidden, help="image projector hidden widths")
    g.add_argument("--txt-hidden", type=_widths, default=d.txt_hidden, help="text projector hidden widths")
    g.add_argument("--dim", type=int, default=d.dim, help="size m of the common space")
    g.add_argument("--alpha", type=float, default=d.alpha, help="weight of L_imi")
    g.add_argument("--beta", type=float, default=d.beta, help="weight of L_imd")
    g.add_argument("--l2", type=float, default=d.l2, help="L_reg coefficient")
    g.add_argument("--triplet", default=d.triplet, choices=TRIPLET_FORMS)
    g.add_argument("--sampling", default=d.sampling, choices=STRATEGIES)
    g.add_argument("--margin", type=float, default=d.margin)
    g.add_argument("--push-weight", type=float, default=d.push_weight, help="lambda_t of Eqs. 4-5")
    g.add_argument("--lam", type=float, default=d.lam, help="GRL lambda (its final value under the dann ramp)")
    g.add_argument("--lam-schedule", default=d.lam_schedule, choices=LAMBDA_SCHEDULES)
    g.add_argument("--k", type=int, default=d.k, help="projector steps per modality-classifier step")
    g.add_argument("--lr-adv", type=float, default=d.lr_adv, help="modality classifier's lr (0: same as --lr)")
    r = p.add_argument_group("resume and evaluation")
    r.add_argument("--resume", metavar="DIR", default=None,
                   help="continue the run in DIR from its last finished epoch (its settings are reused)")
    r.add_argument("--eval-only", action="store_true", help="evaluate --checkpoint on --data's test split")
    r.add_argument("--checkpoint", default=None, help="checkpoint.npz for --eval-only")
    p.add_argument("--plots", action="store_true",
                   help="also write figures (training curves, precision-recall against CCA, the common space "
                        "before/after) and retrieval examples into the output folder; needs matplotlib")
    return p


DEFAULT_EPOCHS, DEFAULT_BATCH = 30, 64


def _check_settings(args):
    for name in ("epochs", "batch_size"):
        if getattr(args, name) <= 0:
            raise InputError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise InputError(f"--lr must be a positive number, got {args.lr}")
    if args.val_fraction is not None and not 0 < args.val_fraction < 1:
        raise InputError(f"--val-fraction must be between 0 and 1, got {args.val_fraction}")


def model_config(args):
    return ACMRConfig(img_hidden=args.img_hidden, txt_hidden=args.txt_hidden, dim=args.dim, alpha=args.alpha,
                      beta=args.beta, l2=args.l2, triplet=args.triplet, sampling=args.sampling,
                      margin=args.margin, push_weight=args.push_weight, lam=args.lam,
                      lam_schedule=args.lam_schedule, k=args.k, lr=args.lr, lr_adv=args.lr_adv)


def _fresh_out(out):
    """Create the output folder (default: a new one under runs/); never overwrite one."""
    if out is None:
        base = os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
        out, i = base, 1
        while os.path.exists(out):
            i += 1
            out = f"{base}-{i}"
    return fresh_folder(out, hint=f", or continue it with --resume {out}")


def _write_figures(out, model, data, history, cfg, seed, xp):
    paths = make_run_figures(out, model, data, history, before=initial_model(data, cfg, seed, xp))
    print("figures: " + ", ".join(sorted(paths.values())))


def _evaluate_only(args, xp):
    if not args.checkpoint:
        raise InputError("--eval-only needs --checkpoint FILE")
    if args.plots and not args.out:
        raise InputError("--eval-only --plots needs --out DIR for the figures")
    if args.plots:
        require_matplotlib()
    ckpt, meta = read_checkpoint(args.checkpoint)
    # By default, the data the checkpoint was trained on, split with the same seed
    # (the synthetic set and the carved validation split both depend on it).
    source = meta.get("source", {})
    path = args.data if args.data is not None else source.get("data")
    seed = args.seed if args.seed is not None else meta["seed"]
    val_fraction = args.val_fraction if args.val_fraction is not None else source.get("val_fraction", 0.1)
    data = data_module.load_dataset(path, seed=seed, val_fraction=val_fraction)
    want = meta["data"]
    for key, have in (("d_img", data.d_img), ("d_txt", data.d_txt), ("n_classes", data.n_classes)):
        if want[key] != have:
            raise InputError(f"checkpoint {args.checkpoint} was trained with {key}={want[key]}, "
                             f"but {data.name} has {key}={have}")
    if data.fingerprint() != want:
        trained_on = want.get("name") or source.get("data") or f"synthetic(seed={meta['seed']})"
        print(f"note: {data.name} is not the data set the checkpoint was trained on ({trained_on})")
    out = _fresh_out(args.out) if args.out else None
    model = model_from_checkpoint(ckpt, meta, xp)
    metrics = evaluate_split(model, data.test)
    if out:
        write_json(os.path.join(out, METRICS), {**metrics, "checkpoint": os.path.abspath(args.checkpoint),
                                                "data": data.name})
        print(f"metrics written to {out}/{METRICS}")
        if args.plots:
            _write_figures(out, model, data, None, ACMRConfig(**meta["model"]), meta["seed"], xp)
    print(format_table(metrics, len(data.test), title=f"test on {data.name}"))


def _resume_settings(args):
    """The saved settings of the run in --resume DIR; no other setting may be given."""
    defaults = build_parser().parse_args([])
    given = sorted(f"--{k.replace('_', '-')}" for k, v in vars(args).items()
                   if k not in ("resume", "backend") and v != getattr(defaults, k))
    if given:
        raise InputError(f"--resume takes its settings from {os.path.join(args.resume, CONFIG)}; "
                         f"remove {', '.join(given)} (only --backend may change)")
    cfg_path = os.path.join(args.resume, CONFIG)
    if not os.path.isfile(cfg_path):
        raise InputError(f"--resume {args.resume}: no {CONFIG} there; is it a run folder?")
    try:
        with open(cfg_path) as f:
            settings = json.load(f)
        ACMRConfig(**settings["model"])
        [settings[k] for k in ("data", "epochs", "batch_size", "seed", "val_fraction")]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{cfg_path}: not a readable run configuration ({type(exc).__name__}: {exc})") from None
    return settings


def _train(args, xp):
    if args.resume:
        settings = _resume_settings(args)
        ckpt, meta = read_checkpoint(os.path.join(args.resume, CHECKPOINT))
        out = args.resume
    else:
        _check_settings(args)
        if args.plots:
            require_matplotlib()
        settings = {"data": os.path.abspath(args.data) if args.data else None, "backend": args.backend,
                    "epochs": args.epochs, "batch_size": args.batch_size,
                    "seed": 0 if args.seed is None else args.seed,
                    "val_fraction": 0.1 if args.val_fraction is None else args.val_fraction,
                    "plots": args.plots, "model": model_config(args).to_dict()}
    cfg = ACMRConfig(**settings["model"])
    data = data_module.load_dataset(settings["data"], seed=settings["seed"], val_fraction=settings["val_fraction"])
    run = Run(data, cfg, epochs=settings["epochs"], batch_size=settings["batch_size"], seed=settings["seed"], xp=xp,
              source={"data": settings["data"], "val_fraction": settings["val_fraction"]})
    if args.resume:
        differs = sorted(k for k in set(meta["data"]) | set(data.fingerprint())
                         if meta["data"].get(k) != data.fingerprint().get(k))
        if differs:
            raise InputError(f"--resume {args.resume}: the data ({data.name}) is not the "
                             f"data this run was trained on (differs in: {', '.join(differs)})")
        run.restore(ckpt, meta)
        print(f"resuming {out} after epoch {run.epoch}")
    else:
        out = _fresh_out(args.out)
        write_json(os.path.join(out, CONFIG), {**settings, "out": os.path.abspath(out)})
    print(f"data: {data.name}: train {len(data.train)}, val {len(data.val)}, test {len(data.test)} pairs, "
          f"{data.n_classes} classes, image {data.d_img}-d, text {data.d_txt}-d; backend {args.backend}")

    saved = run.epoch  # the epoch whose checkpoint is complete on disk
    try:
        while run.epoch < run.epochs:
            try:
                row = run.train_epoch()
            except FloatingPointError as exc:
                kept = (f"the checkpoint of epoch {saved} is kept in {out}/{CHECKPOINT}" if saved
                        else "no epoch had finished, so there is no checkpoint")
                raise InputError(f"training diverged: {exc}; {kept}; try a smaller --lr") from None
            run.save(out)
            saved = run.epoch
            print(format_epoch(row, run.epochs), flush=True)
    except KeyboardInterrupt:
        if saved:
            print(f"\ninterrupted; the checkpoint of epoch {saved} is in {out}/{CHECKPOINT}. "
                  f"Resume with: python -m acmr_np.train --resume {out}", file=sys.stderr)
        else:
            print(f"\ninterrupted before the first epoch finished; nothing to resume in {out}", file=sys.stderr)
        return 130

    run.use_best()
    metrics = evaluate_split(run.model, data.test)
    metrics.update(best_epoch=run.best_epoch, best_val_map=run.best_val, seconds=run.seconds,
                   epochs=run.epochs, seed=run.seed, data=data.name)
    write_json(os.path.join(out, METRICS), metrics)
    if settings.get("plots"):
        _write_figures(out, run.model, data, run.history, cfg, run.seed, xp)
    print(f"best epoch {run.best_epoch} (validation mAP {run.best_val:.4f}); {run.seconds:.1f}s of training")
    print(f"outputs: {out}/{METRICS}, {out}/{CONFIG}, {out}/{CHECKPOINT}")
    print(format_table(metrics, len(data.test)))
    return 0


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def _main(argv):
    args = build_parser().parse_args(argv)
    xp = get_backend(args.backend)
    if args.eval_only:
        _evaluate_only(args, xp)
        return 0
    # SIGTERM (a scheduler, `kill`) is treated like Ctrl-C while training, and the
    # caller's handler is put back afterwards (main() may be called from Python).
    if threading.current_thread() is not threading.main_thread():
        return _train(args, xp)  # signal handlers can only be set from the main thread
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        return _train(args, xp)
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv=None):
    return run_main("python -m acmr_np.train", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
