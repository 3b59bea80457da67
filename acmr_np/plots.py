"""Figures that show what a run learnt.

Every ``plot_*`` function takes its data and returns a ``matplotlib.figure.Figure``;
none writes a file. ``save_figure(fig, path)`` writes one as PNG, and
``make_run_figures`` draws and writes everything of one run into its folder (what
``python -m acmr_np.train --plots`` does):

- ``plot_training_curves``: every loss term, lambda, the modality classifier's accuracy
  and the validation mAP, per epoch;
- ``plot_retrieval_curves`` (data from ``retrieval_curves``): precision-recall and
  precision@k in both directions, several methods on the same axes;
- ``plot_common_space`` (by ``pca_2d``): the joint embeddings of both modalities in 2-D,
  before and after training, colour = class (multi-label data: the first label),
  marker = modality.

The retrieval examples and the other text are in acmr_np.report.

Each figure has several panels, so the one convention for drawing into a figure of your
own is ``fig=``: an empty Figure or SubFigure (e.g. one of ``fig.subfigures(1, 2)``, to
put two of these side by side) that the function fills with its panels and title; the
return value is then its root Figure. Give it constrained layout
(``layout="constrained"``), which the legends placed beside the axes rely on.

matplotlib is optional (``pip install 'acmr_np[plot]'``) and imported only inside the
functions that draw. We never import pyplot: a new figure is attached to the Agg canvas
(the non-interactive PNG renderer), so no global backend is switched under a user's feet
and no figure lingers in pyplot's registry. Jupyter would show such a bare Figure only
as its repr (matplotlib-inline registers its PNG formatter for Figure only once pyplot
is loaded with the inline backend), so new figures are an ``InlineFigure``, a Figure
with ``_repr_png_``: a cell that returns one shows it. Files are written atomically
(acmr_np.files).
"""
import io
import math
import os

import numpy

from .backend import to_host
from .errors import InputError
from .files import atomic_write, write_text
from .metrics import precision_recall_curve
from .report import DIRECTIONS, first_labels, host_pair, pick_queries, retrieval_examples

MISSING_MATPLOTLIB = "figures need matplotlib: pip install 'acmr_np[plot]'"
DPI = 120  # of the PNG files and of the inline display
FILES = {"training_curves": "training_curves.png", "retrieval_curves": "retrieval_curves.png",
         "common_space": "common_space.png", "examples": "examples.txt"}


# ---- matplotlib plumbing ------------------------------------------------------------

_inline_figure = None  # the InlineFigure class, made on first use: matplotlib loads lazily


def _figure_class():
    """The Figure subclass that IPython displays as a PNG; InputError without matplotlib."""
    global _inline_figure
    try:  # every time, not only the first: the import is what tells that matplotlib is there
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError(MISSING_MATPLOTLIB) from None
    if _inline_figure is None:
        class InlineFigure(Figure):
            """A matplotlib Figure that IPython and Jupyter display as a PNG image."""

            def _repr_png_(self):
                # IPython's "image/png" formatter calls this when no printer is registered
                # for Figure (pyplot's inline backend registers one, which then wins).
                return figure_png(self)

        # a module-level name (see __getattr__), so that pickle finds the class
        InlineFigure.__module__, InlineFigure.__qualname__ = __name__, "InlineFigure"
        _inline_figure = InlineFigure
    return _inline_figure


def __getattr__(name):
    # acmr_np.plots.InlineFigure without importing matplotlib at import time
    if name == "InlineFigure":
        return _figure_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _new_figure(figsize):
    """An InlineFigure on the Agg canvas (no pyplot, no display), constrained layout."""
    cls = _figure_class()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    fig = cls(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _checked(fig, what):
    """``fig`` if it is a matplotlib Figure or SubFigure, else InputError naming ``what``."""
    _figure_class()
    from matplotlib.figure import FigureBase
    if not isinstance(fig, FigureBase):
        raise InputError(f"{what} must be a matplotlib Figure or SubFigure, got {type(fig).__name__}")
    return fig


def _target(fig, figsize):
    """The (sub)figure a plot_* function draws into: ``fig``, or a new InlineFigure."""
    return _new_figure(figsize) if fig is None else _checked(fig, "fig")


def require_matplotlib():
    """Raise InputError now, before any work, when figures cannot be drawn."""
    _figure_class()


def figure_png(fig):
    """The PNG bytes of ``fig`` (a SubFigure: its whole figure) at ``DPI``."""
    buf = io.BytesIO()
    _checked(fig, "figure_png's fig").figure.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def save_figure(fig, path):
    """Write ``fig`` (a Figure, or a SubFigure: its whole figure) to ``path`` as PNG at
    ``DPI``, atomically: a crash leaves the old file or the new one, never half of one.
    An existing file is replaced. Returns the path as a str.

    The format is always PNG, so a name with another suffix (.pdf, .svg, ...) is an
    InputError rather than a PNG under a misleading name; ``fig.savefig`` writes the
    other formats.
    """
    path = os.fspath(path)
    root = _checked(fig, "save_figure's fig").figure  # a SubFigure's .figure: its root Figure
    suffix = os.path.splitext(path)[1]
    if suffix and suffix.lower() != ".png":
        raise InputError(f"{path}: save_figure writes PNG files; name it .png "
                         f"(fig.savefig writes {suffix} and other formats)")
    atomic_write(path, lambda f: root.savefig(f, format="png", dpi=DPI))
    return path


def _class_colours(n_classes):
    """One colour per class from a qualitative colormap (tab10, tab20, else a
    sampled continuous map when there are more than 20 classes)."""
    from matplotlib import colormaps
    if n_classes <= 10:
        return [colormaps["tab10"](i) for i in range(n_classes)]
    if n_classes <= 20:
        return [colormaps["tab20"](i) for i in range(n_classes)]
    return [colormaps["turbo"](x) for x in numpy.linspace(0.05, 0.95, n_classes)]


# ---- training curves ----------------------------------------------------------------

# (history key, panel title, y label); L_adv and adv_acc get their chance levels drawn.
_CURVES = (
    ("L_imi", "inter-modal invariance $L_{imi}$ (triplets)", "loss"),
    ("L_imd", "label classification $L_{imd}$", "loss"),
    ("L_reg", "weight decay $L_{reg}$", "loss"),
    ("L_adv", "modality classifier $L_{adv}$", "loss"),
    ("adv_acc", "modality classifier accuracy", "accuracy"),
    ("lam", "gradient reversal scale $\\lambda$", "$\\lambda$ (end of epoch)"),
    ("val_map", "validation mAP@all (mean of both directions)", "mAP@all"),
)


def plot_training_curves(history, *, fig=None):
    """One panel per logged quantity against the epoch; returns the Figure.

    history: a list of per-epoch dicts as in ``training.History`` (fit's second result; keys epoch, L_imi, L_imd,
    L_reg, L_adv, adv_acc, lam, val_map). Loss terms are the epoch's means over
    mini-batches (L_imd and L_adv sum the two modalities, so a modality classifier at
    chance has L_adv = 2 ln 2 and accuracy 0.5, both drawn as dotted lines). The best
    validation epoch, the one a run keeps, is marked. Panels: a 3 x 3 mosaic, the
    validation mAP across the bottom row. fig: see the module docstring.
    """
    if not history:
        raise InputError("no training history to plot (no epoch has finished)")
    missing = {"epoch", *(k for k, _, _ in _CURVES)} - set(history[0])
    if missing:
        raise InputError(f"training history lacks {', '.join(sorted(missing))}")
    epochs = numpy.array([row["epoch"] for row in history])
    values = {k: numpy.array([row[k] for row in history], dtype=float) for k, _, _ in _CURVES}
    marker = "o" if len(epochs) <= 40 else None

    target = _target(fig, (13, 9.5))  # first: a clear InputError if matplotlib is missing
    from matplotlib.ticker import MaxNLocator
    axes = target.subplot_mosaic([["L_imi", "L_imd", "L_reg"], ["L_adv", "adv_acc", "lam"],
                                  ["val_map", "val_map", "val_map"]])
    for key, title, ylabel in _CURVES:
        ax = axes[key]
        ax.plot(epochs, values[key], marker=marker, markersize=3, color="C0")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes["L_adv"].axhline(2 * math.log(2), ls=":", color="grey", label="chance: 2 ln 2")
    axes["L_adv"].legend(loc="best", fontsize="small")
    axes["adv_acc"].axhline(0.5, ls=":", color="grey", label="chance: 0.5")
    axes["adv_acc"].set_ylim(0, 1.02)
    axes["adv_acc"].legend(loc="lower right", fontsize="small")
    best = int(numpy.argmax(values["val_map"]))
    axes["val_map"].plot(epochs[best], values["val_map"][best], "*", ms=14, color="C3",
                         label=f"best: epoch {epochs[best]}, mAP {values['val_map'][best]:.4f}")
    axes["val_map"].legend(loc="lower right")
    pad = max(0.5, 0.02 * (epochs[-1] - epochs[0]))
    for ax in axes.values():  # whole epochs on the x axis, also for a run of one epoch
        ax.set_xlim(epochs[0] - pad, epochs[-1] + pad)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    target.suptitle("Training curves (means over each epoch's mini-batches)", fontsize="x-large")
    return target.figure


# ---- precision-recall and precision@k -------------------------------------------------

def retrieval_curves(img_emb, txt_emb, labels, chunk_size=256):
    """Precision-recall and precision@k data of one method on one paired split.

    img_emb (n, m), txt_emb (n, m), labels (n,), any backend. Returns
    {"img2txt": d, "txt2img": d}, each d = {"precision": (n,), "recall": (n,),
    "chance": float} with host arrays from ``metrics.precision_recall_curve``:
    precision[r - 1] and recall[r - 1] are the means over queries of precision@r and
    recall@r, so ``precision`` is also the precision@k curve (k = r). "chance" is the
    precision of a random ranking, the mean over queries of R / n (R: relevant items).
    For 0/1 label rows (n, c), relevant = shares a label (as in metrics.py).
    """
    labels_h = numpy.asarray(to_host(labels))
    if labels_h.ndim == 2:  # R_i = the items sharing a label with i: rows of (Y Y^T > 0), by blocks
        y = labels_h.astype(numpy.float32)
        shared = sum(int(((y[i:i + 1024] @ y.T) > 0).sum()) for i in range(0, len(y), 1024))
        chance = shared / len(y) ** 2
    else:
        chance = float(numpy.mean((labels_h[:, None] == labels_h[None, :]).mean(axis=1)))
    out = {}
    for key, (q, g) in (("img2txt", (img_emb, txt_emb)), ("txt2img", (txt_emb, img_emb))):
        precision, recall = precision_recall_curve(q, labels, g, labels, chunk_size=chunk_size)
        out[key] = {"precision": precision, "recall": recall, "chance": chance}
    return out


def plot_retrieval_curves(curves, *, title=None, fig=None):
    """Precision-recall (left) and precision@k (right), image->text (top) and
    text->image (bottom), every method on the same axes; returns the Figure.

    curves: {method name: the dict of ``retrieval_curves``}, drawn in the given order;
    all methods must be scored on the same split. The chance level (a random ranking)
    is drawn dotted when the curves carry it. Panels: 2 x 2. fig: see the module
    docstring.
    """
    if not curves:
        raise InputError("no methods to plot")
    target = _target(fig, (12, 9))  # first: a clear InputError if matplotlib is missing
    from matplotlib.ticker import FormatStrFormatter
    axes = target.subplots(2, 2)
    for row, (key, direction) in enumerate(DIRECTIONS):
        ax_pr, ax_pk = axes[row]
        for i, (name, c) in enumerate(curves.items()):
            d = c[key]
            precision, recall = numpy.asarray(d["precision"]), numpy.asarray(d["recall"])
            ks = numpy.arange(1, len(precision) + 1)
            ax_pr.plot(recall, precision, color=f"C{i}", label=name)
            ax_pk.plot(ks, precision, color=f"C{i}", label=name)
        chance = next((c[key]["chance"] for c in curves.values() if "chance" in c[key]), None)
        if chance is not None:
            for ax in (ax_pr, ax_pk):
                ax.axhline(chance, ls=":", color="grey", label=f"chance ({chance:.3f})")
        top = min(1.0, 1.1 * max(max(float(numpy.max(c[key]["precision"])) for c in curves.values()),
                                 chance or 0.0)) + 0.02
        ax_pr.set(title=f"{direction}: precision-recall", xlabel="recall", ylabel="precision",
                  xlim=(0, 1), ylim=(0, top))
        # log k: the top of the list (k = 1..50), where a user looks, gets half the width
        ax_pk.set_xscale("log")
        ax_pk.xaxis.set_major_formatter(FormatStrFormatter("%g"))  # 1, 10, 100, not 10^0, ...
        ax_pk.set(title=f"{direction}: precision@k", xlabel="k (number of results returned, log scale)",
                  ylabel="precision@k", xlim=(1, len(ks)), ylim=(0, top))
        for ax in (ax_pr, ax_pk):
            ax.grid(alpha=0.3)
            ax.legend(loc="best")  # the corner that hides the least of the curves
    target.suptitle(title or "Retrieval curves", fontsize="x-large")
    return target.figure


# ---- the common space ----------------------------------------------------------------

def pca_2d(img_emb, txt_emb):
    """PCA of the stacked embeddings of both modalities, by SVD.

    img_emb (n, m), txt_emb (n', m), any backend -> host float64 arrays (img_xy (n, 2),
    txt_xy (n', 2), explained (2,)):
    Z = [img; txt] centred by its mean, Z = U S V^T, coordinates Z V[:, :2], and the
    share of variance S_j^2 / sum S^2 of each axis. One PCA for both modalities, so
    their positions are comparable. A 1-d space gets a zero second axis.
    """
    # on the host (the SVD of a small matrix; matplotlib draws host arrays anyway)
    img, txt = (numpy.asarray(to_host(a), dtype=numpy.float64) for a in (img_emb, txt_emb))
    z = numpy.vstack([img, txt])                     # a new array: the inputs stay as they were
    z -= z.mean(axis=0)
    _, s, vt = numpy.linalg.svd(z, full_matrices=False)
    xy = numpy.zeros((len(z), 2))
    k = min(2, vt.shape[0])
    xy[:, :k] = z @ vt[:k].T
    total = float((s ** 2).sum())
    explained = numpy.zeros(2)
    explained[:k] = s[:k] ** 2 / total if total > 0 else 0.0
    return xy[:len(img)], xy[len(img):], explained


def plot_common_space(before, after, labels, *, titles=("before training", "after training"),
                      class_names=None, max_points=800, seed=0, fig=None):
    """The common space in 2-D, before and after training; returns the Figure.

    before, after: pairs (img_emb (n, m), txt_emb (n, m)) of the same n pairs (any
    backend; ``before`` may be None for a single panel), labels (n,). Each panel is its
    own PCA (``pca_2d``) of that space, so axes are not comparable between panels.
    Colour = class, marker = modality (o image, ^ text). Multi-label data (labels as 0/1
    rows (n, c)) is coloured by each pair's first label (``report.first_labels``), which
    the legend and title say: a pair with labels {2, 7} is drawn in the colour of 2. A space where training worked
    shows images and texts of one class mixed in one cluster (modality invariance) and
    classes apart (discrimination). At most ``max_points`` pairs are drawn (a seeded
    random subset, the same for every panel); the PCA uses all of them. Panels: 1 x 2
    (1 x 1 without ``before``), one legend beside the last. fig: see the module docstring.
    """
    labels = numpy.asarray(to_host(labels))
    colour_by = "first label" if labels.ndim == 2 else "class"
    labels = first_labels(labels)
    panels = [(t, host_pair(p, t)) for t, p in zip(titles, (before, after)) if p is not None]
    if not panels:
        raise InputError("nothing to plot: both before and after are None")
    for t, (img, txt) in panels:
        if not len(img) == len(txt) == len(labels):
            raise InputError(f"{t}: {len(img)} image and {len(txt)} text embeddings for {len(labels)} labels")
    target = _target(fig, (6.2 * len(panels) + 1.8, 6.2))  # first: InputError if matplotlib is missing
    classes = numpy.unique(labels)
    colours = dict(zip(classes.tolist(), _class_colours(len(classes))))
    shown = numpy.arange(len(labels))
    if len(labels) > max_points:
        shown = numpy.sort(numpy.random.default_rng(seed).choice(len(labels), max_points, replace=False))
    colour_of = numpy.array([colours[c] for c in labels[shown].tolist()])

    axes = numpy.atleast_1d(target.subplots(1, len(panels)))
    for ax, (title, (img, txt)) in zip(axes, panels):
        img_xy, txt_xy, explained = pca_2d(img, txt)
        ax.scatter(*img_xy[shown].T, s=16, marker="o", c=colour_of, alpha=0.65, linewidths=0)
        ax.scatter(*txt_xy[shown].T, s=26, marker="^", facecolors="none", edgecolors=colour_of,
                   linewidths=0.9, alpha=0.85)
        ax.set_title(title)
        ax.set_xlabel(f"PC 1 ({100 * explained[0]:.0f}% of variance)")
        ax.set_ylabel(f"PC 2 ({100 * explained[1]:.0f}% of variance)")
        ax.grid(alpha=0.3)

    from matplotlib.lines import Line2D
    word = "label" if colour_by == "first label" else "class"
    name = (lambda c: f"{c}: {class_names[c]}") if class_names is not None else (lambda c: f"{word} {c}")
    class_handles = [Line2D([], [], ls="", marker="s", ms=8, color=colours[c], label=name(c))
                     for c in classes.tolist()]
    modality_handles = [Line2D([], [], ls="", marker="o", ms=6, color="dimgrey", label="image"),
                        Line2D([], [], ls="", marker="^", ms=7, mfc="none", color="dimgrey", label="text")]
    gap = Line2D([], [], ls="", label=" ")  # an empty row between the two groups
    # One legend (two would need add_artist, which constrained layout does not make room for).
    axes[-1].legend(handles=modality_handles + [gap] + class_handles, title=f"marker: modality\ncolour: {colour_by}",
                    loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
                    ncol=1 if len(classes) <= 24 else 2)
    subset = f", {len(shown)} of {len(labels)} pairs shown" if len(shown) < len(labels) else ""
    target.suptitle(f"Common space, PCA to 2-D (colour: {colour_by}, marker: modality{subset})", fontsize="x-large")
    return target.figure


# ---- everything for one run --------------------------------------------------------------

def make_run_figures(run_dir, model, data, history=None, *, before=None, baseline=None,
                     split="test", queries=None, class_names=None, name="ACMR"):
    """Write every figure and the retrieval examples of one run into ``run_dir``.

    model: the trained model, anything with ``embed(img, txt) -> (s_v, s_t)`` (an ACMR
    on either backend, or a CCA); data: the PairedDataset it was trained on; history:
    ``training.History`` (fit's second result; None: no training curves, e.g. for a loaded checkpoint); before:
    the untrained model, for the common-space panel "before training" (None: the
    "after" panel only; acmr_np.train passes the one its run started from); baseline:
    a fitted CCA (default: fitted here on data.train, components chosen on data.val, as
    acmr_np.baselines does); split: which split to show ("test"); queries: indices for the examples (default
    ``report.pick_queries``). Returns {figure name: path} for the files written, each
    atomically: training_curves.png, retrieval_curves.png, common_space.png (by
    ``save_figure``) and examples.txt (``report.retrieval_examples`` of the model, then
    of the baseline).
    """
    if split not in ("train", "val", "test"):
        raise InputError(f"split must be train, val or test, got {split!r}")
    if not os.path.isdir(run_dir):
        raise InputError(f"{run_dir}: no such folder")
    require_matplotlib()
    if baseline is None:
        from .cca import fit_select
        baseline = fit_select(data.train, data.val)
    s = getattr(data, split)
    emb = host_pair(model.embed(s.img, s.txt), "model embeddings")
    base_emb = host_pair(baseline.embed(s.img, s.txt), "baseline embeddings")
    base_name = f"CCA ({baseline.n_components} components)" if hasattr(baseline, "n_components") else "baseline"
    out = {key: os.path.join(run_dir, filename) for key, filename in FILES.items()}
    paths = {}
    if history:
        paths["training_curves"] = save_figure(plot_training_curves(history), out["training_curves"])
    paths["retrieval_curves"] = save_figure(plot_retrieval_curves(
        {name: retrieval_curves(*emb, s.labels), base_name: retrieval_curves(*base_emb, s.labels)},
        title=f"Retrieval on the {split} split ({len(s)} pairs, cosine similarity)"), out["retrieval_curves"])
    before_emb = host_pair(before.embed(s.img, s.txt), "untrained embeddings") if before is not None else None
    paths["common_space"] = save_figure(plot_common_space(
        before_emb, emb, s.labels, class_names=class_names,
        titles=(f"{name} before training (initial weights)", f"{name} after training")), out["common_space"])
    queries = pick_queries(s.labels) if queries is None else queries
    text = "\n".join([
        retrieval_examples(*emb, s.labels, queries, class_names=class_names,
                           title=f"== {name}, {split} split =="),
        retrieval_examples(*base_emb, s.labels, queries, class_names=class_names,
                           title=f"== {base_name}, {split} split (baseline) ==")])
    write_text(out["examples"], text)
    paths["examples"] = out["examples"]
    return paths
