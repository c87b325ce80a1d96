"""Validation schemas for raw MT5 records (pandera), with a readable message per check.

Each structure (TradeDeal, TradePosition, AccountInfo) is described by a :class:`RecordSpec`:
the structure's field order (from the MetaTrader5 5.0.6231 wheel), which fields are integers,
floats or strings, and a list of :class:`Rule` objects. The pandera ``DataFrameSchema`` is
built from the rules, so the name of every pandera check maps back to one human sentence used
in quarantine ``reasons``.

The frames these schemas validate are already *coerced* by ``records.py``: integer columns are
``int64`` (or nullable ``Int64`` when some value was not an integer), float columns ``float64``
and string columns hold ``str`` or a missing value. A value of the wrong type becomes missing
and fails the column's ``not_nullable`` check, so type errors and value errors are reported
through the same pandera failure cases.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

# ---------------------------------------------------------------- MT5 structure fields

#: Field order of ``TradeDeal`` (reference/metatrader5-5.0.6231.json).
DEAL_FIELDS: tuple[str, ...] = (
    "ticket", "order", "time", "time_msc", "type", "entry", "magic", "position_id", "reason",
    "volume", "price", "commission", "swap", "profit", "fee", "symbol", "comment", "external_id",
)  # fmt: skip

#: Field order of ``TradePosition``.
POSITION_FIELDS: tuple[str, ...] = (
    "ticket", "time", "time_msc", "time_update", "time_update_msc", "type", "magic",
    "identifier", "reason", "volume", "price_open", "sl", "tp", "price_current", "swap",
    "profit", "symbol", "comment", "external_id",
)  # fmt: skip

#: Field order of ``AccountInfo``.
ACCOUNT_FIELDS: tuple[str, ...] = (
    "login", "trade_mode", "leverage", "limit_orders", "margin_so_mode", "trade_allowed",
    "trade_expert", "margin_mode", "currency_digits", "fifo_close", "balance", "credit",
    "profit", "equity", "margin", "margin_free", "margin_level", "margin_so_call",
    "margin_so_so", "margin_initial", "margin_maintenance", "assets", "liabilities",
    "commission_blocked", "name", "server", "currency", "company",
)  # fmt: skip

# ---------------------------------------------------------------- MT5 constants used here

DEAL_TYPE_BUY = 0
DEAL_TYPE_SELL = 1
DEAL_TYPE_BUY_CANCELED = 13
DEAL_TYPE_SELL_CANCELED = 14
KNOWN_DEAL_TYPES = frozenset(range(18))  # DEAL_TYPE_BUY (0) .. DEAL_TAX (17)
TRADE_DEAL_TYPES = (DEAL_TYPE_BUY, DEAL_TYPE_SELL)
#: Deal types that carry a symbol: trades and their cancelled versions.
SYMBOL_DEAL_TYPES = (DEAL_TYPE_BUY, DEAL_TYPE_SELL, DEAL_TYPE_BUY_CANCELED, DEAL_TYPE_SELL_CANCELED)

DEAL_ENTRY_IN = 0
DEAL_ENTRY_OUT = 1
DEAL_ENTRY_INOUT = 2
DEAL_ENTRY_OUT_BY = 3

#: Deal type -> cash-flow kind (types 2..12 and 15..17 are not trades).
CASH_FLOW_KINDS: dict[int, str] = {
    2: "balance",
    3: "credit",
    4: "charge",
    5: "correction",
    6: "bonus",
    7: "commission",
    8: "commission_daily",
    9: "commission_monthly",
    10: "commission_agent_daily",
    11: "commission_agent_monthly",
    12: "interest",
    15: "dividend",
    16: "dividend_franked",
    17: "tax",
}

#: ACCOUNT_MARGIN_MODE_* values.
MARGIN_MODES: dict[int, str] = {0: "netting", 1: "exchange", 2: "hedging"}

#: Plausible trade-server epochs: after 2000-01-01 and before 2100-01-01.
MIN_EPOCH = 946_684_800
MAX_EPOCH = 4_102_444_800

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# ---------------------------------------------------------------- rules

CheckFn = Callable[[Any], Any]


@dataclass(frozen=True)
class Rule:
    """One validation check and the sentence that explains its failure.

    ``column`` set: a column check receiving the Series; ``None``: a frame-wide check
    receiving the DataFrame. ``shows`` names the column whose raw value is quoted as
    ``(got ...)`` in the reason.
    """

    name: str
    message: str
    fn: CheckFn
    column: str | None = None
    shows: str | None = None


@dataclass(frozen=True)
class RecordSpec:
    """What one raw MT5 structure must look like."""

    kind: str  # "deal" | "position" | "account" (QuarantineRow.kind)
    fields: tuple[str, ...]  # keys every raw record must have
    ints: tuple[str, ...]
    floats: tuple[str, ...]
    strs: tuple[str, ...]
    rules: tuple[Rule, ...]
    ticket_field: str | None
    schema: pa.DataFrameSchema = field(init=False, repr=False, compare=False)
    rules_by_name: dict[str, Rule] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "schema", _build_schema(self))
        object.__setattr__(self, "rules_by_name", {r.name: r for r in self.rules})

    @property
    def columns(self) -> tuple[str, ...]:
        """The validated (typed) columns, in structure order."""
        typed = set(self.ints) | set(self.floats) | set(self.strs)
        return tuple(f for f in self.fields if f in typed)

    def type_of(self, column: str) -> str:
        if column in self.ints:
            return "integer"
        if column in self.floats:
            return "number"
        return "string"


def _build_schema(spec: RecordSpec) -> pa.DataFrameSchema:
    column_checks: dict[str, list[pa.Check]] = {c: [] for c in spec.columns}
    frame_checks: list[pa.Check] = []
    for rule in spec.rules:
        # frame-wide checks handle missing values themselves; ignore_na there would make
        # pandera compute isna() over the whole frame once per check
        check = pa.Check(rule.fn, name=rule.name, ignore_na=rule.column is not None)
        if rule.column is None:
            frame_checks.append(check)
        else:
            column_checks[rule.column].append(check)
    columns = {
        c: pa.Column(dtype=None, nullable=False, checks=column_checks[c], required=True)
        for c in spec.columns
    }
    return pa.DataFrameSchema(columns, checks=frame_checks, strict=False, name=spec.kind)


# -- small check builders (vectorised; NaN-tolerant where a NaN is reported elsewhere)


def _positive(col: str) -> Rule:
    return Rule(f"{col}_positive", f"{col} must be > 0", lambda s: s > 0, col, col)


def _non_negative(col: str) -> Rule:
    return Rule(f"{col}_non_negative", f"{col} must be >= 0", lambda s: s >= 0, col, col)


def _finite(col: str) -> Rule:
    return Rule(
        f"{col}_finite",
        f"{col} is not a finite number",
        lambda s: pd.Series(np.isfinite(s.to_numpy(dtype="float64")), index=s.index),
        col,
        col,
    )


def _one_of(col: str, values: frozenset[int] | tuple[int, ...], what: str) -> Rule:
    allowed = sorted(values)
    return Rule(f"{col}_known", f"{col} is not a known {what}", lambda s: s.isin(allowed), col, col)


def _plausible_time(col: str) -> Rule:
    return Rule(
        f"{col}_plausible",
        f"{col} is not a plausible server time (2000..2100)",
        lambda s: (s > MIN_EPOCH) & (s < MAX_EPOCH),
        col,
        col,
    )


def _msc_consistent(sec: str, msc: str) -> Rule:
    def check(df: pd.DataFrame) -> pd.Series:
        a, b = df[sec], df[msc]
        ok = ((b // 1000) - a).abs() <= 1
        return ok | a.isna() | b.isna()

    return Rule(f"{msc}_consistent", f"{msc} does not match {sec} (±1 s)", check, None, msc)


def nonblank(s: pd.Series) -> pd.Series:
    """True where the value is a string with a non-space character (judged per distinct
    value: a backfill has 200,000 deals but only a handful of symbols)."""
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    ok = np.array([isinstance(u, str) and bool(u.strip()) for u in uniques] + [False], bool)
    return pd.Series(ok[codes], index=s.index)  # code -1 (missing) -> the trailing False


def _non_empty(col: str) -> Rule:
    return Rule(f"{col}_non_empty", f"{col} is empty", nonblank, col, col)


def _when_types(
    name: str, message: str, types: tuple[int, ...], col: str, cond: Callable[[pd.Series], Any]
) -> Rule:
    """A check on ``col`` that applies only to deals whose ``type`` is in ``types``."""

    def check(df: pd.DataFrame) -> pd.Series:
        s = df[col]
        applies = df["type"].isin(types)
        return ~applies | s.isna() | df["type"].isna() | cond(s)

    return Rule(name, message, check, None, col)


# ---------------------------------------------------------------- TradeDeal

DEAL_SPEC = RecordSpec(
    kind="deal",
    fields=DEAL_FIELDS,
    ints=("ticket", "order", "time", "time_msc", "type", "entry", "magic", "position_id",
          "reason"),
    floats=("volume", "price", "commission", "swap", "profit", "fee"),
    strs=("symbol", "comment", "external_id"),
    ticket_field="ticket",
    rules=(
        _positive("ticket"),
        _non_negative("order"),
        _plausible_time("time"),
        _msc_consistent("time", "time_msc"),
        _one_of("type", KNOWN_DEAL_TYPES, "deal type (0..17)"),
        _one_of("entry", (0, 1, 2, 3), "deal entry (0..3)"),
        _non_negative("position_id"),
        _finite("volume"),
        _non_negative("volume"),
        _finite("price"),
        _non_negative("price"),
        _finite("commission"),
        _finite("swap"),
        _finite("profit"),
        _finite("fee"),
        _when_types("trade_volume", "volume must be > 0 for BUY/SELL deals",
                    TRADE_DEAL_TYPES, "volume", lambda s: s > 0),
        _when_types("trade_price", "price must be > 0 for BUY/SELL deals",
                    TRADE_DEAL_TYPES, "price", lambda s: s > 0),
        _when_types("trade_position", "position_id must be > 0 for BUY/SELL deals",
                    TRADE_DEAL_TYPES, "position_id", lambda s: s > 0),
        _when_types("trade_symbol", "symbol is empty for a trade deal",
                    SYMBOL_DEAL_TYPES, "symbol", nonblank),
    ),
)  # fmt: skip

# ---------------------------------------------------------------- TradePosition

POSITION_SPEC = RecordSpec(
    kind="position",
    fields=POSITION_FIELDS,
    ints=("ticket", "time", "time_msc", "time_update", "time_update_msc", "type", "magic",
          "identifier", "reason"),
    floats=("volume", "price_open", "sl", "tp", "price_current", "swap", "profit"),
    strs=("symbol", "comment", "external_id"),
    ticket_field="ticket",
    rules=(
        _positive("ticket"),
        _plausible_time("time"),
        _msc_consistent("time", "time_msc"),
        _one_of("type", (0, 1), "position type (0 buy, 1 sell)"),
        _positive("identifier"),
        _finite("volume"),
        _positive("volume"),
        _finite("price_open"),
        _positive("price_open"),
        _finite("sl"),
        _non_negative("sl"),
        _finite("tp"),
        _non_negative("tp"),
        _finite("price_current"),
        _non_negative("price_current"),
        _finite("swap"),
        _finite("profit"),
        _non_empty("symbol"),
    ),
)  # fmt: skip

# ---------------------------------------------------------------- AccountInfo

ACCOUNT_SPEC = RecordSpec(
    kind="account",
    fields=ACCOUNT_FIELDS,
    ints=("login", "leverage", "margin_mode"),
    floats=("balance", "credit", "profit", "equity", "margin", "margin_free", "margin_level"),
    strs=("name", "server", "currency", "company"),
    ticket_field=None,
    rules=(
        _positive("login"),
        _non_negative("leverage"),
        _one_of("margin_mode", frozenset(MARGIN_MODES), "margin mode (0..2)"),
        _finite("balance"),
        _finite("credit"),
        _finite("profit"),
        _finite("equity"),
        _finite("margin"),
        _finite("margin_free"),
        _finite("margin_level"),
    ),
)

SPECS: dict[str, RecordSpec] = {s.kind: s for s in (DEAL_SPEC, POSITION_SPEC, ACCOUNT_SPEC)}
