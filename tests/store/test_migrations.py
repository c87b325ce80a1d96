"""The migration runner and the migrations, on real PostgreSQL (18, and 15 when installed)."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from mt5_sync.errors import StoreError
from mt5_sync.localstack import EmbeddedPostgres
from mt5_sync.store import MigrationError, PostgresStore, apply_migrations
from mt5_sync.store.migrations import HISTORY_TABLE, MIGRATIONS_DIR, discover

from . import LOGIN, SERVER, commit_payload, failure_payload

REPO_ROOT = Path(__file__).resolve().parents[2]
ALL_FILES = sorted(p.name for p in MIGRATIONS_DIR.glob("*.sql"))
_counter = itertools.count()

PG15_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture
def blank_url(pg: EmbeddedPostgres) -> str:
    """An empty database (not cloned from the migrated template)."""
    return pg.create_database(f"mig{next(_counter)}", drop=True)


@pytest.fixture
def migrations_copy(tmp_path: Path) -> Path:
    target = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, target)
    return target


def scalar(url: str, sql: str) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()  # type: ignore[arg-type]
        return None if row is None else row[0]


def test_files_are_named_and_ordered() -> None:
    migrations = discover()
    assert [m.filename for m in migrations] == ALL_FILES
    assert ALL_FILES[:3] == [
        "20261122000100_supabase_compat.sql",
        "20261122000200_core_tables.sql",
        "20261122000300_sync_functions.sql",
    ]
    for m in migrations:  # core PostgreSQL only: the project needs no extension
        assert "create extension" not in m.sql.lower(), m.filename


def test_applies_in_order_once(blank_url: str) -> None:
    assert apply_migrations(blank_url) == ALL_FILES
    assert apply_migrations(blank_url) == []

    with psycopg.connect(blank_url) as conn:
        rows = conn.execute(
            "select h.version, h.name, c.checksum, c.applied_at"
            " from supabase_migrations.schema_migrations h"
            " join supabase_migrations.mt5sync_migration_checksums c using (version)"
            " order by h.version"
        ).fetchall()
        assert [f"{v}_{n}.sql" for v, n, _, _ in rows] == ALL_FILES
        assert all(len(c) == 64 and at is not None for _, _, c, at in rows)
        tables = {
            r[0] for r in conn.execute(
                "select table_name from information_schema.tables where table_schema = 'public'"
            )
        }
        assert {"trading_accounts", "trades", "deals", "cash_flows", "account_snapshots",
                "sync_logs", "sync_quarantine"} <= tables
        assert "schema_migrations" not in tables  # the history is Supabase's, not in public
        functions = {
            r[0] for r in conn.execute(
                "select p.oid::regprocedure::text from pg_proc p"
                " where p.pronamespace = 'public'::regnamespace and p.proname like 'mt5_%'"
            )
        }
        assert {
            "mt5_commit_account_sync(jsonb)",
            "mt5_record_sync_failure(jsonb)",
            "mt5_mark_sync_started(jsonb)",
            "mt5_acquire_sync_lease(uuid,uuid,integer)",
            "mt5_release_sync_lease(uuid,uuid)",
        } <= functions


def test_trades_and_deals_are_keyed_per_account(db_url: str) -> None:
    """Tickets are unique per trade server only: no unique index on ticket alone."""
    with psycopg.connect(db_url) as conn:
        keys = {
            r[0]: r[1] for r in conn.execute(
                "select c.conname, pg_get_constraintdef(c.oid) from pg_constraint c"
                " where c.contype in ('p', 'u') and c.conrelid::regclass::text"
                " in ('trades', 'deals', 'cash_flows', 'trading_accounts')"
            )
        }
    assert keys["trades_account_ticket_key"] == "UNIQUE (account_id, ticket)"
    assert keys["deals_pkey"] == "PRIMARY KEY (account_id, ticket)"
    assert keys["cash_flows_pkey"] == "PRIMARY KEY (account_id, deal_ticket)"
    assert keys["trading_accounts_server_login_user_key"] == (
        "UNIQUE (broker_server, login_number, user_id)"
    )
    assert not any(d.endswith("(ticket)") for d in keys.values())


def test_privileges_only_service_role_may_call_the_functions(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "select r.rolname,"
            " has_function_privilege(r.rolname, 'mt5_commit_account_sync(jsonb)', 'execute'),"
            " has_table_privilege(r.rolname, 'trades', 'select')"
            " from pg_roles r where r.rolname in ('anon', 'authenticated', 'service_role')"
        ).fetchall()
    # authenticated may SELECT trades since the RLS migration: policies limit it to its own
    # rows (tests/store/test_rls.py); it still may not call the write functions.
    assert sorted(rows) == [
        ("anon", False, False),
        ("authenticated", False, True),
        ("service_role", True, True),
    ]


def test_checksum_drift_is_detected_before_anything_is_applied(
    blank_url: str, migrations_copy: Path
) -> None:
    apply_migrations(blank_url, migrations_copy)
    edited = migrations_copy / "20261122000200_core_tables.sql"
    edited.write_text(edited.read_text() + "\n-- an innocent-looking edit\n")
    (migrations_copy / "20991231000000_later.sql").write_text("create table later (id int);")

    drift = re.escape("20261122000200_core_tables.sql was changed")
    with pytest.raises(MigrationError, match=drift):
        apply_migrations(blank_url, migrations_copy)
    assert scalar(blank_url, "select to_regclass('public.later')") is None


def test_crlf_checkout_is_not_drift(blank_url: str, migrations_copy: Path) -> None:
    apply_migrations(blank_url, migrations_copy)
    for path in migrations_copy.glob("*.sql"):
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert apply_migrations(blank_url, migrations_copy) == []


def test_new_file_is_applied_alone(blank_url: str, migrations_copy: Path) -> None:
    apply_migrations(blank_url, migrations_copy)
    (migrations_copy / "20991231000000_later.sql").write_text(
        "create table later (id int);\ninsert into later values (1);"
    )
    (migrations_copy / "README.md").write_text("not a migration")
    assert apply_migrations(blank_url, migrations_copy) == ["20991231000000_later.sql"]
    assert scalar(blank_url, "select count(*) from later") == 1


def test_failing_migration_rolls_back_entirely(blank_url: str, migrations_copy: Path) -> None:
    (migrations_copy / "20991231000000_broken.sql").write_text(
        "create table half_done (id int);\nselect no_such_function();"
    )
    (migrations_copy / "20991231000001_after.sql").write_text("create table after_broken (id int);")

    with pytest.raises(StoreError, match=re.escape("20991231000000_broken.sql failed")):
        apply_migrations(blank_url, migrations_copy)
    assert scalar(blank_url, "select to_regclass('public.half_done')") is None
    assert scalar(blank_url, "select to_regclass('public.after_broken')") is None
    assert scalar(blank_url, f"select count(*) from {HISTORY_TABLE}") == len(ALL_FILES)


def test_duplicate_versions_are_refused(migrations_copy: Path) -> None:
    (migrations_copy / "20261122000100_again.sql").write_text("select 1;")
    with pytest.raises(MigrationError, match="share version 20261122000100"):
        discover(migrations_copy)


def test_versions_are_14_digit_timestamps(migrations_copy: Path) -> None:
    """The CLI orders versions as text: only one fixed width orders like numbers."""
    (migrations_copy / "202612_short.sql").write_text("select 1;")
    with pytest.raises(MigrationError, match=r"202612_short\.sql: the version must be a 14-digit"):
        discover(migrations_copy)


def _race(url: str, runners: int) -> tuple[list[list[str]], list[BaseException]]:
    """Start ``runners`` apply_migrations calls on one database at the same instant."""
    barrier = threading.Barrier(runners)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(apply_migrations(url))
        except BaseException as exc:  # pragma: no cover - reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(runners)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_concurrent_runners_do_not_double_apply(pg: EmbeddedPostgres) -> None:
    for _ in range(3):  # a few rounds: the race window is small
        url = pg.create_database(f"mig{next(_counter)}", drop=True)
        results, errors = _race(url, 3)
        assert errors == []
        applied = sorted(itertools.chain.from_iterable(results))
        assert applied == ALL_FILES  # every file exactly once, across all runners
        assert scalar(url, f"select count(*) from {HISTORY_TABLE}") == len(ALL_FILES)


def test_existing_supabase_auth_objects_are_kept(blank_url: str) -> None:
    """On Supabase, auth.uid() and auth.users exist already and must not be replaced."""
    fixed = "11111111-2222-3333-4444-555555555555"
    with psycopg.connect(blank_url, autocommit=True) as conn:
        conn.execute("create schema auth")
        conn.execute("create table auth.users (id uuid primary key, email text, aud text)")
        conn.execute(
            "create function auth.uid() returns uuid language sql stable"
            f" as $$ select '{fixed}'::uuid $$"
        )
    apply_migrations(blank_url)
    assert str(scalar(blank_url, "select auth.uid()")) == fixed
    assert scalar(
        blank_url,
        "select count(*) from information_schema.columns"
        " where table_schema = 'auth' and table_name = 'users' and column_name = 'aud'",
    ) == 1


def test_auth_uid_stub_reads_the_jwt_subject(db_url: str) -> None:
    user = str(uuid.uuid4())
    with psycopg.connect(db_url) as conn:
        assert conn.execute("select auth.uid()").fetchone() == (None,)
        conn.execute("select set_config('request.jwt.claims', %s, true)",
                     (f'{{"sub": "{user}", "role": "authenticated"}}',))
        assert conn.execute("select auth.uid()::text, auth.role()").fetchone() == (
            user, "authenticated")


def test_cli_prints_what_it_applied(blank_url: str) -> None:
    cmd = [sys.executable, "-m", "mt5_sync.store.migrations", blank_url]
    first = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [f"applied {name}" for name in ALL_FILES]
    second = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "nothing to apply" in second.stdout


# ---------------------------------------------------------------- PostgreSQL 15


@pytest.fixture(scope="module")
def pg15_url() -> Iterator[str]:
    """A throwaway PostgreSQL 15 cluster on a Unix socket (CI machines ship its binaries)."""
    if not (PG15_BIN / "postgres").exists():
        pytest.skip("PostgreSQL 15 binaries not installed")
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if as_root and not shutil.which("runuser"):
        pytest.skip("running as root without runuser: initdb refuses root")
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    root = Path(tempfile.mkdtemp(prefix="pg15-", dir="/tmp"))
    data = root / "d"
    data.mkdir()
    if as_root:
        shutil.chown(root, "postgres")
        shutil.chown(data, "postgres")
    env = {**os.environ, "LC_ALL": "C"}
    try:
        subprocess.run(
            [*prefix, str(PG15_BIN / "initdb"), "-D", str(data), "-U", "postgres",
             "--auth=trust", "-E", "UTF8"],
            check=True, capture_output=True, env=env, timeout=120,
        )
        subprocess.run(
            [*prefix, str(PG15_BIN / "pg_ctl"), "-D", str(data), "-w", "-l", str(data / "log"),
             "-o", f"-k {data} -c listen_addresses='' -p 5433", "start"],
            check=True, capture_output=True, env=env, timeout=120,
        )
        try:
            yield f"postgresql://postgres@/postgres?host={data}&port=5433"
        finally:
            subprocess.run(
                [*prefix, str(PG15_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
                capture_output=True, env=env, timeout=120,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_migrations_and_commit_work_on_postgresql_15(pg15_url: str) -> None:
    assert str(scalar(pg15_url, "show server_version")).startswith("15.")
    assert apply_migrations(pg15_url) == ALL_FILES
    assert apply_migrations(pg15_url) == []

    store = PostgresStore(pg15_url)
    account_id = store.register_account(
        user_id=str(uuid.uuid4()), login_number=LOGIN, broker_server=SERVER, broker_name=None,
        investor_password_encrypted="x", server_time_rule="ny+7",
    )
    payload = commit_payload(account_id)
    result = store.commit_account_sync(payload)
    assert (result["trades_synced"], result["deals_synced"]) == (3, 6)
    before = store.fetch_all("select t::text as r from trades t order by ticket")
    store.commit_account_sync(payload)
    assert store.fetch_all("select t::text as r from trades t order by ticket") == before
    store.record_sync_failure(failure_payload(account_id))
    record = store.get_account(account_id)
    assert record is not None and record.sync_failure_count == 1


def test_realtime_column_list_on_postgresql_15(pg15_url: str) -> None:
    """Column lists in publications are new in 15, the oldest PostgreSQL Supabase runs."""
    with psycopg.connect(pg15_url, autocommit=True) as conn:
        conn.execute("drop database if exists realtime15")
        conn.execute("create database realtime15")
    url = pg15_url.replace("/postgres?", "/realtime15?")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create publication supabase_realtime")
    assert apply_migrations(url) == ALL_FILES
    published = scalar(url, "select attnames from pg_publication_tables where"
                            " pubname = 'supabase_realtime' and tablename = 'trading_accounts'")
    assert isinstance(published, list) and "balance" in published
    assert "investor_password_encrypted" not in published
