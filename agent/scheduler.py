"""The agent's main loop: run each sensor on its cadence, store, hand to the publisher.

Every round is stored in the outbox (fsynced) before anything is published. A sensor
that raises becomes a ``sensor_error`` reading with the reason and the loop carries on.
The system reading carries the outbox's pending and dropped counts, so readings lost
to the outbox bound are visible on the server. Each turn also records the boot's clock
anchor once NTP is seen (see agent.clock) and pets the systemd watchdog.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from agent.clock import Clock
from agent.outbox import Outbox
from agent.sensors._system import printable
from agent.sensors.base import Sensor, SensorContext, Stamp
from agent.systemd import SystemdNotifier
from coverwatch.protocol import Reading, SensorErrorReading, SystemReading

logger = logging.getLogger("coverwatch.agent")

# The outbox counts are reported at least this often even if the system sensor is off.
OUTBOX_REPORT_INTERVAL_S = 300


@dataclass
class ScheduledSensor:
    sensor: Sensor
    interval_s: float
    next_due_s: float = 0.0


class _OutboxReport:
    """Stands in for the system sensor when it is disabled: outbox counts only."""

    name = "outbox"

    def read(self, stamp: Stamp) -> Iterable[Reading]:
        return [SystemReading(**stamp.base())]


class Agent:
    """Takes rounds of readings; ``run`` is the daemon, ``take_round`` one step of it."""

    def __init__(
        self,
        sensors: Sequence[ScheduledSensor],
        *,
        clock: Clock,
        outbox: Outbox,
        on_stored: Callable[[list[int]], None] | None = None,
        notifier: SystemdNotifier | None = None,
        unsent_readings: Callable[[], int] | None = None,
    ) -> None:
        self.schedule = list(sensors)
        if not any(s.sensor.name == "system" for s in self.schedule):
            self.schedule.append(ScheduledSensor(_OutboxReport(), OUTBOX_REPORT_INTERVAL_S))
        self.clock = clock
        self.outbox = outbox
        self.on_stored = on_stored
        self.notifier = notifier or SystemdNotifier(environ={})
        # The publisher knows which outbox rows are acknowledged but not yet deleted.
        self._unsent_readings = unsent_readings
        self.rounds = 0
        self.readings_taken = 0
        self.sensor_errors = 0
        self._anchored_boot: str | None = None

    def take_round(self, sensors: Sequence[Sensor] | None = None) -> list[Reading]:
        """Read the given sensors (default: all), store the readings, pass them on."""
        chosen = [s.sensor for s in self.schedule] if sensors is None else list(sensors)
        stamp = self.clock.stamp()
        readings: list[Reading] = []
        for sensor in chosen:
            readings.extend(self._read(sensor, stamp))
        self._record_anchor()
        seqs = self.outbox.add(readings)
        self.rounds += 1
        self.readings_taken += len(readings)
        if self.on_stored is not None and seqs:
            self.on_stored(seqs)
        return [msgspec.structs.replace(r, seq=seq) for r, seq in zip(readings, seqs, strict=True)]

    def _read(self, sensor: Sensor, stamp: Stamp) -> list[Reading]:
        try:
            readings = list(sensor.read(stamp))
        except Exception as error:  # a failing sensor degrades, never stops the agent
            self.sensor_errors += 1
            reason = printable(str(error), 2000) or type(error).__name__
            logger.warning("sensor %s failed: %s", sensor.name, reason)
            return [SensorErrorReading(**stamp.base(), sensor=sensor.name, error=reason)]
        return [self._with_outbox_counts(r) for r in readings]

    def _with_outbox_counts(self, reading: Reading) -> Reading:
        if not isinstance(reading, SystemReading):
            return reading
        stats = self.outbox.stats()
        pending = stats.pending if self._unsent_readings is None else self._unsent_readings()
        return msgspec.structs.replace(
            reading, outbox_pending=max(0, pending), outbox_dropped_total=stats.dropped_total
        )

    def _record_anchor(self) -> None:
        if self._anchored_boot == self.clock.boot_id:
            return
        anchor = self.clock.anchor()
        if anchor is not None:
            self.outbox.record_anchor(anchor)
            self._anchored_boot = anchor.boot_id
            logger.info("clock synchronised; unsynchronised readings of this boot corrected")

    def run(self, stop: threading.Event) -> None:
        """Until ``stop`` is set: every sensor on its own cadence, all due at start."""
        self.notifier.ready(f"measuring with {len(self.schedule)} sensors")
        pet_every_s = self.notifier.watchdog_interval_s or 30.0
        while not stop.is_set():
            now = self.clock.monotonic_s()
            due = [s for s in self.schedule if s.next_due_s <= now]
            if due:
                self.take_round([s.sensor for s in due])
                for scheduled in due:
                    # Keep the cadence without bursts after a long stall (e.g. a hung modem).
                    base = scheduled.next_due_s if scheduled.next_due_s else now
                    scheduled.next_due_s = max(base + scheduled.interval_s, now + 1.0)
            self.notifier.watchdog()
            wait_s = min(s.next_due_s for s in self.schedule) - self.clock.monotonic_s()
            stop.wait(min(max(wait_s, 0.0), pet_every_s))

    def close(self, *, clean: bool = True) -> None:
        """Tell sensors that keep state (power's clean-stop marker) that we stop cleanly."""
        if not clean:
            return
        for scheduled in self.schedule:
            mark = getattr(scheduled.sensor, "mark_clean_stop", None)
            if callable(mark):
                mark()


def build_sensors(
    enabled: dict[str, tuple[Any, Any]], context: SensorContext
) -> list[ScheduledSensor]:
    """Create every enabled sensor from its plugin and settings, keyed by the sensor's
    name: the plugin's, or ``<plugin>.<name>`` for one of several (e.g. one per modem)."""
    from agent.sensors.base import plugin_of, registered

    plugins = registered()
    scheduled: list[ScheduledSensor] = []
    for name, (schedule, settings) in sorted(enabled.items()):
        if not schedule.enabled:
            continue
        sensor = plugins[plugin_of(name)].create(settings, context)
        scheduled.append(ScheduledSensor(sensor, float(schedule.interval_s)))
    return scheduled
