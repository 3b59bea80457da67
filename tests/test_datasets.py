"""Tests for acmr_np.datasets and acmr_np.synthetic: from_arrays and its checks, labels as
users have them, the stratified split, the fingerprint, and the synthetic data."""
import hashlib
import json

import numpy as np
import pytest

from acmr_np.datasets import PairedDataset, Split, make_split
from acmr_np.labels import encode_labels, label_values
from acmr_np.splits import stratified_split
from acmr_np.errors import InputError
from acmr_np.synthetic import make_synthetic

WHERE = "PairedDataset.from_arrays"


def pairs(seed, n, c=3, d_img=5, d_txt=4):
    """(img (n, d_img) float64, txt (n, d_txt) float64, labels (n,) covering 0..c-1)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d_img)), rng.normal(size=(n, d_txt)), np.arange(n) % c


def raises(match, fn, *args, exc=InputError, **kw):
    with pytest.raises(exc, match=match) as info:
        fn(*args, **kw)
    assert "\n" not in str(info.value)  # the command lines print it as one line
    return str(info.value)


def with_labels(split, labels):
    return split[0], split[1], labels


def split_digest(split):
    """sha256 over a split's arrays, each with its dtype and shape (independent of fingerprint)."""
    h = hashlib.sha256()
    for a in (split.img, split.txt, split.labels):
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# ---- from_arrays ----------------------------------------------------------------------

def test_from_arrays_carves_validation_like_the_file_loaders():
    img, txt, lab = pairs(0, 30)
    ds = PairedDataset.from_arrays((img, txt, lab), test=pairs(1, 9), seed=3)
    assert ds.val_from_train and ds.name == "arrays" and ds.n_classes == 3 and ds.classes == (0, 1, 2)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (27, 3, 9)  # one of each class's 10 goes to val
    assert (ds.d_img, ds.d_txt) == (5, 4)
    # the carved part is exactly stratified_split's choice with default_rng(seed)
    keep, val = stratified_split(lab, 0.1, np.random.default_rng(3))
    np.testing.assert_array_equal(ds.val.img, img[val].astype(np.float32))
    np.testing.assert_array_equal(ds.train.labels, lab[keep])
    np.testing.assert_array_equal(ds.test.txt, pairs(1, 9)[1].astype(np.float32))
    assert ds.train.img.dtype == np.float32 and ds.train.labels.dtype == np.int64
    assert not ds.train.img.flags.writeable and img.flags.writeable  # copies are frozen, not the caller's


def test_from_arrays_uses_a_given_validation_split_and_allows_no_test():
    ds = PairedDataset.from_arrays(pairs(0, 30), val=pairs(2, 6))
    assert not ds.val_from_train and ds.test is None
    assert (len(ds.train), len(ds.val)) == (30, 6)
    np.testing.assert_array_equal(ds.val.img, pairs(2, 6)[0].astype(np.float32))
    fp = ds.fingerprint()
    assert fp["sizes"] == {"train": 30, "val": 6, "test": None} and fp["label_counts"]["test"] is None
    assert json.loads(json.dumps(fp)) == fp


@pytest.mark.parametrize("kw, match", [
    (dict(test=pairs(1, 9, d_img=6)), rf"^{WHERE}: test img has 6 columns but train img has 5; every split"),
    (dict(val=pairs(1, 9, d_txt=2)), rf"^{WHERE}: val txt has 2 columns but train txt has 4"),
    (dict(test=with_labels(pairs(1, 3), np.array([0, 1, 5]))),
     rf"^{WHERE}: test labels hold class 5 that train lacks; every class must appear in the training split$"),
    (dict(test=with_labels(pairs(1, 3), np.array([7, 1, 5]))), r"test labels hold classes 5, 7 \(2 in all\)"),
    (dict(train=with_labels(pairs(0, 30), np.zeros(30, int))), rf"^{WHERE}: train labels hold only 1 class"),
    (dict(train=with_labels(pairs(0, 30), np.arange(30) % 3 - 1)), r"train labels has label -1 at row 0; expected"),
    (dict(train=with_labels(pairs(0, 30), np.arange(30) % 3 + 0.5)), r"must hold integer class labels; found 0\.5"),
    (dict(test=with_labels(pairs(1, 9), np.arange(9) % 3)[:2] + (np.arange(8) % 3,)),
     r"counts differ .*test img has 9 rows, test txt has 9, test labels has 8 labels"),
    (dict(train=(np.ones(30), *pairs(0, 30)[1:])), r"train img must be a 2-D array \(n, d\), got shape \(30,\)"),
    (dict(train=(np.ones((0, 5)), np.ones((0, 4)), np.zeros(0, int))), r"train img is empty \(shape \(0, 5\)\)"),
    (dict(train=with_labels(pairs(0, 30), np.arange(30) % 3), val_fraction=1.5), r"val_fraction must be"),
])
def test_from_arrays_checks(kw, match):
    kw.setdefault("train", pairs(0, 30))
    raises(match, PairedDataset.from_arrays, **kw)


def test_from_arrays_wrong_containers_are_type_errors():
    raises(rf"^{WHERE}: train must be a tuple \(img, txt, labels\), got 2 items$",
           PairedDataset.from_arrays, pairs(0, 30)[:2], exc=TypeError)
    raises(rf"^{WHERE}: test must be a tuple \(img, txt, labels\), got ndarray$",
           PairedDataset.from_arrays, pairs(0, 30), test=np.ones((9, 5)), exc=TypeError)


# ---- labels as users have them ----------------------------------------------------------

def test_string_labels_become_ids_in_sorted_order():
    names = np.array(["dog", "cat", "emu"])[np.arange(30) % 3]
    test_names = np.array(["emu", "emu", "cat", "dog"])
    ds = PairedDataset.from_arrays(with_labels(pairs(0, 30), names), val=pairs(2, 3)[:2] + (["cat", "dog", "emu"],),
                                   test=with_labels(pairs(1, 4), test_names))
    assert ds.classes == ("cat", "dog", "emu") and all(type(c) is str for c in ds.classes)
    expected = {"cat": 0, "dog": 1, "emu": 2}
    assert ds.train.labels.tolist() == [expected[n] for n in names]
    assert ds.test.labels.tolist() == [2, 2, 0, 1]
    assert ds.val.labels.tolist() == [0, 1, 2]
    assert json.loads(json.dumps(ds.classes)) == ["cat", "dog", "emu"]


def test_sparse_integer_ids_become_0_to_c_minus_1():
    ids = np.array([250, 100, 110])[np.arange(30) % 3]
    ds = PairedDataset.from_arrays(with_labels(pairs(0, 30), ids), val=with_labels(pairs(2, 2), [100, 250]),
                                   test=with_labels(pairs(1, 3), np.array([110, 250, 100], dtype=np.uint16)))
    assert ds.classes == (100, 110, 250) and all(type(c) is int for c in ds.classes)
    assert ds.train.labels.tolist() == [{100: 0, 110: 1, 250: 2}[i] for i in ids]
    assert ds.test.labels.tolist() == [1, 2, 0] and ds.val.labels.tolist() == [0, 2]


def test_labels_that_are_already_ids_keep_their_values():
    img, txt, lab = pairs(0, 30)
    ds = PairedDataset.from_arrays((img, txt, lab), val=pairs(2, 6), test=pairs(1, 9))
    assert ds.classes == (0, 1, 2)
    np.testing.assert_array_equal(ds.train.labels, lab)
    assert ds.train.labels.dtype == np.int64


def test_one_hot_class_is_the_column():
    cols = np.array([3, 0, 2])[np.arange(30) % 3]  # column 1 is never used
    one_hot = np.eye(4)[cols]
    ds = PairedDataset.from_arrays(with_labels(pairs(0, 30), one_hot), val=with_labels(pairs(2, 1), [[1, 0, 0, 0]]),
                                   test=with_labels(pairs(1, 2), np.eye(4)[[2, 3]]))
    assert ds.classes == (0, 2, 3)
    assert ds.train.labels.tolist() == [{0: 0, 2: 1, 3: 2}[c] for c in cols]
    assert ds.test.labels.tolist() == [1, 2] and ds.val.labels.tolist() == [0]
    raises(rf"^{WHERE}: test labels hold class 1 that train lacks", PairedDataset.from_arrays,
           with_labels(pairs(0, 30), one_hot), test=with_labels(pairs(1, 2), np.eye(4)[[1, 3]]))


def test_unseen_and_mismatched_labels_are_named_by_their_value():
    train = with_labels(pairs(0, 30), np.array(["cat", "dog"])[np.arange(30) % 2])
    msg = raises(rf"^{WHERE}: test labels hold class 'zebra' that train lacks; every class must appear",
                 PairedDataset.from_arrays, train, test=with_labels(pairs(1, 3), ["cat", "zebra", "dog"]))
    assert "1-based" not in msg
    raises(r"test labels hold integers but train labels hold strings; every split needs the same kind of label",
           PairedDataset.from_arrays, train, test=with_labels(pairs(1, 3), [0, 1, 0]))


def test_object_and_byte_labels():
    objects = np.empty(30, dtype=object)
    objects[:] = ["b", "a"] * 15
    ds = PairedDataset.from_arrays(with_labels(pairs(0, 30), objects), val=with_labels(pairs(2, 2), objects[:2]))
    assert ds.classes == ("a", "b") and ds.train.labels.tolist() == [1, 0] * 15 and ds.val.labels.tolist() == [1, 0]
    raw = label_values(np.array([b"x", b"y"]), "f", "label")
    assert raw.dtype.kind == "U" and raw.tolist() == ["x", "y"]
    mixed = objects.copy()
    mixed[4] = 7
    raises(rf"^{WHERE}: train labels is an object array holding int, str; expected class labels that are all "
           rf"integers or all strings$", PairedDataset.from_arrays, with_labels(pairs(0, 30), mixed))
    raises(r"label_x must hold class labels \(integers, strings or one-hot rows\), got dtype complex128",
           label_values, np.ones(3, complex), "f", "label_x")


def test_encode_labels_maps_with_saved_classes_and_names_the_unseen():
    classes = json.loads(json.dumps(("cat", "dog", "emu")))  # as a run saves and reads it back
    np.testing.assert_array_equal(encode_labels(["emu", "cat", "emu"], classes), [2, 0, 2])
    np.testing.assert_array_equal(encode_labels(np.array([[110], [100]]), (100, 110)), [1, 0])
    raises(r"^new\.npz: label: 2 labels are not among the 3 classes \('cat', 'dog', 'emu'\); the first is "
           r"'zebra' at row 1$", encode_labels, ["cat", "zebra", "zebra"], classes, where="new.npz: label")
    raises(r"the first is 0 at row 0", encode_labels, [0, 1], classes)  # integers against string classes
    raises("classes must be Python ints or strs", encode_labels, [0], (0.5,), exc=TypeError)
    raises("classes must not repeat a label", encode_labels, [0], (0, 0), exc=ValueError)


def test_dataset_classes_must_fit_n_classes_and_be_json_types():
    split = make_split(*pairs(0, 6))
    assert PairedDataset(split, split, split, 3, "x", False).classes == (0, 1, 2)  # the default
    assert PairedDataset(split, split, split, 3, "x", False, np.array([4, 5, 6])).classes == (4, 5, 6)
    assert type(PairedDataset(split, split, split, 3, "x", False, np.array([4, 5, 6])).classes[0]) is int
    raises("2 classes given for n_classes=3", PairedDataset, split, split, split, 3, "x", False, (0, 1),
           exc=ValueError)


def test_make_split_checks_and_does_not_touch_callers_arrays():
    img, txt, lab = pairs(0, 6)
    lab_bad = lab.copy()
    lab_bad[3] = 3
    raises(r"where: labels has label 3 at row 3; expected labels 0\.\.2",
           make_split, img, txt, lab_bad, n_classes=3, where="where")
    raises(r"where: labels holds strings; make_split takes class ids", make_split, img, txt,
           np.array(list("abcabc")), where="where")
    split = make_split(img, txt, lab)
    assert img.flags.writeable  # the caller's array is not frozen...
    with pytest.raises(ValueError):
        split.img[0, 0] = 1.0  # ...but the dataset's copy is


# ---- stratified split -------------------------------------------------------------------

def test_stratified_split_properties():
    labels = np.repeat(np.arange(5), [1, 2, 7, 40, 13])  # class 0 has a single item
    labels = np.random.default_rng(0).permutation(labels)
    counts = np.bincount(labels)
    keep, val = stratified_split(labels, 0.2, np.random.default_rng(7))
    again = stratified_split(labels, 0.2, np.random.default_rng(7))
    other = stratified_split(labels, 0.2, np.random.default_rng(8))
    assert all(np.array_equal(a, b) for a, b in zip((keep, val), again))
    assert not np.array_equal(val, other[1])
    assert np.all(np.diff(keep) > 0) and np.all(np.diff(val) > 0)  # sorted, no repeats
    assert len(np.intersect1d(keep, val)) == 0
    assert np.array_equal(np.union1d(keep, val), np.arange(len(labels)))
    n_val = np.bincount(labels[val], minlength=5)
    assert n_val.tolist() == [0, 1, 1, 8, 3]  # round(0.2 m), clipped to 1..m-1; a single item stays
    assert np.all(counts[1:] - n_val[1:] >= 1)


def test_single_pair_classes_leave_no_validation():
    raises(r"^arrays: val_fraction=0\.1 leaves no validation pairs", PairedDataset.from_arrays,
           with_labels(pairs(0, 3), np.array([0, 1, 2])))


# ---- synthetic data ---------------------------------------------------------------------

# sha256 of each split (split_digest) recorded with acmr_np/data.py before it was split in
# modules (commit 56edab5): the arrays must stay the same, bit for bit.
SYNTHETIC_BEFORE = {
    (0, ()): {"train": "311e486950848640d22ceba819705e23a2885edf18789998e36f38716f848743",
              "val": "cb7c38b98106e8897506c2e131c1a2820268706c5f99312bda91ad6d4625bc53",
              "test": "b74269deafe9b1a3914d8d76598c3874bae3c339775a6f4f9cc5c3c80d4cecac"},
    (3, (("n_train", 60), ("n_test", 20), ("n_classes", 4), ("d_img", 6), ("d_txt", 5), ("val_fraction", 0.2))):
        {"train": "e5fada966f82f56e92ebcebada4f4cda97aa032d1d196493b04d2f777c9cd861",
         "val": "802d4ac340ad27168916da3fc431ce7babc3f2e4e2d45a8f50f086b8f1df1e48",
         "test": "8b15f3c7b8e51c06861cb1e619225b420bd01cd3cc11a01dee59e56c15dba322"},
}


@pytest.mark.parametrize("seed, kw", list(SYNTHETIC_BEFORE), ids=["default", "small"])
def test_synthetic_is_bit_for_bit_what_it_was(seed, kw):
    ds = make_synthetic(seed, **dict(kw))
    assert {s: split_digest(getattr(ds, s)) for s in ("train", "val", "test")} == SYNTHETIC_BEFORE[seed, kw]


def test_synthetic_is_deterministic_per_seed():
    a, b, c = make_synthetic(0), make_synthetic(0), make_synthetic(1)
    assert a.fingerprint() == b.fingerprint()
    np.testing.assert_array_equal(a.train.img, b.train.img)
    assert a.fingerprint()["sha256"] != c.fingerprint()["sha256"]
    assert not np.array_equal(a.test.txt, c.test.txt)
    assert a.name == "synthetic(seed=0)" and a.val_from_train and a.classes == tuple(range(10))
    assert (len(a.train), len(a.val), len(a.test)) == (1800, 200, 700)
    assert (a.d_img, a.d_txt, a.n_classes) == (128, 24, 10)
    assert a.train.img.dtype == np.float32 and a.train.txt.flags.c_contiguous
    assert np.array_equal(np.unique(a.val.labels), np.arange(10))


def test_synthetic_is_learnable_but_not_trivial():
    # nearest class mean on each modality alone: well above chance (10%), well below 100%
    ds = make_synthetic(0)
    for field in ("img", "txt"):
        x_tr, x_te = getattr(ds.train, field), getattr(ds.test, field)
        mean, std = x_tr.mean(0), x_tr.std(0)
        z_tr, z_te = (x_tr - mean) / std, (x_te - mean) / std
        centres = np.stack([z_tr[ds.train.labels == k].mean(0) for k in range(10)])
        pred = ((z_te[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        assert 0.3 < (pred == ds.test.labels).mean() < 0.8


def test_make_synthetic_bad_arguments():
    raises(r"make_synthetic: n_train must be an integer >= 20", make_synthetic, n_train=19)
    raises(r"make_synthetic: n_classes must be an integer >= 2", make_synthetic, n_classes=1)
    raises(r"seed must be a non-negative integer", make_synthetic, seed=-1)


# ---- fingerprint ------------------------------------------------------------------------

def test_fingerprint_is_json_stable_and_sees_one_changed_value():
    ds = make_synthetic(0, n_train=40, n_test=10, n_classes=4, d_img=6, d_txt=3)
    fp = ds.fingerprint()
    assert json.loads(json.dumps(fp)) == fp  # train.py compares it after a JSON round trip
    assert fp["sizes"] == {"train": 36, "val": 4, "test": 10} and fp["n_classes"] == 4
    assert fp["label_counts"] == {"train": [9, 9, 9, 9], "val": [1, 1, 1, 1], "test": [3, 3, 2, 2]}
    assert fp["classes"] == [0, 1, 2, 3] and "name" not in fp
    assert ds.name == "synthetic(seed=0, n_train=40, n_test=10, n_classes=4, d_img=6, d_txt=3)"
    txt = ds.test.txt.copy()
    txt[3, 1] += 1e-3
    changed = PairedDataset(ds.train, ds.val, Split(ds.test.img, txt, ds.test.labels),
                            ds.n_classes, ds.name, ds.val_from_train)
    assert changed.fingerprint()["sha256"] != fp["sha256"]
    same = PairedDataset(ds.train, ds.val, Split(ds.test.img.copy(), ds.test.txt.copy(), ds.test.labels.copy()),
                         ds.n_classes, "another name, same numbers", ds.val_from_train)
    assert same.fingerprint() == fp


def test_fingerprint_sees_the_class_names():
    ds = PairedDataset.from_arrays(pairs(0, 30), val=pairs(2, 6))
    named = PairedDataset.from_arrays(with_labels(pairs(0, 30), np.array(["a", "b", "c"])[np.arange(30) % 3]),
                                      val=with_labels(pairs(2, 6), np.array(["a", "b", "c"])[np.arange(6) % 3]))
    np.testing.assert_array_equal(ds.train.labels, named.train.labels)  # the same ids...
    assert ds.fingerprint()["sha256"] != named.fingerprint()["sha256"]  # ...but other classes
    strings = PairedDataset(ds.train, ds.val, None, 3, "x", False, ("0", "1", "2"))
    assert strings.fingerprint()["sha256"] != ds.fingerprint()["sha256"]  # "0" is not 0
