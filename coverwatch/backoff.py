"""The one retry policy of coverwatch: capped exponential backoff with full jitter.

After the n-th failure in a row (n from 0) the wait is drawn between ``minimum_s`` and
min(``maximum_s``, ``minimum_s`` x 2**n): the ceiling doubles per failure up to the cap,
and the draw (the AWS Architecture Blog's "full jitter") spreads the retries, so that the
probes of a village that lost the same tower, or collectors after a database failover, do
not all come back in the same second. :meth:`Backoff.reset` after a success starts again
at ``minimum_s``.

Used by the probe's reconnects (``[mqtt] backoff_min_s`` / ``backoff_max_s``) and the
collector's retries of a database that is away (``IngestOptions.retry_*``).
"""

from __future__ import annotations

import random

# The doubling stops here: 2**32 times any sensible minimum is far past any cap.
_MAX_EXPONENT = 32


class Backoff:
    """Delays for consecutive failures; not thread-safe (one per retrying loop)."""

    def __init__(
        self, minimum_s: float, maximum_s: float, rng: random.Random | None = None
    ) -> None:
        if not 0 < minimum_s <= maximum_s:
            raise ValueError(
                f"backoff needs 0 < minimum_s <= maximum_s, got {minimum_s} and {maximum_s}"
            )
        self.minimum_s = minimum_s
        self.maximum_s = maximum_s
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.attempt = 0

    def next_delay(self) -> float:
        """The wait before the next try; each call counts one more failure."""
        ceiling = min(self.maximum_s, self.minimum_s * 2**self.attempt)
        self.attempt = min(self.attempt + 1, _MAX_EXPONENT)
        return self.minimum_s + self._rng.uniform(0, max(0.0, ceiling - self.minimum_s))

    def reset(self) -> None:
        """A success: the next failure waits ``minimum_s`` again."""
        self.attempt = 0
