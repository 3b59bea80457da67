"""Classroom assignments: a student copy of the package with functions to write, and its grading.

    python -m acmr_np.assignment list                          # the exercises, in order
    python -m acmr_np.assignment make OUT_DIR [--exercises 1,2,adam]
    python -m acmr_np.assignment grade STUDENT_DIR [--tests DIR] [--json FILE]

``make`` writes a student copy: the whole ``acmr_np/`` package and its ``tests/``
(without the two teacher-only test files, ``tests/test_tutorials.py`` and
``tests/test_assignment.py``), plus ``setup.py``, ``pyproject.toml``, ``README.md`` and
``LICENSE`` so that the copy installs and tests like the original, an ``EXERCISES.md``
for the student, and ``.assignment.json`` (which exercises were handed out, and a
SHA-256 of every file as handed out). The tutorials are not copied: they derive every
gradient, i.e. they hold the answers.

In the copy, the body of each chosen function is replaced by

    raise NotImplementedError("Exercise N: <hint>")

The signature, the docstring (which states what to compute) and every other byte of the
file stay as they are. The body is found with ``ast``: the lines from the end of the
docstring (or of the statements an exercise keeps, such as input checks) down to the
last line of the function are replaced. The reference source carries no markers at
all: the list of exercises, with their hints and checks, is the data ``EXERCISES``
below.

``grade`` runs the package's own checks (pytest test functions, listed per exercise in
``EXERCISES``) on the student copy, in a subprocess whose ``PYTHONPATH`` starts with a
temporary copy of the student's package, so the student's code is what gets imported
(checked before the tests run), never an installed ``acmr_np``. It prints one line per
exercise (checks passed, points, and a status: done, not started, blocked by another
exercise's stub, or failing) and the total. The exit status is 0 whatever the score;
2 for bad input (a missing folder, an existing OUT_DIR, an OUT_DIR or --json FILE that
cannot be written, an existing --json FILE, which is never overwritten), with a one-line
message. The --json report is written atomically (acmr_np.files.write_json): a complete
file or none.
"""
import argparse
import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from .files import write_json

PROG = "python -m acmr_np.assignment"
PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parent            # the source checkout: acmr_np/, tests/, setup.py, ...
PACKAGE = PACKAGE_DIR.name           # "acmr_np"
TOP_FILES = ("setup.py", "pyproject.toml", "README.md", "LICENSE")
TEACHER_ONLY_TESTS = ("test_tutorials.py", "test_assignment.py")
MANIFEST, STUDENT_README = ".assignment.json", "EXERCISES.md"
STUB_PREFIX = "Exercise "            # every stub's message starts "Exercise N: "


class AssignmentError(Exception):
    """Bad input for make/grade: printed as one line, exit status 2."""


@dataclass(frozen=True)
class Exercise:
    number: int       # fixed: "Exercise 7" means the same thing in every copy and in docs/TEACHING.md
    key: str          # short name for --exercises
    file: str         # module inside the package
    function: str     # qualified name: "function" or "Class.method"
    keep: str         # "" or the start of the last body statement kept (input checks, setup)
    points: int
    minutes: int      # estimated time for a student who followed the tutorials
    teaches: str
    hint: str
    checks: tuple     # pytest node ids (a test without [...] counts each of its parameters)
    uses: tuple = ()  # other exercises whose functions these checks also run

    @property
    def where(self):
        return f"{PACKAGE}/{self.file}::{self.function}"

    @property
    def message(self):
        return f"{STUB_PREFIX}{self.number}: {self.hint}"


EXERCISES = (
    Exercise(1, "linear", "layers.py", "Linear.backward", "", 2, 20,
             "backpropagation through an affine map: each index sum of the chain rule becomes "
             "one matrix product, and the shapes check it",
             "fill self.grads['W'] (D, M) and self.grads['b'] (M,) with dL/dW and dL/db, "
             "overwriting them (never +=), and return dL/dx (N, D) as the docstring says; "
             "each index sum in the docstring is one matrix product or one column sum",
             ("tests/test_layers.py::test_linear_gradients",
              "tests/test_layers.py::test_linear_backward_overwrites_grads")),
    Exercise(2, "tanh", "layers.py", "Tanh.backward", "", 1, 5,
             "an elementwise nonlinearity: dL/dx = dout * f'(x), with f' written through the "
             "saved output",
             "return dL/dx = dout * d tanh(x)/dx elementwise; write the derivative through "
             "self.out (the forward's output, tanh(x)) so no second tanh is needed",
             ("tests/test_layers.py::test_smooth_activation_gradients[Tanh]",)),
    Exercise(3, "relu", "layers.py", "ReLU.backward", "", 1, 5,
             "a piecewise-linear nonlinearity and the convention at its kink",
             "return dL/dx: dout where the input was positive, 0 elsewhere; forward saved "
             "where the input was positive in self.mask",
             ("tests/test_layers.py::test_relu_gradient_away_from_kink",)),
    Exercise(4, "softmax", "layers.py", "Softmax.backward", "", 2, 20,
             "a layer whose Jacobian is a full matrix per row: the Jacobian-vector product "
             "without building the Jacobian",
             "return dx (N, C) from dout and the saved probabilities self.out: the docstring's "
             "sum over j is a row-wise dot product; do not build the (N, C, C) Jacobian",
             ("tests/test_layers.py::test_smooth_activation_gradients[Softmax]",)),
    Exercise(5, "softmax_xent", "losses.py", "softmax_cross_entropy", "xp = _check_labels", 2, 25,
             "the fused softmax + cross-entropy (L_imd, L_adv): a numerically stable "
             "log-softmax and the gradient (p - onehot(y)) / N",
             "compute log p stably (subtract each row's max, then log-sum-exp), "
             "loss = -(1/N) sum_n log p[n, y_n] and dlogits = (p - onehot(y)) / N; "
             "return (loss, dlogits)",
             ("tests/test_losses.py::test_softmax_cross_entropy_gradient",
              "tests/test_losses.py::test_softmax_cross_entropy_value_and_stability")),
    Exercise(6, "xent", "losses.py", "cross_entropy", "xp = _check_labels", 1, 10,
             "cross-entropy on probabilities, and why training fuses it with the softmax",
             "pick p[n, y_n] for every row n (fancy indexing with xp.arange(n) and labels); "
             "return the mean of -log of them and dprobs, zero except -1 / (N p[n, y_n]) "
             "at the labels",
             ("tests/test_losses.py::test_cross_entropy_on_probabilities_gradient",
              "tests/test_layers.py::test_softmax_then_cross_entropy_equals_fused"), (4, 5)),
    Exercise(7, "triplet_hinge", "losses.py", "triplet_hinge", "n = anchor.shape[0]", 2, 25,
             "the triplet hinge on squared distances: gradients of ||a - p||^2, and a max(0, .) "
             "that switches whole rows off",
             "compute h_n = margin + ||a_n - p_n||^2 - ||a_n - q_n||^2 per row, "
             "loss = mean of max(0, h_n), and the three gradients (zero in rows with h_n <= 0); "
             "return (loss, (d_anchor, d_positive, d_negative))",
             ("tests/test_losses.py::test_triplet_hinge_gradients_all_active",
              "tests/test_losses.py::test_triplet_hinge_gradients_mixed")),
    Exercise(8, "pull_push", "losses.py", "pull_push", "n = anchor.shape[0]", 1, 15,
             "the paper's pull-plus-push form of L_imi (Eqs. 4-5): a pull that always acts and "
             "a push that stops at the margin",
             "loss = mean of ||a - p||^2 + weight * max(0, margin - ||a - q||^2) per row; the "
             "pull's gradient acts in every row, the push's only where margin - ||a - q||^2 > 0; "
             "return (loss, (d_anchor, d_positive, d_negative))",
             ("tests/test_losses.py::test_pull_push_gradients_mixed",)),
    Exercise(9, "l2_penalty", "losses.py", "l2_penalty", "if not weights", 1, 5,
             "weight decay, L_reg (Eq. 7)",
             "return coef * (sum of the squared Frobenius norms) and the list of gradients, "
             "one array shaped like each weight",
             ("tests/test_losses.py::test_l2_penalty_gradient",)),
    Exercise(10, "l2_normalize", "layers.py", "L2Normalize.backward", "", 2, 25,
             "normalising to unit length (the cosine geometry of L_imi): a Jacobian that "
             "removes the component along the output",
             "return dx (N, D) from dout, the saved output self.out (y) and self.norm "
             "(||x|| per row, (N, 1)); derive dy_j/dx_k of y = x / ||x|| first",
             ("tests/test_layers.py::test_smooth_activation_gradients[L2Normalize]",)),
    Exercise(11, "grl", "layers.py", "GradientReversal.backward", "", 1, 5,
             "the gradient reversal layer: not a derivative but a rule, which turns one "
             "backward pass into both players' updates of the minimax game (Eqs. 9-10)",
             "forward is the identity; backward returns the upstream gradient reversed and "
             "scaled by self.lam",
             ("tests/test_layers.py::test_gradient_reversal_is_exact",)),
    Exercise(12, "sgd", "optim.py", "SGD.step", "self.t += 1", 1, 10,
             "an optimiser that updates arrays in place (the layers hold the same objects)",
             "for every name k: update the velocity self.state['velocity'][k] and then the "
             "parameter self.params[k] IN PLACE (v *= ..., p -= ...), never rebinding them",
             ("tests/test_optim.py::test_sgd_momentum_matches_textbook_form",)),
    Exercise(13, "adam", "optim.py", "Adam.step", "b1, b2 = self.beta1", 2, 25,
             "Adam: two moving averages, their bias correction, and in-place updates",
             "for every name k: update self.state['m'][k] and self.state['v'][k] in place "
             "(moving averages of g = grads[k] and of g^2), then the parameter in place with "
             "the bias-corrected step of the docstring (m_hat, v_hat); return nothing",
             ("tests/test_optim.py::test_adam_matches_textbook_form",
              "tests/test_optim.py::test_state_dict_round_trip_continues_bit_for_bit")),
    Exercise(14, "acmr", "model.py", "ACMR.loss_and_grads", "B = img.shape[0]", 6, 120,
             "the whole ACMR objective and its backward pass: the shared label classifier "
             "(L_imd), triplets across modalities on unit vectors (L_imi), the modality "
             "classifier behind the GRL (L_adv), weight decay (L_reg), and one backward pass "
             "that serves both players",
             "project both modalities (self.img_projector / self.txt_projector take the raw "
             "features) and stack them as s (2B, m), images first. Compute L_imd (label "
             "classifier on s, labels twice, x2 as Eq. 2 sums both modalities), L_imi (both "
             "directions with self._imi_one_direction, on self.img_normalize/txt_normalize "
             "outputs when config.distance is 'cosine'; 0 when noise is None), L_adv (set "
             "self.grl.lam = lam; modality classifier on self.grl.forward(s), images label 0, "
             "texts 1, x2), adv_acc and, when l_reg, L_reg with losses.l2_penalty on the "
             "projectors' weight matrices; then backward: d_s from the label classifier (x beta), "
             "through the modality classifier and the GRL, plus alpha x the L_imi part; split "
             "d_s into the two projectors; add L_reg's gradients to their weight gradients; "
             "return the dict of the docstring",
             ("tests/test_model.py::test_whole_objective_gradient",
              "tests/test_model.py::test_projectors_receive_the_reversed_adversarial_gradient",
              "tests/test_model.py::test_loss_values_against_an_independent_reference",
              "tests/test_model.py::test_loss_and_grads_without_l_reg"),
             (1, 2, 5, 7, 8, 9, 10, 11)),
    Exercise(15, "train_step", "trainer.py", "Trainer.train_step", "", 2, 20,
             "Algorithm 1 of the paper: one forward and backward pass feeds two players, each "
             "with its own optimiser; the embedding player steps every step, the modality "
             "classifier every k-th; lambda follows its schedule over training",
             "lam = the schedule's value at this progress (self.model.config.lam_at); one "
             "self.model.loss_and_grads(img, txt, labels, noise, lam) fills every gradient; then "
             "self.opt_emb.step with the embedding player's gradients (model.named('grads', "
             "model.EMBEDDING_PARTS)) on every step, and self.opt_adv.step with the modality "
             "classifier's (model.ADVERSARY_PARTS) only on steps 0, k, 2k, ... "
             "(self.step_count % k == 0, k = config.k); then self.step_count += 1 (checkpoints "
             "save it); return (terms, lam)",
             ("tests/test_model.py::test_train_step_follows_the_lambda_schedule",
              "tests/test_model.py::test_training_changes_every_parameter_group_and_k_schedule",
              "tests/test_model.py::test_fast_trainer_is_the_textbook_trainer_bit_for_bit"),
             (1, 2, 5, 7, 8, 9, 10, 11, 13, 14)),
)
BY_NUMBER = {e.number: e for e in EXERCISES}
BY_KEY = {e.key: e for e in EXERCISES}


# ---- replacing a function's body ----------------------------------------------------------

def find_function(tree, qualname):
    """The FunctionDef of ``qualname`` ("f" or "Class.method") at module level, or None."""
    scope = tree.body
    *outer, name = qualname.split(".")
    for part in outer:
        scope = next((n.body for n in scope if isinstance(n, ast.ClassDef) and n.name == part), None)
        if scope is None:
            return None
    return next((n for n in scope if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                 and n.name == name), None)


def _has_docstring(fn):
    first = fn.body[0]
    return (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str))


def body_range(source, qualname, keep=""):
    """Lines (first, last), 1-based and inclusive, of the part of a function to replace.

    The part starts on the line after the docstring (if any), or after the body
    statement that begins with ``keep`` (with the statements before it); it ends on the
    function's last line. Comments inside the part go with it; the signature, the
    docstring and the kept statements stay.
    """
    fn = find_function(ast.parse(source), qualname)
    if fn is None:
        raise AssignmentError(f"no function {qualname} in the source")
    lines = source.splitlines()
    body = fn.body
    start = 1 if _has_docstring(fn) else 0
    if keep:
        hit = next((i for i, st in enumerate(body[start:], start)
                    if lines[st.lineno - 1].strip().startswith(keep)), None)
        if hit is None:
            raise AssignmentError(f"{qualname}: no body statement starts with {keep!r}; "
                                  f"the exercise list in {PROG} needs updating")
        start = hit + 1
    if start >= len(body):
        raise AssignmentError(f"{qualname}: nothing left to replace after the kept statements")
    first = body[start - 1].end_lineno + 1 if start else body[0].lineno
    if body[0].lineno == fn.lineno:
        raise AssignmentError(f"{qualname}: a one-line function cannot be stubbed")
    while not lines[first - 1].strip():  # blank lines after the kept part stay
        first += 1
    return first, body[-1].end_lineno


def stub_source(source, qualname, message, keep=""):
    """``source`` with the body of ``qualname`` (after its docstring and kept statements)
    replaced by ``raise NotImplementedError(message)``, every other byte unchanged."""
    fn = find_function(ast.parse(source), qualname)
    first, last = body_range(source, qualname, keep)
    lines = source.splitlines(keepends=True)
    if any("NotImplementedError" in line for line in lines[first - 1:last]):
        raise AssignmentError(f"{qualname} already raises NotImplementedError: "
                              f"is this a student copy rather than the reference?")
    body_line = lines[fn.body[0].lineno - 1]
    indent = body_line[:len(body_line) - len(body_line.lstrip())]
    newline = "\r\n" if lines[last - 1].endswith("\r\n") else "\n"
    stub = _raise_statement(message, indent, newline)
    out = "".join(lines[:first - 1]) + stub + "".join(lines[last:])
    ast.parse(out)  # still valid Python
    return out


def _raise_statement(message, indent, newline, width=96):
    """raise NotImplementedError("...") as one line, or as adjacent string literals."""
    one = f'{indent}raise NotImplementedError({json.dumps(message)}){newline}'
    if len(one) <= width + len(newline):
        return one
    chunks, limit = [""], width - len(indent) - 8
    for word in message.split(" "):  # greedy, each chunk but the last ends in its space
        if chunks[-1] and len(chunks[-1]) + len(word) > limit:
            chunks.append("")
        chunks[-1] += word + " "
    chunks[-1] = chunks[-1][:-1]
    inner = indent + "    "
    body = newline.join(inner + json.dumps(c) for c in chunks)
    return f"{indent}raise NotImplementedError({newline}{body}){newline}"


# ---- make -------------------------------------------------------------------------------

def parse_selection(items):
    """["1,2", "adam"] -> the chosen Exercises in the order of EXERCISES."""
    if not items:
        return list(EXERCISES)
    chosen = set()
    for item in items:
        for word in filter(None, (w.strip() for w in item.split(","))):
            lo, _, hi = word.partition("-")
            if lo.isdigit() and hi.isdigit() and int(lo) <= int(hi):   # a range "1-4"
                found = [BY_NUMBER.get(n) for n in range(int(lo), int(hi) + 1)]
            else:
                found = [BY_NUMBER.get(int(word)) if word.isdigit() else BY_KEY.get(word)]
            if None in found:
                raise AssignmentError(
                    f"unknown exercise {word!r}: expected numbers 1..{len(EXERCISES)} (or a range "
                    f"such as 1-4) or keys {', '.join(BY_KEY)} (see: {PROG} list)")
            chosen.update(ex.number for ex in found)
    return [e for e in EXERCISES if e.number in chosen]


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _ignore(directory, names):
    return [n for n in names if n == "__pycache__" or n.endswith((".pyc", ".pyo"))
            or (Path(directory).name == "tests" and n in TEACHER_ONLY_TESTS)]


def _check_out_dir(out):
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AssignmentError(f"{out} already exists and is not an empty folder; choose a new one")


def make(out_dir, exercises, source_root=ROOT):
    """Write the student copy into ``out_dir`` (new or empty). Returns its Path."""
    out, src = Path(out_dir), Path(source_root)
    _check_out_dir(out)
    if not (src / "tests").is_dir():
        raise AssignmentError(f"{src}: no tests/ folder next to the package; {PROG} make needs "
                              f"the source checkout (git clone + pip install -e .)")
    # Build beside the target, then rename: no half-written copy is ever left at OUT_DIR.
    above = next((p for p in out.absolute().parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise AssignmentError(f"cannot create {out}: {above} is not a folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AssignmentError(f"cannot create {out}: {_os_reason(exc)}") from None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:  # its name is a temporary one: leave it out of the message
        raise AssignmentError(f"cannot create {out}: {_os_reason(exc, name=False)}") from None
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the copy is meant to be handed out
        shutil.copytree(src / PACKAGE, tmp / PACKAGE, ignore=_ignore)
        shutil.copytree(src / "tests", tmp / "tests", ignore=_ignore)
        for name in TOP_FILES:
            if (src / name).is_file():
                shutil.copy2(src / name, tmp / name)
        for ex in exercises:
            path = tmp / PACKAGE / ex.file
            source = path.read_text(encoding="utf-8")
            path.write_text(stub_source(source, ex.function, ex.message, ex.keep), encoding="utf-8")
        lines = {}  # where each stub ends up, for EXERCISES.md
        for ex in exercises:
            tree = ast.parse((tmp / PACKAGE / ex.file).read_text(encoding="utf-8"))
            lines[ex.number] = find_function(tree, ex.function).body[-1].lineno
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        manifest = {"exercises": [e.number for e in exercises],
                    "sha256": {f: _sha256(tmp / f) for f in files}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        (tmp / STUDENT_README).write_text(student_readme(exercises, lines), encoding="utf-8")
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise AssignmentError(f"cannot write the student copy to {out}: "
                                  f"{_os_reason(exc, name=False)}") from None
        raise
    return out


def _os_reason(exc, name=True):
    """An OSError as a few words: "Permission denied: '/x/y'" rather than a traceback."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{reason}: {exc.filename!r}" if exc.filename and name else reason


def student_readme(exercises, lines):
    """EXERCISES.md of a student copy: what to write, where, and how to check it."""
    total = sum(e.points for e in exercises)
    out = [
        "# ACMR from scratch: exercises", "",
        f"This copy of `{PACKAGE}` has {len(exercises)} functions whose bodies you write. Each "
        "one raises `NotImplementedError(\"Exercise N: hint\")` until you do; its docstring "
        "(kept) says what it must compute. Everything else in the package works, and the "
        "package's own tests check your code: numerical gradient checks (centered "
        "differences, `acmr_np/gradcheck.py`) for every backward pass.", "",
        "Work in the order below: later exercises use earlier ones (the ACMR step calls the "
        "layers and losses). Run the commands from this folder (the one holding `acmr_np/`), "
        "with `python -m pytest`, which imports this copy (a bare `pytest` may import "
        "another installed `acmr_np`); or `pip install -e .` here first.", "",
        "See your score at any time:", "",
        "```bash", f"{PROG} grade .", "```", "",
        "| # | function | file:line | points | checked by |",
        "|---|---|---|---|---|",
    ]
    for e in exercises:
        checks = "<br>".join(f"`{c}`" for c in e.checks)
        out.append(f"| {e.number} | `{e.function}` | `{PACKAGE}/{e.file}:{lines[e.number]}` | "
                   f"{e.points} | {checks} |")
    out += ["", f"Total: {total} points.", ""]
    for e in exercises:
        out += [f"## Exercise {e.number}: `{e.function}` ({e.points} "
                f"point{'s' if e.points != 1 else ''})", "",
                f"What it teaches: {e.teaches}.", "", f"Hint: {e.hint}.", "", "Check it:", "",
                "```bash", f"python -m pytest -q {' '.join(repr(c) for c in e.checks)}", "```", ""]
    return "\n".join(out)


# ---- grade ------------------------------------------------------------------------------

def _report_results(xml_path, work):
    """From pytest's JUnit XML: {node id: (outcome, message)} with outcome passed, failed
    or skipped, and {test file: message} for the files that could not even be loaded
    (a syntax error in the package, say)."""
    results, file_errors = {}, {}
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        path = case.get("file") or case.get("classname", "").replace(".", "/") + ".py"
        if not case.get("classname"):  # a collection error: the whole file failed to load
            el = case.find("error")
            text = (el.text or "") if el is not None else ""
            text = text.replace(f"{work}{os.sep}", "")  # paths relative to the copy
            detail = [line[1:].strip() for line in text.splitlines() if line.startswith("E ")]
            file_errors[path] = "could not load the tests: " + (" | ".join(detail[-4:]) or "collection failure")
            continue
        node = f"{path}::{case.get('name')}"
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
                message = (el.get("message") or el.text or "").strip()
                break
        # A failure in a test's teardown adds a second entry for the same test: keep the worst.
        if results.get(node, ("passed",))[0] != "failed":
            results[node] = (outcome, message)
    return results, file_errors


def _stub_number(message):
    """The N of "NotImplementedError: Exercise N: ..." in a failure message, else None."""
    key = f"NotImplementedError: {STUB_PREFIX}"
    if key not in message:
        return None
    digits = message.split(key, 1)[1].split(":", 1)[0]
    return int(digits) if digits.isdigit() else None


def score_exercise(ex, results, file_errors=None):
    """Points and status of one exercise from the test results."""
    rows = []
    for check in ex.checks:
        matched = [(n, r) for n, r in results.items() if n == check or n.startswith(check + "[")]
        error = (file_errors or {}).get(check.split("::")[0])
        missing = ("error", error) if error else ("missing", "this check was not found in the tests")
        rows += matched or [(check, missing)]
    passed = sum(r[0] == "passed" for _, r in rows)
    failed = [(n, r) for n, r in rows if r[0] != "passed"]
    stubs = {_stub_number(r[1]) for _, r in failed}
    others = ", ".join(str(s) for s in sorted(stubs - {ex.number, None}))
    notes = []
    if not failed:
        status = "done"
    elif ex.number in stubs:
        status = "not started"
    elif None not in stubs:
        status = f"blocked by exercise {others}"
    else:
        status = "failing"
    if failed and others and not status.startswith("blocked"):
        notes.append(f"also needs exercise {others}")
    return {"number": ex.number, "key": ex.key, "function": ex.function, "file": ex.file,
            "checks_passed": passed, "checks": len(rows), "points": ex.points,
            "score": ex.points * passed / len(rows), "status": status, "notes": notes,
            "failures": [{"check": n, "outcome": r[0], "message": r[1][:300]} for n, r in failed]}


def _changed_files(student, manifest, exercises, tests_given):
    """Files of the copy that differ from the copy as handed out, outside the exercises."""
    touched = {f"{PACKAGE}/{e.file}" for e in exercises}
    changed = []
    for rel, digest in manifest.get("sha256", {}).items():
        if rel in touched or (tests_given and rel.startswith("tests/")):
            continue
        p = student / rel
        if not p.is_file() or _sha256(p) != digest:
            changed.append(rel)
    return changed


def grade(student_dir, tests_dir=None, timeout=900, python=sys.executable):
    """Run the checks of the handed-out exercises on a student copy; returns a report dict."""
    student = Path(student_dir).resolve()
    if not (student / PACKAGE / "__init__.py").is_file():
        raise AssignmentError(f"{student}: no {PACKAGE}/ package there; expected the folder that "
                              f"{PROG} make wrote")
    tests = Path(tests_dir).resolve() if tests_dir else student / "tests"
    if not tests.is_dir():
        raise AssignmentError(f"{tests}: no such tests folder")
    manifest = {}
    if (student / MANIFEST).is_file():
        try:
            manifest = json.loads((student / MANIFEST).read_text(encoding="utf-8"))
        except ValueError:
            raise AssignmentError(f"{student / MANIFEST}: not readable JSON") from None
    numbers = manifest.get("exercises") or [e.number for e in EXERCISES]
    exercises = [BY_NUMBER[n] for n in numbers if n in BY_NUMBER]
    changed = _changed_files(student, manifest, exercises, tests_dir is not None)

    with tempfile.TemporaryDirectory(prefix="acmr_grade_") as tmp:
        work = Path(tmp)
        shutil.copytree(student / PACKAGE, work / PACKAGE, ignore=_ignore)
        shutil.copytree(tests, work / "tests", ignore=_ignore)
        # Our own pytest settings: nothing in the copy's pyproject.toml (addopts, ...) applies.
        (work / "pytest.ini").write_text(
            "[pytest]\ntestpaths = tests\nmarkers =\n"
            "    gpu: needs CuPy and a usable CUDA device\n", encoding="utf-8")
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(work), os.environ.get("PYTHONPATH")])))
        where = subprocess.run([python, "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)"],
                               cwd=work, env=env, capture_output=True, text=True, timeout=120)
        imported = Path(where.stdout.strip() or ".").resolve()
        if where.returncode != 0 or work.resolve() not in imported.parents:
            detail = (where.stderr.strip().splitlines() or ["?"])[-1] if where.returncode else imported
            raise AssignmentError(f"the student copy's package does not import from {work} ({detail})")
        files = sorted({c.split("::")[0] for e in exercises for c in e.checks})
        present = [f for f in files if (work / f).is_file()]
        xml = work / "report.xml"
        try:
            proc = subprocess.run(
                [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(work),
                 f"--junitxml={xml}", "-o", "junit_family=xunit1", *present],
                cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssignmentError(f"the checks did not finish within {timeout} s (an endless loop in "
                                  f"the student's code?); raise --timeout to wait longer") from None
        if not xml.is_file():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
            raise AssignmentError("pytest wrote no report: " + " | ".join(tail))
        results, file_errors = _report_results(xml, work)
    rows = [score_exercise(e, results, file_errors) for e in exercises]
    status = {r["number"]: r["status"] for r in rows}
    for e, r in zip(exercises, rows):  # a failure may come from a wrong exercise it runs
        wrong = [str(u) for u in e.uses if status.get(u) == "failing"]
        if (r["status"] == "failing" or r["status"].startswith("blocked")) and wrong:
            r["notes"].append(f"its checks run exercise {', '.join(wrong)}, which fails: fix that first")
    for r in rows:
        r["status"] += f" ({'; '.join(r['notes'])})" if r["notes"] else ""
    return {"student_dir": str(student), "tests": str(tests), "changed_files": changed,
            "exercises": rows, "score": sum(r["score"] for r in rows),
            "points": sum(r["points"] for r in rows)}


def format_report(report):
    lines = [f"grading {report['student_dir']} with the checks in {report['tests']}", "",
             f"{'#':>3}  {'function':<40} {'checks':>7} {'points':>9}  status"]
    for r in report["exercises"]:
        where = f"{r['file']}::{r['function']}"
        lines.append(f"{r['number']:>3}  {where:<40} {r['checks_passed']:>3}/{r['checks']:<3} "
                     f"{r['score']:>4.1f}/{r['points']:<3}  {r['status']}")
    done = sum(r["status"] == "done" for r in report["exercises"])
    lines += ["", f"total: {report['score']:.1f} / {report['points']} points "
                  f"({done} of {len(report['exercises'])} exercises done)"]
    failing = [(r, f) for r in report["exercises"] if r["status"].startswith("failing")
               for f in r["failures"] if _stub_number(f["message"]) is None][:10]
    if failing:
        lines += ["", "failing checks (first line of each failure):"]
        for r, f in failing:
            msg = (f["message"].splitlines() or [""])[0][:160]
            lines.append(f"  exercise {r['number']}: {f['check']}: {f['outcome']}: {msg}")
    if report["changed_files"]:
        lines += ["", "warning: these files differ from the copy as handed out, though no exercise "
                      "is in them: " + ", ".join(report["changed_files"])]
    return "\n".join(lines)


# ---- command line -----------------------------------------------------------------------

def format_list():
    lines = [f"{'#':>3}  {'key':<14} {'function':<40} {'points':>6} {'minutes':>8}"]
    for e in EXERCISES:
        lines.append(f"{e.number:>3}  {e.key:<14} {e.file + '::' + e.function:<40} "
                     f"{e.points:>6} {e.minutes:>8}")
    lines.append(f"total: {sum(e.points for e in EXERCISES)} points, about "
                 f"{sum(e.minutes for e in EXERCISES) / 60:.1f} hours (estimates)")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise AssignmentError(message)


def build_parser():
    p = _Parser(prog=PROG, description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="print the exercises in order")
    m = sub.add_parser("make", help="write a student copy with the chosen functions stubbed")
    m.add_argument("out_dir", metavar="OUT_DIR", help="a new (or empty) folder")
    m.add_argument("--exercises", nargs="+", metavar="N|KEY",
                   help="numbers or keys (comma or space separated); default: all")
    g = sub.add_parser("grade", help="run the checks on a student copy and print the scores")
    g.add_argument("student_dir", metavar="STUDENT_DIR")
    g.add_argument("--tests", default=None, metavar="DIR",
                   help="the tests to grade with (default: STUDENT_DIR/tests); give the reference "
                        "tests/ to grade hand-ins, so an edited test earns nothing")
    g.add_argument("--json", default=None, metavar="FILE", help="also write the report as JSON")
    g.add_argument("--timeout", type=float, default=900, help="seconds for all checks together")
    return p


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
        if args.command == "list":
            print(format_list())
        elif args.command == "make":
            exercises = parse_selection(args.exercises)
            out = make(args.out_dir, exercises)
            print(f"wrote a student copy to {out} with {len(exercises)} exercise(s): "
                  + ", ".join(f"{e.number} {e.function}" for e in exercises))
            print(f"hand out the folder; the student reads {out / STUDENT_README}; "
                  f"grade with: {PROG} grade {out}")
        else:
            if args.json:
                _check_json_target(args.json)  # before the checks run, not after
            report = grade(args.student_dir, args.tests, timeout=args.timeout)
            print(format_report(report))
            if args.json:
                write_report_json(args.json, report)
                print(f"report written to {args.json}")
        return 0
    except AssignmentError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # any other file-system failure: still one line
        print(f"{PROG}: error: {_os_reason(exc)}", file=sys.stderr)
        return 2


def _check_json_target(path):
    """Refuse a --json FILE that exists (never overwritten) or whose folder is missing or
    not writable."""
    target = Path(path)
    if target.exists() or target.is_symlink():
        raise AssignmentError(f"{target} already exists; the report is never written over a file, "
                              f"choose a new name")
    folder = target.parent
    if not folder.is_dir():
        raise AssignmentError(f"cannot write the report to {target}: no folder {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise AssignmentError(f"cannot write the report to {target}: the folder {folder} is not writable")


def write_report_json(path, report):
    """Write the report atomically (a complete file or none), refusing an existing file."""
    _check_json_target(path)  # again: the grading took a while
    try:
        write_json(path, report)
    except OSError as exc:
        raise AssignmentError(f"cannot write the report to {path}: {_os_reason(exc, name=False)}") from None


if __name__ == "__main__":
    sys.exit(main())
