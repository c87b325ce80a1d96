"""The broker comparison reads deal times the way the product must: through the server clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mt5_sync.servertime import ServerTimeRule
from mt5_sync.verify import as_the_terminal_reads

NY7 = ServerTimeRule.parse("ny+7")


def test_times_outside_a_repeated_hour_read_back_unchanged() -> None:
    for moment in (datetime(2027, 3, 16, 12, 0, 1, 250000, tzinfo=UTC),
                   datetime(2027, 7, 15, 23, 59, 59, 999000, tzinfo=UTC),
                   datetime(2027, 11, 7, 4, 59, 59, tzinfo=UTC)):
        assert as_the_terminal_reads(NY7, moment) == moment
        assert as_the_terminal_reads(ServerTimeRule.parse("fixed:+2"), moment) == moment


def test_the_second_pass_of_the_repeated_hour_reads_as_the_first() -> None:
    # 2027-11-07: New York leaves daylight time at 06:00 UTC; NY+7 server wall-clock
    # 08:00-08:59 happens at 05:xx UTC (+3) and again at 06:xx UTC (+2).
    second_pass = datetime(2027, 11, 7, 6, 55, 5, 720000, tzinfo=UTC)
    assert as_the_terminal_reads(NY7, second_pass) == second_pass - timedelta(hours=1)
    first_pass = datetime(2027, 11, 7, 5, 55, 5, 720000, tzinfo=UTC)
    assert as_the_terminal_reads(NY7, first_pass) == first_pass
