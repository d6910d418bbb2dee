"""``coverwatch probes add|revoke``: registry entry, broker credentials and the probe kit.

``add`` upserts the probe into the ``probes`` table, gives it a broker user named after
its id (the broker takes the user name as the client id, and the ACL's ``%u`` patterns
let it publish only its own readings and status and read only its own commit acks; see
provisioning/broker.py) and writes a kit for the technician under ``<deploy>/probes/<id>/``:
``probe.toml`` (agent/config.py's format), ``mqtt-password``, ``ca.crt`` and a printable
``sheet.txt``. ``revoke`` removes the broker user and marks the probe revoked; its
readings stay. Mosquitto reads the password file again on SIGHUP:
``docker compose kill -s HUP mosquitto``.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coverwatch import protocol
from coverwatch.errors import CoverwatchError
from coverwatch.settings import MQTTS_PORT, redact_url
from provisioning.broker import RESERVED_PREFIX, is_reserved_probe_id
from provisioning.deploy import DeployLayout, read_env
from provisioning.passwords import new_password, verify, write_private

PI_CONFIG_DIR = "/etc/coverwatch"
RELOAD_HINT = "tell the broker: cd deploy && docker compose kill -s HUP mosquitto"


@dataclass(frozen=True)
class ProbeEntry:
    probe_id: str
    village: str
    lon: float
    lat: float
    operator: str | None = None
    name: str | None = None
    report_interval_s: int | None = None


@dataclass(frozen=True)
class Kit:
    directory: Path
    probe_toml: Path
    password_file: Path
    ca_file: Path
    sheet: Path
    new_credentials: bool


def check_entry(entry: ProbeEntry) -> None:
    problems = []
    if not re.match(protocol.PROBE_ID_RE, entry.probe_id):
        problems.append(
            f"--id {entry.probe_id!r}: use 1-64 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit, e.g. cb-001"
        )
    if is_reserved_probe_id(entry.probe_id):
        problems.append(
            f"--id {entry.probe_id!r}: ids starting with {RESERVED_PREFIX!r} are reserved for "
            "the collectors' broker users"
        )
    if not -180 <= entry.lon <= 180:
        problems.append(f"--lon {entry.lon}: must be between -180 and 180")
    if not -90 <= entry.lat <= 90:
        swapped = " (lon and lat swapped?)" if -90 <= entry.lon <= 90 else ""
        problems.append(f"--lat {entry.lat}: must be between -90 and 90{swapped}")
    if not entry.village.strip():
        problems.append("--village must not be empty")
    if entry.report_interval_s is not None and entry.report_interval_s <= 0:
        problems.append("--report-interval-s must be more than 0")
    if problems:
        raise CoverwatchError("; ".join(problems))


def broker_host(layout: DeployLayout, given: str | None) -> str:
    host = given or read_env(layout.env_file).get("BROKER_HOST")
    if not host:
        raise CoverwatchError(
            f"no broker host: pass --broker-host or run coverwatch deploy init --dir {layout.root}"
        )
    return host


def add(
    layout: DeployLayout,
    entry: ProbeEntry,
    *,
    database_url: str | None,
    broker: str | None = None,
    port: int = MQTTS_PORT,
    rotate: bool = False,
) -> Kit:
    """Register the probe, give it broker credentials and write its kit."""
    check_entry(entry)
    host = broker_host(layout, broker)
    if not layout.ca_certificate.exists():
        raise CoverwatchError(
            f"{layout.ca_certificate} is missing: run coverwatch deploy init --dir {layout.root}"
        )
    if database_url:
        register(database_url, entry)
    kit_dir = layout.kit(entry.probe_id)
    kit_password = kit_dir / "mqtt-password"
    passwords = layout.password_file
    current = passwords.get(entry.probe_id)
    password: str | None = None
    if current is not None and not rotate:
        kept = kit_password.read_text(encoding="utf-8").strip() if kit_password.exists() else ""
        if not kept or not verify(kept, current):
            raise CoverwatchError(
                f"{entry.probe_id} already has broker credentials but {kit_password} does not "
                "hold its password; pass --new-password to issue new ones (a probe already "
                "in the field then needs the new kit)"
            )
        password = kept
    if password is None:
        password = new_password()
        passwords.set(entry.probe_id, password)
    kit_dir.mkdir(parents=True, exist_ok=True)
    kit_dir.chmod(0o700)
    write_private(kit_password, password + "\n")
    ca_file = kit_dir / "ca.crt"
    shutil.copyfile(layout.ca_certificate, ca_file)
    ca_file.chmod(0o644)
    probe_toml = kit_dir / "probe.toml"
    write_private(probe_toml, probe_toml_text(entry.probe_id, host, port), mode=0o640)
    sheet = kit_dir / "sheet.txt"
    write_private(sheet, sheet_text(entry, host, port), mode=0o644)
    return Kit(kit_dir, probe_toml, kit_password, ca_file, sheet, current is None or rotate)


def revoke(layout: DeployLayout, probe_id: str, *, database_url: str | None) -> tuple[bool, bool]:
    """Remove the probe's broker user (and its kit password); mark it revoked.

    Returns (credentials removed, registry entry marked).
    """
    removed = layout.password_file.remove(probe_id)
    (layout.kit(probe_id) / "mqtt-password").unlink(missing_ok=True)
    marked = False
    if database_url:
        marked = _mark_revoked(database_url, probe_id)
    return removed, marked


def probe_toml_text(probe_id: str, host: str, port: int = MQTTS_PORT) -> str:
    return textwrap.dedent(
        f"""\
        # coverwatch probe {probe_id}: generated by `coverwatch probes add` on
        # {datetime.now(UTC):%Y-%m-%d}. Installed as {PI_CONFIG_DIR}/probe.toml by
        # deploy/pi/install.sh --kit <this directory>; every other option keeps its
        # default (see agent/probe.sample.toml).

        [probe]
        id = "{probe_id}"

        [mqtt]
        url = "mqtts://{probe_id}@{host}:{port}"
        password_file = "{PI_CONFIG_DIR}/mqtt-password"
        ca_file = "{PI_CONFIG_DIR}/ca.crt"
        """
    )


def sheet_text(entry: ProbeEntry, host: str, port: int = MQTTS_PORT) -> str:
    rows = [
        ("Probe id", entry.probe_id),
        ("Village", entry.village),
        ("Position (lat, lon)", f"{entry.lat:.5f}, {entry.lon:.5f}"),
        ("SIM operator", entry.operator or "(not recorded)"),
        ("Broker", f"{host}:{port} (TLS)"),
        ("Broker user", entry.probe_id),
        ("Password", "in mqtt-password in this kit (never written on paper)"),
        ("Issued", f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"),
    ]
    width = max(len(label) for label, _ in rows)
    table = "\n".join(f"  {label.ljust(width)} : {value}" for label, value in rows)
    return textwrap.dedent(
        """\
        coverwatch probe installation sheet
        ===================================

        {table}

        On the Raspberry Pi (Raspberry Pi OS Bookworm), with this kit copied to it:

          sudo ./deploy/pi/install.sh --kit ./{probe_id}
          sudo -u coverwatch /opt/coverwatch/venv/bin/coverwatch-probe doctor

        Doctor must end with "All checks passed". Expected lines:

          [PASS] probe.toml          /etc/coverwatch/probe.toml is valid (probe {probe_id})
          [PASS] modem               modem answers (lte)
          [PASS] SIM / registration  registered on <operator>
          [PASS] broker reachable    {host}:{port} answers
          [PASS] broker login        logged in as {probe_id}; will publish to
                                     coverwatch/v1/{probe_id}/readings
          [PASS] signal              rsrp_dbm -97
          [PASS] clock               synchronised (now ... UTC)
          [PASS] disk                ... MB free
          [PASS] outbox              0 readings waiting, 0 dropped so far

        A WARN about weak signal is worth recording, not fixing: a weak or absent signal
        is what the probe is there to measure. See docs/install-probe.md for every check.

        Position check: the probe should stand in the village above. If it is mounted
        elsewhere, tell the server team the real coordinates.
        """
    ).format(table=table, probe_id=entry.probe_id, host=host, port=port)


# ------------------------------------------------------------------------ registry


def _connect(database_url: str) -> Any:
    import psycopg

    try:
        return psycopg.connect(database_url)
    except psycopg.OperationalError as error:
        raise CoverwatchError(
            f"cannot connect to {redact_url(database_url)}: {str(error).strip()}"
        ) from None


def _schema_error(error: Exception) -> CoverwatchError:
    return CoverwatchError(
        f"the database is not at the current schema ({str(error).strip().splitlines()[0]}): "
        "run coverwatch db upgrade"
    )


def register(database_url: str, entry: ProbeEntry) -> None:
    """Insert or update the registry entry (clears a revocation)."""
    import psycopg

    with _connect(database_url) as connection:
        try:
            connection.execute(
                """INSERT INTO probes (probe_id, name, village, lon, lat, operator,
                                       report_interval_s)
                   VALUES (%(id)s, %(name)s, %(village)s, %(lon)s, %(lat)s, %(operator)s,
                           coalesce(%(interval)s, 300))
                   ON CONFLICT (probe_id) DO UPDATE SET
                       name = coalesce(EXCLUDED.name, probes.name),
                       village = EXCLUDED.village,
                       lon = EXCLUDED.lon,
                       lat = EXCLUDED.lat,
                       operator = coalesce(EXCLUDED.operator, probes.operator),
                       report_interval_s = coalesce(%(interval)s, probes.report_interval_s),
                       revoked_at = NULL""",
                {
                    "id": entry.probe_id,
                    "name": entry.name,
                    "village": entry.village,
                    "lon": entry.lon,
                    "lat": entry.lat,
                    "operator": entry.operator,
                    "interval": entry.report_interval_s,
                },
            )
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as error:
            raise _schema_error(error) from None


def _mark_revoked(database_url: str, probe_id: str) -> bool:
    import psycopg

    with _connect(database_url) as connection:
        try:
            cursor = connection.execute(
                "UPDATE probes SET revoked_at = now() WHERE probe_id = %s AND revoked_at IS NULL",
                (probe_id,),
            )
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as error:
            raise _schema_error(error) from None
        return bool(cursor.rowcount > 0)
