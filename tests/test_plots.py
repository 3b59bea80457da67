"""Every figure is a real PNG from a small run (Agg, no display); retrieval examples mark
relevance correctly; a missing matplotlib gives the install hint."""
import os
import sys

import numpy as np
import pytest

from acmr_np import plots
from acmr_np.synthetic import make_synthetic
from acmr_np.errors import InputError
from acmr_np.metrics import precision_at_k
from acmr_np.model import ACMRConfig
from acmr_np.train import Run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    with open(path, "rb") as f:
        head = f.read(8)
    assert head == PNG_MAGIC, path
    assert os.path.getsize(path) > 5000, path  # a rendered figure, not just a header
    leftovers = [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".tmp-")]
    assert not leftovers  # atomic writes leave no temporary file behind


CFG = dict(img_hidden=(16,), txt_hidden=(8,), dim=8)


@pytest.fixture(scope="module")
def trained():
    """A small run: 4 classes, 160 training pairs, 3 epochs (well under a second)."""
    pytest.importorskip("matplotlib")
    data = make_synthetic(0, n_train=160, n_test=80, n_classes=4, d_img=12, d_txt=6)
    run = Run(data, ACMRConfig(**CFG), epochs=3, batch_size=32, seed=5, xp=np)
    while run.epoch < run.epochs:
        run.train_epoch()
    run.use_best()
    return run


def test_initial_model_is_the_runs_starting_point():
    data = make_synthetic(0, n_train=160, n_test=80, n_classes=4, d_img=12, d_txt=6)
    cfg = ACMRConfig(**CFG)
    run = Run(data, cfg, epochs=1, batch_size=32, seed=5, xp=np)
    before = plots.initial_model(data, cfg, 5, np)
    for (k, a), (k2, b) in zip(run.model.named("params").items(), before.named("params").items()):
        assert k == k2
        np.testing.assert_array_equal(a, b)
    for k, a in run.model.input_stats.items():
        np.testing.assert_array_equal(a, before.input_stats[k])


def test_training_curves_png(trained, tmp_path):
    path = plots.plot_training_curves(trained.history, tmp_path / "curves.png")
    assert path == str(tmp_path / "curves.png")
    _assert_png(path)
    with pytest.raises(InputError, match="no training history"):
        plots.plot_training_curves([], tmp_path / "empty.png")


def test_retrieval_curves_png_and_data(trained, tmp_path):
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
    path = plots.plot_retrieval_curves({"ACMR": curves, "other": other}, tmp_path / "pr.png")
    _assert_png(path)


def test_common_space_png(trained, tmp_path):
    test = trained.data.test
    cfg = ACMRConfig(**CFG)
    before = plots.initial_model(trained.data, cfg, 5).embed(test.img, test.txt)
    after = trained.model.embed(test.img, test.txt)
    _assert_png(plots.plot_common_space(before, after, test.labels, tmp_path / "space.png"))
    _assert_png(plots.plot_common_space(None, after, test.labels, tmp_path / "after.png", max_points=30))


def test_pca_2d_finds_the_main_axis():
    rng = np.random.default_rng(0)
    img = np.outer(rng.normal(size=50), [3.0, 4.0, 0.0])   # all variance along (3, 4, 0)
    img_xy, txt_xy, explained = plots.pca_2d(img, img[:20])
    assert img_xy.shape == (50, 2) and txt_xy.shape == (20, 2)
    assert explained[0] == pytest.approx(1.0) and explained[1] == pytest.approx(0.0, abs=1e-12)


def test_make_run_figures_writes_everything(trained, tmp_path):
    cfg = ACMRConfig(**CFG)
    before = plots.initial_model(trained.data, cfg, 5)
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


def test_retrieval_examples_marks_relevance():
    # Three pairs on the axes of the plane; class 0 twice. Image 0 = (1, 0) ranks the
    # texts by cosine: text 0 (1, 0) = 1, text 2 (1, 1)/sqrt2 = 0.71, text 1 (0, 1) = 0.
    img = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    txt = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = np.array([0, 1, 0])
    text = plots.retrieval_examples(img, txt, labels, [0, 1], k=3, class_names=["art", "music"])
    lines = text.splitlines()
    i2t, t2i = lines.index("image \u2192 text"), lines.index("text \u2192 image")
    assert lines[i2t + 1].split() == ["image", "0", "class", "0", "art", "2/3", "relevant:",
                                      "0\u2713", "0\u2713", "1\u2717"]
    # image 1 = (0, 1): text 1 (1), text 2 (0.71), text 0 (0)
    assert lines[i2t + 2].split()[-5:] == ["1/3", "relevant:", "1\u2713", "0\u2717", "0\u2717"]
    assert lines[t2i + 1].split()[-3:] == ["0\u2713", "0\u2713", "1\u2717"]
    assert "classes: 0 art, 1 music" in text
    # k is capped by the gallery; bad query indices are an InputError
    assert "3/3" not in plots.retrieval_examples(img, txt, labels, [0], k=10)
    with pytest.raises(InputError, match="outside"):
        plots.retrieval_examples(img, txt, labels, [3])


def test_write_examples(tmp_path):
    e = np.eye(3)
    path = plots.write_examples(e, e, np.array([0, 1, 2]), [0], tmp_path / "ex.txt", k=2)
    assert "1/2 relevant" in open(path, encoding="utf-8").read()


def test_missing_matplotlib_says_how_to_install(monkeypatch, tmp_path):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: "import" raises ImportError
    history = [{"epoch": 1, "L_imi": 1, "L_imd": 1, "L_reg": 1, "L_adv": 1, "adv_acc": 0.5, "lam": 0.0,
                "val_map": 0.1}]
    with pytest.raises(InputError, match=r"pip install 'acmr_np\[plot\]'"):
        plots.plot_training_curves(history, tmp_path / "x.png")
    with pytest.raises(InputError, match="matplotlib"):
        plots.plot_common_space(None, (np.eye(3), np.eye(3)), np.arange(3), tmp_path / "y.png")
    assert not os.listdir(tmp_path)
