"""Throwaway MQTT brokers: Mosquitto when installed, else the pure-Python amqtt.

Both speak MQTT 3.1.1, which is all coverwatch's core behaviour needs. Mosquitto
adds what amqtt lacks (shared subscriptions, ACLs, TLS listeners), so tests of
those ask for Mosquitto and skip, saying why, without it.

These brokers serve tests and ``make demo`` on loopback; they are not the deployment's
broker (deploy/mosquitto/, hardened as deploy/README.md describes). How much of that
hardening each one carries:

* **Packet size.** The throwaway Mosquitto has ``max_packet_size`` set to
  :data:`MAX_PACKET_BYTES` (derived from ``coverwatch.protocol``, the same value as
  the deployment), so a client sending a bigger packet is disconnected there too.
  amqtt 0.12 has no such limit: it reads every PUBLISH whole into memory (up to the
  MQTT maximum of 256 MiB) before any plugin sees it, and its plugin hooks cannot
  refuse a message by size (topic filters see the topic only; the message-received
  event is informational and fires after the read). A 20 MiB publish is accepted
  and delivered.
* **Client id bound to the user name.** Not on either. Mosquitto's
  ``use_username_as_clientid`` disconnects every client that has no user name, and
  these brokers are anonymous (Mosquitto) or have one shared user (amqtt) so that
  tests and the demo's hundreds of simulated probes connect without a user each and
  keep their own client ids (tests isolate persistent sessions by client id). With
  one shared user, binding would give every client the same id and each would
  disconnect the one before. amqtt could not enforce it anyway: a plugin cannot
  prevent a session takeover there, because amqtt 0.12 *deletes the persistent
  session of a client id as soon as a clean-session CONNECT for that id arrives,
  before authentication runs* -- a client with a wrong password wipes a collector's
  queued messages (seen against the amqtt in this project's virtualenv).
* **ACL.** Only Mosquitto's ACL file has per-user patterns (``%u``); amqtt's topic
  ACL plugin lists topics per literal user name, and with one shared user it would
  restrict nobody. Neither throwaway broker has an ACL; tests of the deployment's ACL
  run Mosquitto with the deployment's own files (tests/test_provisioning_broker.py,
  tests/test_broker_hardening.py).

Production therefore uses Mosquitto with the files under deploy/; amqtt only stands in
where Mosquitto is not installed.
"""

from __future__ import annotations

import getpass
import secrets
import shutil
import sys
from pathlib import Path
from typing import Final, Protocol

from coverwatch import protocol
from coverwatch.localservices.ports import LOOPBACK, free_port, wait_for_port
from coverwatch.localservices.process import ServiceProcess
from coverwatch.settings import MqttUrl

# The longest probe id PROBE_ID_RE allows (a first character, then up to 63 more).
MAX_PROBE_ID_LENGTH: Final = 64


def max_publish_header_bytes() -> int:
    """The largest header of a PUBLISH the protocol sends, in bytes.

    MQTT 3.1.1: the fixed header (a type byte and a remaining length of up to 4 bytes),
    then the topic (2 length bytes and the topic in UTF-8) and, at QoS 1, a 2-byte
    packet id. The longest topic is any channel's for the longest probe id.
    """
    longest_id = "a" * MAX_PROBE_ID_LENGTH
    topics = (protocol.readings_topic, protocol.status_topic, protocol.ack_topic)
    longest_topic = max(len(topic(longest_id).encode()) for topic in topics)
    return 1 + 4 + 2 + longest_topic + 2


# Room for an MQTT 5 client's PUBLISH properties (coverwatch's own clients speak 3.1.1
# and send none), so the limit never bites a protocol-sized payload.
MQTT5_PROPERTIES_ROOM_BYTES: Final = 256
# The broker's max_packet_size: the protocol's largest payload plus the largest header.
# Mosquitto reads the length at the start of a packet and disconnects a client whose
# packet is longer before reading the rest; deploy/mosquitto/mosquitto.conf carries the
# same number (tests/test_deploy.py compares them).
MAX_PACKET_BYTES: Final = (
    protocol.MAX_PAYLOAD_BYTES + max_publish_header_bytes() + MQTT5_PROPERTIES_ROOM_BYTES
)


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (path for path in ("/usr/sbin/mosquitto",) if Path(path).exists()), None
    )


class LocalBroker(Protocol):
    name: str
    port: int
    supports_shared_subscriptions: bool

    @property
    def url(self) -> MqttUrl: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def kill(self) -> None: ...


class _BrokerProcess:
    name = "broker"
    supports_shared_subscriptions = False

    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self._process: ServiceProcess | None = None

    @property
    def url(self) -> MqttUrl:
        return MqttUrl(host=LOOPBACK, port=self.port, tls=False)

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        if self._process is not None and self._process.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._process = ServiceProcess(self._argv(), log_path=self.data_dir / f"{self.name}.log")
        self._process.start()
        try:
            wait_for_port(self.port, timeout_s=20, what=f"{self.name} broker")
        except Exception:
            tail = self._process.log_tail()
            self._process.stop()
            raise RuntimeError(f"{self.name} did not start; its log ends:\n{tail}") from None

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()

    def __enter__(self) -> _BrokerProcess:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


class MosquittoBroker(_BrokerProcess):
    """Mosquitto with a generated config: loopback only, persistence on disk.

    Anonymous clients are allowed and choose their client ids; ``max_packet_size`` is the
    deployment's. ``extra_config`` is appended (e.g. a password file and ACL).
    """

    name = "mosquitto"
    supports_shared_subscriptions = True

    def __init__(self, data_dir: Path, *, port: int | None = None, extra_config: str = "") -> None:
        super().__init__(data_dir, port=port)
        self.extra_config = extra_config

    def _argv(self) -> list[str]:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed")
        config = self.data_dir / "mosquitto.conf"
        config.write_text(
            "\n".join(
                [
                    # Run as whoever we are (as root Mosquitto would switch to 'mosquitto',
                    # which cannot write our data directory).
                    f"user {getpass.getuser()}",
                    f"listener {self.port} {LOOPBACK}",
                    "allow_anonymous true",
                    "persistence true",
                    f"persistence_location {self.data_dir}/",
                    "autosave_interval 1",
                    "max_queued_messages 100000",
                    # A collector acknowledges in batches; 20 (the default) would
                    # cap each batch at 20 messages.
                    "max_inflight_messages 1000",
                    # As in the deployment: a packet beyond the protocol's limit
                    # disconnects its sender. (use_username_as_clientid cannot be on
                    # here: see the module docstring.)
                    f"max_packet_size {MAX_PACKET_BYTES}",
                    "log_dest stdout",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    self.extra_config,
                    "",
                ]
            )
        )
        return [binary, "-c", str(config)]


class AmqttBroker(_BrokerProcess):
    """The pure-Python amqtt broker (MQTT 3.1.1), for machines without Mosquitto.

    amqtt keeps no queued messages for anonymous clients, so it gets a user with a
    password generated per broker (Argon2-hashed in its password file); ``url``
    carries the credential. Its sessions live in memory: a restart of amqtt loses
    queued messages, which is why production uses Mosquitto. It enforces no packet size
    and no binding of client ids to users (see the module docstring for why it cannot).
    """

    name = "amqtt"
    USERNAME = "coverwatch"

    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        super().__init__(data_dir, port=port)
        self._password = secrets.token_urlsafe(18)

    @property
    def url(self) -> MqttUrl:
        return MqttUrl(
            host=LOOPBACK,
            port=self.port,
            tls=False,
            username=self.USERNAME,
            password=self._password,
        )

    def _argv(self) -> list[str]:
        from pwdlib import PasswordHash  # amqtt's own dependency
        from pwdlib.hashers.argon2 import Argon2Hasher

        password_file = self.data_dir / "passwords"
        # Cheap Argon2 parameters: the password is 144 random bits, so hash cost adds no
        # protection, while the default (64 MiB, 3 passes) makes every login take ~0.1 s
        # of amqtt's single thread, too slow for hundreds of simulated probes.
        hasher = Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1)
        digest = PasswordHash((hasher,)).hash(self._password)
        password_file.write_text(f"{self.USERNAME}:{digest}\n")
        password_file.chmod(0o600)
        config = self.data_dir / "amqtt.yaml"
        config.write_text(
            "\n".join(
                [
                    "listeners:",
                    "  default:",
                    "    type: tcp",
                    f"    bind: {LOOPBACK}:{self.port}",
                    "plugins:",
                    "  amqtt.plugins.authentication.FileAuthPlugin:",
                    f"    password_file: {password_file}",
                    "",
                ]
            )
        )
        launcher = "from amqtt.scripts.broker_script import main; main()"
        return [sys.executable, "-c", launcher, "-c", str(config)]


def start_local_broker(data_dir: Path, *, prefer_mosquitto: bool = True) -> LocalBroker:
    """Start Mosquitto if it is installed (and preferred), else amqtt."""
    broker: _BrokerProcess
    if prefer_mosquitto and mosquitto_binary() is not None:
        broker = MosquittoBroker(data_dir)
    else:
        broker = AmqttBroker(data_dir)
    broker.start()
    return broker
