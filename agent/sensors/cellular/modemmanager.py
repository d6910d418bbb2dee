"""The ModemManager backend: ``mmcli -J`` output in, :class:`CellularState` out.

``mmcli -L -J``, ``mmcli -m N -J``, ``--signal-get -J``, ``--location-get -J``, and the
SIM's ``mmcli -i K -J`` (its home network). ModemManager only measures the extended
values (RSRP, RSRQ, SINR...) once polling is switched on, so the backend calls
``--signal-setup`` once when it finds polling off.

A modem bound by identity (``imei``, ``usb_path``, ``device_id``) is looked up afresh
every round among the modems ModemManager lists: the index N is ModemManager's object
number, which changes whenever a modem re-enumerates (a reboot, a USB reset).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any, Final

from agent.sensors._system import CommandRunner, run_command
from agent.sensors.base import SensorError
from agent.sensors.cellular.cells import CellInfo
from agent.sensors.cellular.mmcli_cells import check_cell_info_error, parse_mmcli_cell_info
from agent.sensors.cellular.settings import Settings
from agent.sensors.cellular.sim import home_network
from agent.sensors.cellular.state import GENERATION_ORDER, CellularState, hex_int
from coverwatch.protocol import Registration, Technology

# mmcli runs through the shared runner (C locale, lenient UTF-8 decoding).
run_mmcli = run_command


class NoModemManagerModem(SensorError):
    """ModemManager is absent, not running, or has no modem: 'auto' then tries the AT port."""


# ModemManager's MMModem3gppRegistrationState nicks. "emergency-only" and
# "attached-rlos" mean camped on a cell that refuses normal service: denied.
MMCLI_REGISTRATION: Final[dict[str, Registration]] = {
    "home": "home",
    "home-sms-only": "home",
    "home-csfb-not-preferred": "home",
    "roaming": "roaming",
    "roaming-sms-only": "roaming",
    "roaming-csfb-not-preferred": "roaming",
    "searching": "searching",
    "denied": "denied",
    "emergency-only": "denied",
    "attached-rlos": "denied",
    "idle": "idle",
    "unknown": "unknown",
}

# MMModemAccessTechnology nicks onto the protocol's four generations.
MMCLI_TECHNOLOGY: Final[dict[str, Technology]] = {
    "gsm": "gsm",
    "gsm-compact": "gsm",
    "gprs": "gsm",
    "edge": "gsm",
    "umts": "umts",
    "hsdpa": "umts",
    "hsupa": "umts",
    "hspa": "umts",
    "hspa-plus": "umts",
    "lte": "lte",
    "lte-cat-m": "lte",
    "lte-nb-iot": "lte",
    "5gnr": "nr5g",
}

# Modem states in which registration and signal can be read.
_MMCLI_WORKING_STATES: Final = frozenset(
    {"enabled", "searching", "registered", "connecting", "connected", "disconnecting"}
)

_MMCLI_FAILED_HINTS: Final = {
    "sim-missing": "no SIM card detected: insert or reseat the SIM",
    "sim-error": "the SIM card does not answer: reseat or replace the SIM",
    "unknown-capabilities": "ModemManager does not know this modem's capabilities",
    "esim-without-profiles": "the eSIM has no profile installed",
}


@dataclass(frozen=True)
class MmcliModem:
    """The parts of ``mmcli -m N -J`` the sensor uses."""

    state: str
    failed_reason: str | None
    unlock_required: str | None
    registration: Registration
    technologies: tuple[Technology, ...]
    operator_code: str | None
    operator_name: str | None
    signal_quality_pct: float | None
    has_sim: bool = True
    # Identity: IMEI (equipment-identifier), sysfs device path, ModemManager's
    # device-identifier hash, and the SIM object's index (mmcli -i K).
    imei: str | None = None
    device: str | None = None
    device_id: str | None = None
    sim_index: int | None = None

    def identity(self) -> str:
        """How a technician would recognise this modem in a message."""
        usb = self.device.rsplit("/", 1)[-1] if self.device else None
        parts = [f"IMEI {self.imei}" if self.imei else "", f"USB {usb}" if usb else ""]
        return ", ".join(part for part in parts if part) or "no identity"


def _mm_value(value: Any) -> str | None:
    """mmcli prints '--' (and sometimes '') for 'no value'."""
    if value is None:
        return None
    text = str(value).strip()
    return None if text in ("", "--", "unknown") else text


def mm_number(value: Any) -> float | None:
    """A number mmcli printed as text: '-95.00', '-67,00' (decimal comma), or '--'."""
    text = _mm_value(value)
    if text is None:
        return None
    try:
        return float(text.replace(",", "."))
    except ValueError:
        return None


def _load_json(text: str, what: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise SensorError(f"{what} did not print JSON ({error}); is mmcli >= 1.12?") from error
    if not isinstance(document, dict):
        raise SensorError(f"{what} printed unexpected JSON: {text[:200]!r}")
    return document


def parse_mmcli_modem_list(text: str) -> list[int]:
    """Modem indices from ``mmcli -L -J`` (paths end in /Modem/<index>)."""
    paths = _load_json(text, "mmcli -L -J").get("modem-list") or []
    indices = []
    for path in paths:
        match = re.search(r"/Modem/(\d+)$", str(path))
        if match:
            indices.append(int(match.group(1)))
    return indices


def parse_mmcli_modem(text: str) -> MmcliModem:
    """The status part of ``mmcli -m N -J``."""
    modem = _load_json(text, "mmcli -m N -J").get("modem") or {}
    generic = modem.get("generic") or {}
    gpp = modem.get("3gpp") or {}
    state = (_mm_value(generic.get("state")) or "unknown").split()[0]
    registration = MMCLI_REGISTRATION.get(_mm_value(gpp.get("registration-state")) or "", "unknown")
    raw_technologies = generic.get("access-technologies") or []
    if isinstance(raw_technologies, str):  # older mmcli printed "lte, 5gnr"
        raw_technologies = [part.strip() for part in raw_technologies.split(",")]
    technologies = tuple(
        MMCLI_TECHNOLOGY[nick] for nick in raw_technologies if nick in MMCLI_TECHNOLOGY
    )
    quality = generic.get("signal-quality") or {}
    # A quality ModemManager has not refreshed lately ("recent": "no") is a stale cache.
    recent = _mm_value(quality.get("recent")) != "no"
    # The SIM object path; "/" (an empty D-Bus path) or "--" when no SIM is inserted.
    sim = _mm_value(generic.get("sim"))
    sim_index = re.search(r"/SIM/(\d+)$", sim or "")
    return MmcliModem(
        state=state,
        failed_reason=_mm_value(generic.get("state-failed-reason")),
        unlock_required=_mm_value(generic.get("unlock-required")),
        registration=registration,
        technologies=technologies,
        operator_code=_mm_value(gpp.get("operator-code")),
        operator_name=_mm_value(gpp.get("operator-name")),
        signal_quality_pct=mm_number(quality.get("value")) if recent else None,
        has_sim=sim not in (None, "/"),
        imei=_mm_value(generic.get("equipment-identifier")) or _mm_value(gpp.get("imei")),
        device=_mm_value(generic.get("device")),
        device_id=_mm_value(generic.get("device-identifier")),
        sim_index=int(sim_index.group(1)) if sim_index else None,
    )


@dataclass(frozen=True)
class MmcliSim:
    """The parts of ``mmcli -i K -J`` the sensor uses."""

    imsi: str | None
    iccid: str | None
    operator_code: str | None  # the home network ModemManager read from the SIM


def parse_mmcli_sim(text: str) -> MmcliSim:
    sim = _load_json(text, "mmcli -i K -J").get("sim") or {}
    properties = sim.get("properties") or {}
    return MmcliSim(
        imsi=_mm_value(properties.get("imsi")),
        iccid=_mm_value(properties.get("iccid")),
        operator_code=_mm_value(properties.get("operator-code")),
    )


def matches(settings: Settings, modem: MmcliModem) -> bool:
    """Whether ``modem`` is the one the settings bind to (every identity given must agree)."""
    if settings.imei and modem.imei != settings.imei:
        return False
    if settings.device_id and modem.device_id != settings.device_id:
        return False
    if settings.usb_path:
        wanted = settings.usb_path.rstrip("/")
        device = (modem.device or "").rstrip("/")
        if not (device == wanted or device.endswith("/" + wanted.rsplit("/", 1)[-1])):
            return False
    return True


def bound_by_identity(settings: Settings) -> bool:
    return bool(settings.imei or settings.usb_path or settings.device_id)


def describe_identity(settings: Settings) -> str:
    parts = [
        f"IMEI {settings.imei}" if settings.imei else "",
        f"USB path {settings.usb_path}" if settings.usb_path else "",
        f"device id {settings.device_id}" if settings.device_id else "",
    ]
    return " and ".join(part for part in parts if part)


@dataclass(frozen=True)
class MmcliSignal:
    """``mmcli -m N --signal-get -J``: per-technology values and the polling period."""

    refresh_s: float | None
    values: dict[str, dict[str, float | None]]

    def has_values(self) -> bool:
        return any(
            value is not None
            for technology, block in self.values.items()
            if technology in ("gsm", "umts", "lte", "5g")
            for value in block.values()
        )


def parse_mmcli_signal(text: str) -> MmcliSignal:
    signal = (_load_json(text, "mmcli --signal-get -J").get("modem") or {}).get("signal") or {}
    values = {
        technology: {key: mm_number(value) for key, value in block.items()}
        for technology, block in signal.items()
        if isinstance(block, dict)
    }
    refresh = (signal.get("refresh") or {}).get("rate")
    return MmcliSignal(refresh_s=mm_number(refresh), values=values)


def parse_mmcli_location(text: str) -> tuple[int | None, int | None]:
    """(cell id, TAC or LAC) from ``mmcli -m N --location-get -J``; hex in, ints out."""
    location = (_load_json(text, "mmcli --location-get -J").get("modem") or {}).get("location")
    gpp = (location or {}).get("3gpp") or {}
    cell_id = hex_int(_mm_value(gpp.get("cid")))
    # LTE/NR have a TAC; GSM/UMTS only a LAC. Both name the area the cell belongs to.
    tac = hex_int(_mm_value(gpp.get("tac"))) or hex_int(_mm_value(gpp.get("lac")))
    return (cell_id or None), tac


def state_from_mmcli(
    modem: MmcliModem,
    signal: MmcliSignal | None,
    location: tuple[int | None, int | None] = (None, None),
) -> CellularState:
    """Combine the three mmcli answers into one state.

    With 5G NSA ModemManager lists both "lte" and "5gnr"; the reading says nr5g and
    carries the NR leg's values, or the LTE anchor's when the NR block is empty.
    """
    technology = max(modem.technologies, key=GENERATION_ORDER.index, default=None)
    state = CellularState(
        registration=modem.registration,
        technology=technology,
        operator_code=modem.operator_code,
        operator_name=modem.operator_name,
        cell_id=location[0],
        tac=location[1],
        signal_quality_pct=modem.signal_quality_pct,
    )
    if signal is None or technology is None:
        return state
    block_names = {"gsm": ["gsm"], "umts": ["umts"], "lte": ["lte"], "nr5g": ["5g", "lte"]}
    for name in block_names[technology]:
        block = signal.values.get(name) or {}
        if any(value is not None for value in block.values()):
            return replace(
                state,
                rsrp_dbm=block.get("rsrp"),
                rsrq_db=block.get("rsrq"),
                sinr_db=block.get("snr") if block.get("snr") is not None else block.get("sinr"),
                rssi_dbm=block.get("rssi"),
                rscp_dbm=block.get("rscp"),
                ecio_db=block.get("ecio"),
            )
    return state


def check_mmcli_modem(index: int, modem: MmcliModem) -> None:
    """Raise with a technician's hint when the modem cannot measure at all."""
    if modem.state == "failed":
        reason = modem.failed_reason or "no reason given"
        hint = _MMCLI_FAILED_HINTS.get(reason, "see `mmcli -m {index}` and the ModemManager log")
        raise SensorError(f"modem {index} failed ({reason}): {hint.format(index=index)}")
    if modem.state == "locked":
        lock = modem.unlock_required or "a PIN"
        raise SensorError(
            f"modem {index} is locked: the SIM needs {lock}; remove the PIN from the SIM "
            f"(or unlock it with `mmcli -i <sim> --pin=...`)"
        )
    if modem.state not in _MMCLI_WORKING_STATES:
        raise SensorError(
            f"modem {index} is {modem.state}, not enabled: enable it with "
            f"`mmcli -m {index} --enable` (or check the ModemManager log)"
        )


class ModemManagerBackend:
    """Reads one modem through mmcli."""

    def __init__(self, settings: Settings, run: CommandRunner) -> None:
        self._settings = settings
        self._run = run
        self._signal_setup_done: set[int] = set()
        self._index: int | None = None  # the modem the last round measured

    def _mmcli(self, *args: str) -> str:
        return self._run(["mmcli", *args], self._settings.command_timeout_s)

    def _list(self) -> list[int]:
        try:
            listed = parse_mmcli_modem_list(self._mmcli("-L", "-J"))
        except FileNotFoundError as error:
            raise NoModemManagerModem("mmcli is not installed") from error
        except NoModemManagerModem:
            raise
        except SensorError as error:
            # "error: couldn't find the ModemManager process in the bus" when it is
            # stopped (as the AT backend needs it to be), or a hung daemon.
            raise NoModemManagerModem(
                f"ModemManager does not answer ({error}); start it "
                f'(`systemctl start ModemManager`) or set sensors.cellular.backend = "at"'
            ) from error
        if not listed:
            raise NoModemManagerModem("ModemManager lists no modem")
        return listed

    def _choose(self, listed: list[int]) -> tuple[int, MmcliModem]:
        """The configured modem: by identity, by index, or with index -1 the first listed
        that has a SIM (a modem without one says nothing about coverage); the first when
        none has."""
        if bound_by_identity(self._settings):
            return self._find(listed)
        index = self._settings.modem_index
        if index >= 0:
            if index not in listed:
                raise SensorError(
                    f"ModemManager has no modem {index} (it lists {listed}); the index "
                    f"changes when the modem re-enumerates: set sensors.cellular.modem_index "
                    f"= -1"
                )
            return index, parse_mmcli_modem(self._mmcli("-m", str(index), "-J"))
        first: tuple[int, MmcliModem] | None = None
        for candidate in listed:
            modem = parse_mmcli_modem(self._mmcli("-m", str(candidate), "-J"))
            if modem.has_sim:
                return candidate, modem
            first = first or (candidate, modem)
        assert first is not None  # listed is never empty here
        return first

    def _find(self, listed: list[int]) -> tuple[int, MmcliModem]:
        seen: list[MmcliModem] = []
        for candidate in listed:
            modem = parse_mmcli_modem(self._mmcli("-m", str(candidate), "-J"))
            if matches(self._settings, modem):
                return candidate, modem
            seen.append(modem)
        others = "; ".join(modem.identity() for modem in seen)
        label = f"modem {self._settings.name!r}" if self._settings.name else "the modem"
        raise SensorError(
            f"{label} ({describe_identity(self._settings)}) is not among the {len(listed)} "
            f"modem(s) ModemManager lists ({others}): is it plugged in and powered (`lsusb`)? "
            f"Compare with `mmcli -m N -J` (equipment-identifier, device)"
        )

    def sim_operator(self, modem: MmcliModem) -> str | None:
        """The SIM's home network, or None when the SIM cannot say (no reading is lost)."""
        if modem.sim_index is None:
            return None
        try:
            sim = parse_mmcli_sim(self._mmcli("-i", str(modem.sim_index), "-J"))
        except SensorError:
            return None
        home = modem.operator_code if modem.registration == "home" else None
        return home_network(sim.operator_code, sim.imsi, registered_home=home)

    def find_modem(self) -> tuple[int, MmcliModem]:
        """The configured modem's index now, and its status (the operator scan's too)."""
        return self._choose(self._list())

    def measure(self) -> CellularState:
        index, modem = self.find_modem()
        self._index = index
        check_mmcli_modem(index, modem)
        state = self._measure(index, modem)
        return replace(state, sim_operator_code=self.sim_operator(modem))

    def read_cells(self, serving_technology: Technology | None) -> list[CellInfo]:
        """The cells of the modem the round measured (:mod:`.mmcli_cells`)."""
        if self._index is None:
            return []
        try:
            text = self._mmcli("-m", str(self._index), "--get-cell-info", "-J")
        except SensorError as error:
            raise check_cell_info_error(error) from error
        return parse_mmcli_cell_info(text)

    def _measure(self, index: int, modem: MmcliModem) -> CellularState:
        if modem.registration not in ("home", "roaming"):
            return state_from_mmcli(modem, None)
        signal = parse_mmcli_signal(self._mmcli("-m", str(index), "--signal-get", "-J"))
        if not signal.refresh_s and index not in self._signal_setup_done:
            # Extended signal polling is off until someone sets it up (once per modem
            # object); afterwards ModemManager refreshes the values on its own.
            self._signal_setup_done.add(index)
            self._mmcli("-m", str(index), f"--signal-setup={self._settings.signal_refresh_s}")
            signal = parse_mmcli_signal(self._mmcli("-m", str(index), "--signal-get", "-J"))
        try:
            location = parse_mmcli_location(self._mmcli("-m", str(index), "--location-get", "-J"))
        except SensorError:
            location = (None, None)  # 3GPP location not enabled: no cell id, still a reading
        return state_from_mmcli(modem, signal, location)
