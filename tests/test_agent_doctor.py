"""``coverwatch-probe doctor`` for a healthy and for broken installations.

The modem is the only fake (a serial port replaying captured AT transcripts); the
broker is a real one, the outbox a real SQLite file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agent import config as probe_config
from agent.clock import Clock
from agent.doctor import Check, render, run_checks
from agent.outbox import Outbox
from agent.sensors.base import Sensor
from agent.sensors.cellular import CellularSensor, Settings
from coverwatch.localservices import AmqttBroker
from coverwatch.localservices.ports import free_port
from coverwatch.settings import MqttUrl
from tests.agent_harness import power_reading
from tests.modem_kit import KIT_TOML, VIETTEL_IMEI, kit_runner, kit_sensors
from tests.sensor_fakes import DATA, CapturedRunner, ReplayedSerialPort

AT = DATA / "at"
PROC = DATA / "proc"


def modem(transcript: str) -> CellularSensor:
    return CellularSensor(
        Settings(backend="at"),
        open_port=lambda name, baud, timeout_s: ReplayedSerialPort(AT / transcript),
        port_exists=lambda name: True,
    )


def no_modem() -> CellularSensor:
    def absent(name: str, baud: int, timeout_s: float) -> ReplayedSerialPort:
        raise FileNotFoundError(name)

    return CellularSensor(Settings(backend="at"), open_port=absent, port_exists=lambda n: False)


def config_for(url: MqttUrl, tmp_path: Path) -> probe_config.ProbeConfig:
    return probe_config.from_mapping(
        {
            "probe": {"id": "cb-001", "state_dir": str(tmp_path / "state")},
            "mqtt": {"url": url.with_credentials()},
        },
        environ={},
    )


def verdicts(checks: list[Check]) -> dict[str, str]:
    return {check.name: check.verdict for check in checks}


def doctor(
    config: probe_config.ProbeConfig,
    sensor: Sensor,
    *,
    synced: bool = True,
    disk_free: int = 10 * 1024**3,
    mounts: Path = PROC / "raspios-mounts-lazytime",
) -> list[Check]:
    class Usage:
        free = disk_free

    usage: Callable[[str], Usage] = lambda path: Usage()  # noqa: E731
    return run_checks(
        config,
        sensors={"cellular": sensor},
        clock=Clock(ntp_synced=lambda: synced),
        connect_timeout_s=5,
        disk_usage=usage,
        mounts=mounts,
    )


def test_healthy_probe_passes_every_check(amqtt_broker: AmqttBroker, tmp_path: Path) -> None:
    checks = doctor(config_for(amqtt_broker.url, tmp_path), modem("quectel-ec25-lte-home.txt"))
    assert verdicts(checks) == {
        "modem": "PASS",
        "SIM / registration": "PASS",
        "signal": "PASS",
        "broker reachable": "PASS",
        "broker login": "PASS",
        "clock": "PASS",
        "disk": "PASS",
        "sd card": "PASS",
        "outbox": "PASS",
    }
    text = render(checks)
    assert text.endswith("All checks passed (0 warning(s)).")
    assert amqtt_broker.url.password not in text  # type: ignore[operator]


def test_broken_probe_says_what_to_do_for_each_failure(
    amqtt_broker: AmqttBroker, tmp_path: Path
) -> None:
    wrong_password = MqttUrl(
        host=amqtt_broker.url.host,
        port=amqtt_broker.url.port,
        tls=False,
        username=amqtt_broker.url.username,
        password="wrong",
    )
    config = config_for(wrong_password, tmp_path)
    outbox = Outbox(config.outbox_path, max_readings=100)
    outbox.add([power_reading()] * 120)  # a long outage overflowed the outbox
    outbox.close()
    checks = doctor(
        config,
        modem("quectel-searching.txt"),
        synced=False,
        disk_free=50 * 1024**2,
        mounts=PROC / "raspios-mounts",  # as Raspberry Pi OS ships: no lazytime
    )
    found = {check.name: check for check in checks}
    assert verdicts(checks) == {
        "modem": "PASS",
        "SIM / registration": "FAIL",
        "broker reachable": "PASS",
        "broker login": "FAIL",
        "clock": "WARN",
        "disk": "FAIL",
        "sd card": "WARN",
        "outbox": "WARN",
    }
    assert "antenna" in found["SIM / registration"].fix
    assert "password" in found["broker login"].fix
    assert "20 dropped" in found["outbox"].seen
    text = render(checks)
    assert "3 check(s) FAILED" in text
    assert ":wrong@" not in text  # the password is never echoed


def test_missing_modem_unreachable_broker_and_denied_sim(tmp_path: Path) -> None:
    nobody = MqttUrl(host="127.0.0.1", port=free_port(), tls=False)
    checks = doctor(config_for(nobody, tmp_path), no_modem())
    found = {check.name: check for check in checks}
    assert found["modem"].verdict == "FAIL"
    assert "mmcli -L" in found["modem"].fix
    assert found["broker reachable"].verdict == "FAIL"
    assert "firewall" in found["broker reachable"].fix
    assert "broker login" not in found  # no point trying to log in
    denied = doctor(config_for(nobody, tmp_path), modem("simcom-no-service-denied.txt"))
    registration = next(c for c in denied if c.name == "SIM / registration")
    assert registration.verdict == "FAIL"
    assert "credit" in registration.fix


def test_doctor_command_exit_code(tmp_path: Path) -> None:
    from agent.cli import main

    bad = tmp_path / "probe.toml"
    bad.write_text('[probe]\nid = "Bad Id"\n', encoding="utf-8")
    assert main(["doctor", "--config", str(bad)]) == 1


def test_doctor_checks_every_modem_of_a_three_modem_kit(
    amqtt_broker: AmqttBroker, tmp_path: Path
) -> None:
    """Each [[sensors.cellular]] table gets its own lines: found by its identity, the SIM's
    network, registration and signal; an unplugged one fails alone, naming its identity."""
    kit = probe_config.from_mapping(
        {
            **probe_config.parse_toml(KIT_TOML.encode(), "probe.toml"),
            "probe": {"id": "cb-017", "state_dir": str(tmp_path / "state")},
            "mqtt": {"url": amqtt_broker.url.with_credentials()},
        },
        environ={},
    )

    def run(runner: CapturedRunner) -> list[Check]:
        sensors = {s.sensor.name: s.sensor for s in kit_sensors(kit, runner)}
        return run_checks(
            kit,
            sensors=sensors,
            clock=Clock(ntp_synced=lambda: True),
            connect_timeout_s=5,
            disk_usage=lambda path: type("Usage", (), {"free": 10 * 1024**3})(),
            mounts=PROC / "raspios-mounts-lazytime",
        )

    checks = run(kit_runner())
    found = {check.name: check for check in checks}
    assert verdicts(checks) == {
        "modem mobifone": "PASS",
        "SIM / registration mobifone": "FAIL",  # searching: a dead zone, or the antenna
        "modem viettel": "PASS",
        "SIM / registration viettel": "PASS",
        "signal viettel": "PASS",  # the captured RSRP, -104 dBm
        "modem vinaphone": "PASS",
        "SIM / registration vinaphone": "PASS",
        "signal vinaphone": "PASS",
        "broker reachable": "PASS",
        "broker login": "PASS",
        "clock": "PASS",
        "disk": "PASS",
        "sd card": "PASS",
        "outbox": "PASS",
    }
    assert found["modem viettel"].seen.startswith(f"found by IMEI {VIETTEL_IMEI}, answers (lte)")
    assert found["modem viettel"].seen.endswith("SIM of 45204")
    assert found["modem vinaphone"].seen.startswith("found by USB path 1-1.3")
    assert found["modem mobifone"].seen.endswith("SIM of 45201")
    assert found["SIM / registration viettel"].seen == "registered on Viettel"
    assert "searching" in found["SIM / registration mobifone"].seen

    unplugged = {check.name: check for check in run(kit_runner(absent="vinaphone"))}
    assert unplugged["modem vinaphone"].verdict == "FAIL"
    assert "USB path 1-1.3" in unplugged["modem vinaphone"].fix
    assert "signal vinaphone" not in unplugged
    assert unplugged["modem viettel"].verdict == "PASS"
    assert unplugged["modem mobifone"].verdict == "PASS"


def sd_card_check(config: probe_config.ProbeConfig, mounts: Path) -> Check:
    from agent.doctor import _sd_card_writes_check

    return _sd_card_writes_check(config, mounts)


def test_a_state_directory_without_lazytime_is_a_warning_with_the_fix(tmp_path: Path) -> None:
    config = config_for(MqttUrl.parse("mqtt://127.0.0.1:1"), tmp_path)
    check = sd_card_check(config, PROC / "raspios-mounts")  # Raspberry Pi OS as shipped
    assert check.verdict == "WARN"
    assert "on / (ext4, rw,noatime)" in check.seen
    assert "modification time" in check.seen
    assert "sudo mount -o remount,lazytime /" in check.fix
    assert sd_card_check(config, PROC / "raspios-mounts-lazytime").verdict == "PASS"


def test_the_deepest_mount_holding_the_state_directory_counts(tmp_path: Path) -> None:
    config = config_for(MqttUrl.parse("mqtt://127.0.0.1:1"), tmp_path)
    state = Path(config.probe.state_dir).resolve()
    mounts = tmp_path / "mounts"
    escaped = str(state.parent).replace(" ", "\\040")
    lines = (PROC / "raspios-mounts-lazytime").read_text()
    mounts.write_text(lines + f"tmpfs {escaped} tmpfs rw,nosuid,nodev 0 0\n")
    check = sd_card_check(config, mounts)
    assert check.verdict == "FAIL"  # in RAM: a power cut loses the outbox
    assert "state_dir" in check.fix
    mounts.write_text(lines + f"/dev/sda1 {escaped} ext4 rw,relatime 0 0\n")
    assert sd_card_check(config, mounts).verdict == "WARN"
    mounts.write_text(lines + "garbage\n\n/dev/sda1 /elsewhere ext4 rw,relatime 0 0\n")
    assert sd_card_check(config, mounts).verdict == "PASS"  # the root, with lazytime


def test_unreadable_mounts_are_a_warning_not_a_crash(tmp_path: Path) -> None:
    config = config_for(MqttUrl.parse("mqtt://127.0.0.1:1"), tmp_path)
    assert sd_card_check(config, tmp_path / "absent").verdict == "WARN"
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00 / ext4\n")
    assert sd_card_check(config, tmp_path / "binary").verdict == "WARN"


def test_doctor_says_when_the_operator_scan_runs_and_never_scans(tmp_path: Path) -> None:
    config = probe_config.from_mapping(
        {
            "probe": {"id": "cb-001", "state_dir": str(tmp_path / "state")},
            "mqtt": {"url": f"mqtt://127.0.0.1:{free_port()}"},
        },
        environ={},
    )
    port = ReplayedSerialPort(AT / "quectel-ec25-lte-home.txt")
    # As `coverwatch-probe doctor` builds it: a one-shot sensor, no state directory.
    sensor = CellularSensor(
        Settings(backend="at", scan_interval_hours=24),
        open_port=lambda name, baud, timeout_s: port,
        port_exists=lambda name: True,
    )
    checks = {check.name: check for check in doctor(config, sensor)}
    scan = checks["operator scan"]
    assert scan.verdict == "PASS"
    assert scan.seen == (
        "every 24 h, first within 30 min of the agent's start; each scan takes the modem "
        "offline for 1-3 minutes (at most 240 s)"
    )
    assert "AT+COPS=?" not in port.sent
