"""lab.net: the TCP ticket server and its wire protocol (docs/protocol.md).

Lives here: ``wire`` (frames, messages, the client, token checks) and ``server``
(the threaded server that owns a data.json through the store). May import:
``lab.stores`` and ``lab.core``. Never writes to the terminal: ``lab serve``'s
command and its output live in ``lab.ui.serve``.
"""

from __future__ import annotations
