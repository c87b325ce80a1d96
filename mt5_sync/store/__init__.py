"""The app database: migrations, the PostgreSQL adapter and the records it returns.

All write semantics live in SQL functions (``supabase/migrations``); :class:`PostgresStore`
only ships JSON payloads to them, so a Supabase REST (``.rpc``) transport would behave the same.
"""

from mt5_sync.store.migrations import MigrationError, apply_migrations
from mt5_sync.store.postgres import PostgresStore
from mt5_sync.store.records import AccountRecord

__all__ = ["AccountRecord", "MigrationError", "PostgresStore", "apply_migrations"]
