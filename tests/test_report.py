"""The text a run prints and writes: the epoch line, the test table, and retrieval
examples that mark relevance correctly and rank as the metrics do. No matplotlib needed."""
import os

import numpy as np
import pytest

from acmr_np import report
from acmr_np.errors import InputError


def test_format_epoch():
    row = {"epoch": 7, "L_imi": 0.5, "L_imd": 1.25, "L_reg": 0.0312, "L_adv": 1.38629, "lam": 0.05,
           "adv_acc": 0.5, "val_map": 0.123456, "seconds": 1.5}
    assert report.format_epoch(row, 30) == (
        "epoch   7/30  L_imi 0.5000  L_imd 1.2500  L_reg 0.0312  L_adv 1.3863  lambda 0.0500  "
        "adv_acc 0.500  val_mAP 0.1235  1.50s")


def test_format_table():
    m = {"map_img2txt": 0.3, "map_txt2img": 0.2, "map_avg": 0.25,
         "map50_img2txt": 0.4, "map50_txt2img": 0.35, "map50_avg": 0.375}
    assert report.format_table(m, 693, title="test on wiki").splitlines() == [
        "test on wiki (693 pairs)   img->txt  txt->img   average",
        "  mAP@all              0.3000    0.2000    0.2500",
        "  mAP@50               0.4000    0.3500    0.3750"]
    assert report.format_table(m, 5).startswith("test (5 pairs)")


def test_pick_queries_takes_the_first_item_of_spread_classes():
    labels = np.array([2, 2, 0, 1, 1, 0, 3])
    assert report.pick_queries(labels) == [2, 3, 0, 6]          # classes 0, 1, 2, 3
    assert report.pick_queries(labels, n=2) == [2, 6]           # classes 0 and 3, the ends
    assert report.pick_queries(labels, n=10) == [2, 3, 0, 6]    # at most one per class


def test_retrieval_examples_marks_relevance():
    # Three pairs on the axes of the plane; class 0 twice. Image 0 = (1, 0) ranks the
    # texts by cosine: text 0 (1, 0) = 1, text 2 (1, 1)/sqrt2 = 0.71, text 1 (0, 1) = 0.
    img = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    txt = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = np.array([0, 1, 0])
    text = report.retrieval_examples(img, txt, labels, [0, 1], k=3, class_names=["art", "music"])
    lines = text.splitlines()
    i2t, t2i = lines.index("image \u2192 text"), lines.index("text \u2192 image")
    assert lines[i2t + 1].split() == ["image", "0", "class", "0", "art", "2/3", "relevant:",
                                      "0\u2713", "0\u2713", "1\u2717"]
    # image 1 = (0, 1): text 1 (1), text 2 (0.71), text 0 (0)
    assert lines[i2t + 2].split()[-5:] == ["1/3", "relevant:", "1\u2713", "0\u2717", "0\u2717"]
    assert lines[t2i + 1].split()[-3:] == ["0\u2713", "0\u2713", "1\u2717"]
    assert "classes: 0 art, 1 music" in text
    # k is capped by the gallery; bad query indices are an InputError
    assert "3/3" not in report.retrieval_examples(img, txt, labels, [0], k=10)
    with pytest.raises(InputError, match="outside"):
        report.retrieval_examples(img, txt, labels, [3])


def test_retrieval_examples_rank_ties_by_gallery_index():
    # Texts 0 and 1 are the same vector: equal similarity to every query, so text 0
    # (class 1) must come before text 1 (class 0), as in acmr_np.metrics.
    img = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    txt = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    labels = np.array([1, 0, 0])
    lines = report.retrieval_examples(img, txt, labels, [0], k=3).splitlines()
    # image 0 = (1, 0): text 2 (1), then texts 0 and 1 (0, tied)
    i2t = lines.index("image \u2192 text")
    assert lines[i2t + 1].split()[-3:] == ["0\u2717", "1\u2713", "0\u2717"]


def test_write_examples(tmp_path):
    e = np.eye(3)
    path = report.write_examples(e, e, np.array([0, 1, 2]), [0], tmp_path / "ex.txt", k=2)
    assert path == str(tmp_path / "ex.txt")
    assert "1/2 relevant" in open(path, encoding="utf-8").read()
    assert os.listdir(tmp_path) == ["ex.txt"]  # atomic: no temporary file left behind


def test_report_does_not_need_matplotlib():
    import subprocess
    import sys
    code = ("import sys; sys.modules['matplotlib'] = None; import acmr_np.report, acmr_np.train; "
            "print('ok')")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(__file__)),
                                                       os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.stdout.strip() == "ok", proc.stderr
