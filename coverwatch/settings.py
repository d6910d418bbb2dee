"""Connection settings shared by every coverwatch command.

Two names are shared across the probe and the server, each overridable by a flag:

``COVERWATCH_DATABASE_URL``
    PostgreSQL URL, e.g. ``postgresql://coverwatch:secret@db:5432/coverwatch``.
``COVERWATCH_MQTT_URL``
    ``mqtt://user:pass@host:port`` (plain, default port 1883) or ``mqtts://…``
    (TLS, default port 8883).

Passwords never reach a log line: use :meth:`MqttUrl.redacted` and :func:`redact_url`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import SplitResult, quote, unquote, urlsplit

from coverwatch.errors import ConfigError

DATABASE_URL_ENV = "COVERWATCH_DATABASE_URL"
MQTT_URL_ENV = "COVERWATCH_MQTT_URL"

MQTT_PORT = 1883
MQTTS_PORT = 8883


@dataclass(frozen=True, slots=True)
class MqttUrl:
    """A parsed ``mqtt://`` or ``mqtts://`` URL. The password is kept out of repr()."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str, *, setting: str = MQTT_URL_ENV) -> MqttUrl:
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as error:
            raise ConfigError(
                setting,
                f"cannot read {redact_url(url)!r} as a URL ({error})",
                "write it as mqtt://user:password@host:1883 or mqtts://user:password@host:8883",
            ) from None
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ConfigError(
                setting,
                f"unsupported scheme {parts.scheme!r} in {redact_url(url)!r}",
                "use mqtt:// for plain MQTT or mqtts:// for MQTT over TLS",
            )
        if not parts.hostname:
            raise ConfigError(
                setting,
                f"no host in {redact_url(url)!r}",
                "write it as mqtt://host:1883, e.g. mqtt://127.0.0.1:1883",
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError(
                setting,
                f"unexpected path or query in {redact_url(url)!r}",
                "an MQTT URL has only user, password, host and port: mqtt://user:pw@host:port",
            )
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=port if port is not None else (MQTTS_PORT if tls else MQTT_PORT),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )

    def with_credentials(self) -> str:
        """The full URL, password included: for passing on to a child process, never logs."""
        scheme = "mqtts" if self.tls else "mqtt"
        user = ""
        if self.username:
            password = f":{quote(self.password, safe='')}" if self.password is not None else ""
            user = f"{quote(self.username, safe='')}{password}@"
        return f"{scheme}://{user}{self.host}:{self.port}"

    def redacted(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}:***@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, safe to log or print."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return SplitResult(
            parts.scheme, f"{user}:***@{netloc}", parts.path, parts.query, parts.fragment
        ).geturl()
    except ValueError:
        return "<unreadable URL>"


def database_url(
    flag_value: str | None,
    *,
    environ: Mapping[str, str] | None = None,
    otherwise: str | None = None,
) -> str:
    """The database URL: ``--database-url``, else ``COVERWATCH_DATABASE_URL``.

    Every command that needs the database resolves it here, so that all of them say
    the same when it is missing; ``otherwise`` adds a way out that only one command has
    (``put database_url in the config file``).
    """
    url = setting_from(flag_value, DATABASE_URL_ENV, environ=environ)
    if not url:
        raise missing_database_url(otherwise)
    return url


def missing_database_url(otherwise: str | None = None) -> ConfigError:
    """The one error for a database URL that nobody gave."""
    ways = f"pass --database-url, set {DATABASE_URL_ENV}"
    if otherwise:
        ways += f", or {otherwise}"
    return ConfigError(
        "--database-url",
        "is required",
        f"{ways}; the URL looks like postgresql://user:password@host:5432/coverwatch",
    )


def setting_from(
    flag_value: str | None,
    env_name: str,
    *,
    environ: Mapping[str, str] | None = None,
    default: str | None = None,
) -> str | None:
    """A flag wins over the environment, the environment over the default."""
    if flag_value:
        return flag_value
    env = os.environ if environ is None else environ
    return env.get(env_name) or default
