"""Hypothesis profiles for the property-based tests, and the fixtures of the RTL test modules
(tests/sim_bench.py).

``seeded`` (the default) draws the same examples on every run, so CI is reproducible; run
``pytest --hypothesis-profile=explore`` to draw fresh random cases (new route sets, traffic and
backpressure) when hunting for divergences.
"""

import gc

import pytest
from hypothesis import settings

import sim_bench

settings.register_profile("seeded", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("seeded")


@pytest.fixture
def collect_unused_components():
    yield
    gc.collect()


@pytest.fixture(scope="module", autouse=True)
def drop_kept_benches():
    yield
    sim_bench.drop_kept()
