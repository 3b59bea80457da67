"""Paired image-text data in memory: the containers, their checks, and the class mapping.

A ``Split`` holds n pairs: image features ``img`` (n, d_img) float32, text features
``txt`` (n, d_txt) float32 and their labels: one class id per pair, ``labels`` (n,)
int64 in 0..c-1 (single-label data), or a 0/1 label matrix ``labels`` (n, c) uint8 with
at least one 1 per row (multi-label data: MIRFlickr, NUS-WIDE, MS-COCO; the paper's
label vector y_i in R^c of Eq. 2, row i). A ``PairedDataset`` holds a train, a
validation and (usually) a test split, ``multilabel`` (which of the two it is), and the
tuple ``classes`` of the labels as the user had them: class id (or column) i is
``classes[i]``.

Labels as users have them: integers >= 0 (0..c-1, 1..c, or ids such as 100, 110, ...),
strings ("cat", "dog"), one-hot rows (class = column), or multi-hot rows (n, c) of 0/1
with any number of ones per row (at least one). The data set is multi-label when some
row of some split holds more than one 1; then every split must be such a matrix, with
the same columns. A 0/1 matrix with exactly one 1 in every row of every split is
single-label data, read as class ids exactly as before. The distinct labels of the
TRAINING split, in sorted order, become the ids 0..c-1 (the label columns that some
training row holds, in column order, for multi-label data), so labels that already are
0..c-1 keep their values. A label in val or test that train lacks is an error.

``PairedDataset.from_arrays`` builds a dataset from arrays; ``acmr_np.formats`` reads
files into the same ``build_dataset``, so both run the same checks. Without a validation
split, a stratified, seeded fraction of train becomes validation (``stratified_split``;
for multi-label data an iterative stratification over the labels, see there);
the test split is never used to choose anything. Bad input raises ``InputError`` (a
ValueError) with a one-line message naming where, the array and what was expected.
"""
from __future__ import annotations

import hashlib
import json
import numbers
from dataclasses import dataclass
from typing import Optional

import numpy as np
import scipy.sparse

from .errors import input_error as _fail

SPLITS = ("train", "val", "test")


# ---- containers ---------------------------------------------------------------------

@dataclass(frozen=True, eq=False, repr=False)
class Split:
    """n pairs: ``img`` (n, d_img) float32, ``txt`` (n, d_txt) float32, ``labels``: class
    ids (n,) int64, or for multi-label data a 0/1 label matrix (n, c) uint8.

    Built by ``make_split`` or ``build_dataset``, which check the arrays and make
    read-only copies, so a dataset cannot change after its fingerprint was taken.
    """
    img: np.ndarray
    txt: np.ndarray
    labels: np.ndarray

    def __len__(self):
        return len(self.labels)

    @property
    def multilabel(self):
        """True when ``labels`` is a 0/1 label matrix (n, c), False for class ids (n,)."""
        return self.labels.ndim == 2

    def subset(self, idx):
        """The pairs at ``idx`` (an index array or boolean mask), as a new read-only Split."""
        return Split(*(_frozen(a[idx]) for a in (self.img, self.txt, self.labels)))

    def __repr__(self):
        return f"Split(n={len(self)}, d_img={self.img.shape[1]}, d_txt={self.txt.shape[1]})"


@dataclass(frozen=True, eq=False)
class PairedDataset:
    """Train, validation and test splits of one paired dataset.

    ``test`` is None when the data came without a test split (``from_arrays`` with
    ``test=None``); code that evaluates must check for that. ``name`` says where the
    data came from ("synthetic(seed=0)", the resolved path, "arrays"): it is for
    messages and is not part of the fingerprint. ``val_from_train`` is True when
    validation was carved out of train. ``classes`` (c,): the original label of each
    class id, Python ints or strs (JSON-able); by default 0..c-1. For multi-label data
    (``multilabel``), n_classes is the number of label columns and ``classes`` the
    original column index of each.
    """
    train: Split
    val: Split
    test: Optional[Split]
    n_classes: int
    name: str
    val_from_train: bool
    classes: Optional[tuple] = None

    def __post_init__(self):
        classes = tuple(range(self.n_classes)) if self.classes is None else _as_classes(self.classes)
        if len(classes) != self.n_classes:
            raise ValueError(f"PairedDataset: {len(classes)} classes given for n_classes={self.n_classes}")
        object.__setattr__(self, "classes", classes)

    @property
    def multilabel(self):
        """True when the labels are 0/1 label matrices (n, c) with any number of ones per
        row (retrieval then counts an item relevant when it shares a label with the
        query), False for one class id per pair."""
        return self.train.multilabel

    @property
    def d_img(self):
        return self.train.img.shape[1]

    @property
    def d_txt(self):
        return self.train.txt.shape[1]

    @classmethod
    def from_arrays(cls, train, val=None, test=None, *, val_fraction=0.1, seed=0, name="arrays"):
        """A checked dataset from ``(img, txt, labels)`` tuples, one per split.

        img: (n, d_img), txt: (n, d_txt), any real dtype (stored as float32 copies);
        labels: (n,) integers >= 0 or strings, one-hot (n, c), or multi-hot (n, c) 0/1
        rows for multi-label data; see the module docstring for how they become ids. ``val=None`` carves a stratified
        ``val_fraction`` of train, chosen by ``default_rng(seed)`` (as ``load_dataset``
        does); ``test=None`` gives ``dataset.test is None``. Same checks as the file
        loaders: feature sizes equal across splits, >= 2 classes in train, no class in
        val/test that train lacks.
        """
        where = "PairedDataset.from_arrays"
        check_seed_and_fraction(seed, val_fraction)
        parts = {}
        for split, given in (("train", train), ("val", val), ("test", test)):
            if given is None and split != "train":
                continue
            if not isinstance(given, (tuple, list)) or len(given) != 3:
                got = f"{len(given)} items" if isinstance(given, (tuple, list)) else type(given).__name__
                raise TypeError(f"{where}: {split} must be a tuple (img, txt, labels), got {got}")
            parts[split] = (*given, (f"{split} img", f"{split} txt", f"{split} labels"))
        return build_dataset(parts, where=where, name=name, val_fraction=val_fraction,
                             rng=np.random.default_rng(seed), train_name="train")

    def fingerprint(self):
        """What the data is, by content: a JSON-able dict with n_classes, classes, d_img,
        d_txt, the sizes and per-class label counts of each split (None for a missing
        test split), and a sha256 over every array of every split and the classes.
        Multi-label data adds "multilabel": True (its label counts are per column, so
        they sum to more than the pairs); single-label fingerprints are what they were.

        Two datasets with the same fingerprint hold the same numbers in the same
        splits, in the same order, with the same class names, wherever they were read
        from (``name`` is not part of it); a checkpoint records it to refuse other data.
        """
        h = hashlib.sha256()
        sizes, counts = {}, {}
        for split_name in SPLITS:
            split = getattr(self, split_name)
            if split is None:
                h.update(f"{split_name}:absent;".encode())
                sizes[split_name] = counts[split_name] = None
                continue
            for field in ("img", "txt", "labels"):
                a = getattr(split, field)
                a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))  # same bytes on any machine
                h.update(f"{split_name}.{field}:{a.dtype.str}:{a.shape};".encode())
                h.update(a.data)
            sizes[split_name] = len(split)
            counts[split_name] = (split.labels.sum(axis=0, dtype=np.int64) if split.multilabel else
                                  np.bincount(split.labels, minlength=self.n_classes)).tolist()
        h.update(f"classes:{json.dumps(list(self.classes))}".encode())  # "1" and 1 differ here
        out = {"n_classes": int(self.n_classes), "classes": list(self.classes), "d_img": int(self.d_img),
               "d_txt": int(self.d_txt), "sizes": sizes, "label_counts": counts, "sha256": h.hexdigest()}
        if self.multilabel:  # (the labels' shape is in the sha256 too; this says it in words)
            out["multilabel"] = True
        return out


# ---- checking features ----------------------------------------------------------------

def _frozen(a):
    a.flags.writeable = False
    return a


def _dense(a):
    # MATLAB files often store bag-of-words features as sparse matrices
    return a.toarray() if scipy.sparse.issparse(a) else np.asarray(a)


def _as_features(a, where, key):
    """Check a feature matrix and return a read-only float32 C-contiguous copy (n, d)."""
    a = _dense(a)
    if a.dtype.kind not in "biuf":
        raise _fail(f"{where}: {key} must be a 2-D numeric array (n, d), got dtype {a.dtype}")
    if a.ndim != 2:
        raise _fail(f"{where}: {key} must be a 2-D array (n, d), got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise _fail(f"{where}: {key} is empty (shape {a.shape}); expected at least one row and column")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, as a message
        x = np.array(a, dtype=np.float32, order="C")  # a copy: freezing it leaves the caller's array alone
    bad = ~np.isfinite(x)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        why = "NaN or infinite values" if not np.isfinite(a[r, c]) else "values too large for float32"
        raise _fail(f"{where}: {key} has {int(bad.sum())} {why} (first at row {r}, column {c}); "
                    f"features must be finite")
    return _frozen(x)


# ---- checking labels ------------------------------------------------------------------

def _from_objects(a, where, key):
    """An object array (a pandas column, a list of mixed Python values) as str or int64."""
    values = a.ravel().tolist()
    if values and all(isinstance(v, str) for v in values):
        return np.array(values, dtype=str).reshape(a.shape)
    if values and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values):
        if all(-2 ** 63 <= v < 2 ** 63 for v in values):
            return np.array(values, dtype=np.int64).reshape(a.shape)
    kinds = ", ".join(sorted({type(v).__name__ for v in values})) or "nothing"
    raise _fail(f"{where}: {key} is an object array holding {kinds}; expected class labels that are "
                f"all integers or all strings")


def _label_matrix(a, where, key):
    """A checked 0/1 label matrix (n, c) -> a uint8 copy: every value 0 or 1 and at least
    one 1 per row (a row of zeros gives a pair no label: nothing could be relevant to it,
    and Eq. 2's y_i / sum(y_i) would divide by zero)."""
    not01 = (a != 0) & (a != 1)  # (NaN is neither)
    if not01.any():
        r, c = np.argwhere(not01)[0]
        raise _fail(f"{where}: {key} has shape {a.shape} but holds value {a[r, c]} at row {r}, column {c}; "
                    f"expected 0/1 label rows (one-hot, or multi-hot for multi-label data) or a vector of "
                    f"class labels")
    y = np.ascontiguousarray(a, dtype=np.uint8)
    empty = ~y.any(axis=1)
    if empty.any():
        r = int(np.flatnonzero(empty)[0])
        raise _fail(f"{where}: {key} row {r} has no 1 ({int(empty.sum())} rows of zeros); every pair needs at "
                    f"least one label")
    return y


def label_values(labels, where="labels", key="labels", n_rows=None, *, keep_matrix=False):
    """Check class labels as the user has them and return a vector (n,): int64 or str,
    or for multi-hot rows a 0/1 label matrix (n, c) uint8.

    Accepted: integers >= 0 (any integer or bool dtype, or floats holding whole
    numbers), strings (str, or bytes decoded as UTF-8), one-hot rows (n, c) whose
    column is the class, multi-hot rows (n, c) of 0/1 with at least one 1 each (returned
    as the matrix), and vectors stored as (n, 1) columns or (1, n) rows (how MATLAB
    stores them; ``n_rows`` tells a (1, n) row from a single one-hot row).
    keep_matrix=True returns every 0/1 matrix as the matrix, one-hot ones included (for
    build_dataset, which decides for all splits together which kind the data is).
    """
    a = _dense(labels)
    if a.dtype.kind == "O":
        a = _from_objects(a, where, key)
    if a.dtype.kind == "S":  # HDF5 and MATLAB char data arrive as bytes
        try:
            a = np.char.decode(a, "utf-8")
        except UnicodeDecodeError:
            raise _fail(f"{where}: {key} holds byte strings that are not UTF-8 text") from None
    if a.dtype.kind not in "biufU":
        raise _fail(f"{where}: {key} must hold class labels (integers, strings or one-hot rows), "
                    f"got dtype {a.dtype}")
    if a.ndim == 2 and a.shape[0] == 1 and a.shape[1] > 1 and n_rows in (None, a.shape[1]):
        a = a[0]  # a row vector (scipy.io.savemat writes 1-D arrays so)
    elif a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim == 2 and a.dtype.kind != "U":  # 0/1 rows: one-hot, or multi-hot (multi-label)
        y = _label_matrix(a, where, key)
        if keep_matrix or is_multi_hot(y):
            return y
        return np.argmax(y, axis=1).astype(np.int64)  # one 1 per row: its column is the class
    if a.ndim != 1:
        raise _fail(f"{where}: {key} must be a vector of class labels or 0/1 label rows (n, c), got shape "
                    f"{a.shape}")
    if a.dtype.kind == "U":
        return a
    if a.dtype.kind == "f":
        frac = ~np.isfinite(a) | (a != np.round(a))
        if frac.any():
            r = int(np.flatnonzero(frac)[0])
            raise _fail(f"{where}: {key} must hold integer class labels; found {a[r]} at row {r} "
                        f"({int(frac.sum())} non-integer values)")
        huge = np.abs(a) > 2 ** 53  # float64 stops holding every whole number here
        if huge.any():
            r = int(np.flatnonzero(huge)[0])
            raise _fail(f"{where}: {key} has label {a[r]:g} at row {r}, too large to be a whole number in "
                        f"floating point; store integer labels as integers")
    if a.dtype.kind == "u" and len(a) and a.max() > np.iinfo(np.int64).max:
        r = int(np.argmax(a))
        raise _fail(f"{where}: {key} has label {a[r]} at row {r}; expected class labels below 2**63")
    labels = a.astype(np.int64)
    if len(labels) and labels.min() < 0:  # -1 usually marks "unlabelled": never a class
        r = int(np.argmin(labels))
        raise _fail(f"{where}: {key} has label {labels[r]} at row {r}; expected integer labels >= 0 "
                    f"(or strings)")
    return labels


def is_multi_hot(y):
    """Whether a 0/1 label matrix (n, c) has a row with more than one 1."""
    return bool((y.sum(axis=1, dtype=np.int64) > 1).any())


def _as_classes(classes):
    """A tuple of Python ints or strs (JSON-able, in class-id order), without repeats."""
    if isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
        raise TypeError(f"classes must be a sequence of class labels, got {type(classes).__name__}")
    out = tuple(c.item() if isinstance(c, np.generic) else c for c in classes)
    if not all(isinstance(c, str) or (isinstance(c, int) and not isinstance(c, bool)) for c in out):
        raise TypeError(f"classes must be Python ints or strs, got {sorted({type(c).__name__ for c in out})}")
    if len(set(out)) != len(out):
        raise ValueError("classes must not repeat a label")
    return out


def _kind(raw):
    return "strings" if raw.dtype.kind == "U" else "integers"


def _listing(values, limit=5):
    """"'cat', 'yak'" or "5, 7, ...": labels as the user wrote them (repr of each)."""
    values = [v.item() if isinstance(v, np.generic) else v for v in values]
    return ", ".join(repr(v) for v in values[:limit]) + (", ..." if len(values) > limit else "")


def _show(values):
    """'class 5' or "classes 'cat', 'yak' (2 in all)"."""
    if len(values) == 1:
        return f"class {_listing(values)}"
    return f"classes {_listing(values)} ({len(values)} in all)"


def _holds(key):
    return "hold" if key.endswith("labels") else "holds"  # "test labels hold", "label_test holds"


def encode_labels(raw, classes, *, where="encode_labels"):
    """Class ids (n,) int64 of labels ``raw`` (n,) under ``classes`` (the tuple a
    dataset or a saved run carries): raw[i] == classes[ids[i]]. A label that is not in
    ``classes`` (e.g. a class the model never saw) is an InputError naming it.
    Multi-hot rows (n, c') give a label matrix (n, len(classes)) uint8 whose column j is
    the raw column classes[j] (multi-label classes are column indices); a 1 in a column
    that ``classes`` lacks is an InputError naming it."""
    raw = label_values(raw, where, "labels")
    classes = _as_classes(classes)
    if raw.ndim == 2:
        return _encode_columns(raw, classes, where)
    lookup = {c: i for i, c in enumerate(classes)}
    ids = np.array([lookup.get(v, -1) for v in raw.tolist()], dtype=np.int64)
    unseen = ids < 0
    if unseen.any():
        r = int(np.flatnonzero(unseen)[0])
        raise _fail(f"{where}: {int(unseen.sum())} labels are not among the {len(classes)} classes "
                    f"({_listing(classes, 8)}); the first is {raw[r].item()!r} at row {r}")
    return ids


def _encode_columns(raw, classes, where):
    """encode_labels for a 0/1 label matrix raw (n, c'): the columns ``classes`` of it."""
    if not all(isinstance(c, int) for c in classes):
        raise _fail(f"{where}: multi-hot label rows need classes that are column indices (integers), got "
                    f"{_listing(classes, 8)}")
    cols = np.array(classes, dtype=np.int64)
    inside = cols < raw.shape[1]
    others = np.ones(raw.shape[1], dtype=bool)
    others[cols[inside]] = False
    stray = raw[:, others].any(axis=0)
    if stray.any():
        col = int(np.flatnonzero(others)[np.flatnonzero(stray)[0]])
        r = int(np.flatnonzero(raw[:, col])[0])
        raise _fail(f"{where}: label column {col} (first at row {r}) is not among the {len(classes)} classes "
                    f"({_listing(classes, 8)})")
    ids = np.zeros((len(raw), len(classes)), dtype=np.uint8)
    ids[:, inside] = raw[:, cols[inside]]
    return ids


# ---- checking splits ------------------------------------------------------------------

def check_arrays(img, txt, labels, *, where, keys=("img", "txt", "labels"), keep_matrix=False):
    """One split's features (read-only float32 copies) and raw labels (int64 or str, or
    a 0/1 uint8 label matrix for multi-hot rows, and with keep_matrix=True for one-hot
    rows too: see label_values), checked, with equal counts: returns (img (n, d_img),
    txt (n, d_txt), raw (n,) or (n, c))."""
    kimg, ktxt, klab = keys
    x_img = _as_features(img, where, kimg)
    x_txt = _as_features(txt, where, ktxt)
    raw = label_values(labels, where, klab, n_rows=len(x_img), keep_matrix=keep_matrix)
    if not len(x_img) == len(x_txt) == len(raw):
        raise _fail(f"{where}: counts differ within a split: {kimg} has {len(x_img)} rows, {ktxt} has "
                    f"{len(x_txt)}, {klab} has {len(raw)} labels; expected one of each per pair")
    return x_img, x_txt, raw


def make_split(img, txt, labels, *, n_classes=None, where="train", keys=("img", "txt", "labels")):
    """Check one split whose labels already are class ids; return a ``Split`` of read-only copies.

    img: (n, d_img) and txt: (n, d_txt), any real dtype (become float32, C-contiguous);
    labels: (n,) or (n, 1) integers 0..c-1, one-hot (n, c), or multi-hot (n, c) 0/1
    rows (kept as a label matrix). ``where`` (e.g. the file) and ``keys`` (the arrays'
    names in it) go into messages. With ``n_classes``, labels must also be below it (a
    label matrix must have n_classes columns). (Labels as users have them:
    ``build_dataset``.)
    """
    x_img, x_txt, y = check_arrays(img, txt, labels, where=where, keys=keys)
    if y.ndim == 2:
        if n_classes is not None and y.shape[1] != n_classes:
            raise _fail(f"{where}: {keys[2]} has {y.shape[1]} label columns; expected {n_classes}")
        return Split(x_img, x_txt, _frozen(y))
    if y.dtype.kind == "U":
        raise _fail(f"{where}: {keys[2]} holds strings; make_split takes class ids 0..c-1 (map labels "
                    f"with encode_labels, or build the dataset with PairedDataset.from_arrays)")
    if n_classes is not None and y.max() >= n_classes:
        r = int(np.argmax(y))
        raise _fail(f"{where}: {keys[2]} has label {y[r]} at row {r}; expected labels 0..{n_classes - 1}")
    return Split(x_img, x_txt, _frozen(y))


def build_dataset(parts, *, where, name, val_fraction, rng, train_name=None):
    """A checked ``PairedDataset`` from raw arrays, the one path of files and arrays alike.

    parts: {"train": (img, txt, labels, keys)[, "val": ...][, "test": ...]}, with keys
    the three arrays' names for messages (e.g. ("img_train", "txt_train",
    "label_train")). ``train_name`` names train in "a class that <train> lacks"
    (default: train's label key). Without "val", a stratified ``val_fraction`` of train
    becomes validation, chosen by ``rng`` (its only use).
    The data is multi-label when a 0/1 label matrix of some split has a row with more
    than one 1; otherwise 0/1 matrices are one-hot and become class ids (as they always did).
    """
    checked = {s: check_arrays(*parts[s][:3], where=where, keys=parts[s][3], keep_matrix=True)
               for s in SPLITS if s in parts}
    keys = {s: parts[s][3] for s in checked}
    tr_img, tr_txt, tr_raw = checked["train"]
    for split, arrays in checked.items():
        for i, d_tr in enumerate((tr_img.shape[1], tr_txt.shape[1])):
            if arrays[i].shape[1] != d_tr:
                raise _fail(f"{where}: {keys[split][i]} has {arrays[i].shape[1]} columns but "
                            f"{keys['train'][i]} has {d_tr}; every split needs the same feature sizes")
    k_tr = keys["train"][2]
    if any(raw.ndim == 2 and is_multi_hot(raw) for _, _, raw in checked.values()):
        return _build_multilabel(checked, keys, where=where, name=name, val_fraction=val_fraction, rng=rng,
                                 train_name=train_name)
    # single-label: one-hot rows are the class of their 1 (label_values without keep_matrix)
    checked = {s: (x_img, x_txt, np.argmax(raw, axis=1).astype(np.int64) if raw.ndim == 2 else raw)
               for s, (x_img, x_txt, raw) in checked.items()}
    tr_raw = checked["train"][2]
    classes = np.unique(tr_raw)  # sorted: ids 0..c-1 in the order of the training labels
    if len(classes) < 2:
        raise _fail(f"{where}: {k_tr} {_holds(k_tr)} only {len(classes)} class; training needs at least "
                    f"2 classes")
    splits = {}
    for split, (x_img, x_txt, raw) in checked.items():
        key = keys[split][2]
        if _kind(raw) != _kind(tr_raw):
            raise _fail(f"{where}: {key} {_holds(key)} {_kind(raw)} but {k_tr} {_holds(k_tr)} "
                        f"{_kind(tr_raw)}; every split needs the same kind of label")
        ids = np.searchsorted(classes, raw)
        unseen = classes[np.minimum(ids, len(classes) - 1)] != raw
        if unseen.any():
            raise _fail(f"{where}: {key} {_holds(key)} {_show(np.unique(raw[unseen]))} that "
                        f"{train_name or k_tr} lacks; every class must appear in the training split")
        splits[split] = Split(x_img, x_txt, _frozen(ids.astype(np.int64)))
    classes = tuple(c.item() for c in classes)
    test = splits.get("test")
    if "val" in splits:
        return PairedDataset(splits["train"], splits["val"], test, len(classes), name, False, classes)
    keep, val = stratified_split(splits["train"].labels, val_fraction, rng)
    if len(val) == 0:
        raise _fail(f"{name}: val_fraction={val_fraction} leaves no validation pairs: every class has a "
                    f"single training pair; supply a validation split")
    train = splits["train"]
    return PairedDataset(train.subset(keep), train.subset(val), test, len(classes), name, True, classes)


def _build_multilabel(checked, keys, *, where, name, val_fraction, rng, train_name):
    """build_dataset for multi-label data: every split a 0/1 label matrix with the same
    columns; the label columns that some training row holds become the classes."""
    k_tr = keys["train"][2]
    n_cols = checked["train"][2].shape[1] if checked["train"][2].ndim == 2 else None
    for split, (_, _, raw) in checked.items():
        key = keys[split][2]
        if raw.ndim != 2:
            multi = next(keys[s][2] for s, (_, _, r) in checked.items() if r.ndim == 2 and is_multi_hot(r))
            raise _fail(f"{where}: {key} {_holds(key)} a vector of class labels but {multi} {_holds(multi)} "
                        f"multi-hot label rows; every split of multi-label data needs 0/1 label rows (n, c)")
        if n_cols is not None and raw.shape[1] != n_cols:
            raise _fail(f"{where}: {key} has {raw.shape[1]} label columns but {k_tr} has {n_cols}; every "
                        f"split needs the same label columns")
    present = checked["train"][2].any(axis=0)   # the label columns training teaches
    if present.sum() < 2:
        raise _fail(f"{where}: {k_tr} {_holds(k_tr)} only {int(present.sum())} label; training needs at least "
                    f"2 labels")
    splits = {}
    for split, (x_img, x_txt, raw) in checked.items():
        unseen = raw[:, ~present].any(axis=0)
        if unseen.any():
            cols = np.flatnonzero(~present)[unseen]
            raise _fail(f"{where}: {keys[split][2]} {_holds(keys[split][2])} label "
                        f"{'column' if len(cols) == 1 else 'columns'} {_listing(cols)} that "
                        f"{train_name or k_tr} lacks; every label must appear in the training split")
        splits[split] = Split(x_img, x_txt, _frozen(np.ascontiguousarray(raw[:, present])))
    classes = tuple(int(c) for c in np.flatnonzero(present))
    test = splits.get("test")
    if "val" in splits:
        return PairedDataset(splits["train"], splits["val"], test, len(classes), name, False, classes)
    keep, val = stratified_split(splits["train"].labels, val_fraction, rng)
    if len(val) == 0:
        raise _fail(f"{name}: val_fraction={val_fraction} leaves no validation pairs: the training split is "
                    f"too small for it; supply a validation split")
    train = splits["train"]
    return PairedDataset(train.subset(keep), train.subset(val), test, len(classes), name, True, classes)


# ---- validation split ---------------------------------------------------------------

def stratified_split(labels, fraction, rng):
    """Split indices 0..n-1 into (keep_idx, val_idx), both sorted, class by class.

    labels: (n,) class ids >= 0. Each class with m items sends round(fraction * m) of
    them (at random, from ``rng``) to the validation part, but at least 1 and at most
    m - 1 when m >= 2, so both parts see every such class; a class with a single item
    stays in the kept part. A 0/1 label matrix (n, c) (multi-label data) is split by
    ``iterative_stratified_split``.
    """
    labels = np.asarray(labels)
    if not 0 < fraction < 1:
        raise _fail(f"val_fraction must be strictly between 0 and 1, got {fraction}")
    if labels.ndim == 2:
        return iterative_stratified_split(labels, fraction, rng)
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or (len(labels) and labels.min() < 0):
        raise _fail("stratified_split: labels must be a 1-D array of non-negative integers")
    n = len(labels)
    perm = rng.permutation(n)
    order = perm[np.argsort(labels[perm], kind="stable")]  # grouped by class, shuffled within each
    grouped = labels[order]
    counts = np.bincount(labels)
    n_val = np.where(counts >= 2, np.clip(np.floor(fraction * counts + 0.5), 1, counts - 1), 0)
    rank = np.arange(n) - (np.cumsum(counts) - counts)[grouped]  # position within its class
    is_val = rank < n_val[grouped]
    return np.sort(order[~is_val]), np.sort(order[is_val])


def iterative_stratified_split(labels, fraction, rng):
    """Split the rows of a 0/1 label matrix (n, c) into (keep_idx, val_idx), both sorted,
    so that every label has about ``fraction`` of its pairs in validation.

    A pair carries several labels, so its labels cannot each be stratified on their own.
    This is iterative stratification (Sechidis, Tsoumakas and Vlahavas, ECML PKDD 2011)
    for two parts, vectorised over pairs:

      order the pairs at random (``rng``, its only use);
      while a pair is unassigned:
          take the label l held by the fewest unassigned pairs (ties: the lower column);
          of its m unassigned pairs, send the first k (in the random order) to validation
          and the rest to the kept part, with
              k = clip(round(fraction * n_l - v_l), 0, m)
          where n_l is the label's number of pairs and v_l how many of them validation
          already holds (pairs assigned for rarer labels before).

    Sechidis et al. assign the m pairs one at a time, each to the part whose remaining
    demand for label l is largest; for two parts, whose demands for l add up to m, that
    greedy sends exactly round(fraction n_l - v_l) of them to validation (up to how a
    tie at .5 is broken), so k is its closed form, and which k pairs go is random either
    way. Rare labels come first because they have the least room: a rare label's pairs
    are placed while both parts can still take them. One pass per label; each pass reads
    one column, so the cost is O(n c). Validation holds about fraction * n pairs (not
    exactly: a pair counts for all of its labels). A label with few pairs may get none in
    validation (round(0.1 * 3) = 0), and one whose pairs all went to validation for
    rarer labels' sake is missing from the kept part (rare; the model still has a
    column for it).
    """
    y = np.asarray(labels)
    if y.ndim != 2 or y.dtype.kind not in "biu":
        raise _fail("iterative_stratified_split: labels must be a 0/1 integer or boolean matrix (n, c)")
    n = len(y)
    order = rng.permutation(n)
    yo = np.asarray(y[order], dtype=bool)                 # (n, c) rows in the random order
    unassigned = np.ones(n, dtype=bool)
    to_val = np.zeros(n, dtype=bool)
    remaining = yo.sum(axis=0, dtype=np.int64)            # unassigned pairs holding each label
    wanted = fraction * remaining                         # fraction * n_l
    in_val = np.zeros(y.shape[1], dtype=np.int64)         # v_l
    while remaining.any():
        label = int(np.argmin(np.where(remaining > 0, remaining, np.iinfo(np.int64).max)))
        pairs = np.flatnonzero(yo[:, label] & unassigned)  # its unassigned pairs, in random order
        k = int(np.clip(np.floor(wanted[label] - in_val[label] + 0.5), 0, len(pairs)))
        to_val[pairs[:k]] = True
        unassigned[pairs] = False
        remaining -= yo[pairs].sum(axis=0, dtype=np.int64)
        in_val += yo[pairs[:k]].sum(axis=0, dtype=np.int64)
    return np.sort(order[~to_val]), np.sort(order[to_val])


def check_seed_and_fraction(seed, val_fraction):
    """seed: an integer >= 0; val_fraction: a number strictly between 0 and 1."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise _fail(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(val_fraction, (int, float, np.floating)) or not 0 < val_fraction < 1:
        raise _fail(f"val_fraction must be strictly between 0 and 1, got {val_fraction!r}")
