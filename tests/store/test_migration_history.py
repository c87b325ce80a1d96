"""One migration history with the Supabase CLI, and the move from the old public table.

No CLI here: these tests recreate what it does, from its source (supabase/cli
``pkg/migration/history.go`` and ``file.go``): the DDL below is its ``CreateMigrationTable``,
and a CLI-applied file is each statement of its split executed in turn, then
``INSERT INTO supabase_migrations.schema_migrations(version, name, statements)``.
"""

from __future__ import annotations

import itertools
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mt5_sync.localstack import EmbeddedPostgres
from mt5_sync.store import MigrationError, apply_migrations
from mt5_sync.store.migrations import CHECKSUM_TABLE, HISTORY_TABLE, MIGRATIONS_DIR, discover
from mt5_sync.store.schema_dump import dump_schema
from mt5_sync.store.sql_split import split_and_trim

MIGRATIONS = discover()
ALL_FILES = [m.filename for m in MIGRATIONS]
_counter = itertools.count()

# supabase/cli pkg/migration/history.go, CreateMigrationTable (run as one batch by the CLI).
CLI_CREATE_TABLE = (
    "SET lock_timeout = '4s'",
    "CREATE SCHEMA IF NOT EXISTS supabase_migrations",
    "CREATE TABLE IF NOT EXISTS supabase_migrations.schema_migrations"
    " (version text NOT NULL PRIMARY KEY)",
    "ALTER TABLE supabase_migrations.schema_migrations ADD COLUMN IF NOT EXISTS statements text[]",
    "ALTER TABLE supabase_migrations.schema_migrations ADD COLUMN IF NOT EXISTS name text",
)
# ... and what `supabase migration list` / `db push` read back.
CLI_SELECT = ("SELECT version, coalesce(name, '') as name, statements"
              " FROM supabase_migrations.schema_migrations ORDER BY version")

# The table earlier versions of this project created.
LEGACY_DDL = """
create table public.schema_migrations (
    version text primary key,
    name text not null,
    checksum text not null,
    applied_at timestamptz not null default now()
)
"""


@pytest.fixture
def blank_url(pg: EmbeddedPostgres) -> str:
    return pg.create_database(f"hist{next(_counter)}", drop=True)


def rows(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def cli_push(url: str, files: int) -> None:
    """Apply the first ``files`` migrations the way ``supabase db push`` does."""
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in CLI_CREATE_TABLE:
            conn.execute(statement)  # type: ignore[arg-type]
        for migration in MIGRATIONS[:files]:
            conn.execute("RESET ALL")
            statements = split_and_trim(migration.sql)
            with conn.transaction():  # ExecBatch is one implicit transaction
                for statement in statements:
                    conn.execute(statement)  # type: ignore[arg-type]
                conn.execute(
                    "INSERT INTO supabase_migrations.schema_migrations(version, name, statements)"
                    " VALUES(%s, %s, %s)",
                    (migration.version, migration.name, statements),
                )


def cli_expected() -> list[tuple[str, str, list[str]]]:
    return [(m.version, m.name, split_and_trim(m.sql)) for m in MIGRATIONS]


# ---------------------------------------------------------------- our runner, read by the CLI


def test_our_history_is_the_clis_format(blank_url: str) -> None:
    assert apply_migrations(blank_url) == ALL_FILES
    assert rows(blank_url, CLI_SELECT) == cli_expected()
    assert all(re.fullmatch(r"\d{14}", version) for version, _, _ in rows(blank_url, CLI_SELECT))
    # The CLI opens the table we created without complaint (its DDL is idempotent on it) ...
    with psycopg.connect(blank_url, autocommit=True) as conn:
        for statement in CLI_CREATE_TABLE:
            conn.execute(statement)  # type: ignore[arg-type]
        # ... and the column types are the ones it declares.
        assert conn.execute(
            "select attname, format_type(atttypid, atttypmod), attnotnull from pg_attribute"
            " where attrelid = 'supabase_migrations.schema_migrations'::regclass"
            " and attnum > 0 order by attnum"
        ).fetchall() == [("version", "text", True), ("statements", "text[]", False),
                         ("name", "text", False)]
    # Nothing pending for the CLI: every local version is in the remote history, in order.
    versions = [r[0] for r in rows(blank_url, "SELECT version FROM"
                                   " supabase_migrations.schema_migrations ORDER BY version")]
    assert versions == [m.version for m in MIGRATIONS]


# ---------------------------------------------------------------- the CLI's history, read by us


def test_a_cli_migrated_database_is_up_to_date_for_us(blank_url: str, db_url: str) -> None:
    cli_push(blank_url, len(MIGRATIONS))
    assert apply_migrations(blank_url) == []
    assert rows(blank_url, CLI_SELECT) == cli_expected()  # untouched
    # Our checksums were recorded for the files the CLI applied ...
    assert rows(blank_url, f"select version, checksum from {CHECKSUM_TABLE} order by version") \
        == [(m.version, m.checksum) for m in MIGRATIONS]
    # ... and the statements the history holds rebuild exactly the schema our runner builds.
    assert dump_schema(blank_url) == dump_schema(db_url)


def test_we_apply_only_what_the_cli_has_not(blank_url: str) -> None:
    cli_push(blank_url, 3)
    assert apply_migrations(blank_url) == ALL_FILES[3:]
    assert rows(blank_url, CLI_SELECT) == cli_expected()


def test_an_edited_cli_applied_file_is_refused_once_seen(blank_url: str, tmp_path: Path) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, copy)
    cli_push(blank_url, len(MIGRATIONS))
    assert apply_migrations(blank_url, copy) == []  # records the checksums
    edited = copy / ALL_FILES[1]
    edited.write_text(edited.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match=re.escape(f"{ALL_FILES[1]} was changed")):
        apply_migrations(blank_url, copy)


def test_the_projects_own_cli_migrations_are_tolerated(blank_url: str) -> None:
    """A user's own migrations (applied by the CLI from their directory) are not ours to judge."""
    cli_push(blank_url, 0)
    with psycopg.connect(blank_url) as conn:
        conn.execute(f"insert into {HISTORY_TABLE} (version, name, statements)"
                     " values ('20200101000000', 'their_own', '{}')")
    assert apply_migrations(blank_url) == ALL_FILES
    assert len(rows(blank_url, CLI_SELECT)) == len(ALL_FILES) + 1


# ---------------------------------------------------------------- public.schema_migrations


def make_legacy(url: str, directory: Path = MIGRATIONS_DIR, *, checksum: str | None = None
                ) -> datetime:
    """A database migrated by an earlier mt5-sync: its history in public.schema_migrations."""
    applied = {m.version: m for m in discover(directory)}
    apply_migrations(url, directory)
    applied_at = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    with psycopg.connect(url) as conn:
        conn.execute("drop schema supabase_migrations cascade")
        conn.execute(LEGACY_DDL)  # type: ignore[arg-type]
        for m in applied.values():
            conn.execute("insert into public.schema_migrations values (%s, %s, %s, %s)",
                         (m.version, m.name, checksum or m.checksum, applied_at))
    return applied_at


def test_the_old_public_history_is_moved_once_and_dropped(blank_url: str) -> None:
    applied_at = make_legacy(blank_url)
    assert apply_migrations(blank_url) == []  # nothing re-applied
    assert rows(blank_url, "select to_regclass('public.schema_migrations')") == [(None,)]
    assert rows(blank_url, CLI_SELECT) == cli_expected()
    assert rows(blank_url, f"select version, checksum, applied_at from {CHECKSUM_TABLE}"
                           " order by version") == [
        (m.version, m.checksum, applied_at) for m in MIGRATIONS]
    assert apply_migrations(blank_url) == []  # and moved once


def test_the_move_applies_what_the_old_history_lacked(blank_url: str, tmp_path: Path) -> None:
    """A database of the previous release (without the newest file) gets just that file."""
    previous = tmp_path / "previous"
    previous.mkdir()
    for m in MIGRATIONS[:-1]:
        shutil.copy(m.path, previous / m.filename)
    make_legacy(blank_url, previous)
    assert apply_migrations(blank_url) == [ALL_FILES[-1]]
    assert rows(blank_url, CLI_SELECT) == cli_expected()
    assert rows(blank_url, "select to_regclass('public.schema_migrations')") == [(None,)]


def test_an_edited_file_stops_the_move_and_keeps_the_old_table(blank_url: str) -> None:
    make_legacy(blank_url, checksum="0" * 64)
    with pytest.raises(MigrationError, match="was changed after it was applied"):
        apply_migrations(blank_url)
    # One transaction: the old table is still there, the new history was not even created.
    assert rows(blank_url, "select count(*) from public.schema_migrations") == [(len(MIGRATIONS),)]
    assert rows(blank_url, f"select to_regclass('{HISTORY_TABLE}')") == [(None,)]


def test_another_frameworks_schema_migrations_is_left_alone(blank_url: str) -> None:
    with psycopg.connect(blank_url) as conn:
        conn.execute("create table public.schema_migrations (version varchar primary key)")
        conn.execute("insert into public.schema_migrations values ('20190101000000')")
    assert apply_migrations(blank_url) == ALL_FILES
    assert rows(blank_url, "select version from public.schema_migrations") == [
        ("20190101000000",)]
