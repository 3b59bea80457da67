"""The training loop (acmr_np.training: Training.train_epoch, fit) by what it does to the
model at each step, watched from inside: the loop's arguments to the model are recorded
and checked against the rules, never against numbers that happen to come out.

tests/test_api.py covers ``batches`` on its own (each pair once, a fresh order, noise that
does not depend on the block size), the explicit loop against fit, and the first maximum
of History; here is what the loop does with them."""
import math

import numpy as np
import pytest

import acmr_np
from acmr_np import training
from acmr_np.config import ACMRConfig, TrainConfig

SMALL = dict(img_hidden=(8,), txt_hidden=(6,), dim=4, disc_hidden=5)
PROJECTORS = ("img_projector", "txt_projector")


def _data(n_classes=2):
    # 40 training pairs, 4 of them held out for validation: 36 to train on, so a batch of
    # 8 leaves a last batch of 4 (the means over pairs must weigh it by its size)
    return acmr_np.make_synthetic(0, n_train=40, n_test=8, n_classes=n_classes, d_img=6, d_txt=5)


class Spy:
    """Wraps a Training's model.loss_and_grads and records every call of one run.

    For each step it also measures the L_imi gradient that reaches the projectors: the
    same step is computed once without triplets (noise=None, L_imi left out) and then as
    the loop asked (the call whose gradients the optimisers use), and the projectors'
    gradients are compared."""

    def __init__(self, run):
        self.run, self.real = run, run.model.loss_and_grads
        self.steps = []
        run.model.loss_and_grads = self

    def __call__(self, img, txt, labels, noise, lam, l_reg=True):
        model = self.run.model
        self.real(img, txt, labels, None, lam, l_reg=l_reg)
        without = {k: g.copy() for k, g in model.named("grads", PROJECTORS).items()}
        terms = self.real(img, txt, labels, noise, lam, l_reg=l_reg)
        imi_grad = max(float(np.abs(g - without[k]).max()) for k, g in model.named("grads", PROJECTORS).items())
        self.steps.append({"img": img.copy(), "labels": labels.copy(), "lam": lam,
                           "noise": None if noise is None else noise.copy(),
                           "terms": {k: float(v) for k, v in terms.items()}, "imi_grad": imi_grad})
        return terms


def _rows_of(data, img):
    """Indices into the training split of the rows of img (the training rows are distinct)."""
    return [int(np.flatnonzero((data.train.img == x).all(axis=1))[0]) for x in img]


@pytest.mark.parametrize("fast", [True, False])
def test_every_step_trains_l_imi_on_the_projectors(fast):
    """alpha > 0 and two classes in a batch: each step of the loop passes triplet noise,
    and the L_imi gradient reaches both projectors (noise=None would leave L_imi out)."""
    data = _data()
    run = training.Training(data, ACMRConfig(**SMALL, alpha=1.0), TrainConfig(epochs=2, batch_size=8), fast=fast)
    spy = Spy(run)
    run.run()
    assert len(spy.steps) == 2 * math.ceil(len(data.train) / 8) == 10
    two_classes = [s for s in spy.steps if len(np.unique(s["labels"])) == 2]
    assert len(two_classes) >= 8
    for s in two_classes:
        b = len(s["labels"])
        assert s["noise"] is not None and s["noise"].shape == (2, b, b)
        assert s["terms"]["L_imi"] > 0 and s["imi_grad"] > 1e-6, s["terms"]
    # the epoch's logged L_imi is what the steps computed, not zero
    assert all(row["L_imi"] > 0 for row in run.history)


def test_consecutive_steps_draw_new_triplets():
    """Every step of a run gets its own uniform noise, so the positions of the positives
    and negatives chosen (triplets.sample) change from step to step, within an epoch and
    across epochs; the same noise at every step would pick the same positions."""
    run = training.Training(_data(3), ACMRConfig(**SMALL), TrainConfig(epochs=2, batch_size=8))
    spy = Spy(run)
    run.run()
    noises = [s["noise"] for s in spy.steps]
    assert len(noises) == 10
    for n in noises:
        assert n.dtype == np.float32 and n.min() >= 0 and n.max() < 1
        assert not np.array_equal(n[0], n[1])  # the two directions have their own draws
    for i in range(len(noises)):
        for j in range(i):
            b = min(len(noises[i][0]), len(noises[j][0]))
            assert not np.array_equal(noises[i][:, :b, :b], noises[j][:, :b, :b]), (j, i)
    # and with them the triplets: the random choices of two consecutive full batches differ
    first, second = spy.steps[0], spy.steps[1]
    picks = [np.argmax(s["noise"][0], axis=1) for s in (first, second)]
    assert not np.array_equal(*picks)


def test_each_epoch_visits_every_pair_once_in_a_new_order():
    data = _data()
    run = training.Training(data, ACMRConfig(**SMALL), TrainConfig(epochs=3, batch_size=8))
    spy = Spy(run)
    run.run()
    steps = math.ceil(len(data.train) / 8)
    orders = [sum((_rows_of(data, s["img"]) for s in spy.steps[e * steps:(e + 1) * steps]), [])
              for e in range(3)]
    for e, order in enumerate(orders):
        assert sorted(order) == list(range(len(data.train))), e  # each pair exactly once
        for s in spy.steps[e * steps:(e + 1) * steps]:  # labels travel with their pairs
            np.testing.assert_array_equal(s["labels"], data.train.labels[_rows_of(data, s["img"])])
    assert orders[0] != list(range(len(data.train)))           # shuffled from the first epoch on
    assert orders[0] != orders[1] and orders[1] != orders[2]   # and again every epoch


@pytest.mark.parametrize("fast", [True, False])
def test_progress_and_lambda_follow_the_whole_run(fast):
    """Step s of a run of T steps is at progress s / T (T over all epochs, not one), and
    lambda is the DANN ramp lam * (2 / (1 + exp(-10 p)) - 1) there; the epoch's row
    logs the last step's lambda."""
    data = _data()
    run = training.Training(data, ACMRConfig(**SMALL, lam=0.3), TrainConfig(epochs=3, batch_size=8), fast=fast)
    seen = []
    real = run.trainer.train_step

    def step(img, txt, labels, noise, progress):
        terms, lam = real(img, txt, labels, noise, progress)
        seen.append((progress, lam))
        return terms, lam

    run.trainer.train_step = step
    run.run()
    T = 3 * 5
    assert [p for p, _ in seen] == pytest.approx([s / T for s in range(T)], rel=1e-15, abs=0)
    for p, lam in seen:
        assert lam == pytest.approx(0.3 * (2 / (1 + math.exp(-10 * p)) - 1), rel=1e-12, abs=1e-15)
    assert [row["lam"] for row in run.history] == [seen[4][1], seen[9][1], seen[14][1]]
    assert run.trainer.step_count == T and run.epoch == 3


def test_logged_terms_are_means_over_the_epochs_pairs():
    data = _data()
    run = training.Training(data, ACMRConfig(**SMALL), TrainConfig(epochs=2, batch_size=8))
    spy = Spy(run)
    reg = []
    real = run.trainer.train_step

    def step(*args, **kwargs):
        terms, lam = real(*args, **kwargs)
        reg.append(float(terms["L_reg"]))  # the fast trainer's L_reg comes from its optimiser
        return terms, lam

    run.trainer.train_step = step
    run.run()
    n = len(data.train)
    for e, row in enumerate(run.history):
        steps = spy.steps[5 * e:5 * (e + 1)]
        sizes = [len(s["labels"]) for s in steps]
        assert sizes == [8, 8, 8, 8, 4]
        for k in ("L_imi", "L_imd", "L_adv", "adv_acc"):
            expected = sum(b * s["terms"][k] for b, s in zip(sizes, steps)) / n
            assert row[k] == pytest.approx(expected, rel=1e-6), k
        assert row["L_reg"] == pytest.approx(sum(b * r for b, r in zip(sizes, reg[5 * e:5 * (e + 1)])) / n, rel=1e-6)
        assert row["epoch"] == e + 1 and row["seconds"] >= row["val_seconds"] >= 0


def test_the_kept_epoch_is_the_argmax_of_validation(monkeypatch):
    """Validation scores scripted so the best epoch is neither the first nor the last
    (and a later epoch ties it): the model kept is the one of the first best epoch."""
    scores = [0.2, 0.6, 0.4, 0.6, 0.1]
    calls = iter(scores)
    monkeypatch.setattr(training.Training, "validation_map", lambda self: next(calls))
    run = training.Training(_data(), ACMRConfig(**SMALL), TrainConfig(epochs=5, batch_size=8))
    with pytest.raises(ValueError, match="no epoch has finished"):
        run.use_best()
    snapshots = []
    run.run(callback=lambda row: snapshots.append(run.model.state_dict()))
    assert [row["val_map"] for row in run.history] == scores
    best = int(np.argmax(scores))  # the first maximum: epoch 2
    assert run.best_epoch == run.history.best_epoch == best + 1 == 2
    assert run.history.best_val_map == 0.6
    assert not np.array_equal(snapshots[best]["img_projector.0.W"], snapshots[-1]["img_projector.0.W"])
    run.use_best()
    for k, v in run.model.state_dict().items():
        np.testing.assert_array_equal(v, snapshots[best][k], err_msg=k)


def test_fit_returns_the_argmax_epochs_model(monkeypatch):
    scores = iter([0.5, 0.9, 0.3])
    monkeypatch.setattr(training.Training, "validation_map", lambda self: next(scores))
    kept = []
    real_run = training.Training.run

    def run(self, callback=None):
        real_run(self, lambda row: kept.append(self.model.state_dict()))

    monkeypatch.setattr(training.Training, "run", run)
    model, history = acmr_np.fit(_data(), ACMRConfig(**SMALL), TrainConfig(epochs=3, batch_size=8))
    assert history.best_epoch == 2 and len(kept) == 3
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, kept[1][k], err_msg=k)


def test_a_non_finite_term_stops_the_epoch_naming_it(monkeypatch):
    run = training.Training(_data(), ACMRConfig(**SMALL), TrainConfig(epochs=2, batch_size=8))
    real = run.model.loss_and_grads
    count = []

    def nan_at_third_step(*args, **kwargs):
        terms = real(*args, **kwargs)
        count.append(1)
        if len(count) == 3:
            terms["L_adv"] = terms["L_adv"] * np.nan
        return terms

    run.model.loss_and_grads = nan_at_third_step
    with pytest.raises(FloatingPointError, match="L_adv became nan at epoch 1, step 3 of 5"):
        run.train_epoch()
    assert run.history == [] and run.best_state is None
