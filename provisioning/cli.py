"""``coverwatch probes add|revoke`` and ``coverwatch deploy init|add-collector|acl``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from coverwatch.settings import DATABASE_URL_ENV, database_url

DEFAULT_DEPLOY_DIR = Path("deploy")


def register(commands: Any) -> None:
    """Add provisioning's sub-commands to the ``coverwatch`` parser."""
    _register_deploy(commands)
    _register_probes(commands)


def _register_deploy(commands: Any) -> None:
    deploy = commands.add_parser(
        "deploy", help="the compose deployment: generate its secrets and certificates"
    )
    actions = deploy.add_subparsers(dest="deploy_command", metavar="ACTION", required=True)
    init = actions.add_parser(
        "init",
        help="generate .env passwords, a CA, the broker certificate and password file",
        description="Write <dir>/.env and <dir>/secrets/ (git-ignored): random passwords, "
        "a small CA, the broker's TLS certificate for --broker-host, and the Mosquitto "
        "password file and ACL with the collectors' users. Refuses to overwrite an "
        "existing .env.",
    )
    init.add_argument(
        "--dir", type=Path, default=DEFAULT_DEPLOY_DIR, help="deploy directory (default: deploy)"
    )
    init.add_argument(
        "--broker-host",
        help="the name (or address) probes use to reach the broker; goes into the "
        "certificate and every probe kit (default: this machine's FQDN)",
    )
    init.add_argument(
        "--renew-broker-cert",
        action="store_true",
        help="only re-issue the broker certificate with the existing CA (probes keep working)",
    )
    init.add_argument(
        "--force",
        action="store_true",
        help="replace every secret (all probes then need new kits)",
    )
    init.add_argument(
        "--collectors",
        type=int,
        default=1,
        metavar="N",
        help="broker users for N collectors sharing the load (collector, collector-2, …; "
        "the broker binds each session to its user, so each collector needs its own; "
        "default: 1)",
    )
    init.set_defaults(handler=_deploy_init)
    add_collector = actions.add_parser(
        "add-collector",
        help="give one more collector a broker user (collector-<n>) and rewrite the ACL",
        description="Add the broker user collector-<n> (next free n) to secrets/passwd, its "
        "password to .env as COLLECTOR_<n>_MQTT_PASSWORD, and rewrite secrets/acl. Then "
        "add a collector service using them to compose.yaml and reload the broker.",
    )
    add_collector.add_argument(
        "--dir", type=Path, default=DEFAULT_DEPLOY_DIR, help="deploy directory (default: deploy)"
    )
    add_collector.set_defaults(handler=_deploy_add_collector)
    acl = actions.add_parser(
        "acl",
        help="rewrite secrets/acl for the collector users in secrets/passwd",
        description="Write the broker ACL (secrets/acl) again from the collector users in "
        "secrets/passwd: for a deployment made before the ACL was generated, or after "
        "upgrading coverwatch. Then reload the broker.",
    )
    acl.add_argument(
        "--dir", type=Path, default=DEFAULT_DEPLOY_DIR, help="deploy directory (default: deploy)"
    )
    acl.set_defaults(handler=_deploy_acl)


def _register_probes(commands: Any) -> None:
    probes = commands.add_parser(
        "probes", help="provision probes: registry entry, broker credentials, technician kit"
    )
    actions = probes.add_subparsers(dest="probes_command", metavar="ACTION", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--id", required=True, dest="probe_id", help="probe id, e.g. cb-001")
        parser.add_argument(
            "--deploy-dir",
            type=Path,
            default=DEFAULT_DEPLOY_DIR,
            help="deploy directory with secrets/ (default: deploy)",
        )
        parser.add_argument("--database-url", help=f"PostgreSQL URL (default: ${DATABASE_URL_ENV})")
        parser.add_argument(
            "--no-database",
            action="store_true",
            help="leave the registry alone (only the broker credentials and the kit)",
        )

    add = actions.add_parser(
        "add",
        help="register a probe and write its kit (probe.toml, password, CA, sheet)",
        description="Create or update the probe in the registry, give it broker credentials "
        "(user = probe id = client id, allowed to publish only its readings and status "
        "and read only its commit acks) and write a "
        "kit for the technician to <deploy-dir>/probes/<id>/. Running it again for the same "
        "probe updates the registry and keeps the password unless --new-password.",
    )
    common(add)
    add.add_argument("--village", required=True, help="village the probe stands in")
    add.add_argument("--lon", type=float, required=True, help="longitude (WGS 84), e.g. 106.5")
    add.add_argument("--lat", type=float, required=True, help="latitude (WGS 84), e.g. 22.8")
    add.add_argument("--operator", help="SIM operator: name (Viettel) or MCC-MNC (45204)")
    add.add_argument("--name", help="a descriptive name")
    add.add_argument(
        "--report-interval-s", type=int, help="expected reporting cadence (default: 300)"
    )
    add.add_argument(
        "--broker-host", help="broker name in the kit (default: BROKER_HOST from .env)"
    )
    add.add_argument("--broker-port", type=int, default=8883, help="broker TLS port")
    add.add_argument(
        "--new-password", action="store_true", help="issue a new password (the old one stops)"
    )
    add.set_defaults(handler=_probes_add)

    revoke = actions.add_parser(
        "revoke",
        help="remove a probe's broker credentials and mark it revoked (readings stay)",
    )
    common(revoke)
    revoke.set_defaults(handler=_probes_revoke)


def _database_url(args: argparse.Namespace) -> str | None:
    if args.no_database:
        return None
    return database_url(args.database_url, otherwise="pass --no-database to skip the registry")


def _deploy_init(args: argparse.Namespace) -> int:
    from provisioning.deploy import init

    result = init(
        args.dir,
        broker_host=args.broker_host,
        force=args.force,
        renew_broker_cert=args.renew_broker_cert,
        collectors=args.collectors,
    )
    for path in result.created:
        print(f"wrote {path}")
    print(f"broker certificate for {result.broker_host} (and mosquitto, localhost)")
    if args.renew_broker_cert:
        print("restart the broker: cd deploy && docker compose restart mosquitto")
    else:
        print(f"next: cd {args.dir} && docker compose up -d --build; then coverwatch probes add")
    return 0


def _deploy_add_collector(args: argparse.Namespace) -> int:
    from provisioning.deploy import add_collector
    from provisioning.probes import RELOAD_HINT

    added = add_collector(args.dir)
    print(f"broker user {added.username}: password in {args.dir}/.env as {added.password_key}")
    print(f"wrote {added.acl}")
    print(
        f"next: copy the collector service in compose.yaml with COVERWATCH_MQTT_URL="
        f"mqtts://{added.username}:${{{added.password_key}:?…}}@mosquitto:8883, "
        f"COVERWATCH_CLIENT_ID={added.username} and COVERWATCH_SHARED_GROUP on every "
        "collector (deploy/README.md)"
    )
    print(RELOAD_HINT)
    return 0


def _deploy_acl(args: argparse.Namespace) -> int:
    from provisioning.deploy import DeployLayout, write_acl
    from provisioning.probes import RELOAD_HINT

    print(f"wrote {write_acl(DeployLayout(args.dir))}")
    print(RELOAD_HINT)
    return 0


def _probes_add(args: argparse.Namespace) -> int:
    from provisioning.deploy import DeployLayout
    from provisioning.probes import RELOAD_HINT, ProbeEntry, add

    entry = ProbeEntry(
        probe_id=args.probe_id,
        village=args.village,
        lon=args.lon,
        lat=args.lat,
        operator=args.operator,
        name=args.name,
        report_interval_s=args.report_interval_s,
    )
    kit = add(
        DeployLayout(args.deploy_dir),
        entry,
        database_url=_database_url(args),
        broker=args.broker_host,
        port=args.broker_port,
        rotate=args.new_password,
    )
    registry = "registry updated" if not args.no_database else "registry not touched"
    credentials = "new broker credentials" if kit.new_credentials else "password kept"
    print(f"probe {entry.probe_id}: {registry}, {credentials}")
    print(f"kit for the technician: {kit.directory}/ (probe.toml, mqtt-password, ca.crt)")
    print(f"printable sheet: {kit.sheet}")
    if kit.new_credentials:
        print(RELOAD_HINT)
    return 0


def _probes_revoke(args: argparse.Namespace) -> int:
    from provisioning.deploy import DeployLayout
    from provisioning.probes import RELOAD_HINT, revoke

    removed, marked = revoke(
        DeployLayout(args.deploy_dir), args.probe_id, database_url=_database_url(args)
    )
    print(
        f"probe {args.probe_id}: broker credentials "
        f"{'removed' if removed else 'were not in the password file'}"
        + ("" if args.no_database else f"; registry {'marked revoked' if marked else 'unchanged'}")
    )
    print(RELOAD_HINT)
    return 0 if removed or marked else 1
