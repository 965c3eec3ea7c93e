"""cocotb 2 test benches on the Verilog generated from ``hdl/`` (Verilator and Icarus).

A package, so that its test modules (``sim_tests.test_router``) never clash with same-named
modules in ``tests/``. See ``sim_tests/README.md``.
"""
