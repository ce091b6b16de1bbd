"""lab.stores: the only code that touches the tickets on disk.

Lives here: the data.json store (``jsonfile``: seed, read, the write kinds,
final snapshot, claim) and the run directories (``rundirs``). May import:
``lab.core`` only. Never writes to the terminal.
"""

from __future__ import annotations
