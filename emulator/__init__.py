"""Cycle-exact numpy emulator of the mesh fabric (docs/ARCHITECTURE.md, section 7), and the
external agents that drive it."""

from .fabric import FabricEmulator, ProtocolError, StepResult
from .agents import TrafficSink, TrafficSource
from .run import CycleLimitExceeded, NoProgress, run

__all__ = [
    "FabricEmulator", "StepResult", "ProtocolError",
    "TrafficSource", "TrafficSink",
    "run", "NoProgress", "CycleLimitExceeded",
]
