"""Apply ``supabase/migrations/*.sql`` to a PostgreSQL database, in order, exactly once each.

The same files are what ``supabase db push`` applies to a Supabase project; this runner serves
the places without the Supabase CLI (plain PostgreSQL, the demo, the tests, CI, a worker).

**One history, shared with the Supabase CLI.** What was applied is recorded in
``supabase_migrations.schema_migrations``, the CLI's own table, in the CLI's own format, so
either tool sees what the other applied. The layout, as the CLI creates it (supabase/cli
``pkg/migration/history.go``, ``CreateMigrationTable``; read at commit 1d1e71912 of
2026-06-01; this DDL is unchanged since 2024-07)::

    create schema if not exists supabase_migrations;
    create table if not exists supabase_migrations.schema_migrations
        (version text not null primary key);
    alter table supabase_migrations.schema_migrations add column if not exists statements text[];
    alter table supabase_migrations.schema_migrations add column if not exists name text;

and a row is ``insert ... (version, name, statements)`` with ``version`` = the file name's
leading digits (14: ``YYYYMMDDHHMMSS``), ``name`` = the rest without ``.sql``, ``statements`` =
the file split into statements by the CLI's splitter (:mod:`mt5_sync.store.sql_split`). The
CLI source has no ``created_by`` / ``idempotency_key`` columns; where a hosted project's table
has more (nullable) columns, they are left NULL, since every statement here names its columns.
The runner creates the schema, table and columns only where missing (plain PostgreSQL).

**The checksum guard lives beside it** in ``supabase_migrations.mt5sync_migration_checksums``
(version, checksum, applied_at), a table of this project's own: the CLI's table has no
checksum column and adding one to it would change a table another tool owns. It sits in the
``supabase_migrations`` schema because that schema is bookkeeping, not app data: the Data API
does not expose it, anon/authenticated have no USAGE on it, and ``supabase db dump``/``db
diff`` leave it out. A version applied by the CLI gets its checksum when this runner first sees
it (from the file as it is then). An earlier version of this project kept its history in
``public.schema_migrations (version, name, checksum, applied_at)``; that table is moved over
once and dropped (a ``public.schema_migrations`` of any other shape belongs to another
framework and is left alone).

Guarantees and why:

* **Each file in one transaction, together with its history and checksum rows**: a failing
  migration leaves neither half its objects nor a record claiming it ran.
* **Concurrent runners serialize** on a transaction-scoped advisory lock taken at the start of
  every transaction, and re-check what is applied after taking it; two workers starting at
  once therefore never double-apply. Transaction-scoped (not session) locks keep this correct
  behind a transaction pooler, where consecutive transactions may use different backends.
  A CLI racing this runner is stopped by the history's primary key (its insert, or ours, fails
  and that file's transaction rolls back).
* **An applied file must not change**: its checksum is compared on every run and a mismatch
  stops the run before anything is applied (edit history by adding a new migration instead).
  Line endings are normalized first, so a Windows checkout (CRLF) is not mistaken for an edit.
* **Re-running is safe**: nothing to do returns ``[]``.

CLI: ``python -m mt5_sync.store.migrations <conninfo> [--directory DIR]``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mt5_sync.errors import StoreError
from mt5_sync.store.postgres import Connection, connect
from mt5_sync.store.sql_split import split_and_trim

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "supabase" / "migrations"

HISTORY_TABLE = "supabase_migrations.schema_migrations"
CHECKSUM_TABLE = "supabase_migrations.mt5sync_migration_checksums"
LEGACY_TABLE = "public.schema_migrations"
_LEGACY_COLUMNS = {"version", "name", "checksum", "applied_at"}

# Arbitrary constant identifying "mt5-sync schema migrations" among advisory locks.
ADVISORY_LOCK_KEY = 7_350_530_117_823_651_840

# The CLI's pattern is ^([0-9]+)_(.*)\.sql$; its `migration new` writes 14-digit UTC timestamps
# and it orders versions as text, which matches numeric order only at one fixed width.
_FILENAME = re.compile(r"^(?P<version>\d+)_(?P<name>[A-Za-z0-9][A-Za-z0-9_\-]*)\.sql$")
_VERSION_DIGITS = 14

# The CLI's DDL (see the module docstring), one statement per missing piece.
_CREATE_HISTORY = (
    "create schema if not exists supabase_migrations",
    f"create table if not exists {HISTORY_TABLE} (version text not null primary key)",
)
_ADD_HISTORY_COLUMN = {
    "statements": f"alter table {HISTORY_TABLE} add column if not exists statements text[]",
    "name": f"alter table {HISTORY_TABLE} add column if not exists name text",
}
# Ours. Nothing granted, and RLS on without a policy: even a role that a default privilege or a
# later grant let in reads no row; only the owner (the migrating role) and superusers do.
_CREATE_CHECKSUMS = (
    f"""create table if not exists {CHECKSUM_TABLE} (
        version text primary key,
        checksum text not null,
        applied_at timestamptz not null default now()
    )""",
    f"comment on table {CHECKSUM_TABLE} is 'sha256 of each migration file mt5-sync applied or"
    " saw applied (the history itself is supabase_migrations.schema_migrations)'",
    f"alter table {CHECKSUM_TABLE} enable row level security",
    f"revoke all on table {CHECKSUM_TABLE} from public",
)


class MigrationError(StoreError):
    """The migration files or the recorded history are inconsistent (not retried)."""

    code = "migration_error"


@dataclass(frozen=True)
class Migration:
    """One migration file: ``<version>_<name>.sql``, ordered by its 14-digit version."""

    version: str
    name: str
    path: Path

    @property
    def filename(self) -> str:
        return self.path.name

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        """sha256 of the file with line endings normalized to LF."""
        data = self.path.read_bytes().replace(b"\r\n", b"\n")
        return hashlib.sha256(data).hexdigest()


def discover(directory: Path | None = None) -> list[Migration]:
    """The migration files of ``directory`` (default: the repo's), in version order.

    Files that do not look like ``<digits>_<name>.sql`` are ignored (as the CLI skips them); a
    version that is not 14 digits, or two files with the same version, are errors (the CLI
    and this runner would disagree on the order, or the order would be ambiguous).
    """
    directory = directory or MIGRATIONS_DIR
    if not directory.is_dir():
        raise MigrationError(f"migrations directory not found: {directory}")
    found: dict[str, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILENAME.match(path.name)
        if not match:
            log.warning("ignoring %s: not named <version>_<name>.sql", path.name)
            continue
        if len(match["version"]) != _VERSION_DIGITS:
            raise MigrationError(
                f"{path.name}: the version must be a {_VERSION_DIGITS}-digit UTC timestamp "
                "(YYYYMMDDHHMMSS), as `supabase migration new` writes it"
            )
        migration = Migration(match["version"], match["name"], path)
        if migration.version in found:
            raise MigrationError(
                f"two migrations share version {migration.version}: "
                f"{found[migration.version].filename} and {path.name}"
            )
        found[migration.version] = migration
    return sorted(found.values(), key=lambda m: m.version)


def _lock(conn: Connection) -> None:
    conn.execute("select pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))


def _columns(conn: Connection, table: str) -> set[str]:
    """Column names of ``table`` (empty when it does not exist)."""
    rows = conn.execute(
        "select a.attname from pg_attribute a where a.attrelid = to_regclass(%s)"
        " and a.attnum > 0 and not a.attisdropped",
        (table,),
    ).fetchall()
    return {str(r[0]) for r in rows}


def _create_tables(conn: Connection) -> None:
    """The CLI's history table and our checksum table, each piece only where missing.

    Only what is missing is created: ``ALTER TABLE`` needs ownership even when the column
    exists, and the table may belong to the role the CLI logged in as.
    """
    have = _columns(conn, HISTORY_TABLE)
    if not have:
        for ddl in _CREATE_HISTORY:
            conn.execute(ddl)
    for column, ddl in _ADD_HISTORY_COLUMN.items():
        if column not in have:
            conn.execute(ddl)
    if not _columns(conn, CHECKSUM_TABLE):
        for ddl in _CREATE_CHECKSUMS:
            conn.execute(ddl)


def _move_legacy_history(conn: Connection, migrations: Sequence[Migration]) -> None:
    """Move ``public.schema_migrations`` of earlier versions of this project over, then drop it.

    Recognized by its exact columns; a Rails-style ``schema_migrations(version)`` or any other
    shape belongs to another tool and is left alone. Rows already in the CLI's history (the
    CLI applied those files too) are kept as they are.
    """
    columns = _columns(conn, LEGACY_TABLE)
    if not columns:
        return
    if columns != _LEGACY_COLUMNS:
        log.info("leaving %s alone: its columns (%s) are not mt5-sync's earlier history",
                 LEGACY_TABLE, ", ".join(sorted(columns)))
        return
    files = {m.version: m for m in migrations}
    rows = conn.execute(
        f"select version, name, checksum, applied_at from {LEGACY_TABLE} order by version"
    ).fetchall()
    for version, name, checksum, applied_at in rows:
        migration = files.get(str(version))
        statements = split_and_trim(migration.sql) if migration is not None else None
        conn.execute(
            f"insert into {HISTORY_TABLE} (version, name, statements) values (%s, %s, %s)"
            " on conflict (version) do nothing",
            (version, name, statements),
        )
        conn.execute(
            f"insert into {CHECKSUM_TABLE} (version, checksum, applied_at) values (%s, %s, %s)"
            " on conflict (version) do nothing",
            (version, checksum, applied_at),
        )
    conn.execute(f"drop table {LEGACY_TABLE}")
    log.info("moved %d row(s) of %s to %s and dropped it", len(rows), LEGACY_TABLE, HISTORY_TABLE)


def _applied(conn: Connection) -> dict[str, str | None]:
    """Every version in the history, with our recorded checksum (None: not recorded yet)."""
    rows = conn.execute(
        f"select h.version, c.checksum from {HISTORY_TABLE} h"
        f" left join {CHECKSUM_TABLE} c using (version)"
    ).fetchall()
    return {str(v): (None if c is None else str(c)) for v, c in rows}


def _record_checksum(conn: Connection, migration: Migration) -> None:
    conn.execute(
        f"insert into {CHECKSUM_TABLE} (version, checksum) values (%s, %s)"
        " on conflict (version) do update set checksum = excluded.checksum, applied_at = now()",
        (migration.version, migration.checksum),
    )


def _check_drift(migrations: Sequence[Migration], applied: dict[str, str | None]) -> None:
    for m in migrations:
        recorded = applied.get(m.version)
        if recorded is not None and recorded != m.checksum:
            raise MigrationError(
                f"migration {m.filename} was changed after it was applied "
                f"(recorded checksum {recorded[:12]}..., file now "
                f"{m.checksum[:12]}...); add a new migration instead of editing an applied one"
            )
    foreign = sorted(set(applied) - {m.version for m in migrations})
    if foreign:
        # The project's own migrations, applied with the Supabase CLI from its own directory.
        log.info("%d applied migration(s) in %s are not mt5-sync's (%s ... %s)",
                 len(foreign), HISTORY_TABLE, foreign[0], foreign[-1])


def _adopt(conn: Connection, migrations: Sequence[Migration], applied: dict[str, str | None]
           ) -> None:
    """Record checksums of files another tool (the CLI) applied, so later edits are caught."""
    adopted = [m for m in migrations if m.version in applied and applied[m.version] is None]
    for m in adopted:
        _record_checksum(conn, m)
    if adopted:
        log.info("recorded checksums of %d migration(s) applied by another tool: %s",
                 len(adopted), ", ".join(m.filename for m in adopted))


def _bootstrap(conn: Connection, migrations: Sequence[Migration]) -> None:
    """One locked transaction: tables, the legacy move, the drift check, adoption."""
    with conn.transaction():
        _lock(conn)
        _create_tables(conn)
        _move_legacy_history(conn, migrations)
        applied = _applied(conn)
        _check_drift(migrations, applied)
        _adopt(conn, migrations, applied)


def apply_migrations(conninfo: str, directory: Path | None = None) -> list[str]:
    """Apply every not-yet-applied migration in version order; return the applied file names.

    Raises :class:`MigrationError` on checksum drift or bad file names, and the store's
    errors (:class:`~mt5_sync.errors.StoreError` / ``StoreUnavailable``) for database failures;
    a failing file is rolled back entirely and the files after it are not attempted.
    """
    migrations = discover(directory)
    done: list[str] = []
    current: Migration | None = None
    try:
        with connect(conninfo, autocommit=True, statement_timeout_s=None) as conn:
            _bootstrap(conn, migrations)
            for migration in migrations:
                with conn.transaction():
                    _lock(conn)
                    # Re-read under the lock: another runner may have applied it meanwhile.
                    row = conn.execute(
                        f"select c.checksum from {HISTORY_TABLE} h"
                        f" left join {CHECKSUM_TABLE} c using (version) where h.version = %s",
                        (migration.version,),
                    ).fetchone()
                    if row is not None:
                        if row[0] is None:
                            _record_checksum(conn, migration)
                        elif row[0] != migration.checksum:
                            _check_drift([migration], {migration.version: str(row[0])})
                        continue
                    log.info("applying migration %s", migration.filename)
                    current = migration
                    sql = migration.sql
                    conn.execute(sql)
                    conn.execute(
                        f"insert into {HISTORY_TABLE} (version, name, statements)"
                        " values (%s, %s, %s)",
                        (migration.version, migration.name, split_and_trim(sql)),
                    )
                    _record_checksum(conn, migration)
                current = None
                done.append(migration.filename)
    except StoreError as exc:
        if current is None or isinstance(exc, MigrationError):
            raise
        # Same class (a lost connection stays transient), but say which file failed.
        raise type(exc)(f"migration {current.filename} failed: {exc.message}", code=exc.code) \
            from None
    if done:
        log.info("applied %d migration(s): %s", len(done), ", ".join(done))
    else:
        log.info("database schema is up to date (%d migrations)", len(migrations))
    return done


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: apply migrations and print what was applied."""
    parser = argparse.ArgumentParser(
        prog="python -m mt5_sync.store.migrations",
        description="Apply supabase/migrations/*.sql to a PostgreSQL database.",
    )
    parser.add_argument("conninfo", help="PostgreSQL URL or key=value conninfo")
    parser.add_argument("--directory", type=Path, default=None,
                        help=f"migrations directory (default: {MIGRATIONS_DIR})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        applied = apply_migrations(args.conninfo, args.directory)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if applied:
        for name in applied:
            print(f"applied {name}")
    else:
        print("nothing to apply: database is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
