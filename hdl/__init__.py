"""Amaranth 0.5 RTL of the fabric: :class:`Router` and :class:`Fabric` (docs/ARCHITECTURE.md,
sections 5 and 6)."""

from .link import LinkSignature, RouteWriteSignature
from .router import InputQueues, RoundRobinArbiter, Router
from .fabric import Fabric
from .build import verilog

__all__ = ["LinkSignature", "RouteWriteSignature", "Router", "InputQueues", "RoundRobinArbiter",
           "Fabric", "verilog"]
