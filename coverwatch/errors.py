"""Exceptions shared by the probe and the server side."""

from __future__ import annotations


class CoverwatchError(Exception):
    """Base of every error coverwatch raises on purpose."""


class ConfigError(CoverwatchError):
    """A setting, flag or config file that cannot be used; says what to fix.

    ``setting`` names the option (``COVERWATCH_MQTT_URL``, ``--mqtt-url``,
    ``probe.toml: [mqtt] port``) and ``hint`` how to put it right.
    """

    def __init__(self, setting: str, problem: str, hint: str) -> None:
        self.setting = setting
        self.problem = problem
        self.hint = hint
        super().__init__(f"{setting}: {problem}\nHint: {hint}")


class ServiceError(CoverwatchError):
    """A local service (broker, database) that could not be started or reached."""
