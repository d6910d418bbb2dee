"""``coverwatch-probe``: the command a technician runs on a probe.

``run`` is the daemon (systemd ``Type=notify``), ``once`` takes one round and prints
it, ``doctor`` checks the installation, ``export`` writes the outbox to a file for a
village with no connectivity at all, ``config sample|check`` documents and validates
probe.toml.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import msgspec

from agent import config as probe_config
from agent.clock import Clock
from agent.gps import GPSD_PORT
from agent.outbox import Outbox
from agent.sectorio import fsync_directory
from agent.sensors.base import SensorContext, plugin_of
from coverwatch import __version__, protocol
from coverwatch.errors import CoverwatchError

logger = logging.getLogger("coverwatch.agent")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coverwatch-probe",
        description="coverwatch probe agent: measures signal, latency and power in a village "
        "and publishes the readings over MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"coverwatch-probe {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def with_config(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument(
            "--config",
            type=Path,
            help=f"probe.toml (default: ${probe_config.CONFIG_PATH_ENV} or "
            f"{probe_config.DEFAULT_PATH})",
        )
        return sub

    run = with_config(commands.add_parser("run", help="measure and publish until stopped"))
    run.set_defaults(handler=_run)

    once = with_config(
        commands.add_parser(
            "once", help="take one round of readings and print them (nothing is published)"
        )
    )
    once.add_argument("--json", action="store_true", help="print protocol JSON, one per line")
    once.add_argument(
        "--sensor",
        action="append",
        metavar="NAME",
        help="only this sensor (repeatable; cellular reads every modem of a kit, "
        "cellular.NAME one); default: every enabled sensor but throughput",
    )
    once.set_defaults(handler=_once)

    survey = with_config(
        commands.add_parser(
            "survey",
            help="walk a village: log every modem's signal with its GPS position (gpsd) to a "
            "CSV for `coverwatch survey import`",
            description="Reads every modem of the kit each --interval-s seconds, tags each "
            "signal reading (with service or without) with the current GPS fix from gpsd and "
            "appends it to --output in the coverwatch survey format. A round without a fresh "
            "fix is not written. Stop with Ctrl-C. Nothing is published.",
        )
    )
    survey.add_argument("-o", "--output", type=Path, required=True, help="CSV file to append to")
    survey.add_argument(
        "--gpsd", default=f"127.0.0.1:{GPSD_PORT}", help="gpsd's HOST:PORT (127.0.0.1:2947)"
    )
    survey.add_argument(
        "--interval-s", type=_positive_seconds, default=5.0, help="seconds between rounds (5)"
    )
    survey.add_argument(
        "--max-fix-age-s",
        type=_positive_seconds,
        default=5.0,
        help="a fix older than this is no position (5)",
    )
    survey.add_argument(
        "--rounds", type=int, default=0, help="stop after this many rounds (0: until Ctrl-C)"
    )
    survey.set_defaults(handler=_survey)

    doctor = with_config(
        commands.add_parser("doctor", help="check modem, SIM, signal, broker, clock, disk")
    )
    doctor.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the broker"
    )
    doctor.set_defaults(handler=_doctor)

    export = with_config(
        commands.add_parser(
            "export",
            help="write the outbox as protocol messages to a file (import it on the server "
            "with: coverwatch import FILE)",
        )
    )
    export.add_argument("-o", "--output", type=Path, required=True, help="file to write")
    export.add_argument(
        "--since",
        type=_parse_since,
        help="only readings stored since this date/time (e.g. 2026-11-01 or 2026-11-01T08:00Z)",
    )
    export.add_argument(
        "--gzip", action="store_true", help="compress (the importer detects it by itself)"
    )
    export.add_argument(
        "--delete-exported",
        action="store_true",
        help="remove exported readings from the outbox once the file is safely written",
    )
    export.set_defaults(handler=_export)

    config_cmd = commands.add_parser("config", help="probe.toml: sample or check")
    config_actions = config_cmd.add_subparsers(dest="config_command", required=True)
    config_actions.add_parser("sample", help="print a sample with every option").set_defaults(
        handler=_config_sample
    )
    with_config(config_actions.add_parser("check", help="validate probe.toml")).set_defaults(
        handler=_config_check
    )
    return parser


def _parse_since(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"cannot read {text!r} as a date: use e.g. 2026-11-01 or 2026-11-01T08:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _sensor_context(config: probe_config.ProbeConfig) -> SensorContext:
    """The sensors of a one-shot command: the daemon's state, nothing in the background."""
    return SensorContext(state_dir=Path(config.probe.state_dir), background_work=False)


# ------------------------------------------------------------------------- commands


def _run(args: argparse.Namespace) -> int:
    from agent.daemon import run_daemon

    config = probe_config.load(args.config)
    logging.basicConfig(
        level=config.probe.log_level.upper(),
        format="%(levelname)s %(name)s: %(message)s",  # journald adds the time
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run_daemon(config, stop)
    return 0


def _once(args: argparse.Namespace) -> int:
    from agent.scheduler import build_sensors

    config = probe_config.load(args.config)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    wanted = set(args.sensor or [])
    # A plugin's name takes all its instances: --sensor cellular reads every modem.
    known = set(config.sensors) | {plugin_of(name) for name in config.sensors}
    unknown = wanted - known
    if unknown:
        raise CoverwatchError(
            f"unknown sensor(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
        )
    chosen: dict[str, tuple[probe_config.SensorSchedule, Any]] = {}
    for name, (schedule, settings) in config.sensors.items():
        if wanted and (name in wanted or plugin_of(name) in wanted):
            chosen[name] = (probe_config.SensorSchedule(True, schedule.interval_s), settings)
        elif not wanted and schedule.enabled and name != "throughput":
            chosen[name] = (schedule, settings)
    # A throwaway state directory: a look at the readings must not consume the power
    # sensor's outage evidence or the throughput data budget of the real daemon.
    with tempfile.TemporaryDirectory(prefix="coverwatch-once-") as scratch:
        sensors = build_sensors(
            chosen, SensorContext(state_dir=Path(scratch), background_work=False)
        )
        clock = Clock()
        stamp = clock.stamp()
        from agent.scheduler import Agent

        outbox = Outbox(Path(scratch) / "outbox.sqlite3")
        agent = Agent(sensors, clock=clock, outbox=outbox)
        agent.schedule = [s for s in agent.schedule if s.sensor.name != "outbox"]
        readings = agent.take_round()
        outbox.close()
    if args.json:
        encoder = msgspec.json.Encoder()
        for reading in readings:
            sys.stdout.write(encoder.encode(reading).decode() + "\n")
        return 0
    print(f"probe {config.probe.id}, boot {stamp.boot_id}, clock synced: {stamp.ntp_synced}")
    for reading in readings:
        print(_describe(reading))
    return 1 if any(isinstance(r, protocol.SensorErrorReading) for r in readings) else 0


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds, e.g. 5") from None
    if not 0.1 <= value <= 3600:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text} is out of range: give 0.1 to 3600 seconds")
    return value


def _gpsd_address(text: str) -> tuple[str, int]:
    host, _, port_text = text.rpartition(":") if ":" in text else (text, "", str(GPSD_PORT))
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise CoverwatchError(f"--gpsd {text!r} is not HOST:PORT; e.g. 127.0.0.1:{GPSD_PORT}")
    return host, int(port_text)


def _survey(args: argparse.Namespace) -> int:
    from agent.gps import GpsWatcher
    from agent.scheduler import Agent, build_sensors
    from agent.survey import SurveyLog, survey_round

    config = probe_config.load(args.config)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    host, port = _gpsd_address(args.gpsd)
    cellular = {
        name: (probe_config.SensorSchedule(True, schedule.interval_s), settings)
        for name, (schedule, settings) in config.sensors.items()
        if plugin_of(name) == "cellular"
    }
    if not cellular:
        raise CoverwatchError(
            "probe.toml has no cellular sensor to survey with; add a [sensors.cellular] table"
        )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    watcher = GpsWatcher(host, port).start()
    log = SurveyLog(args.output).open()
    rounds = without_fix = 0
    try:
        # A throwaway state directory, as `once`: the daemon's state stays untouched.
        with tempfile.TemporaryDirectory(prefix="coverwatch-survey-") as scratch:
            sensors = build_sensors(
                cellular, SensorContext(state_dir=Path(scratch), background_work=False)
            )
            outbox = Outbox(Path(scratch) / "outbox.sqlite3")
            agent = Agent(sensors, clock=Clock(), outbox=outbox)
            agent.schedule = [s for s in agent.schedule if s.sensor.name != "outbox"]
            print(f"surveying with {', '.join(sorted(cellular))} into {args.output}; Ctrl-C stops")
            while not stop.is_set() and (args.rounds <= 0 or rounds < args.rounds):
                result = survey_round(
                    agent.take_round,
                    lambda: watcher.latest(args.max_fix_age_s),
                    log,
                    config.probe.id,
                )
                rounds += 1
                without_fix += result.without_fix
                state = (
                    f"no GPS position: {watcher.status}"
                    if result.without_fix
                    else f"{result.points} point(s)"
                )
                print(f"round {rounds}: {state}" + "".join(f"; {e}" for e in result.errors))
                stop.wait(args.interval_s)
            outbox.close()
    finally:
        watcher.stop()
        log.close()
    print(
        f"wrote {log.points} survey point(s) in {rounds} round(s), {without_fix} without a GPS "
        f"position, to {args.output}; on the server: coverwatch survey import {args.output}"
    )
    return 0 if log.points else 1


def _describe(reading: protocol.Reading) -> str:
    kind = str(type(reading).__struct_config__.tag)
    skip = {"seq", "boot_id", "taken_at", "monotonic_ms", "ntp_synced"}
    fields = msgspec.structs.asdict(reading)
    parts = [f"{k}={v}" for k, v in fields.items() if k not in skip and v is not None]
    return f"  {kind:<12} " + " ".join(parts)


def _doctor(args: argparse.Namespace) -> int:
    from agent.doctor import Check, render, run_checks
    from agent.scheduler import build_sensors

    try:
        config = probe_config.load(args.config)
    except probe_config.ProbeConfigError as error:
        print(render([Check("probe.toml", "FAIL", str(error), "fix the lines listed above")]))
        return 1
    checks = [Check("probe.toml", "PASS", f"{config.source} is valid (probe {config.probe.id})")]
    cellular = {
        name: entry for name, entry in config.sensors.items() if plugin_of(name) == "cellular"
    }
    sensors = {s.sensor.name: s.sensor for s in build_sensors(cellular, _sensor_context(config))}
    checks.extend(
        run_checks(config, sensors=sensors, clock=Clock(), connect_timeout_s=args.timeout)
    )
    print(render(checks))
    return 1 if any(check.verdict == "FAIL" for check in checks) else 0


def _export(args: argparse.Namespace) -> int:
    config = probe_config.load(args.config)
    if not config.outbox_path.exists():
        raise CoverwatchError(f"no outbox at {config.outbox_path}: nothing to export")
    outbox = Outbox(config.outbox_path, max_readings=config.outbox.max_readings)
    since = args.since.timestamp() if args.since else 0.0
    exported: list[int] = []
    try:
        lines = 0
        temporary = args.output.with_name(args.output.name + ".partial")
        with _open_output(temporary, compress=args.gzip) as output:
            for batch in _batches(outbox, since, config.mqtt.batch_readings):
                # With the outbox id, as over MQTT: the same readings sent later over
                # MQTT (after NTP corrected their time) are recognised, not stored again.
                message = protocol.ReadingsBatch(
                    v=1,
                    probe_id=config.probe.id,
                    readings=batch,
                    sent_at=datetime.now(UTC),
                    outbox_id=outbox.outbox_id,
                )
                output.write(protocol.encode(message) + b"\n")
                exported.extend(reading.seq for reading in batch)
                lines += 1
            output.flush()
            os.fsync(output.fileno())
        temporary.replace(args.output)
        fsync_directory(args.output.parent)  # the rename survives a power cut
        if args.delete_exported:
            outbox.remove(exported)
    finally:
        outbox.close()
    print(
        f"exported {len(exported)} readings in {lines} messages to {args.output}"
        + (" (removed from the outbox)" if args.delete_exported else "")
        + f"; import on the server with: coverwatch import {args.output.name}"
    )
    return 0


def _open_output(path: Path, *, compress: bool) -> Any:
    raw: IO[bytes] = path.open("wb")
    if not compress:
        return raw
    return _GzipWithFileno(raw)


class _GzipWithFileno(gzip.GzipFile):
    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__(fileobj=raw, mode="wb")
        self._raw = raw

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        super().close()  # writes the gzip trailer...
        self._raw.flush()
        os.fsync(self._raw.fileno())  # ...which must be on disk before readings are deleted
        self._raw.close()


def _batches(outbox: Outbox, since: float, size: int) -> Iterator[list[protocol.Reading]]:
    batch: list[protocol.Reading] = []
    for reading in outbox.all(stored_since=since):
        batch.append(reading)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _config_sample(_: argparse.Namespace) -> int:
    sys.stdout.write(probe_config.sample())
    return 0


def _config_check(args: argparse.Namespace) -> int:
    config = probe_config.load(args.config)
    enabled = ", ".join(
        f"{name} every {schedule.interval_s}s"
        for name, (schedule, _) in sorted(config.sensors.items())
        if schedule.enabled
    )
    print(
        f"{config.source}: ok — probe {config.probe.id}, broker "
        f"{config.mqtt_url.redacted()}, sensors: {enabled}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        result: int = handler(args)
    except CoverwatchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
