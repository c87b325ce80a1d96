"""The shapes that cross module and process boundaries.

Three hops, three shapes:
1. the terminal worker process returns a :class:`FetchResult` of *raw* MT5 records
   (``_asdict()`` of TradeDeal / TradePosition / AccountInfo, times still server epochs);
2. ``mt5_sync.transform`` turns it into validated rows (the TypedDicts below, times in UTC);
3. ``mt5_sync.store`` sends a :class:`CommitPayload` (JSON) to the database function
   ``mt5_commit_account_sync``, which writes everything in one transaction.

Everything here is plain JSON-able data: it is pickled into Prefect's result cache and
written to JSON for the database, so no live objects and no secrets (the password travels
only in :class:`Credentials`, which is never cached or logged).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, NotRequired, TypedDict

Trigger = Literal["scheduled", "manual", "backfill"]
SyncType = Literal["full", "incremental"]
SyncStatus = Literal["processing", "success", "partial", "failed", "deferred", "skipped"]


# ---------------------------------------------------------------- terminal side (raw records)


@dataclass(frozen=True)
class Credentials:
    """What a terminal needs to log in. ``repr`` hides the password."""

    login: int
    server: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class FetchRequest:
    """One account's fetch: account info, open positions and deals in [from, to).

    ``date_from`` / ``date_to`` are *server* epoch seconds (already converted with the
    account's time rule); ``None`` skips the history part. ``as_of_utc`` (ISO 8601, UTC) is
    the moment the window was planned, from the product's clock (:mod:`mt5_sync.clock`): it
    becomes the result's ``fetched_at_utc`` and so the history cursor. ``None`` (a request
    built outside a sync, e.g. a probe) means the worker's own clock at the start of the fetch.
    """

    account_id: str
    credentials: Credentials
    date_from: int | None
    date_to: int | None
    fetch_positions: bool = True
    as_of_utc: str | None = None


@dataclass
class PartError:
    """One part of a fetch (``account``, ``positions``, ``history``) that failed."""

    part: str
    code: str
    message: str
    mt5_code: int | None = None


@dataclass
class FetchResult:
    """Raw MT5 records for one account, plus what failed; ``None`` means "not fetched"."""

    account_id: str
    login: int
    server: str
    fetched_at_utc: str  # ISO 8601 UTC: the request's as_of_utc (the planner's clock)
    account_info: dict[str, Any] | None
    positions: list[dict[str, Any]] | None
    deals: list[dict[str, Any]] | None
    errors: list[PartError] = field(default_factory=list)
    terminal_ms: int = 0
    slot_wait_ms: int = 0  # queued for a free terminal in the calling process (the pool's)
    #: ``history_deals_total(0, date_from - 1)``: deals the terminal holds before the window
    #: (0: the window holds the account's whole history, so the ledger's offset must be 0);
    #: ``None`` when not asked (no history part) or the terminal did not answer
    deals_before_window: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FetchResult:
        data = dict(data)
        data["errors"] = [PartError(**e) for e in data.get("errors", [])]
        return cls(**data)


# ---------------------------------------------------------------- database side (rows)


class AccountRow(TypedDict):
    login: int
    server: str
    name: str
    company: str
    currency: str
    leverage: int
    margin_mode: str  # "hedging" | "netting" | "exchange"
    balance: float
    credit: float
    profit: float
    equity: float
    margin: float
    free_margin: float
    margin_level: float | None


class SnapshotRow(TypedDict):
    taken_at: str  # ISO UTC
    balance: float
    equity: float
    margin: float
    free_margin: float
    margin_level: float | None


class DealRow(TypedDict):
    ticket: int
    order_ticket: int
    position_id: int
    time_utc: str
    time_server: int
    time_msc_server: int
    type: int
    entry: int
    magic: int
    reason: int
    volume: float
    price: float
    commission: float
    swap: float
    profit: float
    fee: float
    symbol: str
    comment: str
    external_id: str


class TradeRow(TypedDict):
    """One position: keyed (account_id, ticket) with ticket = MT5 position id."""

    ticket: int
    symbol: str
    side: str  # "buy" | "sell"
    status: str  # "open" | "closed"
    volume: float  # total volume opened
    open_price: float
    open_time_utc: str
    open_time_server: int
    close_price: float | None
    close_time_utc: str | None
    close_time_server: int | None
    stop_loss: float | None
    take_profit: float | None
    current_price: float | None
    profit: float
    swap: float
    commission: float
    fee: float
    net_profit: float
    magic: int
    comment: str
    deal_count: int


class CashFlowRow(TypedDict):
    deal_ticket: int
    type: int
    kind: str  # "balance", "credit", "charge", "correction", "bonus", "commission", ...
    amount: float
    time_utc: str
    time_server: int
    comment: str


class QuarantineRow(TypedDict):
    kind: str  # "deal" | "position" | "account"
    ticket: int | None
    reasons: str
    record: dict[str, Any]


class CommitPayload(TypedDict):
    """Argument of the database function ``mt5_commit_account_sync(jsonb)``.

    ``open_positions`` / ``account`` / ``snapshot`` are ``None`` when that part was not
    fetched, which leaves the stored values untouched. ``history_cursor`` is ``None`` when the
    cursor must not move (history failed or rows were quarantined).
    """

    sync_id: str
    account_id: str
    execution_id: str | None
    flow_run_id: str | None
    trigger: str
    sync_type: str
    status: str  # "success" | "partial"
    error_message: str | None
    error_code: str | None
    started_at: str
    completed_at: str
    duration_ms: int
    account: AccountRow | None
    snapshot: SnapshotRow | None
    open_positions: list[TradeRow] | None
    closed_trades: list[TradeRow]
    deals: list[DealRow]
    cash_flows: list[CashFlowRow]
    quarantine: list[QuarantineRow]
    history_cursor: str | None
    lease_holder: str | None
    #: ``None`` when the history was not read cleanly (no reconciliation); otherwise
    #: ``{"expected_offset": 0 | None}``: 0 when the window holds the whole history
    ledger: NotRequired[LedgerCheck | None]


class LedgerCheck(TypedDict):
    expected_offset: float | None


class FailurePayload(TypedDict):
    """Argument of ``mt5_record_sync_failure(jsonb)``: written when the main commit did not."""

    sync_id: str
    account_id: str
    execution_id: str | None
    flow_run_id: str | None
    trigger: str
    sync_type: str
    error_code: str
    error_message: str
    started_at: str
    completed_at: str
    duration_ms: int
    lease_holder: str | None
