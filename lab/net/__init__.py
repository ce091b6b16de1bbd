"""lab.net.wire."""

from __future__ import annotations
