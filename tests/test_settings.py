"""Shared connection settings: URL parsing, precedence, and never leaking secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from coverwatch.errors import ConfigError
from coverwatch.settings import MqttUrl, database_url, redact_url, setting_from


def test_mqtt_url_defaults_and_credentials() -> None:
    assert MqttUrl.parse("mqtt://broker") == MqttUrl("broker", 1883, tls=False)
    url = MqttUrl.parse("mqtts://cb-001:s3cr%40t@mqtt.example.org")
    assert (url.host, url.port, url.tls, url.username, url.password) == (
        "mqtt.example.org",
        8883,
        True,
        "cb-001",
        "s3cr@t",
    )
    assert MqttUrl.parse("mqtt://[::1]:1884").port == 1884


def test_password_never_shows() -> None:
    url = MqttUrl.parse("mqtt://cb-001:hunter2@host:1883")
    assert "hunter2" not in repr(url)
    assert url.redacted() == "mqtt://cb-001:***@host:1883"
    assert redact_url("postgresql://cw:hunter2@db:5432/cw") == "postgresql://cw:***@db:5432/cw"
    assert redact_url("postgresql://db/cw") == "postgresql://db/cw"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://host", "unsupported scheme 'http'"),
        ("mqtt://", "no host"),
        ("mqtt://host:99999", "cannot read"),
        ("mqtt://host/topic", "unexpected path"),
        ("mqtt://user:hunter2@host:x", "cannot read"),
    ],
)
def test_bad_mqtt_urls_say_what_to_fix(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        MqttUrl.parse(url, setting="--mqtt-url")
    message = str(caught.value)
    assert message.startswith(f"--mqtt-url: {problem}")
    assert "Hint: " in message
    assert "hunter2" not in message


def test_flag_beats_environment_beats_default() -> None:
    env = {"COVERWATCH_MQTT_URL": "mqtt://env"}
    assert setting_from("mqtt://flag", "COVERWATCH_MQTT_URL", environ=env) == "mqtt://flag"
    assert setting_from(None, "COVERWATCH_MQTT_URL", environ=env) == "mqtt://env"
    assert setting_from(None, "COVERWATCH_MQTT_URL", environ={}, default="d") == "d"


def test_database_url_flag_beats_environment_and_nothing_is_one_error() -> None:
    env = {"COVERWATCH_DATABASE_URL": "postgresql://env/cw"}
    assert database_url("postgresql://flag/cw", environ=env) == "postgresql://flag/cw"
    assert database_url(None, environ=env) == "postgresql://env/cw"
    with pytest.raises(ConfigError) as plain:
        database_url(None, environ={"COVERWATCH_DATABASE_URL": ""})
    assert str(plain.value) == (
        "--database-url: is required\nHint: pass --database-url, set COVERWATCH_DATABASE_URL; "
        "the URL looks like postgresql://user:password@host:5432/coverwatch"
    )
    with pytest.raises(ConfigError) as with_way_out:
        database_url(None, environ={}, otherwise="pass --no-database to skip the registry")
    assert with_way_out.value.hint.startswith(
        "pass --database-url, set COVERWATCH_DATABASE_URL, or pass --no-database to skip"
    )


def test_every_command_says_the_same_when_the_database_url_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """collector, geo and provisioning resolve it in one place (coverwatch.settings)."""
    from coverwatch.cli import main

    monkeypatch.delenv("COVERWATCH_DATABASE_URL", raising=False)
    missing = (
        "error: --database-url: is required\nHint: pass --database-url, set "
        "COVERWATCH_DATABASE_URL{}; the URL looks like postgresql://user:password@host:5432/"
        "coverwatch\n"
    )
    assert main(["db", "upgrade"]) == 2
    assert capsys.readouterr().err == missing.format("")
    assert main(["collector", "run", "--mqtt-url", "mqtt://broker"]) == 2
    assert capsys.readouterr().err == missing.format(", or put database_url in the config file")
    revoke = ["probes", "revoke", "--id", "cb-001", "--deploy-dir", str(tmp_path)]
    assert main(revoke) == 2
    assert capsys.readouterr().err == missing.format(", or pass --no-database to skip the registry")
    assert main(["thresholds", "show"]) == 2
    assert capsys.readouterr().err == missing.format("")
