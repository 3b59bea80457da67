"""Answers marked in the reference source, and the blocks a student copy has instead.

In the reference, an answer is written between two comment lines at the code's own
indentation (the nbgrader / otter-grader convention), inside a function:

        # BEGIN SOLUTION
        return dout * (1 - self.out * self.out)
        # END SOLUTION

A function holds one such region, or two (a loss: its forward part, then its backward
part). A paragraph of a function's docstring that starts with ``Derivation:`` is an
answer too; it runs to the next blank line.

A student copy has, in place of a region, a block that the grader finds again by its
number, whatever the student writes between its two lines:

        # BEGIN EXERCISE 4
        raise NotImplementedError("Exercise 4: <hint>")
        # END EXERCISE 4

and, in place of a Derivation paragraph, the one line ``Derivation: yours to write
(exercise 4).`` Everything here works on lines of text, so a student's file that does
not even parse can still be cut into its blocks.
"""
import ast
import json
import re
from dataclasses import dataclass

from .plan import AssignmentError

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
DERIVATION = "Derivation:"
_BLOCK = re.compile(r"^(\s*)# (BEGIN|END) EXERCISE (\d+)\s*$")


class RegionError(AssignmentError):
    """Markers that do not pair up, or a Derivation paragraph that cannot be cut out."""


@dataclass(frozen=True)
class Region:
    """A marked answer: lines[start] is ``# BEGIN SOLUTION``, lines[end] ``# END SOLUTION``
    (0-based), inside ``function`` ("f" or "Class.method"), the index-th of that function."""
    function: str
    index: int
    start: int
    end: int
    indent: str


@dataclass(frozen=True)
class Paragraph:
    """A Derivation paragraph: lines [start, end) of ``function``'s docstring."""
    function: str
    start: int
    end: int
    indent: str


def functions(text):
    """[(qualified name, first line, last line)] of the module's functions and methods,
    1-based as ast counts them (decorators excluded)."""
    out = []

    def walk(body, prefix):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((prefix + node.name, node.lineno, node.end_lineno, node))
            elif isinstance(node, ast.ClassDef):
                walk(node.body, prefix + node.name + ".")

    walk(ast.parse(text).body, "")
    return out


def _owner(funcs, line):
    """The function (qualified name) whose lines hold 1-based ``line``, or None."""
    hits = [(first, name) for name, first, last, _ in funcs if first <= line <= last]
    return max(hits)[1] if hits else None


def solution_regions(text, where="the source"):
    """Every marked region of a reference file, in order."""
    lines = text.splitlines()
    funcs = functions(text)
    regions, open_at, count = [], None, {}
    for i, line in enumerate(lines):
        s = line.strip()
        if s == BEGIN:
            if open_at is not None:
                raise RegionError(f"{where}, line {i + 1}: {BEGIN} inside the region opened on line {open_at + 1}")
            open_at = i
        elif s == END:
            if open_at is None:
                raise RegionError(f"{where}, line {i + 1}: {END} without {BEGIN}")
            owner = _owner(funcs, open_at + 1)
            last = max(j for j in range(open_at, i) if lines[j].strip())  # a comment ends no function
            if owner is None or i - open_at < 2 or _owner(funcs, last + 1) != owner:
                raise RegionError(f"{where}, lines {open_at + 1}-{i + 1}: a region must hold code and lie inside "
                                  f"one function")
            indent = lines[open_at][:len(lines[open_at]) - len(lines[open_at].lstrip())]
            regions.append(Region(owner, count.get(owner, 0), open_at, i, indent))
            count[owner] = count.get(owner, 0) + 1
            open_at = None
    if open_at is not None:
        raise RegionError(f"{where}, line {open_at + 1}: {BEGIN} is never closed")
    return regions


def derivations(text, where="the source"):
    """Every Derivation paragraph; one outside a function's docstring is an error (it
    would belong to no exercise)."""
    lines = text.splitlines()
    docs = {}
    for name, _, _, node in functions(text):
        first = node.body[0]
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                and isinstance(first.value.value, str):
            docs[name] = (first.lineno - 1, first.end_lineno - 1)
    out = []
    for i, line in enumerate(lines):
        if not line.strip().startswith(DERIVATION):
            continue
        owner = next((n for n, (a, b) in docs.items() if a < i < b), None)
        if owner is None:
            raise RegionError(f"{where}, line {i + 1}: a {DERIVATION} paragraph must be in a function's "
                              f"docstring, after its first line and before its closing quotes")
        end = i + 1
        while end < docs[owner][1] and lines[end].strip():
            end += 1
        indent = line[:len(line) - len(line.lstrip())]
        out.append(Paragraph(owner, i, end, indent))
    return out


# ---- what a student copy has instead ------------------------------------------------------

def raise_lines(message, indent, width=96):
    """``raise NotImplementedError("...")`` as one line, or wrapped into adjacent string
    literals when longer than ``width``."""
    one = f"{indent}raise NotImplementedError({json.dumps(message)})"
    if len(one) <= width:
        return [one]
    chunks, limit = [""], width - len(indent) - 8
    for word in message.split(" "):  # greedy; every chunk but the last ends in its space
        if chunks[-1] and len(chunks[-1]) + len(word) > limit:
            chunks.append("")
        chunks[-1] += word + " "
    chunks[-1] = chunks[-1][:-1]
    return ([f"{indent}raise NotImplementedError("]
            + [f"{indent}    {json.dumps(c)}" for c in chunks[:-1]]
            + [f"{indent}    {json.dumps(chunks[-1])})"])


def block_lines(number, body, indent):
    """An exercise block: the two marker lines around ``body`` (lines, already indented)."""
    return [f"{indent}# BEGIN EXERCISE {number}", *body, f"{indent}# END EXERCISE {number}"]


def derivation_placeholder(numbers, indent):
    which = ", ".join(str(n) for n in numbers)
    return f"{indent}{DERIVATION} yours to write (exercise{'s' if len(numbers) > 1 else ''} {which})."


def replace_lines(text, edits):
    """``text`` with each (start, end, new_lines) edit applied: lines [start, end) are
    replaced. Edits must not overlap. The text keeps its final newline, if any."""
    lines = text.splitlines()
    for start, end, new in sorted(edits, key=lambda e: e[0], reverse=True):
        lines[start:end] = new
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


# ---- a student's file ---------------------------------------------------------------------

def exercise_blocks(text):
    """({number: (begin line, end line)}, [problems]) of a copy or hand-in, 0-based
    lines of the two markers. A marker without its partner is a problem, not an error:
    the other blocks of the file are still usable."""
    blocks, opened, problems = {}, {}, []
    for i, line in enumerate(text.splitlines()):
        m = _BLOCK.match(line)
        if not m:
            continue
        n = int(m.group(3))
        if m.group(2) == "BEGIN":
            if n in opened or n in blocks:
                problems.append(f"line {i + 1}: a second '# BEGIN EXERCISE {n}'")
            opened[n] = i
        elif n in opened:
            blocks[n] = (opened.pop(n), i)
        else:
            problems.append(f"line {i + 1}: '# END EXERCISE {n}' without its BEGIN line")
    problems += [f"line {i + 1}: '# BEGIN EXERCISE {n}' is never closed by '# END EXERCISE {n}'"
                 for n, i in opened.items()]
    return blocks, problems


def reindent(lines, old, new):
    """Lines moved from indentation ``old`` to ``new`` (blank lines stay blank)."""
    return [new + line[len(old):] if line.startswith(old) else line if not line.strip() else new + line.lstrip()
            for line in lines]


def splice(text, choices):
    """A student's file with some blocks replaced: ``choices`` maps a block's number to
    the lines that replace it, marker lines included (re-indented to the block's
    BEGIN line), or to None to keep the student's block as it is.

    Returns (new text, line map): line_map[i] is the 1-based line of the student's file
    that line i + 1 of the new text came from, or None for a replaced line, so that an
    error can be reported at the student's own line number."""
    blocks, _ = exercise_blocks(text)
    lines = text.splitlines()
    origin = list(range(1, len(lines) + 1))
    for n, (b, e) in sorted(blocks.items(), key=lambda kv: kv[1][0], reverse=True):
        new = choices.get(n)
        if new is None:
            continue
        at = lines[b][:len(lines[b]) - len(lines[b].lstrip())]
        first = new[0] if new else ""
        had = first[:len(first) - len(first.lstrip())]
        lines[b:e + 1] = reindent(new, had, at)
        origin[b:e + 1] = [None] * len(new)
    return "\n".join(lines) + ("\n" if text.endswith("\n") else ""), origin


def fill(text, bodies):
    """A copy's file with code written into its blocks, as a student does: ``bodies``
    maps a block's number to its new lines (re-indented to the block's marker lines),
    the marker lines stay."""
    blocks, _ = exercise_blocks(text)
    lines = text.splitlines()
    for n, (b, e) in sorted(blocks.items(), key=lambda kv: kv[1][0], reverse=True):
        if n in bodies:
            at = lines[b][:len(lines[b]) - len(lines[b].lstrip())]
            new = bodies[n]
            first = next((x for x in new if x.strip()), "")
            lines[b + 1:e] = reindent(new, first[:len(first) - len(first.lstrip())], at)
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")
