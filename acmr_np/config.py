"""Every setting in one place: the model's (``ACMRConfig``) and the run's (``TrainConfig``).

Both are small dataclasses that check themselves when made: a bad value is a
``ValueError`` (a wrong type a ``TypeError``) naming the field and what it accepts.
Each field carries its help text, and the command line's flags are generated from the
fields (``add_arguments`` / ``from_args``), so a setting is declared once: its name, type,
default, allowed values and help all live here. A run stores both as JSON (``to_dict``)
and reads them back with ``from_dict``, which refuses unknown or mistyped entries.
"""
import argparse
import math
from dataclasses import MISSING, asdict, dataclass, field, fields

from .backend import BACKENDS
from .triplets import STRATEGIES

TRIPLET_FORMS = ("hinge", "pull_push")
DISTANCES = ("cosine", "euclidean")
LAMBDA_SCHEDULES = ("constant", "dann")
LABEL_LOSSES = ("softmax", "sigmoid")


def _setting(default, help, choices=None, minimum=None, above=None):
    """A dataclass field with the facts the checks and the command line need."""
    meta = {"help": help, "choices": choices, "minimum": minimum, "above": above}
    if isinstance(default, tuple):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


class _Settings:
    """Checking, JSON and the command line, shared by both configurations."""

    def __post_init__(self):
        name = type(self).__name__
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if f.type == "tuple":
                if not isinstance(value, (tuple, list)) or not all(
                        isinstance(w, int) and not isinstance(w, bool) for w in value):
                    raise TypeError(f"{name}: {f.name} must be a sequence of integers, got {value!r}")
                value = tuple(value)
                object.__setattr__(self, f.name, value)
                bad = [w for w in value if w < 1]
            elif f.type == "int":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise TypeError(f"{name}: {f.name} must be an integer, got {value!r}")
                bad = [value] if meta["minimum"] is not None and value < meta["minimum"] else []
            elif f.type == "float":
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise TypeError(f"{name}: {f.name} must be a number, got {value!r}")
                value = float(value)
                object.__setattr__(self, f.name, value)
                bad = [value] if (not math.isfinite(value)
                                  or (meta["minimum"] is not None and value < meta["minimum"])
                                  or (meta["above"] is not None and not value > meta["above"])) else []
            else:  # str
                if not isinstance(value, str):
                    raise TypeError(f"{name}: {f.name} must be a string, got {value!r}")
                bad = [value] if meta["choices"] and value not in meta["choices"] else []
            if bad:
                raise ValueError(f"{name}: {f.name} {_wanted(f)}, got {getattr(self, f.name)!r}")

    def to_dict(self):
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d, where="settings"):
        """Build from a dict such as ``to_dict`` returns (e.g. read from JSON); unknown
        keys and wrong types are refused, naming them and ``where`` they came from."""
        if not isinstance(d, dict):
            raise TypeError(f"{where}: expected a JSON object of {cls.__name__} settings, got {type(d).__name__}")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"{where}: unknown {cls.__name__} setting(s) {', '.join(unknown)}")
        try:
            return cls(**d)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{where}: {exc}") from None

    @classmethod
    def add_arguments(cls, parser, title=None):
        """One flag per field, ``--field-name``, with its type, choices and help. Every
        default is None, so ``from_args`` and ``given`` can tell a flag given on the
        command line (even with the default value) from one left out."""
        group = parser.add_argument_group(title) if title else parser
        for f in fields(cls):
            meta = f.metadata
            default = f.default if f.default is not MISSING else f.default_factory()
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            kwargs = {"default": None, "help": f"{meta['help']} (default: {shown})"}
            if meta["choices"]:
                kwargs["choices"] = meta["choices"]
            kwargs["type"] = {"int": int, "float": float, "tuple": _widths, "str": str}[f.type]
            if f.type == "tuple":
                kwargs["metavar"] = "W1,W2,..."
            group.add_argument("--" + f.name.replace("_", "-"), **kwargs)

    @classmethod
    def given(cls, args):
        """{field: value} of the fields whose flags were given on the command line."""
        return {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}

    @classmethod
    def from_args(cls, args, base=None):
        """The configuration ``base`` (default: the defaults) with the given flags applied."""
        d = (base or cls()).to_dict()
        d.update(cls.given(args))
        return cls(**d)

    @classmethod
    def flag(cls, name):
        return "--" + name.replace("_", "-")


def _wanted(f):
    """What a field accepts, in words, for its error message."""
    meta = f.metadata
    if meta["choices"]:
        return f"must be one of {', '.join(meta['choices'])}"
    if f.type == "tuple":
        return "must hold positive widths"
    if meta["above"] is not None:
        return f"must be a finite number above {meta['above']:g}"
    if meta["minimum"] is not None:
        return f"must be {'an integer' if f.type == 'int' else 'a finite number'} >= {meta['minimum']:g}"
    return "must be a finite number"


def _widths(text):
    """'1024,512' -> (1024, 512); '' -> () (no hidden layer)."""
    try:
        widths = tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer widths like 256,128, got {text!r}")
    if any(w <= 0 for w in widths):
        raise argparse.ArgumentTypeError(f"layer widths must be positive, got {text!r}")
    return widths


@dataclass(frozen=True)
class ACMRConfig(_Settings):
    """The model, its objective and its optimisation (Algorithm 1). The defaults were
    chosen on validation splits, never on test (README, docs/RESULTS.md)."""
    img_hidden: "tuple" = _setting((512,), "hidden widths of the image projector, comma-separated "
                                   "(e.g. 2000 or 1024,512; '' for none)")
    txt_hidden: "tuple" = _setting((128,), "hidden widths of the text projector, comma-separated")
    dim: "int" = _setting(64, "size m of the common space", minimum=1)
    disc_hidden: "int" = _setting(50, "hidden width of the modality classifier (paper: 50)", minimum=1)
    alpha: "float" = _setting(2.0, "weight of L_imi, the triplet term (Eq. 8)", minimum=0)
    beta: "float" = _setting(1.0, "weight of L_imd, the label term (Eq. 8)", minimum=0)
    label_loss: "str" = _setting("softmax", "L_imd's cross-entropy (Eq. 2): softmax against the label vector "
                                 "(normalised to sum 1 when a pair has several labels), or sigmoid: one binary "
                                 "cross-entropy per label, summed over the labels", LABEL_LOSSES)
    l2: "float" = _setting(1e-3, "L_reg coefficient: l2 * sum ||W||_F^2 over the projectors' weights (Eq. 7)",
                           minimum=0)
    triplet: "str" = _setting("hinge", "L_imi's form: hinge max(0, mu + d(a,p) - d(a,n)) or the paper's "
                              "pull_push d(a,p) + lambda_t max(0, mu - d(a,n)) (Eqs. 4-5)", TRIPLET_FORMS)
    sampling: "str" = _setting("random", "the negative of each triplet: a random one or the hardest "
                               "(closest) in the batch", STRATEGIES)
    distance: "str" = _setting("cosine", "L_imi's squared distance between unit-length embeddings "
                               "(cosine: 2 - 2 cos) or raw ones (euclidean)", DISTANCES)
    margin: "float" = _setting(1.5, "the triplet margin mu", minimum=0)
    push_weight: "float" = _setting(1.0, "lambda_t of Eqs. 4-5 (pull_push only)", minimum=0)
    lam: "float" = _setting(0.05, "lambda, the gradient reversal scale (its final value under the dann "
                            "ramp; paper: 0.05)", minimum=0)
    lam_schedule: "str" = _setting("dann", "constant lambda, or the DANN ramp lam * (2 / (1 + exp(-10 p)) - 1) "
                                   "over training progress p", LAMBDA_SCHEDULES)
    k: "int" = _setting(5, "embedding-player steps per modality-classifier step (Algorithm 1)", minimum=1)
    lr: "float" = _setting(1e-3, "Adam learning rate of both players", above=0)
    lr_adv: "float" = _setting(0.0, "the modality classifier's learning rate (0: the same as lr)", minimum=0)

    def lam_at(self, progress):
        """lambda at training progress p in [0, 1]. The DANN ramp (Ganin & Lempitsky
        2015) starts the adversary at 0, while the embeddings are still random, and
        approaches ``lam`` smoothly."""
        if self.lam_schedule == "constant":
            return self.lam
        return self.lam * (2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)


@dataclass(frozen=True)
class TrainConfig(_Settings):
    """The run around the model: how long, in what batches, from which seed, where."""
    epochs: "int" = _setting(300, "the maximum number of passes over the training pairs (the lambda ramp "
                             "runs over all of them)", minimum=1)
    patience: "int" = _setting(50, "early stopping: stop after this many epochs without a better validation "
                               "mAP (0: never stop early)", minimum=0)
    batch_size: "int" = _setting(64, "pairs per mini-batch", minimum=2)
    seed: "int" = _setting(0, "seeds everything: initial weights, batches, triplets, the validation split "
                           "and the synthetic data", minimum=0)
    val_fraction: "float" = _setting(0.1, "part of the training pairs held out for validation when the data "
                                     "has no validation split", above=0)
    backend: "str" = _setting("numpy", "array backend: numpy (CPU) or cupy (NVIDIA GPU)", BACKENDS)

    def __post_init__(self):
        super().__post_init__()
        if not self.val_fraction < 1:
            raise ValueError(f"TrainConfig: val_fraction must be between 0 and 1, got {self.val_fraction!r}")
