import sys

import numpy as np
import pytest

from acmr_np import backend
from acmr_np.errors import InputError


def test_numpy_backend_and_array_module():
    assert backend.get_backend("numpy") is np
    assert backend.get_array_module(np.zeros(2), np.ones(1)) is np
    assert backend.backend_name(np) == "numpy"
    x = np.arange(3.0)
    assert backend.to_host(x) is x
    assert backend.to_device([1, 2], np, dtype=np.float32).dtype == np.float32


def test_unknown_backend_is_named():
    with pytest.raises(InputError, match=r"unknown backend 'torch': expected one of numpy, cupy"):
        backend.get_backend("torch")


def test_cupy_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    with pytest.raises(InputError, match=r"needs CuPy, which is not installed.*pip install"):
        backend.get_backend("cupy")
    assert backend.cupy_available() is False


def test_cupy_without_device_is_a_clear_error(monkeypatch):
    class FakeCupy:
        @staticmethod
        def is_available():
            return False
    monkeypatch.setitem(sys.modules, "cupy", FakeCupy)
    with pytest.raises(InputError, match="CuPy is installed but no usable CUDA device"):
        backend.get_backend("cupy")


@pytest.mark.gpu
def test_cupy_round_trip():
    cp = backend.get_backend("cupy")
    x = backend.to_device(np.arange(4.0), cp)
    assert backend.get_array_module(x) is cp and backend.backend_name(cp) == "cupy"
    np.testing.assert_array_equal(backend.to_host(x), np.arange(4.0))
