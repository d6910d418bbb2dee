"""The collector's settings, declared once (Datasette-style): name, default, help.

Each setting can come from a TOML config file (``--config``, table ``[collector]``),
from an environment variable (``COVERWATCH_<NAME>``, upper case), or from a flag
(``--<name>`` with dashes); a flag beats the environment, which beats the file,
which beats the default. Unknown keys and wrong types are refused at start-up with
a hint that says how to fix them.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coverwatch.errors import ConfigError


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()

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
    Setting("batch_readings", int, 5000, "flush a batch at this many readings"),
    Setting("batch_age_s", float, 1.0, "…or when its oldest message is this old (seconds)"),
    Setting("max_unacked_messages", int, 1000, "…or at this many unacknowledged messages"),
    Setting("metrics_port", int, 9108, "port of the Prometheus /metrics endpoint (0: off)"),
    Setting("metrics_host", str, "127.0.0.1", "address the metrics endpoint listens on"),
    Setting(
        "http_port",
        int,
        0,
        "serve the HTTP API and the coverage map (/api/…, /map) on this port (0: off)",
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
        300.0,
        "refresh the hourly rollup views this often on plain PostgreSQL (seconds; 0: off; "
        "TimescaleDB refreshes its continuous aggregates itself)",
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
    values: dict[str, Any] = {setting.name: setting.default for setting in SETTINGS}
    if getattr(args, "config", None):
        values.update(_read_file(args.config))
    for setting in SETTINGS:
        if env.get(setting.env):
            values[setting.name] = _convert(setting, env[setting.env], setting.env)
        flag_value = getattr(args, setting.name, None)
        if flag_value is not None:
            values[setting.name] = _convert(setting, flag_value, setting.flag)
    for required in ("database_url", "mqtt_url"):
        if not values[required]:
            raise missing(required)
    return values


def missing(name: str, *, config_file: bool = True) -> ConfigError:
    """The error for a required setting that nobody gave."""
    setting = _BY_NAME[name]
    where = f"pass {setting.flag}, set {setting.env}"
    where += f", or put {name} in the config file" if config_file else ""
    return ConfigError(setting.flag, "is required", where)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigError(
            str(path), f"cannot read the file: {error.strerror}", "check the path"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(
            str(path), f"is not valid TOML: {error}", "fix the syntax at that line"
        ) from None
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
                f"{path}: [collector] {key}", "unknown option", f"known options: {known}"
            )
        values[key] = _convert(setting, raw, f"{path}: [collector] {key}")
    return values


def _convert(setting: Setting, raw: Any, where: str) -> Any:
    if isinstance(raw, setting.type) and not isinstance(raw, bool):
        value = raw
    else:
        try:
            if isinstance(raw, bool):
                raise ValueError
            value = setting.type(raw)
        except (TypeError, ValueError):
            raise ConfigError(
                where,
                f"expected {setting.type.__name__}, got {raw!r}",
                f"{setting.help}",
            ) from None
    if isinstance(value, int | float) and value < 0:
        raise ConfigError(where, f"must not be negative, got {raw!r}", setting.help)
    if setting.choices and value not in setting.choices:
        raise ConfigError(
            where, f"expected one of {', '.join(setting.choices)}, got {raw!r}", setting.help
        )
    return value
