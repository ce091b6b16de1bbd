"""lab.ui."""

from __future__ import annotations
