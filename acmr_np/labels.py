"""Labels as users have them, mapped to class ids: one idea, used by every loader.

Integers >= 0 (0..c-1, 1..c, or ids such as 100, 110, ...), strings ("cat", "dog"),
one-hot rows (class = column), or multi-hot rows (n, c) of 0/1 with any number of ones
per row, at least one (multi-label data). ``label_values`` checks a label array and says
which it is; the distinct TRAINING labels in sorted order become the class ids 0..c-1
(datasets.build_dataset), so labels that already are 0..c-1 keep their values;
``encode_labels`` maps any split's labels (or a new held-out file's) to those ids, naming
a label it has not seen. Bad input raises ``InputError`` with a one-line message.
"""
import numbers

import numpy as np
import scipy.sparse

from .errors import input_error as _fail


def dense(a):
    """A NumPy array of ``a``; MATLAB files often store bag-of-words features (and label
    matrices) as sparse matrices."""
    return a.toarray() if scipy.sparse.issparse(a) else np.asarray(a)


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
    a = dense(labels)
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


def as_classes(classes):
    """A tuple of Python ints or strs (JSON-able, in class-id order), without repeats."""
    if isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
        raise TypeError(f"classes must be a sequence of class labels, got {type(classes).__name__}")
    out = tuple(c.item() if isinstance(c, np.generic) else c for c in classes)
    if not all(isinstance(c, str) or (isinstance(c, int) and not isinstance(c, bool)) for c in out):
        raise TypeError(f"classes must be Python ints or strs, got {sorted({type(c).__name__ for c in out})}")
    if len(set(out)) != len(out):
        raise ValueError("classes must not repeat a label")
    return out


def kind_of(raw):
    return "strings" if raw.dtype.kind == "U" else "integers"


def listing(values, limit=5):
    """"'cat', 'yak'" or "5, 7, ...": labels as the user wrote them (repr of each)."""
    values = [v.item() if isinstance(v, np.generic) else v for v in values]
    return ", ".join(repr(v) for v in values[:limit]) + (", ..." if len(values) > limit else "")


def show_classes(values):
    """'class 5' or "classes 'cat', 'yak' (2 in all)"."""
    if len(values) == 1:
        return f"class {listing(values)}"
    return f"classes {listing(values)} ({len(values)} in all)"


def verb_for(key):
    return "hold" if key.endswith("labels") else "holds"  # "test labels hold", "label_test holds"


def encode_labels(raw, classes, *, where="encode_labels"):
    """Class ids (n,) int64 of labels ``raw`` (n,) under ``classes`` (the tuple a
    dataset or a saved run carries): raw[i] == classes[ids[i]]. A label that is not in
    ``classes`` (e.g. a class the model never saw) is an InputError naming it.
    Multi-hot rows (n, c') give a label matrix (n, len(classes)) uint8 whose column j is
    the raw column classes[j] (multi-label classes are column indices); a 1 in a column
    that ``classes`` lacks is an InputError naming it."""
    raw = label_values(raw, where, "labels")
    classes = as_classes(classes)
    if raw.ndim == 2:
        return _encode_columns(raw, classes, where)
    lookup = {c: i for i, c in enumerate(classes)}
    ids = np.array([lookup.get(v, -1) for v in raw.tolist()], dtype=np.int64)
    unseen = ids < 0
    if unseen.any():
        r = int(np.flatnonzero(unseen)[0])
        raise _fail(f"{where}: {int(unseen.sum())} labels are not among the {len(classes)} classes "
                    f"({listing(classes, 8)}); the first is {raw[r].item()!r} at row {r}")
    return ids


def _encode_columns(raw, classes, where):
    """encode_labels for a 0/1 label matrix raw (n, c'): the columns ``classes`` of it."""
    if not all(isinstance(c, int) for c in classes):
        raise _fail(f"{where}: multi-hot label rows need classes that are column indices (integers), got "
                    f"{listing(classes, 8)}")
    cols = np.array(classes, dtype=np.int64)
    inside = cols < raw.shape[1]
    others = np.ones(raw.shape[1], dtype=bool)
    others[cols[inside]] = False
    stray = raw[:, others].any(axis=0)
    if stray.any():
        col = int(np.flatnonzero(others)[np.flatnonzero(stray)[0]])
        r = int(np.flatnonzero(raw[:, col])[0])
        raise _fail(f"{where}: label column {col} (first at row {r}) is not among the {len(classes)} classes "
                    f"({listing(classes, 8)})")
    ids = np.zeros((len(raw), len(classes)), dtype=np.uint8)
    ids[:, inside] = raw[:, cols[inside]]
    return ids
