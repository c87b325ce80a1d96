"""Supabase REST transport (supabase-py -> PostgREST): the only module that imports supabase.

For deployments that have the project URL and a service key but no Postgres connection. It
implements the same store interface as :class:`~mt5_sync.store.postgres.PostgresStore` and
writes through the SAME database functions, so both transports leave identical rows.

Why it looks the way it does:

* **Every write is one ``.rpc`` to a database function** (atomic multi-table writes over REST
  are only possible inside one function). Big commits are staged in chunks first and then
  committed by one function call (see :mod:`mt5_sync.store.chunks`); staging rows are complete
  rows, upserted with ``return=minimal``.
* **Retries are ours**: supabase-py retries only GET/HEAD, never writes. Every call here is
  idempotent (the functions are), so each request is retried with exponential backoff and
  jitter on network errors, timeouts, 408/429 and transient 5xx; the library's own retry is
  off so there is one policy. A 5xx carrying a deterministic SQL error is not retried.
* **One httpx client we configure**: timeouts, HTTP/1.1 by default (long-lived HTTP/2
  connections get GOAWAY/"Server disconnected" in workers), short keep-alive, thread-safe.
* **New secret keys are not JWTs**: supabase-py also puts the key in ``Authorization``, which
  PostgREST rejects for ``sb_secret_...`` keys (PGRST301); a request hook drops that header
  so the gateway derives the role from ``apikey``. Legacy service_role JWTs keep both headers.
* **Reads page through PostgREST's max-rows cap** (1000 on Supabase) by keyset on ``id``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
from postgrest import APIError, ReturnMethod

from mt5_sync.contracts import CommitPayload, FailurePayload
from mt5_sync.errors import StoreError, StoreUnavailable, SyncError
from mt5_sync.store.chunks import DEFAULT_MAX_BYTES, CommitPlan, plain, plan_commit
from mt5_sync.store.records import AccountRecord
from supabase import Client, ClientOptions

log = logging.getLogger(__name__)

ACCOUNT_COLUMNS = (
    "id", "user_id", "login_number", "broker_server", "broker_name", "server_time_rule",
    "is_active", "history_cursor", "last_sync_at", "last_successful_sync_at",
    "sync_failure_count", "investor_password_encrypted", "ledger_status",
)  # fmt: skip
STAGING_TABLE = "sync_commit_chunks"
PAGE_SIZE = 1000  # Supabase's default db-max-rows
IDS_PER_REQUEST = 100  # keeps ?id=in.(...) far below URL length limits
MAX_BACKOFF_S = 8.0
# 5xx responses worth repeating: connection (08), rollback/deadlock (40), resources (53),
# statement timeout / shutdown (57), I/O (58), lock timeout (55P03), and non-SQL errors.
_TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57", "58")
_TRANSIENT_SQLSTATES = ("55P03",)
_STAGING_INCOMPLETE = "55000"


def _is_sqlstate(code: str | None) -> bool:
    """A PostgreSQL SQLSTATE (5 characters), not an HTTP status text or a PGRST code."""
    return code is not None and len(code) == 5 and code.isalnum()


def _transient(status: int | None, code: str | None) -> bool:
    if status in (408, 429):
        return True
    if status is None or status < 500:
        return False
    if code is not None and _is_sqlstate(code):
        return code[:2] in _TRANSIENT_SQLSTATE_CLASSES or code in _TRANSIENT_SQLSTATES
    return True


def _translate(what: str, exc: APIError, status: int | None) -> SyncError:
    code = exc.code or (str(status) if status else None)
    message = " ".join(str(exc.message or exc.details or "request failed").split())
    text = f"{what}: [{code}] {message}"
    if status in (401, 403) or (code or "").startswith(("28", "PGRST30")) or code == "42501":
        return StoreError(
            f"Supabase rejected the credentials or privileges ({text}); use the service_role "
            "or a secret key (sb_secret_...), never the anon/publishable key",
            code="database_auth_failed",
        )
    if status == 404 or code in ("PGRST202", "PGRST205", "42883", "42P01"):
        return StoreError(
            f"{text}; are the migrations applied (supabase db push) and the schema cache "
            "reloaded (NOTIFY pgrst, 'reload schema')?",
            code="database_config",
        )
    if status == 413:
        return StoreError(f"{text}; lower MT5SYNC_SUPABASE_CHUNK_BYTES", code="payload_too_large")
    if _transient(status, code):
        return StoreUnavailable(f"database unavailable: {text}")
    return StoreError(f"database error {text}", code="database_error")


def _plain(payload: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return plain(payload)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"payload is not valid JSON: {exc}") from None


def _ts(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value)).astimezone(UTC)


def _uuid_or_none(value: object) -> str | None:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


def _account(row: Mapping[str, Any]) -> AccountRecord:
    return AccountRecord(
        id=str(row["id"]),
        user_id=str(row["user_id"]),
        login_number=int(row["login_number"]),
        broker_server=row["broker_server"],
        broker_name=row["broker_name"],
        server_time_rule=row["server_time_rule"],
        is_active=bool(row["is_active"]),
        history_cursor=_ts(row["history_cursor"]),
        last_sync_at=_ts(row["last_sync_at"]),
        last_successful_sync_at=_ts(row["last_successful_sync_at"]),
        sync_failure_count=int(row["sync_failure_count"]),
        investor_password_encrypted=row["investor_password_encrypted"],
        ledger_status=row.get("ledger_status"),
    )


def _sync_order(record: AccountRecord) -> tuple[bool, datetime, str]:
    """PostgresStore's ``order by last_sync_at asc nulls first, id``."""
    last = record.last_sync_at
    return (last is not None, last or datetime.min.replace(tzinfo=UTC), record.id)


class SupabaseRestStore:
    """The app database over Supabase's Data API, with the PostgresStore interface.

    Thread-safe (one httpx connection pool); never pickled or passed to tasks. ``transport``
    replaces the network (tests); ``sleep`` the backoff wait.
    """

    def __init__(
        self,
        url: str,
        key: str,
        *,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 10.0,
        chunk_bytes: int = DEFAULT_MAX_BYTES,
        max_attempts: int = 4,
        retry_backoff_s: float = 0.5,
        http2: bool = False,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not url or not key:
            raise ValueError("a Supabase URL and service key are required")
        self._url = url.rstrip("/")
        self._key = key
        self._chunk_bytes = chunk_bytes
        self._max_attempts = max(1, max_attempts)
        self._backoff_s = retry_backoff_s
        self._sleep = sleep
        self._last = threading.local()
        self._http = httpx.Client(
            http2=http2,
            timeout=httpx.Timeout(timeout_s, connect=min(connect_timeout_s, timeout_s)),
            limits=httpx.Limits(
                max_connections=32, max_keepalive_connections=16, keepalive_expiry=20.0
            ),
            transport=transport,
            event_hooks={"request": [self._drop_opaque_bearer], "response": [self._remember]},
        )
        options = ClientOptions(
            httpx_client=self._http,
            postgrest_client_retry=False,
            auto_refresh_token=False,
            persist_session=False,
        )
        self._client = Client(self._url, key, options)
        self._rest = self._client.postgrest  # built once, shared by threads

    def __repr__(self) -> str:
        return f"SupabaseRestStore({self._url!r})"

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------ HTTP plumbing

    def _drop_opaque_bearer(self, request: httpx.Request) -> None:
        if self._key.startswith("sb_") and (
            request.headers.get("authorization") == f"Bearer {self._key}"
        ):
            del request.headers["authorization"]

    def _remember(self, response: httpx.Response) -> None:
        self._last.status = response.status_code

    def _backoff(self, attempt: int) -> float:
        ceiling = min(MAX_BACKOFF_S, self._backoff_s * 2 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _execute(self, what: str, builder: Any) -> Any:
        """Run one PostgREST request with the retry policy; return its ``data``."""
        for attempt in range(1, self._max_attempts + 1):
            self._last.status = None
            started = time.perf_counter()
            try:
                data = builder.execute().data
                log.debug("%s took %.1f ms", what, (time.perf_counter() - started) * 1000)
                return data
            except APIError as exc:
                error = _translate(what, exc, self._last.status)
            except httpx.TransportError as exc:  # connect/read/write errors and timeouts
                error = StoreUnavailable(f"database unavailable: {what}: {type(exc).__name__}")
            except ValueError as exc:  # a body JSON cannot carry (NaN)
                raise StoreError(f"{what}: payload is not valid JSON: {exc}") from None
            if not error.transient or attempt == self._max_attempts:
                raise error
            delay = self._backoff(attempt)
            log.warning("%s failed (%s); retry %d/%d in %.2fs", what, error.message,
                        attempt, self._max_attempts - 1, delay)
            self._sleep(delay)
        raise AssertionError("unreachable")

    def _rpc(self, fn: str, params: dict[str, Any]) -> Any:
        return self._execute(fn, self._rest.rpc(fn, params))

    def sync_duration_estimates(
        self, account_ids: Sequence[str], last: int
    ) -> list[dict[str, Any]]:
        rows = self._rpc(
            "mt5_sync_duration_estimates", {"p_account_ids": list(account_ids), "p_last": last}
        )
        return list(rows or [])

    def record_syncs_deferred(self, entry: Mapping[str, Any]) -> int:
        return int(self._rpc("mt5_record_syncs_deferred", {"p": dict(entry)}) or 0)

    # ------------------------------------------------------------ account health

    def account_schedule(
        self, account_ids: Sequence[str] | None, now: datetime
    ) -> list[dict[str, Any]]:
        """See PostgresStore.account_schedule."""
        ids = None if account_ids is None else [
            i for i in (_uuid_or_none(a) for a in account_ids) if i is not None
        ]
        rows = self._rpc("mt5_account_schedule_at",
                         {"p_now": now.isoformat(), "p_account_ids": ids}) or []
        return [
            {"account_id": str(r["account_id"]), "state": r["state"], "reason": r["reason"],
             "message": r["message"], "next_attempt_at": _ts(r["next_attempt_at"]),
             "due": bool(r["due"])}
            for r in rows
        ]

    def account_freshness(self, now: datetime, slo_s: int) -> list[dict[str, Any]]:
        """See PostgresStore.account_freshness."""
        rows = self._rpc("mt5_account_freshness_at",
                         {"p_now": now.isoformat(), "p_slo_s": int(slo_s)}) or []
        return [
            {"account_id": str(r["account_id"]), "login_number": r["login_number"],
             "broker_server": r["broker_server"], "is_active": r["is_active"],
             "last_successful_sync_at": _ts(r["last_successful_sync_at"]),
             "staleness_s": None if r["staleness_s"] is None else float(r["staleness_s"]),
             "state": r["state"], "reason": r["reason"],
             "next_attempt_at": _ts(r["next_attempt_at"])}
            for r in rows
        ]

    def pause_failing_servers(self, entry: Mapping[str, Any]) -> list[dict[str, Any]]:
        """See PostgresStore.pause_failing_servers."""
        rows = self._rpc("mt5_pause_failing_servers", {"p": _plain(entry)}) or []
        return [{**r, "paused_until": _ts(r["paused_until"])} for r in rows]

    def take_health_events(self, limit: int = 100) -> list[dict[str, Any]]:
        """See PostgresStore.take_health_events."""
        rows = self._rpc("mt5_take_health_events", {"p_limit": int(limit)}) or []
        return [
            {**r, "account_id": str(r["account_id"]), "occurred_at": _ts(r["occurred_at"]),
             "next_attempt_at": _ts(r["next_attempt_at"]),
             "sync_id": None if r["sync_id"] is None else str(r["sync_id"])}
            for r in rows
        ]

    # ------------------------------------------------------------ reads

    def list_active_accounts(self, account_ids: Sequence[str] | None = None) -> list[AccountRecord]:
        """Active accounts, least recently synced first (the PostgresStore order)."""
        rows: list[dict[str, Any]] = []
        columns = ",".join(ACCOUNT_COLUMNS)
        if account_ids is not None:
            ids = sorted({i for i in (_uuid_or_none(a) for a in account_ids) if i})
            for start in range(0, len(ids), IDS_PER_REQUEST):
                query = (self._rest.from_("trading_accounts").select(columns)
                         .eq("is_active", True).in_("id", ids[start:start + IDS_PER_REQUEST]))
                rows.extend(self._execute("list_active_accounts", query))
        else:
            after: str | None = None
            while True:  # until an empty page: a lower max-rows cap cannot cut the list short
                query = self._rest.from_("trading_accounts").select(columns).eq("is_active", True)
                if after is not None:
                    query = query.gt("id", after)
                page = self._execute(
                    "list_active_accounts", query.order("id").limit(PAGE_SIZE)
                )
                if not page:
                    break
                rows.extend(page)
                after = str(page[-1]["id"])
        return sorted((_account(r) for r in rows), key=_sync_order)

    def get_account(self, account_id: str) -> AccountRecord | None:
        """One account, active or not; ``None`` if unknown (or not a UUID)."""
        key = _uuid_or_none(account_id)
        if key is None:
            return None
        query = (self._rest.from_("trading_accounts").select(",".join(ACCOUNT_COLUMNS))
                 .eq("id", key).limit(1))
        rows = self._execute("get_account", query)
        return _account(rows[0]) if rows else None

    # ------------------------------------------------------------ the sync write path

    def commit_account_sync(self, payload: CommitPayload) -> dict[str, Any]:
        """Write one account's sync atomically; staged in chunks above ``chunk_bytes``."""
        body = _plain(payload)
        plan = plan_commit(body, self._chunk_bytes)
        if not plan.staged:
            return dict(self._rpc("mt5_commit_account_sync", {"p": plan.header}) or {})
        log.info("commit of sync %s is %d bytes: staging %d chunks", body.get("sync_id"),
                 plan.body_size, len(plan.chunks))
        for attempt in (1, 2):
            self._stage(plan)
            try:
                return dict(self._rpc("mt5_commit_staged_account_sync", {"p": plan.header}) or {})
            except StoreError as exc:
                if attempt == 2 or _STAGING_INCOMPLETE not in exc.message:
                    raise
                log.warning("staged chunks of sync %s went missing; staging again",
                            body.get("sync_id"))
        raise AssertionError("unreachable")

    def _stage(self, plan: CommitPlan) -> None:
        sync_id, account_id = plan.header["sync_id"], plan.header["account_id"]
        for chunk in plan.chunks:
            row = {  # a complete row: every column but the database-owned created_at
                "sync_id": sync_id, "part": chunk.part, "seq": chunk.seq,
                "account_id": account_id, "row_count": len(chunk.rows), "rows": chunk.rows,
            }  # fmt: skip
            query = self._rest.from_(STAGING_TABLE).upsert(
                [row], on_conflict="sync_id,part,seq", returning=ReturnMethod.minimal
            )
            self._execute(f"stage {chunk.part}[{chunk.seq}]", query)

    def record_sync_failure(self, payload: FailurePayload) -> None:
        """Count a failed sync and log it (once per sync_id); drop its staged chunks."""
        self._rpc("mt5_record_sync_failure", {"p": _plain(payload)})
        try:
            self._execute(
                "drop staged chunks",
                self._rest.from_(STAGING_TABLE).delete(returning=ReturnMethod.minimal)
                .eq("sync_id", str(payload["sync_id"])),
            )
        except SyncError as exc:  # leftovers are cleared by the account's next commit
            log.warning("could not drop staged chunks of sync %s: %s", payload["sync_id"], exc)

    def mark_sync_started(self, entry: Mapping[str, Any]) -> None:
        """Upsert the 'processing' log row of a sync (see PostgresStore.mark_sync_started)."""
        keys = ("sync_id", "account_id", "execution_id", "flow_run_id", "trigger", "sync_type",
                "started_at", "lease_holder")
        self._rpc("mt5_mark_sync_started", {"p": _plain({k: entry.get(k) for k in keys})})

    def acquire_sync_lease(self, account_id: str, holder: str, ttl_seconds: int) -> bool:
        """Take (or extend) the account's sync lease; False while another holder has it."""
        granted = self._rpc(
            "mt5_acquire_sync_lease",
            {"p_account_id": account_id, "p_holder": holder, "p_ttl_seconds": int(ttl_seconds)},
        )
        return granted is True

    def release_sync_lease(self, account_id: str, holder: str) -> None:
        """Release the lease if ``holder`` still holds it (no-op otherwise)."""
        self._rpc("mt5_release_sync_lease", {"p_account_id": account_id, "p_holder": holder})

    # ------------------------------------------------------------ the cycle's claim queue

    def open_sync_cycle(
        self, execution_id: str, trigger: str, sync_type: str, account_ids: Sequence[str] | None,
        excluded_ids: Sequence[str] = (),
    ) -> None:
        ids = None if account_ids is None else [
            i for i in (_uuid_or_none(a) for a in account_ids) if i]
        self._rpc("mt5_open_sync_cycle", {
            "p_execution_id": execution_id, "p_trigger": trigger, "p_sync_type": sync_type,
            "p_account_ids": ids, "p_excluded_ids": list(excluded_ids) or None,
        })

    def claim_cycle_accounts(
        self, execution_id: str, host: str, limit: int, lease_seconds: int,
        flow_run_id: str | None = None, estimate_syncs: int = 0,
    ) -> list[dict[str, Any]]:
        rows = self._rpc("mt5_claim_cycle_accounts", {
            "p_execution_id": execution_id, "p_host": host, "p_limit": int(limit),
            "p_lease_seconds": int(lease_seconds), "p_flow_run_id": flow_run_id,
            "p_estimate_syncs": int(estimate_syncs),
        })
        return list(rows or [])

    def unclaim_cycle_accounts(
        self, execution_id: str, account_ids: Sequence[str], outcome: str
    ) -> None:
        self._rpc("mt5_unclaim_cycle_accounts", {
            "p_execution_id": execution_id, "p_account_ids": list(account_ids),
            "p_outcome": outcome,
        })

    def record_cycle_shard(
        self, execution_id: str, host: str, flow_run_id: str | None,
        summary: Mapping[str, Any] | None,
    ) -> None:
        self._rpc("mt5_record_cycle_shard", {
            "p_execution_id": execution_id, "p_host": host, "p_flow_run_id": flow_run_id,
            "p_summary": None if summary is None else dict(summary),
        })

    def cycle_report(self, execution_id: str) -> dict[str, Any]:
        return dict(self._rpc("mt5_cycle_report", {"p_execution_id": execution_id}) or {})

    def renew_sync_leases(self, holders: Sequence[str], ttl_seconds: int) -> set[str]:
        if not holders:
            return set()
        rows = self._rpc("mt5_renew_sync_leases", {
            "p_holders": list(holders), "p_ttl_seconds": int(ttl_seconds)})
        # a set-returning function of a scalar comes back as a list of scalars
        return {str(r if not isinstance(r, dict) else next(iter(r.values())))
                for r in rows or []}

    def break_sync_lease(self, account_id: str, holder: str) -> bool:
        return self._rpc(
            "mt5_break_sync_lease", {"p_account_id": account_id, "p_holder": holder}
        ) is True

    def sync_lease_of(self, account_id: str) -> dict[str, Any] | None:
        rows = self._rpc("mt5_sync_lease_of", {"p_account_id": account_id})
        return dict(rows[0]) if rows else None

    def finish_verify_sync(self, entry: Mapping[str, Any]) -> bool:
        """Write a verify sync's outcome (see PostgresStore.finish_verify_sync)."""
        return self._rpc("mt5_finish_verify_sync", {"p": _plain(dict(entry))}) is True


__all__ = ["ACCOUNT_COLUMNS", "STAGING_TABLE", "SupabaseRestStore"]
