"""lab.core: the data, tallies and verdicts every other layer shares.

Lives here: the model (Scenario, BuyerEvent, Receipt, Result, whose tallies and
verdict are properties), explored results, stats over many runs, the typed
contracts (VariantInfo, Step, Ledger), one-line errors, paths, scenario presets
and argument types. May import: the standard library only, nothing from ``lab``.
Never writes to the terminal.
"""

from __future__ import annotations
