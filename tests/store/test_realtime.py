"""The synced tables in Supabase Realtime's publication (migration ..._realtime.sql)."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mt5_sync.localstack import EmbeddedPostgres
from mt5_sync.store import apply_migrations
from mt5_sync.store.migrations import MIGRATIONS_DIR

PUBLISHED = ("account_snapshots", "cash_flows", "deals", "sync_logs", "trades",
             "trading_accounts")
CREDENTIAL = "investor_password_encrypted"
REALTIME = "20261130000100_realtime.sql"
_counter = itertools.count()


@pytest.fixture
def blank_url(pg: EmbeddedPostgres) -> str:
    return pg.create_database(f"rt{next(_counter)}", drop=True)


def execute(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def published(url: str) -> dict[str, list[str]]:
    """Table -> published columns of supabase_realtime."""
    with psycopg.connect(url) as conn:
        found = conn.execute(
            "select tablename, attnames from pg_publication_tables"
            " where pubname = 'supabase_realtime' and schemaname = 'public'"
        ).fetchall()
    return {str(t): list(cols) for t, cols in found}


def columns(url: str, table: str) -> list[str]:
    """The columns a publication can carry: generated ones (trades.type) are not replicated."""
    with psycopg.connect(url) as conn:
        found: list[Any] = conn.execute(
            "select attname from pg_attribute where attrelid = %s::regclass"
            " and attnum > 0 and not attisdropped and attgenerated = '' order by attnum",
            (f"public.{table}",),
        ).fetchall()
    return [str(r[0]) for r in found]


def test_the_synced_tables_are_published_without_the_credential(blank_url: str) -> None:
    execute(blank_url, "create publication supabase_realtime")  # as on every Supabase project
    apply_migrations(blank_url)
    tables = published(blank_url)
    assert sorted(tables) == sorted(PUBLISHED)
    account_columns = columns(blank_url, "trading_accounts")
    assert CREDENTIAL in account_columns
    # Every column but the credential: a column added later fails here until it is published.
    assert sorted(tables["trading_accounts"]) == sorted(set(account_columns) - {CREDENTIAL})
    for table in PUBLISHED:
        if table != "trading_accounts":
            assert sorted(tables[table]) == sorted(columns(blank_url, table)), table


def test_plain_postgresql_gets_no_publication(blank_url: str) -> None:
    apply_migrations(blank_url)
    with psycopg.connect(blank_url) as conn:
        assert conn.execute("select count(*) from pg_publication").fetchone() == (0,)


def test_a_publication_the_owner_shaped_is_completed(blank_url: str, tmp_path: Path) -> None:
    """Tables already published stay; trading_accounts published whole gets its column list."""
    before = tmp_path / "before"
    before.mkdir()
    for path in MIGRATIONS_DIR.glob("*.sql"):
        if path.name != REALTIME:
            shutil.copy(path, before / path.name)
    apply_migrations(blank_url, before)
    execute(blank_url, "create publication supabase_realtime for table public.trades,"
                       " public.trading_accounts, public.sync_quarantine")
    assert CREDENTIAL in published(blank_url)["trading_accounts"]
    assert apply_migrations(blank_url) == [REALTIME]
    tables = published(blank_url)
    assert sorted(tables) == sorted([*PUBLISHED, "sync_quarantine"])  # theirs is kept
    assert CREDENTIAL not in tables["trading_accounts"]


def test_a_for_all_tables_publication_is_left_alone(blank_url: str) -> None:
    execute(blank_url, "create publication supabase_realtime for all tables")
    apply_migrations(blank_url)
    with psycopg.connect(blank_url) as conn:
        assert conn.execute(
            "select puballtables, (select count(*) from pg_publication_rel)"
            " from pg_publication where pubname = 'supabase_realtime'"
        ).fetchone() == (True, 0)
