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

Everything read is checked before it is used: the format and version, every field of
meta with its type, and every array's name, shape, dtype (floating point) and values
(finite). A file that fails is an InputError naming the file and the problem.
"""
import json
import os

import numpy

from .backend import get_backend
from .config import ACMRConfig, TrainConfig
from .errors import InputError
from .files import save_npz
from .model import ACMR

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
            "source": source or {}, "best_is_last": best_is_last}
    _write(path, arrays, meta)


# ---- reading and checking ---------------------------------------------------------------

_META_TYPES = {  # field: (type(s), whether a model file has it too)
    "format": (str, True), "version": (int, True), "model": (dict, True), "sizes": (dict, True),
    "classes": ((list, type(None)), True), "train": (dict, False), "epoch": (int, False),
    "history": (list, False), "seconds": ((int, float), False), "rng": (dict, False),
    "data": (dict, False), "source": (dict, False), "best_is_last": (bool, False),
}


def _bad(path, why):
    return InputError(f"{path}: {why}")


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
            arrays = {k: z[k] for k in z.files}   # read everything now: damage shows up here
    except (OSError, ValueError, EOFError, MemoryError, KeyError) as exc:
        raise _bad(path, f"not a readable acmr_np file ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # zipfile.BadZipFile (a flipped byte: CRC), zlib.error, ...
        raise _bad(path, f"damaged or not an acmr_np file ({type(exc).__name__}: {exc})") from None
    if "meta" not in arrays or arrays["meta"].dtype.kind != "U" or arrays["meta"].ndim != 0:
        raise _bad(path, "not an acmr_np model or checkpoint (no meta record)")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except ValueError as exc:
        raise _bad(path, f"its meta record is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") not in (MODEL, RUN):
        raise _bad(path, "not an acmr_np model or checkpoint (no format in its meta record)")
    if meta.get("version") != VERSION:
        raise _bad(path, f"written by another version of acmr_np (file format version "
                         f"{meta.get('version', 1)}, this one reads {VERSION}); retrain it, or use the "
                         f"acmr_np version that wrote it")
    for key, (types, in_model) in _META_TYPES.items():
        if meta["format"] == MODEL and not in_model:
            continue
        if key not in meta or isinstance(meta[key], bool) and types is not bool \
                or not isinstance(meta[key], types):
            raise _bad(path, f"its meta record has {'no' if key not in meta else 'a mistyped'} field {key!r}")
    for key in ("d_img", "d_txt", "n_classes"):
        v = meta["sizes"].get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise _bad(path, f"its meta record has a bad size {key}={v!r}")
    for name, a in arrays.items():
        if name.endswith(("/t", "step_count")):
            if a.ndim != 0 or a.dtype.kind not in "iu" or int(a) < 0:
                raise _bad(path, f"array {name} must be a non-negative integer, got {a.dtype} {a.shape}")
        elif a.dtype.kind != "f":
            raise _bad(path, f"array {name} holds {a.dtype} values; expected floating point")
        elif not numpy.isfinite(a).all():
            raise _bad(path, f"array {name} holds NaN or infinite values")
    return meta, arrays


def _config(meta, path):
    try:
        return ACMRConfig.from_dict(meta["model"], where="model settings")
    except (TypeError, ValueError) as exc:
        raise _bad(path, str(exc)) from None


def model_from(meta, arrays, path, backend="numpy"):
    """The model a file holds (a run: its best epoch) on ``backend``, checked."""
    s = meta["sizes"]
    model = ACMR(s["d_img"], s["d_txt"], s["n_classes"], _config(meta, path),
                 rng=numpy.random.default_rng(0), xp=get_backend(backend))
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
    random generator. Every array is checked against the model before any is loaded."""
    try:
        best = None if meta["best_is_last"] else _under(arrays, "best")
        if best is not None:
            training.model.check_state_dict(best)
        training.trainer.load_state_dict(_under(arrays, "last"))
        training.rng.bit_generator.state = meta["rng"]
    except (ValueError, TypeError, KeyError) as exc:
        raise _bad(path, f"does not fit this run: {exc}") from None
    training.epoch, training.seconds = meta["epoch"], meta["seconds"]
    training.history[:] = meta["history"]
    training.best_state = training.model.state_dict() if best is None else best
