"""Lazy exports: a package lists its public names in a table and imports the module behind one only when it is
used, so `import featx` and `featx --help` load neither torch nor h5py (tests/test_startup.py)."""
from __future__ import annotations

from collections.abc import Callable
from importlib import import_module


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable, Callable, list[str]]:
    """`__getattr__`, `__dir__` and `__all__` for `package`, whose public names live in the modules `exports`
    names (name -> module, relative to the package)."""

    def __getattr__(name: str):
        if name in exports:
            return getattr(import_module(exports[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__, list(exports)
