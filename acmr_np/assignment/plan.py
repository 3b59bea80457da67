"""The plan: which exercises there are, what each is worth, and its hint. Data, not code.

The plan is a JSON file (``plan.json`` next to this module is the package's own; a
student copy holds one with its exercises only). A teacher copies it, changes points,
hints, weeks or estimates, and passes it to ``make --plan FILE``:

    python -m acmr_np.assignment plan my_plan.json      # a copy to edit

Each exercise has: number (what students and reports call it), key (a stable short
name), week, file and function (where it is in the package), part (forward, backward,
update or forward+backward), points, minutes (an estimate), teaches, hint, and
builds_on (keys of the exercises it uses). JSON rather than TOML: ``tomllib`` needs
Python 3.11 and the package supports 3.9.
"""
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

FORMAT = "acmr_np assignment plan"
VERSION = 1
PARTS = ("forward", "backward", "update", "forward+backward")
FIELDS = ("number", "key", "week", "file", "function", "part", "points", "minutes",
          "teaches", "hint", "builds_on")
DEFAULT = Path(__file__).resolve().parent / "plan.json"


class AssignmentError(ValueError):
    """Bad input to an assignment command: printed as one line, exit status 2."""


class PlanError(AssignmentError):
    """A plan file that cannot be used: the message names the file, the exercise and the field."""


@dataclass(frozen=True)
class Exercise:
    number: int
    key: str
    week: int
    file: str          # module inside the package, e.g. "layers.py"
    function: str      # "function" or "Class.method"
    part: str          # one of PARTS
    points: float
    minutes: int
    teaches: str
    hint: str
    builds_on: tuple   # keys

    @property
    def where(self):
        return f"{self.file}::{self.function}"

    def message(self, later=False):
        """What the stub raises: the number first (the grader and `check` read it), then the hint."""
        note = " (a later week's exercise, not this assignment's)" if later else ""
        return f"Exercise {self.number}{note}: {self.hint}"


class Plan:
    """An ordered, checked list of exercises with look-ups by number and key."""

    def __init__(self, exercises, source="the plan"):
        self.exercises = tuple(sorted(exercises, key=lambda e: e.number))
        self.source = source
        self.by_number = {e.number: e for e in self.exercises}
        self.by_key = {e.key: e for e in self.exercises}
        self._check()

    def __iter__(self):
        return iter(self.exercises)

    def __len__(self):
        return len(self.exercises)

    def __eq__(self, other):
        return isinstance(other, Plan) and self.exercises == other.exercises

    def _check(self):
        if len(self.by_number) != len(self.exercises):
            raise PlanError(f"{self.source}: two exercises have the same number")
        if len(self.by_key) != len(self.exercises):
            raise PlanError(f"{self.source}: two exercises have the same key")
        seen = set()
        for e in self.exercises:  # builds_on names other exercises of this plan, without cycles
            for k in e.builds_on:
                if k not in self.by_key or k == e.key:
                    raise PlanError(f"{self.source}: exercise {e.number} ({e.key}): builds_on names "
                                    f"{k!r}, which is not another exercise of the plan")
        for e in self.exercises:
            self._no_cycle(e, seen, ())

    def _no_cycle(self, e, done, path):
        if e.key in path:
            raise PlanError(f"{self.source}: builds_on goes round in a circle: {' -> '.join(path + (e.key,))}")
        if e.key in done:
            return
        for k in e.builds_on:
            self._no_cycle(self.by_key[k], done, path + (e.key,))
        done.add(e.key)

    def needs(self, e):
        """Every exercise ``e`` builds on, directly or through others, in number order."""
        out, todo = set(), list(e.builds_on)
        while todo:
            k = todo.pop()
            if k not in out:
                out.add(k)
                todo.extend(self.by_key[k].builds_on)
        return [x for x in self.exercises if x.key in out]

    def partner(self, e):
        """The forward exercise a backward one continues (same function, or the same
        class's ``forward``), or None."""
        if e.part != "backward":
            return None
        cls = e.function.rpartition(".")[0]
        for x in self.exercises:
            if x.part == "forward" and x.file == e.file and (
                    x.function == e.function or (cls and x.function == f"{cls}.forward")):
                return x
        return None

    def same_function(self, e):
        """The other exercises in ``e``'s function (a loss's forward and backward parts)."""
        return [x for x in self.exercises if x is not e and x.file == e.file and x.function == e.function]

    def subset(self, numbers):
        """The plan of these exercises alone (a copy's own plan.json). What they build on
        outside it stays reference code in the copy, so builds_on keeps only their own."""
        kept = [e for e in self.exercises if e.number in set(numbers)]
        keys = {e.key for e in kept}
        return Plan([replace(e, builds_on=tuple(k for k in e.builds_on if k in keys)) for e in kept], self.source)

    def to_json(self):
        return {"format": FORMAT, "version": VERSION,
                "exercises": [dict(asdict(e), builds_on=list(e.builds_on)) for e in self.exercises]}

    def dumps(self):
        """The plan as the text of a plan file (load(dumps(p)) == p)."""
        return json.dumps(self.to_json(), indent=2) + "\n"


def _field(raw, name, kind, where):
    if name not in raw:
        raise PlanError(f"{where}: the field {name!r} is missing")
    v = raw[name]
    ok = {"int": isinstance(v, int) and not isinstance(v, bool),
          "number": isinstance(v, (int, float)) and not isinstance(v, bool) and v == v,
          "str": isinstance(v, str) and v.strip() != "",
          "list": isinstance(v, list) and all(isinstance(x, str) for x in v)}[kind]
    if not ok:
        want = {"int": "a whole number", "number": "a number", "str": "a non-empty string",
                "list": "a list of exercise keys"}[kind]
        raise PlanError(f"{where}: {name} must be {want}, got {v!r}")
    return v


def from_json(obj, source="the plan"):
    """A Plan from the parsed JSON of a plan file, every field checked."""
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise PlanError(f"{source}: not a plan file (expected \"format\": \"{FORMAT}\")")
    if obj.get("version") != VERSION:
        raise PlanError(f"{source}: plan version {obj.get('version')!r}, this tool reads version {VERSION}")
    raws = obj.get("exercises")
    if not isinstance(raws, list) or not raws:
        raise PlanError(f"{source}: \"exercises\" must be a non-empty list")
    out = []
    for i, raw in enumerate(raws):
        where = f"{source}: exercise #{i + 1}"
        if not isinstance(raw, dict):
            raise PlanError(f"{where}: expected an object with the fields {', '.join(FIELDS)}")
        if isinstance(raw.get("number"), int):
            where = f"{source}: exercise {raw['number']}" + (f" ({raw['key']})" if isinstance(raw.get("key"), str) else "")
        unknown = sorted(set(raw) - set(FIELDS))
        if unknown:
            raise PlanError(f"{where}: unknown field {unknown[0]!r} (the fields are {', '.join(FIELDS)})")
        e = Exercise(
            number=_field(raw, "number", "int", where), key=_field(raw, "key", "str", where),
            week=_field(raw, "week", "int", where), file=_field(raw, "file", "str", where),
            function=_field(raw, "function", "str", where), part=_field(raw, "part", "str", where),
            points=_field(raw, "points", "number", where), minutes=_field(raw, "minutes", "int", where),
            teaches=_field(raw, "teaches", "str", where), hint=_field(raw, "hint", "str", where),
            builds_on=tuple(_field(raw, "builds_on", "list", where)))
        if e.number < 1 or e.week < 1 or e.points < 0 or e.minutes < 0:
            raise PlanError(f"{where}: number and week must be 1 or more, points and minutes 0 or more")
        if e.part not in PARTS:
            raise PlanError(f"{where}: part must be one of {', '.join(PARTS)}, got {e.part!r}")
        if not e.key.replace("_", "").isalnum():
            raise PlanError(f"{where}: key must be letters, digits and _, got {e.key!r}")
        out.append(e)
    return Plan(out, source)


def load(path=None):
    """The plan in ``path`` (default: the package's own)."""
    path = Path(path) if path is not None else DEFAULT
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"cannot read the plan {path}: {exc.strerror or exc}") from None
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise PlanError(f"{path}: not valid JSON ({exc})") from None
    return from_json(obj, str(path))


def parse_selection(plan, items):
    """Numbers ("3"), ranges ("1-4"), keys ("adam") and weeks ("week2", "week1-2"),
    separated by commas or spaces -> the chosen exercises, in number order."""
    chosen = set()
    for item in items or ():
        for word in filter(None, (w.strip() for w in item.replace(",", " ").split())):
            week = word[4:] if word.startswith("week") else None
            lo, _, hi = (week if week is not None else word).partition("-")
            hi = hi or lo
            if lo.isdigit() and hi.isdigit() and int(lo) <= int(hi):
                span = range(int(lo), int(hi) + 1)
                found = ([e for e in plan if e.week in span] if week is not None
                         else [plan.by_number.get(n) for n in span])
                if week is not None and not found:
                    found = [None]
            else:
                found = [plan.by_key.get(word)]
            if not found or None in found:
                raise PlanError(f"unknown exercise {word!r}: expected numbers {plan.exercises[0].number}.."
                                f"{plan.exercises[-1].number} (or a range such as 1-4), weeks such as week1 or "
                                f"week1-2, or keys such as {plan.exercises[0].key} (see: python -m "
                                f"acmr_np.assignment list)")
            chosen.update(e.number for e in found)
    return [e for e in plan if e.number in chosen]
