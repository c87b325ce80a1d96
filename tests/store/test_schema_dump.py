"""supabase/schema.sql is the migrated schema as it is now (mt5_sync/store/schema_dump.py)."""

from __future__ import annotations

from mt5_sync.localstack import EmbeddedPostgres
from mt5_sync.store.schema_dump import (
    HEADER,
    SCHEMA_FILE,
    build_schema_sql,
    normalize,
    stale_message,
)


def test_schema_file_is_current(pg: EmbeddedPostgres) -> None:
    """Fails after a new migration until the file is refreshed; the message says how."""
    url = pg.create_database("schema_dump", drop=True)
    expected = build_schema_sql(url)
    committed = SCHEMA_FILE.read_text(encoding="utf-8").replace("\r\n", "\n") \
        if SCHEMA_FILE.exists() else ""
    assert committed == expected, stale_message(expected, committed)


def test_the_file_shows_what_a_newcomer_looks_for() -> None:
    text = SCHEMA_FILE.read_text(encoding="utf-8")
    publish = "ALTER PUBLICATION supabase_realtime ADD TABLE ONLY public.trading_accounts ("
    for needle in ("CREATE TABLE public.trading_accounts",
                   "CREATE FUNCTION public.mt5_commit_account_sync(p jsonb)",
                   "CREATE VIEW public.mt5_recent_syncs",
                   "CREATE POLICY trading_accounts_select_own", publish):
        assert needle in text, needle
    assert "investor_password_encrypted" not in text.split(publish)[1].split(";")[0]


def test_run_to_run_lines_are_normalized_away() -> None:
    dump = "\n".join([
        "--",
        "-- PostgreSQL database dump",
        "--",
        "",
        "\\restrict AbCdEf0123456789",
        "",
        "-- Dumped from database version 18.1",
        "-- Dumped by pg_dump version 18.1",
        "",
        "SET statement_timeout = 0;",
        "SET transaction_timeout = 0;",
        "SELECT pg_catalog.set_config('search_path', '', false);",
        "",
        "",
        "",
        "CREATE FUNCTION public.f() RETURNS void",
        "    LANGUAGE plpgsql",
        "    AS $$",
        "begin",
        "SET search_path = x;",  # only pg_dump's own session settings are dropped
        "end $$;",
        "",
        "\\unrestrict AbCdEf0123456789",
        "",
    ])
    assert normalize(dump) == HEADER + "\n".join([
        "--",
        "-- PostgreSQL database dump",
        "--",
        "",
        "CREATE FUNCTION public.f() RETURNS void",
        "    LANGUAGE plpgsql",
        "    AS $$",
        "begin",
        "SET search_path = x;",
        "end $$;",
    ]) + "\n"
