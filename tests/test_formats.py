"""Tests for acmr_np.formats: every file format (built here in tmp_path), key mapping,
one file per split, load_split, and the one-line message for each malformed input."""
import importlib.util
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse

from acmr_np.errors import InputError
from acmr_np.formats import load_dataset, load_split, parse_keys, read_splits

from test_datasets import split_digest  # tests/ is on sys.path (the rootdir conftest)

HERE = Path(__file__).resolve()
# the real Wikipedia file, where one is found (its test is skipped otherwise)
WIKI = next((p for p in (os.environ.get("ACMR_WIKI"), os.environ.get("ACMR_WIKI_MAT"),
                         HERE.parents[2] / "shared/data/wikipedia/wiki_data.mat",
                         "/work/shared/data/wikipedia/wiki_data.mat") if p and Path(p).is_file()), None)


def pairs(seed, n, c=3, d_img=5, d_txt=4):
    """(img (n, d_img) float64, txt (n, d_txt) float64, labels (n,) covering 0..c-1)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d_img)), rng.normal(size=(n, d_txt)), np.arange(n) % c


def npz_arrays(val=False):
    out = {}
    for split, n, seed in (("train", 30, 0), ("test", 9, 1)) + ((("val", 6, 2),) if val else ()):
        out[f"img_{split}"], out[f"txt_{split}"], out[f"label_{split}"] = pairs(seed, n)
    return out


def write_npz(tmp_path, name="d.npz", **changes):
    arrays = npz_arrays(val=changes.pop("val", False))
    arrays.update(changes)
    path = tmp_path / name
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def write_npy_folder(folder, arrays):
    folder.mkdir()
    for k, v in arrays.items():
        np.save(folder / f"{k}.npy", v)
    return folder


def write_h5(path, arrays):
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f[k] = v
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


def raises(match, fn, *args, exc=InputError, **kw):
    with pytest.raises(exc, match=match) as info:
        fn(*args, **kw)
    assert "\n" not in str(info.value)  # the CLI prints it as one line
    return str(info.value)


def assert_split(split, seed, n, labels=None):
    """The split holds pairs(seed, n) as float32, with labels (default: pairs' own)."""
    img, txt, lab = pairs(seed, n)
    assert split.img.dtype == np.float32 and split.img.flags.c_contiguous and split.labels.dtype == np.int64
    np.testing.assert_array_equal(split.img, img.astype(np.float32))
    np.testing.assert_array_equal(split.txt, txt.astype(np.float32))
    np.testing.assert_array_equal(split.labels, lab if labels is None else labels)


# ---- the formats, round trips ---------------------------------------------------------

def test_npz_round_trip_and_carved_validation(tmp_path):
    path = write_npz(tmp_path)
    parts = read_splits(path)
    assert set(parts) == {"train", "test"} and parts["train"][3] == ("img_train", "txt_train", "label_train")
    ds = load_dataset(path, seed=3)
    assert ds.val_from_train and ds.name == str(path.resolve()) and ds.n_classes == 3 and ds.classes == (0, 1, 2)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (27, 3, 9)
    assert (ds.d_img, ds.d_txt) == (5, 4)
    lab = pairs(0, 30)[2]
    assert sorted(np.concatenate([ds.train.labels, ds.val.labels]).tolist()) == sorted(lab.tolist())
    assert_split(ds.test, 1, 9)


def test_npz_with_validation_split_is_used_as_is(tmp_path):
    ds = load_dataset(write_npz(tmp_path, val=True))
    assert not ds.val_from_train
    assert_split(ds.train, 0, 30)
    assert_split(ds.val, 2, 6)
    assert_split(ds.test, 1, 9)


def test_npy_folder_round_trip(tmp_path):
    folder = write_npy_folder(tmp_path / "feats", npz_arrays(val=True))
    ds = load_dataset(folder)
    assert not ds.val_from_train and ds.name == str(folder.resolve())
    assert_split(ds.train, 0, 30)
    assert_split(ds.val, 2, 6)
    assert_split(ds.test, 1, 9)


def test_h5_round_trip_with_string_labels(tmp_path):
    arrays = npz_arrays(val=True)
    names = np.array(["owl", "bee", "cat"])
    for split in ("train", "val", "test"):
        arrays[f"label_{split}"] = names[arrays[f"label_{split}"]].astype(object)  # variable-length strings
    arrays["label_val"] = arrays["label_val"].astype("S")  # fixed-length bytes
    for suffix in (".h5", ".hdf5"):
        ds = load_dataset(write_h5(tmp_path / f"d{suffix}", arrays))
        assert ds.classes == ("bee", "cat", "owl")
        to_id = {"bee": 0, "cat": 1, "owl": 2}
        assert_split(ds.train, 0, 30, [to_id[n] for n in names[pairs(0, 30)[2]]])
        assert_split(ds.val, 2, 6, [to_id[n] for n in names[pairs(2, 6)[2]]])
        assert_split(ds.test, 1, 9, [to_id[n] for n in names[pairs(1, 9)[2]]])


def test_wikipedia_mat_round_trip_makes_labels_zero_based(tmp_path):
    path = tmp_path / "w.mat"
    scipy.io.savemat(path, wiki_arrays())
    parts = read_splits(path)
    assert parts["train"][3] == ("I_tr", "T_tr", "L_tr")
    ds = load_dataset(path)
    assert ds.n_classes == 3 and ds.classes == (1, 2, 3)  # labels 1..3 in the file
    assert_split(ds.test, 1, 9)  # ids 0..2
    assert ds.train.img.dtype == np.float32  # float64 in the file


def test_mat_row_vector_labels_and_sparse_features(tmp_path):
    arrays = wiki_arrays()
    arrays["L_tr"] = arrays["L_tr"][:, 0]  # savemat writes a 1-D array as a (1, n) row
    arrays["T_tr"] = scipy.sparse.csr_matrix(arrays["T_tr"])  # MATLAB's sparse BoW features
    scipy.io.savemat(tmp_path / "w.mat", arrays)
    ds = load_dataset(tmp_path / "w.mat")
    img, txt, lab = pairs(0, 30)
    # every training pair arrives (carved into train + val), with its label shifted to 0..2
    got = {tuple(r): l for r, l in zip(np.concatenate([ds.train.txt, ds.val.txt]),
                                        np.concatenate([ds.train.labels, ds.val.labels]))}
    assert got == {tuple(r): l for r, l in zip(txt.astype(np.float32), lab)}


def test_dscmr_folder_round_trip_one_hot_and_column_labels(tmp_path):
    folder = write_dscmr(tmp_path / "pascal")
    ds = load_dataset(folder)
    assert not ds.val_from_train and ds.classes == (0, 1, 2)
    assert_split(ds.train, 0, 30)
    assert_split(ds.val, 2, 6)
    assert_split(ds.test, 1, 9)


def test_dscmr_folder_without_validation_carves_one(tmp_path):
    ds = load_dataset(write_dscmr(tmp_path / "f", val=False))
    assert ds.val_from_train and len(ds.train) + len(ds.val) == 30


# sha256 of each split (the same split_digest as tests/test_datasets.py), recorded with
# acmr_np/data.py before it was split in modules: the same arrays, bit for bit.
WIKI_BEFORE = {
    0: {"train": "70a891c3decedf8e45034b57cc2b4a988b86366d2aeba0d5b41e7da1f39cf463",
        "val": "216d3c7b7d71f09bcb41a3b8994e4cbe65d0ed9c47794a6f8f1ce0c99a840a88",
        "test": "6c93534b627347a798fac8cd658547cf1e7cdb94d3aa7bd552a0e4187c608781"},
    4: {"train": "c3551f82cd18de97d48ed5275e484c2fcbde07dd9fd64417818a7eb537a0dee8",
        "val": "bf469893881077f4474558f84444283924109bfc8e875cd5df4b699dc550d723",
        "test": "6c93534b627347a798fac8cd658547cf1e7cdb94d3aa7bd552a0e4187c608781"},
}



@pytest.mark.skipif(WIKI is None, reason="wiki_data.mat not found (set ACMR_WIKI to its path)")
def test_real_wikipedia_file():
    ds = load_dataset(WIKI)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1956, 217, 693)
    assert (ds.d_img, ds.d_txt, ds.n_classes) == (128, 10, 10)
    assert ds.classes == tuple(range(1, 11))  # the file's labels 1..10 are ids 0..9
    # class counts from PROVENANCE.md (labels 1..10 there, 0..9 here)
    train_counts = np.bincount(np.concatenate([ds.train.labels, ds.val.labels]))
    assert train_counts.tolist() == [138, 272, 244, 248, 202, 178, 186, 144, 214, 347]
    assert np.bincount(ds.test.labels).tolist() == [34, 88, 96, 85, 65, 58, 51, 41, 71, 104]
    for seed, want in WIKI_BEFORE.items():
        ds = load_dataset(WIKI, seed=seed)
        assert {s: split_digest(getattr(ds, s)) for s in ("train", "val", "test")} == want


# ---- labels in files ------------------------------------------------------------------

def test_string_and_sparse_integer_labels_in_files(tmp_path):
    words = np.array(["zebra", "ant", "moth"])
    path = write_npz(tmp_path, val=True, **{f"label_{s}": words[pairs(seed, n)[2]]
                                             for s, n, seed in (("train", 30, 0), ("val", 6, 2), ("test", 9, 1))})
    ds = load_dataset(path)
    assert ds.classes == ("ant", "moth", "zebra")
    assert_split(ds.train, 0, 30, [{"zebra": 2, "ant": 0, "moth": 1}[w] for w in words[pairs(0, 30)[2]]])
    ids = np.array([1000, 20, 300])
    path = write_npz(tmp_path, "ids.npz", val=True, **{f"label_{s}": ids[pairs(seed, n)[2]]
                                                        for s, n, seed in (("train", 30, 0), ("val", 6, 2),
                                                                           ("test", 9, 1))})
    ds = load_dataset(path)
    assert ds.classes == (20, 300, 1000)
    assert_split(ds.test, 1, 9, [{1000: 2, 20: 0, 300: 1}[i] for i in ids[pairs(1, 9)[2]]])


def test_one_hot_accepted_multi_hot_needs_label_rows_everywhere_empty_rows_rejected(tmp_path):
    lab = np.eye(3)[np.arange(30) % 3]
    ds = load_dataset(write_npz(tmp_path, label_train=lab))
    assert ds.n_classes == 3 and not ds.multilabel
    multi = lab.copy()
    multi[4, :] = [1, 1, 0]  # multi-label data (tests/test_multilabel.py), but test holds class ids
    raises(r"label_test holds a vector of class labels but label_train holds multi-hot label rows",
           load_dataset, write_npz(tmp_path, label_train=multi))
    multi[4, :] = 0
    raises(r"label_train row 4 has no 1 \(1 rows of zeros\); every pair needs at least one label",
           load_dataset, write_npz(tmp_path, label_train=multi))
    soft = lab.copy()
    soft[2] = [0.5, 0.5, 0]
    raises(r"label_train has shape \(30, 3\) but holds value 0.5 at row 2, column 0; expected 0/1 label rows",
           load_dataset, write_npz(tmp_path, label_train=soft))


def test_object_labels_in_an_npz_are_refused_for_what_they_are(tmp_path):
    path = tmp_path / "pickled.npz"
    arrays = npz_arrays()
    arrays["label_train"] = np.array(["a", "b", "c"] * 10, dtype=object)
    np.savez(path, **arrays)  # np.savez pickles object arrays
    msg = raises(r"pickled\.npz: label_train is an object array \(saved with allow_pickle\); it is not loaded",
                 load_dataset, path)
    assert "truncated" not in msg and "np.asarray(labels, dtype=str)" in msg


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
    (dict(img_train=np.ones((0, 5)), txt_train=np.ones((0, 4)), label_train=np.zeros(0, int)),
     r"d\.npz: img_train is empty \(shape \(0, 5\)\); expected at least one row"),
    (dict(txt_train=TRAIN["txt_train"][:29]), r"counts differ .*img_train has 30 rows, txt_train has 29"),
    (dict(label_test=np.arange(8) % 3), r"counts differ .*label_test has 8 labels"),
    (dict(img_test=np.ones((9, 6))), r"img_test has 6 columns but img_train has 5"),
    (dict(txt_val=np.ones((6, 2)), img_val=np.ones((6, 5)), label_val=np.arange(6) % 3, val=False),
     r"txt_val has 2 columns but txt_train has 4"),
    (dict(label_train=np.arange(30) % 3 + 0.5), r"label_train must hold integer class labels; found 0.5 at row 0"),
    (dict(label_train=_with(np.arange(30) % 3, 7, -1)),
     r"label_train has label -1 at row 7; expected integer labels >= 0 \(or strings\)"),
    (dict(label_train=_with((np.arange(30) % 3).astype(float), 4, 1e20)),
     r"label_train has label 1e\+20 at row 4, too large to be a whole number"),
    (dict(label_test=_with(np.arange(9) % 3, 4, 5)), r"d\.npz: label_test holds class 5 that label_train lacks"),
    (dict(label_train=np.zeros(30, int)), r"label_train holds only 1 class; training needs at least 2"),
    (dict(label_train=np.arange(30) % 3 + 1), r"label_test holds class 0 that label_train lacks"),
    (dict(label_test=np.array(["a"] * 9)), r"label_test holds strings but label_train holds integers"),
    (dict(img_train=np.ones(30)), r"img_train must be a 2-D array \(n, d\), got shape \(30,\)"),
    (dict(txt_test=np.array([["a"] * 4] * 9)), r"txt_test must be a 2-D numeric array"),
    (dict(img_val=np.ones((6, 5))), r"has img_val but is missing txt_val, label_val"),
])
def test_npz_bad_input(tmp_path, changes, match):
    msg = raises(match, load_dataset, write_npz(tmp_path, **changes))
    assert "1-based" not in msg


def test_labels_need_not_start_at_zero_or_be_contiguous(tmp_path):
    ds = load_dataset(write_npz(tmp_path, label_train=np.arange(30) % 3 + 1, label_test=np.arange(9) % 3 + 1))
    assert ds.classes == (1, 2, 3) and ds.test.labels.tolist() == (np.arange(9) % 3).tolist()
    ds = load_dataset(write_npz(tmp_path, label_train=_with(np.arange(30) % 3, 0, 10 ** 12)))
    assert ds.classes == (0, 1, 2, 10 ** 12) and ds.n_classes == 4


def test_wikipedia_bad_labels_and_keys(tmp_path):
    arrays = wiki_arrays()
    arrays["L_te"] = arrays["L_te"] - 1  # 0-based where 1..c is expected
    scipy.io.savemat(tmp_path / "w.mat", arrays)
    raises(r"w\.mat: L_te holds class 0 that L_tr lacks; every class must appear", load_dataset, tmp_path / "w.mat")
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
    raises(r"f: keys do not apply to a DSCMR folder", load_dataset, folder, keys={"img_train": "x"})


def test_folders_in_the_npy_layout_or_in_none(tmp_path):
    arrays = npz_arrays()
    del arrays["txt_test"]
    folder = write_npy_folder(tmp_path / "npy", arrays)
    raises(r"npy: missing file\(s\) txt_test\.npy for the \.npy folder layout .*found files: img_test\.npy, "
           r"img_train\.npy", load_dataset, folder)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    msg = raises(r"empty: a folder in no known layout: expected DSCMR \.mat files \(train_img\.mat, .*\) or "
                 r"\.npy files named like the \.npz keys \(img_train\.npy, .*\); found files: notes\.txt$",
                 load_dataset, tmp_path / "empty")
    assert "train_img.mat" in msg and "img_train.npy" in msg


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
    raises(r"lone\.npz: not an \.npz archive \(a single \.npy array\); save the arrays with numpy\.savez$",
           load_dataset, tmp_path / "lone.npz")
    (tmp_path / "notes.npz").write_text("img_train, txt_train, ...\n")
    raises(r"notes\.npz: not an \.npz archive \(not a zip archive\); save the arrays with numpy\.savez$",
           load_dataset, tmp_path / "notes.npz")


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


def test_truncated_h5_and_a_missing_h5_key(tmp_path):
    path = write_h5(tmp_path / "d.h5", npz_arrays())
    good = path.read_bytes()
    path.write_bytes(good[:len(good) // 2])
    raises(r"d\.h5: cannot read .*HDF5.*, (it|the file) may be truncated or corrupt", load_dataset, path)
    path.unlink()
    arrays = npz_arrays()
    del arrays["label_test"]
    write_h5(path, arrays)
    raises(r"d\.h5: missing key\(s\) label_test for the \.h5 layout", load_dataset, path)


def test_h5_without_h5py_names_the_extra(tmp_path, monkeypatch):
    path = write_h5(tmp_path / "d.h5", npz_arrays())
    monkeypatch.setitem(sys.modules, "h5py", None)  # what an environment without h5py looks like
    raises(r"d\.h5: reading \.h5/\.hdf5 files needs h5py, which is not installed: pip install 'acmr_np\[h5\]'$",
           load_dataset, path)


@pytest.mark.parametrize("kw, match", [
    (dict(seed=-1), r"seed must be a non-negative integer"),
    (dict(seed=1.5), r"seed must be a non-negative integer"),
    (dict(val_fraction=0.0), r"val_fraction must be strictly between 0 and 1"),
    (dict(val_fraction=1.0), r"val_fraction must be strictly between 0 and 1"),
])
def test_bad_seed_and_fraction(kw, match):
    raises(match, load_dataset, None, **kw)


# ---- key names ------------------------------------------------------------------------

def test_keys_map_our_names_to_the_files(tmp_path):
    theirs = {"img_train": "X_img", "label_test": "y_te"}
    arrays = {theirs.get(k, k): v for k, v in npz_arrays().items()}
    np.savez(tmp_path / "m.npz", **arrays)
    write_npy_folder(tmp_path / "m", arrays)
    cases = [(tmp_path / "m.npz", theirs), (tmp_path / "m", theirs)]
    if importlib.util.find_spec("h5py"):  # keys may be paths inside an HDF5 file
        nested = {("feats/" + k if k.startswith(("img", "txt", "X")) else k): v for k, v in arrays.items()}
        cases.append((write_h5(tmp_path / "m.h5", nested),
                      {"img_train": "feats/X_img", "txt_train": "feats/txt_train", "img_test": "feats/img_test",
                       "txt_test": "feats/txt_test", "label_test": "y_te"}))
    for path, keys in cases:
        ds = load_dataset(path, keys=keys)
        assert_split(ds.test, 1, 9)
        assert len(ds.train) + len(ds.val) == 30
    scipy.io.savemat(tmp_path / "m.mat", arrays)
    assert_split(load_dataset(tmp_path / "m.mat", keys=theirs).test, 1, 9)  # a .mat in our names, with keys
    raises(r"m\.npz: missing key\(s\) img_train, label_test for the \.npz layout .*found keys: X_img, img_test",
           load_dataset, tmp_path / "m.npz")  # without keys
    raises(r"missing key\(s\) Q \(for img_train\)", load_dataset, tmp_path / "m.npz", keys={"img_train": "Q"})
    raises(r"m: missing file\(s\) Q\.npy \(for img_train\), label_test\.npy for the \.npy folder layout",
           load_dataset, tmp_path / "m", keys={"img_train": "Q"})
    raises(r"m\.npz: keys img name the arrays of a one-split file \(train=, test=, load_split\); a whole dataset's "
           r"are named img_train, txt_train", load_dataset, tmp_path / "m.npz", keys={"img": "X_img"})
    raises(r"^keys: unknown name 'image_train'; expected names among img_train, txt_train", load_dataset,
           tmp_path / "m.npz", keys={"image_train": "X"})
    raises(r"^keys must be a mapping", load_dataset, tmp_path / "m.npz", keys=["img_train"], exc=TypeError)
    raises(r"keys need a data file", load_dataset, None, keys={"img_train": "X"})


def test_parse_keys():
    assert parse_keys("img_train=X_img, txt_train = X_txt") == {"img_train": "X_img", "txt_train": "X_txt"}
    assert parse_keys("label=y") == {"label": "y"}
    for text, match in (("img_train", r"'img_train' is not NAME=KEY; expected NAME=KEY pairs"),
                        ("img_train=", r"'img_train=' is not NAME=KEY"),
                        ("=X", r"'=X' is not NAME=KEY"),
                        ("img_train=X,", r"'' is not NAME=KEY"),
                        ("", r"'' is not NAME=KEY"),
                        ("img_train=X,img_train=Y", r"img_train is given twice"),
                        ("imgtrain=X", r"unknown name 'imgtrain'; expected names among img_train")):
        raises(rf"^keys {text!r}: {match}", parse_keys, text)


# ---- one file per split ---------------------------------------------------------------

def split_arrays(seed, n, prefix="", **changes):
    img, txt, lab = pairs(seed, n)
    out = {f"{prefix}img": img, f"{prefix}txt": txt, f"{prefix}label": lab}
    out.update(changes)
    return out


@pytest.mark.parametrize("test_file", ["test.h5", "test.mat"])
def test_one_file_per_split(tmp_path, test_file):
    np.savez(tmp_path / "train.npz", **split_arrays(0, 30))
    test = tmp_path / test_file
    if test_file.endswith(".h5"):
        write_h5(test, split_arrays(1, 9))
    else:
        scipy.io.savemat(test, split_arrays(1, 9))  # (savemat stores the labels as a (1, n) row)
    write_npy_folder(tmp_path / "val", split_arrays(2, 6))
    ds = load_dataset(train=tmp_path / "train.npz", test=test, val=tmp_path / "val")
    assert not ds.val_from_train and ds.name.startswith("train=") and "test=" in ds.name
    assert_split(ds.train, 0, 30)
    assert_split(ds.val, 2, 6)
    assert_split(ds.test, 1, 9)
    carved = load_dataset(train=tmp_path / "train.npz", test=test, seed=5)
    whole = load_dataset(write_npz(tmp_path), seed=5)  # the same arrays in one file, the same seed
    assert carved.fingerprint() == whole.fingerprint() and carved.name != whole.name
    np.savez(tmp_path / "mapped.npz", X=pairs(1, 9)[0], txt=pairs(1, 9)[1], y=pairs(1, 9)[2])
    ds = load_dataset(train=tmp_path / "train.npz", test=tmp_path / "mapped.npz",
                      keys={"img_test": "X", "label_test": "y"})  # names for the test file only
    assert_split(ds.test, 1, 9)
    assert len(ds.train) + len(ds.val) == 30
    raises(r"train\.npz: no train split: expected X \(for img\), txt_train or txt, y \(for label\); found: img, "
           r"label, txt$", load_dataset, train=tmp_path / "train.npz", test=tmp_path / "mapped.npz",
           keys={"img": "X", "label": "y"})  # names for every split file


def test_one_file_per_split_refusals(tmp_path):
    np.savez(tmp_path / "train.npz", **split_arrays(0, 30))
    np.savez(tmp_path / "test.npz", **split_arrays(1, 9, img=np.ones((9, 6))))
    train, test = tmp_path / "train.npz", tmp_path / "test.npz"
    raises(r"^load_dataset: .*test\.npz:img has 6 columns but .*train\.npz:img has 5; every split needs",
           load_dataset, train=train, test=test)
    raises(r"^load_dataset: give either path or train=/test= files, not both", load_dataset, train, train=train,
           test=test)
    raises(r"^load_dataset: one file per split needs both train= and test=", load_dataset, train=train)
    raises(r"^load_dataset: one file per split needs both train= and test=", load_dataset, test=test, val=test)
    np.savez(tmp_path / "odd.npz", a=np.ones(3))
    raises(r"odd\.npz: no test split: expected img_test or img, txt_test or txt, label_test or label; found: a$",
           load_dataset, train=train, test=tmp_path / "odd.npz")
    img, txt, lab = pairs(1, 9)
    np.savez(tmp_path / "both.npz", img=img, txt=txt, label=lab, img_test=img, txt_test=txt, label_test=lab)
    raises(r"both\.npz: holds both img_test and img; say which test array to read with keys \(e\.g\. img=img_test\)$",
           load_dataset, train=train, test=tmp_path / "both.npz")
    (tmp_path / "nothing").mkdir()
    raises(r"nothing: a folder in no known layout: expected \.npy files named like the \.npz keys \(img\.npy, "
           r"txt\.npy, label\.npy\); found files: none$", load_dataset, train=train, test=tmp_path / "nothing")


# ---- load_split -----------------------------------------------------------------------

def test_load_split_reads_one_split_and_maps_with_saved_classes(tmp_path):
    words = np.array(["cat", "dog", "emu"])
    np.savez(tmp_path / "new.npz", **split_arrays(1, 9, label=words[pairs(1, 9)[2]][::-1]))
    split, raw = load_split(tmp_path / "new.npz", classes=("emu", "dog", "cat"))  # a saved run's order
    assert raw.tolist() == words[pairs(1, 9)[2]][::-1].tolist() and not raw.flags.writeable
    assert_split(split, 1, 9, [{"emu": 0, "dog": 1, "cat": 2}[w] for w in raw.tolist()])
    own, _ = load_split(tmp_path / "new.npz")  # no classes: the file's own, sorted
    assert own.labels.tolist() == [{"cat": 0, "dog": 1, "emu": 2}[w] for w in raw.tolist()]
    raises(r"new\.npz: label: 3 labels are not among the 2 classes \('cat', 'dog'\); the first is 'emu' at row 0$",
           load_split, tmp_path / "new.npz", classes=("cat", "dog"))
    whole = write_npz(tmp_path, val=True)  # a whole-dataset file: its img_val, ... when asked for val
    split, raw = load_split(whole, split="val")
    assert_split(split, 2, 6)
    assert raw.dtype == np.int64 and raw.tolist() == pairs(2, 6)[2].tolist()
    write_npy_folder(tmp_path / "npy", split_arrays(1, 9))
    assert_split(load_split(tmp_path / "npy")[0], 1, 9)
    raises(r"d\.npz: label_test has label -1 at row 2", load_split,
           write_npz(tmp_path, label_test=_with(np.arange(9) % 3, 2, -1)))
    raises(r"load_split: split must be one of train, val, test, got 'valid'", load_split, whole, split="valid",
           exc=ValueError)


# ---- the fingerprint identifies content ---------------------------------------------------

def test_fingerprint_does_not_depend_on_the_path(tmp_path):
    path = write_npz(tmp_path)
    a = load_dataset(path, seed=2)
    (tmp_path / "moved").mkdir()
    moved = Path(shutil.move(path, tmp_path / "moved" / "renamed.npz"))
    b = load_dataset(moved, seed=2)
    assert a.name != b.name and b.name == str(moved.resolve())
    assert a.fingerprint() == b.fingerprint() and "name" not in a.fingerprint()
    c = load_dataset(moved, seed=3)  # another carved validation split: other content
    assert c.fingerprint()["sha256"] != a.fingerprint()["sha256"]
