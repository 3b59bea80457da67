"""The array backend: NumPy on the CPU or CuPy on an NVIDIA GPU, chosen by name.

Every array operation in the package calls ``xp.something`` where ``xp`` is either
the ``numpy`` or the ``cupy`` module; nothing else changes between the two.  The module
is taken from the arrays themselves (``get_array_module``, the Chainer idiom), so
there is no global "current backend" that one piece of code could set and another
could trip over.  Moving arrays between host and device is always explicit:
``to_device`` and ``to_host``.
"""
import numpy

from .errors import InputError

BACKENDS = ("numpy", "cupy")


def _import_cupy():
    """Return the ``cupy`` module, or raise InputError saying why it cannot be used.

    ``import cupy`` can succeed on a machine without a GPU (or without the CUDA
    driver) and then fail at the first array, so we also ask
    ``cupy.is_available()``, which checks for a usable CUDA device.
    """
    try:
        import cupy
    except ImportError as exc:  # not installed, or its CUDA libraries are missing
        raise InputError(
            "backend 'cupy' needs CuPy, which is not installed "
            f"({exc}); install it with: pip install 'acmr_np[gpu]' "
            "(or the cupy-cudaXXx wheel matching your CUDA version)") from None
    try:
        usable = cupy.is_available()
    except Exception:  # some broken installs raise instead of answering False
        usable = False
    if not usable:
        raise InputError(
            "backend 'cupy': CuPy is installed but no usable CUDA device was found "
            "(check nvidia-smi and the CUDA driver); use the numpy backend on this machine")
    return cupy


def get_backend(name):
    """Return the array module for a backend name: ``numpy`` or ``cupy``.

    Raises InputError for an unknown name, and for ``cupy`` when CuPy is missing or
    no CUDA device is usable. There is no silent fallback to NumPy.
    """
    if name == "numpy":
        return numpy
    if name == "cupy":
        return _import_cupy()
    raise InputError(f"unknown backend {name!r}: expected one of {', '.join(BACKENDS)}")


def cupy_available():
    """True when CuPy imports and a CUDA device is usable (used by tests to skip)."""
    try:
        _import_cupy()
    except InputError:
        return False
    return True


def get_array_module(*arrays):
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``.

    Looks at the array's type instead of importing CuPy, so a NumPy-only run never
    pays for (or fails on) ``import cupy``.
    """
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            import cupy
            return cupy
    return numpy


def backend_name(xp):
    """``"numpy"`` or ``"cupy"`` for an array module."""
    return "cupy" if xp.__name__.startswith("cupy") else "numpy"


def to_device(x, xp, dtype=None):
    """Copy a host (or device) array to the backend ``xp``; optionally cast."""
    return xp.asarray(x, dtype=dtype)


def to_host(x):
    """Return a NumPy array: copies a CuPy array from the GPU, passes others through."""
    if type(x).__module__.startswith("cupy"):
        return x.get()
    return numpy.asarray(x)
