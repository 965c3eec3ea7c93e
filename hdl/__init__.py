"""Amaranth 0.5 RTL of the machine: :class:`Router` and :class:`Fabric` (docs/ARCHITECTURE.md,
sections 5 and 6), :class:`Core`, :class:`Tile` and :class:`Mesh` (sections 9 and 10); the prefill
engine's :class:`SystolicArray` of :class:`ProcessingElement`, :class:`DmaEngine`,
:class:`DramModel`, :class:`VectorEngine` and the whole :class:`PrefillEngine`
(section 11); the packet link's :class:`PacketTx` and :class:`PacketRx` with their
:class:`Crc32Word`, and the :class:`MeshDelivery` that streams a received message into the mesh
(section 12)."""

from .link import LinkSignature, RouteWriteSignature
from .router import InputQueues, RoundRobinArbiter, Router
from .fabric import Fabric
from .build import verilog
from .core import Core, LoadSignature, LoadTarget, PeekSignature
from .tile import Tile
from .mesh import Mesh, mesh_verilog
from .systolic import ProcessingElement, SystolicArray
from .dma import DmaEngine, DramModel
from .vector_engine import VectorEngine, VectorOp
from .prefill import PrefillEngine
from .crc32 import Crc32Word
from .packet_tx import LaneSignature, PacketTx
from .packet_rx import PacketRx
from .mesh_delivery import MeshDelivery

__all__ = ["LinkSignature", "RouteWriteSignature", "Router", "InputQueues", "RoundRobinArbiter",
           "Fabric", "verilog", "Core", "LoadSignature", "LoadTarget", "PeekSignature", "Tile",
           "Mesh", "mesh_verilog", "ProcessingElement", "SystolicArray", "DmaEngine",
           "DramModel", "VectorEngine", "VectorOp", "PrefillEngine", "Crc32Word", "LaneSignature",
           "PacketTx", "PacketRx", "MeshDelivery"]
