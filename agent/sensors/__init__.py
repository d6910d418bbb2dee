"""The agent's sensors. Importing this package registers the built-in ones.

Each module defines its ``Settings`` (one ``[sensors.<name>]`` table), a ``create``
factory and registers itself; see agent/sensors/README.md.
"""

from agent.sensors import cellular, latency, power, system, throughput
from agent.sensors.base import (
    Sensor,
    SensorContext,
    SensorError,
    SensorPlugin,
    Stamp,
    register,
    registered,
)

__all__ = [
    "Sensor",
    "SensorContext",
    "SensorError",
    "SensorPlugin",
    "Stamp",
    "cellular",
    "latency",
    "power",
    "register",
    "registered",
    "system",
    "throughput",
]
