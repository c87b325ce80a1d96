"""PostgreSQL / Supabase adapter: the only module that imports the database driver (psycopg 3).

Why it looks the way it does:

* **Connect per call.** Every method opens a connection, runs one short transaction and closes
  it. Calls come from many worker threads and Prefect tasks; nothing live is shared or cached
  between them, and a dropped connection never poisons later calls.
* **Works behind Supabase's transaction pooler** (port 6543): ``prepare_threshold=None`` (the
  pooler forbids prepared statements) and only transaction-scoped settings (``SET LOCAL``).
* **All write semantics live in the database functions** (``supabase/migrations``), so the
  psycopg path and a supabase-py ``.rpc(...)`` path write exactly the same way; this module only
  ships the JSON payload.
* **Errors are translated** into :mod:`mt5_sync.errors`: connection-level failures become
  :class:`~mt5_sync.errors.StoreUnavailable` (transient, retried), everything else
  :class:`~mt5_sync.errors.StoreError` (not retried). Messages are scrubbed of the password in
  the conninfo, and the driver exception is not chained (its text is not re-checked).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from mt5_sync.contracts import CommitPayload, FailurePayload
from mt5_sync.errors import StoreError, StoreUnavailable, SyncError
from mt5_sync.store.chunks import columnar
from mt5_sync.store.records import AccountRecord

log = logging.getLogger(__name__)

Connection = psycopg.Connection[Any]

APPLICATION_NAME = "mt5-sync"
DEFAULT_CONNECT_TIMEOUT_S = 10
DEFAULT_STATEMENT_TIMEOUT_S = 120.0

# Defaults added to the conninfo unless it sets them itself. Keepalives make a connection whose
# peer vanished (NAT timeout, server failover) fail within ~1 min instead of hanging a commit.
_CONNECT_DEFAULTS: dict[str, Any] = {
    "connect_timeout": DEFAULT_CONNECT_TIMEOUT_S,
    "application_name": APPLICATION_NAME,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}

# Connection failures that retrying cannot fix (wrong database/user name, pg_hba, pooler tenant).
_PERMANENT_CONNECT_ERRORS = (
    "does not exist",
    "no pg_hba.conf entry",
    "Tenant or user not found",
    "invalid connection option",
    "invalid URI",
)

_ACCOUNT_COLUMNS = """
    id::text as id, user_id::text as user_id, login_number, broker_server, broker_name,
    server_time_rule, is_active, history_cursor, last_sync_at, last_successful_sync_at,
    sync_failure_count, investor_password_encrypted, ledger_status
"""


# ---------------------------------------------------------------- secrets and errors


class _Redactor:
    """Removes the conninfo's password (and anything shaped like one) from error text."""

    _KEYVALUE = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
    _URL = re.compile(r"(postgres(?:ql)?://[^:/@\s]*):[^@\s]*@", re.IGNORECASE)

    def __init__(self, conninfo: str) -> None:
        self._secrets: list[str] = []
        try:
            password = pg_conninfo.conninfo_to_dict(conninfo).get("password")
        except psycopg.Error:
            password = None
        # Very short passwords are not replaced verbatim (that would mangle every message);
        # the shape-based patterns below still mask them in URLs and key=value text.
        if password and len(str(password)) >= 4:
            self._secrets.append(str(password))

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        text = self._KEYVALUE.sub(r"\1***", text)
        return self._URL.sub(r"\1:***@", text)


def redact(conninfo: str, text: str) -> str:
    """``text`` with ``conninfo``'s password (and password-shaped fragments) replaced by ***."""
    return _Redactor(conninfo)(text)


def translate_error(exc: psycopg.Error, redactor: _Redactor) -> SyncError:
    """Map a driver error onto the project's failure vocabulary (decides retry vs. give up).

    * SQLSTATE class 28 (bad credentials) -> StoreError: retrying the same password won't help.
    * OperationalError / InterfaceError (connection refused or lost, server shutting down,
      serialization failure, deadlock, lock or statement timeout) -> StoreUnavailable.
    * everything else (constraint violations, payload rejected by a function, missing
      function, privileges) -> StoreError.
    """
    sqlstate = getattr(exc, "sqlstate", None)
    message = redactor(str(exc).strip()) or type(exc).__name__
    message = message.splitlines()[0] if sqlstate else " ".join(message.split())
    constraint = None
    with contextlib.suppress(Exception):
        constraint = exc.diag.constraint_name or None
    if (sqlstate or "").startswith("28") or "password authentication failed" in message:
        return StoreError(
            f"database rejected the credentials: {message}", code="database_auth_failed"
        )
    # Connection-time errors carry no SQLSTATE; some are configuration, not weather.
    if sqlstate is None and any(p in message for p in _PERMANENT_CONNECT_ERRORS):
        return StoreError(f"database refused the connection: {message}", code="database_config")
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return StoreUnavailable(f"database unavailable: {message}")
    detail = f" [{sqlstate}]" if sqlstate else ""
    if constraint:
        detail += f" (constraint {constraint})"
    return StoreError(f"database error{detail}: {message}")


def _connect_kwargs(conninfo: str) -> dict[str, Any]:
    try:
        given = pg_conninfo.conninfo_to_dict(conninfo)
    except psycopg.Error:
        given = {}  # psycopg.connect reports the malformed conninfo itself
    return {k: v for k, v in _CONNECT_DEFAULTS.items() if k not in given}


@contextlib.contextmanager
def connect(
    conninfo: str,
    *,
    autocommit: bool = False,
    statement_timeout_s: float | None = DEFAULT_STATEMENT_TIMEOUT_S,
) -> Iterator[Connection]:
    """A short-lived connection with translated errors.

    Without ``autocommit`` the block is one transaction (committed on normal exit, rolled back
    on an exception) with ``TimeZone = UTC`` and the statement timeout set *locally*, which is
    what the transaction pooler allows. With ``autocommit`` the caller manages transactions
    (``conn.transaction()``), as the migration runner does.
    """
    redactor = _Redactor(conninfo)
    try:
        conn = psycopg.connect(
            conninfo,
            autocommit=autocommit,
            prepare_threshold=None,
            **_connect_kwargs(conninfo),
        )
    except psycopg.Error as exc:
        raise translate_error(exc, redactor) from None
    try:
        with conn:
            if not autocommit:
                _configure_transaction(conn, statement_timeout_s)
            yield conn
    except psycopg.Error as exc:
        raise translate_error(exc, redactor) from None


def _configure_transaction(conn: Connection, statement_timeout_s: float | None) -> None:
    """UTC and the statement timeout, set *locally*: the transaction pooler allows only that."""
    timeout_ms = 0 if statement_timeout_s is None else int(statement_timeout_s * 1000)
    conn.execute(
        "select set_config('TimeZone', 'UTC', true), set_config('statement_timeout', %s, true)",
        (str(timeout_ms),),
    )


# ---------------------------------------------------------------- JSON


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise TypeError(f"naive datetime {value!r}: payload times must be timezone-aware")
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _reject_non_finite(obj: Any) -> None:
    """Raise ValueError for a NaN or infinity anywhere in ``obj`` (JSON cannot carry them).

    Lists of numbers -- the columns of a commit -- are summed in C: the sum of finite values
    is finite unless it overflows, and then the slow path decides.
    """
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"Out of range float values are not JSON compliant: {obj!r}")
    elif isinstance(obj, dict):
        for value in obj.values():
            if not isinstance(value, str | int | None):
                _reject_non_finite(value)
    elif isinstance(obj, list | tuple):
        try:
            if math.isfinite(sum(obj)):
                return
        except TypeError:  # not all numbers: strings, None, rows
            pass
        for value in obj:
            if not isinstance(value, str | int | None):
                _reject_non_finite(value)


def _dumps(obj: Any) -> str:
    # NaN/Infinity are not JSON: PostgreSQL would reject the whole payload with a vaguer
    # message, and orjson would write them as null, so they are looked for first. orjson:
    # ~5x faster than json on multi-MiB payloads.
    _reject_non_finite(obj)
    return orjson.dumps(
        obj,
        default=_json_default,
        option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS,
    ).decode()


def _jsonb(obj: Any) -> Jsonb:
    """Validate and encode once; the adapter reuses the text (payloads can be many MiB)."""
    try:
        text = _dumps(obj)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"payload is not valid JSON: {exc}") from None
    return Jsonb(obj, dumps=lambda _obj: text)


def _uuid_or_none(value: object) -> str | None:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _account(row: Mapping[str, Any]) -> AccountRecord:
    return AccountRecord(
        id=row["id"],
        user_id=row["user_id"],
        login_number=int(row["login_number"]),
        broker_server=row["broker_server"],
        broker_name=row["broker_name"],
        server_time_rule=row["server_time_rule"],
        is_active=bool(row["is_active"]),
        history_cursor=_utc(row["history_cursor"]),
        last_sync_at=_utc(row["last_sync_at"]),
        last_successful_sync_at=_utc(row["last_successful_sync_at"]),
        sync_failure_count=int(row["sync_failure_count"]),
        investor_password_encrypted=row["investor_password_encrypted"],
        ledger_status=row.get("ledger_status"),
    )


# ---------------------------------------------------------------- the store


class PostgresStore:
    """The app database, seen through the operations the pipeline needs.

    Holds only the conninfo (never a connection), so one instance can be shared by threads and
    rebuilt cheaply in any process. ``repr`` shows the conninfo with the password masked.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        statement_timeout_s: float | None = DEFAULT_STATEMENT_TIMEOUT_S,
    ) -> None:
        if not conninfo:
            raise ValueError("a database conninfo/URL is required")
        self._conninfo = conninfo
        self._statement_timeout_s = statement_timeout_s

    def __repr__(self) -> str:
        return f"PostgresStore({redact(self._conninfo, self._conninfo)!r})"

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        """One transaction on a fresh connection (see :func:`connect`)."""
        with connect(self._conninfo, statement_timeout_s=self._statement_timeout_s) as conn:
            yield conn

    def _call(self, what: str, sql: str, params: Sequence[Any]) -> Any:
        """Run one statement in its own transaction and return the first column of row one."""
        started = time.perf_counter()
        with self.connection() as conn:
            row = conn.execute(sql, params).fetchone()
        log.debug("%s took %.1f ms", what, (time.perf_counter() - started) * 1000)
        return None if row is None else row[0]

    # ------------------------------------------------------------ reads

    def list_active_accounts(self, account_ids: Sequence[str] | None = None) -> list[AccountRecord]:
        """Active accounts, least recently synced first (never-synced first, then by id).

        With ``account_ids``, only those (ids that are not UUIDs or not known are ignored).
        The order is what a capped sliding window needs: starved accounts go first.
        """
        ids: list[str] | None = None
        if account_ids is not None:
            ids = [i for i in (_uuid_or_none(a) for a in account_ids) if i is not None]
            if not ids:
                return []
        with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"select {_ACCOUNT_COLUMNS} from public.trading_accounts"
                " where is_active and (%(ids)s::uuid[] is null or id = any(%(ids)s::uuid[]))"
                " order by last_sync_at asc nulls first, id",
                {"ids": ids},
            )
            return [_account(r) for r in cur.fetchall()]

    def get_account(self, account_id: str) -> AccountRecord | None:
        """One account, active or not; ``None`` if unknown (or not a UUID)."""
        key = _uuid_or_none(account_id)
        if key is None:
            return None
        with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"select {_ACCOUNT_COLUMNS} from public.trading_accounts where id = %s",
                (key,),
            )
            row = cur.fetchone()
        return None if row is None else _account(row)

    def fetch_all(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Run any statement in its own (committed) transaction; rows as dicts.

        For tests, the demo and ad-hoc checks; the pipeline itself uses the typed methods.
        """
        with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description is not None else []

    # ------------------------------------------------------------ the cycle deadline

    def sync_duration_estimates(
        self, account_ids: Sequence[str], last: int
    ) -> list[dict[str, Any]]:
        """(account_id, median_ms) of each account's last ``last`` finished syncs."""
        return self.fetch_all(
            "select account_id, median_ms"
            " from public.mt5_sync_duration_estimates(%s::uuid[], %s)",
            (list(account_ids), last),
        )

    def record_syncs_deferred(self, entry: Mapping[str, Any]) -> int:
        """One 'deferred' sync_logs row per account the cycle did not start."""
        rows = self.fetch_all(
            "select public.mt5_record_syncs_deferred(%s) as n", (_jsonb(dict(entry)),)
        )
        return int(rows[0]["n"] or 0) if rows else 0

    # ------------------------------------------------------------ account health

    def account_schedule(
        self, account_ids: Sequence[str] | None, now: datetime
    ) -> list[dict[str, Any]]:
        """Whether the scheduled cycle may try each account at ``now``.

        ``mt5_account_schedule_at`` rows: ``account_id`` (str), ``state``, ``reason`` (error
        code or None), ``message``, ``next_attempt_at`` (aware UTC or None), ``due`` (bool).
        ``account_ids`` None = all.
        """
        ids = None if account_ids is None else [
            i for i in (_uuid_or_none(a) for a in account_ids) if i is not None
        ]
        rows = self.fetch_all(
            "select account_id::text as account_id, state, reason, message, next_attempt_at, due"
            " from public.mt5_account_schedule_at(%s, %s::uuid[])",
            (now, ids),
        )
        return [{**r, "next_attempt_at": _utc(r["next_attempt_at"])} for r in rows]

    def account_freshness(self, now: datetime, slo_s: int) -> list[dict[str, Any]]:
        """``mt5_account_freshness_at(now, slo_s)``: one row per account (ids as str, times
        aware UTC, ``staleness_s`` float seconds or None when never synced)."""
        rows = self.fetch_all(
            "select account_id::text as account_id, login_number, broker_server, is_active,"
            " last_successful_sync_at, staleness_s, state, reason, next_attempt_at"
            " from public.mt5_account_freshness_at(%s, %s)",
            (now, int(slo_s)),
        )
        return [
            {**r, "last_successful_sync_at": _utc(r["last_successful_sync_at"]),
             "next_attempt_at": _utc(r["next_attempt_at"])}
            for r in rows
        ]

    def pause_failing_servers(self, entry: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Pause the servers where most of one cycle's accounts failed the same transient way;
        returns the newly paused ones (``broker_server``, ``error_code``, ``accounts_failed``,
        ``accounts_tried``, ``paused_until``). See ``mt5_pause_failing_servers``."""
        rows = self.fetch_all(
            "select * from public.mt5_pause_failing_servers(%s)", (_jsonb(dict(entry)),)
        )
        return [{**r, "paused_until": _utc(r["paused_until"])} for r in rows]

    def take_health_events(self, limit: int = 100) -> list[dict[str, Any]]:
        """Take (and delete) up to ``limit`` account health events, oldest first."""
        rows = self.fetch_all(
            "select id, account_id::text as account_id, login_number, broker_server, kind,"
            " occurred_at, previous_state, error_code, message, next_attempt_at,"
            " sync_id::text as sync_id from public.mt5_take_health_events(%s)",
            (int(limit),),
        )
        return [
            {**r, "occurred_at": _utc(r["occurred_at"]),
             "next_attempt_at": _utc(r["next_attempt_at"])}
            for r in rows
        ]

    # ------------------------------------------------------------ the sync write path

    def commit_account_sync(self, payload: CommitPayload) -> dict[str, Any]:
        """Write one account's sync atomically via ``mt5_commit_account_sync``.

        Idempotent: replaying the same payload changes nothing, so a caller may retry after a
        lost reply. Returns ``{"trades_synced", "deals_synced", "cash_flows_synced",
        "quarantined", "cursor", "sync_id", "status"}``.
        """
        result = self._call(
            "mt5_commit_account_sync",
            "select public.mt5_commit_account_sync(%s)",
            (_jsonb(columnar(payload)),),
        )
        return dict(result or {})

    def record_sync_failure(self, payload: FailurePayload) -> None:
        """Count a failed sync and log it, in its own small transaction (once per sync_id)."""
        self._call(
            "mt5_record_sync_failure",
            "select public.mt5_record_sync_failure(%s)",
            (_jsonb(payload),),
        )

    def mark_sync_started(self, entry: Mapping[str, Any]) -> None:
        """Upsert the 'processing' log row of a sync.

        ``entry`` needs ``sync_id``, ``account_id``, ``trigger``, ``sync_type``, ``started_at``
        (ISO string with offset, or an aware datetime) and may carry ``execution_id``,
        ``flow_run_id`` and ``lease_holder`` (the lease the sync runs under: the account's other
        'processing' rows that ran under another lease are closed as abandoned); other keys are
        ignored. A row that already has a final status is left alone.
        """
        keys = ("sync_id", "account_id", "execution_id", "flow_run_id", "trigger", "sync_type",
                "started_at", "lease_holder")
        self._call(
            "mt5_mark_sync_started",
            "select public.mt5_mark_sync_started(%s)",
            (_jsonb({k: entry.get(k) for k in keys}),),
        )

    def acquire_sync_lease(self, account_id: str, holder: str, ttl_seconds: int) -> bool:
        """Take (or extend) the account's sync lease; False while another holder has it.

        Cross-process mutual exclusion: a manual sync and the scheduled cycle on different
        workers agree through the database. The lease expires after ``ttl_seconds`` so a dead
        worker cannot block an account forever.
        """
        granted = self._call(
            "mt5_acquire_sync_lease",
            "select public.mt5_acquire_sync_lease(%s::uuid, %s::uuid, %s)",
            (account_id, holder, int(ttl_seconds)),
        )
        return bool(granted)

    def release_sync_lease(self, account_id: str, holder: str) -> None:
        """Release the lease if ``holder`` still holds it (no-op otherwise)."""
        self._call(
            "mt5_release_sync_lease",
            "select public.mt5_release_sync_lease(%s::uuid, %s::uuid)",
            (account_id, holder),
        )

    # ------------------------------------------------------------ the cycle's claim queue

    def open_sync_cycle(
        self, execution_id: str, trigger: str, sync_type: str, account_ids: Sequence[str] | None,
        excluded_ids: Sequence[str] = (),
    ) -> None:
        """Open (idempotently) the cycle whose accounts every host's shard claims from.

        ``account_ids`` None: every account active when claimed (one added mid-cycle too).
        ``excluded_ids``: never claimable in this cycle (accounts backing off).
        """
        ids = None if account_ids is None else [
            i for i in (_uuid_or_none(a) for a in account_ids) if i is not None]
        self._call(
            "mt5_open_sync_cycle",
            "select public.mt5_open_sync_cycle(%s::uuid, %s, %s, %s::uuid[], %s::uuid[])",
            (execution_id, trigger, sync_type, ids, list(excluded_ids) or None),
        )

    def claim_cycle_accounts(
        self, execution_id: str, host: str, limit: int, lease_seconds: int,
        flow_run_id: str | None = None, estimate_syncs: int = 0,
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` accounts of the cycle, least recently synced first, for ``host``.

        Rows: ``account_id, login_number, broker_server, outcome ('claimed' | 'skipped'),
        lease_holder, claims, detail, median_ms`` (``median_ms``: of the account's last
        ``estimate_syncs`` finished syncs, when > 0 and it has any). A claimed account's lease
        is the shard's for ``lease_seconds`` (renew it); a skipped one has a live holder and is
        logged so.
        """
        return self.fetch_all(
            "select account_id::text, login_number, broker_server, outcome,"
            " lease_holder::text, claims, detail, median_ms"
            " from public.mt5_claim_cycle_accounts(%s::uuid, %s, %s, %s, %s::uuid, %s)",
            (execution_id, host, int(limit), int(lease_seconds), flow_run_id,
             int(estimate_syncs)),
        )

    def unclaim_cycle_accounts(
        self, execution_id: str, account_ids: Sequence[str], outcome: str
    ) -> None:
        """Give claimed accounts back (lease released), recording ``outcome`` ('deferred')."""
        self._call(
            "mt5_unclaim_cycle_accounts",
            "select public.mt5_unclaim_cycle_accounts(%s::uuid, %s::uuid[], %s)",
            (execution_id, list(account_ids), outcome),
        )

    def record_cycle_shard(
        self, execution_id: str, host: str, flow_run_id: str | None,
        summary: Mapping[str, Any] | None,
    ) -> None:
        """A shard's start (``summary`` None) or its report to the parent."""
        self._call(
            "mt5_record_cycle_shard",
            "select public.mt5_record_cycle_shard(%s::uuid, %s, %s::uuid, %s)",
            (execution_id, host, flow_run_id,
             None if summary is None else _jsonb(dict(summary))),
        )

    def cycle_report(self, execution_id: str) -> dict[str, Any]:
        """``{"shards": [...], "claims": [...], "logs": [...]}`` of one cycle."""
        result = self._call(
            "mt5_cycle_report", "select public.mt5_cycle_report(%s::uuid)", (execution_id,)
        )
        return dict(result or {})

    def renew_sync_leases(self, holders: Sequence[str], ttl_seconds: int) -> set[str]:
        """Extend the leases ``holders`` still have; returns those holders."""
        if not holders:
            return set()
        rows = self.fetch_all(
            "select h::text as holder from public.mt5_renew_sync_leases(%s::uuid[], %s) as h",
            (list(holders), int(ttl_seconds)),
        )
        return {r["holder"] for r in rows}

    def break_sync_lease(self, account_id: str, holder: str) -> bool:
        """Clear the lease if ``holder`` (known dead) still has it; True when cleared."""
        return bool(self._call(
            "mt5_break_sync_lease",
            "select public.mt5_break_sync_lease(%s::uuid, %s::uuid)",
            (account_id, holder),
        ))

    def sync_lease_of(self, account_id: str) -> dict[str, Any] | None:
        """``{"holder", "until", "flow_run_id", "live"}`` of the account's lease, or None."""
        rows = self.fetch_all(
            "select holder::text, until, flow_run_id::text, live"
            " from public.mt5_sync_lease_of(%s::uuid)",
            (account_id,),
        )
        return rows[0] if rows else None

    # ------------------------------------------------------------ accounts (demo, tests, admin)

    def ensure_user(self, user_id: str, email: str | None = None) -> None:
        """Create the ``auth.users`` row if missing (plain PostgreSQL, demo and tests).

        On Supabase, users come from Supabase Auth; this only fills the stub table.
        """
        with self.connection() as conn:
            conn.execute(
                "insert into auth.users (id, email) values (%s::uuid, %s)"
                " on conflict (id) do nothing",
                (user_id, email),
            )

    def register_account(
        self,
        *,
        user_id: str,
        login_number: int,
        broker_server: str,
        broker_name: str | None,
        investor_password_encrypted: str,
        server_time_rule: str,
        is_active: bool = True,
    ) -> str:
        """Create (or update, keyed by server + login + user) an account; returns its id.

        Also creates the ``auth.users`` row if missing. Idempotent, so the demo can re-run.
        """
        self.ensure_user(user_id)
        account_id = self._call(
            "register_account",
            """
            insert into public.trading_accounts
                (user_id, login_number, broker_server, broker_name,
                 investor_password_encrypted, server_time_rule, is_active)
            values (%s::uuid, %s, %s, %s, %s, %s, %s)
            on conflict (broker_server, login_number, user_id) do update
               set broker_name = excluded.broker_name,
                   investor_password_encrypted = excluded.investor_password_encrypted,
                   server_time_rule = excluded.server_time_rule,
                   is_active = excluded.is_active,
                   updated_at = now()
            returning id::text
            """,
            (user_id, int(login_number), broker_server, broker_name,
             investor_password_encrypted, server_time_rule, is_active),
        )
        return str(account_id)

    # ------------------------------------------------------------ manual sync API

    def claim_manual_sync_slot(
        self,
        *,
        account_id: str,
        user_id: str,
        sync_id: str,
        sync_type: str,
        window_s: int,
        default_estimate_s: int = 30,
    ) -> dict[str, Any]:
        """Take the account's manual-sync slot and write its 'processing' log row, atomically.

        One database round trip (``mt5_claim_manual_sync``); the decision is one conditional
        UPDATE, so concurrent requests on any number of API replicas agree. Returns
        ``{"outcome": "claimed" | "rate_limited" | "not_found", "retry_after_seconds",
        "estimated_duration_seconds", "account_label"}``. Ids that are not UUIDs are simply
        ``not_found`` (never a database error).
        """
        account_key, user_key, sync_key = (
            _uuid_or_none(account_id), _uuid_or_none(user_id), _uuid_or_none(sync_id)
        )
        if account_key is None or user_key is None:
            return {"outcome": "not_found", "retry_after_seconds": None,
                    "estimated_duration_seconds": None, "account_label": None}
        if sync_key is None:
            raise ValueError(f"sync_id must be a UUID, got {sync_id!r}")
        with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "select * from public.mt5_claim_manual_sync("
                "%s::uuid, %s::uuid, %s::uuid, %s, %s, %s)",
                (account_key, user_key, sync_key, sync_type, int(window_s),
                 int(default_estimate_s)),
            )
            row = cur.fetchone()
        return dict(row or {})

    def release_manual_sync_slot(self, sync_id: str) -> bool:
        """Undo a claim whose run never reached the orchestrator (slot back, row removed).

        Idempotent; a later claim or a row that already has an outcome is never touched.
        """
        key = _uuid_or_none(sync_id)
        if key is None:
            return False
        return bool(self._call(
            "mt5_release_manual_sync",
            "select public.mt5_release_manual_sync(%s::uuid)",
            (key,),
        ))

    def get_sync_status(self, *, sync_id: str, user_id: str) -> dict[str, Any] | None:
        """One sync_logs row, only if its account belongs to ``user_id`` and is active.

        ``None`` for unknown ids, other users' syncs and non-UUID input alike, so a caller
        cannot tell them apart.
        """
        sync_key, user_key = _uuid_or_none(sync_id), _uuid_or_none(user_id)
        if sync_key is None or user_key is None:
            return None
        rows = self.fetch_all(
            """
            select l.sync_id::text as sync_id, l.account_id::text as account_id, l.status,
                   l.trigger, l.sync_type, l.created_at as requested_at, l.started_at,
                   l.completed_at, l.duration_ms, l.trades_synced, l.deals_synced,
                   l.error_code, l.error_message, l.flow_run_id::text as flow_run_id
              from public.sync_logs l
              join public.trading_accounts a on a.id = l.account_id
             where l.sync_id = %s::uuid and a.user_id = %s::uuid and a.is_active
            """,
            (sync_key, user_key),
        )
        if not rows:
            return None
        row = rows[0]
        for key in ("requested_at", "started_at", "completed_at"):
            row[key] = _utc(row[key])
        return row

    # ------------------------------------------------------------ account lifecycle (API)

    def connect_account(
        self,
        *,
        user_id: str,
        login_number: int,
        broker_server: str,
        password_encrypted: str,
        server_time_rule: str,
        sync_id: str,
    ) -> dict[str, Any]:
        """Create (or re-activate) the caller's account and its verify sync's 'processing'
        row, atomically (``mt5_connect_account``). ``password_encrypted`` is already sealed.

        Returns ``{"outcome": "created" | "reactivated" | "duplicate", "account_id",
        "account_label"}``.
        """
        with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "select outcome, account_id::text as account_id, account_label"
                " from public.mt5_connect_account(%s::uuid, %s, %s, %s, %s, %s::uuid)",
                (user_id, int(login_number), broker_server, password_encrypted,
                 server_time_rule, sync_id),
            )
            return dict(cur.fetchone() or {})

    def replace_account_credentials(
        self, *, account_id: str, user_id: str, password_encrypted: str, sync_id: str,
        window_s: int,
    ) -> dict[str, Any]:
        """New sealed password + a verify sync's 'processing' row, for the caller's active
        account, at most one verify per ``window_s`` (``mt5_replace_account_credentials``).
        ``{"outcome": "replaced" | "rate_limited" | "not_found", "account_label",
        "retry_after_seconds"}``; nothing is written unless replaced."""
        account_key, user_key = _uuid_or_none(account_id), _uuid_or_none(user_id)
        if account_key is None or user_key is None:
            return {"outcome": "not_found", "account_label": None, "retry_after_seconds": None}
        with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "select outcome, account_label, retry_after_seconds"
                " from public.mt5_replace_account_credentials("
                "%s::uuid, %s::uuid, %s, %s::uuid, %s)",
                (account_key, user_key, password_encrypted, sync_id, int(window_s)),
            )
            return dict(cur.fetchone() or {})

    def deactivate_account(self, *, account_id: str, user_id: str) -> bool:
        """Take the caller's account out of every cycle; its data stays. False: not found."""
        account_key, user_key = _uuid_or_none(account_id), _uuid_or_none(user_id)
        if account_key is None or user_key is None:
            return False
        return bool(self._call(
            "mt5_deactivate_account",
            "select public.mt5_deactivate_account(%s::uuid, %s::uuid)",
            (account_key, user_key),
        ))

    def finish_verify_sync(self, entry: Mapping[str, Any]) -> bool:
        """Write a verify sync's outcome (``mt5_finish_verify_sync``); False if the row was
        not 'processing' any more (a replay)."""
        return bool(self._call(
            "mt5_finish_verify_sync", "select public.mt5_finish_verify_sync(%s)",
            (_jsonb(dict(entry)),),
        ))

    def get_account_status(self, *, account_id: str, user_id: str) -> dict[str, Any] | None:
        """The caller's active account with its latest verify sync (None: not found).

        Keys: account_id, login, server, broker_name, currency, leverage, is_active,
        created_at, last_sync_at, last_successful_sync_at, and ``verify`` (the latest verify
        sync_logs row's sync_id, status, error_code, error_message, completed_at; or None).
        Never the password, sealed or not.
        """
        account_key, user_key = _uuid_or_none(account_id), _uuid_or_none(user_id)
        if account_key is None or user_key is None:
            return None
        rows = self.fetch_all(
            """
            select a.id::text as account_id, a.login_number as login,
                   a.broker_server as server, a.broker_name, a.currency, a.leverage,
                   a.is_active, a.created_at, a.last_sync_at, a.last_successful_sync_at,
                   v.sync_id::text as verify_sync_id, v.status as verify_status,
                   v.error_code as verify_error_code,
                   v.error_message as verify_error_message,
                   v.completed_at as verify_completed_at
              from public.trading_accounts a
              left join lateral (
                    select l.sync_id, l.status, l.error_code, l.error_message, l.completed_at
                      from public.sync_logs l
                     where l.account_id = a.id and l.sync_type = 'verify'
                     order by l.created_at desc, l.id desc
                     limit 1) v on true
             where a.id = %s::uuid and a.user_id = %s::uuid and a.is_active
            """,
            (account_key, user_key),
        )
        if not rows:
            return None
        row = rows[0]
        for key in ("created_at", "last_sync_at", "last_successful_sync_at",
                    "verify_completed_at"):
            row[key] = _utc(row[key])
        return row

    def recent_sync_durations(self, account_id: str, *, limit: int = 10) -> list[int]:
        """Durations (ms) of the account's last ``limit`` successful syncs, newest first.

        The claim computes its estimate in SQL; this is the same data for reports and tests.
        """
        key = _uuid_or_none(account_id)
        if key is None:
            return []
        rows = self.fetch_all(
            "select duration_ms from public.sync_logs where account_id = %s::uuid"
            " and status = 'success' and duration_ms is not null"
            " order by started_at desc limit %s",
            (key, int(limit)),
        )
        return [int(r["duration_ms"]) for r in rows]


class PooledPostgresStore(PostgresStore):
    """A :class:`PostgresStore` whose transactions run on pooled connections (the API, and the
    pipeline via ``mt5_sync.tasks.runtime``).

    Why a pool: a fresh connection costs more than most of the work -- measured on the
    embedded PostgreSQL: 13 ms to connect, 30 ms for the first claim on a new backend
    (plpgsql compiles per session) against ~1 ms on a warm one; a 2,000-deal commit is
    ~40 ms faster on a warm backend. Transactions stay short, and every one still sets
    ``TimeZone`` and ``statement_timeout`` locally, so the transaction pooler (6543) remains
    usable. A dead pooled connection is detected before use (``check``), never handed to a
    request. ``open()`` / ``close()`` belong to the owner's lifecycle (the app's lifespan; for
    the pipeline, the process: ``mt5_sync.tasks.runtime`` closes it at exit).
    """

    def __init__(
        self,
        conninfo: str,
        *,
        max_size: int = 10,
        wait_timeout_s: float = 5.0,
        statement_timeout_s: float | None = DEFAULT_STATEMENT_TIMEOUT_S,
    ) -> None:
        from psycopg_pool import ConnectionPool

        super().__init__(conninfo, statement_timeout_s=statement_timeout_s)
        self._wait_timeout_s = wait_timeout_s
        self._pool: ConnectionPool[Connection] = ConnectionPool(
            conninfo, min_size=1, max_size=max_size, open=False, name=APPLICATION_NAME,
            check=ConnectionPool.check_connection,
            kwargs={"prepare_threshold": None, **_connect_kwargs(conninfo)},
        )

    def open(self) -> None:
        """Start the pool (connections are made in the background; no wait)."""
        self._pool.open(wait=False)

    def close(self) -> None:
        self._pool.close()

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        redactor = _Redactor(self._conninfo)
        try:
            with self._pool.connection(timeout=self._wait_timeout_s) as conn:
                _configure_transaction(conn, self._statement_timeout_s)
                yield conn
        except psycopg.Error as exc:
            raise translate_error(exc, redactor) from None
