"""Verilog generation."""

import gc

from amaranth.back import verilog as _verilog

__all__ = ["verilog"]


def verilog(component, name):
    """Verilog text of ``component`` (a :class:`wiring.Component`, whose signature gives the
    ports) with top module ``name``. Source locations are left out so that the text does not
    depend on where the project is checked out."""
    # Amaranth's netlist builder allocates millions of small objects that live until the end;
    # the cyclic garbage collector's passes over them take about a third of the conversion.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _verilog.convert(component, name=name, emit_src=False)
    finally:
        if enabled:
            gc.enable()
