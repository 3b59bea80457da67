"""A strict CuPy stand-in, so that every CPU-only test run exercises the CuPy code path.

    import cupy_standin
    cp = cupy_standin.install()        # sys.modules["cupy"] = a fresh stand-in; returns it
    x = cp.asarray(numpy_array)        # a "device" array: type(x).__module__ == "cupy"
    with cp.counting() as c:           # counts for one block of code
        ...
    c.syncs, c.transfers, c.launches   # also cp.counts() for everything since install

(tests/conftest.py has the ``cupy_standin`` fixture, which installs one for a single test,
and ``run_with_cupy_standin`` for command lines in a subprocess.)

What it enforces, as CuPy 14.2 does:

* ``cupy.ndarray`` wraps a NumPy array and never converts itself implicitly:
  ``numpy.asarray(x)``, ``numpy.array(x)``, ``x.__array__()`` raise TypeError, and so does
  a NumPy array (or a list) mixed with a device array in an operator or a ufunc.
  ``float(x)``, ``int(x)``, ``bool(x)``, ``x.item()``, ``x.tolist()``, ``x.get()``,
  ``repr(x)`` work, and each is counted as a synchronisation and a device-to-host transfer.
  There is no ``__index__`` (CuPy has none). Iterating yields device arrays, as in CuPy.
* Only the names listed below exist, with CuPy's keyword arguments: any other name
  raises AttributeError, any other keyword TypeError. The lists hold the names this
  package uses (plus a few close relatives), each checked against CuPy 14.2.0's
  namespace and signatures (tests/test_cupy_standin.py re-checks them against a JSON
  snapshot of that namespace when CUPY_API_JSON names one). A name CuPy has but this
  file lacks is added here, with CuPy's signature.
* Data-dependent shapes wait for the device as in CuPy: ``nonzero``, boolean-mask
  indexing, one-argument ``where`` (one sync each) and ``bincount`` (two: its
  negative-value check and ``int(x.max())``, so an empty ``x`` raises ValueError there,
  cupy/cupy#8116). ``argsort``/``sort`` are stable and take only kind=None or 'stable'.

What it counts (approximately, as a GPU profile would): one launch per elementwise
operation, reduction, matrix product, copy, gather/scatter or filled creation (zeros,
ones, arange...); views (slices, reshape, ``.T``) and ``empty`` are free, as in CuPy
(``empty`` only takes memory from the pool). ``cupy.fuse(f)`` is ONE launch per call,
whatever f does inside (f runs on device arrays with counting off; a sync inside raises
TypeError, as tracing does in CuPy).

Arithmetic is NumPy's, so results equal the NumPy backend's bit for bit. With
``reverse=True`` (or the ``reversed_order()`` block, or CUPY_STANDIN_REVERSE=1 at
install) sums, means, matrix products and weighted bincounts accumulate in reversed
order, as a GPU reduction tree, cuBLAS or atomics may: the last bits of float results
change, integers do not.
"""
import collections
import contextlib
import functools
import inspect
import json
import os
import sys
import types

import numpy

VERSION = "14.2.0"

# ----------------------------------------------------------------------------- allow-lists
# Checked against CuPy 14.2.0's namespace and signatures (a JSON snapshot of an installed
# CuPy 14.2.0, cupy_api.json; see test_allow_lists_match_the_cupy_namespace_snapshot).
# Functions: name -> CuPy's parameter list.

UFUNCS = ("add subtract multiply divide true_divide negative positive maximum minimum abs absolute sqrt "
          "square exp log log1p tanh isfinite isnan equal not_equal greater greater_equal less less_equal "
          "logical_and logical_or logical_not power remainder floor_divide bitwise_and bitwise_or "
          "bitwise_xor invert left_shift right_shift").split()

FUNCTIONS = {
    "array": "obj, dtype=None, copy=True, order='K', subok=False, ndmin=0, *, blocking=False",
    "asarray": "a, dtype=None, order=None, *, copy=None, blocking=False",
    "asnumpy": "a, stream=None, order='C', out=None, *, blocking=True",
    "ascontiguousarray": "a, dtype=None",
    "zeros": "shape, dtype=float, order='C'",
    "ones": "shape, dtype=float, order='C'",
    "empty": "shape, dtype=float, order='C'",
    "full": "shape, fill_value, dtype=None, order='C'",
    "zeros_like": "a, dtype=None, order='K', subok=None, shape=None",
    "ones_like": "a, dtype=None, order='K', subok=None, shape=None",
    "empty_like": "prototype, dtype=None, order='K', subok=None, shape=None",
    "arange": "start, stop=None, step=None, dtype=None",
    "concatenate": "tup, axis=0, out=None, *, dtype=None, casting='same_kind'",
    "stack": "tup, axis=0, out=None, *, dtype=None, casting='same_kind'",
    "where": "condition, x=None, y=None",
    "matmul": "x1, x2, /, *, out=None, dtype=None, casting='same_kind'",  # a subset of CuPy's gufunc keywords
    "dot": "a, b, out=None",
    "vdot": "a, b",
    "sum": "a, axis=None, dtype=None, out=None, keepdims=False",
    "mean": "a, axis=None, dtype=None, out=None, keepdims=False",
    "max": "a, axis=None, out=None, keepdims=False",
    "min": "a, axis=None, out=None, keepdims=False",
    "all": "a, axis=None, out=None, keepdims=False",
    "any": "a, axis=None, out=None, keepdims=False",
    "argmax": "a, axis=None, dtype=None, out=None, keepdims=False",
    "argmin": "a, axis=None, dtype=None, out=None, keepdims=False",
    "argsort": "a, axis=-1, kind=None",
    "sort": "a, axis=-1, kind=None",
    "cumsum": "a, axis=None, dtype=None, out=None",
    "nonzero": "a",
    "bincount": "x, weights=None, minlength=None",
    "clip": "a, a_min, a_max, out=None",
    "copyto": "dst, src, casting='same_kind', where=None",
    "reshape": "a, newshape, order='C', *, copy=None",
    "ravel": "a, order='C'",
    "transpose": "a, axes=None",
    "expand_dims": "a, axis",
    "squeeze": "a, axis=None",
    "take_along_axis": "a, indices, axis",
    "get_array_module": "*args",
    "is_available": "",
    "fuse": "*args, **kwargs",
    "get_default_memory_pool": "",
    "get_default_pinned_memory_pool": "",
}
TYPES = ("float16 float32 float64 int8 int16 int32 int64 uint8 uint16 uint32 uint64 bool_ intp "
         "integer floating dtype").split()  # NumPy's own objects in CuPy too
CONSTANTS = {"inf": numpy.inf, "nan": numpy.nan, "pi": numpy.pi, "e": numpy.e, "newaxis": None}

# ndarray methods: name -> CuPy's parameter list (after self)
METHODS = {
    "all": "axis=None, out=None, keepdims=False", "any": "axis=None, out=None, keepdims=False",
    "argmax": "axis=None, out=None, dtype=None, keepdims=False",
    "argmin": "axis=None, out=None, dtype=None, keepdims=False",
    "argsort": "axis=-1, kind=None", "sort": "axis=-1, kind=None",
    "astype": "dtype, order='K', casting=None, subok=None, copy=True",
    "clip": "min=None, max=None, out=None", "copy": "order='C'",
    "cumsum": "axis=None, dtype=None, out=None", "dot": "b, out=None", "fill": "value",
    "flatten": "order='C'", "max": "axis=None, out=None, keepdims=False",
    "min": "axis=None, out=None, keepdims=False",
    "mean": "axis=None, dtype=None, out=None, keepdims=False",
    "sum": "axis=None, dtype=None, out=None, keepdims=False",
    "prod": "axis=None, dtype=None, out=None, keepdims=False",
    "std": "axis=None, dtype=None, out=None, ddof=0, keepdims=False",
    "var": "axis=None, dtype=None, out=None, ddof=0, keepdims=False",
    "nonzero": "", "ravel": "order='C'", "reshape": "*shape, order='C', copy=None",
    "squeeze": "axis=None", "swapaxes": "axis1, axis2", "take": "indices, axis=None, out=None",
    "transpose": "*axes", "view": "dtype=None, type=None",
    "get": "stream=None, order='C', out=None, blocking=True", "set": "arr, stream=None",
    "item": "", "tolist": "",
}
VIEWS = {"reshape", "ravel", "transpose", "squeeze", "swapaxes", "expand_dims", "view"}  # no launch
NO_LAUNCH = VIEWS | {"empty", "empty_like", "get_array_module", "is_available", "fuse",
                     "get_default_memory_pool", "get_default_pinned_memory_pool"}
REVERSIBLE = {"sum", "mean"}   # reductions whose order the reversed mode changes (+ matmul, dot, vdot, bincount)
STANDIN_API = ("counts", "counting", "reset_counts", "reversed_order")  # the stand-in's own names


def _signature(params):
    return inspect.signature(eval(f"lambda {params}: None", {"float": float}))


_FUNC_SIGS = {name: _signature(p) for name, p in FUNCTIONS.items()}
_METHOD_SIGS = {name: _signature(p) for name, p in METHODS.items()}


def _check(sig, qualname, args, kwargs):
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{qualname}(): {exc} (cupy_standin: CuPy 14.2's signature is {qualname}{sig})") from None


# ----------------------------------------------------------------------------- counters

class Counts:
    """Synchronisations, transfers (either direction) and approximate kernel launches;
    ``by_kind`` says where the syncs and transfers came from (e.g. 'sync bincount')."""

    def __init__(self):
        self.syncs = self.transfers = self.launches = 0
        self.by_kind = collections.Counter()

    def as_dict(self):
        return {"syncs": self.syncs, "transfers": self.transfers, "launches": self.launches}

    def __repr__(self):
        return f"Counts({self.as_dict()}, {dict(self.by_kind)})"


class _Device:
    """The state of one stand-in module: its counters, the reversed mode, the fusion depth."""

    def __init__(self, reverse):
        self.reverse = reverse
        self.total = Counts()
        self.active = [self.total]   # total, plus one Counts per open counting() block
        self.fusing = 0

    def launch(self, n=1):
        if not self.fusing:
            for c in self.active:
                c.launches += n

    def transfer(self, what):
        self._not_fusing(what)
        for c in self.active:
            c.transfers += 1
            c.by_kind["transfer " + what] += 1

    def sync(self, what, transfer=True):
        """A wait for the device; ``transfer``: it also copies a value back to the host."""
        self._not_fusing(what)
        for c in self.active:
            c.syncs += 1
            c.by_kind["sync " + what] += 1
        if transfer:
            self.transfer(what)

    def _not_fusing(self, what):
        if self.fusing:
            raise TypeError(f"cupy.fuse: {what} inside a fused function (a kernel cannot hand "
                            f"values to Python nor copy host data)")


# ----------------------------------------------------------------------------- arrays

_SCALARS = (bool, int, float, complex, numpy.generic)


def _operand(x):
    """An operand of an operator or ufunc: a device array or a scalar, as in CuPy."""
    if isinstance(x, _ndarray):
        return x._a
    if isinstance(x, _SCALARS):
        return x
    raise TypeError(f"Unsupported type {type(x)}")  # CuPy's words, for NumPy arrays, lists, ...


def _arg(x):
    """A function argument: device arrays unwrapped (in lists and tuples too); host arrays
    refused, as CuPy's functions do."""
    if isinstance(x, _ndarray):
        return x._a
    if isinstance(x, numpy.ndarray):
        raise TypeError(f"Unsupported type {type(x)} (cupy_standin: a NumPy array where CuPy "
                        f"needs a cupy.ndarray; copy it with cupy.asarray first)")
    if isinstance(x, (list, tuple)):
        return type(x)(_arg(v) for v in x)
    return x


def _rev(a, axis):
    """a with ``axis`` (an int, a tuple, or None: all) reversed, contiguous, so that a
    reduction over it adds in the reversed order."""
    return numpy.ascontiguousarray(numpy.flip(a, axis))


class _ndarray:
    """Base of each stand-in module's ``cupy.ndarray``, a subclass that carries the
    module's _Device as ``_dev``. Wraps a NumPy array ``_a``."""
    __slots__ = ("_a",)
    __hash__ = None
    _dev = None

    def __init__(self, *args, **kwargs):
        raise TypeError("cupy_standin: make device arrays with cupy.asarray, cupy.zeros, ...")

    @classmethod
    def _from(cls, a):
        obj = object.__new__(cls)
        obj._a = a
        return obj

    @classmethod
    def _wrap(cls, r):
        if isinstance(r, numpy.ndarray):
            return cls._from(r)
        if isinstance(r, numpy.generic):
            return cls._from(numpy.asarray(r))  # CuPy gives 0-d arrays, never NumPy scalars
        if isinstance(r, (tuple, list)):
            return type(r)(cls._wrap(v) for v in r)
        return r

    # ---- what needs no device work
    shape = property(lambda self: self._a.shape)
    ndim = property(lambda self: self._a.ndim)
    dtype = property(lambda self: self._a.dtype)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    T = property(lambda self: self._from(self._a.T))
    flags = property(lambda self: types.SimpleNamespace(
        c_contiguous=self._a.flags.c_contiguous, f_contiguous=self._a.flags.f_contiguous,
        owndata=self._a.flags.owndata))

    def __len__(self):
        if self._a.ndim == 0:
            raise TypeError("len() of unsized object")
        return len(self._a)

    def __iter__(self):  # device rows, as in CuPy; nothing goes to the host
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self._a.shape[0]))

    def __getattr__(self, name):
        raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r} (cupy_standin: not in "
                             f"METHODS; if CuPy 14.2 has it, add it there with CuPy's signature)")

    # ---- to the host: implicitly never; explicitly with a sync and a transfer
    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def get(self, stream=None, order="C", out=None, blocking=True):
        self._dev.sync("get")
        host = numpy.array(self._a, order=order, copy=True)
        if out is None:
            return host
        out[...] = host
        return out

    def set(self, arr, stream=None):
        if not isinstance(arr, numpy.ndarray):
            raise TypeError("Only numpy.ndarray can be set to cupy.ndarray")
        self._dev.transfer("set")
        self._a[...] = arr

    def _read(self, what, convert):
        self._dev.sync(what)
        return convert(self._a)

    __float__ = lambda self: self._read("float", float)
    __int__ = lambda self: self._read("int", int)
    __complex__ = lambda self: self._read("complex", complex)
    __bool__ = lambda self: self._read("bool", bool)
    item = lambda self: self._read("item", numpy.ndarray.item)
    tolist = lambda self: self._read("tolist", numpy.ndarray.tolist)
    __repr__ = lambda self: self._read("repr", repr)
    __str__ = lambda self: self._read("str", str)
    __format__ = lambda self, spec: self._read("format", lambda a: format(a, spec))

    def __reduce__(self):
        raise TypeError("cupy_standin: pickling a device array is not emulated; .get() it first")

    def __copy__(self):
        self._dev.launch()
        return self._from(self._a.copy())

    def __deepcopy__(self, memo):
        return self.__copy__()

    # ---- indexing: basic indices are views (free); integer/boolean arrays gather (a launch)
    def _key(self, key):
        parts, out, mask, gather = (key if isinstance(key, tuple) else (key,)), [], False, False
        for k in parts:
            if isinstance(k, _ndarray):
                k = k._a
            elif isinstance(k, (numpy.ndarray, list)):  # CuPy copies a host index to the device
                self._dev.transfer("index")
                k = numpy.asarray(k)
            if isinstance(k, numpy.ndarray):
                mask, gather = mask or k.dtype == numpy.bool_, True
            out.append(k)
        if mask:
            self._dev.sync("boolean mask")  # the result's size is the number of True entries
        return (tuple(out) if isinstance(key, tuple) else out[0]), gather

    def __getitem__(self, key):
        k, gather = self._key(key)
        if gather:
            self._dev.launch()
        return self._wrap(self._a[k])

    def __setitem__(self, key, value):
        k, _ = self._key(key)
        if isinstance(value, _ndarray):
            value = value._a
        elif isinstance(value, (numpy.ndarray, list, tuple)):  # CuPy copies it to the device
            self._dev.transfer("setitem value")
            value = numpy.asarray(value)
        self._dev.launch()
        self._a[k] = value

    # ---- NumPy's protocols, answered as CuPy does: by CuPy's function of the same name
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method != "__call__" or ufunc.__name__ not in UFUNCS + ["matmul"]:
            return NotImplemented
        if isinstance(kwargs.get("out"), tuple):
            (kwargs["out"],) = kwargs["out"]
        return _apply(type(self), ufunc.__name__, inputs, kwargs)

    def __array_function__(self, func, types_, args, kwargs):
        if func.__module__ != "numpy" or func.__name__ not in FUNCTIONS or func.__name__ in _HOST_IN:
            return NotImplemented
        return _call(type(self), func.__name__, args, kwargs)


def _apply(cls, name, args, kwargs):
    """A ufunc or matmul: operands are device arrays or scalars; out must be a device array."""
    extra = set(kwargs) - {"out", "dtype", "casting"}
    if extra:
        raise TypeError(f"Wrong arguments {sorted(extra)} (cupy_standin: CuPy's ufuncs take out, dtype, casting)")
    nin = 2 if name == "matmul" else getattr(numpy, name).nin
    if len(args) == nin + 1 and kwargs.get("out") is None:  # out given by position
        *args, kwargs["out"] = args
    if len(args) != nin:
        raise TypeError(f"Wrong number of arguments for {name!r}.")
    ins = [_operand(a) for a in args]
    kw = {k: v for k, v in kwargs.items() if v is not None}
    out = kw.pop("out", None)
    if out is not None:
        if not isinstance(out, _ndarray):
            raise TypeError("Output arguments must be cupy.ndarray")
        kw["out"] = out._a
    cls._dev.launch()
    a = ins[0]
    if name == "matmul" and cls._dev.reverse and a.ndim and ins[1].ndim:  # reverse the summed dimension
        ins = [_rev(a, -1), _rev(ins[1], 0 if ins[1].ndim == 1 else -2)]
    r = getattr(numpy, name)(*ins, **kw)
    return out if out is not None else cls._wrap(r)


def _binary(name, reflected=False):
    def op(self, other):
        if not isinstance(other, (_ndarray, numpy.ndarray) + _SCALARS):
            return NotImplemented
        return _apply(type(self), name, (other, self) if reflected else (self, other), {})
    return op


def _inplace(name):
    def op(self, other):
        _apply(type(self), name, (self, other), {"out": self})
        return self
    return op


def _unary(name):
    return lambda self: _apply(type(self), name, (self,), {})


for _op, _uf in {"add": "add", "sub": "subtract", "mul": "multiply", "truediv": "true_divide",
                 "floordiv": "floor_divide", "mod": "remainder", "pow": "power", "and": "bitwise_and",
                 "or": "bitwise_or", "xor": "bitwise_xor", "lshift": "left_shift",
                 "rshift": "right_shift", "matmul": "matmul"}.items():
    setattr(_ndarray, f"__{_op}__", _binary(_uf))
    setattr(_ndarray, f"__r{_op}__", _binary(_uf, reflected=True))
    if _op != "matmul":  # CuPy has no __imatmul__: `a @= b` makes a new array
        setattr(_ndarray, f"__i{_op}__", _inplace(_uf))
for _op, _uf in {"eq": "equal", "ne": "not_equal", "lt": "less", "le": "less_equal", "gt": "greater",
                 "ge": "greater_equal"}.items():
    setattr(_ndarray, f"__{_op}__", _binary(_uf))
for _op, _uf in {"neg": "negative", "pos": "positive", "abs": "absolute", "invert": "invert"}.items():
    setattr(_ndarray, f"__{_op}__", _unary(_uf))


def _method(name):
    sig = _METHOD_SIGS[name]

    def method(self, *args, **kwargs):
        _check(sig, f"cupy.ndarray.{name}", args, kwargs)
        if name in ("argsort", "nonzero", "dot"):
            return _call(type(self), name, (self,) + args, kwargs)
        if name == "sort":  # in place, as NumPy's method
            self._a[...] = _call(type(self), "sort", (self,) + args, kwargs)._a
            return None
        bound = sig.bind(*args, **kwargs).arguments
        a = tuple(_arg(v) for v in args)
        kw = {k: _arg(v) for k, v in kwargs.items()}
        if kwargs.get("out") is not None:
            kw["out"] = kwargs["out"]._a
        src = self._a
        if name in REVERSIBLE and self._dev.reverse:
            src = _rev(src, bound.get("axis"))
        if not (name in VIEWS or (name == "astype" and bound.get("copy") is False
                                  and numpy.dtype(bound["dtype"]) == self.dtype)):
            self._dev.launch()
        r = getattr(src, name)(*a, **kw)
        return kwargs["out"] if kwargs.get("out") is not None else self._wrap(r)
    method.__name__ = method.__qualname__ = name
    return method


for _name in METHODS:
    if _name not in vars(_ndarray):
        setattr(_ndarray, _name, _method(_name))


# ----------------------------------------------------------------------------- functions

_HOST_IN = {"array", "asarray", "asnumpy", "ascontiguousarray"}   # take host data
_ARRAY_FIRST = {"a", "x", "x1", "condition", "prototype", "dst"}  # a first parameter that must be on the device


def _call(cls, name, args, kwargs):
    """cupy.<name>(*args, **kwargs) for a name in FUNCTIONS (the generic ones run NumPy's)."""
    dev, sig = cls._dev, _FUNC_SIGS[name]
    _check(sig, f"cupy.{name}", args, kwargs)
    bound = sig.bind(*args, **kwargs).arguments
    first = next(iter(sig.parameters), None)
    if first in _ARRAY_FIRST and name not in _HOST_IN and not isinstance(bound[first], _ndarray):
        raise TypeError(f"Unsupported type {type(bound[first])} (cupy_standin: cupy.{name} needs a "
                        f"cupy.ndarray)")
    if first == "tup" and not all(isinstance(v, _ndarray) for v in bound["tup"]):
        raise TypeError("Only cupy arrays can be concatenated")
    special = _SPECIAL.get(name)
    if special is not None:
        return special(cls, **bound)
    if name == "matmul":
        return _apply(cls, name, args, kwargs)
    if name == "where" and bound.get("x") is None and bound.get("y") is None:
        return _nonzero(cls, bound["condition"])
    a = tuple(_arg(v) for v in args)
    kw = {k: _arg(v) for k, v in kwargs.items()}
    out = kwargs.get("out")
    if out is not None:
        if not isinstance(out, _ndarray):
            raise TypeError("Output arguments must be cupy.ndarray")
        kw["out"] = out._a
    if name not in NO_LAUNCH:
        dev.launch()
    if dev.reverse and name in REVERSIBLE:  # sum, mean: NumPy's parameter names are CuPy's
        a = (_rev(bound["a"]._a, bound.get("axis")),)
        kw = {k: _arg(v) for k, v in bound.items() if k != "a"}
    elif dev.reverse and name in ("dot", "vdot") and a[0].ndim and a[1].ndim:
        if name == "vdot":
            a = (_rev(a[0].ravel(), None), _rev(a[1].ravel(), None))
        else:
            a = (_rev(a[0], -1), _rev(a[1], 0 if a[1].ndim == 1 else -2)) + a[2:]
    r = getattr(numpy, name)(*a, **kw)
    return out if out is not None else cls._wrap(r)


def _asarray(cls, obj=None, dtype=None, order=None, copy=None, name="asarray", a=None, **_):
    """Host data -> device (one transfer); a device array passes, or is copied (a launch)."""
    dev, obj = cls._dev, obj if a is None else a
    if isinstance(obj, _ndarray):
        if copy or name == "array" or (dtype is not None and numpy.dtype(dtype) != obj.dtype):
            dev.launch()
            return cls._from(obj._a.astype(dtype or obj.dtype, copy=True))
        return obj
    if isinstance(obj, (list, tuple)) and any(isinstance(v, _ndarray) for v in obj):
        dev.launch()  # CuPy joins device elements on the device
        return cls._from(numpy.array(_arg(obj), dtype=dtype))
    dev.transfer(name)
    return cls._from(numpy.array(obj, dtype=dtype, order=order or "K", copy=True))


def _sort(cls, name, a, axis=-1, kind=None):
    if kind not in (None, "stable"):
        raise ValueError("kind can only be None or 'stable'")  # CuPy's sorts are all stable
    cls._dev.launch()
    return cls._wrap(getattr(numpy, name)(a._a, axis=axis, kind="stable"))


def _nonzero(cls, a):
    cls._dev.launch(2)         # count, then fill
    cls._dev.sync("nonzero")   # the count is the output's shape
    return cls._wrap(numpy.nonzero(a._a))


def _bincount(cls, x, weights=None, minlength=None):
    """CuPy 14.2's bincount reads (x < 0).any() and int(x.max()) on the host (two syncs),
    so an empty x raises ValueError, even with minlength (cupy/cupy#8116)."""
    dev = cls._dev
    if x.ndim != 1:
        raise ValueError("object too deep for desired array" if x.ndim > 1 else
                         "object of too small depth for desired array")
    if x.dtype.kind == "f":
        raise TypeError("x must be int array")
    dev.launch(2)
    dev.sync("bincount (x < 0).any()")
    if (x._a < 0).any():
        raise ValueError("The first argument of bincount must be non-negative")
    if weights is not None and x.shape != weights.shape:
        raise ValueError("The weights and list don't have the same length.")
    dev.launch()
    if x.size == 0:
        raise ValueError("zero-size array to reduction operation cupy_max which has no identity")
    dev.sync("bincount int(x.max())")
    dev.launch(2)  # zeros, then the atomicAdd kernel
    xa, w = x._a, None if weights is None else _arg(weights)
    if dev.reverse and w is not None:  # atomic additions land in no fixed order
        xa, w = xa[::-1], w[::-1]
    return cls._wrap(numpy.bincount(xa, weights=w, minlength=minlength or 0))


_SPECIAL = {
    "array": lambda cls, **kw: _asarray(cls, name="array", **kw),
    "asarray": lambda cls, **kw: _asarray(cls, **kw),
    "ascontiguousarray": lambda cls, a, dtype=None: _asarray(cls, a=a, dtype=dtype),
    "asnumpy": lambda cls, a, out=None, **_: a.get(out=out) if isinstance(a, _ndarray) else numpy.asarray(a),
    "argsort": lambda cls, **kw: _sort(cls, "argsort", **kw),
    "sort": lambda cls, **kw: _sort(cls, "sort", **kw),
    "nonzero": lambda cls, a: _nonzero(cls, a),
    "bincount": _bincount,
}


# ----------------------------------------------------------------------------- the module

def _function(cls, name):
    def f(*args, **kwargs):
        return _call(cls, name, args, kwargs)
    f.__name__ = f.__qualname__ = name
    f.__module__ = "cupy"
    return f


class _Ufunc:
    def __init__(self, cls, name):
        self._cls, self.__name__, self.name = cls, name, name
        self.nin, self.nout = getattr(numpy, name).nin, 1

    def __call__(self, *args, **kwargs):
        return _apply(self._cls, self.__name__, args, kwargs)

    def __repr__(self):
        return f"<ufunc 'cupy_{self.__name__}'>"


class _MemoryPool:
    def used_bytes(self):
        return 0

    total_bytes = free_bytes = n_free_blocks = used_bytes

    def free_all_blocks(self, stream=None):
        pass


def _missing(module_name):
    def __getattr__(name):
        raise AttributeError(f"module {module_name!r} has no attribute {name!r} (cupy_standin: not in its "
                             f"allow-list; if CuPy 14.2 has it, add it to tests/cupy_standin.py)")
    return __getattr__


def new_module(reverse=None):
    """A fresh stand-in ``cupy`` module with its own array class and counters. ``reverse``:
    reductions add in reversed order (default: CUPY_STANDIN_REVERSE=1 in the environment)."""
    if reverse is None:
        reverse = os.environ.get("CUPY_STANDIN_REVERSE") == "1"
    dev = _Device(bool(reverse))
    cls = type("ndarray", (_ndarray,), {"__slots__": (), "__module__": "cupy", "_dev": dev})
    mod = types.ModuleType("cupy", "cupy_standin: a strict CuPy 14.2 stand-in running NumPy (tests/cupy_standin.py)")
    mod.__version__, mod.__file__, mod.__getattr__ = VERSION, __file__, _missing("cupy")
    mod.ndarray = cls
    for name in UFUNCS:
        setattr(mod, name, _Ufunc(cls, name))
    for name in FUNCTIONS:
        setattr(mod, name, _function(cls, name))
    for name in TYPES:
        setattr(mod, name, getattr(numpy, name))
    for name, value in CONSTANTS.items():
        setattr(mod, name, value)

    def get_array_module(*args):
        return mod if any(isinstance(a, _ndarray) for a in args) else numpy

    def fuse(*args, **kwargs):
        if set(kwargs) - {"kernel_name"}:
            raise TypeError(f"fuse() got unexpected keyword arguments {sorted(set(kwargs) - {'kernel_name'})}")

        def decorate(f):
            @functools.wraps(f)
            def fused(*a, **k):
                for v in list(a) + list(k.values()):
                    _operand(v)  # device arrays and scalars only, as in CuPy
                dev.launch()      # the whole call is one kernel
                dev.fusing += 1
                try:
                    return f(*a, **k)
                finally:
                    dev.fusing -= 1
            return fused
        return decorate(args[0]) if len(args) == 1 and callable(args[0]) and not kwargs else decorate

    pool, pinned = _MemoryPool(), _MemoryPool()
    mod.get_array_module, mod.fuse, mod.is_available = get_array_module, fuse, lambda: True
    mod.get_default_memory_pool, mod.get_default_pinned_memory_pool = lambda: pool, lambda: pinned

    class Device:
        def __init__(self, device=None):
            self.id = 0 if device is None else int(device)
            self.compute_capability = "90"

        def synchronize(self):
            dev.sync("Device.synchronize", transfer=False)

        def use(self):
            pass

        __enter__ = lambda self: self
        __exit__ = lambda self, *exc: False

    cuda = types.ModuleType("cupy.cuda")
    cuda.__getattr__ = _missing("cupy.cuda")
    cuda.Device, cuda.is_available, cuda.get_device_id = Device, lambda: True, lambda: 0
    runtime = types.ModuleType("cupy.cuda.runtime")
    runtime.__getattr__ = _missing("cupy.cuda.runtime")
    runtime.deviceSynchronize = lambda: dev.sync("deviceSynchronize", transfer=False)
    runtime.getDeviceCount = lambda: 1
    runtime.getDeviceProperties = lambda device: {
        "name": b"cupy_standin (NumPy on the CPU)", "totalGlobalMem": 2 ** 36, "major": 9, "minor": 0}
    cuda.runtime, mod.cuda = runtime, cuda

    # the stand-in's own names (none of them exists in CuPy)
    mod.counts = lambda: dev.total.as_dict()

    def reset_counts():
        dev.total.__init__()
    mod.reset_counts = reset_counts

    @contextlib.contextmanager
    def counting():
        c = Counts()
        dev.active.append(c)
        try:
            yield c
        finally:
            dev.active.remove(c)
    mod.counting = counting

    @contextlib.contextmanager
    def reversed_order(on=True):
        before, dev.reverse = dev.reverse, on
        try:
            yield
        finally:
            dev.reverse = before
    mod.reversed_order = reversed_order
    return mod


def modules(mod):
    """The sys.modules entries for a stand-in module: cupy, cupy.cuda, cupy.cuda.runtime."""
    return {"cupy": mod, "cupy.cuda": mod.cuda, "cupy.cuda.runtime": mod.cuda.runtime}


def install(reverse=None):
    """Put a fresh stand-in into sys.modules (for a whole process) and return it. With
    CUPY_STANDIN_COUNTS=FILE in the environment, its counts are appended to FILE as one
    JSON line ({"argv", "syncs", "transfers", "launches", "by_kind"}) when the process exits."""
    import atexit
    mod = new_module(reverse)
    sys.modules.update(modules(mod))
    path = os.environ.get("CUPY_STANDIN_COUNTS")
    if path:
        def dump():
            with open(path, "a") as f:
                f.write(json.dumps({"argv": sys.argv, **mod.counts(),
                                    "by_kind": dict(mod.ndarray._dev.total.by_kind)}) + "\n")
        atexit.register(dump)
    return mod
