"""Reading paired data from files: ``load_dataset``, ``load_split`` and the formats.

Whole datasets (``load_dataset(path)``; the kind is chosen from the path):

- ``*.npz``, ``*.h5`` / ``*.hdf5`` (read with h5py: ``pip install 'acmr_np[h5]'``), or a
  folder of ``*.npy`` files (``img_train.npy``, ...): arrays named ``img_train,
  txt_train, label_train, img_test, txt_test, label_test`` and optionally ``img_val,
  txt_val, label_val``.
- ``*.mat``: the classic Wikipedia file (Rasiwasia et al. 2010) with ``I_tr, T_tr, L_tr,
  I_te, T_te, L_te`` (labels 1..10, which become class ids 0..9).
- a folder in the DSCMR release layout (Zhen et al., CVPR 2019): ``train_img.mat``,
  ``train_txt.mat``, ``train_img_lab.mat``, ``test_*`` likewise, optionally ``valid_*``;
  each file holds one variable named like the file.
- one file per split: ``load_dataset(train=FILE, test=FILE[, val=FILE])``, each an .npz,
  .h5, .mat or .npy folder holding ``img, txt, label`` (or ``img_train, ...`` named for
  its split).

``keys={"img_train": "X_img", ...}`` (or ``parse_keys("img_train=X_img,...")``) maps our
names to the file's for every kind but the DSCMR folder; names it leaves out keep our
spelling. Labels may be integers >= 0, strings, one-hot rows, or multi-hot 0/1 rows (n, c)
for multi-label data (see ``acmr_np.datasets``).
``load_split`` reads one split only, to evaluate a trained model on a new file.

Every problem with the input raises ``InputError`` with a one-line message naming the
file, the key and what was expected.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import scipy.io

from .datasets import SPLITS, Split, build_dataset, check_arrays, check_seed_and_fraction
from .labels import encode_labels
from .errors import input_error as _fail
from .synthetic import make_synthetic

OURS = {s: (f"img_{s}", f"txt_{s}", f"label_{s}") for s in SPLITS}  # our names, split by split
PLAIN = ("img", "txt", "label")                                     # a file holding one split
KEY_NAMES = OURS["train"] + OURS["val"] + OURS["test"] + PLAIN
WIKI_KEYS = {"img_train": "I_tr", "txt_train": "T_tr", "label_train": "L_tr",
             "img_test": "I_te", "txt_test": "T_te", "label_test": "L_te"}
DSCMR_NAMES = {s: (f"{p}_img", f"{p}_txt", f"{p}_img_lab") for s, p in
               (("train", "train"), ("test", "test"), ("val", "valid"))}
LAYOUT = {"npz": ".npz layout", "h5": ".h5 layout", "npy": ".npy folder layout",
          "mat": "Wikipedia .mat layout"}


# ---- key names ----------------------------------------------------------------------

def check_keys(keys, where="keys"):
    """A validated {our name: the file's name} dict; our names are those of KEY_NAMES."""
    if not isinstance(keys, Mapping):
        raise TypeError(f"{where} must be a mapping like {{'img_train': 'X_img'}}, got {type(keys).__name__}")
    for ours, theirs in keys.items():
        if ours not in KEY_NAMES:
            raise _fail(f"{where}: unknown name {ours!r}; expected names among {', '.join(KEY_NAMES)}")
        if not isinstance(theirs, str) or not theirs:
            raise _fail(f"{where}: {ours} must map to a non-empty key name, got {theirs!r}")
    return dict(keys)


def parse_keys(text):
    """{"img_train": "X_img", "txt_train": "X_txt"} from "img_train=X_img,txt_train=X_txt"
    (what a --keys option would take); malformed text is a one-line InputError."""
    where = f"keys {text!r}"
    example = "expected NAME=KEY pairs separated by commas, e.g. img_train=X_img,txt_train=X_txt"
    out = {}
    for item in str(text).split(","):
        ours, sep, theirs = (s.strip() for s in item.partition("="))
        if not (sep and ours and theirs):
            raise _fail(f"{where}: {item.strip()!r} is not NAME=KEY; {example}")
        if ours in out:
            raise _fail(f"{where}: {ours} is given twice")
        out[ours] = theirs
    return check_keys(out, where)


# ---- reading containers -------------------------------------------------------------

def _existing_file(path):
    path = Path(path).expanduser()
    if not path.exists():
        raise _fail(f"{path}: no such file or folder")
    if not os.access(path, os.R_OK):
        raise _fail(f"{path}: not readable (check its permissions)")
    return path


def _read_mat(path):
    """All variables of a MATLAB file as {name: array}, or an InputError saying why not."""
    path = _existing_file(path)
    try:
        m = scipy.io.loadmat(path)
    except NotImplementedError:  # scipy's answer to HDF5-based files
        raise _fail(f"{path}: MATLAB v7.3 (HDF5) files are not supported; re-save it with "
                    f"save(..., '-v7')") from None
    except Exception as exc:  # truncated or corrupt files raise many different types
        raise _fail(f"{path}: cannot read as a MATLAB .mat file, it may be truncated or corrupt "
                    f"({type(exc).__name__}: {exc})") from None
    return {k: v for k, v in m.items() if not k.startswith("__")}


def _read_npy(load, where, what, key):
    """load() of one .npy array (an .npz member or a file), with the reasons it fails said."""
    try:
        return load()
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise _fail(f"{where}: cannot read {key} from {what} ({exc})") from None
        # object arrays are pickles, and unpickling a file can run any code in it
        raise _fail(f"{where}: {key} is an object array (saved with allow_pickle); it is not loaded, "
                    f"since unpickling can run code: save labels as a plain array, e.g. "
                    f"np.asarray(labels, dtype=str) or dtype=np.int64") from None
    except Exception as exc:
        raise _fail(f"{where}: cannot read {key} from {what}, it may be truncated or corrupt "
                    f"({type(exc).__name__}: {exc})") from None


def _import_h5py(path):
    try:
        import h5py  # optional: only .h5 files need it
    except ImportError:
        raise _fail(f"{path}: reading .h5/.hdf5 files needs h5py, which is not installed: "
                    f"pip install 'acmr_np[h5]'") from None
    return h5py


def _read_h5(h5py, f, key, path):
    """One dataset of an open HDF5 file (``key`` may be a path such as "features/img")."""
    try:
        ds = f[key]
        if h5py.check_string_dtype(ds.dtype) is not None:  # variable-length text comes as bytes objects
            return np.array(ds.asstr()[()], dtype=str)
        return ds[()]
    except Exception as exc:
        raise _fail(f"{path}: cannot read {key} as an HDF5 dataset, the file may be truncated or corrupt "
                    f"({type(exc).__name__}: {exc})") from None


@contextlib.contextmanager
def _archive(path, kind):
    """(names, read): the array names in an .npz, .h5, .mat file or .npy folder, and a
    function reading one of them by name (the file stays open inside the with block)."""
    if kind == "npz":
        with open(path, "rb") as f:
            head = f.read(6)
        if head[:4] != b"PK\x03\x04" and head[:4] != b"PK\x05\x06":  # an .npz is a zip archive
            what = "a single .npy array" if head == b"\x93NUMPY" else "not a zip archive"
            raise _fail(f"{path}: not an .npz archive ({what}); save the arrays with numpy.savez")
        try:
            z = np.load(path, allow_pickle=False)
            names = set(z.files)
        except Exception as exc:
            raise _fail(f"{path}: cannot read as an .npz archive, it may be truncated or corrupt "
                        f"({type(exc).__name__}: {exc})") from None
        with z:
            yield names, lambda k: _read_npy(lambda: z[k], path, "an .npz archive", k)
    elif kind == "npy":
        yield ({p.stem for p in path.glob("*.npy")},
               lambda k: _read_npy(lambda: np.load(path / f"{k}.npy", allow_pickle=False),
                                   path / f"{k}.npy", "a .npy file", k))
    elif kind == "h5":
        h5py = _import_h5py(path)
        try:
            f = h5py.File(path, "r")
            names = set()
            f.visititems(lambda name, obj: names.add(name) if isinstance(obj, h5py.Dataset) else None)
        except Exception as exc:
            raise _fail(f"{path}: cannot read as an HDF5 file, it may be truncated or corrupt "
                        f"({type(exc).__name__}: {exc})") from None
        with f:
            yield names, lambda k: _read_h5(h5py, f, k, path)
    else:
        arrays = _read_mat(path)
        yield set(arrays), arrays.__getitem__


def _kind(path, whole=True):
    """"npz", "h5", "mat", "npy" (folder) or "dscmr" (folder; whole datasets only)."""
    if path.is_dir():
        if whole and any((path / f"{n}.mat").exists() for ns in DSCMR_NAMES.values() for n in ns):
            return "dscmr"
        if any(path.glob("*.npy")):
            return "npy"
        found = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "none"
        dscmr = "DSCMR .mat files (train_img.mat, train_txt.mat, train_img_lab.mat, test_img.mat, ...) or " \
            if whole else ""
        npy = "img_train.npy, txt_train.npy, label_train.npy, img_test.npy, ..." if whole else \
            "img.npy, txt.npy, label.npy"
        raise _fail(f"{path}: a folder in no known layout: expected {dscmr}.npy files named like the "
                    f".npz keys ({npy}); found files: {found}")
    kind = {".npz": "npz", ".h5": "h5", ".hdf5": "h5", ".mat": "mat"}.get(path.suffix.lower())
    if kind is None:
        raise _fail(f"{path}: unknown format; expected a .npz, .h5/.hdf5 or Wikipedia .mat file, a folder "
                    f"of .npy files, or a folder in the DSCMR layout")
    return kind


# ---- layouts ------------------------------------------------------------------------

def _require(found, required, where, layout, what="key", suffix=""):
    """required: (the file's name, ours or None where it is not a user mapping) pairs."""
    missing = [f"{k}{suffix}" + (f" (for {ours})" if ours else "") for k, ours in required if k not in found]
    if missing:
        expected = ", ".join(f"{k}{suffix}" for k, _ in required)
        raise _fail(f"{where}: missing {what}(s) {', '.join(missing)} for the {layout} (expected "
                    f"{expected}); found {what}s: {', '.join(sorted(f'{k}{suffix}' for k in found)) or 'none'}")


def _optional_val(found, val_keys, where, suffix=""):
    """True when all validation keys are there, False when none is; half a split is an error."""
    have = [k for k in val_keys if k in found]
    if have and len(have) < len(val_keys):
        missing = [k + suffix for k in val_keys if k not in found]
        raise _fail(f"{where}: has {', '.join(k + suffix for k in have)} but is missing {', '.join(missing)}; "
                    f"a validation split needs all of {', '.join(k + suffix for k in val_keys)} (or none, "
                    f"to carve one from train)")
    return bool(have)


def _whole(path, kind, keys):
    """{split: (img, txt, labels, their names)} of a whole-dataset file or .npy folder."""
    plain = [k for k in PLAIN if k in keys]
    if plain:
        raise _fail(f"{path}: keys {', '.join(plain)} name the arrays of a one-split file (train=, test=, "
                    f"load_split); a whole dataset's are named {', '.join(KEY_NAMES[:-3])}")
    mapping = keys if keys or kind != "mat" else WIKI_KEYS
    theirs = {s: tuple(mapping.get(n, n) for n in OURS[s]) for s in SPLITS}
    what, suffix = ("file", ".npy") if kind == "npy" else ("key", "")
    with _archive(path, kind) as (names, read):
        required = [(theirs[s][i], OURS[s][i] if OURS[s][i] in keys else None) for s in ("train", "test")
                    for i in range(3)]
        layout = ".mat layout" if kind == "mat" and keys else LAYOUT[kind]
        _require(names, required, path, layout, what, suffix)
        splits = ["train", "test"] + (["val"] if _optional_val(names, theirs["val"], path, suffix) else [])
        return {s: (*(read(k) for k in theirs[s]), tuple(k + suffix for k in theirs[s])) for s in splits}


def _one(path, kind, keys, split):
    """(img, txt, labels, their names) of a file holding one split. Each array is the
    one ``keys`` maps ``<field>_<split>`` or else ``<field>`` to; unmapped, the file's
    ``<field>_<split>`` (e.g. img_test) or plain ``<field>`` (img), whichever it has."""
    suffix = ".npy" if kind == "npy" else ""
    with _archive(path, kind) as (names, read):
        wants = []  # per field: the names that may hold it, and which of them the file has
        for field in PLAIN:
            named = f"{field}_{split}"
            mapped = next((k for k in (named, field) if k in keys), None)
            want = [(keys[mapped], mapped)] if mapped else [(named, None), (field, None)]
            wants.append((want, [k for k, _ in want if k in names]))
        for want, have in wants:
            if len(have) > 1:
                raise _fail(f"{path}: holds both {have[0]}{suffix} and {have[1]}{suffix}; say which {split} "
                            f"array to read with keys (e.g. {want[1][0]}={have[0]})")
        if not all(have for _, have in wants):
            expected = ", ".join(" or ".join(f"{k}{suffix}" + (f" (for {ours})" if ours else "")
                                             for k, ours in want) for want, _ in wants)
            listed = ", ".join(sorted(k + suffix for k in names)) or "none"
            raise _fail(f"{path}: no {split} split: expected {expected}; found: {listed}")
        chosen = [have[0] for _, have in wants]
        return (*(read(k) for k in chosen), tuple(k + suffix for k in chosen))


def _dscmr(folder):
    """{split: (img, txt, labels, names)} of a folder in DSCMR's layout:
    {train,test,valid}_{img,txt,img_lab}.mat, each holding a variable of the file's name."""
    present = {p.name for p in folder.glob("*.mat")}
    need = [(f"{n}.mat", None) for s in ("train", "test") for n in DSCMR_NAMES[s]]
    _require(present, need, folder, "DSCMR folder layout", what="file")
    splits = ["train", "test"]
    if _optional_val(present, [f"{n}.mat" for n in DSCMR_NAMES["val"]], folder):
        splits.append("val")
    parts = {}
    for split in splits:
        arrays = []
        for n in DSCMR_NAMES[split]:
            file = folder / f"{n}.mat"
            found = _read_mat(file)
            _require(found, [(n, None)], file, "DSCMR layout (one variable named like the file)")
            arrays.append(found[n])
        parts[split] = (*arrays, tuple(f"{n}.mat:{n}" for n in DSCMR_NAMES[split]))
    return parts


def read_splits(path, *, keys=None):
    """The raw arrays of a whole-dataset file or folder, unchecked:
    {"train": (img, txt, labels, names), "test": ...[, "val": ...]}, names being the
    arrays' names in the file (for messages). ``build_dataset`` checks them."""
    path = _existing_file(path)
    keys = {} if keys is None else check_keys(keys)
    kind = _kind(path)
    if kind == "dscmr":
        if keys:
            raise _fail(f"{path}: keys do not apply to a DSCMR folder (its file names are fixed)")
        return _dscmr(path)
    return _whole(path, kind, keys)


# ---- entry points -------------------------------------------------------------------

def load_dataset(path=None, *, seed=0, val_fraction=0.1, keys=None, train=None, val=None, test=None):
    """Load a ``PairedDataset``: synthetic for no path, else from a file or folder.

    path: a whole dataset (see the module docstring); or, instead of it, ``train`` and
    ``test`` (and optionally ``val``): one file per split. keys: {our name: the
    file's name}, e.g. ``{"label_train": "y"}`` or ``{"img": "X"}`` for split files.
    Without a validation split in the data, a stratified ``val_fraction`` of train
    becomes validation, chosen by ``default_rng(seed)``. ``name`` is the resolved path
    (or "train=..., test=..."); the fingerprint does not depend on it.
    """
    check_seed_and_fraction(seed, val_fraction)
    keys = {} if keys is None else check_keys(keys)
    files = {s: f for s, f in (("train", train), ("val", val), ("test", test)) if f is not None}
    rng = np.random.default_rng(seed)
    if files:
        if path is not None:
            raise _fail("load_dataset: give either path or train=/test= files, not both")
        if "train" not in files or "test" not in files:
            raise _fail("load_dataset: one file per split needs both train= and test= (val= is optional)")
        resolved = {s: _existing_file(f).resolve() for s, f in files.items()}
        parts = {}
        for s, p in resolved.items():
            *arrays, names = _one(p, _kind(p, whole=False), keys, s)
            parts[s] = (*arrays, tuple(f"{p}:{n}" for n in names))  # messages name the file
        name = ", ".join(f"{s}={p}" for s, p in resolved.items())
        return build_dataset(parts, where="load_dataset", name=name, val_fraction=val_fraction, rng=rng)
    if path is None:
        if keys:
            raise _fail("load_dataset: keys need a data file; without one the data is synthetic")
        return make_synthetic(seed, val_fraction=val_fraction)
    p = _existing_file(path).resolve()
    return build_dataset(read_splits(p, keys=keys), where=p, name=str(p), val_fraction=val_fraction, rng=rng)


def load_split(path, *, keys=None, split="test", classes=None):
    """One split's arrays from a file or .npy folder, e.g. a new held-out test set.

    The file holds ``img_<split>, txt_<split>, label_<split>`` (a whole-dataset file
    will do) or plain ``img, txt, label`` (names mapped by ``keys``). Returns
    (Split, raw): raw (n,) are the labels as stored (int64 or str, read-only; for
    multi-hot rows the 0/1 matrix (n, c) uint8, encoded column by column). The
    Split's labels are ``encode_labels(raw, classes)`` when ``classes`` is given (the
    tuple a trained run saved; a label outside it is an InputError), else ids in the
    sorted order of the file's own labels, which match a model's ids only by chance.
    """
    if split not in SPLITS:
        raise ValueError(f"load_split: split must be one of {', '.join(SPLITS)}, got {split!r}")
    keys = {} if keys is None else check_keys(keys)
    p = _existing_file(path).resolve()
    *arrays, names = _one(p, _kind(p, whole=False), keys, split)
    img, txt, raw = check_arrays(*arrays, where=p, keys=names)
    raw.flags.writeable = False
    # without saved classes: the file's own labels (for 0/1 label rows, the columns it uses)
    own = tuple(np.flatnonzero(raw.any(axis=0)).tolist() if raw.ndim == 2 else np.unique(raw).tolist())
    ids = encode_labels(raw, own if classes is None else classes, where=f"{p}: {names[2]}")
    ids.flags.writeable = False
    return Split(img, txt, ids), raw


SOURCE_KEYS = ("data", "train", "val", "test", "keys")  # a data source, as runs record it


def load_source(source, *, seed=0, val_fraction=0.1):
    """``load_dataset`` of a data source as the command lines record it (config.json, a
    checkpoint, a search): {"data": path or None, "train", "val", "test": paths or None,
    "keys": {ours: theirs} or None}."""
    return load_dataset(source.get("data"), seed=seed, val_fraction=val_fraction, keys=source.get("keys"),
                        train=source.get("train"), val=source.get("val"), test=source.get("test"))
