"""Building a province's analysis without the garbage collector's pauses.

An analysis allocates some 10^5-10^6 small objects that hold no reference cycles
(statuses, tuples, dicts, JSON text). Python's cyclic collector still walks every live
object each time enough of them have been allocated: on the province benchmark that was
~0.1 s of each analysis and of each map. Reference counting frees these objects either
way; the collector is paused while they are built and resumed after.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic collector for the block (if it ran), resume it after.

    Threads share the switch: a block that found it off (another thread's block) leaves
    it to that block to resume, so it is never left off once every block has ended.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
