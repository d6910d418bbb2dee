"""Big answers compressed once, when they are computed, not once per request.

``/api/villages`` for a province of 10,000 villages is ~12 MB of GeoJSON and the map page
~2 MB; gzip makes them 8-10x smaller, which is what decides how long twenty officers on a
provincial office's link wait (bench/geo.py). The answer cache keeps both forms, so a
cached answer costs no compression at all; a client that does not say
``Accept-Encoding: gzip`` gets the plain bytes.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass

# Level 6 (gzip's default): level 9 saves ~3 % more for twice the CPU.
GZIP_LEVEL = 6
_CODING = re.compile(r"^\s*([A-Za-z0-9*_-]+)\s*(?:;\s*q\s*=\s*([0-9.]+))?\s*$")


@dataclass(frozen=True, slots=True)
class Encoded:
    """An answer's bytes as they are and gzipped."""

    identity: bytes
    gzipped: bytes

    @classmethod
    def of(cls, body: bytes) -> Encoded:
        # mtime=0: the same answer always compresses to the same bytes.
        return cls(body, gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0))


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header admits gzip (RFC 9110 §12.5.3): ``gzip``
    or ``*`` with a non-zero quality, unless gzip itself is refused with ``q=0``.
    Unparseable parts are ignored."""
    if not accept_encoding:
        return False
    qualities: dict[str, float] = {}
    for part in accept_encoding.split(","):
        match = _CODING.match(part)
        if match is None:
            continue
        try:
            quality = float(match.group(2)) if match.group(2) is not None else 1.0
        except ValueError:
            continue
        qualities[match.group(1).lower()] = quality
    if "gzip" in qualities:
        return qualities["gzip"] > 0
    if "x-gzip" in qualities:
        return qualities["x-gzip"] > 0
    return qualities.get("*", 0.0) > 0
