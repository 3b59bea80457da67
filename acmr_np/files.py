"""Writing output files so that an interruption never leaves a half-written one.

Each file is written to a temporary name in the same folder, flushed to disk, and then
renamed over the target with os.replace, which is atomic on POSIX and Windows: a reader
(or a crash) sees either the old complete file or the new complete file.
"""
import json
import os
import tempfile

import numpy


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write):
    """Call ``write(f)`` on a temporary binary file, then rename it to ``path``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file private (0600); give it the permissions any new file gets
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json(path, obj):
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()))


def write_text(path, text):
    atomic_write(path, lambda f: f.write(text.encode()))


def save_npz(path, arrays):
    """``arrays``: {name: numpy array}; written uncompressed (fast, exact)."""
    atomic_write(path, lambda f: numpy.savez(f, **arrays))
