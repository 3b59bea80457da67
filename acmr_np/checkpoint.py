"""Files that hold a trained model or a training run: the one module that knows their layout.

Both are uncompressed ``.npz`` archives (exact, fast to write, no pickles) with a JSON
string ``meta`` that says what the file is and which format version wrote it:

- a model file (``save_model``): meta {"format": "acmr_np.model", "version", "model":
  the ACMRConfig, "sizes": {d_img, d_txt, n_classes}, "classes"}, arrays "model/<name>"
  (ACMR.state_dict(): every parameter and the input standardisation).
- a run checkpoint (``save_run``, what ``python -m acmr_np.train`` writes after every
  epoch): meta adds "train" (the TrainConfig), "epoch", "history", "seconds", "rng"
  (the generator's state), "data" (the data's fingerprint) and "source" (where the data
  came from); arrays "last/..." (trainer.Trainer.state_dict(): the model, both
  optimisers and the step count, what --resume continues from) and "best/<name>" (the
  best epoch's model, what --eval-only and load_model use), left out when the best epoch
  is the last one ("best_is_last").

A run checkpoint's meta may also hold "start_loss" (the loss of the run's first step, the
reference of the divergence guard in training.Training) and "changes" (what each
``--resume`` changed: a list of {"after_epoch", and "epochs" / "lr" / "backend": [old,
new]}); files without them are read as before.

Everything read is checked before it is used: every array's declared shape against the
bytes stored for it (before any is loaded: a damaged header cannot ask for terabytes),
the format and version, every field of meta with its type (the history row by row, the
random generator's state, the epoch against the run's length and its history), the
model the settings and sizes describe against the arrays there are, and every array's
dtype (floating point; step counts integer) and values (finite). A file that fails is
an InputError naming the file and the problem.
"""
import json
import math
import os

import numpy

from .backend import get_backend
from .config import ACMRConfig, TrainConfig
from .errors import InputError
from .files import save_npz
from .model import ACMR
from .training import TERMS

VERSION = 2          # version 1: the unversioned files of acmr_np 0.1, which are refused
MODEL, RUN = "acmr_np.model", "acmr_np.run"
CHECKPOINT = "checkpoint.npz"


def _sizes(model):
    return {"d_img": model.d_img, "d_txt": model.d_txt, "n_classes": model.n_classes}


def _prefixed(prefix, arrays):
    return {f"{prefix}/{k}": numpy.asarray(v) for k, v in arrays.items()}


def _under(arrays, prefix):
    """The arrays whose names start with ``prefix/``, without it."""
    return {k[len(prefix) + 1:]: v for k, v in arrays.items() if k.startswith(prefix + "/")}


def _write(path, arrays, meta):
    save_npz(path, {**arrays, "meta": numpy.array(json.dumps(meta))})


# ---- writing --------------------------------------------------------------------------

def save_model(path, model, classes=None):
    """Write ``model`` (an ACMR) to ``path`` (.npz), atomically; ``load_model`` reads it.
    classes: optional class names or original label values, saved with it."""
    if not isinstance(model, ACMR):
        raise TypeError(f"save_model: expected an ACMR model, got {type(model).__name__}")
    meta = {"format": MODEL, "version": VERSION, "model": model.config.to_dict(), "sizes": _sizes(model),
            "classes": None if classes is None else list(classes)}
    _write(path, _prefixed("model", model.state_dict()), meta)
    return os.fspath(path)


def save_run(path, training, source=None):
    """Write a training run's checkpoint (see the module doc) atomically to ``path``."""
    arrays = _prefixed("last", {k: v for k, v in training.trainer.state_dict().items()})
    best_is_last = training.best_epoch == training.epoch
    if not best_is_last:
        arrays.update(_prefixed("best", training.best_state))
    meta = {"format": RUN, "version": VERSION, "model": training.config.to_dict(),
            "train": training.train.to_dict(), "sizes": _sizes(training.model),
            "classes": getattr(training.data, "classes", None),
            "epoch": training.epoch, "history": list(training.history), "seconds": training.seconds,
            "rng": training.rng.bit_generator.state, "data": training.data.fingerprint(),
            "source": source or {}, "best_is_last": best_is_last,
            "start_loss": training.start_loss, "changes": list(training.changes)}
    _write(path, arrays, meta)


# ---- reading and checking ---------------------------------------------------------------

_META_TYPES = {  # field: (type(s), whether a model file has it too)
    "format": (str, True), "version": (int, True), "model": (dict, True), "sizes": (dict, True),
    "classes": ((list, type(None)), True), "train": (dict, False), "epoch": (int, False),
    "history": (list, False), "seconds": ((int, float), False), "rng": (dict, False),
    "data": (dict, False), "source": (dict, False), "best_is_last": (bool, False),
}
_OPTIONAL = {"start_loss": (int, float, type(None)), "changes": list}  # run checkpoints, added in 0.2
SIZE_SLACK = 1 << 20  # numbers a described model may have beyond twice the file's before it is refused
CHANGE_KEYS = {"after_epoch", "epochs", "lr", "backend"}  # what a --resume may change (train.py)
ROW_KEYS = ("epoch", *TERMS, "lam", "val_map", "seconds")  # what every row of a run's history holds


def _bad(path, why):
    return InputError(f"{path}: {why}")


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_headers(path, z):
    """Every member of the archive is an .npy array whose declared shape and dtype fit
    the bytes stored for it; checked from the headers alone, before anything is loaded."""
    for info in z.zip.infolist():
        name = info.filename
        if not name.endswith(".npy"):
            raise _bad(path, f"holds {name!r}, which is not an array: not an acmr_np file")
        with z.zip.open(info) as f:
            version = numpy.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = numpy.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = numpy.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"array {name[:-4]} has an .npy header of version {version}")
            stored = info.file_size - f.tell()
        if dtype.hasobject:
            raise _bad(path, f"array {name[:-4]} holds Python objects (dtype {dtype}); an acmr_np file holds "
                             f"numbers only")
        declared = math.prod(shape) * dtype.itemsize
        if declared != stored:
            raise _bad(path, f"array {name[:-4]} declares shape {shape} of {dtype} ({declared:,} bytes) but "
                             f"{stored:,} bytes are stored: the file is damaged")


def _check_history(path, meta, train):
    history, epoch = meta["history"], meta["epoch"]
    if not 1 <= epoch <= train.epochs or len(history) != epoch:
        raise _bad(path, f"its meta record says epoch {epoch} of a {train.epochs}-epoch run with "
                         f"{len(history)} rows of history; a checkpoint is written after epoch 1 to "
                         f"{train.epochs}, with one row per epoch")
    for i, row in enumerate(history):
        if not isinstance(row, dict):
            raise _bad(path, f"row {i + 1} of its history is a {type(row).__name__}, not a record")
        missing = [k for k in ROW_KEYS if k not in row]
        mistyped = sorted(k for k, v in row.items() if not _number(v))
        if missing or mistyped:
            raise _bad(path, f"row {i + 1} of its history has " + "; ".join(
                part for part in (missing and f"no {', '.join(missing)}",
                                  mistyped and f"a mistyped or non-finite {', '.join(mistyped)}") if part))
        if row["epoch"] != i + 1:
            raise _bad(path, f"row {i + 1} of its history is for epoch {row['epoch']!r}")
    if not _number(meta["seconds"]) or meta["seconds"] < 0:
        raise _bad(path, f"its meta record has a bad seconds {meta['seconds']!r}")


def _check_run_meta(path, meta):
    config, train = run_settings(meta, path)
    _check_history(path, meta, train)
    try:
        numpy.random.PCG64().state = meta["rng"]   # the state itself is set in restore_run
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise _bad(path, f"its random generator state is not a PCG64 state ({type(exc).__name__}: {exc})") from None
    for key in ("data", "train", "val", "test"):  # where the data came from (runs.SOURCE_KEYS)
        data = meta["source"].get(key)
        if data is not None and not isinstance(data, str):
            raise _bad(path, f"its meta record names its {'data' if key == 'data' else key + ' file'} {data!r}; "
                             f"expected a path or null")
    keys = meta["source"].get("keys")
    if keys is not None and not (isinstance(keys, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                                 for k, v in keys.items())):
        raise _bad(path, f"its meta record has malformed data keys {keys!r}")
    for key, types in _OPTIONAL.items():
        if key in meta and (isinstance(meta[key], bool) or not isinstance(meta[key], types)):
            raise _bad(path, f"its meta record has a mistyped field {key!r}")
    if meta.get("start_loss") is not None and not (_number(meta["start_loss"]) and meta["start_loss"] >= 0):
        raise _bad(path, f"its meta record has a bad start_loss {meta['start_loss']!r}")
    for c in meta.get("changes", []):
        if not (isinstance(c, dict) and isinstance(c.get("after_epoch"), int) and set(c) <= CHANGE_KEYS
                and all(isinstance(v, list) and len(v) == 2 for k, v in c.items() if k != "after_epoch")):
            raise _bad(path, f"its meta record has a malformed change {c!r}")
    return config


def _parameter_count(config, sizes):
    """How many numbers the model a file describes holds (parameters and input
    standardisation), worked out without building it."""
    def mlp(dims):
        return sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))
    c = config
    return (mlp([sizes["d_img"], *c.img_hidden, c.dim]) + mlp([sizes["d_txt"], *c.txt_hidden, c.dim])
            + mlp([c.dim, sizes["n_classes"]]) + mlp([c.dim, c.disc_hidden, 2])
            + 2 * sizes["d_img"] + 2 * sizes["d_txt"])


def _check_model_size(path, meta, arrays, config):
    """The model the settings and sizes describe is not much larger than each saved model
    in the file: building it can never ask for far more memory than the file holds (a
    model that fits exactly is checked array by array when it is loaded)."""
    want = _parameter_count(config, meta["sizes"])
    if meta["format"] == MODEL:
        saved = {"model": _under(arrays, "model")}
    else:
        saved = {"last/model": _under(_under(arrays, "last"), "model")}
        if not meta["best_is_last"]:
            saved["best"] = _under(arrays, "best")
    for prefix, state in saved.items():
        have = sum(int(a.size) for a in state.values())
        if want > 2 * have + SIZE_SLACK:
            raise _bad(path, f"its settings and sizes describe a model of {want:,} numbers, but its {prefix}/ "
                             f"arrays hold {have:,}: the file is damaged or does not belong together")


def read(path):
    """Open a model file or a run checkpoint: returns (meta, arrays), both checked for
    their layout (not yet against a model: see ``model_from`` and ``restore_run``)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, CHECKPOINT)
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such model or checkpoint file")
    try:
        with numpy.load(path, allow_pickle=False) as z:
            if not isinstance(z, numpy.lib.npyio.NpzFile):
                raise ValueError("a single .npy array, not an .npz archive")
            _check_headers(path, z)
            arrays = {k: z[k] for k in z.files}   # read everything now: damage shows up here
    except InputError:
        raise
    except (OSError, ValueError, EOFError, MemoryError, KeyError) as exc:
        raise _bad(path, f"not a readable acmr_np file ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # zipfile.BadZipFile (a flipped byte: CRC), zlib.error, ...
        raise _bad(path, f"damaged or not an acmr_np file ({type(exc).__name__}: {exc})") from None
    if "meta" not in arrays or arrays["meta"].dtype.kind != "U" or arrays["meta"].ndim != 0:
        raise _bad(path, "not an acmr_np model or checkpoint (no meta record)")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except (ValueError, RecursionError) as exc:
        raise _bad(path, f"its meta record is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") not in (MODEL, RUN):
        raise _bad(path, "not an acmr_np model or checkpoint (no format in its meta record)")
    if meta.get("version") != VERSION:
        raise _bad(path, f"written by another version of acmr_np (file format version "
                         f"{meta.get('version', 1)!r}, this one reads {VERSION}); retrain it, or use the "
                         f"acmr_np version that wrote it")
    for key, (types, in_model) in _META_TYPES.items():
        if meta["format"] == MODEL and not in_model:
            continue
        if key not in meta or isinstance(meta[key], bool) and types is not bool \
                or not isinstance(meta[key], types):
            raise _bad(path, f"its meta record has {'no' if key not in meta else 'a mistyped'} field {key!r}")
    for key in ("d_img", "d_txt", "n_classes"):
        v = meta["sizes"].get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < (2 if key == "n_classes" else 1):
            raise _bad(path, f"its meta record has a bad size {key}={v!r}")
    for name, a in arrays.items():
        if name.endswith(("/t", "step_count")):
            if a.ndim != 0 or a.dtype.kind not in "iu" or int(a) < 0:
                raise _bad(path, f"array {name} must be a non-negative integer, got {a.dtype} {a.shape}")
        elif a.dtype.kind != "f":
            raise _bad(path, f"array {name} holds {a.dtype} values; expected floating point")
        elif not numpy.isfinite(a).all():
            raise _bad(path, f"array {name} holds NaN or infinite values")
    config = _check_run_meta(path, meta) if meta["format"] == RUN else _config(meta, path)
    _check_model_size(path, meta, arrays, config)
    return meta, arrays


def _config(meta, path):
    try:
        return ACMRConfig.from_dict(meta["model"], where="model settings")
    except (TypeError, ValueError) as exc:
        raise _bad(path, str(exc)) from None


def model_from(meta, arrays, path, backend="numpy"):
    """The model a file holds (a run: its best epoch) on ``backend``, checked."""
    s = meta["sizes"]
    try:
        model = ACMR(s["d_img"], s["d_txt"], s["n_classes"], _config(meta, path),
                     rng=numpy.random.default_rng(0), xp=get_backend(backend))
    except (ValueError, TypeError) as exc:
        raise _bad(path, str(exc)) from None
    if meta["format"] == MODEL:
        state = _under(arrays, "model")
    else:
        state = _under(_under(arrays, "last"), "model") if meta["best_is_last"] else _under(arrays, "best")
    try:
        model.load_state_dict(state)
    except ValueError as exc:
        raise _bad(path, str(exc)) from None
    return model


def load_model(path, backend="numpy"):
    """A trained ACMR from a model file (save_model), a run checkpoint or a run folder
    (its best epoch), with its parameters and input standardisation, on ``backend``."""
    meta, arrays = read(path)
    return model_from(meta, arrays, path, backend)


def run_settings(meta, path):
    """(ACMRConfig, TrainConfig) of a run checkpoint, checked."""
    if meta["format"] != RUN:
        raise _bad(path, "is a model file, not a training run's checkpoint")
    try:
        return _config(meta, path), TrainConfig.from_dict(meta["train"], where="training settings")
    except (TypeError, ValueError) as exc:
        raise _bad(path, str(exc)) from None


def restore_run(training, meta, arrays, path):
    """Continue ``training`` (built with the run's settings and data) from a checkpoint
    read by ``read``: the last epoch's full state, the best epoch, the history and the
    random generator. Everything is checked against the model and the run before
    anything is loaded."""
    last = _under(arrays, "last")
    try:
        best = None if meta["best_is_last"] else _under(arrays, "best")
        if best is not None:
            training.model.check_state_dict(best)
        steps = int(last.get("step_count", -1))
        if steps != meta["epoch"] * training.steps_per_epoch:
            raise ValueError(f"its step count {steps} is not epoch {meta['epoch']} x "
                             f"{training.steps_per_epoch} steps per epoch")
        training.trainer.load_state_dict(last)
        training.rng.bit_generator.state = meta["rng"]
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise _bad(path, f"does not fit this run: {exc}") from None
    training.epoch, training.seconds = meta["epoch"], meta["seconds"]
    training.history[:] = meta["history"]
    training.best_state = training.model.state_dict() if best is None else best
    training.changes = list(meta.get("changes", []))
    training.start_loss = meta.get("start_loss")
    if training.start_loss is None:  # written before start_loss was kept: the first epoch's
        training.start_loss = training.objective(training.history[0])
