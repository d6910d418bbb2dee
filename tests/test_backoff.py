"""The one retry policy (coverwatch.backoff), as the probe and the collector use it."""

from __future__ import annotations

import random

import pytest

from coverwatch.backoff import Backoff


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    backoff = Backoff(1.0, 60.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(12)]
    assert all(1.0 <= delay <= 60.0 for delay in delays)
    assert max(delays[:2]) <= 2.0  # starts small...
    assert max(delays[8:]) > 8.0  # ...and grows
    assert len({round(d, 6) for d in delays}) == 12  # jittered, not lock-step
    backoff.reset()
    assert backoff.next_delay() == 1.0


def test_each_delay_stays_under_its_doubling_ceiling() -> None:
    backoff = Backoff(0.5, 30.0, rng=random.Random(3))
    for attempt in range(40):  # far past the cap, and past the exponent's own limit
        ceiling = min(30.0, 0.5 * 2**attempt)
        assert 0.5 <= backoff.next_delay() <= ceiling


@pytest.mark.parametrize(("minimum_s", "maximum_s"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_a_backoff_that_could_spin_or_never_grow_is_refused(
    minimum_s: float, maximum_s: float
) -> None:
    with pytest.raises(ValueError, match="0 < minimum_s <= maximum_s"):
        Backoff(minimum_s, maximum_s)
