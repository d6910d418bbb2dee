"""``coverwatch probes`` and ``coverwatch deploy``: registered as deploy arrives (#7)."""

from __future__ import annotations

from typing import Any


def register(commands: Any) -> None:
    """Add provisioning's sub-commands to the ``coverwatch`` parser (none yet)."""
