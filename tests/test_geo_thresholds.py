"""Signal classes follow the documented Android thresholds; bad overrides are refused."""

from __future__ import annotations

import pytest

from coverwatch.errors import ConfigError
from geo.thresholds import DEFAULT_THRESHOLDS, Band, parse_threshold


@pytest.mark.parametrize(
    ("technology", "dbm", "expected"),
    [
        ("lte", -85, "good"),
        ("lte", -95, "good"),
        ("lte", -95.5, "fair"),
        ("lte", -105, "fair"),
        ("lte", -115, "poor"),
        ("lte", -115.1, "none"),
        ("nr5g", -100, "fair"),
        ("umts", -106, "poor"),
        ("gsm", -97, "good"),
        ("gsm", -103, "fair"),
        ("gsm", -107, "poor"),
        ("gsm", -108, "none"),
        ("lte", None, "poor"),
        (None, None, "poor"),
    ],
)
def test_classes(technology: str | None, dbm: float | None, expected: str) -> None:
    assert DEFAULT_THRESHOLDS.classify(technology, dbm) == expected


def test_not_registered_is_none_whatever_the_signal() -> None:
    assert DEFAULT_THRESHOLDS.classify("lte", -60, registered=False) == "none"


def test_every_default_names_its_source() -> None:
    assert all(band.source for band in DEFAULT_THRESHOLDS.bands.values())


def test_overrides() -> None:
    assert parse_threshold("LTE=-108,-118,-128") == ("lte", Band(-108, -118, -128, "command line"))
    with pytest.raises(ConfigError, match="descending"):
        parse_threshold("lte=-118,-108,-128")
    with pytest.raises(ConfigError, match="TECHNOLOGY=GOOD,FAIR,POOR"):
        parse_threshold("lte=-108")
    with pytest.raises(ConfigError, match="unknown technology 'wifi'"):
        DEFAULT_THRESHOLDS.with_overrides(dict([parse_threshold("wifi=-1,-2,-3")]))
