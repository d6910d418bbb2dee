"""The ``[sensors.cellular]`` table: one declaration, read by the sensor and its backends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

BACKENDS: Final = ("auto", "mmcli", "at")


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
    modem_index: int = field(
        default=-1,
        metadata={
            "help": "ModemManager modem index (the N in `mmcli -m N`); -1 takes the first "
            "modem `mmcli -L` lists that has a SIM."
        },
    )
    port: str = field(
        default="/dev/ttyUSB2",
        metadata={
            "help": "AT command port for the 'at' backend (Quectel EC25/EG25 and SIMCom "
            "SIM7600 answer AT on ttyUSB2)."
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
