"""Operator scan: rarely, in the background, every operator a modem can hear.

A probe with one SIM measures one operator. A network scan (``AT+COPS=?``, Quectel
``AT+QSCAN``, ``mmcli --3gpp-scan``) lists every operator the modem can hear, with its
status for this SIM, and on Quectel 5G modules the best cell of each with its level:
evidence of the other operators' service where no modem of theirs is installed.

It has a cost. While the modem scans it leaves its serving cell, so the data connection
stops for the 1-3 minutes the scan takes (readings wait in the outbox), and its
registration reads "searching" meanwhile. Hence:

* off unless ``scan_interval_hours`` is set on the modem's cellular table, and then at
  most once per interval plus a random delay of up to ``scan_jitter_minutes`` (the modems
  of a kit and the probes of a fleet do not all go offline at the same moment);
* when it is next due is kept in the state directory, so a reboot does not rescan;
* only once NTP has set the clock (a Pi has no real-time clock: "when" must be true);
* it runs in a thread of its own, bounded by ``scan_timeout_s`` (the AT deadline, and
  mmcli's ``--timeout``), because the agent's loop must keep petting the systemd watchdog;
* no signal reading is taken while it runs (a "searching" read mid-scan would paint a
  dead zone that is not there); should the scan outlive its bound by a minute, signal
  readings resume and the overrun is reported.

A finished scan gives one :class:`~coverwatch.protocol.OperatorScanReading` per operator
and technology (exactly one, with ``networks_found`` 0, when it heard nothing); a failed
one gives a ``sensor_error`` reading of the sensor ``<sensor>:scan``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from agent.sensors._system import CommandRunner
from agent.sensors.base import SensorError, Stamp
from agent.sensors.cellular.at_backend import parse_digits_reply
from agent.sensors.cellular.at_parsers.cops_scan import parse_cops_scan
from agent.sensors.cellular.at_parsers.quectel_scan import parse_qscan
from agent.sensors.cellular.at_session import AtSession, SerialOpener
from agent.sensors.cellular.mmcli_scan import parse_mmcli_scan
from agent.sensors.cellular.modemmanager import ModemManagerBackend, NoModemManagerModem
from agent.sensors.cellular.scan_result import ScanResult, scan_readings, with_cells
from agent.sensors.cellular.settings import Settings
from agent.statefile import SlotFile
from coverwatch.protocol import Reading, SensorErrorReading

logger = logging.getLogger("coverwatch.agent")

SCAN_TIMEOUT_RANGE_S: Final = (30.0, 900.0)
# The least interval that may be configured: a scan costs minutes of connectivity.
MIN_SCAN_INTERVAL_HOURS: Final = 1.0
# How long past its bound a scan may run before signal readings resume without it.
OVERRUN_GRACE_S: Final = 60.0
# mmcli itself gets this much longer than its --timeout before it is killed.
_MMCLI_MARGIN_S: Final = 15.0
# mmcli fails a scan that found no network: an empty list is a NULL GList, which
# scan_process_reply() (cli/mmcli-modem-3gpp.c) takes for a failure and, with no GError
# to show, prints this. Every real failure carries ModemManager's own message instead.
_MMCLI_NOTHING_FOUND: Final = "couldn't scan networks in the modem: 'unknown error'"
# AT+QSCAN is only started when at least this much of the scan's time is left.
_QSCAN_MIN_S: Final = 20.0


def check_scan_settings(where: str, settings: Settings) -> list[str]:
    """The problems of a cellular table's scan settings, with how to fix them."""
    problems = []
    hours = settings.scan_interval_hours
    if hours < 0 or 0 < hours < MIN_SCAN_INTERVAL_HOURS:
        problems.append(
            f"{where} scan_interval_hours {hours:g}: use 0 (no scans) or at least "
            f"{MIN_SCAN_INTERVAL_HOURS:g}; each scan interrupts the data connection for minutes"
        )
    low, high = SCAN_TIMEOUT_RANGE_S
    if not low <= settings.scan_timeout_s <= high:
        problems.append(
            f"{where} scan_timeout_s {settings.scan_timeout_s:g}: use {low:g}-{high:g} seconds "
            "(AT+COPS=? takes 1-3 minutes)"
        )
    if settings.scan_jitter_minutes < 0:
        problems.append(f"{where} scan_jitter_minutes: use 0 or more minutes")
    return problems


# ------------------------------------------------------------------- one scan, per backend


def scan_over_at(
    settings: Settings,
    open_port: SerialOpener,
    clock: Callable[[], float] = time.monotonic,
) -> ScanResult:
    """``AT+COPS=?`` on the modem's port, then ``AT+QSCAN=3,1`` on a Quectel that has it
    (its cells' levels join the operator list), all within ``scan_timeout_s``."""
    deadline = clock() + settings.scan_timeout_s
    port = open_port(settings.port, settings.baud, 0.2)
    try:
        at = AtSession(port, timeout_s=settings.at_timeout_s, clock=clock)
        if not at.command("AT").ok:
            raise SensorError(f"the modem on {settings.port} does not answer AT; no scan")
        at.command("ATE0")
        if settings.imei:
            imei = parse_digits_reply(at.command("AT+CGSN"), "+CGSN")
            if imei != settings.imei:
                raise SensorError(
                    f"the modem on {settings.port} has IMEI {imei or 'unknown'}, not "
                    f"{settings.imei}: no scan of another modem"
                )
        cops = AtSession(port, timeout_s=max(1.0, deadline - clock()), clock=clock)
        reply = cops.command("AT+COPS=?")
        if reply.timed_out:
            # Any character aborts a running AT+COPS=? (27.007 §7.3, V.250 §5.6.1), so
            # the modem goes back to its serving cell now rather than whenever it is done.
            port.write(b"AT\r")
        networks = parse_cops_scan(reply)
        manufacturer = at.command("AT+CGMI")
        is_quectel = manufacturer.ok and "quectel" in " ".join(manufacturer.lines).lower()
        left_s = deadline - clock()
        if not (is_quectel and left_s >= _QSCAN_MIN_S and at.command("AT+QSCAN=?").ok):
            return ScanResult("cops", tuple(networks))
        qscan = AtSession(port, timeout_s=left_s, clock=clock).command("AT+QSCAN=3,1")
        if qscan.timed_out:
            port.write(b"AT\r")
        try:
            cells = parse_qscan(qscan)
        except SensorError as error:
            # The operator list is a scan in its own right: keep it without the levels.
            logger.warning("modem %s: AT+QSCAN failed (%s)", settings.name or settings.port, error)
            return ScanResult("cops", tuple(networks))
        return ScanResult("qscan", tuple(with_cells(networks, cells)))
    finally:
        port.close()


def scan_over_mmcli(
    settings: Settings, modemmanager: ModemManagerBackend, run: CommandRunner
) -> ScanResult:
    """``mmcli -m N --3gpp-scan`` with ``--timeout`` = ``scan_timeout_s``: the D-Bus call's
    bound (ModemManager may finish the modem's scan on its own after mmcli gave up)."""
    index, _ = modemmanager.find_modem()
    timeout_s = int(settings.scan_timeout_s)
    try:
        text = run(
            ["mmcli", "-m", str(index), "--3gpp-scan", f"--timeout={timeout_s}", "-J"],
            timeout_s + _MMCLI_MARGIN_S,
        )
    except SensorError as error:
        if _MMCLI_NOTHING_FOUND in str(error):
            return ScanResult("mmcli", ())
        raise
    return ScanResult("mmcli", tuple(parse_mmcli_scan(text)))


def scan_modem(
    settings: Settings,
    modemmanager: ModemManagerBackend,
    run: CommandRunner,
    open_port: SerialOpener,
    port_exists: Callable[[str], bool],
    clock: Callable[[], float] = time.monotonic,
) -> ScanResult:
    """One scan through the table's backend; 'auto' as the signal reading chooses:
    ModemManager when it lists the modem, else the AT port (when it is this modem's)."""
    if settings.backend == "mmcli":
        return scan_over_mmcli(settings, modemmanager, run)
    if settings.backend == "at":
        return scan_over_at(settings, open_port, clock)
    try:
        return scan_over_mmcli(settings, modemmanager, run)
    except NoModemManagerModem as reason:
        if settings.name and not settings.imei:
            raise SensorError(
                f"{reason}; no scan over an AT port that cannot be checked"
            ) from reason
        if not port_exists(settings.port):
            raise SensorError(
                f"{reason}, and there is no AT port {settings.port}: no scan"
            ) from reason
        return scan_over_at(settings, open_port, clock)


# --------------------------------------------------------------------- when, and in a thread


@dataclass
class ScanSchedule:
    """What survives restarts: when the next scan is due, and when the last one began."""

    next_due_at: datetime | None = None
    last_started_at: datetime | None = None

    @classmethod
    def load(cls, path: Path) -> ScanSchedule:
        try:
            document = SlotFile(path).load()
        except OSError as error:
            logger.warning("operator scan state %s unreadable (%s); starting afresh", path, error)
            return cls()
        if not isinstance(document, dict):
            return cls()  # none yet (or unreadable): a fresh schedule, a scan within the jitter
        return cls(
            next_due_at=_aware_time(document.get("next_due_at")),
            last_started_at=_aware_time(document.get("last_started_at")),
        )

    def save(self, path: Path) -> None:
        """Keep the schedule across restarts; a card that refuses it (full, read-only) is
        logged and costs nothing else: the scan is optional, the signal reading is not."""
        try:
            SlotFile(path).write(
                {
                    "next_due_at": _iso(self.next_due_at),
                    "last_started_at": _iso(self.last_started_at),
                }
            )
        except (OSError, ValueError) as error:
            logger.warning("cannot keep the operator scan schedule in %s: %s", path, error)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _aware_time(value: object) -> datetime | None:
    """A stored time, or None when it is missing, malformed or has no time zone."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def scan_state_file(modem_name: str) -> str:
    """The schedule's file (an agent.statefile.SlotFile) under the probe's state_dir."""
    return f"operator-scan-{modem_name or 'modem'}"


class OperatorScan:
    """Starts a modem's scans when due, in a named thread, and hands in what they found."""

    def __init__(
        self,
        settings: Settings,
        state_dir: Path,
        scan: Callable[[], ScanResult],
        *,
        sensor_name: str,
        uniform: Callable[[float, float], float] = random.uniform,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._state_path = state_dir / scan_state_file(settings.name)
        self._kept: ScanSchedule | None = None
        self._scan = scan
        self._sensor_name = sensor_name
        self._uniform = uniform
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._started_at: datetime | None = None
        self._started_monotonic = 0.0
        self._outcome: ScanResult | BaseException | None = None
        self._overrun_reported = False

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def around(self, stamp: Stamp, measure: Callable[[], Reading]) -> list[Reading]:
        """This round's readings: a finished scan's, then the signal reading from
        ``measure`` unless the modem is scanning. A failing ``measure`` never costs the
        scan's readings: it becomes the sensor's error reading beside them."""
        readings = self._collect(stamp)
        if self._busy(stamp):
            return readings
        if self.running and not self._overrun_reported:
            self._overrun_reported = True
            bound = self._settings.scan_timeout_s
            readings.append(
                self._error(
                    stamp,
                    f"operator scan still running {bound + OVERRUN_GRACE_S:g} s after it began "
                    f"(its bound is {bound:g} s): signal readings resume; is the modem hung?",
                )
            )
        try:
            signal = measure()
        except Exception as error:
            if not readings:
                raise
            reason = str(error) or type(error).__name__
            signal = SensorErrorReading(
                **stamp.base(), sensor=self._sensor_name, error=reason[:2000]
            )
        return [*readings, signal]

    def _error(self, stamp: Stamp, reason: str) -> SensorErrorReading:
        return SensorErrorReading(
            **stamp.base(), sensor=f"{self._sensor_name}:scan", error=reason[:2000]
        )

    def _collect(self, stamp: Stamp) -> list[Reading]:
        with self._lock:
            outcome, self._outcome = self._outcome, None
        if outcome is None or self._started_at is None:
            return []
        if isinstance(outcome, ScanResult):
            modem = self._settings.name or None
            return list(scan_readings(outcome, stamp, self._started_at, modem=modem))
        reason = str(outcome) or type(outcome).__name__
        return [self._error(stamp, f"operator scan failed: {reason}")]

    def _busy(self, stamp: Stamp) -> bool:
        """Whether the modem is scanning (a scan runs, or one was started just now)."""
        if self.running:
            overrun = self._monotonic() - self._started_monotonic
            return overrun <= self._settings.scan_timeout_s + OVERRUN_GRACE_S
        if not self._due(stamp):
            return False
        self._start(stamp)
        return True

    def _schedule(self) -> ScanSchedule:
        """The schedule, read from the card once; memory is what counts afterwards, so a
        card that refuses the saves (full) cannot make the modem scan round after round."""
        if self._kept is None:
            self._kept = ScanSchedule.load(self._state_path)
        return self._kept

    def _due(self, stamp: Stamp) -> bool:
        if self._settings.scan_interval_hours <= 0 or not stamp.ntp_synced:
            return False
        now = stamp.taken_at.astimezone(UTC)
        schedule = self._schedule()
        jitter = timedelta(minutes=self._uniform(0.0, max(0.0, self._settings.scan_jitter_minutes)))
        interval = timedelta(hours=self._settings.scan_interval_hours)
        longest = interval + timedelta(minutes=self._settings.scan_jitter_minutes)
        if schedule.next_due_at is None or schedule.next_due_at - now > longest:
            # First scan of this modem, or a due time the settings no longer allow (the
            # interval was shortened): a scan within the jitter, not one at once.
            schedule.next_due_at = now + jitter
            schedule.save(self._state_path)
        return now >= schedule.next_due_at

    def _start(self, stamp: Stamp) -> None:
        now = stamp.taken_at.astimezone(UTC)
        jitter = timedelta(minutes=self._uniform(0.0, max(0.0, self._settings.scan_jitter_minutes)))
        # Saved before the scan starts: a reboot or crash mid-scan does not rescan.
        self._kept = ScanSchedule(
            next_due_at=now + timedelta(hours=self._settings.scan_interval_hours) + jitter,
            last_started_at=now,
        )
        self._kept.save(self._state_path)
        self._started_at = now
        self._started_monotonic = self._monotonic()
        self._overrun_reported = False
        self._thread = threading.Thread(
            target=self._run, name=f"operator-scan-{self._settings.name or 'modem'}", daemon=True
        )
        logger.info("operator scan of %s started", self._sensor_name)
        self._thread.start()

    def _run(self) -> None:
        try:
            outcome: ScanResult | BaseException = self._scan()
        except Exception as error:  # reported as the scan's sensor_error reading
            outcome = error
        with self._lock:
            self._outcome = outcome

    def wait(self, timeout_s: float) -> bool:
        """Wait for a running scan to finish (tests, and a clean stop); True when none runs."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        return not self.running
