"""A deterministic market: one price path per (world seed, symbol), shared by every account.

Profits in the simulated ledger are computed from these prices, so the whole ledger is
reproducible from the seed alone. The path is a sum of slow sines (trend, swings, intraday)
plus hash-based noise keyed on the minute, cheap enough to evaluate per deal.
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache
from typing import NamedTuple

_MASK64 = (1 << 64) - 1
_TWO_PI = 2.0 * math.pi
_PERIODS_S = (23.0 * 86400.0, 3.3 * 86400.0, 6.1 * 3600.0)
_WEIGHTS = (0.6, 0.3, 0.1)
_NOISE = 0.0006
_NOISE_SCALE = 2.0 * _NOISE / 0xFFFFFFFF


class SymbolSpec(NamedTuple):
    """What the ledger needs to know about one tradable symbol."""

    name: str
    base_price: float
    digits: int
    contract_size: float
    spread_points: int
    quote_is_usd: bool  # XXXUSD: profit already in USD; USDXXX: divide by price
    amplitude: float  # relative size of the slow swings
    swap_long: float  # account money per lot per night
    swap_short: float


SYMBOLS: dict[str, SymbolSpec] = {
    s.name: s
    for s in (
        SymbolSpec("EURUSD", 1.0850, 5, 100_000.0, 12, True, 0.03, -7.2, 1.9),
        SymbolSpec("GBPUSD", 1.2700, 5, 100_000.0, 15, True, 0.035, -5.1, -0.8),
        SymbolSpec("USDJPY", 150.20, 3, 100_000.0, 14, False, 0.035, 12.3, -25.4),
        SymbolSpec("XAUUSD", 2350.00, 2, 100.0, 30, True, 0.06, -35.0, 12.0),
        SymbolSpec("AUDUSD", 0.6600, 5, 100_000.0, 14, True, 0.03, -3.2, -1.1),
        SymbolSpec("USDCAD", 1.3600, 5, 100_000.0, 18, False, 0.025, 2.4, -6.8),
        SymbolSpec("USDCHF", 0.8900, 5, 100_000.0, 16, False, 0.03, 4.1, -9.3),
    )
}


def _mix32(value: int) -> int:
    """A 32-bit integer hash (murmur3 finaliser); small ints keep CPython on its fast path."""
    h = value & 0xFFFFFFFF
    h = ((h ^ (h >> 16)) * 0x85EBCA6B) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def _mix64(value: int) -> int:
    """splitmix64 finaliser: a fast, well-spread integer hash."""
    z = (value + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


class PricePath:
    """Bid/ask of one symbol at any instant (epoch seconds, true UTC)."""

    def __init__(self, seed: int, symbol: str) -> None:
        self.spec = SYMBOLS[symbol]
        digest = hashlib.blake2b(f"{seed}:{symbol}".encode(), digest_size=8).digest()
        self._key = int.from_bytes(digest, "big")
        self._key32 = self._key & 0xFFFFFFFF
        p0, p1, p2 = ((_mix64(self._key + i) / _MASK64) * _TWO_PI for i in range(3))
        self._phases = (p0, p1, p2)
        self._omegas = (_TWO_PI / _PERIODS_S[0], _TWO_PI / _PERIODS_S[1], _TWO_PI / _PERIODS_S[2])
        self._half_spread = self.spec.spread_points * 10.0**-self.spec.digits / 2.0
        self._base, self._amplitude = self.spec.base_price, self.spec.amplitude

    def mid(self, t: float) -> float:
        w0, w1, w2 = self._omegas
        p0, p1, p2 = self._phases
        swing = (
            _WEIGHTS[0] * math.sin(w0 * t + p0)
            + _WEIGHTS[1] * math.sin(w1 * t + p1)
            + _WEIGHTS[2] * math.sin(w2 * t + p2)
        )
        noise = _mix32(self._key32 ^ int(t // 60.0) * 0x9E3779B1) * _NOISE_SCALE - _NOISE
        return self._base * (1.0 + self._amplitude * swing + noise)

    def quote(self, t: float) -> tuple[float, float]:
        """(bid, ask) rounded to the symbol's digits."""
        mid = self.mid(t)
        digits = self.spec.digits
        return round(mid - self._half_spread, digits), round(mid + self._half_spread, digits)

    def fill(self, t: float, buy: bool) -> float:
        """The price a market order gets: ask when buying, bid when selling."""
        mid = self.mid(t)
        return round(mid + self._half_spread if buy else mid - self._half_spread, self.spec.digits)

    def to_account(self, price_move: float, volume: float, price: float) -> float:
        """Money (account currency, USD assumed) of a price move on ``volume`` lots."""
        money = price_move * volume * self.spec.contract_size
        return money if self.spec.quote_is_usd else money / price

    def margin(self, volume: float, price: float, leverage: int) -> float:
        notional = volume * self.spec.contract_size * (price if self.spec.quote_is_usd else 1.0)
        return notional / max(leverage, 1)


@lru_cache(maxsize=1024)
def price_path(seed: int, symbol: str) -> PricePath:
    """The shared path for ``symbol`` in the world with ``seed``."""
    return PricePath(seed, symbol)
