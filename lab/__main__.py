"""``python -m lab`` and the ``lab`` command: signal handling first, then the heavy imports.

A Ctrl-C or SIGTERM can land while the CLI's modules are still importing
(rich, multiprocessing, the variants). Until the CLI installs its own
handlers, this module makes both end the lab with the usual status (130 or
143) and one line, never an import traceback.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

__all__ = ["entry"]


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def entry() -> int:
    """Run the CLI; the console script ``lab`` calls this."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        from lab.ui.cli import main  # noqa: PLC0415 - imported after the handlers, on purpose

        return main()
    except KeyboardInterrupt:
        # During the imports, or in the instant before main's own handling begins.
        print("lab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(entry())
