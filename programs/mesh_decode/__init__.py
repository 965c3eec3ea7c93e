"""Decode of the integer transformer on the mesh: weights resident in core SRAMs, MeshGEMV
tiling with alternating orientation, attention over a KV cache spread by position, softmax and
RMS norm exactly as :mod:`programs.integer_ops` defines them, argmax and the embedding of the
next token on the mesh. See :mod:`.plan` for the mapping and :mod:`.codegen` for the program."""

from .decoder import DecodeRun, MeshDecoder
from .model import ModelDims, SyntheticIntModel, decode_trace, prefill, random_int_model
from .plan import COLORS, PlacementError, Plan, plan

__all__ = ["MeshDecoder", "DecodeRun", "ModelDims", "SyntheticIntModel", "random_int_model",
           "prefill", "decode_trace", "PlacementError", "Plan", "plan", "COLORS"]
