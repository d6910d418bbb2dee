"""The compose stack, the broker config and the Raspberry Pi install script, checked as files.

Docker is not installable from Debian reliably and cannot run here, so ``docker compose
config`` runs only where ``docker compose`` works (and skips, saying so, elsewhere — not a
CI failure); the compose file is otherwise parsed with PyYAML. The broker config and ACL
are exercised against a real Mosquitto in tests/test_provisioning_broker.py and
tests/test_broker_hardening.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from coverwatch import protocol
from coverwatch.localservices.broker import (
    MAX_PACKET_BYTES,
    MAX_PROBE_ID_LENGTH,
    max_publish_header_bytes,
)
from dashboards.model import DEFAULT_DATASOURCE_UID
from provisioning import broker, deploy
from tests.conftest import skip_unless_ci
from tests.helpers import REPO

DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
MOSQUITTO_CONF = DEPLOY / "mosquitto" / "mosquitto.conf"
# Defaults people leave in place; none may appear as a value anywhere in deploy/.
KNOWN_DEFAULTS = (
    "admin", "changeme", "change_me", "password", "postgres", "secret",
    "coverwatch", "mosquitto", "grafana", "timescale", "123456", "default",
)  # fmt: skip


def compose() -> dict[str, Any]:
    if yaml is None:
        pytest.skip("PyYAML is not installed; test_compose_structure_without_yaml checks less")
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def test_compose_structure_without_yaml() -> None:
    """What can be checked without a YAML parser: the services and the build."""
    text = COMPOSE.read_text()
    services = text.split("\nservices:\n", 1)[1].split("\nvolumes:\n", 1)[0]
    names = re.findall(r"^  ([a-z][a-z0-9_-]*):$", services, flags=re.MULTILINE)
    assert names == ["timescaledb", "mosquitto", "collector", "grafana"]
    assert "dockerfile: deploy/Dockerfile" in services
    assert "image: eclipse-mosquitto:2" in services


def committed_deploy_files() -> list[Path]:
    ignored = ("secrets", "probes", "data")
    return [
        path
        for path in sorted(DEPLOY.rglob("*"))
        if path.is_file()
        and path.name != ".env"
        and path.relative_to(DEPLOY).parts[0] not in ignored
    ]


def test_compose_has_the_four_services() -> None:
    services = compose()["services"]
    assert set(services) == {"timescaledb", "mosquitto", "grafana", "collector"}
    # Pinned to the version CI tests (../shared/timescaledb: TimescaleDB 2.28.3, PG 15).
    assert services["timescaledb"]["image"] == "timescale/timescaledb:2.28.3-pg15"
    assert services["mosquitto"]["image"] == "eclipse-mosquitto:2"
    assert "8883:8883" in services["mosquitto"]["ports"]
    collector = services["collector"]
    assert collector["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert "coverwatch collector run" in " ".join(collector["entrypoint"])
    assert collector["environment"]["COVERWATCH_METRICS_PORT"] == "9108"
    assert any(str(port).endswith(":9108") for port in collector["ports"])
    assert collector["environment"]["COVERWATCH_MQTT_URL"].startswith("mqtts://collector:${")


def test_compose_mounts_exist_in_the_repository() -> None:
    generated = {"./secrets", "./data/mosquitto", "./secrets/ca.crt"}
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith("."):
                continue  # a named volume
            if source in generated:
                continue  # made by coverwatch deploy init
            assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"


def test_grafana_is_provisioned_with_the_datasource_uid_and_the_dashboards() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    compose()  # skips without PyYAML
    assert yaml is not None
    datasources = yaml.safe_load((provisioning / "datasources" / "coverwatch.yaml").read_text())
    (datasource,) = datasources["datasources"]
    assert datasource["uid"] == DEFAULT_DATASOURCE_UID
    assert datasource["secureJsonData"]["password"] == "$GRAFANA_DB_PASSWORD"
    providers = yaml.safe_load((provisioning / "dashboards" / "coverwatch.yaml").read_text())
    (provider,) = providers["providers"]
    mounts = compose()["services"]["grafana"]["volumes"]
    assert f"../dashboards/json:{provider['options']['path']}:ro" in mounts
    assert (REPO / "dashboards" / "json" / "fleet.json").exists()


def mosquitto_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in MOSQUITTO_CONF.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            settings.setdefault(key, []).append(value.strip())
    return settings


def test_mosquitto_config_has_what_the_collector_relies_on() -> None:
    settings = mosquitto_settings()
    assert settings["max_inflight_messages"] == ["1000"]
    assert settings["max_queued_messages"] == ["100000"]
    assert settings["persistence"] == ["true"]
    assert settings["allow_anonymous"] == ["false"]
    assert settings["listener"] == ["8883"], "TLS only: no plain listener"
    assert {"cafile", "certfile", "keyfile", "password_file", "acl_file"} <= set(settings)
    # Generated with a block per collector user, in the mounted secrets directory.
    assert settings["acl_file"] == ["/mosquitto/secrets/acl"]


def test_max_packet_size_is_the_protocols_limit_plus_the_header() -> None:
    assert mosquitto_settings()["max_packet_size"] == [str(MAX_PACKET_BYTES)]
    assert re.fullmatch(protocol.PROBE_ID_RE, "a" * MAX_PROBE_ID_LENGTH)
    assert not re.fullmatch(protocol.PROBE_ID_RE, "a" * (MAX_PROBE_ID_LENGTH + 1))
    header = max_publish_header_bytes()
    assert header == 1 + 4 + 2 + len(protocol.readings_topic("a" * MAX_PROBE_ID_LENGTH)) + 2
    assert protocol.MAX_PAYLOAD_BYTES + header <= MAX_PACKET_BYTES
    assert MAX_PACKET_BYTES - protocol.MAX_PAYLOAD_BYTES < 1024, "room for a header, no more"


def test_client_ids_are_bound_to_users_on_the_tls_listener() -> None:
    lines = [line for line in MOSQUITTO_CONF.read_text().splitlines() if line[:1] not in "#"]
    assert lines.count("use_username_as_clientid true") == 1
    # A listener option before the listener line makes Mosquitto 2.0 open a second,
    # plain listener on port 1883 for it.
    assert lines.index("listener 8883") < lines.index("use_username_as_clientid true")


def test_committed_acl_is_what_deploy_init_writes_for_one_collector(tmp_path: Path) -> None:
    committed = (DEPLOY / "mosquitto" / "acl").read_text()
    assert committed == broker.acl_text([deploy.COLLECTOR_USER])
    generated = deploy.init(tmp_path / "d", broker_host="broker.example.org").layout.acl
    assert generated.read_text() == committed
    rules = [line for line in committed.splitlines() if line and not line.startswith("#")]
    assert rules == [
        "pattern write coverwatch/v1/%u/readings",
        "pattern write coverwatch/v1/%u/status",
        "pattern read coverwatch/v1/%u/ack",
        "user collector",
        "topic read coverwatch/v1/+/readings",
        "topic read coverwatch/v1/+/status",
        "topic read $share/+/coverwatch/v1/+/readings",
        "topic read $share/+/coverwatch/v1/+/status",
        "topic write coverwatch/v1/+/ack",
    ]


def test_the_collectors_client_id_is_its_broker_user() -> None:
    environment = compose()["services"]["collector"]["environment"]
    user = environment["COVERWATCH_MQTT_URL"].removeprefix("mqtts://").split(":", 1)[0]
    assert user == deploy.COLLECTOR_USER
    assert environment["COVERWATCH_CLIENT_ID"] == user


def test_no_default_or_literal_password_anywhere_in_deploy() -> None:
    assignment = re.compile(
        r"(?i)\b([A-Z_]*(?:PASSWORD|PASSWD|PASS|SECRET|TOKEN)[A-Z_]*)\s*[:=]\s*['\"]?([^\s'\"#]*)"
    )
    problems = []
    for path in committed_deploy_files():
        text = path.read_text(errors="replace")
        for line_number, raw in enumerate(text.splitlines(), 1):
            # ${VAR:?…} (compose) and :'var' (psql) are references, not values.
            line = re.sub(r"\$\{[^}]*\}", "$ENV", raw)
            line = re.sub(r":'\w+'", "$PSQL_VARIABLE", line)
            for key, value in assignment.findall(line):
                if not value or value.startswith(("$", "/")):
                    continue  # from the environment, or a file holding it
                if key.lower() in ("password_file", "securejsondata"):
                    continue
                problems.append(f"{path.relative_to(REPO)}:{line_number}: {key}={value}")
            lowered = line.lower()
            for default in KNOWN_DEFAULTS:
                if re.search(
                    rf"(?i)(password|passwd|secret)\S*\s*[:=]\s*['\"]?{default}\b", lowered
                ):
                    problems.append(f"{path.relative_to(REPO)}:{line_number}: default {default!r}")
    assert not problems, "literal passwords in deploy/:\n" + "\n".join(problems)


def test_every_compose_password_comes_from_env_and_fails_without_it() -> None:
    for name, service in compose()["services"].items():
        environment = service.get("environment", {})
        for key, value in environment.items():
            if "PASSWORD" in key or ("URL" in key and "@" in str(value)):
                assert re.search(r"\$\{[A-Z_]+:\?[^}]+\}", str(value)), f"{name}: {key}={value}"


def test_generated_secrets_are_git_ignored(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    for path in (".env", "secrets/ca.key", "secrets/passwd", "secrets/acl",
                 "probes/cb-001/mqtt-password", "data/mosquitto/mosquitto.db"):  # fmt: skip
        result = subprocess.run(
            ["git", "-C", str(REPO), "check-ignore", "-q", f"deploy/{path}"], check=False
        )
        assert result.returncode == 0, f"deploy/{path} is not git-ignored"
    for path in ("compose.yaml", "mosquitto/acl", "pi/install.sh"):
        result = subprocess.run(
            ["git", "-C", str(REPO), "check-ignore", "-q", f"deploy/{path}"], check=False
        )
        assert result.returncode == 1, f"deploy/{path} must not be ignored"


def test_dockerfile_installs_the_server_extra() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert [line for line in text.splitlines() if line.startswith("FROM")] == [
        "FROM python:3.11-slim"
    ]
    assert 'pip install ".[server]"' in text
    assert "USER coverwatch" in text


def _docker_compose() -> list[str] | None:
    for argv in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(argv[0]) is None:
            continue
        probe = subprocess.run([*argv, "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return argv
    return None


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    command = _docker_compose()
    if command is None:
        # Not skip_unless_ci: Docker is not reliably installable from Debian, so CI
        # cannot be required to have it.
        pytest.skip("docker compose is not available here")
    env = deploy.init(tmp_path / "d", broker_host="broker.example.org").layout.env_file
    result = subprocess.run(
        [*command, "--env-file", str(env), "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    bare = subprocess.run(
        [*command, "--env-file", "/dev/null", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bare.returncode != 0
    assert "coverwatch deploy init" in bare.stderr


# ------------------------------------------------------------------- Raspberry Pi


INSTALL = DEPLOY / "pi" / "install.sh"


def test_install_script_parses() -> None:
    subprocess.run(["bash", "-n", str(INSTALL)], check=True)
    assert INSTALL.stat().st_mode & 0o111, "install.sh must be executable"


def test_install_script_passes_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        skip_unless_ci("shellcheck is not installed (Debian: apt-get install shellcheck)")
    result = subprocess.run(
        ["shellcheck", str(INSTALL)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


def test_install_script_does_what_the_probe_needs() -> None:
    text = INSTALL.read_text()
    for needed in (
        "PREFIX=/opt/coverwatch",
        'VENV="$PREFIX/venv"',
        '"${SOURCE}[agent]"',
        "net.ipv4.ping_group_range = 0 2147483647",
        "/etc/sysctl.d/",
        "Storage=volatile",
        "journald.conf.d",
        "modemmanager",
        "mmcli -m any --signal-setup=60",
        "usermod -a -G dialout coverwatch",
        "coverwatch-probe.service",
        'coverwatch-probe" doctor',
    ):
        assert needed in text, needed
    result = subprocess.run(
        ["bash", str(INSTALL), "--help"], capture_output=True, text=True, check=True
    )
    assert "--kit DIR" in result.stdout


def test_install_script_refuses_an_incomplete_kit(tmp_path: Path) -> None:
    (tmp_path / "probe.toml").write_text("")
    result = subprocess.run(
        ["bash", str(INSTALL), "--kit", str(tmp_path), "--no-apt", "--source", "/nonexistent"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    # Stops at its first check (not root, or not a source tree) before changing anything.
    assert "error:" in result.stderr


def test_scaling_doc_figures_come_from_the_benchmarks() -> None:
    scaling = (REPO / "docs" / "scaling.md").read_text()
    benchmarks = (REPO / "docs" / "benchmarks.md").read_text()
    quoted = re.findall(
        r"\b\d{1,3}(?:,\d{3})+\b", scaling.split("## Sizing", 1)[1].split("\n## ", 1)[0]
    )
    from_benchmarks = [figure for figure in quoted if figure in benchmarks]
    assert len(from_benchmarks) >= 3, "the sizing section must quote docs/benchmarks.md"


MOUNT_OPTION = DEPLOY / "pi" / "mount-option.awk"
RASPIOS_FSTAB = Path(__file__).parent / "data" / "fstab" / "raspios-bookworm.fstab"


def awks() -> list[str]:
    """Every awk here: Raspberry Pi OS has mawk, other Debian machines gawk."""
    found = [name for name in ("mawk", "gawk", "busybox") if shutil.which(name)]
    if not found:
        skip_unless_ci("no awk is installed (Debian: apt-get install mawk)")
    return found


def add_mount_option(awk: str, fstab: str, mountpoint: str, option: str) -> tuple[int, str]:
    command = [awk, "-v", f"mountpoint={mountpoint}", "-v", f"option={option}"]
    if awk == "busybox":
        command.insert(1, "awk")
    result = subprocess.run(
        [*command, "-f", str(MOUNT_OPTION)],
        input=fstab,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode, result.stdout


def test_lazytime_is_added_to_the_root_entry_of_raspberry_pi_os() -> None:
    fstab = RASPIOS_FSTAB.read_text()
    for awk in awks():
        status, changed = add_mount_option(awk, fstab, "/", "lazytime")
        assert status == 0, awk
        assert changed.splitlines() == [
            *fstab.splitlines()[:2],
            "PARTUUID=4e639091-02  /               ext4    defaults,noatime,lazytime  0       1",
            fstab.splitlines()[3],
        ], awk


def test_an_option_already_there_changes_nothing() -> None:
    fstab = RASPIOS_FSTAB.read_text()
    for awk in awks():
        once = add_mount_option(awk, fstab, "/", "lazytime")[1]
        assert add_mount_option(awk, once, "/", "lazytime") == (0, once), awk
        assert add_mount_option(awk, fstab, "/", "noatime") == (0, fstab), awk


def test_a_mount_point_without_an_entry_is_reported_and_nothing_changes() -> None:
    fstab = RASPIOS_FSTAB.read_text()
    for awk in awks():
        assert add_mount_option(awk, fstab, "/var/lib/coverwatch", "lazytime") == (3, fstab)
        # A comment that mentions the mount point is not an entry.
        commented = "# PARTUUID=1-02  /data  ext4  defaults  0  1\n"
        assert add_mount_option(awk, commented, "/data", "lazytime") == (3, commented)


def test_install_script_sets_lazytime_with_the_awk_script() -> None:
    text = INSTALL.read_text()
    assert 'mount -o remount,lazytime "$mount_point"' in text
    assert '-f "$SCRIPT_DIR/mount-option.awk" /etc/fstab' in text
    assert "mv -f /etc/fstab.coverwatch-new /etc/fstab" in text  # atomic, never truncated
    assert "--no-lazytime" in text
