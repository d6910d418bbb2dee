"""``coverwatch demo --now``: the moment the demo replays up to is a parameter.

The demo used to read the wall clock deep inside, so its behaviour depended on the
hour it was started at and no test could choose that hour. Now the moment comes from
``--now`` (``DemoOptions.now`` in Python), defaulting to the real current time, and the
simulated clock runs on in real time from there.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from coverwatch.cli import build_parser
from simulator.demo import DemoOptions, parse_now, simulated_clock

ROOT = Path(__file__).resolve().parent.parent


class FakeMonotonic:
    def __init__(self) -> None:
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds


def test_the_clock_starts_at_now_and_runs_on_in_real_time() -> None:
    monotonic = FakeMonotonic()
    clock = simulated_clock(datetime(2026, 11, 30, 13, 0, tzinfo=UTC), monotonic=monotonic)
    assert clock() == datetime(2026, 11, 30, 13, 0, tzinfo=UTC)
    monotonic.seconds += 90.5
    assert clock() == datetime(2026, 11, 30, 13, 1, 30, 500000, tzinfo=UTC)


def test_the_clock_gives_utc_whatever_offset_now_has() -> None:
    vietnam = timezone(timedelta(hours=7))
    clock = simulated_clock(datetime(2026, 11, 30, 20, 0, tzinfo=vietnam))
    assert clock().utcoffset() == timedelta(0)
    assert clock() - datetime(2026, 11, 30, 13, 0, tzinfo=UTC) < timedelta(seconds=5)


def test_without_now_the_clock_is_the_real_time() -> None:
    assert DemoOptions().now is None
    before = datetime.now(UTC)
    now = simulated_clock(None)()
    assert before <= now <= datetime.now(UTC)


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="UTC offset"):
        simulated_clock(datetime(2026, 11, 30, 13, 0))  # naive on purpose


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-30T13:00:00Z", datetime(2026, 11, 30, 13, 0, tzinfo=UTC)),
        ("2026-11-30T20:00+07:00", datetime(2026, 11, 30, 13, 0, tzinfo=UTC)),
        (" 2026-11-30 13:30:15+00:00 ", datetime(2026, 11, 30, 13, 30, 15, tzinfo=UTC)),
    ],
)
def test_now_is_iso_8601_with_an_offset(text: str, expected: datetime) -> None:
    parsed = parse_now(text)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    ("text", "says"),
    [("2026-11-30T13:00", "no UTC offset"), ("1 pm", "not an ISO 8601 time")],
)
def test_a_now_without_offset_or_unreadable_is_refused(text: str, says: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=says):
        parse_now(text)


def test_demo_command_takes_now_and_documents_it(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    args = parser.parse_args(["demo", "--now", "2026-11-30T13:00:00Z"])
    assert args.now == datetime(2026, 11, 30, 13, 0, tzinfo=UTC)
    assert parser.parse_args(["demo"]).now is None
    with pytest.raises(SystemExit) as refused:
        parser.parse_args(["demo", "--now", "2026-11-30T13:00"])
    assert refused.value.code == 2
    assert "--now: '2026-11-30T13:00' has no UTC offset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--now TIME" in help_text
    assert "(default: the current time)" in help_text


def test_simulator_readme_documents_now() -> None:
    readme = (ROOT / "simulator" / "README.md").read_text(encoding="utf-8")
    assert "--now" in readme
