"""Scenario presets: TOML files in ``scenarios/`` (read with ``tomllib``).

A scenario file may set ``description``, ``buyers``, ``tickets``, ``latency``
(``"0.05-0.2"`` or a number of seconds), ``arrival`` (seconds between buyers'
arrivals), ``seed``, ``lockstep`` and ``lock``.
Any other key, or a value of the wrong kind, is a :class:`ScenarioError`
naming the field, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from lab.core.errors import ScenarioError
from lab.core.model import MAX_TICKETS, Latency, Scenario
from lab.core.paths import _name, read_input_file

__all__ = [
    "MAX_ARRIVAL_SPAN_S",
    "MAX_BUYERS",
    "MAX_SCENARIO_BYTES",
    "available",
    "check_bounds",
    "directory",
    "load",
    "scenario_from_mapping",
]

#: The most buyers a run accepts. Variants that give each buyer its own process
#: stop at runner.PROCESS_PER_BUYER_MAX; the server variants seat many per process.
MAX_BUYERS = 20_000
#: The largest scenario file read: the presets are a few hundred bytes.
MAX_SCENARIO_BYTES = 64 * 1024
#: The last buyer starts at most this long after the gun ((buyers - 1) x arrival).
MAX_ARRIVAL_SPAN_S = 3600.0


def directory() -> Path:
    """Where the presets live: inside an installed wheel, else the repo's ``scenarios/``."""
    # A wheel carries them at lab/scenarios; a checkout keeps them at the repo's top.
    packaged = Path(__file__).parent.parent / "scenarios"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "scenarios"


def available() -> list[Scenario]:
    """Every preset, by name."""
    return [load(p.stem) for p in sorted(directory().glob("*.toml"))]


def _int(field: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ScenarioError(f"{field} must be a whole number from {low} to {high}, got {value!r}")
    return value


def scenario_from_mapping(name: str, data: dict[str, Any], origin: str) -> Scenario:
    """Validate one scenario table; every error names ``origin`` and the field."""
    known = {"description", "buyers", "tickets", "latency", "arrival", "seed", "lockstep", "lock"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ScenarioError(
            f"{origin}: unknown field {unknown[0]!r} (known: {', '.join(sorted(known))})"
        )
    kwargs: dict[str, Any] = {"name": name}
    try:
        if "description" in data:
            if not isinstance(data["description"], str):
                raise ScenarioError("description must be text")
            kwargs["description"] = " ".join(data["description"].split())
        if "buyers" in data:
            kwargs["buyers"] = _int("buyers", data["buyers"], 1, MAX_BUYERS)
        if "tickets" in data:
            kwargs["tickets"] = _int("tickets", data["tickets"], 0, MAX_TICKETS)
        if "seed" in data:
            kwargs["seed"] = _int("seed", data["seed"], 0, 2**63 - 1)
        if "latency" in data:
            value = data["latency"]
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ScenarioError(
                    f'latency must be text like "0.05-0.2" or seconds, got {value!r}'
                )
            try:
                kwargs["latency"] = Latency.parse(str(value))
            except ValueError as exc:
                raise ScenarioError(f"latency: {exc}") from None
        if "arrival" in data:
            value = data["arrival"]
            is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not is_number or not 0 <= value <= 60:  # NaN fails this too
                raise ScenarioError(f"arrival must be seconds from 0 to 60, got {value!r}")
            kwargs["arrival"] = float(value)
        if "lockstep" in data:
            if not isinstance(data["lockstep"], bool):
                raise ScenarioError(f"lockstep must be true or false, got {data['lockstep']!r}")
            kwargs["lockstep"] = data["lockstep"]
        if "lock" in data:
            if data["lock"] not in ("file", "mp"):
                raise ScenarioError(f'lock must be "file" or "mp", got {data["lock"]!r}')
            kwargs["lock"] = data["lock"]
    except ScenarioError as exc:
        raise ScenarioError(f"{origin}: {exc}") from None
    return Scenario(**kwargs)


def load(name_or_path: str) -> Scenario:
    """Load a preset by name (``notes``) or a TOML file by path.

    A path must be a regular file of at most :data:`MAX_SCENARIO_BYTES`: it is
    checked before it is opened, and opened without blocking, so a FIFO or a
    device never hangs the lab and a huge file is never loaded.
    """
    candidate = Path(name_or_path)
    if _PRESET_NAME.match(name_or_path) and not os.path.lexists(candidate):
        path = directory() / f"{name_or_path}.toml"
        if not path.is_file():
            names = ", ".join(sorted(p.stem for p in directory().glob("*.toml")))
            raise ScenarioError(
                f"--scenario: no scenario named {name_or_path!r} (choose from: {names})"
            )
    else:
        path = candidate
    shown = _name(path)
    raw = read_input_file(path, "--scenario", MAX_SCENARIO_BYTES)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ScenarioError(f"--scenario {shown}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{shown}: not valid TOML ({exc})") from None
    except RecursionError:
        # tomllib recurses once per nested array or inline table.
        raise ScenarioError(f"{shown}: not valid TOML (nested too deeply)") from None
    return scenario_from_mapping(_name(path.stem), data, shown)


#: A preset's name: anything else (a dot, a slash, an existing file) is a path.
_PRESET_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")


def check_bounds(scenario: Scenario) -> None:
    """Refuse a scenario whose combined fields would make a run last for days.

    Each field has its own bound; this is the one that spans fields: buyer i
    starts i x arrival after the gun, so the last one starts
    (buyers - 1) x arrival seconds in.

    Raises:
        ScenarioError: naming the bound.
    """
    last_start = (scenario.buyers - 1) * scenario.arrival
    if last_start > MAX_ARRIVAL_SPAN_S:
        raise ScenarioError(
            f"--arrival x --buyers: the last buyer would start {last_start:g} s after the gun; "
            f"the limit is {MAX_ARRIVAL_SPAN_S:g} s"
        )
