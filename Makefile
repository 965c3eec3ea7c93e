# Two commands do everything on a fresh machine:
#   make demo   the main job: fabric traffic and a GEMV on the cores (emulator), with a report
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
	$(BIN)/wafer demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2

bench: $(STAMP)
	$(BIN)/wafer bench fabric

clean:
	rm -rf $(VENV) sim_tests/sim_build build .pytest_cache .hypothesis
