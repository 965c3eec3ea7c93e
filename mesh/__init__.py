"""The architecture as data: configuration, ports, wavelets and routes.

This package is the single source of truth that ``hdl/``, ``emulator/`` and ``programs/`` read.
It depends on nothing else in the project, and on no third-party package but numpy (the ISA's
reference semantics work on arrays, so that the emulator applies them to all cores at once).
"""

from .config import ConfigError, MeshConfig
from .ports import NUM_PORTS, Port
from .wavelet import Wavelet, color_bits
from .routes import Route, RouteError, RouteTable, checkerboard_color
from .links import ExternalLink, external_links
from . import isa
from .program import CoreImage, MeshProgram, ProgramError, RunResult, Trap

__all__ = [
    "ConfigError", "MeshConfig",
    "NUM_PORTS", "Port",
    "Wavelet", "color_bits",
    "Route", "RouteError", "RouteTable", "checkerboard_color",
    "ExternalLink", "external_links",
    "isa", "CoreImage", "MeshProgram", "ProgramError", "RunResult", "Trap",
]
