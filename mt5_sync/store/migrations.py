"""Apply ``supabase/migrations/*.sql`` to a PostgreSQL database, in order, exactly once each.

The same files are what ``supabase db push`` applies to a Supabase project; this runner serves
the places without the Supabase CLI (plain PostgreSQL, the demo, the tests, CI). It records what
it applied in ``public.schema_migrations`` (version, name, checksum, applied_at).

Guarantees and why:

* **Each file in one transaction, together with its schema_migrations row**: a failing
  migration leaves neither half its objects nor a record claiming it ran.
* **Concurrent runners serialize** on a transaction-scoped advisory lock taken at the start of
  every transaction, and re-check what is applied after taking it; two workers starting at
  once therefore never double-apply. Transaction-scoped (not session) locks keep this correct
  behind a transaction pooler, where consecutive transactions may use different backends.
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

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "supabase" / "migrations"

# Arbitrary constant identifying "mt5-sync schema migrations" among advisory locks.
ADVISORY_LOCK_KEY = 7_350_530_117_823_651_840

_FILENAME = re.compile(r"^(?P<version>\d+)_(?P<name>[A-Za-z0-9][A-Za-z0-9_\-]*)\.sql$")

_CREATE_TABLE = """
create table if not exists public.schema_migrations (
    version text primary key,
    name text not null,
    checksum text not null,
    applied_at timestamptz not null default now()
)
"""


class MigrationError(StoreError):
    """The migration files or the recorded history are inconsistent (not retried)."""

    code = "migration_error"


@dataclass(frozen=True)
class Migration:
    """One migration file: ``<version>_<name>.sql``, ordered by its numeric version."""

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

    Files that do not look like ``<digits>_<name>.sql`` are ignored; two files with the same
    version are an error (their order would be ambiguous).
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
        migration = Migration(match["version"], match["name"], path)
        if migration.version in found:
            raise MigrationError(
                f"two migrations share version {migration.version}: "
                f"{found[migration.version].filename} and {path.name}"
            )
        found[migration.version] = migration
    return sorted(found.values(), key=lambda m: (int(m.version), m.version))


def _lock(conn: Connection) -> None:
    conn.execute("select pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))


def _applied(conn: Connection) -> dict[str, tuple[str, str]]:
    rows = conn.execute("select version, name, checksum from public.schema_migrations").fetchall()
    return {str(v): (str(n), str(c)) for v, n, c in rows}


def _check_drift(migrations: Sequence[Migration], applied: dict[str, tuple[str, str]]) -> None:
    known = {m.version for m in migrations}
    for m in migrations:
        if m.version in applied and applied[m.version][1] != m.checksum:
            raise MigrationError(
                f"migration {m.filename} was changed after it was applied "
                f"(recorded checksum {applied[m.version][1][:12]}..., file now "
                f"{m.checksum[:12]}...); add a new migration instead of editing an applied one"
            )
    for version, (name, _) in sorted(applied.items()):
        if version not in known:
            log.warning("applied migration %s_%s has no file in the migrations directory",
                        version, name)


def apply_migrations(conninfo: str, directory: Path | None = None) -> list[str]:
    """Apply every not-yet-applied migration in version order; return the applied file names.

    Raises :class:`MigrationError` on checksum drift or duplicate versions, and the store's
    errors (:class:`~mt5_sync.errors.StoreError` / ``StoreUnavailable``) for database failures;
    a failing file is rolled back entirely and the files after it are not attempted.
    """
    migrations = discover(directory)
    done: list[str] = []
    current: Migration | None = None
    try:
        with connect(conninfo, autocommit=True, statement_timeout_s=None) as conn:
            with conn.transaction():
                _lock(conn)
                conn.execute(_CREATE_TABLE)
                _check_drift(migrations, _applied(conn))
            for migration in migrations:
                with conn.transaction():
                    _lock(conn)
                    # Re-read under the lock: another runner may have applied it meanwhile.
                    row = conn.execute(
                        "select checksum from public.schema_migrations where version = %s",
                        (migration.version,),
                    ).fetchone()
                    if row is not None:
                        if row[0] != migration.checksum:
                            _check_drift([migration], _applied(conn))
                        continue
                    log.info("applying migration %s", migration.filename)
                    current = migration
                    conn.execute(migration.sql)
                    conn.execute(
                        "insert into public.schema_migrations (version, name, checksum)"
                        " values (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
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
