"""probe.toml: every option documented, every problem reported at once with its fix."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from agent import config as probe_config
from agent.cli import main as probe_main
from agent.sensors.base import registered
from tests.helpers import REPO

SAMPLE = REPO / "agent" / "probe.sample.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "probe.toml"
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = '[probe]\nid = "cb-001"\n\n[mqtt]\nurl = "mqtt://cb-001:pw@127.0.0.1:1883"\n'


def test_committed_sample_is_what_the_declarations_generate() -> None:
    assert SAMPLE.read_text(encoding="utf-8") == probe_config.sample(), (
        "agent/probe.sample.toml is stale: run "
        "`.venv/bin/coverwatch-probe config sample > agent/probe.sample.toml`"
    )


def test_sample_documents_every_option_of_every_table() -> None:
    text = SAMPLE.read_text(encoding="utf-8")
    sections = {
        "probe": probe_config.ProbeSection,
        "mqtt": probe_config.MqttSection,
        "outbox": probe_config.OutboxSection,
    }
    for name, plugin in registered().items():
        sections[f"sensors.{name}"] = plugin.settings_type
    for title, section_type in sections.items():
        block = text.split(f"[{title}]\n", 1)[1].split("\n[", 1)[0]
        for field in dataclasses.fields(section_type):
            assert f"# {field.name} = " in block, f"[{title}] {field.name} is not in the sample"
            assert field.metadata.get("help"), f"[{title}] {field.name} has no help text"


def test_sample_with_the_required_lines_filled_in_loads(tmp_path: Path) -> None:
    text = SAMPLE.read_text(encoding="utf-8")
    text = text.replace('# id = ""', 'id = "cb-001"').replace(
        '# url = ""', 'url = "mqtt://127.0.0.1:1883"'
    )
    tomllib.loads(text)
    config = probe_config.load(write(tmp_path, text), environ={})
    assert config.probe.id == "cb-001"
    assert config.sensors["cellular"][0].interval_s == 60
    assert config.sensors["throughput"][0].enabled is False  # costs data: opt-in


def test_minimal_config_gets_pi_friendly_defaults(tmp_path: Path) -> None:
    config = probe_config.load(write(tmp_path, MINIMAL), environ={})
    assert config.outbox_path == Path("/var/lib/coverwatch/outbox.sqlite3")
    assert config.mqtt_url.password == "pw"
    assert {name for name, (s, _) in config.sensors.items() if s.enabled} == {
        "cellular",
        "latency",
        "power",
        "system",
    }


def test_every_problem_is_reported_at_once_with_a_fix(tmp_path: Path) -> None:
    text = """
[probe]
id = "CB 001"
stat_dir = "/tmp"

[mqtt]
url = "http://broker"
keepalive_s = "sixty"
batch_readings = 5000

[outbox]
max_readings = 10

[sensors.celular]
enabled = true

[sensors.latency]
interval_s = 0
packets = "ten"

[extra]
x = 1
"""
    with pytest.raises(probe_config.ProbeConfigError) as caught:
        probe_config.load(write(tmp_path, text), environ={})
    message = str(caught.value)
    expected = [
        "[probe] id 'CB 001' is not a valid probe id",
        "[probe] unknown option 'stat_dir' (did you mean 'state_dir'?)",
        "unsupported scheme 'http'",
        "[mqtt] keepalive_s: expected a whole number, got 'sixty'",
        "[mqtt] batch_readings must be 1-2000",
        "[outbox] max_readings must be at least 100",
        "unknown sensor [sensors.celular] (did you mean 'cellular'?)",
        "[sensors.latency] interval_s: expected whole seconds >= 1, got 0",
        "unknown table [extra]",
    ]
    for fragment in expected:
        assert fragment in message
    assert len(caught.value.problems) >= len(expected)


def test_missing_and_unreadable_files_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(probe_config.ProbeConfigError, match=r"probe\.sample\.toml"):
        probe_config.load(tmp_path / "absent.toml", environ={})
    with pytest.raises(probe_config.ProbeConfigError, match="not valid TOML"):
        probe_config.load(write(tmp_path, "[probe\nid="), environ={})
    missing = write(tmp_path, '[probe]\nid = "cb-001"\n')
    with pytest.raises(probe_config.ProbeConfigError, match=r"\[mqtt\] url is required"):
        probe_config.load(missing, environ={})


def test_broker_url_may_come_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[probe]\nid = "cb-001"\n')
    config = probe_config.load(path, environ={"COVERWATCH_MQTT_URL": "mqtts://b.example:8883"})
    assert (config.mqtt_url.host, config.mqtt_url.tls) == ("b.example", True)


def test_password_file_keeps_the_secret_out_of_the_config(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n", encoding="utf-8")
    text = MINIMAL.replace("cb-001:pw@", "cb-001@") + f'password_file = "{secret}"\n'
    config = probe_config.load(write(tmp_path, text), environ={})
    assert config.mqtt_url.password == "s3cret"
    assert "s3cret" not in repr(config)


def test_config_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert probe_main(["config", "check", "--config", str(write(tmp_path, MINIMAL))]) == 0
    out = capsys.readouterr().out
    assert "ok" in out
    assert "pw" not in out.replace("power", "")  # the password is redacted
    bad = write(tmp_path, '[probe]\nid = "x"\n[mqtt]\nurl = "mqtt://h"\nkeepalive_s = 1\n')
    assert probe_main(["config", "check", "--config", str(bad)]) == 2
    assert "keepalive_s must be at least 5" in capsys.readouterr().err


def uncomment_every_option(sample: str) -> str:
    """The sample with every ``# key = default`` line made live (``##`` help stays)."""
    return "\n".join(
        line[2:] if line.startswith("# ") and " = " in line else line
        for line in sample.splitlines()
    )


def test_sample_with_every_option_uncommented_is_a_valid_config(tmp_path: Path) -> None:
    text = uncomment_every_option(SAMPLE.read_text(encoding="utf-8"))
    # Whole lines: device_id = "" (a cellular option) must stay empty.
    text = re.sub(r'^id = ""$', 'id = "cb-001"', text, flags=re.MULTILINE)
    text = re.sub(r'^url = ""$', 'url = "mqtt://h:1883"', text, flags=re.MULTILINE)
    assert "\n# " not in text.split("\n[probe]\n", 1)[1]  # nothing left commented out
    config = probe_config.load(write(tmp_path, text), environ={})
    latency_schedule, latency = config.sensors["latency"]
    assert latency_schedule.interval_s == 300
    assert latency.packet_interval_s == 0.2
    for name, (schedule, settings) in config.sensors.items():
        plugin = registered()[name]
        assert schedule.enabled is plugin.enabled_by_default
        assert settings == plugin.settings_type()  # every default, as declared


def test_no_sensor_option_reuses_a_schedule_name() -> None:
    """[sensors.<name>] enabled and interval_s belong to the schedule of every sensor."""
    for name, plugin in registered().items():
        options = {field.name for field in dataclasses.fields(plugin.settings_type)}
        assert not options & {"enabled", "interval_s"}, f"sensor {name} reuses {options}"


def test_latency_packet_interval_is_its_own_option(tmp_path: Path) -> None:
    text = MINIMAL + "\n[sensors.latency]\ninterval_s = 600\npacket_interval_s = 0.5\n"
    schedule, settings = probe_config.load(write(tmp_path, text), environ={}).sensors["latency"]
    assert (schedule.interval_s, settings.packet_interval_s) == (600, 0.5)


def test_the_old_latency_interval_is_refused_with_a_hint_naming_the_new_key(
    tmp_path: Path,
) -> None:
    # A file written for the old meaning: the gap between ping packets.
    old = MINIMAL + "\n[sensors.latency]\ninterval_s = 0.2\n"
    with pytest.raises(probe_config.ProbeConfigError) as caught:
        probe_config.load(write(tmp_path, old), environ={})
    assert caught.value.problems == [
        "[sensors.latency] interval_s: expected whole seconds >= 1, got 0.2; interval_s is "
        "how often the sensor runs, and the gap between the probes to one target is now "
        "packet_interval_s (e.g. packet_interval_s = 0.2)"
    ]
    # The old sample uncommented set interval_s twice in [sensors.latency].
    both = MINIMAL + "\n[sensors.latency]\ninterval_s = 300\ncount = 10\ninterval_s = 0.2\n"
    with pytest.raises(probe_config.ProbeConfigError) as caught:
        probe_config.load(write(tmp_path, both), environ={})
    assert "[sensors.latency] sets interval_s twice" in str(caught.value)
    assert "rename that line to packet_interval_s = ..." in str(caught.value)
    # Any other key set twice gets the plain hint.
    twice = MINIMAL + "\n[outbox]\nmax_readings = 100\nmax_readings = 200\n"
    with pytest.raises(probe_config.ProbeConfigError, match="a key is set twice"):
        probe_config.load(write(tmp_path, twice), environ={})
