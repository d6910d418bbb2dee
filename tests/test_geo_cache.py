"""The web app's answer cache: one computation per key however many ask at once, answers
no older than max_age_s, nothing kept from a failed computation or across a clear()."""

from __future__ import annotations

import threading
import time

import pytest

from geo.cache import AnswerCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_twenty_concurrent_requests_share_one_computation() -> None:
    cache = AnswerCache(60)
    started = threading.Event()
    release = threading.Event()
    answers: list[str] = []

    def slow() -> str:
        started.set()
        assert release.wait(10)
        return "map"

    def request() -> None:
        answers.append(cache.get("map", slow)[0])

    threads = [threading.Thread(target=request) for _ in range(20)]
    threads[0].start()
    assert started.wait(10)
    for thread in threads[1:]:
        thread.start()
    time.sleep(0.2)  # the 19 others are waiting on the first one's computation
    release.set()
    for thread in threads:
        thread.join(10)
    assert answers == ["map"] * 20
    assert cache.computations == 1


def test_an_answer_is_served_until_max_age_then_computed_again() -> None:
    clock = Clock()
    cache = AnswerCache(60, clock=clock)
    values = iter(["first", "second"])
    assert cache.get("k", lambda: next(values)) == ("first", 0.0)
    clock.now += 59.5
    assert cache.get("k", lambda: next(values)) == ("first", 59.5)
    clock.now += 0.5
    assert cache.get("k", lambda: next(values)) == ("second", 0.0)
    assert cache.computations == 2


def test_keys_are_separate_and_the_oldest_is_dropped_beyond_max_entries() -> None:
    cache = AnswerCache(60, max_entries=2)
    for key in ("a", "b", "c"):
        cache.get(key, key.upper)
    assert cache.get("b", lambda: "recomputed")[0] == "B"
    assert cache.get("a", lambda: "recomputed")[0] == "recomputed"


def test_a_failed_computation_is_not_kept_and_waiters_compute_again() -> None:
    cache = AnswerCache(60)

    def boom() -> str:
        raise RuntimeError("database away")

    with pytest.raises(RuntimeError):
        cache.get("k", boom)
    assert cache.get("k", lambda: "fine") == ("fine", 0.0)


def test_clear_forgets_answers_and_drops_one_computed_across_it() -> None:
    cache = AnswerCache(60)
    cache.get("k", lambda: "old")
    cache.clear()
    assert cache.get("k", lambda: "new")[0] == "new"

    def computed_while_data_changes() -> str:
        cache.clear()  # an import lands while this answer is being computed
        return "maybe stale"

    cache.get("j", computed_while_data_changes)
    assert cache.get("j", lambda: "fresh")[0] == "fresh"


def test_max_age_zero_computes_every_time() -> None:
    cache = AnswerCache(0)
    values = iter(range(3))
    assert [cache.get("k", lambda: next(values))[0] for _ in range(3)] == [0, 1, 2]


def test_a_negative_max_age_is_refused() -> None:
    with pytest.raises(ValueError, match="max_age_s must be >= 0"):
        AnswerCache(-1)
