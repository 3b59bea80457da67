"""Every figure is drawn from its data (checked on the Figure's axes, titles and lines),
shows inline in IPython as a PNG, can be drawn into a SubFigure, and is written as a real
PNG, atomically, by save_figure; make_run_figures writes a run's files; pca_2d takes any
backend; a missing matplotlib gives the install hint."""
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from acmr_np import plots
from acmr_np.synthetic import make_synthetic
from acmr_np.errors import InputError
from acmr_np.metrics import precision_at_k
from acmr_np.config import ACMRConfig, TrainConfig
from acmr_np.model import ACMR
from acmr_np.training import Training

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _assert_png(path):
    with open(path, "rb") as f:
        head = f.read(8)
    assert head == PNG_MAGIC, path
    assert os.path.getsize(path) > 5000, path  # a rendered figure, not just a header
    leftovers = [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".tmp-")]
    assert not leftovers  # atomic writes leave no temporary file behind


def _png_size(png):
    """(width, height) in pixels from a PNG's IHDR chunk."""
    assert png.startswith(PNG_MAGIC) and png[12:16] == b"IHDR"
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _by_title(fig):
    return {ax.get_title(): ax for ax in fig.axes}


CFG = dict(img_hidden=(16,), txt_hidden=(8,), dim=8)
HISTORY = [  # three epochs with made-up but distinct numbers; the best val_map is epoch 2
    {"epoch": 1, "L_imi": 1.5, "L_imd": 4.0, "L_reg": 0.30, "L_adv": 1.40, "adv_acc": 0.55, "lam": 0.00,
     "val_map": 0.20, "seconds": 1.0},
    {"epoch": 2, "L_imi": 1.2, "L_imd": 3.1, "L_reg": 0.28, "L_adv": 1.38, "adv_acc": 0.51, "lam": 0.03,
     "val_map": 0.31, "seconds": 1.0},
    {"epoch": 3, "L_imi": 1.0, "L_imd": 2.9, "L_reg": 0.27, "L_adv": 1.39, "adv_acc": 0.49, "lam": 0.05,
     "val_map": 0.29, "seconds": 1.0},
]


@pytest.fixture(scope="module")
def trained():
    """A small run: 4 classes, 160 training pairs, 3 epochs (well under a second)."""
    pytest.importorskip("matplotlib")
    data = make_synthetic(0, n_train=160, n_test=80, n_classes=4, d_img=12, d_txt=6)
    run = Training(data, ACMRConfig(**CFG), TrainConfig(epochs=3, batch_size=32, seed=5))
    run.run()
    run.use_best()
    return run


def test_training_curves_figure():
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    fig = plots.plot_training_curves(HISTORY)
    assert isinstance(fig, Figure) and len(fig.axes) == 7
    panels = _by_title(fig)
    titles = {"L_imi": "inter-modal invariance $L_{imi}$ (triplets)", "L_imd": "label classification $L_{imd}$",
              "L_reg": "weight decay $L_{reg}$", "L_adv": "modality classifier $L_{adv}$",
              "adv_acc": "modality classifier accuracy", "lam": "gradient reversal scale $\\lambda$",
              "val_map": "validation mAP@all (mean of both directions)"}
    assert set(panels) == set(titles.values())
    for key, title in titles.items():
        line = panels[title].get_lines()[0]  # the curve itself, drawn first
        np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3])
        np.testing.assert_array_equal(line.get_ydata(), [row[key] for row in HISTORY])
        assert panels[title].get_xlabel() == "epoch"
    # chance levels, dotted: L_adv at 2 ln 2, accuracy at 0.5
    chance = panels[titles["L_adv"]].get_lines()[1]
    assert chance.get_linestyle() == ":" and list(chance.get_ydata()) == [2 * math.log(2)] * 2
    assert list(panels[titles["adv_acc"]].get_lines()[1].get_ydata()) == [0.5, 0.5]
    # the best validation epoch (2) is starred and named in the legend
    star = panels[titles["val_map"]].get_lines()[1]
    assert star.get_marker() == "*" and list(star.get_xdata()) == [2] and list(star.get_ydata()) == [0.31]
    assert [t.get_text() for t in panels[titles["val_map"]].get_legend().get_texts()] == [
        "best: epoch 2, mAP 0.3100"]
    assert fig.get_suptitle() == "Training curves (means over each epoch's mini-batches)"
    with pytest.raises(InputError, match="no training history"):
        plots.plot_training_curves([])
    with pytest.raises(InputError, match="lacks val_map"):
        plots.plot_training_curves([{k: v for k, v in HISTORY[0].items() if k != "val_map"}])


def test_training_curves_of_a_real_run(trained):
    fig = plots.plot_training_curves(trained.history)
    val = _by_title(fig)["validation mAP@all (mean of both directions)"]
    np.testing.assert_array_equal(val.get_lines()[0].get_ydata(), [r["val_map"] for r in trained.history])


def test_figures_show_inline_as_png():
    pytest.importorskip("matplotlib")
    fig = plots.plot_training_curves(HISTORY)
    png = fig._repr_png_()
    assert len(png) > 5000 and _png_size(png) == (13 * 120, 9.5 * 120)  # 13 x 9.5 inches at DPI 120
    # what IPython (Jupyter's kernel) does with a cell's value: an image/png, not only the repr
    formatters = pytest.importorskip("IPython.core.formatters")
    data, _ = formatters.DisplayFormatter().format(fig)
    assert "image/png" in data


def test_drawing_never_imports_pyplot(tmp_path):
    pytest.importorskip("matplotlib")
    code = ("import sys, numpy as np; from acmr_np import plots; "
            "f = plots.plot_common_space(None, (np.eye(3), np.eye(3)), np.arange(3)); "
            "f._repr_png_(); plots.save_figure(f, sys.argv[1]); "
            "print('matplotlib.pyplot' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("MPLBACKEND", None)
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "f.png")],
                          capture_output=True, text=True, env=env)
    assert proc.stdout.strip() == "False", proc.stderr


def test_drawing_into_subfigures(trained):
    from matplotlib.figure import Figure
    test = trained.data.test
    after = trained.model.embed(test.img, test.txt)
    outer = Figure(figsize=(20, 8), layout="constrained")
    left, right = outer.subfigures(1, 2)
    assert plots.plot_retrieval_curves({"ACMR": plots.retrieval_curves(*after, test.labels)}, fig=left) is outer
    assert plots.plot_common_space(None, after, test.labels, fig=right) is outer
    assert len(left.axes) == 4 and len(right.axes) == 1 and len(outer.axes) == 5
    assert left.get_suptitle() == "Retrieval curves"
    assert _png_size(plots.figure_png(outer)) == (20 * 120, 8 * 120)  # a plain Figure renders too
    with pytest.raises(InputError, match="fig must be a matplotlib Figure"):
        plots.plot_training_curves(HISTORY, fig=left.axes[0])


def test_retrieval_curves_data_and_figure(trained):
    test = trained.data.test
    s_v, s_t = trained.model.embed(test.img, test.txt)
    curves = plots.retrieval_curves(s_v, s_t, test.labels)
    n = len(test)
    for key in ("img2txt", "txt2img"):
        assert curves[key]["precision"].shape == curves[key]["recall"].shape == (n,)
        assert curves[key]["recall"][-1] == pytest.approx(1.0)
    # the precision curve is precision@k, and ends at the chance level (the whole gallery)
    ks = [1, 5, 20, n]
    np.testing.assert_allclose(curves["img2txt"]["precision"][np.array(ks) - 1],
                               precision_at_k(s_v, test.labels, s_t, test.labels, ks), atol=1e-12)
    assert curves["img2txt"]["precision"][-1] == pytest.approx(curves["img2txt"]["chance"])
    other = plots.retrieval_curves(test.img[:, :6], test.txt, test.labels)  # any second method
    fig = plots.plot_retrieval_curves({"ACMR": curves, "other": other}, title="my title")
    panels = _by_title(fig)
    assert set(panels) == {"image \u2192 text: precision-recall", "image \u2192 text: precision@k",
                           "text \u2192 image: precision-recall", "text \u2192 image: precision@k"}
    assert fig.get_suptitle() == "my title"
    for direction, key in (("image \u2192 text", "img2txt"), ("text \u2192 image", "txt2img")):
        pr, pk = panels[f"{direction}: precision-recall"], panels[f"{direction}: precision@k"]
        for ax in (pr, pk):  # one line per method in the given order, then chance
            assert [t.get_text() for t in ax.get_legend().get_texts()] == [
                "ACMR", "other", f"chance ({curves[key]['chance']:.3f})"]
            assert list(ax.get_lines()[2].get_ydata()) == [curves[key]["chance"]] * 2
        for line, c in zip(pr.get_lines(), (curves, other)):
            np.testing.assert_array_equal(line.get_xdata(), c[key]["recall"])
            np.testing.assert_array_equal(line.get_ydata(), c[key]["precision"])
        for line, c in zip(pk.get_lines(), (curves, other)):
            np.testing.assert_array_equal(line.get_xdata(), np.arange(1, n + 1))
            np.testing.assert_array_equal(line.get_ydata(), c[key]["precision"])
        assert pk.get_xscale() == "log"
    with pytest.raises(InputError, match="no methods"):
        plots.plot_retrieval_curves({})


def _independent_pca(img, txt):
    """The first two principal axes from the covariance's eigenvectors (not an SVD)."""
    z = np.vstack([img, txt]).astype(np.float64)
    z = z - z.mean(axis=0)
    w, v = np.linalg.eigh(z.T @ z)
    xy = z @ v[:, ::-1][:, :2]
    return xy[:len(img)], xy[len(img):], w[::-1][:2] / w.sum()


def test_common_space_figure(trained):
    test = trained.data.test
    before = ACMR.for_data(trained.data, ACMRConfig(**CFG), rng=np.random.default_rng(5)).embed(test.img, test.txt)
    after = trained.model.embed(test.img, test.txt)
    fig = plots.plot_common_space(before, after, test.labels, titles=("B", "A"))
    assert [ax.get_title() for ax in fig.axes] == ["B", "A"]
    for ax, (img, txt) in zip(fig.axes, (before, after)):
        img_pts, txt_pts = (c.get_offsets() for c in ax.collections)    # o images, ^ texts
        want_img, want_txt, explained = _independent_pca(img, txt)
        # each axis matches up to its sign, which PCA does not fix
        for got, want in ((img_pts, want_img), (txt_pts, want_txt)):
            for j in range(2):
                np.testing.assert_allclose(np.abs(got[:, j]), np.abs(want[:, j]), rtol=1e-6, atol=1e-9)
        assert ax.get_xlabel() == f"PC 1 ({100 * explained[0]:.0f}% of variance)"
        # colour = class: as many face colours as classes, one per class
        assert len(np.unique(ax.collections[0].get_facecolors(), axis=0)) == 4
    legend = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert legend == ["image", "text", " ", "class 0", "class 1", "class 2", "class 3"]
    assert "shown" not in fig.get_suptitle()
    # a subset of the points, the after panel alone
    one = plots.plot_common_space(None, after, test.labels, max_points=30)
    assert [ax.get_title() for ax in one.axes] == ["after training"]
    assert len(one.axes[0].collections[0].get_offsets()) == 30
    assert "30 of 80 pairs shown" in one.get_suptitle()
    with pytest.raises(InputError, match="both before and after are None"):
        plots.plot_common_space(None, None, test.labels)


def test_pca_2d_finds_the_main_axis():
    rng = np.random.default_rng(0)
    img = np.outer(rng.normal(size=50), [3.0, 4.0, 0.0])   # all variance along (3, 4, 0)
    img_xy, txt_xy, explained = plots.pca_2d(img, img[:20])
    assert img_xy.shape == (50, 2) and txt_xy.shape == (20, 2)
    assert explained[0] == pytest.approx(1.0) and explained[1] == pytest.approx(0.0, abs=1e-12)
    # the first coordinate is the signed length along (3, 4, 0) / 5, about the mean
    z = np.vstack([img, img[:20]])
    along = (z - z.mean(axis=0)) @ np.array([0.6, 0.8, 0.0])
    np.testing.assert_allclose(np.abs(np.concatenate([img_xy, txt_xy])[:, 0]), np.abs(along), atol=1e-12)


class FakeDeviceArray:
    """Looks like a CuPy array to acmr_np.backend.to_host: its type's module is cupy's, and
    .get() copies it to the host. Anything else (numpy.vstack, arithmetic) fails on it."""

    def __init__(self, a):
        self._a = np.asarray(a)

    def get(self):
        return self._a.copy()


FakeDeviceArray.__module__ = "cupy._core.core"


def test_pca_2d_and_common_space_take_device_arrays():
    rng = np.random.default_rng(1)
    img, txt = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    on_host = plots.pca_2d(img, txt)
    on_device = plots.pca_2d(FakeDeviceArray(img), FakeDeviceArray(txt))
    for a, b in zip(on_host, on_device):
        assert type(b) is np.ndarray
        np.testing.assert_array_equal(a, b)
    pytest.importorskip("matplotlib")
    labels = FakeDeviceArray(np.arange(30) % 3)
    fig = plots.plot_common_space(None, (FakeDeviceArray(img), FakeDeviceArray(txt)), labels)
    np.testing.assert_array_equal(fig.axes[0].collections[0].get_offsets(), on_host[0])


def test_save_figure_writes_png_atomically(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    fig = plots.plot_common_space(None, (np.eye(3), np.eye(3)), np.arange(3))  # 8 x 6.2 inches
    path = plots.save_figure(fig, tmp_path / "space.png")           # a pathlib.Path ...
    assert path == str(tmp_path / "space.png")
    _assert_png(path)
    assert _png_size(open(path, "rb").read()) == (8 * 120, 6.2 * 120)
    assert plots.save_figure(fig, str(tmp_path / "UPPER.PNG")).endswith("UPPER.PNG")  # ... a str, any case
    assert plots.save_figure(fig, tmp_path / "no_suffix") == str(tmp_path / "no_suffix")
    assert (tmp_path / "no_suffix").read_bytes().startswith(PNG_MAGIC)
    # an existing file is replaced; a failure while rendering leaves it whole
    small = plots.plot_common_space(None, (np.eye(3), np.eye(3)), np.arange(3), fig=Figure(figsize=(4, 3)))
    plots.save_figure(small, path)
    saved = open(path, "rb").read()
    assert _png_size(saved) == (4 * 120, 3 * 120)

    def broken(f, **kwargs):
        f.write(b"half a file")
        raise RuntimeError("renderer died")
    fig.savefig = broken
    with pytest.raises(RuntimeError, match="renderer died"):
        plots.save_figure(fig, path)
    assert open(path, "rb").read() == saved
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]
    # refused: another format's suffix, something that is not a figure; nothing written
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(InputError, match="writes PNG"):
        plots.save_figure(small, tmp_path / "curves.pdf")
    with pytest.raises(InputError, match="must be a matplotlib Figure"):
        plots.save_figure(small.axes[0], tmp_path / "axes.png")
    assert sorted(os.listdir(tmp_path)) == before


def test_save_figure_of_a_subfigure_writes_the_whole_figure(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    outer = Figure(figsize=(8, 4), layout="constrained")
    left, _ = outer.subfigures(1, 2)
    plots.plot_common_space(None, (np.eye(3), np.eye(3)), np.arange(3), fig=left)
    plots.save_figure(left, tmp_path / "sub.png")
    assert _png_size((tmp_path / "sub.png").read_bytes()) == (8 * 120, 4 * 120)


def test_make_run_figures_writes_everything(trained, tmp_path):
    before = ACMR.for_data(trained.data, ACMRConfig(**CFG), rng=np.random.default_rng(5))
    paths = plots.make_run_figures(str(tmp_path), trained.model, trained.data, trained.history, before=before)
    assert sorted(paths) == ["common_space", "examples", "retrieval_curves", "training_curves"]
    for key, path in paths.items():
        assert os.path.dirname(path) == str(tmp_path)
        if path.endswith(".png"):
            _assert_png(path)
    text = open(paths["examples"], encoding="utf-8").read()
    assert "== ACMR, test split ==" in text and "CCA (" in text
    # a loaded checkpoint: no history, no untrained model
    only = tmp_path / "eval"
    only.mkdir()
    assert sorted(plots.make_run_figures(str(only), trained.model, trained.data)) == [
        "common_space", "examples", "retrieval_curves"]
    with pytest.raises(InputError, match="no such folder"):
        plots.make_run_figures(str(tmp_path / "missing"), trained.model, trained.data)


def test_missing_matplotlib_says_how_to_install(monkeypatch, tmp_path):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: "import" raises ImportError
    with pytest.raises(InputError, match=r"pip install 'acmr_np\[plot\]'"):
        plots.save_figure(plots.plot_training_curves(HISTORY), tmp_path / "x.png")
    with pytest.raises(InputError, match="matplotlib"):
        plots.plot_common_space(None, (np.eye(3), np.eye(3)), np.arange(3))
    with pytest.raises(InputError, match="matplotlib"):
        plots.require_matplotlib()
    assert not os.listdir(tmp_path)
