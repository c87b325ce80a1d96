"""Session-wide real servers: one embedded PostgreSQL, and (for e2e tests) one Prefect server.

Each test that needs the app database gets a fresh database cloned from a migrated template,
so tests are isolated without paying for migrations each time.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from mt5_sync.localstack import EmbeddedPostgres, PrefectServer, short_root
from mt5_sync.shutdown import stop_on_signals

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_DB = "mt5_template"
_db_counter = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def _stop_on_signals() -> Iterator[None]:
    """SIGTERM/SIGHUP interrupt the run as Ctrl+C does, so pytest tears every fixture down.

    The servers below run in sessions of their own and outlive a test process that dies on
    the spot (Python's default for both signals). Raising KeyboardInterrupt instead hands the
    stop to pytest's interrupt path, which tears down every fixture set up so far, session
    ones included: the same code as a normal end, and every server any fixture started, not
    a list kept beside them. Autouse and session-scoped, so it is set up before, and torn
    down after, every fixture that starts a server. tests/test_shutdown.py sends the signal.
    """
    with stop_on_signals():
        yield


@pytest.fixture(scope="session")
def stack_root() -> Iterator[Path]:
    root = short_root("mt5t-")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg(stack_root: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres.start(stack_root / "pg")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def migrated_template(pg: EmbeddedPostgres) -> str:
    from mt5_sync.store.migrations import apply_migrations

    url = pg.create_database(TEMPLATE_DB, drop=True)
    apply_migrations(url)
    return TEMPLATE_DB


@pytest.fixture
def db_url(pg: EmbeddedPostgres, migrated_template: str) -> str:
    """A fresh, fully migrated app database for one test."""
    name = f"t{next(_db_counter)}"
    return pg.create_database(name, template=migrated_template, drop=True)


@pytest.fixture(scope="session")
def prefect_server(pg: EmbeddedPostgres, stack_root: Path) -> Iterator[PrefectServer]:
    pg.create_database("prefect", drop=True)
    server = PrefectServer.start(pg.asyncpg_url("prefect"), stack_root / "prefect")
    yield server
    server.stop()
