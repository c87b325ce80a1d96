"""Row level security on real PostgreSQL with the auth stub (the compat migration).

A request from the app is simulated the way PostgREST runs it: ``set local role authenticated``
plus ``request.jwt.claims`` carrying the user's id in ``sub``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from mt5_sync.store import PostgresStore

from . import LOGIN, SERVER, commit_payload, failure_payload
from .postgrest_standin import dump, seed_account

USER_A = "00000000-0000-4000-8000-0000000000aa"
USER_B = "00000000-0000-4000-8000-0000000000bb"
ACC_A = "00000000-0000-4000-8000-00000000a001"
ACC_B = "00000000-0000-4000-8000-00000000b001"
CHILD_TABLES = ("trades", "deals", "cash_flows", "account_snapshots", "sync_logs",
                "sync_quarantine")
VISIBLE = "id, user_id, login_number, broker_server, balance, sync_failure_count"
VIEWS = ("mt5_recent_syncs", "mt5_sync_success_rate_24h", "mt5_accounts_with_failures",
         "mt5_sync_performance_by_hour", "mt5_ledger_reconciliation")


@pytest.fixture
def db(db_url: str) -> str:
    """Two users with one synced account each; B also has a failure on record."""
    seed_account(db_url, ACC_A, USER_A, LOGIN, SERVER)
    seed_account(db_url, ACC_B, USER_B, LOGIN, "Other-Server")
    store = PostgresStore(db_url)
    store.commit_account_sync(commit_payload(ACC_A))
    store.commit_account_sync(commit_payload(ACC_B))
    store.record_sync_failure(failure_payload(ACC_B))
    return db_url


@contextmanager
def as_role(db: str, role: str, sub: str | None = None) -> Iterator[psycopg.Connection[Any]]:
    """One transaction as PostgREST would run a request (rolled back at the end)."""
    with psycopg.connect(db) as conn:
        conn.execute(f"set local role {role}")
        claims = {"role": role, **({"sub": sub} if sub else {})}
        conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
        yield conn
        conn.rollback()


def accounts_seen(conn: psycopg.Connection[Any], table: str) -> set[str]:
    column = "id" if table == "trading_accounts" else "account_id"
    return {str(r[0]) for r in conn.execute(f"select {column} from public.{table}")}


# ---------------------------------------------------------------- reads


@pytest.mark.parametrize(("user", "account"), [(USER_A, ACC_A), (USER_B, ACC_B)])
def test_users_see_only_their_own_rows(db: str, user: str, account: str) -> None:
    with as_role(db, "authenticated", user) as conn:
        assert accounts_seen(conn, "trading_accounts") == {account}
        for table in CHILD_TABLES:
            assert accounts_seen(conn, table) == {account}, table
        assert accounts_seen(conn, "mt5_ledger_reconciliation") == {account}
        # the child rows are all there, not just some
        assert conn.execute("select count(*) from trades").fetchone() == (3,)
        assert conn.execute("select count(*) from deals").fetchone() == (6,)


def test_a_user_without_accounts_sees_nothing(db: str) -> None:
    with as_role(db, "authenticated", str(uuid.uuid4())) as conn:
        for table in ("trading_accounts", *CHILD_TABLES):
            assert accounts_seen(conn, table) == set(), table
        for view in VIEWS:
            assert conn.execute(f"select count(*) from {view}").fetchone() == (0,), view


def test_a_user_cannot_name_another_users_rows(db: str) -> None:
    with as_role(db, "authenticated", USER_A) as conn:
        assert conn.execute("select * from trades where account_id = %s", (ACC_B,)).fetchall() == []
        assert conn.execute(f"select {VISIBLE} from trading_accounts where id = %s",
                            (ACC_B,)).fetchall() == []


@pytest.mark.parametrize("relation", ["trading_accounts", *CHILD_TABLES, "sync_commit_chunks",
                                      *VIEWS])
def test_anon_sees_nothing(db: str, relation: str) -> None:
    with as_role(db, "anon") as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(f"select 1 from public.{relation} limit 1")


@pytest.mark.parametrize("table", ["schema_migrations", "mt5sync_migration_checksums"])
@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_app_roles_cannot_read_the_migration_history(db: str, role: str, table: str) -> None:
    with as_role(db, role, USER_A) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(f"select 1 from supabase_migrations.{table} limit 1")


def test_our_checksum_table_stays_closed_even_if_the_schema_is_opened(db: str) -> None:
    with psycopg.connect(db) as conn:
        conn.execute("grant usage on schema supabase_migrations to authenticated")
        assert conn.execute(
            "select relrowsecurity from pg_class"
            " where oid = 'supabase_migrations.mt5sync_migration_checksums'::regclass"
        ).fetchone() == (True,)
        conn.execute("set local role authenticated")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select 1 from supabase_migrations.mt5sync_migration_checksums")
        conn.rollback()


def test_the_credential_column_is_never_readable(db: str) -> None:
    with psycopg.connect(db) as conn:
        assert conn.execute(
            "select has_column_privilege('authenticated', 'trading_accounts',"
            " 'investor_password_encrypted', 'select'),"
            " has_column_privilege('anon', 'trading_accounts',"
            " 'investor_password_encrypted', 'select'),"
            " has_column_privilege('authenticated', 'trading_accounts', 'balance', 'select')"
        ).fetchone() == (False, False, True)
    for query in ("select investor_password_encrypted from trading_accounts",
                  "select * from trading_accounts",
                  "select t from trading_accounts t"):
        with as_role(db, "authenticated", USER_A) as conn, pytest.raises(
            psycopg.errors.InsufficientPrivilege
        ):
            conn.execute(query)
    with as_role(db, "authenticated", USER_A) as conn:
        assert conn.execute(f"select {VISIBLE} from trading_accounts").fetchall()


def test_staging_table_is_service_only(db: str) -> None:
    with as_role(db, "authenticated", USER_A) as conn, pytest.raises(
        psycopg.errors.InsufficientPrivilege
    ):
        conn.execute("select * from sync_commit_chunks")


# ---------------------------------------------------------------- writes


@pytest.mark.parametrize("statement", [
    "insert into trades (account_id, ticket) values ('" + ACC_A + "', 1)",
    "update trades set profit = 0",
    "delete from deals",
    "update trading_accounts set balance = 0",
    "insert into sync_commit_chunks (sync_id, part, seq, account_id, row_count, rows)"
    " values (gen_random_uuid(), 'deals', 0, '" + ACC_A + "', 0, '[]')",
])
def test_authenticated_users_cannot_write(db: str, statement: str) -> None:
    with as_role(db, "authenticated", USER_A) as conn, pytest.raises(
        psycopg.errors.InsufficientPrivilege
    ):
        conn.execute(statement)


@pytest.mark.parametrize("role", ["authenticated", "anon"])
def test_only_the_service_role_may_call_the_write_functions(db: str, role: str) -> None:
    with as_role(db, role, USER_A) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("select mt5_commit_account_sync(%s)", (Jsonb(commit_payload(ACC_A)),))


@pytest.mark.parametrize("bypassrls", [True, False])
def test_the_service_role_writes(db: str, bypassrls: bool) -> None:
    """Supabase's service_role has BYPASSRLS; without it the explicit policies still let it
    write (a stub role created by a non-superuser). ALTER ROLE is transactional: rolled back."""
    before = dump(db)
    payload = commit_payload(ACC_A, sync_id=str(uuid.uuid4()))
    payload["closed_trades"][0]["profit"] = 999.0
    with psycopg.connect(db) as conn:
        if not bypassrls:
            conn.execute("alter role service_role nobypassrls")
        conn.execute("set local role service_role")
        assert conn.execute("select rolbypassrls from pg_roles where rolname = current_user"
                            ).fetchone() == (bypassrls,)
        result = conn.execute("select mt5_commit_account_sync(%s)", (Jsonb(payload),)).fetchone()
        assert result is not None and result[0]["status"] == "success"
        assert conn.execute("select profit from trades where account_id = %s and ticket = 2001",
                            (ACC_A,)).fetchone() == (999,)
        conn.execute("insert into sync_commit_chunks (sync_id, part, seq, account_id, row_count,"
                     " rows) values (gen_random_uuid(), 'deals', 0, %s, 0, '[]')", (ACC_A,))
        conn.execute("delete from sync_commit_chunks")
        assert conn.execute("select count(*) from trading_accounts").fetchone() == (2,)
        conn.rollback()
    assert dump(db) == before


# ---------------------------------------------------------------- the rules, checked on the catalog


def test_row_level_security_is_on_for_every_table(db: str) -> None:
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "select c.relname, c.relrowsecurity from pg_class c join pg_namespace n"
            " on n.oid = c.relnamespace where n.nspname = 'public' and c.relkind in ('r', 'p')"
        ).fetchall()
    assert {"trading_accounts", "sync_commit_chunks"} <= {r[0] for r in rows}
    assert [name for name, on in rows if not on] == []


#: Read-only functions the app's users may call: the account-health views
#: (mt5_account_schedule, mt5_account_freshness) are these functions at now(), and a
#: security_invoker view needs its caller to be allowed to execute them. Invoker rights, so
#: row level security still decides which rows a user sees (test_account_health.py).
USER_READABLE_FUNCTIONS = {
    "mt5_failure_kind(text)",
    "mt5_backoff_delay(text,integer,uuid)",
    "mt5_account_due(uuid,text,timestamp with time zone)",
    "mt5_account_schedule_at(timestamp with time zone,uuid[])",
    "mt5_account_freshness_at(timestamp with time zone,integer)",
}


def test_functions_are_invoker_with_fixed_search_path_and_service_only(db: str) -> None:
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "select p.oid::regprocedure::text, p.prosecdef, coalesce(p.proconfig, '{}'),"
            " has_function_privilege('anon', p.oid, 'execute'),"
            " has_function_privilege('authenticated', p.oid, 'execute'),"
            " has_function_privilege('service_role', p.oid, 'execute'), p.provolatile"
            " from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
            " where n.nspname = 'public'"
        ).fetchall()
    assert "mt5_commit_staged_account_sync(jsonb)" in {r[0] for r in rows}
    assert {r[0] for r in rows} >= USER_READABLE_FUNCTIONS
    for name, definer, config, anon, authenticated, service, volatility in rows:
        assert not definer, name
        assert any(c.startswith("search_path=") for c in config), name
        readable = name in USER_READABLE_FUNCTIONS
        assert (anon, authenticated, service) == (False, readable, True), name
        assert volatility in ("s", "i") or not readable, name


def test_views_run_with_the_callers_rights(db: str) -> None:
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "select c.relname, coalesce(c.reloptions, '{}') from pg_class c join pg_namespace n"
            " on n.oid = c.relnamespace where n.nspname = 'public' and c.relkind = 'v'"
        ).fetchall()
    assert {r[0] for r in rows} >= set(VIEWS)
    assert all("security_invoker=true" in opts for _, opts in rows), rows
