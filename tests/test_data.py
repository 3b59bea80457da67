"""Tests for acmr_np.data: loaders, checks, the stratified split, synthetic data, fingerprint."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse

from acmr_np.data import (PairedDataset, Split, load_dataset, load_dscmr_folder, load_npz,
                          load_wikipedia_mat, make_split, make_synthetic, stratified_split)
from acmr_np.errors import InputError

WIKI = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikipedia" / "wiki_data.mat"


def pairs(seed, n, c=3, d_img=5, d_txt=4):
    """(img (n, d_img) float64, txt (n, d_txt) float64, labels (n,) covering 0..c-1)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d_img)), rng.normal(size=(n, d_txt)), np.arange(n) % c


def npz_arrays(val=False):
    out = {}
    for split, n, seed in (("train", 30, 0), ("test", 9, 1)) + ((("val", 6, 2),) if val else ()):
        out[f"img_{split}"], out[f"txt_{split}"], out[f"label_{split}"] = pairs(seed, n)
    return out


def write_npz(tmp_path, **changes):
    arrays = npz_arrays(val=changes.pop("val", False))
    arrays.update(changes)
    path = tmp_path / "d.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def wiki_arrays():
    (i_tr, t_tr, l_tr), (i_te, t_te, l_te) = pairs(0, 30), pairs(1, 9)
    return {"I_tr": i_tr, "T_tr": t_tr, "L_tr": (l_tr + 1).astype(np.uint8)[:, None],
            "I_te": i_te, "T_te": t_te, "L_te": (l_te + 1).astype(np.uint8)[:, None]}


def write_dscmr(folder, val=True):
    folder.mkdir()
    splits = (("train", 30, 0), ("test", 9, 1)) + ((("valid", 6, 2),) if val else ())
    for prefix, n, seed in splits:
        img, txt, lab = pairs(seed, n)
        lab = np.eye(3)[lab] if prefix == "train" else lab[:, None]  # one-hot and (n, 1) columns
        for name, a in (("img", img), ("txt", txt), ("img_lab", lab)):
            scipy.io.savemat(folder / f"{prefix}_{name}.mat", {f"{prefix}_{name}": a})
    return folder


def raises(match, fn, *args, **kw):
    with pytest.raises(InputError, match=match) as info:
        fn(*args, **kw)
    assert "\n" not in str(info.value)  # the CLI prints it as one line


# ---- round trips ----------------------------------------------------------------------

def test_npz_round_trip_and_carved_validation(tmp_path):
    path = write_npz(tmp_path)
    splits = load_npz(path)
    assert set(splits) == {"train", "test"}
    img, txt, lab = pairs(0, 30)
    tr = splits["train"]
    assert tr.img.dtype == np.float32 and tr.img.flags.c_contiguous and tr.labels.dtype == np.int64
    np.testing.assert_array_equal(tr.img, img.astype(np.float32))
    np.testing.assert_array_equal(tr.txt, txt.astype(np.float32))
    np.testing.assert_array_equal(tr.labels, lab)

    ds = load_dataset(path, seed=3)
    assert ds.val_from_train and ds.name == str(path.resolve()) and ds.n_classes == 3
    assert (len(ds.train), len(ds.val), len(ds.test)) == (27, 3, 9)
    assert (ds.d_img, ds.d_txt) == (5, 4)
    assert sorted(np.concatenate([ds.train.labels, ds.val.labels]).tolist()) == sorted(lab.tolist())


def test_npz_with_validation_split_is_used_as_is(tmp_path):
    ds = load_dataset(write_npz(tmp_path, val=True))
    assert not ds.val_from_train
    assert (len(ds.train), len(ds.val), len(ds.test)) == (30, 6, 9)
    np.testing.assert_array_equal(ds.val.img, pairs(2, 6)[0].astype(np.float32))


def test_wikipedia_mat_round_trip_makes_labels_zero_based(tmp_path):
    path = tmp_path / "w.mat"
    scipy.io.savemat(path, wiki_arrays())
    splits = load_wikipedia_mat(path)
    np.testing.assert_array_equal(splits["train"].labels, pairs(0, 30)[2])
    np.testing.assert_array_equal(splits["test"].labels, pairs(1, 9)[2])
    assert splits["train"].img.dtype == np.float32  # float64 in the file
    ds = load_dataset(path)
    assert ds.n_classes == 3 and ds.train.labels.min() == 0


def test_mat_row_vector_labels_and_sparse_features(tmp_path):
    arrays = wiki_arrays()
    arrays["L_tr"] = arrays["L_tr"][:, 0]  # savemat writes a 1-D array as a (1, n) row
    arrays["T_tr"] = scipy.sparse.csr_matrix(arrays["T_tr"])  # MATLAB's sparse BoW features
    scipy.io.savemat(tmp_path / "w.mat", arrays)
    tr = load_wikipedia_mat(tmp_path / "w.mat")["train"]
    np.testing.assert_array_equal(tr.labels, pairs(0, 30)[2])
    np.testing.assert_array_equal(tr.txt, pairs(0, 30)[1].astype(np.float32))


def test_dscmr_folder_round_trip_one_hot_and_column_labels(tmp_path):
    folder = write_dscmr(tmp_path / "pascal")
    splits = load_dscmr_folder(folder)
    for name, n, seed in (("train", 30, 0), ("test", 9, 1), ("val", 6, 2)):
        img, txt, lab = pairs(seed, n)
        np.testing.assert_array_equal(splits[name].img, img.astype(np.float32))
        np.testing.assert_array_equal(splits[name].labels, lab)
    ds = load_dataset(folder)
    assert not ds.val_from_train and len(ds.val) == 6


def test_dscmr_folder_without_validation_carves_one(tmp_path):
    ds = load_dataset(write_dscmr(tmp_path / "f", val=False))
    assert ds.val_from_train and len(ds.train) + len(ds.val) == 30


@pytest.mark.skipif(not WIKI.exists(), reason=f"{WIKI} is absent")
def test_real_wikipedia_file():
    ds = load_dataset(WIKI)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1956, 217, 693)
    assert (ds.d_img, ds.d_txt, ds.n_classes) == (128, 10, 10)
    # class counts from PROVENANCE.md (labels 1..10 there, 0..9 here)
    train_counts = np.bincount(np.concatenate([ds.train.labels, ds.val.labels]))
    assert train_counts.tolist() == [138, 272, 244, 248, 202, 178, 186, 144, 214, 347]
    assert np.bincount(ds.test.labels).tolist() == [34, 88, 96, 85, 65, 58, 51, 41, 71, 104]


# ---- labels -----------------------------------------------------------------------------

def test_one_hot_accepted_multi_hot_and_empty_rows_rejected(tmp_path):
    lab = np.eye(3)[np.arange(30) % 3]
    ds = load_dataset(write_npz(tmp_path, label_train=lab))
    assert ds.n_classes == 3
    multi = lab.copy()
    multi[4, :] = [1, 1, 0]
    raises(r"label_train row 4 has 2 ones; multi-label", load_npz, write_npz(tmp_path, label_train=multi))
    multi[4, :] = 0
    raises(r"label_train row 4 has 0 ones", load_npz, write_npz(tmp_path, label_train=multi))
    soft = lab.copy()
    soft[2] = [0.5, 0.5, 0]
    raises(r"not one-hot: value 0.5 at row 2", load_npz, write_npz(tmp_path, label_train=soft))


# ---- bad input ----------------------------------------------------------------------------

def _with(array, idx, value):
    array = array.copy()
    array[idx] = value
    return array


TRAIN = npz_arrays()


@pytest.mark.parametrize("changes, match", [
    (dict(txt_test=None), r"d\.npz: missing key\(s\) txt_test .*found keys: img_test, img_train, label_test"),
    (dict(img_train=_with(TRAIN["img_train"], ([1, 7], [2, 3]), np.nan)),
     r"img_train has 2 NaN or infinite values \(first at row 1, column 2\)"),
    (dict(txt_train=_with(TRAIN["txt_train"], (5, 0), np.inf)),
     r"txt_train has 1 NaN or infinite values \(first at row 5, column 0\)"),
    (dict(img_train=_with(TRAIN["img_train"], (0, 0), 1e300)), r"img_train has 1 values too large for float32"),
    (dict(txt_train=TRAIN["txt_train"][:29]), r"counts differ .*img_train has 30 rows, txt_train has 29"),
    (dict(label_test=np.arange(8) % 3), r"counts differ .*label_test has 8 labels"),
    (dict(img_test=np.ones((9, 6))), r"img_test has 6 columns but img_train has 5"),
    (dict(txt_val=np.ones((6, 2)), img_val=np.ones((6, 5)), label_val=np.arange(6) % 3, val=False),
     r"txt_val has 2 columns but txt_train has 4"),
    (dict(label_train=np.arange(30) % 3 + 0.5), r"label_train must hold integer class labels; found 0.5 at row 0"),
    (dict(label_train=_with(np.arange(30) % 3, 7, -1)), r"label_train has label -1 at row 7; expected labels 0"),
    (dict(label_train=_with((np.arange(30) % 3).astype(float), 4, 1e20)),
     r"label_train has label 1e\+20 at row 4; expected small class indices"),
    (dict(label_test=_with(np.arange(9) % 3, 4, 5)), r"label_test has class\(es\) \[5\] that label_train lacks"),
    (dict(label_train=np.zeros(30, int)), r"label_train holds only 1 class; training needs at least 2"),
    (dict(label_train=np.arange(30) % 3 + 1),
     r"label_train has no pair of class 0 \(1 of the classes 0\.\.3 missing\).*1-based"),
    (dict(label_train=_with(np.arange(30) % 3, 0, 10**12)), r"label_train has no pair of class 3 \(999"),
    (dict(img_train=np.ones(30)), r"img_train must be a 2-D array \(n, d\), got shape \(30,\)"),
    (dict(txt_test=np.array([["a"] * 4] * 9)), r"txt_test must be a 2-D numeric array"),
    (dict(img_val=np.ones((6, 5))), r"has img_val but is missing txt_val, label_val"),
])
def test_npz_bad_input(tmp_path, changes, match):
    raises(match, load_dataset, write_npz(tmp_path, **changes))


def test_wikipedia_bad_labels_and_keys(tmp_path):
    arrays = wiki_arrays()
    arrays["L_te"] = arrays["L_te"] - 1  # 0-based where 1..c is expected
    scipy.io.savemat(tmp_path / "w.mat", arrays)
    raises(r"w\.mat: L_te has label 0 at row 0; expected labels 1\.\.c", load_dataset, tmp_path / "w.mat")
    del arrays["I_te"]
    scipy.io.savemat(tmp_path / "w2.mat", arrays)
    raises(r"missing key\(s\) I_te for the Wikipedia .*found keys: I_tr, L_te", load_dataset, tmp_path / "w2.mat")


def test_dscmr_missing_file_and_wrong_variable(tmp_path):
    folder = write_dscmr(tmp_path / "f")
    (folder / "test_txt.mat").unlink()
    raises(r"missing file\(s\) test_txt\.mat .*found files: test_img\.mat", load_dataset, folder)
    scipy.io.savemat(folder / "test_txt.mat", {"wrong": np.ones((9, 4))})
    raises(r"test_txt\.mat: missing key\(s\) test_txt .*found keys: wrong", load_dataset, folder)
    scipy.io.savemat(folder / "test_txt.mat", {"test_txt": np.ones((9, 4))})
    (folder / "valid_txt.mat").unlink()
    raises(r"missing valid_txt\.mat", load_dataset, folder)


def test_files_that_cannot_be_read(tmp_path):
    raises(r"nope\.npz: no such file", load_dataset, tmp_path / "nope.npz")
    (tmp_path / "x.csv").write_text("1,2\n")
    raises(r"x\.csv: unknown format", load_dataset, tmp_path / "x.csv")
    (tmp_path / "garbage.mat").write_bytes(b"not a mat file at all" * 10)
    raises(r"garbage\.mat: cannot read as a MATLAB \.mat file", load_dataset, tmp_path / "garbage.mat")
    header = b"MATLAB 7.3 MAT-file".ljust(124, b" ") + b"\x00\x02IM"  # how HDF5-based files start
    (tmp_path / "v73.mat").write_bytes(header + b"\x89HDF\r\n\x1a\n" + bytes(64))
    raises(r"v73\.mat: MATLAB v7\.3 \(HDF5\) files are not supported", load_dataset, tmp_path / "v73.mat")
    np.save(tmp_path / "lone.npy", np.ones(3))
    os.rename(tmp_path / "lone.npy", tmp_path / "lone.npz")
    raises(r"lone\.npz: cannot read as an \.npz archive", load_dataset, tmp_path / "lone.npz")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path):
    path = write_npz(tmp_path)
    path.chmod(0)
    try:
        raises(r"d\.npz: not readable", load_dataset, path)
    finally:
        path.chmod(0o600)


@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_files(tmp_path, keep):
    npz = write_npz(tmp_path)
    npz.write_bytes(npz.read_bytes()[:int(keep * npz.stat().st_size)])
    raises(r"d\.npz: cannot read as an \.npz archive, it may be truncated or corrupt", load_dataset, npz)
    mat = tmp_path / "w.mat"
    scipy.io.savemat(mat, wiki_arrays())
    mat.write_bytes(mat.read_bytes()[:int(keep * mat.stat().st_size)])
    raises(r"w\.mat: cannot read as a MATLAB \.mat file, it may be truncated or corrupt", load_dataset, mat)


@pytest.mark.parametrize("kw, match", [
    (dict(seed=-1), r"seed must be a non-negative integer"),
    (dict(seed=1.5), r"seed must be a non-negative integer"),
    (dict(val_fraction=0.0), r"val_fraction must be strictly between 0 and 1"),
    (dict(val_fraction=1.0), r"val_fraction must be strictly between 0 and 1"),
])
def test_bad_seed_and_fraction(kw, match):
    raises(match, load_dataset, None, **kw)


def test_make_split_checks_and_does_not_touch_callers_arrays():
    img, txt, lab = pairs(0, 6)
    raises(r"where: labels has label 3 at row 3; expected labels 0\.\.2",
           make_split, img, txt, _with(lab, 3, 3), n_classes=3, where="where")
    split = make_split(img, txt, lab)
    assert img.flags.writeable  # the caller's array is not frozen...
    with pytest.raises(ValueError):
        split.img[0, 0] = 1.0  # ...but the dataset's copy is


def test_make_synthetic_bad_arguments():
    raises(r"make_synthetic: n_train must be an integer >= 20", make_synthetic, n_train=19)
    raises(r"make_synthetic: n_classes must be an integer >= 2", make_synthetic, n_classes=1)


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
    assert np.all(np.abs(n_val - 0.2 * counts) <= 1)
    assert n_val[0] == 0 and np.all(n_val[1:] >= 1) and np.all(counts[1:] - n_val[1:] >= 1)


# ---- synthetic data ---------------------------------------------------------------------

def test_synthetic_is_deterministic_per_seed():
    a, b, c = make_synthetic(0), make_synthetic(0), make_synthetic(1)
    assert a.fingerprint() == b.fingerprint()
    np.testing.assert_array_equal(a.train.img, b.train.img)
    assert a.fingerprint()["sha256"] != c.fingerprint()["sha256"]
    assert not np.array_equal(a.test.txt, c.test.txt)
    assert a.name == "synthetic(seed=0)" and a.val_from_train
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


# ---- fingerprint ------------------------------------------------------------------------

def test_fingerprint_is_json_stable_and_sees_one_changed_value():
    ds = make_synthetic(0, n_train=40, n_test=10, n_classes=4, d_img=6, d_txt=3)
    fp = ds.fingerprint()
    assert json.loads(json.dumps(fp)) == fp  # train.py compares it after a JSON round trip
    assert fp["sizes"] == {"train": 36, "val": 4, "test": 10} and fp["n_classes"] == 4
    assert ds.name == "synthetic(seed=0, n_train=40, n_test=10, n_classes=4, d_img=6, d_txt=3)"
    txt = ds.test.txt.copy()
    txt[3, 1] += 1e-3
    changed = PairedDataset(ds.train, ds.val, Split(ds.test.img, txt, ds.test.labels),
                            ds.n_classes, ds.name, ds.val_from_train)
    assert changed.fingerprint()["sha256"] != fp["sha256"]
    same = PairedDataset(ds.train, ds.val, Split(ds.test.img.copy(), ds.test.txt.copy(), ds.test.labels.copy()),
                         ds.n_classes, ds.name, ds.val_from_train)
    assert same.fingerprint() == fp
