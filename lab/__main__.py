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


def _early(signum: int, frame: FrameType | None) -> None:
    # Before entry() runs: the console script is still importing this module.
    print("lab: interrupted", file=sys.stderr)
    raise SystemExit(128 + signum)


if __name__ in ("__main__", "lab.__main__"):
    # First thing, as this module is imported by the ``lab`` script (or run by
    # ``python -m lab``): from here on a Ctrl-C is one line and 130, not the
    # traceback of an interrupted import. Nothing else imports this module.
    signal.signal(signal.SIGINT, _early)
    signal.signal(signal.SIGTERM, _early)


def entry() -> int:
    """Run the CLI; the console script ``lab`` calls this."""
    signal.signal(signal.SIGTERM, _terminate)
    # Python's own Ctrl-C again: the imports below turn it into "lab: interrupted".
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        from lab.ui.cli import main  # noqa: PLC0415 - imported after the handlers, on purpose

        return main()
    except KeyboardInterrupt:
        # During the imports, or in the instant before main's own handling begins.
        print("lab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(entry())
