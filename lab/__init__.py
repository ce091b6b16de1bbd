"""lab: the ticket-grabbing (抢票) race from the course notes, naive and fixed, side by side.

Importing ``lab`` is light: the names below are loaded on first use (PEP 562),
so ``import lab.core.model`` does not pull in the runner, the variants or the
server. See docs/architecture.md for the layers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "VARIANTS",
    "BuyerEvent",
    "Latency",
    "Receipt",
    "Result",
    "Scenario",
    "__version__",
    "run",
]

__version__ = "0.1.0"

_LAZY = {
    "VARIANTS": "lab.variants",
    "BuyerEvent": "lab.core.model",
    "Latency": "lab.core.model",
    "Receipt": "lab.core.model",
    "Result": "lab.core.model",
    "Scenario": "lab.core.model",
    "run": "lab.harness.runner",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lab' has no attribute {name!r}")
