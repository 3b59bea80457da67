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
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .errors import input_error as _fail
from .labels import as_classes, dense, is_multi_hot, kind_of, label_values, listing, show_classes, verb_for
from .splits import stratified_split

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
        classes = tuple(range(self.n_classes)) if self.classes is None else as_classes(self.classes)
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


def _as_features(a, where, key):
    """Check a feature matrix and return a read-only float32 C-contiguous copy (n, d)."""
    a = dense(a)
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
        raise _fail(f"{where}: {k_tr} {verb_for(k_tr)} only {len(classes)} class; training needs at least "
                    f"2 classes")
    splits = {}
    for split, (x_img, x_txt, raw) in checked.items():
        key = keys[split][2]
        if kind_of(raw) != kind_of(tr_raw):
            raise _fail(f"{where}: {key} {verb_for(key)} {kind_of(raw)} but {k_tr} {verb_for(k_tr)} "
                        f"{kind_of(tr_raw)}; every split needs the same kind of label")
        ids = np.searchsorted(classes, raw)
        unseen = classes[np.minimum(ids, len(classes) - 1)] != raw
        if unseen.any():
            raise _fail(f"{where}: {key} {verb_for(key)} {show_classes(np.unique(raw[unseen]))} that "
                        f"{train_name or k_tr} lacks; every class must appear in the training split")
        splits[split] = Split(x_img, x_txt, _frozen(ids.astype(np.int64)))
    return _assemble(splits, tuple(c.item() for c in classes), name, val_fraction, rng,
                     "every class has a single training pair")


def _build_multilabel(checked, keys, *, where, name, val_fraction, rng, train_name):
    """build_dataset for multi-label data: every split a 0/1 label matrix with the same
    columns; the label columns that some training row holds become the classes."""
    k_tr = keys["train"][2]
    n_cols = checked["train"][2].shape[1] if checked["train"][2].ndim == 2 else None
    for split, (_, _, raw) in checked.items():
        key = keys[split][2]
        if raw.ndim != 2:
            multi = next(keys[s][2] for s, (_, _, r) in checked.items() if r.ndim == 2 and is_multi_hot(r))
            raise _fail(f"{where}: {key} {verb_for(key)} a vector of class labels but {multi} {verb_for(multi)} "
                        f"multi-hot label rows; every split of multi-label data needs 0/1 label rows (n, c)")
        if n_cols is not None and raw.shape[1] != n_cols:
            raise _fail(f"{where}: {key} has {raw.shape[1]} label columns but {k_tr} has {n_cols}; every "
                        f"split needs the same label columns")
    present = checked["train"][2].any(axis=0)   # the label columns training teaches
    if present.sum() < 2:
        raise _fail(f"{where}: {k_tr} {verb_for(k_tr)} only {int(present.sum())} label; training needs at least "
                    f"2 labels")
    splits = {}
    for split, (x_img, x_txt, raw) in checked.items():
        unseen = raw[:, ~present].any(axis=0)
        if unseen.any():
            cols = np.flatnonzero(~present)[unseen]
            raise _fail(f"{where}: {keys[split][2]} {verb_for(keys[split][2])} label "
                        f"{'column' if len(cols) == 1 else 'columns'} {listing(cols)} that "
                        f"{train_name or k_tr} lacks; every label must appear in the training split")
        splits[split] = Split(x_img, x_txt, _frozen(np.ascontiguousarray(raw[:, present])))
    return _assemble(splits, tuple(int(c) for c in np.flatnonzero(present)), name, val_fraction, rng,
                     "the training split is too small for it")


def _assemble(splits, classes, name, val_fraction, rng, too_small):
    """The PairedDataset of checked splits {"train", "test"?, "val"?}: without a validation
    split, a stratified ``val_fraction`` of train becomes one (splits.stratified_split)."""
    test = splits.get("test")
    if "val" in splits:
        return PairedDataset(splits["train"], splits["val"], test, len(classes), name, False, classes)
    keep, val = stratified_split(splits["train"].labels, val_fraction, rng)
    if len(val) == 0:
        raise _fail(f"{name}: val_fraction={val_fraction} leaves no validation pairs: {too_small}; "
                    f"supply a validation split")
    train = splits["train"]
    return PairedDataset(train.subset(keep), train.subset(val), test, len(classes), name, True, classes)


def check_seed_and_fraction(seed, val_fraction):
    """seed: an integer >= 0; val_fraction: a number strictly between 0 and 1."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise _fail(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(val_fraction, (int, float, np.floating)) or not 0 < val_fraction < 1:
        raise _fail(f"val_fraction must be strictly between 0 and 1, got {val_fraction!r}")
