"""Public names of a package loaded on first use (PEP 562), so importing the package costs nothing heavy."""

from __future__ import annotations

import importlib
from typing import Callable, Mapping, Sequence


def lazy_exports(package: str, exports: Mapping[str, Sequence[str]]) -> tuple[Callable, Callable]:
    """(`__getattr__`, `__dir__`) for `package` whose public names live in the given submodules
    (`{".module": ("Name", ...)}`); each is imported when first asked for, then kept as a plain attribute."""
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str):
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(importlib.import_module(package), name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(importlib.import_module(package)), *where})

    return __getattr__, __dir__
