# Two commands do everything on a fresh machine:
#   make demo   the main job: disaggregated inference end to end (prefill engine, packet link,
#               decode on the mesh; emulators), with a report (wafer run)
#   make test   the whole test suite (pytest, Amaranth simulator, cocotb on Verilator and Icarus)
# Each bootstraps the virtual environment in .venv on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/wafer run

test: $(STAMP)
	$(BIN)/python -m pytest -n 2

bench: $(STAMP)
	$(BIN)/wafer bench fabric

clean:
	rm -rf $(VENV) sim_tests/sim_build build .pytest_cache .hypothesis
