"""What the HTTP API and the CLI accept: each parameter's grammar, its limits, its parser.

Each rule is written once and used twice: to check what a client sent (a ``ConfigError``
naming the parameter, what is wrong and what is allowed, which the API answers as a
400) and to document the parameter in OpenAPI (the same regular expression as
``pattern``, the same bounds as ``maximum``/``maxLength``), so the document says what the
server really accepts. Patterns use only syntax that Python's ``re`` and JSON Schema's
ECMA-262 dialect read alike (``[0-9]`` rather than ``\\d``, no flags).

Limits, and why:

- a window (``window=`` or ``since=``) spans at most ``MAX_WINDOW_DAYS`` days: ten years of
  readings is more than any deployment has, and no date arithmetic on it can leave the
  range of a ``datetime`` (``0001-01-01T00:00:00+14:00`` is year 0 in UTC);
- free text (``province``, ``source``, village names) is at most ``MAX_TEXT_CHARS``
  characters without control characters: PostgreSQL's text cannot hold NUL, and four
  such fields must fit in one btree index entry (``UNIQUE (province, district, commune,
  name)``, at most 2704 bytes);
- a request body is at most ``MAX_BODY_BYTES`` (413 beyond) and JSON in it nests at most
  ``MAX_JSON_DEPTH`` arrays/objects deep (a feature collection of MultiPolygons needs 8):
  deeper JSON would exhaust the stack of a recursive decoder.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

from coverwatch.errors import ConfigError
from geo.coverage import TimeWindow
from geo.operators import OPERATOR_NAMES

MAX_WINDOW_DAYS: Final = 3650
MAX_WINDOW: Final = timedelta(days=MAX_WINDOW_DAYS)
MAX_RADIUS_KM: Final = 100.0
MAX_LIMIT: Final = 100_000
MAX_TEXT_CHARS: Final = 100
MAX_BODY_BYTES: Final = 10 * 1024 * 1024
MAX_JSON_DEPTH: Final = 32

# A positive decimal number and a unit: 12h, 30d, 4w, 1.5d, 90m, 3600s.
DURATION_PATTERN: Final = r"^([0-9]*[1-9][0-9]*(\.[0-9]+)?|[0-9]+\.[0-9]*[1-9][0-9]*)[smhdw]$"
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

# ISO 8601 as datetime.fromisoformat reads it: a date, optionally a time (T or a space),
# optionally seconds, a fraction of up to 6 digits and an offset (Z or ±HH:MM).
SINCE_PATTERN: Final = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?)?$"
)

# One to MAX_TEXT_CHARS characters, none of them a control character (Unicode Cc).
TEXT_PATTERN: Final = r"^[^\u0000-\u001f\u007f-\u009f]+$"


def _any_case(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


# An operator's name in any case, or any 5-6 digit MCC-MNC code.
OPERATOR_PATTERN: Final = (
    "^(" + "|".join(_any_case(name) for name in OPERATOR_NAMES.values()) + "|[0-9]{5,6})$"
)


def _window_text() -> str:
    return f"at most {MAX_WINDOW_DAYS}d (e.g. 12h, 30d, 4w)"


def parse_duration(text: str, *, setting: str = "--window") -> timedelta:
    """``12h`` → 12 hours; a ConfigError for anything else, or longer than MAX_WINDOW."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ConfigError(
            setting, f"cannot read {text!r} as a duration", "write e.g. 12h, 30d or 4w"
        )
    seconds = float(text[:-1]) * _UNIT_S[text[-1]]
    if seconds > MAX_WINDOW.total_seconds():  # also inf, from 400 digits
        raise ConfigError(
            setting, f"{text!r} is longer than {MAX_WINDOW_DAYS} days", _window_text()
        )
    return timedelta(seconds=seconds)


def parse_since(text: str, *, now: datetime, setting: str = "--since") -> datetime:
    """An ISO 8601 date or time in the past MAX_WINDOW (UTC when it has no offset)."""
    hint = "write it as 2026-11-01 or 2026-11-01T08:00:00+07:00"
    if not re.fullmatch(SINCE_PATTERN, text):
        raise ConfigError(setting, f"cannot read {text!r} as a date", hint)
    try:
        start = datetime.fromisoformat(text)
    except ValueError as error:  # 2026-02-30, year 0
        raise ConfigError(setting, f"cannot read {text!r} as a date: {error}", hint) from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    # Aware comparisons subtract offsets without building a datetime, so they cannot
    # overflow; after them the UTC instant is within ten years of now.
    if start >= now:
        raise ConfigError(setting, f"{text} is not in the past", "give an earlier date")
    if start < now - MAX_WINDOW:
        raise ConfigError(
            setting,
            f"{text} is more than {MAX_WINDOW_DAYS} days ago",
            f"a date in the last {MAX_WINDOW_DAYS} days (windows are at most {MAX_WINDOW_DAYS}d)",
        )
    return start


def parse_window(
    since: str | None, window: str | None, *, now: datetime | None = None
) -> TimeWindow:
    """The time window of ``--since``/``since=`` (wins when given) or ``--window``/``window=``."""
    end = now or datetime.now(UTC)
    if since is not None:
        return TimeWindow(parse_since(since, now=end), end)
    return TimeWindow.last(parse_duration("30d" if window is None else window), now=end)


def text_problem(value: str, *, max_chars: int = MAX_TEXT_CHARS) -> str | None:
    """What makes ``value`` unusable as free text (None when it is fine)."""
    if not value:
        return "is empty"
    if len(value) > max_chars:
        return f"is {len(value)} characters long"
    for index, char in enumerate(value):
        category = unicodedata.category(char)
        if category in ("Cc", "Cs"):
            kind = "control character" if category == "Cc" else "lone surrogate"
            return f"has a {kind} (U+{ord(char):04X}) at position {index}"
    return None


def text_allowed(max_chars: int = MAX_TEXT_CHARS) -> str:
    return f"1 to {max_chars} characters, no control characters"


def body_text(data: bytes) -> str:
    """A request body as text: UTF-8, a byte-order mark dropped.

    NUL characters are left to the fields they are in: a name holding one is a rejected
    row (see ``text_problem``), a column nobody reads may hold anything.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(
            "body", f"is not UTF-8 text (byte {error.start})", "UTF-8 CSV or GeoJSON"
        ) from None


def json_document(data: bytes) -> Any:
    """Decode a JSON body nested at most MAX_JSON_DEPTH arrays/objects deep.

    msgspec rejects what is not strict JSON (NaN, lone surrogates, numbers beyond 64
    bits) and raises RecursionError long before the interpreter's stack runs out; the
    walk afterwards measures the depth without recursing.
    """
    too_deep = ConfigError(
        "body",
        f"JSON nested deeper than {MAX_JSON_DEPTH} levels",
        f"a GeoJSON document nested at most {MAX_JSON_DEPTH} arrays/objects deep",
    )
    try:
        document = msgspec.json.decode(data.removeprefix(b"\xef\xbb\xbf"))
    except RecursionError:
        raise too_deep from None
    except msgspec.DecodeError as error:
        raise ConfigError("body", f"invalid JSON: {error}", "GeoJSON") from None
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise too_deep
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
    return document
