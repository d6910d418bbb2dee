"""The ``[sensors.cellular]`` table: one declaration, read by the sensor and its backends.

A probe with one modem has one ``[sensors.cellular]`` table. A multi-modem kit has one
``[[sensors.cellular]]`` table per modem (a TOML array of tables, as Telegraf's
``[[inputs.x]]``), each with a ``name`` and the modem's stable identity: ``imei``,
``usb_path`` or ``device_id`` (ModemManager), or ``port`` (AT, a /dev/serial/by-id/
path). Never ``modem_index``: ModemManager numbers modems anew whenever they
re-enumerate, so after a reboot index 0 can be another SIM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

BACKENDS: Final = ("auto", "mmcli", "at")
# A modem's name in readings, logs and the sensor's name (cellular.<name>).
MODEM_NAME_RE: Final = r"[a-z0-9][a-z0-9_-]{0,31}"


@dataclass(frozen=True)
class Settings:
    backend: str = field(
        default="auto",
        metadata={
            "help": "How to reach the modem: 'mmcli' (ModemManager), 'at' (AT commands on "
            "`port`), or 'auto' (ModemManager when it runs and lists a modem, else the AT "
            "port)."
        },
    )
    name: str = field(
        default="",
        metadata={
            "help": "This modem's short label (1-32 lowercase letters, digits, '-' or '_', "
            "e.g. viettel), sent with each reading as `modem`; required, and unique, in every "
            "[[sensors.cellular]] table of a multi-modem kit."
        },
    )
    imei: str = field(
        default="",
        metadata={
            "help": "Read the modem with this IMEI (15 digits: `mmcli -m N -J` "
            "equipment-identifier, or AT+CGSN). The stable way to bind a table to a modem."
        },
    )
    usb_path: str = field(
        default="",
        metadata={
            "help": "Or: the modem in this USB socket, as the end of ModemManager's "
            "`generic.device` sysfs path, e.g. 1-1.2 (stable while the modem stays in the "
            "same socket)."
        },
    )
    device_id: str = field(
        default="",
        metadata={
            "help": "Or: ModemManager's `generic.device-identifier` (a 40-character hash of "
            "the device's USB ids and serial)."
        },
    )
    modem_index: int = field(
        default=-1,
        metadata={
            "help": "ModemManager modem index (the N in `mmcli -m N`); -1 takes the first "
            "modem `mmcli -L` lists that has a SIM. It changes when the modem re-enumerates: "
            "not allowed with several modems (use imei, usb_path or device_id)."
        },
    )
    port: str = field(
        default="/dev/ttyUSB2",
        metadata={
            "help": "AT command port for the 'at' backend (Quectel EC25/EG25 and SIMCom "
            "SIM7600 answer AT on ttyUSB2). With several modems give each its "
            "/dev/serial/by-id/... path (`ls -l /dev/serial/by-id/`): ttyUSBn numbers "
            "change with the plugging order."
        },
    )
    baud: int = field(default=115200, metadata={"help": "AT port speed in baud."})
    at_timeout_s: float = field(
        default=5.0,
        metadata={
            "help": "Seconds to wait for one AT command's final result code (OK, ERROR, "
            "+CME ERROR, +CMS ERROR); a reply cut short is an error, never a value."
        },
    )
    command_timeout_s: float = field(
        default=20.0, metadata={"help": "Seconds to wait for one mmcli command."}
    )
    signal_refresh_s: int = field(
        default=30,
        metadata={
            "help": "Polling period handed to `mmcli --signal-setup` when ModemManager's "
            "extended signal polling is off (it is off after every ModemManager start)."
        },
    )
    scan_interval_hours: float = field(
        default=0.0,
        metadata={
            "help": "Scan for every operator the modem can hear (AT+COPS=?, Quectel AT+QSCAN, "
            "mmcli --3gpp-scan) at most this often; 0 = never. A scan interrupts the data "
            "connection for 1-3 minutes and no signal reading is taken meanwhile, so keep it "
            "rare (e.g. 24); a kit with a modem per operator does not need it."
        },
    )
    scan_timeout_s: float = field(
        default=240.0,
        metadata={
            "help": "Give up a scan after this many seconds (30-900); AT+COPS=? takes 1-3 "
            "minutes. A scan that does not finish is a sensor_error, and signal readings resume."
        },
    )
    scan_jitter_minutes: float = field(
        default=30.0,
        metadata={
            "help": "Start each scan up to this many minutes later than due (at random), so "
            "the modems of a kit and the probes of a fleet do not all go offline together."
        },
    )
    cells_interval_minutes: int = field(
        default=15,
        metadata={
            "help": "Minutes between two reads of the cells the modem sees (serving and "
            "neighbour cells, one `cell` reading each: `mmcli --get-cell-info`, Quectel "
            'AT+QENG="neighbourcell", Fibocom AT+GTCCINFO?, SIMCom AT+CPSI?), which let the '
            "server tell a tower outage from a power cut; 0 turns them off. Up to 16 cells a "
            "read, 25-45 bytes of payload a cell compact (about 300 as JSON): at 15 minutes "
            "about 0.5 MB a month."
        },
    )
