# %% [markdown]
# # Tutorial 7: evaluating cross-modal retrieval with mAP, and the figures
#
# A trained ACMR is used for retrieval: a query from one modality (an image) ranks every
# item of the other modality (all test texts) by cosine similarity in the common space.
# A result is *relevant* when it has the query's class. We compute average precision by
# hand on a list of six, check `acmr_np.metrics` against it, look at mAP@k and the tie
# rule, measure chance, score a quickly trained model in both directions, and draw the
# figures (if matplotlib is installed).

# %%
import importlib.util
import os
import tempfile

import numpy as np

from acmr_np.data import make_synthetic
from acmr_np.metrics import (average_precisions, evaluate_retrieval, mean_average_precision,
                             precision_at_k, precision_recall_curve)
from acmr_np.config import ACMRConfig, TrainConfig
from acmr_np.training import Training

EPOCHS = 4   # quick; the figures look better after 30 (python -m acmr_np.train)

# %% [markdown]
# ## 1. Average precision, by hand
#
# For one query, rank the gallery best first and mark each rank relevant (1) or not (0).
#
#     precision@r = (relevant items among the top r) / r
#     AP = (1 / R) * sum over the ranks r that hold a relevant item of precision@r
#
# with R the number of relevant items in the gallery (mAP@all). AP is 1 when all
# relevant items come first, and roughly R / n (the share of relevant items) for a
# random ranking. mAP is the mean of AP over all queries.
#
# Ranked relevance 1 0 1 0 0 1 (R = 3):
#
#     AP = (1/3) * (1/1 + 2/3 + 3/6) = 0.7222...

# %%
rel = np.array([1, 0, 1, 0, 0, 1])
hits = np.cumsum(rel)
ranks = np.arange(1, len(rel) + 1)
ap_by_hand = (hits / ranks)[rel == 1].sum() / rel.sum()
print(f"precision@r at the relevant ranks: {np.round((hits / ranks)[rel == 1], 4)}, AP = {ap_by_hand:.4f}")
assert np.isclose(ap_by_hand, (1 + 2 / 3 + 3 / 6) / 3)

# The same list from embeddings: gallery item r at angle 0.1 r from the query, so
# cosine similarity falls with r and the ranking is the gallery order.
angles = 0.1 * np.arange(6)
gallery = np.c_[np.cos(angles), np.sin(angles)]
query, q_label = np.array([[1.0, 0.0]]), np.array([7])
g_labels = np.where(rel == 1, 7, 3)                   # class 7 = relevant
ap_metrics = average_precisions(query, q_label, gallery, g_labels)[0]
print(f"acmr_np.metrics.average_precisions gives {ap_metrics:.4f}: "
      f"{'OK' if np.isclose(ap_metrics, ap_by_hand) else 'FAIL'}")
assert np.isclose(ap_metrics, ap_by_hand)

# %% [markdown]
# ## 2. mAP@k, and ties
#
# mAP@k (the authors' demo used k = 50) cuts the list at k and divides by the relevant
# items found *in the top k*, not by R. For our list and k = 3: ranks 1 and 3 hold
# relevant items, so AP@3 = (1/2)(1/1 + 2/3) = 0.8333: higher than AP@all, because the
# relevant item at rank 6 no longer counts against it. Numbers at different k, or from
# papers with an unstated k, are not comparable.
#
# Ties: items with equal similarity are ranked by gallery index, ascending (a stable
# sort), so results never depend on the sorting algorithm. Below, a gallery of two
# identical vectors with the relevant one second: AP = 1/2, every time.

# %%
ap3 = average_precisions(query, q_label, gallery, g_labels, k=3)[0]
print(f"AP@3 = {ap3:.4f} (by hand {(1 + 2 / 3) / 2:.4f})")
assert np.isclose(ap3, (1 + 2 / 3) / 2)
tie = average_precisions(query, q_label, np.array([[1.0, 1.0], [1.0, 1.0]]), np.array([3, 7]))[0]
print(f"two tied items, the relevant one at gallery index 1: AP = {tie:.2f}")
assert tie == 0.5

# %% [markdown]
# ## 3. Chance
#
# Random embeddings with 10 balanced classes: each query has R / n = 1/10 relevant items,
# and mAP@all comes out near 0.1 (slightly above: AP rewards the early ranks, where luck
# varies). A trained model must beat it clearly; on the Wikipedia features, a CCA
# baseline reaches 0.22 (see the README).

# %%
rng = np.random.default_rng(0)
labels = np.arange(700) % 10
chance = mean_average_precision(rng.normal(size=(700, 16)), labels, rng.normal(size=(700, 16)), labels)
print(f"random embeddings, 10 classes: mAP@all = {chance:.3f}")
assert 0.08 < chance < 0.14

# %% [markdown]
# ## 4. A trained model, scored both ways
#
# `evaluate_retrieval(img_emb, txt_emb, labels)` reports img->txt (each test image ranks
# all test texts), txt->img, and their average, for mAP@all and mAP@50. The two
# directions differ: the texts and the images are not equally well separated by class.
# `precision_at_k` and `precision_recall_curve` give the curves behind these numbers.

# %%
data = make_synthetic(seed=0)
cfg = ACMRConfig()
settings = TrainConfig(epochs=EPOCHS, batch_size=64, seed=0)
untrained = Training(data, cfg, settings).model   # same seed: same start
run = Training(data, cfg, settings)
run.run()
run.use_best()
test = data.test
s_v, s_t = run.model.embed(test.img, test.txt)
m = evaluate_retrieval(s_v, s_t, test.labels, k=50)
print(f"\nACMR after {EPOCHS} epochs, synthetic test split ({len(test)} pairs):")
print(f"{'':10s}{'img->txt':>9s}{'txt->img':>9s}{'average':>9s}")
print(f"{'mAP@all':10s}{m['map_img2txt']:9.3f}{m['map_txt2img']:9.3f}{m['map_avg']:9.3f}")
print(f"{'mAP@50':10s}{m['map50_img2txt']:9.3f}{m['map50_txt2img']:9.3f}{m['map50_avg']:9.3f}")
ks = [1, 10, 50, 100]
p_at_k = precision_at_k(s_v, test.labels, s_t, test.labels, ks)
print("img->txt precision@k:", ", ".join(f"@{k} {p:.3f}" for k, p in zip(ks, p_at_k)))
precision, recall = precision_recall_curve(s_v, test.labels, s_t, test.labels)
for target in (0.1, 0.5, 0.9):
    r = int(np.searchsorted(recall, target))
    print(f"img->txt: precision {precision[r]:.3f} at recall {recall[r]:.2f} (top {r + 1})")
assert m["map_avg"] > chance + 0.15

# %% [markdown]
# ## 5. Figures
#
# `acmr_np.plots` (matplotlib, optional: `pip install 'acmr_np[plot]'`) draws the
# training curves of a run, precision-recall and precision@k curves for several
# methods, and the common space in 2-D (PCA) before and after training. Each `plot_*`
# function returns a matplotlib Figure: in Jupyter, a cell that ends with one shows it;
# `plots.save_figure(fig, path)` writes it as a PNG. `acmr_np.report` lists the classes
# of the top results of a few queries, as text. The files go into a temporary folder.

# %%
have_plots = importlib.util.find_spec("acmr_np.plots") is not None
have_mpl = importlib.util.find_spec("matplotlib") is not None
if not (have_plots and have_mpl):
    print("\nnote: figures skipped: " + ("matplotlib is not installed (pip install 'acmr_np[plot]')"
                                          if have_plots else "acmr_np.plots is not in this version of the package"))
else:
    from acmr_np import plots, report

    out = tempfile.mkdtemp(prefix="acmr_tutorial07_")
    before = untrained.embed(test.img, test.txt)
    figures = {
        "training_curves": plots.plot_training_curves(run.history),
        "retrieval_curves": plots.plot_retrieval_curves(
            {"ACMR": plots.retrieval_curves(s_v, s_t, test.labels),
             "untrained": plots.retrieval_curves(*before, test.labels)},
            title=f"Synthetic test split, ACMR after {EPOCHS} epochs"),
        "common_space": plots.plot_common_space(before, (s_v, s_t), test.labels),
    }
    # in a notebook, `figures["common_space"]` alone in a cell displays it
    paths = [plots.save_figure(fig, os.path.join(out, f"{name}.png")) for name, fig in figures.items()]
    paths.append(report.write_examples(s_v, s_t, test.labels, report.pick_queries(test.labels),
                                       os.path.join(out, "examples.txt"), k=10))
    for p in paths:
        assert os.path.getsize(p) > 0
    print(f"\nfigures written to {out}:\n  " + "\n  ".join(os.path.basename(p) for p in paths))
    with open(paths[-1], encoding="utf-8") as f:
        print("\n" + "".join(f.readlines()[:6]))

print(f"Result: AP checked by hand; ACMR after {EPOCHS} epochs reaches test mAP@all {m['map_avg']:.3f} "
      f"(img->txt {m['map_img2txt']:.3f}, txt->img {m['map_txt2img']:.3f}) against chance {chance:.3f}.")
