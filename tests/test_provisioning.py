"""``coverwatch deploy init`` and ``coverwatch probes add|revoke``: files, hashes, registry.

The registry tests use a real PostgreSQL (fixture ``database_url``); the password hash is
checked against the real ``mosquitto_passwd``. The broker itself is exercised with these
files in tests/test_provisioning_broker.py.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import stat
import subprocess
from pathlib import Path

import psycopg
import pytest

from agent import config as probe_config
from collector import schema
from coverwatch.cli import main
from coverwatch.errors import CoverwatchError
from provisioning import broker, certs, deploy, probes
from provisioning.passwords import PasswordFile, hash_password, verify
from tests.conftest import skip_unless_ci


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------------- passwords


def test_hash_is_mosquitto_2_pbkdf2_sha512() -> None:
    hashed = hash_password("secret", salt=bytes(range(12)))
    assert hashed == (
        "$7$101$AAECAwQFBgcICQoL$"
        + base64.b64encode(hashlib.pbkdf2_hmac("sha512", b"secret", bytes(range(12)), 101)).decode()
    )
    _, kind, iterations, salt, digest = hashed.split("$")
    assert (kind, iterations, len(salt), len(digest)) == ("7", "101", 16, 88)
    assert verify("secret", hashed)
    assert not verify("Secret", hashed)
    assert hash_password("secret") != hash_password("secret"), "a fresh salt every time"


def test_hash_agrees_with_mosquitto_passwd(tmp_path: Path) -> None:
    binary = shutil.which("mosquitto_passwd")
    if binary is None:
        skip_unless_ci("mosquitto_passwd is not installed (Debian: apt-get install mosquitto)")
    path = tmp_path / "passwd"
    subprocess.run([binary, "-c", "-b", str(path), "alice", "s3cret pass"], check=True)
    theirs = PasswordFile(path).get("alice")
    assert theirs is not None
    assert theirs.startswith("$7$101$")
    assert verify("s3cret pass", theirs)
    assert not verify("s3cret", theirs)
    # Same salt, same password: our hash is byte for byte theirs.
    salt = base64.b64decode(theirs.split("$")[3])
    assert hash_password("s3cret pass", salt=salt) == theirs


def test_password_file_replaces_one_line_and_keeps_the_others(tmp_path: Path) -> None:
    passwords = PasswordFile(tmp_path / "passwd")
    passwords.set("collector", "one")
    passwords.set("cb-001", "two")
    passwords.set("cb-002", "three")
    passwords.set("cb-001", "four")
    lines = (tmp_path / "passwd").read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["collector", "cb-001", "cb-002"]
    assert verify("four", passwords.get("cb-001") or "")
    assert passwords.remove("cb-001")
    assert not passwords.remove("cb-001")
    assert list(passwords.entries()) == ["collector", "cb-002"]
    assert mode(tmp_path / "passwd") == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["passwd"], "no temporary file left behind"


# -------------------------------------------------------------------- deploy init


@pytest.fixture
def layout(tmp_path: Path) -> deploy.DeployLayout:
    return deploy.init(tmp_path / "deploy", broker_host="broker.example.org").layout


def test_init_generates_distinct_random_secrets_readable_only_by_the_owner(
    layout: deploy.DeployLayout,
) -> None:
    env = deploy.read_env(layout.env_file)
    secrets = [env[key] for key in deploy.SECRET_KEYS]
    assert len(set(secrets)) == len(secrets)
    assert all(len(secret) >= 32 and secret.replace("-", "").replace("_", "").isalnum()
               for secret in secrets)  # fmt: skip
    assert env["BROKER_HOST"] == "broker.example.org"
    assert env["COVERWATCH_UID"].isdigit()
    assert env["COVERWATCH_GID"].isdigit()
    for private in (
        layout.env_file, layout.ca_key, layout.broker_key, layout.password_file.path, layout.acl
    ):  # fmt: skip
        assert mode(private) == 0o600, private
    assert mode(layout.secrets) == 0o700
    assert layout.mosquitto_data.is_dir()
    collector = layout.password_file.get(deploy.COLLECTOR_USER)
    assert collector is not None
    assert verify(env["COLLECTOR_MQTT_PASSWORD"], collector)


def test_broker_certificate_is_signed_by_the_ca_for_the_broker_host(
    layout: deploy.DeployLayout,
) -> None:
    subprocess.run(
        ["openssl", "verify", "-CAfile", str(layout.ca_certificate),
         str(layout.broker_certificate)],
        check=True, capture_output=True,
    )  # fmt: skip
    text = certs.certificate_text(layout.broker_certificate)
    assert "DNS:broker.example.org" in text
    assert "DNS:mosquitto" in text
    assert "IP Address:127.0.0.1" in text
    assert "TLS Web Server Authentication" in text
    assert "CA:TRUE" in certs.certificate_text(layout.ca_certificate)


def test_init_refuses_to_overwrite_and_renews_only_the_broker_certificate(
    layout: deploy.DeployLayout,
) -> None:
    before = layout.env_file.read_text()
    ca_before = layout.ca_certificate.read_bytes()
    with pytest.raises(CoverwatchError, match="already initialised"):
        deploy.init(layout.root, broker_host="other.example.org")
    assert layout.env_file.read_text() == before
    deploy.init(layout.root, broker_host="new.example.org", renew_broker_cert=True)
    assert layout.ca_certificate.read_bytes() == ca_before, "probes keep trusting the CA"
    assert "DNS:new.example.org" in certs.certificate_text(layout.broker_certificate)
    env = deploy.read_env(layout.env_file)
    assert env["BROKER_HOST"] == "new.example.org"
    assert env["POSTGRES_PASSWORD"] == deploy.read_env_text(before)["POSTGRES_PASSWORD"]


def test_ip_address_broker_host_goes_into_an_ip_san(tmp_path: Path) -> None:
    result = deploy.init(tmp_path / "d", broker_host="203.0.113.7")
    assert "IP Address:203.0.113.7" in certs.certificate_text(result.layout.broker_certificate)


def test_deploy_init_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "deploy"
    assert main(["deploy", "init", "--dir", str(target), "--broker-host", "mqtt.example"]) == 0
    out = capsys.readouterr().out
    assert "mqtt.example" in out
    env = deploy.read_env(target / ".env")
    assert all(env[key] not in out for key in deploy.SECRET_KEYS), "never print a secret"
    assert main(["deploy", "init", "--dir", str(target)]) == 2  # already initialised


def test_init_makes_a_broker_user_and_acl_block_per_collector(tmp_path: Path) -> None:
    layout = deploy.init(tmp_path / "d", broker_host="broker.example.org", collectors=3).layout
    env = deploy.read_env(layout.env_file)
    users = ["collector", "collector-2", "collector-3"]
    keys = ["COLLECTOR_MQTT_PASSWORD", "COLLECTOR_2_MQTT_PASSWORD", "COLLECTOR_3_MQTT_PASSWORD"]
    assert list(layout.password_file.entries()) == users
    for user, key in zip(users, keys, strict=True):
        assert verify(env[key], layout.password_file.get(user) or "")
    assert len({env[key] for key in keys}) == 3
    assert layout.acl.read_text() == broker.acl_text(users)
    assert [line for line in layout.acl.read_text().splitlines() if line.startswith("user ")] == [
        f"user {user}" for user in users
    ]
    with pytest.raises(CoverwatchError, match="at least one"):
        deploy.init(tmp_path / "e", broker_host="b.example.org", collectors=0)


def test_add_collector_keeps_the_others_and_rewrites_the_acl(layout: deploy.DeployLayout) -> None:
    probes.add(layout, ENTRY, database_url=None)
    before = deploy.read_env(layout.env_file)
    hashes = layout.password_file.entries()
    added = deploy.add_collector(layout.root)
    assert (added.username, added.password_key) == ("collector-2", "COLLECTOR_2_MQTT_PASSWORD")
    env = deploy.read_env(layout.env_file)
    assert {key: env[key] for key in before} == before, "nothing else in .env changes"
    assert verify(env["COLLECTOR_2_MQTT_PASSWORD"], layout.password_file.get("collector-2") or "")
    assert {user: layout.password_file.get(user) for user in hashes} == hashes
    assert layout.acl.read_text() == broker.acl_text(["collector", "collector-2"])
    assert mode(layout.acl) == 0o600
    assert deploy.add_collector(layout.root).username == "collector-3"
    layout.acl.unlink()  # a deployment made before the ACL was generated
    deploy.write_acl(layout)
    assert "user collector-3" in layout.acl.read_text()
    assert "cb-001" not in layout.acl.read_text(), "probes need no block: the pattern is theirs"


def test_collector_users_are_told_apart_from_probes() -> None:
    assert [broker.collector_user(n) for n in (1, 2, 10)] == [
        "collector", "collector-2", "collector-10"
    ]  # fmt: skip
    for name, number in (("collector", 1), ("collector-2", 2), ("collector-10", 10)):
        assert broker.collector_number(name) == number
    for other in ("collector-1", "collector-02", "collectors", "cb-001", "collector-x"):
        assert broker.collector_number(other) is None
    assert broker.collector_users(["cb-001", "collector-10", "collector", "collector-2"]) == [
        "collector", "collector-2", "collector-10"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="not a collector"):
        broker.acl_text(["cb-001"])


def test_deploy_collector_commands(
    layout: deploy.DeployLayout, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["deploy", "add-collector", "--dir", str(layout.root)]) == 0
    out = capsys.readouterr().out
    assert "collector-2" in out
    assert "COLLECTOR_2_MQTT_PASSWORD" in out
    assert "docker compose kill -s HUP mosquitto" in out
    assert deploy.read_env(layout.env_file)["COLLECTOR_2_MQTT_PASSWORD"] not in out
    layout.acl.unlink()
    assert main(["deploy", "acl", "--dir", str(layout.root)]) == 0
    assert layout.acl.read_text() == broker.acl_text(["collector", "collector-2"])
    assert main(["deploy", "add-collector", "--dir", str(layout.root / "nowhere")]) == 2


# ------------------------------------------------------------------------ probes


ENTRY = probes.ProbeEntry("cb-001", "Nà Pài", 106.50, 22.80, "Viettel")


def test_kit_is_a_valid_probe_config(layout: deploy.DeployLayout) -> None:
    kit = probes.add(layout, ENTRY, database_url=None)
    password = kit.password_file.read_text().strip()
    assert verify(password, layout.password_file.get("cb-001") or "")
    assert mode(kit.password_file) == 0o600
    assert mode(kit.directory) == 0o700
    assert kit.ca_file.read_bytes() == layout.ca_certificate.read_bytes()
    config = probe_config.load(
        kit.probe_toml,
        environ={},
        overrides={"mqtt": {"password_file": str(kit.password_file), "ca_file": str(kit.ca_file)}},
    )
    assert config.probe.id == "cb-001"
    url = config.mqtt_url
    assert (url.host, url.port, url.tls, url.username) == (
        "broker.example.org",
        8883,
        True,
        "cb-001",
    )
    assert url.password == password
    assert config.mqtt.password_file.endswith("mqtt-password")
    text = kit.probe_toml.read_text()
    assert 'password_file = "/etc/coverwatch/mqtt-password"' in text
    assert 'ca_file = "/etc/coverwatch/ca.crt"' in text
    assert password not in text
    assert password not in kit.sheet.read_text()
    assert "Nà Pài" in kit.sheet.read_text()
    assert "coverwatch-probe doctor" in kit.sheet.read_text()


def test_adding_again_keeps_the_password_unless_asked(layout: deploy.DeployLayout) -> None:
    first = probes.add(layout, ENTRY, database_url=None).password_file.read_text()
    again = probes.add(layout, ENTRY, database_url=None)
    assert again.password_file.read_text() == first
    assert not again.new_credentials
    rotated = probes.add(layout, ENTRY, database_url=None, rotate=True)
    assert rotated.password_file.read_text() != first
    assert rotated.new_credentials
    assert verify(
        rotated.password_file.read_text().strip(), layout.password_file.get("cb-001") or ""
    )
    rotated.password_file.unlink()
    with pytest.raises(CoverwatchError, match="--new-password"):
        probes.add(layout, ENTRY, database_url=None)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"probe_id": "CB 001"}, "lowercase"),
        ({"probe_id": "collector"}, "reserved"),
        ({"probe_id": "collector-2"}, "reserved"),
        ({"probe_id": "collectorx"}, "reserved"),
        ({"lon": 22.8, "lat": 106.5}, "swapped"),
        ({"village": " "}, "village"),
    ],
)
def test_bad_entries_are_refused_with_a_hint(
    layout: deploy.DeployLayout, change: dict[str, object], message: str
) -> None:
    entry = probes.ProbeEntry(**{**ENTRY.__dict__, **change})
    with pytest.raises(CoverwatchError, match=message):
        probes.add(layout, entry, database_url=None)
    assert layout.password_file.get(entry.probe_id) is None or entry.probe_id == "collector"
    assert entry.probe_id not in layout.acl.read_text() or entry.probe_id == "collector"


def test_registry_entry_created_updated_revoked_and_restored(
    layout: deploy.DeployLayout, database_url: str
) -> None:
    schema.upgrade(database_url)

    def row() -> tuple[object, ...] | None:
        with psycopg.connect(database_url) as connection:
            return connection.execute(
                "SELECT village, lon, lat, operator, revoked_at IS NOT NULL FROM probes "
                "WHERE probe_id = 'cb-001'"
            ).fetchone()

    probes.add(layout, ENTRY, database_url=database_url)
    assert row() == ("Nà Pài", 106.5, 22.8, "Viettel", False)
    moved = probes.ProbeEntry("cb-001", "Nà Pài", 106.51, 22.81)  # no operator: kept
    probes.add(layout, moved, database_url=database_url)
    assert row() == ("Nà Pài", 106.51, 22.81, "Viettel", False)

    with psycopg.connect(database_url) as connection:
        connection.execute(
            "INSERT INTO probe_status (probe_id, state, last_seen) VALUES ('cb-001', 'offline', "
            "now() - interval '1 day')"
        )
    assert probes.revoke(layout, "cb-001", database_url=database_url) == (True, True)
    assert row() == ("Nà Pài", 106.51, 22.81, "Viettel", True)
    assert layout.password_file.get("cb-001") is None
    assert not (layout.kit("cb-001") / "mqtt-password").exists()
    with psycopg.connect(database_url) as connection:
        health = connection.execute(
            "SELECT stale, revoked FROM probe_health WHERE probe_id = 'cb-001'"
        ).fetchone()
    assert health == (True, True)
    assert probes.revoke(layout, "cb-001", database_url=database_url) == (False, False)

    kit = probes.add(layout, ENTRY, database_url=database_url)
    assert kit.new_credentials
    assert row() == ("Nà Pài", 106.5, 22.8, "Viettel", False)


def test_add_on_a_database_without_the_schema_says_to_upgrade(
    layout: deploy.DeployLayout, database_url: str
) -> None:
    with pytest.raises(CoverwatchError, match="coverwatch db upgrade"):
        probes.add(layout, ENTRY, database_url=database_url)


def test_probes_commands(
    layout: deploy.DeployLayout,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("COVERWATCH_DATABASE_URL", raising=False)
    schema.upgrade(database_url)
    base = ["--deploy-dir", str(layout.root), "--database-url", database_url]
    added = main(["probes", "add", "--id", "lc-007", "--village", "Pa Vệ Sủ",
                  "--lon", "102.6", "--lat", "22.45", "--operator", "45201", *base])  # fmt: skip
    assert added == 0
    out = capsys.readouterr().out
    assert "docker compose kill -s HUP mosquitto" in out
    password = (layout.kit("lc-007") / "mqtt-password").read_text().strip()
    assert password not in out
    assert main(["probes", "revoke", "--id", "lc-007", *base]) == 0
    assert "marked revoked" in capsys.readouterr().out
    assert main(["probes", "revoke", "--id", "lc-007", *base]) == 1  # nothing left to revoke
    assert main(["probes", "add", "--id", "x-1", "--village", "v", "--lon", "1", "--lat", "2",
                 "--deploy-dir", str(layout.root)]) == 2  # fmt: skip
    assert "--no-database" in capsys.readouterr().err
