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

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_DB = "mt5_template"
_db_counter = itertools.count()


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
