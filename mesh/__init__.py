"""The architecture as data: configuration, ports, wavelets and routes.

This package is the single source of truth that ``hdl/``, ``emulator/`` and ``programs/`` read.
It depends on nothing else in the project (and on no third-party package).
"""

from .config import ConfigError, MeshConfig
from .ports import NUM_PORTS, Port
from .wavelet import Wavelet, color_bits
from .routes import Route, RouteError, RouteTable, checkerboard_color
from .links import ExternalLink, external_links

__all__ = [
    "ConfigError", "MeshConfig",
    "NUM_PORTS", "Port",
    "Wavelet", "color_bits",
    "Route", "RouteError", "RouteTable", "checkerboard_color",
    "ExternalLink", "external_links",
]
