"""One account's :class:`FetchResult` (raw MT5 records) -> :class:`CommitPayload` (JSON rows).

Status rules:

- ``success``: every fetch part succeeded, nothing was quarantined, no position incomplete;
- ``partial``: anything else that still has something to commit;
- nothing fetched at all (account info, positions and deals all ``None``): the sync failed,
  a :class:`~mt5_sync.errors.SyncError` (the class matching the first part error's code) is
  raised and the caller records the failure instead.

The history cursor moves to the newest deal time read (never past ``fetched_at_utc``) only when
the deals were fetched, no deal was quarantined, no position is incomplete and no history part
reported an error (and the database keeps it in place on a ledger gap): the cursor never moves
past data that was not committed (the next run re-fetches that window; upserts make the
overlap harmless).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from mt5_sync import errors
from mt5_sync.contracts import (
    AccountRow,
    CommitPayload,
    DealRow,
    FetchResult,
    LedgerCheck,
    PartError,
    QuarantineRow,
    SnapshotRow,
    TradeRow,
)
from mt5_sync.servertime import InvalidTimeRule, ServerTimeRule
from mt5_sync.transform.records import (
    account_frame,
    deals_frame,
    positions_frame,
    quarantined_position_ids,
    to_account_row,
    to_cash_flow_rows,
    to_deal_rows,
    to_snapshot_row,
)
from mt5_sync.transform.trades import build_trades

ERROR_MESSAGE_MAX = 500
#: error_code when only records were bad (no part failed)
INVALID_RECORDS = "invalid_records"
#: error_code when only some positions' deal sets were incomplete
INCOMPLETE_HISTORY = "incomplete_history"
#: fetch parts whose failure means the history was not (fully) fetched
HISTORY_PARTS = frozenset({"history", "deals"})


@dataclass
class SyncContext:
    """Who and what this sync is (ids for the sync log, the account's server time rule)."""

    sync_id: str
    account_id: str
    execution_id: str | None
    flow_run_id: str | None
    trigger: str
    sync_type: str
    started_at: datetime
    time_rule: str
    lease_holder: str | None = None


@dataclass
class TransformReport:
    """Counts for logging and the cycle summary."""

    deals: int = 0
    cash_flows: int = 0
    trades_open: int = 0
    trades_closed: int = 0
    quarantined: int = 0
    quarantined_by_kind: dict[str, int] = field(default_factory=dict)
    duplicate_deals: int = 0
    incomplete_positions: list[int] = field(default_factory=list)
    skipped_positions: list[int] = field(default_factory=list)
    superseded_open: list[int] = field(default_factory=list)
    account: bool = False
    status: str = "success"
    transform_ms: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


def _iso_text(text: str) -> str:
    """Normalise an ISO timestamp string to UTC ``+00:00`` (naive means UTC)."""
    return _iso(datetime.fromisoformat(text))


def _error_class_for(code: str) -> type[errors.SyncError]:
    """The most specific SyncError subclass whose ``code`` is ``code`` (else SyncError)."""
    found: type[errors.SyncError] = errors.SyncError
    pending: list[type[errors.SyncError]] = [errors.SyncError]
    while pending:
        cls = pending.pop()
        if cls.code == code:
            found = cls
        pending.extend(cls.__subclasses__())
    return found


def _raise_nothing_fetched(fetch: FetchResult) -> None:
    if not fetch.errors:
        raise errors.SyncError("nothing was fetched", code="nothing_fetched")
    first = fetch.errors[0]
    message = "; ".join(_describe_part(e) for e in fetch.errors)
    cls = _error_class_for(first.code)
    if issubclass(cls, errors.TerminalError):
        raise cls(message, mt5_code=first.mt5_code, code=first.code)
    raise cls(message, code=first.code)


def _describe_part(err: PartError) -> str:
    code = f" ({err.mt5_code})" if err.mt5_code is not None else ""
    return f"{err.part}: {err.message}{code}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _describe_quarantine(rows: list[QuarantineRow], limit: int = 3) -> list[str]:
    parts: list[str] = []
    nouns = {"deal": "deal", "position": "position"}
    for kind, noun in nouns.items():
        of_kind = [q for q in rows if q["kind"] == kind]
        if not of_kind:
            continue
        shown = "; ".join(
            (f"ticket {q['ticket']}: " if q["ticket"] is not None else "") + q["reasons"]
            for q in of_kind[:limit]
        )
        more = "; ..." if len(of_kind) > limit else ""
        parts.append(f"{_plural(len(of_kind), noun)} quarantined ({shown}{more})")
    accounts = [q for q in rows if q["kind"] == "account"]
    if accounts:
        parts.append(f"account info quarantined ({accounts[0]['reasons']})")
    return parts


def _describe_ids(ids: list[int], limit: int = 5) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (", ..." if len(ids) > limit else "")


def _truncate(text: str, limit: int = ERROR_MESSAGE_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _cursor(fetch: FetchResult, deal_rows: list[DealRow]) -> str | None:
    """The newest deal time the terminal returned (UTC), never past the planner's now.

    The cursor follows the data, not the host clock (dlt's and Airbyte's cursor field): a host
    clock running ahead of the broker, or history that arrives late, then cannot make the next
    window (cursor - overlap) start after deals not read yet. No deal read: it stays put.
    """
    if not deal_rows:
        return None
    newest = max(datetime.fromisoformat(r["time_utc"]) for r in deal_rows)
    now = datetime.fromisoformat(_iso_text(fetch.fetched_at_utc))
    return _iso(min(newest, now))


def build_commit_payload(
    fetch: FetchResult, ctx: SyncContext, *, completed_at: datetime
) -> tuple[CommitPayload, TransformReport]:
    """Validate and transform one fetch into the payload of ``mt5_commit_account_sync``.

    Raises the :class:`~mt5_sync.errors.SyncError` subclass matching the first part error
    when nothing at all was fetched, :class:`~mt5_sync.errors.InvalidRequest` for an unknown
    time rule, and :class:`~mt5_sync.errors.AccountMismatch` when the account info reports a
    login other than the one fetched (a cross-wired terminal: nothing may be written).
    """
    t0 = time.perf_counter()
    if fetch.account_info is None and fetch.positions is None and fetch.deals is None:
        _raise_nothing_fetched(fetch)
    try:
        rule = ServerTimeRule.parse(ctx.time_rule)
    except InvalidTimeRule as exc:
        raise errors.InvalidRequest(str(exc)) from exc

    report = TransformReport()
    quarantine: list[QuarantineRow] = []

    # account + snapshot
    account: AccountRow | None = None
    snapshot: SnapshotRow | None = None
    if fetch.account_info is not None:
        acc = account_frame(fetch.account_info)
        quarantine.extend(acc.quarantine)
        account = to_account_row(acc.frame)
        if account is not None and account["login"] != fetch.login:
            raise errors.AccountMismatch(
                f"account info reports login {account['login']}, expected {fetch.login}"
            )
        if account is not None:
            snapshot = to_snapshot_row(account, _iso_text(fetch.fetched_at_utc))

    # deals, cash flows, closed trades
    deals = deals_frame(fetch.deals)
    quarantine.extend(deals.quarantine)
    positions = positions_frame(fetch.positions) if fetch.positions is not None else None
    if positions is not None:
        quarantine.extend(positions.quarantine)
    trades = build_trades(
        deals.frame,
        positions.frame if positions is not None else None,
        rule,
        quarantined_position_ids=quarantined_position_ids(deals.quarantine),
    )
    deal_rows = to_deal_rows(deals.frame, rule)
    cash_flows = to_cash_flow_rows(deals.frame, rule)
    open_positions: list[TradeRow] | None = trades.open if positions is not None else None

    # status, error message, cursor
    problems = [_describe_part(e) for e in fetch.errors]
    problems.extend(_describe_quarantine(quarantine))
    if trades.incomplete_positions:
        n = len(trades.incomplete_positions)
        problems.append(
            f"{_plural(n, 'position')} with incomplete deals "
            f"({_describe_ids(trades.incomplete_positions)})"
        )
    if trades.skipped_positions:
        n = len(trades.skipped_positions)
        problems.append(
            f"{_plural(n, 'trade')} skipped for quarantined deals "
            f"({_describe_ids(trades.skipped_positions)})"
        )
    status = "partial" if problems else "success"
    if fetch.errors:
        error_code: str | None = fetch.errors[0].code
    elif quarantine:
        error_code = INVALID_RECORDS
    elif trades.incomplete_positions:
        error_code = INCOMPLETE_HISTORY
    else:
        error_code = None

    history_ok = (
        fetch.deals is not None
        and not deals.quarantine
        and not trades.incomplete_positions
        and not trades.skipped_positions
        and not any(e.part in HISTORY_PARTS for e in fetch.errors)
    )
    cursor = _cursor(fetch, deal_rows) if history_ok else None
    # Reconcile only a history read without error (a failed read proves nothing either way).
    ledger: LedgerCheck | None = None
    if fetch.deals is not None and not any(e.part in HISTORY_PARTS for e in fetch.errors):
        ledger = {"expected_offset": 0.0 if fetch.deals_before_window == 0 else None}

    started = ctx.started_at if ctx.started_at.tzinfo else ctx.started_at.replace(tzinfo=UTC)
    done = completed_at if completed_at.tzinfo else completed_at.replace(tzinfo=UTC)
    payload = CommitPayload(
        sync_id=ctx.sync_id,
        account_id=ctx.account_id,
        execution_id=ctx.execution_id,
        flow_run_id=ctx.flow_run_id,
        trigger=ctx.trigger,
        sync_type=ctx.sync_type,
        status=status,
        error_message=_truncate("; ".join(problems)) if problems else None,
        error_code=error_code,
        started_at=_iso(started),
        completed_at=_iso(done),
        duration_ms=max(0, round((done - started).total_seconds() * 1000)),
        account=account,
        snapshot=snapshot,
        open_positions=open_positions,
        closed_trades=trades.closed,
        deals=deal_rows,
        cash_flows=cash_flows,
        quarantine=quarantine,
        history_cursor=cursor,
        lease_holder=ctx.lease_holder,
        ledger=ledger,
    )

    by_kind: dict[str, int] = {}
    for q in quarantine:
        by_kind[q["kind"]] = by_kind.get(q["kind"], 0) + 1
    report.deals = len(deal_rows)
    report.cash_flows = len(cash_flows)
    report.trades_open = len(open_positions or [])
    report.trades_closed = len(trades.closed)
    report.quarantined = len(quarantine)
    report.quarantined_by_kind = by_kind
    report.duplicate_deals = deals.duplicates
    report.incomplete_positions = trades.incomplete_positions
    report.skipped_positions = trades.skipped_positions
    report.superseded_open = trades.superseded_open
    report.account = account is not None
    report.status = status
    report.transform_ms = round((time.perf_counter() - t0) * 1000)
    return payload, report
