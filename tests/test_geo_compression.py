"""Which clients get gzip: the Accept-Encoding header as RFC 9110 reads it."""

from __future__ import annotations

import gzip

import pytest

from geo.compression import Encoded, accepts_gzip


@pytest.mark.parametrize(
    ("header", "gzip_ok"),
    [
        (None, False),
        ("", False),
        ("identity", False),
        ("gzip", True),
        ("GZIP", True),
        ("gzip, deflate, br, zstd", True),  # Chromium
        ("deflate, gzip;q=1.0, *;q=0.5", True),  # curl --compressed and the like
        ("br;q=1, gzip;q=0.001", True),
        ("gzip;q=0", False),
        ("gzip;q=0.0, *", False),  # refused by name: the wildcard does not bring it back
        ("*", True),
        ("*;q=0", False),
        ("x-gzip", True),
        ("gzip;q=abc", False),  # unparseable quality: the part is ignored
        ("gzip;q=1.2.3, identity", False),
        (",,;;==\x00gzip", False),
        ("\udcff", False),
        ("gzip" * 2000, False),
    ],
)
def test_accepts_gzip(header: str | None, gzip_ok: bool) -> None:
    assert accepts_gzip(header) is gzip_ok


def test_an_answer_is_compressed_once_and_always_to_the_same_bytes() -> None:
    body = b'{"type":"FeatureCollection","features":[]}' * 1000
    encoded = Encoded.of(body)
    assert gzip.decompress(encoded.gzipped) == encoded.identity == body
    assert Encoded.of(body).gzipped == encoded.gzipped  # no timestamp in the header
    assert len(encoded.gzipped) < len(body) / 10
