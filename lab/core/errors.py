"""Errors the lab reports as one line, never as a traceback.

Every class says who raises it and when. Each keeps its constructor arguments
in ``args`` (and defines ``__reduce__`` where ``__init__`` takes more than a
message) so that an error raised in a buyer or seller process survives being
pickled back to the runner.
"""

from __future__ import annotations

__all__ = [
    "DataFileBusy",
    "LabError",
    "ScenarioError",
    "StoreCorrupted",
    "TornRead",
    "UsageError",
]


class LabError(Exception):
    """Base of every error the CLI turns into one line and a non-zero exit."""

    #: exit status the CLI uses for this error (2: bad input, as argparse does)
    exit_code: int = 2


class UsageError(LabError):
    """Raised by the CLI and the scenario loader when an option's value is invalid."""


class ScenarioError(LabError):
    """Raised by :mod:`lab.core.scenarios` when a scenario is missing or has a bad field."""


class StoreCorrupted(LabError):
    """Raised by :class:`~lab.stores.jsonfile.Store` when data.json is not ``{"ticket_num": N}``.

    A buyer of the naive variant raises it when it reads the file in the instant
    between another buyer's truncate and write: that is a *torn read*, and the
    runner records it as the buyer's error instead of crashing.
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(path, problem)
        self.path = path
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"

    def __reduce__(self) -> tuple[type[StoreCorrupted], tuple[str, str]]:
        # __init__ needs both fields, so pickle must pass them back as constructor args.
        return (type(self), (self.path, self.problem))


class TornRead(StoreCorrupted):
    """data.json was empty when read: another writer had truncated it and not yet written.

    The notes' ``open('w')`` + ``json.dump`` opens this window on every write.
    A buyer reports it as a *torn read* (its own event kind), never by message text.
    """


class DataFileBusy(LabError):
    """Raised by the runner when another ``lab run`` is already using the same data.json."""
