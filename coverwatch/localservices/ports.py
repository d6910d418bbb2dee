"""Loopback port helpers for the local services."""

from __future__ import annotations

import socket
import time

from coverwatch.errors import ServiceError

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_open(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(port: int, *, timeout_s: float, what: str, host: str = LOOPBACK) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_is_open(port, host):
            return
        time.sleep(0.05)
    raise ServiceError(f"{what} did not accept connections on {host}:{port} within {timeout_s}s")
