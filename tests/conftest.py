import pytest

from acmr_np.backend import cupy_available


def pytest_collection_modifyitems(config, items):
    # GPU tests carry @pytest.mark.gpu; skip them cleanly where no CUDA device is usable.
    if cupy_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy with a usable CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
