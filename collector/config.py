"""The collector's settings, declared once (Datasette-style): name, default, help.

Each setting can come from a TOML config file (``--config``, table ``[collector]``),
from an environment variable (``COVERWATCH_<NAME>``, upper case), or from a flag
(``--<name>`` with dashes); a flag beats the environment, which beats the file,
which beats the default. Unknown keys, wrong types and values out of range are refused
at start-up with a hint that says how to fix them; whatever the file holds (bytes that
are not UTF-8, nesting thousands deep, 5,000-digit numbers, NUL characters), the answer
is a :class:`ConfigError`, never another exception.
"""

from __future__ import annotations

import argparse
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coverwatch.errors import ConfigError
from coverwatch.settings import missing_database_url
from coverwatch.shown import printable, shown


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    maximum: float | None = None  # numbers: the largest value that makes sense

    @property
    def env(self) -> str:
        return f"COVERWATCH_{self.name.upper()}"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("database_url", str, None, "PostgreSQL URL (required)"),
    Setting(
        "mqtt_url", str, None, "broker URL, mqtt://user:pass@host:1883 or mqtts://… (required)"
    ),
    Setting("mqtt_ca_file", str, None, "CA certificate for mqtts:// (default: system CAs)"),
    Setting(
        "client_id", str, "coverwatch-collector", "stable MQTT client id of the persistent session"
    ),
    Setting("shared_group", str, None, "share the load with other collectors: $share/<group>/…"),
    Setting("batch_readings", int, 5000, "flush a batch at this many readings", maximum=1_000_000),
    Setting(
        "batch_age_s",
        float,
        1.0,
        "…or when its oldest message is this old (seconds)",
        maximum=3600,
    ),
    Setting(
        "max_unacked_messages",
        int,
        1000,
        "…or at this many unacknowledged messages",
        maximum=1_000_000,
    ),
    Setting(
        "metrics_port",
        int,
        9108,
        "port of the Prometheus /metrics endpoint (0: off)",
        maximum=65535,
    ),
    Setting("metrics_host", str, "127.0.0.1", "address the metrics endpoint listens on"),
    Setting(
        "http_port",
        int,
        0,
        "serve the HTTP API and the coverage map (/api/…, /map) on this port (0: off)",
        maximum=65535,
    ),
    Setting("http_host", str, "127.0.0.1", "address the HTTP API listens on"),
    Setting(
        "http_write_token_file",
        str,
        None,
        "file holding the bearer token that write endpoints require (none: writes disabled)",
    ),
    Setting(
        "rollup_refresh_s",
        float,
        60.0,
        "re-materialize the hours marked since the last round this often (seconds; 0: off). "
        "Reads are exact either way; marked hours are aggregated from raw readings on read",
        maximum=86400,
    ),
    Setting("log_level", str, "INFO", "DEBUG, INFO, WARNING or ERROR"),
    Setting(
        "log_format",
        str,
        "text",
        "text (key=value lines for a terminal) or json (one object per line for journald/Loki)",
        choices=("text", "json"),
    ),
)
_BY_NAME = {setting.name: setting for setting in SETTINGS}
# What the collector runs with when nothing is set; IngestOptions takes its defaults from here.
DEFAULTS: dict[str, Any] = {setting.name: setting.default for setting in SETTINGS}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML file with a [collector] table")
    for setting in SETTINGS:
        default = "" if setting.default is None else f" (default: {setting.default})"
        parser.add_argument(
            setting.flag,
            dest=setting.name,
            default=None,
            help=f"{setting.help}{default}; env {setting.env}",
        )


def resolve(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    values: dict[str, Any] = dict(DEFAULTS)
    if getattr(args, "config", None):
        values.update(_read_file(args.config))
    for setting in SETTINGS:
        if env.get(setting.env):
            values[setting.name] = _convert(setting, env[setting.env], setting.env)
        flag_value = getattr(args, setting.name, None)
        if flag_value is not None:
            values[setting.name] = _convert(setting, flag_value, setting.flag)
    if not values["database_url"]:
        raise missing_database_url(otherwise="put database_url in the config file")
    if not values["mqtt_url"]:
        raise missing("mqtt_url")
    return values


def missing(name: str, *, config_file: bool = True) -> ConfigError:
    """The error for a required setting that nobody gave."""
    setting = _BY_NAME[name]
    where = f"pass {setting.flag}, set {setting.env}"
    where += f", or put {name} in the config file" if config_file else ""
    return ConfigError(setting.flag, "is required", where)


def _read_file(path: Path) -> dict[str, Any]:
    document = _parse(path)
    table = document.get("collector", {})
    if not isinstance(table, dict):
        raise ConfigError(
            str(path), "[collector] must be a table", "write the options under [collector]"
        )
    values: dict[str, Any] = {}
    for key, raw in table.items():
        setting = _BY_NAME.get(key)
        if setting is None:
            known = ", ".join(sorted(_BY_NAME))
            raise ConfigError(
                f"{path}: [collector] {printable(key)}",
                "unknown option",
                f"known options: {known}",
            )
        values[key] = _convert(setting, raw, f"{path}: [collector] {key}")
    return values


def _parse(path: Path) -> dict[str, Any]:
    """The TOML document at ``path``; any problem is a ConfigError saying what to fix."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(
            str(path), f"cannot read the file: {error.strerror or error}", "check the path"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError(
            str(path),
            f"is not UTF-8 text (byte 0x{data[error.start]:02x} on line {line})",
            "TOML files are UTF-8: save it as UTF-8",
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        problem, hint = f"is not valid TOML: {error}", "fix the syntax at that line"
    except RecursionError:
        problem = "is not valid TOML: arrays or inline tables are nested too deeply to read"
        hint = "every collector option is a single value under [collector]"
    except ValueError as error:  # a number tomllib cannot convert
        problem = (
            "is not valid TOML: a number has thousands of digits"
            if "integer string conversion" in str(error)
            else f"is not valid TOML: {error}"
        )
        hint = "no option needs a number of more than 19 digits"
    raise ConfigError(str(path), problem, hint)


_INVALID = object()


def _convert(setting: Setting, raw: Any, where: str) -> Any:
    """``raw`` from a flag or the environment (text) or the file (TOML-typed), checked."""
    value = _typed(setting, raw)
    if value is _INVALID:
        finite = " (a finite number)" if setting.type is float else ""
        raise ConfigError(
            where, f"expected {setting.type.__name__}{finite}, got {shown(raw)}", setting.help
        )
    if isinstance(value, str) and "\x00" in value:
        raise ConfigError(where, "contains a NUL character (\\u0000)", "remove it")
    if isinstance(value, int | float) and value < 0:
        raise ConfigError(where, f"must not be negative, got {shown(raw)}", setting.help)
    if setting.maximum is not None and value > setting.maximum:
        raise ConfigError(
            where, f"must be at most {setting.maximum:g}, got {shown(raw)}", setting.help
        )
    if setting.choices and value not in setting.choices:
        raise ConfigError(
            where,
            f"expected one of {', '.join(setting.choices)}, got {shown(raw)}",
            setting.help,
        )
    return value


def _typed(setting: Setting, raw: Any) -> Any:
    """``raw`` as ``setting.type``, or _INVALID; text is parsed, TOML values must fit."""
    if isinstance(raw, bool):
        return _INVALID
    try:
        if setting.type is str:
            return raw if isinstance(raw, str) else _INVALID
        if isinstance(raw, str):  # a flag or an environment variable
            value = setting.type(raw.strip())
        elif setting.type is float and isinstance(raw, int | float):
            value = float(raw)
        elif setting.type is int and isinstance(raw, int):
            value = raw
        else:  # a list, a table, a date, a float where a whole number belongs
            return _INVALID
    except (ValueError, OverflowError):  # not a number, or beyond a float / 4,300 digits
        return _INVALID
    if isinstance(value, float) and not math.isfinite(value):
        return _INVALID
    return value
