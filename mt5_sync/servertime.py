"""Trade-server wall clock <-> true UTC.

MT5 reports deal and position times as the trade server's *wall clock* written as if it were
UTC epoch seconds. Most brokers run on "New York + 7h" (UTC+2 in the northern winter, UTC+3
while the US is on daylight time), some on a fixed offset. Storing those numbers as UTC would
shift every trade by two or three hours, so each account carries its server's rule and every
time is converted here, in one place, in both directions.

Rules are written as short strings so they fit one database column:
``utc``, ``fixed:+2``, ``fixed:-3.5`` (hours), ``ny+7`` (New York wall time plus 7 hours).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

_NEW_YORK = ZoneInfo("America/New_York")
_FIXED = re.compile(r"^fixed:([+-]\d+(?:\.\d+)?)$")
_NY = re.compile(r"^ny([+-]\d+(?:\.\d+)?)$")


class InvalidTimeRule(ValueError):
    """The account's server time rule cannot be parsed."""


@dataclass(frozen=True)
class ServerTimeRule:
    """How one trade server's wall clock relates to UTC."""

    kind: str  # "fixed" or "ny"
    hours: float

    @classmethod
    def parse(cls, text: str) -> ServerTimeRule:
        value = (text or "").strip().lower()
        if value in ("utc", "fixed:0", "fixed:+0"):
            return cls("fixed", 0.0)
        if m := _FIXED.match(value):
            return cls("fixed", float(m.group(1)))
        if m := _NY.match(value):
            return cls("ny", float(m.group(1)))
        raise InvalidTimeRule(
            f"unknown server time rule {text!r}; expected 'utc', 'fixed:+H' or 'ny+H'"
        )

    def __str__(self) -> str:
        sign = "+" if self.hours >= 0 else "-"
        hours = f"{abs(self.hours):g}"
        return f"fixed:{sign}{hours}" if self.kind == "fixed" else f"ny{sign}{hours}"

    def offset_at_utc(self, moment: datetime) -> timedelta:
        """Server wall clock minus UTC at a true UTC instant."""
        shift = timedelta(hours=self.hours)
        if self.kind == "fixed":
            return shift
        utc_offset = moment.astimezone(_NEW_YORK).utcoffset()
        assert utc_offset is not None
        return utc_offset + shift

    def to_server_epoch(self, moment: datetime) -> int:
        """True UTC instant -> the integer MT5 would show (server wall clock as epoch)."""
        if moment.tzinfo is None:
            raise ValueError("to_server_epoch needs an aware datetime")
        wall = moment.astimezone(UTC) + self.offset_at_utc(moment)
        return int(wall.timestamp())

    def to_utc(self, server_epoch: float) -> datetime:
        """MT5 server epoch seconds -> true UTC instant.

        For "ny" rules the server wall clock repeats an hour when New York leaves daylight
        time; such times are read as the earlier (daylight) instant, as the terminal does.
        """
        wall = datetime.fromtimestamp(server_epoch, tz=UTC).replace(tzinfo=None)
        if self.kind == "fixed":
            return (wall - timedelta(hours=self.hours)).replace(tzinfo=UTC)
        ny_wall = (wall - timedelta(hours=self.hours)).replace(tzinfo=_NEW_YORK, fold=0)
        return ny_wall.astimezone(UTC)

    def to_utc_msc(self, server_epoch_msc: int) -> datetime:
        """Millisecond server epoch (``time_msc``) -> true UTC instant."""
        seconds, millis = divmod(int(server_epoch_msc), 1000)
        return self.to_utc(seconds) + timedelta(milliseconds=millis)
