"""Cycle-exact numpy emulator of the mesh (docs/ARCHITECTURE.md, sections 7, 9 and 10): the
fabric, the external agents that drive it, and the cores; models of the prefill engine's blocks
(section 11); the packet link, its fault channels and the delivery into the mesh (section 12)."""

from .fabric import FabricEmulator, ProtocolError, StepResult
from .agents import TrafficSink, TrafficSource
from .run import CycleLimitExceeded, NoProgress, run
from .core import CoreArray
from .mesh import MeshCycleLimitExceeded, MeshEmulator, MeshNoProgress, MeshStep
from .systolic import SystolicModel, systolic_reference
from .dma import DmaModel, transfer_cycles
from .vector_engine import VectorCommand, VectorEngineModel, vector_op
from .prefill import PrefillEmulator, PrefillError
from .channel import Channel, FaultConfig, make_channels
from .link import LinkEmulator, LinkResult, LinkStalled, RxModel, TxModel
from .mesh_delivery import DeliveryModel, run_delivery

__all__ = [
    "FabricEmulator", "StepResult", "ProtocolError",
    "TrafficSource", "TrafficSink",
    "run", "NoProgress", "CycleLimitExceeded",
    "CoreArray", "MeshEmulator", "MeshStep", "MeshNoProgress", "MeshCycleLimitExceeded",
    "SystolicModel", "systolic_reference", "DmaModel", "transfer_cycles",
    "VectorEngineModel", "VectorCommand", "vector_op", "PrefillEmulator", "PrefillError",
    "Channel", "FaultConfig", "make_channels", "LinkEmulator", "LinkResult", "LinkStalled",
    "TxModel", "RxModel", "DeliveryModel", "run_delivery",
]
