"""Plumbing shared by the command-line tools: one-line errors and output folders.

Every tool (train, ablations, baselines) reports a problem with its input as one line,
``<prog>: error: <what is wrong>``, exits with status 2, and leaves no half-made output;
a result is never written over an earlier one.
"""
import argparse
import os
import sys

from .errors import InputError


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument raises InputError (one line) instead of printing
    the usage block and exiting."""

    def error(self, message):
        raise InputError(message)


def run_main(prog, body, argv):
    """Call ``body(argv)`` and turn InputError, and OSError from the file system (a
    folder that cannot be made, a full disk), into one line on stderr and exit status 2."""
    try:
        return body(argv)
    except (InputError, OSError) as exc:
        print(f"{prog}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


def fresh_folder(out, hint=""):
    """Create the output folder ``out``; an existing non-empty one is refused, never
    overwritten. ``hint`` is appended to the refusal (e.g. how to resume)."""
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise InputError(f"{out} already exists and is not an empty folder; choose another output folder{hint}")
    return _make_folder(out)


def output_file(folder, name):
    """The path ``folder/name`` for a result file, checked BEFORE the work that makes it:
    the folder is created if needed, and an existing file is refused, never overwritten."""
    path = os.path.join(folder, name)
    if os.path.exists(path):
        raise InputError(f"{path} already exists; choose another --out folder")
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise InputError(f"--out {folder} exists and is not a folder")
    _make_folder(folder)
    return path


def _make_folder(folder):
    """os.makedirs, with a failure (no permission, a file in the way) as an InputError."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder {folder}: {exc.strerror or exc}") from None
    return folder
