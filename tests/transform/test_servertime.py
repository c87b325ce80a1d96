"""mt5_sync.servertime: trade-server wall clock <-> true UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mt5_sync.servertime import InvalidTimeRule, ServerTimeRule

NY7 = ServerTimeRule.parse("ny+7")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def server(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    """Server wall clock written as epoch seconds (what MT5 reports)."""
    return int(utc(year, month, day, hour, minute).timestamp())


def test_ny7_is_utc_plus_2_in_january_and_plus_3_in_july():
    assert NY7.to_utc(server(2026, 1, 15, 15, 0)) == utc(2026, 1, 15, 13, 0)
    assert NY7.to_utc(server(2026, 7, 1, 15, 0)) == utc(2026, 7, 1, 12, 0)
    assert NY7.offset_at_utc(utc(2026, 1, 15)) == timedelta(hours=2)
    assert NY7.offset_at_utc(utc(2026, 7, 1)) == timedelta(hours=3)


@pytest.mark.parametrize(
    ("moment", "hours"),
    [
        # US DST starts 2026-03-08 (2nd Sunday of March) at 02:00 New York = 07:00 UTC
        (utc(2026, 3, 8, 6, 59, 59), 2),
        (utc(2026, 3, 8, 7, 0, 0), 3),
        # between the US and the EU switches (EU: 2026-03-29) the server is already on +3
        (utc(2026, 3, 20, 12), 3),
        (utc(2026, 3, 29, 12), 3),
        # EU summer time ends 2026-10-25 but New York stays on daylight time until
        # 2026-11-01 (1st Sunday of November) 02:00 EDT = 06:00 UTC
        (utc(2026, 10, 28, 12), 3),
        (utc(2026, 11, 1, 5, 59, 59), 3),
        (utc(2026, 11, 1, 6, 0, 0), 2),
        # another year: 2025-03-09 and 2025-11-02
        (utc(2025, 3, 9, 6, 59), 2),
        (utc(2025, 3, 9, 7, 0), 3),
        (utc(2025, 11, 2, 5, 59), 3),
        (utc(2025, 11, 2, 6, 0), 2),
    ],
)
def test_ny7_switches_on_us_dst_dates_not_eu_dates(moment: datetime, hours: int):
    assert NY7.offset_at_utc(moment) == timedelta(hours=hours)
    assert NY7.to_server_epoch(moment) == int(moment.timestamp()) + hours * 3600
    repeated_hour = moment.month == 11 and moment.hour == 6  # second pass of server 08:xx
    if not repeated_hour:
        assert NY7.to_utc(NY7.to_server_epoch(moment)) == moment


def test_ny7_repeated_hour_reads_as_the_earlier_instant():
    # 2026-11-01: server wall 08:00-08:59 happens twice (at +3, then at +2)
    assert NY7.to_utc(server(2026, 11, 1, 8, 30)) == utc(2026, 11, 1, 5, 30)
    assert NY7.to_server_epoch(utc(2026, 11, 1, 5, 30)) == server(2026, 11, 1, 8, 30)
    assert NY7.to_server_epoch(utc(2026, 11, 1, 6, 30)) == server(2026, 11, 1, 8, 30)


def test_round_trip_every_hour_of_a_year():
    start = utc(2026, 1, 1)
    for hour in range(0, 365 * 24):
        moment = start + timedelta(hours=hour, minutes=17, seconds=3)
        if NY7.to_utc(NY7.to_server_epoch(moment)) != moment:
            # only the second pass through the repeated November hour may not round-trip
            assert (moment.month, moment.day, moment.hour) == (11, 1, 6)
    for epoch in range(server(2026, 1, 1), server(2027, 1, 1), 7 * 3600 + 11):
        # every server time that exists maps back to itself
        if server(2026, 3, 8, 9) <= epoch < server(2026, 3, 8, 10):
            continue  # skipped hour: never shown by a ny+7 server
        assert NY7.to_server_epoch(NY7.to_utc(epoch)) == epoch


def test_to_utc_msc_keeps_milliseconds():
    ms = server(2026, 7, 1, 15, 0) * 1000 + 123
    assert NY7.to_utc_msc(ms) == utc(2026, 7, 1, 12, 0) + timedelta(milliseconds=123)


@pytest.mark.parametrize(
    ("rule", "hours"),
    [("utc", 0), ("fixed:0", 0), ("fixed:+2", 2), ("fixed:+3", 3), ("fixed:-3.5", -3.5),
     ("FIXED:+2", 2)],
)  # fmt: skip
def test_fixed_offsets(rule: str, hours: float):
    parsed = ServerTimeRule.parse(rule)
    assert parsed.kind == "fixed"
    for moment in (utc(2026, 1, 15, 12), utc(2026, 7, 1, 12)):  # no DST for fixed rules
        shift = timedelta(hours=hours)
        assert parsed.offset_at_utc(moment) == shift
        assert parsed.to_server_epoch(moment) == int((moment + shift).timestamp())
        assert parsed.to_utc(parsed.to_server_epoch(moment)) == moment


def test_rule_text_round_trip():
    for text in ("ny+7", "fixed:+2", "fixed:-3.5", "ny-1"):
        assert str(ServerTimeRule.parse(text)) == text
    assert str(ServerTimeRule.parse("utc")) == "fixed:+0"


@pytest.mark.parametrize("bad", ["", "   ", "ny", "gmt+2", "fixed:", "fixed:abc", "ny+x", "EET"])
def test_bad_rule_raises_invalid_time_rule(bad: str):
    with pytest.raises(InvalidTimeRule):
        ServerTimeRule.parse(bad)


def test_invalid_time_rule_is_a_value_error():
    assert issubclass(InvalidTimeRule, ValueError)


def test_to_server_epoch_needs_an_aware_datetime():
    with pytest.raises(ValueError):
        NY7.to_server_epoch(datetime(2026, 7, 1, 12, 0))
