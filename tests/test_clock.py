"""The product's one clock (mt5_sync.clock): system by default, driven by tests."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest

from mt5_sync import clock

START = datetime(2027, 3, 16, 12, 0, tzinfo=UTC)


def test_the_default_is_the_machine_clock() -> None:
    before = datetime.now(UTC)
    now = clock.utc_now()
    assert before <= now <= datetime.now(UTC)
    assert now.tzinfo is not None and now.utcoffset() == timedelta(0)


def test_a_driven_clock_is_seen_by_every_thread_and_undone_after_the_block() -> None:
    seen: list[datetime] = []
    with clock.driven_by(clock.RunningClock(START)) as driven:
        first = clock.utc_now()
        worker = threading.Thread(target=lambda: seen.append(clock.utc_now()))
        worker.start()
        worker.join()
        assert clock.current() is driven
        last = clock.utc_now()
    assert START <= first <= seen[0] <= last  # it runs from START, never backwards
    assert last - START < timedelta(days=1)  # and is not the machine's date
    assert isinstance(clock.current(), clock.SystemClock)


def test_set_jumps_and_keeps_running_from_there() -> None:
    running = clock.RunningClock(START)
    later = START + timedelta(hours=30)
    running.set(later)
    assert later <= running.now() < later + timedelta(hours=1)


def test_instants_are_normalised_to_utc_and_naive_ones_refused() -> None:
    plus_three = timezone(timedelta(hours=3))
    running = clock.RunningClock(datetime(2027, 7, 15, 15, 0, tzinfo=plus_three))
    assert running.now().tzinfo is UTC and running.now() >= datetime(2027, 7, 15, 12, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        clock.RunningClock(datetime(2027, 7, 15, 12, 0))
