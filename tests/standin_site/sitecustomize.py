"""Installs tests/cupy_standin.py as ``cupy`` in every Python process that starts with this
folder on PYTHONPATH and CUPY_STANDIN=1 in its environment (subprocesses of it included).
Used by ``run_with_cupy_standin`` in tests/conftest.py; does nothing otherwise."""
import os

if os.environ.get("CUPY_STANDIN") == "1":
    import importlib.util
    import sys

    _path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cupy_standin.py")
    _spec = importlib.util.spec_from_file_location("cupy_standin", _path)
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["cupy_standin"] = _module
    _spec.loader.exec_module(_module)
    _module.install()
