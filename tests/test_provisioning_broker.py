"""The deployment's broker security against a real Mosquitto.

Mosquitto runs with the committed ``deploy/mosquitto/mosquitto.conf`` (container paths
rewritten to a temporary directory, the TLS listener moved to a free loopback port) and
with the CA, certificate, password file and ACL made by ``coverwatch deploy init`` and
``coverwatch probes add``. Real TLS, real passwords, real ACL decisions: nothing is
mocked. tests/test_broker_hardening.py uses the helpers here for client ids, packet size
and the ack topics.
"""

from __future__ import annotations

import getpass
import os
import signal
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from coverwatch import protocol
from coverwatch.localservices import mosquitto_binary
from coverwatch.localservices.ports import LOOPBACK, free_port, wait_for_port
from coverwatch.localservices.process import ServiceProcess
from provisioning import deploy, probes
from tests.conftest import skip_unless_ci
from tests.helpers import REPO, Collector, Received

pytestmark = pytest.mark.mosquitto

DEPLOY = REPO / "deploy"
HOST = "localhost"  # in the broker certificate's subjectAltName (deploy init adds it)


@dataclass
class Stack:
    layout: deploy.DeployLayout
    port: int
    process: ServiceProcess
    collector_password: str

    def password(self, probe_id: str) -> str:
        return (self.layout.kit(probe_id) / "mqtt-password").read_text().strip()

    def reload(self) -> None:
        """What ``docker compose kill -s HUP mosquitto`` does."""
        assert self.process.pid is not None
        os.kill(self.process.pid, signal.SIGHUP)
        time.sleep(1.0)


def broker_config(
    layout: deploy.DeployLayout, port: int, data: Path, *, text: str | None = None
) -> str:
    """The committed config (or ``text``) with container paths and port mapped here."""
    if text is None:
        text = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    for container, local in (
        ("/mosquitto/secrets/", f"{layout.secrets}/"),
        ("/mosquitto/data/", f"{data}/"),
    ):
        assert container in text, f"mosquitto.conf no longer mentions {container}"
        text = text.replace(container, local)
    unmapped = [line for line in text.splitlines() if " /mosquitto/" in line]
    assert not unmapped, f"container paths this test does not map: {unmapped}"
    assert "\nlistener 8883\n" in text
    text = text.replace("\nlistener 8883\n", f"\nlistener {port} {LOOPBACK}\n")
    return f"user {getpass.getuser()}\n{text}"


PROBES = (("cb-001", "Nà Pài"), ("cb-002", "Bản Giới"), ("cb-003", "Cốc Xa"))


def provision(root: Path, *extra_probes: str) -> deploy.DeployLayout:
    """``deploy init`` and ``probes add`` for cb-001..cb-003 (and ``extra_probes``)."""
    layout = deploy.init(root / "deploy", broker_host="broker.example.org").layout
    for probe_id, village in (*PROBES, *((probe_id, "Khuổi Khon") for probe_id in extra_probes)):
        probes.add(
            layout,
            probes.ProbeEntry(probe_id, village, 106.5, 22.8, "Viettel"),
            database_url=None,
        )
    return layout


def listening_ports(pid: int) -> set[int]:
    """TCP ports process ``pid`` listens on (Linux /proc)."""
    sockets = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:
            continue  # closed meanwhile (e.g. wait_for_port's own connection)
        if target.startswith("socket:["):
            sockets.add(target[len("socket:[") : -1])
    ports = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in sockets:  # 0A: LISTEN
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


@contextmanager
def running_broker(
    layout: deploy.DeployLayout, workdir: Path, *, config: str | None = None
) -> Iterator[Stack]:
    """A real Mosquitto on a free loopback port with the deployment's config and secrets."""
    binary = mosquitto_binary()
    if binary is None:
        skip_unless_ci("mosquitto is not installed (Debian: apt-get install mosquitto)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    data = workdir / "mosquitto-data"
    data.mkdir()
    config_file = workdir / "mosquitto.conf"
    config_file.write_text(broker_config(layout, port, data, text=config))
    process = ServiceProcess([binary, "-c", str(config_file)], log_path=workdir / "mosquitto.log")
    process.start()
    try:
        wait_for_port(port, timeout_s=20, what="mosquitto (TLS)")
    except Exception:
        process.stop()
        raise AssertionError(f"mosquitto did not start:\n{process.log_tail()}") from None
    try:
        # The TLS listener and nothing else: an option placed before the listener line
        # (e.g. use_username_as_clientid) makes Mosquitto open a plain one on 1883.
        assert process.pid is not None
        assert listening_ports(process.pid) == {port}
        env = deploy.read_env(layout.env_file)
        yield Stack(layout, port, process, env["COLLECTOR_MQTT_PASSWORD"])
    finally:
        process.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("deploy")
    with running_broker(provision(root), root / "broker") as running:
        yield running


# ------------------------------------------------------------------------- clients


def connect(
    stack: Stack,
    username: str | None,
    password: str | None,
    *,
    ca: Path | str | None = "generated",
    inbox: Collector | None = None,
    client_id: str | None = None,
    clean_session: bool = True,
    reconnect: bool = True,
    will: tuple[str, bytes] | None = None,
) -> tuple[mqtt.Client, Any]:
    """A TLS client; returns it with its CONNACK reason (the client is looping).

    ``client_id`` is what the client sends (a random one by default); the deployment's
    broker replaces it with the user name.
    """
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or f"test-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv311,
        clean_session=clean_session,
        reconnect_on_failure=reconnect,
    )
    client.tls_set(
        ca_certs=str(stack.layout.ca_certificate if ca == "generated" else ca) if ca else None,
        cert_reqs=ssl.CERT_REQUIRED,
    )
    if username is not None:
        client.username_pw_set(username, password)
    if will is not None:
        client.will_set(*will, qos=1, retain=True)
    if inbox is not None:
        client.on_message = lambda _c, _u, message: inbox.add(
            Received(message.topic, bytes(message.payload), bool(message.retain))
        )
    answered = threading.Event()
    reasons: list[Any] = []

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        reasons.append(reason)
        answered.set()

    client.on_connect = on_connect
    client.connect(HOST, stack.port, keepalive=30)
    client.loop_start()
    assert answered.wait(10), "no CONNACK within 10 s"
    return client, reasons[0]


def close(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


def subscribe(client: mqtt.Client, topic: str) -> list[Any]:
    """Subscribe at QoS 1; the SUBACK's reason codes."""
    done = threading.Event()
    codes: list[Any] = []

    def on_subscribe(_c: Any, _u: Any, _mid: Any, reasons: list[Any], _p: Any) -> None:
        codes.extend(reasons)
        done.set()

    client.on_subscribe = on_subscribe
    client.subscribe(topic, qos=1)
    assert done.wait(10), f"no SUBACK for {topic}"
    return codes


def publish_as(stack: Stack, probe_id: str, *messages: tuple[str, bytes]) -> None:
    client, reason = connect(stack, probe_id, stack.password(probe_id))
    assert not reason.is_failure, f"{probe_id} could not log in: {reason}"
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        close(client)


@pytest.fixture
def collector_inbox(stack: Stack) -> Iterator[Collector]:
    """A subscriber logged in with the collector's credentials from .env."""
    inbox = Collector()
    client, reason = connect(stack, deploy.COLLECTOR_USER, stack.collector_password, inbox=inbox)
    assert not reason.is_failure, reason
    subscribe(client, "coverwatch/v1/+/readings")
    try:
        yield inbox
    finally:
        close(client)


# --------------------------------------------------------------------------- tests


def test_a_probe_publishes_under_its_own_topic(stack: Stack, collector_inbox: Collector) -> None:
    topic = protocol.readings_topic("cb-001")
    publish_as(stack, "cb-001", (topic, b"own topic"))
    (message,) = collector_inbox.wait_for(1, topic=topic)
    assert message.payload == b"own topic"


def test_a_probe_cannot_publish_for_another_probe(stack: Stack, collector_inbox: Collector) -> None:
    own, other = protocol.readings_topic("cb-001"), protocol.readings_topic("cb-002")
    # Mosquitto drops an ACL-denied QoS 1 publish silently (MQTT 3.1.1 has no way to
    # say no): the forged message goes first, then a control message that does arrive.
    publish_as(stack, "cb-001", (other, b"forged"), (own, b"control"))
    collector_inbox.wait_for(1, topic=own)
    time.sleep(0.5)
    assert [m.payload for m in collector_inbox.messages] == [b"control"]


def test_a_probe_reads_no_readings(stack: Stack, collector_inbox: Collector) -> None:
    snoop = Collector()
    client, reason = connect(stack, "cb-003", stack.password("cb-003"), inbox=snoop)
    assert not reason.is_failure
    try:
        subscribe(client, "coverwatch/v1/#")
        topic = protocol.readings_topic("cb-001")
        publish_as(stack, "cb-001", (topic, b"private"))
        collector_inbox.wait_for(1, topic=topic)
        time.sleep(0.5)
        assert snoop.messages == []
    finally:
        close(client)


def test_collector_credentials_work_with_a_shared_subscription(stack: Stack) -> None:
    inbox = Collector()
    client, reason = connect(stack, deploy.COLLECTOR_USER, stack.collector_password, inbox=inbox)
    assert not reason.is_failure
    try:
        subscribe(client, "$share/collectors/coverwatch/v1/+/readings")
        topic = protocol.readings_topic("cb-002")
        publish_as(stack, "cb-002", (topic, b"shared"))
        assert [m.payload for m in inbox.wait_for(1, topic=topic)] == [b"shared"]
    finally:
        close(client)


@pytest.mark.parametrize(
    ("username", "password"),
    [(None, None), ("cb-001", "wrong-password"), ("nobody", "whatever"), ("collector", "")],
    ids=["anonymous", "wrong-password", "unknown-user", "empty-password"],
)
def test_anonymous_and_wrong_passwords_are_refused(
    stack: Stack, username: str | None, password: str | None
) -> None:
    client, reason = connect(stack, username, password)
    try:
        assert reason.is_failure
        assert reason.value in (4, 5, 134, 135), reason  # bad credentials / not authorised
    finally:
        close(client)


def test_tls_needs_the_generated_ca(stack: Stack) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(stack, "cb-001", stack.password("cb-001"), ca=None)  # system CAs only
    certificate = stack.layout.broker_certificate
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(stack, "cb-001", stack.password("cb-001"), ca=certificate)  # not a CA


def test_revoked_probe_cannot_log_in_after_reload(stack: Stack) -> None:
    probes.add(
        stack.layout,
        probes.ProbeEntry("cb-009", "Lũng Cắm", 105.9, 22.9, "Viettel"),
        database_url=None,
    )
    stack.reload()
    password = stack.password("cb-009")
    connected, reason = connect(stack, "cb-009", password)
    assert not reason.is_failure, "a newly added probe logs in after the reload"
    dropped = threading.Event()
    connected.on_disconnect = lambda *_args: dropped.set()
    removed, _ = probes.revoke(stack.layout, "cb-009", database_url=None)
    assert removed
    stack.reload()
    # Mosquitto 2 re-checks connected clients on reload: the revoked one is dropped.
    assert dropped.wait(5), "the revoked probe's open connection was not closed"
    close(connected)
    client, reason = connect(stack, "cb-009", password)
    close(client)
    assert reason.is_failure, "a revoked probe must be refused after the reload"
