"""lab.harness: runs the variants and collects what happened.

Lives here: ``runner`` (plan, fork the buyers, fire the start gun, collect the
reports, reap, build the Result), ``compare`` (every variant K times) and
``explore`` (the buyers' code one step at a time: explore, replay). May import:
``lab.variants``, ``lab.buyer``, ``lab.net``, ``lab.stores``, ``lab.core``.
Never writes to the terminal: it reports through an Observer that ``lab.ui`` supplies.
"""

from __future__ import annotations
