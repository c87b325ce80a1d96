"""Process-wide resources the tasks share, built from settings, never passed as arguments.

Prefect hashes task inputs for cache keys and records flow parameters on the server, so live
clients and secrets stay here: tasks receive ids and look the resources up.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from mt5_sync.settings import Settings, StoreConfig, load_settings
from mt5_sync.store.factory import Store, make_store
from mt5_sync.sync.leases import LeaseKeeper
from mt5_sync.terminal.pool import TerminalPool, get_terminal_pool

T = TypeVar("T")

# Database calls are short but blocking; a dedicated pool keeps them from queuing behind the
# default executor (cpu + 4 threads) when ten accounts commit at once.
_DB_EXECUTOR = ThreadPoolExecutor(max_workers=24, thread_name_prefix="db")


def settings() -> Settings:
    return load_settings()


_STORES: dict[StoreConfig, Store] = {}
_STORES_LOCK = threading.Lock()
_MAX_STORES = 4


def _close(store: Store) -> None:
    close = getattr(store, "close", None)
    if close is not None:
        close()


def _store(config: StoreConfig) -> Store:
    # Pooled: a fresh connection per call cost each account ~4 connects and as many cold
    # backends (plpgsql compiles per session): ~40 ms of a 2,000-deal commit alone, and
    # PostgreSQL CPU the cycle shares with everything else (docs/benchmarks.md).
    with _STORES_LOCK:
        store = _STORES.get(config)
        if store is None:
            # A process that moves between databases (tests, a long-lived API replica) closes
            # the pool it stops using rather than leaving its connections open until exit.
            while len(_STORES) >= _MAX_STORES:
                _close(_STORES.pop(next(iter(_STORES))))
            store = _STORES[config] = make_store(config, pool_size=settings().slot_count + 4)
        return store


def close_stores() -> None:
    """Close every store this process opened (their pooled connections with them)."""
    with _STORES_LOCK:
        stores = list(_STORES.values())
        _STORES.clear()
    for store in stores:
        _close(store)


atexit.register(close_stores)


def store() -> Store:
    """This process's store: direct Postgres or Supabase REST, as the settings choose."""
    return _store(settings().require_store_config())


_KEEPERS: dict[tuple[StoreConfig, int], LeaseKeeper] = {}


def lease_keeper() -> LeaseKeeper:
    """This process's lease keeper (one per store and TTL): renews every lease held here."""
    config, ttl = settings().require_store_config(), settings().lease_ttl_s
    with _STORES_LOCK:
        keeper = _KEEPERS.get((config, ttl))
    if keeper is None:
        keeper = LeaseKeeper(
            lambda holders, ttl_s: _store(config).renew_sync_leases(holders, ttl_s), ttl
        )
        with _STORES_LOCK:
            keeper = _KEEPERS.setdefault((config, ttl), keeper)
    return keeper


def terminals() -> TerminalPool:
    return get_terminal_pool(settings())


async def in_db_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_DB_EXECUTOR, partial(fn, *args, **kwargs))


async def in_terminal_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(terminals().executor, partial(fn, *args, **kwargs))
