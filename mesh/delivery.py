"""Delivery into the mesh: the command fields and error causes shared by the RTL
(:mod:`hdl.mesh_delivery`) and the emulator (:mod:`emulator.mesh_delivery`); docs/ARCHITECTURE.md
section 12, "Delivery into the mesh"."""

from enum import IntEnum

__all__ = ["DeliveryError", "FIELD_BITS"]

#: Widths of the delivery command's fields.
FIELD_BITS = {"x0": 16, "y0": 16, "width": 16, "height": 16, "words": 16, "src": 32, "color": 5}


class DeliveryError(IntEnum):
    """The cause of a bad command (the RTL's ``error_cause``), in the order checked."""
    NONE = 0
    REGION = 1      # width or height 0, or the region reaches past the mesh
    WORDS = 2       # words per tile 0
    BUFFER = 3      # src + width x height x words past the receive buffer
    COLOR = 4       # color >= colors
