"""Plumbing shared by the command-line tools: one-line errors, signals, output folders, locks.

Every tool (train, ablations, baselines) reports a problem with its input as one line,
``<prog>: error: <what is wrong>``, exits with status 2, and leaves no half-made output;
a result is never written over an earlier one. Ctrl-C and SIGTERM, from the first line of
``run_main`` to its last, end the tool with one line ``<prog>: interrupted...`` and exit
status 130, never a traceback.

A training run's folder is claimed atomically (``claim_folder``: the lock file
``.acmr_np.lock`` is created only if it does not exist, already locked, so of two runs
started together with the same --out exactly one gets it) and locked for the life of
the process (an fcntl.flock on that file, which the operating system releases however
the process ends; ``lock_folder`` takes the lock of an existing run folder, e.g. for
--resume, and takes over, saying so, a lock whose process no longer runs, rather than
blocking the folder forever). The file holds the owner's pid and host, for the messages.
"""
import argparse
import contextlib
import errno
import os
import signal
import socket
import sys
import tempfile
import threading
import time

from .errors import InputError

try:
    import fcntl
except ImportError:  # Windows: no flock; the O_EXCL claim still holds, the life lock is skipped
    fcntl = None

LOCK = ".acmr_np.lock"
CLAIM_PREFIX = ".tmp-claim-"  # the lock file under its temporary name, before it is linked to LOCK
PROBE_BYTES = 64 << 10   # written (and fsynced) into an output folder to check that it takes data


class Interrupted(Exception):
    """Ctrl-C or SIGTERM, with what was kept: run_main prints ``<prog>: interrupted; <message>``
    and exits with status 130."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument raises InputError (one line) instead of printing
    the usage block and exiting."""

    def error(self, message):
        raise InputError(message)


def _one_line(text):
    return " ".join(str(text).split())


def describe_error(exc):
    """An OSError as 'PATH: what went wrong' (or its text), an InputError as its message."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def _in_main_thread():
    return threading.current_thread() is threading.main_thread()


def run_main(prog, body, argv):
    """Call ``body(argv)`` and turn InputError, OSError from the file system (a folder
    that cannot be made, a full disk) and NotImplementedError (an exercise stub of a
    classroom copy) into one line on stderr and exit status 2;
    Ctrl-C and SIGTERM (treated alike while ``body`` runs; the caller's SIGTERM handler
    is put back afterwards) into one line and exit status 130."""
    previous = None
    if _in_main_thread():  # signal handlers can only be set from the main thread
        previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        try:
            return body(argv)
        except Interrupted as exc:
            print(f"{prog}: interrupted; {_one_line(exc)}", file=sys.stderr)
            return 130
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            return 130
        except (InputError, OSError) as exc:
            print(f"{prog}: error: {_one_line(describe_error(exc))}", file=sys.stderr)
            return 2
        except NotImplementedError as exc:  # a classroom copy's stub: "Exercise N: <hint>"
            print(f"{prog}: error: this copy's code is not finished: {_one_line(exc)}", file=sys.stderr)
            return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def deferred_interrupts():
    """Hold Ctrl-C and SIGTERM back while the block runs (writing a checkpoint and noting
    which epoch is on disk, say) and raise KeyboardInterrupt after it if one came. Only in
    the main thread (elsewhere the block runs as it is); an ignored signal stays ignored."""
    if not _in_main_thread():
        yield
        return
    arrived = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(s, lambda signum, frame: arrived.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if arrived:
        raise KeyboardInterrupt


# ---- output folders and files -----------------------------------------------------------

def _make_folder(folder):
    """os.makedirs, with a failure (no permission, a file in the way) as an InputError."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder {folder}: {exc.strerror or exc}") from None
    return folder


def check_writable(folder):
    """Write PROBE_BYTES to a temporary file in ``folder``, flush them to disk and remove
    it: a read-only folder or file system, or a full disk, is an InputError now rather than
    after the work whose result would not fit."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-probe-", dir=folder)
    except OSError as exc:
        raise InputError(f"cannot write into the output folder {folder}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"\0" * PROBE_BYTES)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise InputError(f"cannot write into the output folder {folder}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def output_file(folder, name):
    """The path ``folder/name`` for a result file, checked BEFORE the work that makes it:
    the folder is created if needed and must take data (``check_writable``), and an
    existing file is refused, never overwritten (the final write refuses one too:
    files.write_json(..., overwrite=False))."""
    path = os.path.join(folder, name)
    if os.path.exists(path):
        raise InputError(f"{path} already exists; choose another --out folder")
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise InputError(f"--out {folder} exists and is not a folder")
    _make_folder(folder)
    check_writable(folder)
    return path


# ---- claiming and locking a run folder ----------------------------------------------------

def _owner(path):
    """(pid, host) written in a lock file, or (None, None)."""
    try:
        with open(path) as f:
            pid, host = (f.read(200).split() + [None, None])[:2]
        return int(pid), host
    except (OSError, ValueError, TypeError):
        return None, None


def _alive(pid, host):
    """Whether process ``pid`` still runs (None where it cannot be told: another host)."""
    if pid is None or (host and host != socket.gethostname()):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def _who(pid, host):
    if pid is None:
        return "another process"
    return f"process {pid}" + (f" on {host}" if host and host != socket.gethostname() else "")


def _flock(fd):
    """Take the exclusive lock without waiting; False where another process holds it."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise
    return True


def _held(path):
    """Whether a process holds the lock on ``path`` now (tried, and let go at once)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return not _flock(fd)
    finally:
        os.close(fd)


def _stamp(fd):
    # written over the old stamp, then cut to length: the file is never empty in between
    stamp = f"{os.getpid()} {socket.gethostname()}\n".encode()
    os.pwrite(fd, stamp, 0)
    os.ftruncate(fd, len(stamp))


class FolderLock:
    """The lock a process holds on a run folder (see the module doc). ``previous`` is the
    (pid, host) of a process whose lock was taken over (it no longer ran), else None;
    ``created``: whether claim_folder made the folder itself."""

    def __init__(self, folder, fd, previous=None, created=False):
        self.folder, self.fd, self.previous, self.created = folder, fd, previous, created
        self.path = os.path.join(folder, LOCK)

    def release(self):
        """Remove the lock file (if it is still this lock's) and let the lock go."""
        if self.fd is None:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


def _in_use(folder, path):
    pid, host = _owner(path)
    for _ in range(20):  # a holder that has just locked a new, empty file stamps it a moment later
        if pid is not None:
            break
        time.sleep(0.005)
        pid, host = _owner(path)
    kill = f" (kill {pid})" if pid is not None and _alive(pid, host) else ""
    return InputError(f"{folder} is in use by {_who(pid, host)}, which holds its lock {path}: "
                      f"wait for it to finish, or stop it{kill}")


def lock_folder(folder):
    """Lock an existing run folder for this process (e.g. --resume). A folder locked by a
    running process is an InputError naming it; a lock left by a process that no longer
    runs is taken over (FolderLock.previous says whose)."""
    path = os.path.join(folder, LOCK)
    for _ in range(10):  # retried only when the lock file is replaced under us
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise InputError(f"cannot lock {folder} (creating {path}): {exc.strerror or exc}") from None
        try:
            if not _flock(fd):
                raise _in_use(folder, path)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # its owner removed it as we opened it: lock the file that is there now
                os.close(fd)
                continue
            pid, host = _owner(path)
            _stamp(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        return FolderLock(folder, fd, previous=(pid, host) if pid is not None and pid != os.getpid() else None)
    raise InputError(f"cannot lock {folder}: its lock file {path} keeps being replaced")


def _new_lock_file(out, path):
    """Create the lock file ``path`` for this process, already locked and stamped with its
    pid, or raise FileExistsError. It is made under a temporary name and hard-linked to
    ``path`` (atomic, and refused if ``path`` exists), so nobody ever sees it unlocked or
    empty; where the file system has no hard links, it is created with O_CREAT | O_EXCL."""
    fd, tmp = tempfile.mkstemp(prefix=CLAIM_PREFIX, dir=out)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o644)  # readable by others (mkstemp makes it private): the messages name its pid
        _flock(fd)  # a new file nobody else knows: always granted
        _stamp(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:  # no hard links here
            os.close(fd)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            _flock(fd)
            _stamp(fd)
    except BaseException:
        os.close(fd)
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return fd


def _others(out):
    """What a folder holds besides its lock and claims in progress."""
    return sorted(n for n in os.listdir(out) if n != LOCK and not n.startswith(CLAIM_PREFIX))


def claim_folder(out, hint="", resumable=lambda names: False):
    """Make ``out`` this process's new run folder, atomically, and lock it; returns a
    FolderLock. ``out`` must not exist yet or be an empty folder. The claim is the
    creation of ``out/.acmr_np.lock`` (``_new_lock_file``: it fails where the file exists):
    of several processes claiming one folder at once exactly one succeeds, and a folder
    whose lock file exists is never claimed again (its run is running, or was killed; one
    killed before saving anything says so, with what to do). ``hint`` is appended to a
    refusal of a folder that holds a run (``resumable(names)`` says whether it does)."""
    parent = os.path.dirname(os.path.abspath(out))
    _make_folder(parent)
    created = False
    try:
        os.mkdir(out)
        created = True
    except FileExistsError:
        if not os.path.isdir(out):
            raise InputError(f"{out} already exists and is not a folder; choose another output folder") from None
    except OSError as exc:
        raise InputError(f"cannot create the output folder {out}: {exc.strerror or exc}") from None
    path = os.path.join(out, LOCK)
    try:
        fd = _new_lock_file(out, path)
    except FileExistsError:
        names = _others(out)
        pid, host = _owner(path)
        if _held(path) or (fcntl is None and _alive(pid, host) is not False):
            raise _in_use(out, path) from None
        if resumable(names):
            raise InputError(f"{out} already holds a run (its last process, {pid}, has stopped); "
                             f"choose another output folder{hint}") from None
        raise InputError(f"{out} holds a run that stopped before saving its first checkpoint "
                         f"({_who(pid, host)} no longer runs): there is nothing in it to resume; "
                         f"remove it (rm -r {out}) or choose another output folder") from None
    except OSError as exc:
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(out)
        raise InputError(f"cannot write into the output folder {out}: {exc.strerror or exc}") from None
    lock = FolderLock(out, fd, created=created)
    try:
        names = _others(out)
        if names:
            raise InputError(f"{out} already exists and is not an empty folder; choose another output "
                             f"folder{hint if resumable(names) else ''}")
    except BaseException:
        lock.release()
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(out)
        raise
    return lock


def fresh_folder(out, hint=""):
    """claim_folder for outputs that are not a run (e.g. --eval-only --out): the folder,
    claimed and locked; release the lock (``.release()``) when done writing."""
    return claim_folder(out, hint)


def add_data_arguments(parser, data_help="a whole data set: .npz, .h5/.hdf5, a folder of .npy files, a "
                       "Wikipedia .mat or a DSCMR folder (default: the synthetic set)"):
    """The data flags every command line shares: --data, or --train/--val/--test files,
    and --keys (README: Data formats)."""
    d = parser.add_argument_group("data (README: Data formats, Your own features)")
    d.add_argument("--data", default=None, help=data_help)
    d.add_argument("--train", dest="train_file", default=None, metavar="FILE",
                   help="instead of --data: one file per split, each holding img, txt and label arrays")
    d.add_argument("--val", dest="val_file", default=None, metavar="FILE", help="the validation split's file "
                   "(optional; without it a stratified part of --train is held out)")
    d.add_argument("--test", dest="test_file", default=None, metavar="FILE", help="the test split's file")
    d.add_argument("--keys", default=None, metavar="OURS=THEIRS,...",
                   help="the arrays' names in your files, e.g. img_train=X_img,txt_train=X_txt,label_train=y "
                        "(or img=X,... for one file per split)")


def source_of(args):
    """Where the command line's data comes from, as runs record it (formats.load_source):
    absolute paths of --data or of --train/--val/--test, and --keys as a dict (None if
    not given)."""
    from .formats import parse_keys
    paths = {"data": args.data, "train": args.train_file, "val": args.val_file, "test": args.test_file}
    out = {k: os.path.abspath(v) if v else None for k, v in paths.items()}
    out["keys"] = parse_keys(args.keys) if args.keys else None
    return out
