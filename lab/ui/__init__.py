"""lab.ui: everything the user sees, and the only code that writes to a terminal.

Lives here: ``cli`` (argument parsing and dispatch), ``serve`` (``lab serve``),
``stepper`` (``lab step``), ``progress`` (the live bar and --verbose lines), and
the pure renderers ``render``, ``timeline`` and ``report_html``, which build
rich renderables and HTML from ``lab.core`` data and import only ``lab.core``.
May import: every layer below (harness, variants, buyer, net, stores, core).
"""

from __future__ import annotations
