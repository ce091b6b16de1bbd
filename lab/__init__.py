"""lab: the ticket-grabbing (抢票) race from the course notes, naive and fixed, side by side.

Layout: ``model`` (the contract: Scenario, BuyerEvent, Receipt, Result with
derived tallies), ``store`` (the only code touching data.json), ``variants``
(one module per mechanism, one registry), ``runner`` (start gun, collection,
reaping), ``render`` (pure rich renderables), ``cli`` (argument parsing).
"""

from __future__ import annotations

from lab.model import BuyerEvent, Latency, Receipt, Result, Scenario
from lab.runner import run
from lab.variants import VARIANTS

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
