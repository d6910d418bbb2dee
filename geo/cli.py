"""``coverwatch villages``, ``report``, ``map`` and ``serve``: registered as geo arrives (#5)."""

from __future__ import annotations

from typing import Any


def register(commands: Any) -> None:
    """Add geo's sub-commands to the ``coverwatch`` parser (none yet)."""
