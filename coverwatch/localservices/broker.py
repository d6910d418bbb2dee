"""Throwaway MQTT brokers: Mosquitto when installed, else the pure-Python amqtt.

Both speak MQTT 3.1.1, which is all coverwatch's core behaviour needs. Mosquitto
adds what amqtt lacks (shared subscriptions, ACLs, TLS listeners), so tests of
those ask for Mosquitto and skip, saying why, without it.
"""

from __future__ import annotations

import getpass
import secrets
import shutil
import sys
from pathlib import Path
from typing import Protocol

from coverwatch.localservices.ports import LOOPBACK, free_port, wait_for_port
from coverwatch.localservices.process import ServiceProcess
from coverwatch.settings import MqttUrl


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
    """Mosquitto with a generated config: loopback only, persistence on disk."""

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
    queued messages, which is why production uses Mosquitto.
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
