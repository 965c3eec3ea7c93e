"""Verilog generation."""

from amaranth.back import verilog as _verilog

__all__ = ["verilog"]


def verilog(component, name):
    """Verilog text of ``component`` (a :class:`wiring.Component`, whose signature gives the
    ports) with top module ``name``. Source locations are left out so that the text does not
    depend on where the project is checked out."""
    return _verilog.convert(component, name=name, emit_src=False)
