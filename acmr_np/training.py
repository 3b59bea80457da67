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
from .fast import FastTrainer
from .metrics import evaluate_retrieval, paired_map
from .model import ACMR
from .trainer import Trainer

TERMS = ("L_imi", "L_imd", "L_reg", "L_adv", "adv_acc")
NOISE_BLOCK_BYTES = 32 << 20   # triplet noise is drawn and moved to the device this much at a time

Batch = namedtuple("Batch", "img txt labels noise")
Batch.__doc__ = """One mini-batch: img (b, d_img), txt (b, d_txt) raw features, labels (b,),
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
    fast: train with acmr_np.fast.FastTrainer (the same numbers as trainer.Trainer, faster).
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
        row of the history (the loss terms are means over the epoch's pairs)."""
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
        row = {"epoch": self.epoch, **{k: float(sizes @ step_log[:, i] / n) for i, k in enumerate(TERMS)},
               "lam": lam}
        t_val = time.perf_counter()
        row["val_map"] = self.validation_map()
        row["val_seconds"] = time.perf_counter() - t_val
        row["seconds"] = time.perf_counter() - t0
        self.seconds += row["seconds"]
        self.history.append(row)
        if self.history.best_epoch == self.epoch:
            self.best_state = self.model.state_dict()
        return row

    def validation_map(self):
        """Mean of the two directions' mAP@all on the validation split."""
        val = self.val_arrays
        return paired_map(*self.model.embed(val.img, val.txt), val.labels)

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


def evaluate(model, split, k=50):
    """Test-protocol numbers of a model on one split of pairs: mAP@all and mAP@k, both
    directions and their average (metrics.evaluate_retrieval), as a dict of floats."""
    return evaluate_retrieval(*model.embed(split.img, split.txt), split.labels, k=k)
