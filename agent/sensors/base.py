"""What a sensor is, and the registry that finds sensors by name.

A sensor is anything with a ``name`` and a ``read(stamp)`` that returns protocol
readings (prometheus/client_python's Collector protocol, Telegraf's input registry).
The agent core owns the common fields: it hands every sensor a :class:`Stamp` with
the boot id, wall and monotonic time and NTP state of this round, and the outbox
assigns the sequence number when it stores the reading. Sensors therefore build
readings with ``seq=0`` via :meth:`Stamp.base`.

A sensor that fails raises; the scheduler turns the exception into a
``sensor_error`` reading with the reason and carries on, so one broken modem never
stops the power or latency readings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from coverwatch.protocol import Reading


@dataclass(frozen=True, slots=True)
class Stamp:
    """When and in which boot a round of readings was taken."""

    boot_id: str
    taken_at: datetime
    monotonic_ms: int
    ntp_synced: bool

    def base(self) -> dict[str, Any]:
        """The common reading fields; ``seq`` is a placeholder the outbox replaces."""
        return {
            "seq": 0,
            "boot_id": self.boot_id,
            "taken_at": self.taken_at,
            "monotonic_ms": self.monotonic_ms,
            "ntp_synced": self.ntp_synced,
        }


@runtime_checkable
class Sensor(Protocol):
    """Something that measures. ``read`` may raise; the scheduler records why."""

    name: str

    def read(self, stamp: Stamp) -> Iterable[Reading]: ...


class SensorError(Exception):
    """A sensor could not measure; the message is what a technician needs to know."""


@dataclass(frozen=True, slots=True)
class SensorContext:
    """What the agent gives every sensor when it creates it."""

    # Where a sensor may keep small state across restarts (heartbeat, data budget).
    state_dir: Path
    # False for one-shot commands (``once``, ``doctor``): nothing that outlives the round
    # may start (the operator scan runs minutes in a thread and takes the modem offline).
    background_work: bool = True


@dataclass(frozen=True, slots=True)
class SensorPlugin:
    """A sensor type: its settings dataclass (one ``[sensors.<name>]`` TOML table,
    every field with a default and ``metadata={"help": ...}``) and its factory."""

    name: str
    settings_type: type[Any]
    create: Callable[[Any, SensorContext], Sensor]
    # Off unless the probe's config enables it (e.g. throughput spends data).
    enabled_by_default: bool = True
    # Several instances allowed, as ``[[sensors.<name>]]`` (an array of tables, each with
    # a ``name`` setting, e.g. one per modem). Each instance is a sensor of its own,
    # named ``<plugin>.<name>`` (see :func:`instance_name`).
    multiple: bool = False
    # Checks the plugin's tables together, as (where, table as written, settings), and
    # returns every problem: one table, or each of ``[[sensors.<name>]]``.
    check: Callable[[Sequence[tuple[str, Mapping[str, Any], Any]]], list[str]] | None = None
    # For a plugin with several instances: an example of them, shown in the sample
    # probe.toml (as ``##`` lines) after the plugin's own table.
    sample_instances: str = ""


def instance_name(plugin: str, label: str = "") -> str:
    """A sensor's name: the plugin's, or ``<plugin>.<label>`` for one of several instances
    (in logs, in ``sensor_error`` readings and in probe.toml's summary)."""
    return f"{plugin}.{label}" if label else plugin


def plugin_of(name: str) -> str:
    """The plugin of a sensor instance named by :func:`instance_name`."""
    return name.split(".", 1)[0]


_REGISTRY: dict[str, SensorPlugin] = {}


def register(plugin: SensorPlugin) -> SensorPlugin:
    """Make a sensor type available under ``plugin.name``; duplicates are refused."""
    if plugin.name in _REGISTRY:
        raise ValueError(f"sensor {plugin.name!r} is registered twice")
    _REGISTRY[plugin.name] = plugin
    return plugin


def registered() -> dict[str, SensorPlugin]:
    """All sensor types by name (importing agent.sensors registers the built-in ones)."""
    return dict(_REGISTRY)
