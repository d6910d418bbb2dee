"""docs/protocol.md stays true to the code (Datasette-style documentation tests)."""

from __future__ import annotations

import re

import msgspec
import pytest

from coverwatch import protocol
from tests.helpers import PROTOCOL_DOC

DOC = PROTOCOL_DOC.read_text()


def documented_fields(section: str) -> set[str]:
    """Field names in the first column of the table under ``### `<kind>` ``."""
    match = re.search(rf"^#+ (?:`{section}`|{section})[ \n].*?\n(.*?)(?=^#)", DOC, re.M | re.S)
    assert match, f"docs/protocol.md has no section for {section}"
    names: set[str] = set()
    for row in re.findall(r"^\| (.+?) \|", match.group(1), re.M):
        names.update(re.findall(r"`([a-z0-9_]+)`", row))
    return names


def own_fields(kind: type[msgspec.Struct]) -> set[str]:
    base = set(protocol.ReadingBase.__struct_fields__)
    return set(kind.__struct_fields__) - base


@pytest.mark.parametrize("kind", sorted(protocol.READING_TYPES))
def test_every_reading_field_is_documented(kind: str) -> None:
    missing = own_fields(protocol.READING_TYPES[kind]) - documented_fields(kind)
    assert not missing, f"document these {kind} fields in docs/protocol.md: {sorted(missing)}"


def test_common_envelope_and_status_fields_are_documented() -> None:
    common = set(protocol.ReadingBase.__struct_fields__) | {"kind"}
    assert common <= documented_fields("Fields of every reading")
    assert set(protocol.ReadingsBatch.__struct_fields__) <= documented_fields("Readings batch")
    assert set(protocol.ProbeStatus.__struct_fields__) <= documented_fields("Status")


def test_documented_limits_match_the_code() -> None:
    assert f"{protocol.MAX_PAYLOAD_BYTES:,} bytes" in DOC
    assert f"{protocol.MAX_READINGS_PER_BATCH:,} readings" in DOC
