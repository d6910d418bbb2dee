"""A three-modem kit at the hardware edge: ModemManager's answers for three modems, built
from the captured Telit `mmcli -J` output in tests/data/mmcli (identity, SIM and operator
of each changed, as tests/data/README.md says), and the kit's probe.toml."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent import config as probe_config
from agent.scheduler import ScheduledSensor
from agent.sensors.base import plugin_of
from agent.sensors.cellular import CellularSensor
from tests.sensor_fakes import DATA, CapturedRunner

MMCLI = DATA / "mmcli"


def modem_json(
    *, imei: str, usb: str, device_id: str, sim: int | None, operator: str, registration: str
) -> str:
    """The captured Telit `mmcli -m N -J` as another modem of the kit."""
    document: dict[str, Any] = json.loads((MMCLI / "telit-le910c4-lte-roaming.json").read_text())
    generic, gpp = document["modem"]["generic"], document["modem"]["3gpp"]
    generic["equipment-identifier"] = gpp["imei"] = imei
    generic["device"] = f"/sys/devices/platform/scb/fd500000.pcie/usb1/{usb}"
    generic["device-identifier"] = device_id
    generic["sim"] = f"/org/freedesktop/ModemManager1/SIM/{sim}" if sim is not None else "/"
    gpp["operator-code"] = operator
    gpp["operator-name"] = {"45204": "Viettel", "45202": "VinaPhone", "45201": "MobiFone"}.get(
        operator, "--"
    )
    gpp["registration-state"] = registration
    if registration not in ("home", "roaming"):
        generic["access-technologies"] = []
        generic["state"] = "searching"
    return json.dumps(document)


def sim_json(*, imsi: str, operator_code: str) -> str:
    """The captured `mmcli -i 0 -J` with another SIM's IMSI and home network."""
    document: dict[str, Any] = json.loads((MMCLI / "telit-le910c4-sim.json").read_text())
    document["sim"]["properties"]["imsi"] = imsi
    document["sim"]["properties"]["operator-code"] = operator_code
    return json.dumps(document)


VIETTEL_IMEI = "861536030196001"
VINAPHONE_USB = "1-1.3"
MOBIFONE_ID = "0f5c1a0e9d7b4c2a8e6f3b1d5a7c9e0b2d4f6a8c"

KIT_TOML = f"""
[probe]
id = "cb-017"
state_dir = "/var/lib/coverwatch"

[mqtt]
url = "mqtt://127.0.0.1:1883"

[[sensors.cellular]]
name = "viettel"
imei = "{VIETTEL_IMEI}"

[[sensors.cellular]]
name = "vinaphone"
usb_path = "{VINAPHONE_USB}"

[[sensors.cellular]]
name = "mobifone"
device_id = "{MOBIFONE_ID}"
"""


def kit_runner(indices: tuple[int, int, int] = (0, 1, 2), *, absent: str = "") -> CapturedRunner:
    """ModemManager with the kit's three modems at the given indices (they change when
    modems re-enumerate); ``absent`` leaves one out, as if unplugged."""
    modems: dict[str, dict[str, str]] = {
        "viettel": {
            "imei": VIETTEL_IMEI,
            "usb": "1-1.2",
            "device_id": "a" * 40,
            "operator": "45204",
            "registration": "home",
        },
        "vinaphone": {
            "imei": "861536030196019",
            "usb": VINAPHONE_USB,
            "device_id": "b" * 40,
            "operator": "45202",
            "registration": "home",
        },
        # No service: the modem searches, and only its SIM says whose network is missing.
        "mobifone": {
            "imei": "861536030196027",
            "usb": "1-1.4",
            "device_id": MOBIFONE_ID,
            "operator": "--",
            "registration": "searching",
        },
    }
    sims = {
        "viettel": sim_json(imsi="452040912345678", operator_code="45204"),
        "vinaphone": sim_json(imsi="452021234567890", operator_code="45202"),
        # ModemManager could not read the MNC length: the IMSI and the table tell.
        "mobifone": sim_json(imsi="452011122334455", operator_code="--"),
    }
    answers: dict[tuple[str, ...], str | Path] = {}
    listed: list[int] = []
    for (name, fields), index in zip(modems.items(), indices, strict=True):
        if name == absent:
            continue
        listed.append(index)
        sim = 10 + index  # SIM objects are numbered apart from modems
        answers["mmcli", "-m", str(index), "-J"] = modem_json(sim=sim, **fields)
        answers["mmcli", "-i", str(sim), "-J"] = sims[name]
        answers["mmcli", "-m", str(index), "--signal-get", "-J"] = (
            MMCLI / "telit-le910c4-signal.json"
        )
        answers["mmcli", "-m", str(index), "--location-get", "-J"] = (
            MMCLI / "telit-le910c4-location.json"
        )
    # ModemManager lists its modem objects in index order, whichever modem each is.
    paths = [f"/org/freedesktop/ModemManager1/Modem/{index}" for index in sorted(listed)]
    answers["mmcli", "-L", "-J"] = json.dumps({"modem-list": paths})
    return CapturedRunner(answers)


def kit_config(text: str = KIT_TOML) -> probe_config.ProbeConfig:
    return probe_config.from_mapping(
        probe_config.parse_toml(text.encode(), "probe.toml"), environ={}
    )


def kit_sensors(config: probe_config.ProbeConfig, runner: CapturedRunner) -> list[ScheduledSensor]:
    """The kit's cellular sensors as build_sensors makes them, with the fake mmcli."""
    return [
        ScheduledSensor(CellularSensor(settings, run=runner), float(schedule.interval_s))
        for name, (schedule, settings) in sorted(config.sensors.items())
        if plugin_of(name) == "cellular"
    ]
