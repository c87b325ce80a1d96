"""One store interface, two transports, chosen by settings.

Why a Protocol and a factory: the flows must not care whether rows travel over a direct
Postgres connection (psycopg) or Supabase's Data API (supabase-py); both ship the same JSON to
the same database functions. ``make_store`` is also where a missing or contradictory database
configuration becomes a clear startup error (``Settings()`` itself stays buildable without a
database, for commands such as ``mt5-sync generate-key``). supabase-py is imported only when
that transport is chosen (it costs ~0.9 s of import time).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from mt5_sync.contracts import CommitPayload, FailurePayload
from mt5_sync.settings import Settings, StoreConfig
from mt5_sync.store.postgres import PooledPostgresStore, PostgresStore
from mt5_sync.store.records import AccountRecord


@runtime_checkable
class Store(Protocol):
    """What the flows use. Every write is idempotent, so callers may retry any of them."""

    def list_active_accounts(
        self, account_ids: Sequence[str] | None = None
    ) -> list[AccountRecord]: ...

    def get_account(self, account_id: str) -> AccountRecord | None: ...

    def commit_account_sync(self, payload: CommitPayload) -> dict[str, Any]: ...

    def record_sync_failure(self, payload: FailurePayload) -> None: ...

    def mark_sync_started(self, entry: Mapping[str, Any]) -> None: ...

    def acquire_sync_lease(self, account_id: str, holder: str, ttl_seconds: int) -> bool: ...

    def release_sync_lease(self, account_id: str, holder: str) -> None: ...

    def sync_duration_estimates(
        self, account_ids: Sequence[str], last: int
    ) -> list[dict[str, Any]]: ...

    def record_syncs_deferred(self, entry: Mapping[str, Any]) -> int: ...

    # the cycle's claim queue, shared by every host's shard (migration 20261203000100)
    def open_sync_cycle(
        self, execution_id: str, trigger: str, sync_type: str, account_ids: Sequence[str] | None,
        excluded_ids: Sequence[str] = (),
    ) -> None: ...

    def claim_cycle_accounts(
        self, execution_id: str, host: str, limit: int, lease_seconds: int,
        flow_run_id: str | None = None, estimate_syncs: int = 0,
    ) -> list[dict[str, Any]]: ...

    def unclaim_cycle_accounts(
        self, execution_id: str, account_ids: Sequence[str], outcome: str
    ) -> None: ...

    def record_cycle_shard(
        self, execution_id: str, host: str, flow_run_id: str | None,
        summary: Mapping[str, Any] | None,
    ) -> None: ...

    def cycle_report(self, execution_id: str) -> dict[str, Any]: ...

    def renew_sync_leases(self, holders: Sequence[str], ttl_seconds: int) -> set[str]: ...

    def break_sync_lease(self, account_id: str, holder: str) -> bool: ...

    def sync_lease_of(self, account_id: str) -> dict[str, Any] | None: ...

    def account_schedule(
        self, account_ids: Sequence[str] | None, now: datetime
    ) -> list[dict[str, Any]]: ...

    def account_freshness(self, now: datetime, slo_s: int) -> list[dict[str, Any]]: ...

    def pause_failing_servers(self, entry: Mapping[str, Any]) -> list[dict[str, Any]]: ...

    def take_health_events(self, limit: int = 100) -> list[dict[str, Any]]: ...

    def finish_verify_sync(self, entry: Mapping[str, Any]) -> bool: ...


def make_store(config: Settings | StoreConfig, *, pool_size: int = 0) -> Store:
    """The store the settings ask for; raises StoreConfigError (a ValueError) when they are
    missing or inconsistent (see ``Settings.require_store_config``).

    ``pool_size`` > 0 (direct Postgres only): transactions run on a pool of up to that many
    connections, opened now; the owner closes it (``close()``). Without it every call opens
    its own connection.
    """
    if isinstance(config, Settings):
        config = config.require_store_config()
    if config.transport == "postgres":
        assert config.database_url is not None
        if pool_size > 0:
            pooled = PooledPostgresStore(config.database_url.get_secret_value(),
                                         max_size=pool_size)
            pooled.open()
            return pooled
        return PostgresStore(config.database_url.get_secret_value())
    from mt5_sync.store.supabase_rest import SupabaseRestStore

    assert config.supabase_url is not None and config.supabase_key is not None
    return SupabaseRestStore(
        config.supabase_url,
        config.supabase_key.get_secret_value(),
        timeout_s=config.timeout_s,
        connect_timeout_s=config.connect_timeout_s,
        chunk_bytes=config.chunk_bytes,
        max_attempts=config.max_attempts,
        retry_backoff_s=config.retry_backoff_s,
        http2=config.http2,
    )


__all__ = ["Store", "make_store"]
