"""Values from config files, flags and payloads, shown safely inside an error message.

Both sides quote what a user wrote when they refuse it; a hostile value (a 5,000-digit
number, a 64 KB string, control characters) must still give a one-line, short message.
"""

from __future__ import annotations

import datetime
import math
from typing import Any


def shown(value: Any, limit: int = 60) -> str:
    """A value for a message: readable, one line and short, whatever it is."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**18:
        digits = int(abs(value).bit_length() * math.log10(2)) + 1
        return f"a number of about {digits} digits (too large)"
    if isinstance(value, datetime.date | datetime.time):
        return f"a date/time ({value.isoformat()})"
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # e.g. a list holding a 5,000-digit number
        text = f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def printable(text: str, limit: int = 100) -> str:
    """A name from a file as it can appear inside one line of a message."""
    visible = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    return visible if len(visible) <= limit else visible[: limit - 3] + "..."
