"""The probe's one config file, ``/etc/coverwatch/probe.toml``, declared once.

Every table is a dataclass whose fields carry their default and help text; sensor
tables (``[sensors.<name>]``) come from each sensor plugin's own ``Settings`` plus
``enabled`` and ``interval_s`` (how often the sensor runs; a plugin's own options must
not reuse those two names). Loading checks everything at start-up and reports
*every* problem at once, each with what to write instead — a technician in a village
should not need three trips to find three typos. Whatever the file holds (bytes that
are not UTF-8, nesting thousands deep, 5,000-digit numbers, NUL characters), loading
ends in a :class:`ProbeConfigError`, never another exception. ``agent/probe.sample.toml`` is
generated from these declarations (``coverwatch-probe config sample``) and a test
keeps the committed sample in step, so every option is documented.

Defaults fit a Pi on a prepaid SIM: signal and power every minute, latency and system
health every five minutes, speed tests off; about 85 MB of MQTT traffic and 30 MB of
latency pings a month (see the sample's header and agent/README.md).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import textwrap
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import outbox, publisher
from agent import sensors as _builtin_sensors  # noqa: F401 - registers the built-in sensors
from agent.sensors.base import SensorPlugin, instance_name, registered
from coverwatch import protocol
from coverwatch.errors import CoverwatchError
from coverwatch.settings import MQTT_URL_ENV, MqttUrl
from coverwatch.shown import printable, shown

DEFAULT_PATH = Path("/etc/coverwatch/probe.toml")
CONFIG_PATH_ENV = "COVERWATCH_PROBE_CONFIG"

# How often each built-in sensor runs unless [sensors.<name>] interval_s says otherwise.
DEFAULT_INTERVALS_S: dict[str, int] = {
    "cellular": 60,
    "power": 60,
    "latency": 300,
    "system": 300,
    "throughput": 3600,
}
FALLBACK_INTERVAL_S = 300
MAX_INTERVAL_S = 31 * 24 * 3600  # a monthly speed test is the slowest cadence that makes sense
# Whole numbers in the file are 64-bit (SQLite, sockets and timers take nothing larger).
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1

# Options whose meaning moved to a new key, by table: a file written for the old meaning
# gets a problem naming the new key instead of a silent change of behaviour.
# [sensors.latency] interval_s once also meant the gap between ping packets; that is now
# packet_interval_s, and interval_s is only how often the sensor runs, as everywhere.
MOVED_OPTIONS: dict[tuple[str, str], tuple[str, str]] = {
    ("sensors.latency", "interval_s"): (
        "packet_interval_s",
        "the gap between the probes to one target",
    ),
}


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class ProbeSection:
    id: str = field(
        default="",
        metadata=_help(
            "REQUIRED. This probe's id, as registered on the server (coverwatch probes add): "
            "1-64 lowercase letters, digits, '-' or '_', e.g. cb-001"
        ),
    )
    state_dir: str = field(
        default="/var/lib/coverwatch",
        metadata=_help("where the outbox, heartbeat and data-budget files live"),
    )
    log_level: str = field(default="info", metadata=_help("debug, info, warning or error"))


@dataclass(frozen=True)
class MqttSection:
    url: str = field(
        default="",
        metadata=_help(
            "REQUIRED (or env COVERWATCH_MQTT_URL). Broker URL: mqtts://probe-id@host:8883 "
            "(TLS) or mqtt://host:1883; the password may be in the URL or in password_file"
        ),
    )
    password_file: str = field(
        default="",
        metadata=_help("file holding the broker password (mode 600), instead of the URL"),
    )
    ca_file: str = field(
        default="",
        metadata=_help("CA certificate that signed the broker's certificate (mqtts://)"),
    )
    cert_file: str = field(
        default="", metadata=_help("client certificate, when the broker wants one")
    )
    key_file: str = field(default="", metadata=_help("private key of the client certificate"))
    keepalive_s: int = field(
        default=publisher.KEEPALIVE_S,
        metadata=_help("MQTT keepalive; the broker declares us gone after 1.5x this"),
    )
    backoff_min_s: float = field(
        default=publisher.BACKOFF_MIN_S,
        metadata=_help("first reconnect delay (then doubling, with jitter)"),
    )
    backoff_max_s: float = field(
        default=publisher.BACKOFF_MAX_S, metadata=_help("longest reconnect delay")
    )
    batch_readings: int = field(
        default=publisher.BATCH_READINGS,
        metadata=_help("readings per message when flushing a backlog (max 2000)"),
    )
    max_inflight_messages: int = field(
        default=publisher.MAX_INFLIGHT_MESSAGES,
        metadata=_help("unacknowledged messages at a time while flushing"),
    )
    confirm_grace_s: float = field(
        default=publisher.CONFIRM_GRACE_S,
        metadata=_help(
            "readings the broker took but the collector has not confirmed are sent again "
            "this long after a reconnect, or after a later reading was confirmed"
        ),
    )
    confirm_timeout_s: float = field(
        default=publisher.CONFIRM_TIMEOUT_S,
        metadata=_help(
            "otherwise they are sent again after this long, doubling per attempt "
            "(a collector that is away costs little data)"
        ),
    )
    confirm_timeout_max_s: float = field(
        default=publisher.CONFIRM_TIMEOUT_MAX_S,
        metadata=_help("longest wait before sending unconfirmed readings again"),
    )
    max_unconfirmed_readings: int = field(
        default=publisher.MAX_UNCONFIRMED_READINGS,
        metadata=_help(
            "backlog readings awaiting the collector's confirmation at a time; the flush "
            "pauses beyond this (memory, and data wasted while the collector is away)"
        ),
    )
    encoding: str = field(
        default=protocol.DEFAULT_ENCODING,
        metadata=_help(
            '"compact" (DEFLATE, about a fifth of the bytes) or "json" (version 1 JSON, '
            "for collectors older than the compact encoding; upgrade collectors first)"
        ),
    )


@dataclass(frozen=True)
class OutboxSection:
    path: str = field(default="", metadata=_help("SQLite file; default <state_dir>/outbox.sqlite3"))
    max_readings: int = field(
        default=outbox.MAX_READINGS,
        metadata=_help(
            "keep at most this many unsent readings (~75 MB; about 50 days offline at the "
            "default cadence); the oldest are dropped first and counted"
        ),
    )
    max_age_days: float = field(
        default=outbox.MAX_AGE_S / 86_400,
        metadata=_help("drop unsent readings older than this (counted)"),
    )
    round_log: bool = field(
        default=outbox.ROUND_LOG,
        metadata=_help(
            "append each round to <path>-rounds (one fsynced 512-byte sector) instead of "
            "a SQLite transaction (~8 KB): readings the collector confirms in time never "
            "reach SQLite; false stores every round in SQLite as older versions did"
        ),
    )


@dataclass(frozen=True)
class SensorSchedule:
    enabled: bool
    interval_s: int


@dataclass(frozen=True)
class ProbeConfig:
    probe: ProbeSection
    mqtt: MqttSection
    outbox: OutboxSection
    sensors: dict[str, tuple[SensorSchedule, Any]]  # name -> (schedule, plugin settings)
    source: Path | None = None

    @property
    def mqtt_url(self) -> MqttUrl:
        url = MqttUrl.parse(self.mqtt.url, setting="probe.toml: [mqtt] url")
        if url.password is None and self.mqtt.password_file:
            problems: list[str] = []
            password = _read_password(self.mqtt.password_file, problems)
            if password is None:
                raise ProbeConfigError(str(self.source or "probe config"), problems)
            url = dataclasses.replace(url, password=password)
        return url

    @property
    def outbox_path(self) -> Path:
        return Path(self.outbox.path or Path(self.probe.state_dir) / "outbox.sqlite3")


class ProbeConfigError(CoverwatchError):
    """Everything wrong with a probe.toml, one line per problem with its fix."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        listed = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"{source} has {len(problems)} problem(s):\n{listed}")


_SECTIONS: dict[str, type[Any]] = {
    "probe": ProbeSection,
    "mqtt": MqttSection,
    "outbox": OutboxSection,
}
_SCHEDULE_FIELDS = ("enabled", "interval_s")


def load(
    path: Path | None = None,
    *,
    environ: typing.Mapping[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> ProbeConfig:
    """Read and validate the config file (``--config``, env, default path)."""
    env = os.environ if environ is None else environ
    chosen = path or Path(env.get(CONFIG_PATH_ENV) or DEFAULT_PATH)
    try:
        data = chosen.read_bytes()
    except FileNotFoundError:
        raise ProbeConfigError(
            str(chosen),
            [
                "file not found: create it from agent/probe.sample.toml "
                "(or run: coverwatch-probe config sample > probe.toml) and pass --config"
            ],
        ) from None
    except OSError as error:
        raise ProbeConfigError(
            str(chosen), [f"cannot read it: {error.strerror or error}; check the path"]
        ) from None
    return from_mapping(
        parse_toml(data, str(chosen)), source=chosen, environ=env, overrides=overrides
    )


def parse_toml(data: bytes, source: str) -> dict[str, Any]:
    """The TOML document in ``data``; any problem is a ProbeConfigError saying where."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ProbeConfigError(source, [_not_utf8(data, error)]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        problem = f"not valid TOML: {error} ({_toml_hint(text, str(error))})"
    except RecursionError:
        problem = (
            "not valid TOML: arrays or inline tables are nested too deeply to read; "
            "probe.toml needs no nesting beyond a list of strings"
        )
    except ValueError as error:  # a number tomllib cannot convert
        problem = (
            "not valid TOML: a number has thousands of digits; no setting needs more than 19"
            if "integer string conversion" in str(error)
            else f"not valid TOML: {error}"
        )
    raise ProbeConfigError(source, [problem])


def _not_utf8(data: bytes, error: UnicodeDecodeError) -> str:
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "is UTF-16 text: save it as UTF-8 (TOML files are UTF-8)"
    line = data.count(b"\n", 0, error.start) + 1
    return (
        f"byte 0x{data[error.start]:02x} on line {line} is not UTF-8: TOML files are UTF-8, "
        "so save it as UTF-8 (e.g. iconv -f WINDOWS-1258 -t UTF-8 for Vietnamese text)"
    )


_TOML_LINE = re.compile(r"\(at line (\d+), column \d+\)")
_TABLE_HEADER = re.compile(r"^\s*\[+\s*([^\]]+?)\s*\]+")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")


def _toml_hint(text: str, message: str) -> str:
    """What to do about a TOML syntax error, naming a moved option when that is the cause."""
    if not message.startswith("Cannot overwrite a value"):
        return "check quotes and brackets"
    found = _TOML_LINE.search(message)
    lines = text.splitlines()
    if found and 0 < int(found[1]) <= len(lines):
        number = int(found[1])
        key = _KEY.match(lines[number - 1])
        table = next(
            (m[1] for m in map(_TABLE_HEADER.match, reversed(lines[: number - 1])) if m), ""
        )
        moved = MOVED_OPTIONS.get((table.replace(" ", ""), key[1] if key else ""))
        if moved:
            return (
                f"[{table}] sets {key[1] if key else ''} twice: {moved[1]} is now "
                f"{moved[0]}; rename that line to {moved[0]} = ..."
            )
    return "a key is set twice in the same table: keep one"


def from_mapping(
    document: dict[str, Any],
    *,
    source: Path | None = None,
    environ: typing.Mapping[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> ProbeConfig:
    env = os.environ if environ is None else environ
    problems: list[str] = []
    plugins = registered()
    known_tables = [*_SECTIONS, "sensors"]
    for table_name in document:
        if table_name not in known_tables:
            problems.append(
                f"unknown table [{printable(table_name)}]{_did_you_mean(table_name, known_tables)}"
            )
    sections: dict[str, Any] = {}
    for name, section_type in _SECTIONS.items():
        table = _table(document, name, problems)
        if name == "mqtt" and not table.get("url") and env.get(MQTT_URL_ENV):
            table = {**table, "url": env[MQTT_URL_ENV]}
        for key, value in (overrides or {}).get(name, {}).items():
            table = {**table, key: value}
        sections[name] = _build(section_type, table, f"[{name}]", problems)
    sensors_table = _table(document, "sensors", problems)
    for name in sensors_table:
        if name not in plugins:
            problems.append(
                f"unknown sensor [sensors.{printable(name)}]"
                f"{_did_you_mean(name, list(plugins))}; "
                f"known sensors: {', '.join(sorted(plugins))}"
            )
    sensors: dict[str, tuple[SensorSchedule, Any]] = {}
    for name, plugin in sorted(plugins.items()):
        if plugin.multiple and isinstance(sensors_table.get(name), list):
            sensors.update(_sensor_instances(plugin, sensors_table[name], problems))
            continue
        table = _table(sensors_table, name, problems, prefix="sensors.")
        schedule, settings = _sensor(plugin, table, problems)
        if plugin.check is not None:
            problems.extend(plugin.check([(f"[sensors.{name}]", table, settings)]))
        label = getattr(settings, "name", "") if plugin.multiple else ""
        sensors[instance_name(name, label)] = (schedule, settings)
    config = ProbeConfig(
        probe=sections["probe"],
        mqtt=sections["mqtt"],
        outbox=sections["outbox"],
        sensors=sensors,
        source=source,
    )
    _check_semantics(config, problems)
    if problems:
        raise ProbeConfigError(str(source or "probe config"), problems)
    return config


def _table(
    document: dict[str, Any], name: str, problems: list[str], *, prefix: str = ""
) -> dict[str, Any]:
    value = document.get(name, {})
    if not isinstance(value, dict):
        problems.append(f"[{prefix}{name}] must be a table, e.g. a line [{prefix}{name}]")
        return {}
    return value


def _sensor_instances(
    plugin: SensorPlugin, entries: list[Any], problems: list[str]
) -> dict[str, tuple[SensorSchedule, Any]]:
    """``[[sensors.<name>]]``: one sensor per table, each named by its ``name`` setting."""
    header = f"[[sensors.{plugin.name}]]"
    if not entries:
        problems.append(
            f"sensors.{plugin.name} is an empty list: write one {header} table per "
            f"instance, or a single [sensors.{plugin.name}] table"
        )
    instances: dict[str, tuple[SensorSchedule, Any]] = {}
    checked: list[tuple[str, dict[str, Any], Any]] = []
    for number, table in enumerate(entries, 1):
        if not isinstance(table, dict):
            problems.append(f"{header} #{number} must be a table (a line {header}), not a value")
            continue
        label = table.get("name")
        where = f"{header} #{number}" + (
            f" ({printable(label[:40])})" if isinstance(label, str) and label else ""
        )
        schedule, settings = _sensor(plugin, table, problems, where=where)
        name = getattr(settings, "name", "")
        if not name:
            problems.append(
                f"{where} name is required: give each {header} table a short label, e.g. "
                f'name = "viettel"'
            )
        elif instance_name(plugin.name, name) in instances:
            problems.append(
                f"{where} name {shown(name)} is used by an earlier table: each {header} "
                "table needs a name of its own"
            )
        else:
            instances[instance_name(plugin.name, name)] = (schedule, settings)
        checked.append((where, table, settings))
    if plugin.check is not None:
        problems.extend(plugin.check(checked))
    return instances


def _sensor(
    plugin: SensorPlugin, table: dict[str, Any], problems: list[str], *, where: str = ""
) -> tuple[SensorSchedule, Any]:
    where = where or f"[sensors.{plugin.name}]"
    schedule_values = {key: table[key] for key in _SCHEDULE_FIELDS if key in table}
    settings_values = {key: value for key, value in table.items() if key not in _SCHEDULE_FIELDS}
    enabled = schedule_values.get("enabled", plugin.enabled_by_default)
    interval = schedule_values.get(
        "interval_s", DEFAULT_INTERVALS_S.get(plugin.name, FALLBACK_INTERVAL_S)
    )
    if not isinstance(enabled, bool):
        problems.append(f"{where} enabled: expected true or false, got {shown(enabled)}")
        enabled = False
    if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
        moved = MOVED_OPTIONS.get((f"sensors.{plugin.name}", "interval_s"))
        hint = (
            f"; interval_s is how often the sensor runs, and {moved[1]} is now "
            f"{moved[0]} (e.g. {moved[0]} = {shown(interval)})"
            if moved and _looks_like_moved_value(interval)
            else ""
        )
        problems.append(
            f"{where} interval_s: expected whole seconds >= 1, got {shown(interval)}{hint}"
        )
        interval = FALLBACK_INTERVAL_S
    elif interval > MAX_INTERVAL_S:
        problems.append(
            f"{where} interval_s: at most {MAX_INTERVAL_S} seconds (31 days), got {shown(interval)}"
        )
        interval = FALLBACK_INTERVAL_S
    settings = _build(
        plugin.settings_type, settings_values, where, problems, extra=_SCHEDULE_FIELDS
    )
    return SensorSchedule(enabled=enabled, interval_s=interval), settings


def _looks_like_moved_value(value: Any) -> bool:
    """A fraction of a second: written for the old meaning of a moved option."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value < 1
    )


def _build(
    section_type: type[Any],
    table: dict[str, Any],
    where: str,
    problems: list[str],
    *,
    extra: tuple[str, ...] = (),
) -> Any:
    fields = {f.name: f for f in dataclasses.fields(section_type)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in fields:
            problems.append(
                f"{where} unknown option {key!r}{_did_you_mean(key, [*fields, *extra])}"
            )
            continue
        expected = _field_type(section_type, key)
        checked = _coerce(value, expected)
        if checked is _INVALID:
            problems.append(
                f"{where} {key}: expected {_describe(expected)}, got {shown(value)} "
                f"(default: {_toml_value(_default(fields[key]))})"
            )
            continue
        if _has_nul(checked):
            problems.append(
                f"{where} {key}: contains a NUL character (\\u0000), which no setting may "
                "hold; remove it"
            )
            continue
        values[key] = checked
    try:
        return section_type(**values)
    except (TypeError, ValueError) as error:  # a plugin's own checks (__post_init__)
        problems.append(f"{where} {printable(str(error))}")
        return section_type()


_INVALID = object()


def _field_type(section_type: type[Any], name: str) -> Any:
    return typing.get_type_hints(section_type)[name]


def _coerce(value: Any, expected: Any) -> Any:
    if expected is bool:
        return value if isinstance(value, bool) else _INVALID
    if expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value if _INT_MIN <= value <= _INT_MAX else _INVALID
        return _INVALID
    if expected is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an integer beyond any float
                return _INVALID
            return number if math.isfinite(number) else _INVALID
        return _INVALID
    if expected is str:
        return value if isinstance(value, str) else _INVALID
    origin = typing.get_origin(expected)
    if origin in (list, tuple):
        (item_type,) = typing.get_args(expected)[:1]
        if not isinstance(value, list):
            return _INVALID
        items = [_coerce(item, item_type) for item in value]
        if any(item is _INVALID for item in items):
            return _INVALID
        return items if origin is list else tuple(items)
    if origin in (types.UnionType, typing.Union):
        if value is None:
            return None
        for option in typing.get_args(expected):
            if option is type(None):
                continue
            checked = _coerce(value, option)
            if checked is not _INVALID:
                return checked
        return _INVALID
    return value


def _describe(expected: Any) -> str:
    names = {
        bool: "true or false",
        int: "a whole number",
        float: "a finite number",
        str: "a string",
    }
    if expected in names:
        return names[expected]
    origin = typing.get_origin(expected)
    if origin in (list, tuple):
        return f"a list of {_describe(typing.get_args(expected)[0])}s"
    return str(expected)


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word[:100], choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    return isinstance(value, list | tuple) and any(_has_nul(item) for item in value)


def _check_semantics(config: ProbeConfig, problems: list[str]) -> None:
    if not config.probe.id:
        problems.append('[probe] id is required, e.g. id = "cb-001" (as registered on the server)')
    elif not re.fullmatch(protocol.PROBE_ID_RE, config.probe.id):  # no trailing newline
        problems.append(
            f"[probe] id {shown(config.probe.id)} is not a valid probe id: use 1-64 lowercase "
            "letters, digits, '-' or '_', e.g. cb-001"
        )
    if config.probe.log_level.lower() not in ("debug", "info", "warning", "error"):
        problems.append(
            f"[probe] log_level {shown(config.probe.log_level)}: use debug, info, warning or error"
        )
    if not config.mqtt.url:
        problems.append(
            '[mqtt] url is required, e.g. url = "mqtts://cb-001@broker.example.org:8883" '
            f"(or set {MQTT_URL_ENV})"
        )
    else:
        try:
            url = MqttUrl.parse(config.mqtt.url, setting="[mqtt] url")
        except CoverwatchError as error:
            problems.append(str(error).replace("\n", " "))
        else:
            if url.password is None and config.mqtt.password_file:
                _read_password(config.mqtt.password_file, problems)
    for name in ("ca_file", "cert_file", "key_file"):
        value = getattr(config.mqtt, name)
        if value:
            _check_readable(value, f"[mqtt] {name}", problems)
    if bool(config.mqtt.cert_file) != bool(config.mqtt.key_file):
        problems.append("[mqtt] cert_file and key_file go together: set both or neither")
    if not 1 <= config.mqtt.batch_readings <= protocol.MAX_READINGS_PER_BATCH:
        problems.append(
            f"[mqtt] batch_readings must be 1-{protocol.MAX_READINGS_PER_BATCH}, "
            f"got {config.mqtt.batch_readings}"
        )
    if config.mqtt.max_inflight_messages < 1:
        problems.append("[mqtt] max_inflight_messages must be at least 1")
    if not 0 < config.mqtt.confirm_grace_s <= 86400:
        problems.append("[mqtt] confirm_grace_s must be more than 0 and at most 86400 (a day)")
    if not 0 < config.mqtt.confirm_timeout_s <= config.mqtt.confirm_timeout_max_s <= 7 * 86400:
        problems.append(
            "[mqtt] need 0 < confirm_timeout_s <= confirm_timeout_max_s <= 604800 (a week)"
        )
    if not config.mqtt.batch_readings <= config.mqtt.max_unconfirmed_readings <= 1_000_000:
        problems.append(
            "[mqtt] max_unconfirmed_readings must be at least batch_readings and at most 1000000"
        )
    if config.mqtt.encoding not in protocol.ENCODINGS:
        problems.append(
            f'[mqtt] encoding must be "compact" or "json", got {config.mqtt.encoding!r}'
        )
    if not 5 <= config.mqtt.keepalive_s <= 65535:
        problems.append(
            "[mqtt] keepalive_s must be at least 5 seconds and at most 65535 (MQTT's limit)"
        )
    if not 0 < config.mqtt.backoff_min_s <= config.mqtt.backoff_max_s <= 86400:
        problems.append("[mqtt] need 0 < backoff_min_s <= backoff_max_s <= 86400 (a day)")
    if config.outbox.max_readings < 100:
        problems.append("[outbox] max_readings must be at least 100")
    if config.outbox.max_age_days <= 0:
        problems.append("[outbox] max_age_days must be more than 0")


def _check_readable(path: str, where: str, problems: list[str]) -> None:
    try:
        with open(path, "rb"):
            pass
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) else str(error)
        problems.append(f"{where}: cannot read {shown(path, 300)} ({reason}); check the path")


def _read_password(path: str, problems: list[str]) -> str | None:
    """The broker password held in ``path``, or None with the problem recorded."""
    where = "[mqtt] password_file"
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        problems.append(f"{where}: {shown(path, 300)} is not UTF-8 text; it must hold the password")
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        problems.append(f"{where}: cannot read {shown(path, 300)} ({reason}); check the path")
    return None


# ---------------------------------------------------------------------- the sample file


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return repr(value)


SAMPLE_HEADER = """\
# coverwatch probe configuration: /etc/coverwatch/probe.toml
#
# Generated from the agent's declared settings (coverwatch-probe config sample);
# every option is listed with its default, commented out. Uncomment and change
# what you need; the probe checks the whole file at start-up and lists every problem.
#
# Only [probe] id and [mqtt] url are required. The defaults fit a Pi on a prepaid
# SIM: about 4,000 readings a day, roughly 85 MB of MQTT traffic plus ~30 MB of
# latency pings a month (speed tests are off; each one costs ~30-60 MB, so enable them
# only with a data budget).
"""


def _section_lines(
    title: str, section_type: type[Any], *, extra: list[str] | None = None
) -> list[str]:
    lines = ["", f"[{title}]"]
    lines.extend(extra or [])
    for f in dataclasses.fields(section_type):
        lines.extend(
            textwrap.wrap(
                f.metadata.get("help", ""), 88, initial_indent="## ", subsequent_indent="## "
            )
        )
        lines.append(f"# {f.name} = {_toml_value(_default(f))}")
    return lines


def sample() -> str:
    lines = [SAMPLE_HEADER.rstrip("\n")]
    for name, section_type in _SECTIONS.items():
        lines.extend(_section_lines(name, section_type))
    for name, plugin in sorted(registered().items()):
        schedule = [
            "## run this sensor (true/false)",
            f"# enabled = {_toml_value(plugin.enabled_by_default)}",
            "## seconds between readings",
            f"# interval_s = {DEFAULT_INTERVALS_S.get(name, FALLBACK_INTERVAL_S)}",
        ]
        lines.extend(_section_lines(f"sensors.{name}", plugin.settings_type, extra=schedule))
        if plugin.sample_instances:
            lines.extend(
                f"## {line}".rstrip() for line in plugin.sample_instances.strip("\n").splitlines()
            )
    return "\n".join(lines) + "\n"
