"""Training ACMR on a data set: mini-batches, epochs, the best epoch on validation.

    model, history = fit(data, ACMRConfig(), TrainConfig(epochs=30))   # one call
    metrics = evaluate(model, data.test)                                 # when you ask

``fit`` writes no files and never looks at the test split. For a loop of your own,
``batches`` yields the mini-batches of one epoch and trainer.Trainer takes one step on
each (the README shows it). ``Training`` is what ``fit`` and the command line drive: the
state a run carries from epoch to epoch, which checkpoint.py saves and restores.
"""
import math
import time
from collections import namedtuple

import numpy

from .backend import get_array_module, get_backend, to_device, to_host
from .config import ACMRConfig, TrainConfig
from .errors import InputError
from .fast import FastTrainer
from .metrics import evaluate_retrieval, paired_map, precision_at_k
from .ranking import recall_at_k
from .model import ACMR
from .trainer import Trainer

TERMS = ("L_imi", "L_imd", "L_reg", "L_adv", "adv_acc")
GROWTH_LIMIT = 1e3   # an epoch whose loss is this many times the run's first step's has diverged
NOISE_BLOCK_BYTES = 32 << 20   # triplet noise is drawn and moved to the device this much at a time

Batch = namedtuple("Batch", "img txt labels noise")
Batch.__doc__ = """One mini-batch: img (b, d_img), txt (b, d_txt) raw features, labels (b,) or (b, c),
noise (2, b, b) uniform noise for the triplets of both directions; all on one backend."""


def batches(split, batch_size, rng):
    """The mini-batches of one epoch, in a fresh random order: a generator of ``Batch``.

    split: anything with ``img``, ``txt`` and ``labels`` arrays of n pairs (a dataset's
    ``train`` split, or the same arrays already on the GPU: the batches are on their
    backend); batch_size: pairs per batch (the last batch of an epoch may be smaller);
    rng: a numpy.random.Generator. Every random number is drawn from ``rng`` on the host
    (the order of the pairs, then the triplet noise), so NumPy and CuPy runs see the same
    batches; the noise is drawn a block of steps at a time (NOISE_BLOCK_BYTES), never a
    whole epoch at once, and the draws do not depend on the block size.
    """
    n = len(split.labels)
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or not 1 <= batch_size <= n:
        raise ValueError(f"batches: batch_size must be an integer from 1 to the {n} pairs, got {batch_size!r}")
    xp = get_array_module(split.img)
    steps = math.ceil(n / batch_size)
    per_block = max(1, NOISE_BLOCK_BYTES // (2 * batch_size * batch_size * 4))
    perm = to_device(rng.permutation(n), xp)
    for first in range(0, steps, per_block):
        block = min(per_block, steps - first)
        noise = to_device(rng.random((block, 2, batch_size, batch_size), dtype=numpy.float32), xp)
        for j in range(block):
            start = (first + j) * batch_size
            idx = perm[start:start + batch_size]
            b = len(idx)
            yield Batch(split.img[idx], split.txt[idx], split.labels[idx], noise[j, :, :b, :b])


class History(list):
    """The per-epoch rows of a run (dicts: epoch, the loss terms, lam, val_map, seconds),
    with the epoch a run keeps: the first with the highest validation mAP."""

    @property
    def best_epoch(self):
        return max(self, key=lambda row: row["val_map"])["epoch"] if self else 0

    @property
    def best_val_map(self):
        return max(row["val_map"] for row in self) if self else None


class Training:
    """One training run and everything it carries from epoch to epoch.

    data: a PairedDataset (train and val splits are used; test is never touched here);
    config: an ACMRConfig; train: a TrainConfig (epochs, batch size, seed, backend);
    fast: train with acmr_np.fast.FastTrainer (trainer.Trainer's numbers up to the rounding
    of the folded Adam, faster).

    The divergence guard: ``train_epoch`` raises FloatingPointError, before the epoch
    enters the history or the best state, when a loss term of any step is not finite, when
    any parameter or optimiser state is not finite after the epoch, when the validation
    embeddings are not, or when the epoch's loss (``objective``: alpha L_imi + beta L_imd
    + L_reg + L_adv) is more than GROWTH_LIMIT times that of the run's first step
    (``start_loss``). With the defaults on the synthetic data, --lr 1 stays below 86 times
    the first step's loss over 30 epochs and --lr 10 reaches 1,730 times in epoch 1. The
    model is then left as the failed epoch made it: what a run keeps is its last epoch
    that passed (a checkpoint, or best_state).
    """

    def __init__(self, data, config=None, train=None, *, fast=True):
        self.config = ACMRConfig() if config is None else config
        self.train = TrainConfig() if train is None else train
        if not isinstance(self.config, ACMRConfig) or not isinstance(self.train, TrainConfig):
            raise TypeError("Training: config must be an ACMRConfig and train a TrainConfig")
        if self.train.batch_size > len(data.train):
            raise ValueError(f"batch_size {self.train.batch_size} is larger than the training set "
                             f"({len(data.train)} pairs)")
        self.data = data
        xp = get_backend(self.train.backend)
        self.rng = numpy.random.default_rng(self.train.seed)
        self.model = ACMR.for_data(data, self.config, rng=self.rng, xp=xp)
        self.trainer = (FastTrainer if fast else Trainer)(self.model)
        # the training pairs, moved to the device once for the whole run
        self.train_arrays = Batch(to_device(data.train.img, xp), to_device(data.train.txt, xp),
                                  to_device(data.train.labels, xp), None)
        # and the validation pairs, so that each epoch's validation copies nothing to the device
        self.val_arrays = Batch(to_device(data.val.img, xp), to_device(data.val.txt, xp),
                                to_device(data.val.labels, xp), None)
        self.epoch, self.history, self.seconds = 0, History(), 0.0
        self.best_state = None  # the best epoch's model.state_dict() (host arrays)
        self.start_loss = None  # the objective at the run's first step: the guard's reference
        self.changes = []       # what --resume changed in the settings, and after which epoch

    @property
    def epochs(self):
        return self.train.epochs

    @property
    def steps_per_epoch(self):
        return math.ceil(len(self.data.train) / self.train.batch_size)

    @property
    def best_epoch(self):
        return self.history.best_epoch

    def train_epoch(self):
        """One pass over the training pairs; then the validation mAP. Returns the epoch's
        row of the history (the loss terms are means over the epoch's pairs). NumPy's
        overflow warnings are silenced here: the divergence guard reports what they would."""
        with numpy.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self._train_epoch()

    def _train_epoch(self):
        xp, trainer = self.model.xp, self.trainer
        t0 = time.perf_counter()
        n, steps = len(self.data.train), self.steps_per_epoch
        total_steps = self.train.epochs * steps
        # The loss terms stay on the device until the end of the epoch: one copy to the host.
        step_log = xp.zeros((steps, len(TERMS)), dtype=numpy.float64)
        sizes = numpy.zeros(steps)
        for s, b in enumerate(batches(self.train_arrays, self.train.batch_size, self.rng)):
            terms, lam = trainer.train_step(b.img, b.txt, b.labels, b.noise,
                                            progress=trainer.step_count / total_steps)
            step_log[s] = xp.stack([terms[k] for k in TERMS])
            sizes[s] = len(b.labels)
        step_log = to_host(step_log)
        self.epoch += 1
        bad = ~numpy.isfinite(step_log)
        if bad.any():
            s, t = numpy.argwhere(bad)[0]
            raise FloatingPointError(f"{TERMS[t]} became {step_log[s, t]} at epoch {self.epoch}, "
                                     f"step {s + 1} of {steps}")
        if self.start_loss is None:
            self.start_loss = self.objective(dict(zip(TERMS, step_log[0])))
        row = {"epoch": self.epoch, **{k: float(sizes @ step_log[:, i] / n) for i, k in enumerate(TERMS)},
               "lam": lam, "lr": self.config.lr}
        self.check_finite()
        loss = self.objective(row)
        if loss > GROWTH_LIMIT * max(self.start_loss, 1e-6):
            raise FloatingPointError(f"the loss grew from {self.start_loss:.4g} at the first step to "
                                     f"{loss:.4g} in epoch {self.epoch} (more than {GROWTH_LIMIT:g}-fold)")
        t_val = time.perf_counter()
        row["val_map"] = self.validation_map()
        row["val_seconds"] = time.perf_counter() - t_val
        row["seconds"] = time.perf_counter() - t0
        self.seconds += row["seconds"]
        self.history.append(row)
        if self.history.best_epoch == self.epoch:
            self.best_state = self.model.state_dict()
        return row

    def objective(self, terms):
        """alpha L_imi + beta L_imd + L_reg + L_adv of a history row (or one step's terms):
        what the guard compares with the run's first step."""
        c = self.config
        return float(c.alpha * terms["L_imi"] + c.beta * terms["L_imd"] + terms["L_reg"] + terms["L_adv"])

    def check_finite(self):
        """Raise FloatingPointError naming the first parameter or optimiser state that holds
        NaN or inf (after ``epoch``)."""
        xp, trainer = self.model.xp, self.trainer
        arrays = dict(self.model.named("params"))
        for opt_name in ("opt_emb", "opt_adv"):
            opt = getattr(trainer, opt_name)
            arrays.update({f"{opt_name}/{slot}/{k}": a for slot, d in opt.state.items() for k, a in d.items()})
        # one flag per array, all copied to the host at once: a single wait for the device
        finite = to_host(xp.stack([xp.isfinite(a).all() for a in arrays.values()]))
        if not finite.all():
            name = list(arrays)[int(numpy.argmin(finite))]
            raise FloatingPointError(f"{name} holds NaN or infinite values after epoch {self.epoch}")

    def validation_map(self):
        """Mean of the two directions' mAP@all on the validation split."""
        val = self.val_arrays
        try:
            return paired_map(*self.model.embed(val.img, val.txt), val.labels)
        except InputError:  # our own arrays: only the embeddings' finiteness check can fail
            raise FloatingPointError(f"the validation embeddings hold NaN or infinite values after epoch "
                                     f"{self.epoch}") from None

    def stop_reason(self):
        """Why training stops now, or None while it goes on: the maximum number of epochs,
        or (early stopping) ``patience`` epochs in a row without a better validation mAP.
        Derived from the history alone, so a resumed run stops where the whole run would."""
        if self.epoch >= self.train.epochs:
            return f"the maximum of {self.train.epochs} epochs"
        waited = self.epoch - self.history.best_epoch
        if self.train.patience and self.epoch and waited >= self.train.patience:
            return (f"no better validation mAP for {waited} epochs (patience {self.train.patience}; "
                    f"best: epoch {self.history.best_epoch})")
        return None

    def run(self, callback=None):
        """Train until ``stop_reason``; ``callback(row)`` after each epoch."""
        while self.stop_reason() is None:
            row = self.train_epoch()
            if callback is not None:
                callback(row)

    def use_best(self):
        """Load the best epoch's parameters into the model (the model a run keeps)."""
        if self.best_state is None:
            raise ValueError("no epoch has finished: there is no best epoch to use")
        self.model.load_state_dict(self.best_state)


def fit(data, config=None, train=None, *, callback=None, fast=True):
    """Train ACMR on a data set and return ``(model, history)``.

    data: a PairedDataset (e.g. PairedDataset.from_arrays, load_dataset, make_synthetic);
    config: an ACMRConfig (default: the defaults); train: a TrainConfig (epochs, batch
    size, seed, backend, patience for early stopping); callback: called with each epoch's
    row (a dict) as it finishes.
    The model returned holds the parameters of the epoch with the best validation
    mAP@all (history.best_epoch). Nothing is written to disk and the test split is not
    used: score it with ``evaluate(model, data.test)`` when you are done choosing.
    """
    training = Training(data, config, train, fast=fast)
    training.run(callback)
    training.use_best()
    return training.model, training.history


def evaluate(model, split, k=50, precision_ks=(1, 5, 10, 50), recall_ks=(1, 5, 10)):
    """Test-protocol numbers of a model on one split of pairs, as a dict of floats:
    mAP@all and mAP@k for both directions and their average (metrics.evaluate_retrieval);
    precision@k for each of ``precision_ks`` ("precision_at_<k>_img2txt", ...); and the
    instance-level Recall@K for each of ``recall_ks`` ("recall_at_<k>_img2txt", ...: the
    share of queries whose own partner is in the top K). Cut-offs the split cannot give
    a meaning are left out: precision@k for k > n pairs, Recall@K for K >= n (every
    partner is then found)."""
    s_v, s_t = model.embed(split.img, split.txt)
    out = evaluate_retrieval(s_v, s_t, split.labels, k=k)
    n = len(split.labels)
    for key, (q, g) in (("img2txt", (s_v, s_t)), ("txt2img", (s_t, s_v))):
        ks = [p for p in precision_ks if p <= n]
        if ks:
            out.update({f"precision_at_{p}_{key}": float(v)
                        for p, v in zip(ks, precision_at_k(q, split.labels, g, split.labels, ks))})
        rs = [r for r in recall_ks if r < n]
        if rs:
            out.update({f"recall_at_{r}_{key}": float(v) for r, v in zip(rs, recall_at_k(q, g, rs))})
    return out
