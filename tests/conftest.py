"""Hypothesis profiles for the property-based tests.

``seeded`` (the default) draws the same examples on every run, so CI is reproducible; run
``pytest --hypothesis-profile=explore`` to draw fresh random cases (new route sets, traffic and
backpressure) when hunting for divergences.
"""

from hypothesis import settings

settings.register_profile("seeded", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("seeded")
