"""Import a heavy module on first use, so ``lab --help`` never pays for a database client.

psycopg and redis each take about 0.17 s to import; the registry lists every
variant (and so imports every engine module) for ``lab variants`` and the
CLI's choices. An engine module therefore binds its client library with
:func:`lazy_import` (the standard library's ``importlib.util.LazyLoader``):
the module object is there at once, and it is executed on the first
attribute access, i.e. when a buyer or a store really talks to the engine.

Type checkers see the real import: write ::

    if TYPE_CHECKING:
        import psycopg
    else:
        psycopg = lazy_import("psycopg")
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

__all__ = ["lazy_import"]


def lazy_import(name: str) -> ModuleType:
    """``name`` as a module that loads itself on first attribute access."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
