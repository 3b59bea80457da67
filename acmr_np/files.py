"""Writing output files so that an interruption never leaves a half-written one.

Each file is written to a temporary name in the same folder, flushed to disk, and then
renamed over the target with os.replace, which is atomic on POSIX and Windows: a reader
(or a crash) sees either the old complete file or the new complete file. With
``overwrite=False`` the temporary is hard-linked to the target instead, which fails if
the target exists: of two writers racing for one new file, exactly one writes it.

A write that fails (a full disk, a read-only folder) removes its temporary and raises
OSError naming the target file. A process killed with SIGKILL can leave a temporary
``.tmp-XXXX<name>`` behind; ``python -m acmr_np.train --resume`` removes those of its run.
"""
import errno
import json
import os
import tempfile

import numpy


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


TMP_PREFIX = ".tmp-"


def atomic_write(path, write, overwrite=True):
    """Call ``write(f)`` on a temporary binary file, then rename it to ``path``
    (``overwrite=False``: link it there, and refuse an existing ``path``)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=os.path.basename(path), dir=folder)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file private (0600); give it the permissions any new file gets
        os.chmod(tmp, 0o666 & ~_umask())
        if overwrite:
            os.replace(tmp, path)
        else:
            _link(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
            raise OSError(exc.errno, f"cannot write it: {exc.strerror or exc}", path) from exc
        raise


def _link(tmp, path):
    """Give the complete file ``tmp`` the name ``path`` unless that exists (atomically
    where the file system has hard links)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "already exists (written meanwhile by another process?); "
                                            "not overwritten", path) from None
    except OSError:  # no hard links here (some network or FUSE file systems): check, then rename
        if os.path.exists(path):
            raise FileExistsError(errno.EEXIST, "already exists; not overwritten", path) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def write_json(path, obj, overwrite=True):
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()),
                 overwrite)


def write_text(path, text):
    atomic_write(path, lambda f: f.write(text.encode()))


def save_npz(path, arrays):
    """``arrays``: {name: numpy array}; written uncompressed (fast, exact)."""
    atomic_write(path, lambda f: numpy.savez(f, **arrays))
