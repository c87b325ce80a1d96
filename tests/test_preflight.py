"""Every CLI command checks its settings first: one line naming the setting, exit code 2.

The CLI runs for real, in a child process with a clean environment (no database, no key, no
Prefect profile: ``PREFECT_HOME`` is a fresh directory, the working directory has no
``.env``). That no Prefect server was started is read from that ``PREFECT_HOME``: a temporary
server would have created its database there.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mt5_sync import preflight
from mt5_sync.credentials import generate_key
from mt5_sync.localstack import free_port
from mt5_sync.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
DB = "postgresql://mt5:hunter2@127.0.0.1:9/mt5"  # never connected to: settings only
_CLEARED = ("MT5SYNC_", "MT5SIM_", "PREFECT_", "SUPABASE_", "DATABASE_URL")


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "prefect-home"
    home.mkdir(exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_CLEARED)}
    clean.update(PREFECT_HOME=str(home), PYTHONPATH=str(REPO_ROOT), **env)
    return subprocess.run(
        [sys.executable, "-m", "mt5_sync.cli", *args],
        cwd=tmp_path, env=clean, capture_output=True, text=True, stdin=subprocess.DEVNULL,
        timeout=120, check=False,
    )


def no_prefect_server_started(tmp_path: Path) -> bool:
    return not any((tmp_path / "prefect-home").rglob("*.db"))


CASES = [
    pytest.param(["sync"], {}, "DATABASE_URL", id="sync-no-database"),
    pytest.param(["sync-account", "a1"], {}, "DATABASE_URL", id="sync-account-no-database"),
    pytest.param(["sync"], {"SUPABASE_URL": "https://abcdefghijklmnopqrst.supabase.co"},
                 "SUPABASE_SERVICE_ROLE_KEY", id="sync-supabase-url-without-key"),
    pytest.param(["sync"], {"DATABASE_URL": DB}, "MT5SYNC_CREDENTIALS_KEY", id="sync-no-key"),
    pytest.param(["sync"], {"DATABASE_URL": DB, "MT5SYNC_CREDENTIALS_KEY": "not-a-key"},
                 "MT5SYNC_CREDENTIALS_KEY", id="sync-malformed-key"),
    pytest.param(["sync"], {"DATABASE_URL": DB, "MT5SYNC_MAX_CONCURRENCY": "many"},
                 "MT5SYNC_MAX_CONCURRENCY", id="sync-invalid-number"),
    pytest.param(["sync"], {"DATABASE_URL": DB, "MT5SYNC_TERMINAL_BACKEND": "metatrader5"},
                 "MT5SYNC_TERMINAL_PATHS", id="sync-metatrader5-without-terminals"),
    pytest.param(["migrate"], {}, "DATABASE_URL", id="migrate-no-database"),
    pytest.param(["encrypt-password"], {"MT5SYNC_CREDENTIALS_KEY_BLOCK": "k"},
                 "MT5SYNC_CREDENTIALS_PUBLIC_KEY", id="encrypt-password-no-key"),
    pytest.param(["encrypt-password"], {"MT5SYNC_CREDENTIALS_PUBLIC_KEY": "not-a-key"},
                 "MT5SYNC_CREDENTIALS_PUBLIC_KEY", id="encrypt-password-malformed-key"),
    pytest.param(["credentials", "rotate"], {"DATABASE_URL": DB},
                 "MT5SYNC_CREDENTIALS_KEY", id="credentials-rotate-no-key"),
    pytest.param(["prefect-db-prepare"], {}, "PREFECT_API_DATABASE_CONNECTION_URL",
                 id="prefect-db-prepare-no-database"),
]


@pytest.mark.parametrize(("args", "env", "setting"), CASES)
def test_a_missing_or_wrong_setting_is_one_line_and_exit_2(tmp_path, args, env, setting):
    done = run_cli(tmp_path, *args, **env)

    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"mt5-sync {args[0]}: ")
    assert setting in lines[0]
    assert "hunter2" not in done.stderr
    assert no_prefect_server_started(tmp_path)


def test_an_unreachable_prefect_api_is_one_line_and_exit_2(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/api"  # bound once, closed: nothing listens
    done = run_cli(tmp_path, "sync", DATABASE_URL=DB, MT5SYNC_CREDENTIALS_KEY=generate_key(),
                   PREFECT_API_URL=url)

    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"mt5-sync sync: PREFECT_API_URL {url} is not reachable: ")
    assert "unset it to use a temporary local server" in lines[0]
    assert no_prefect_server_started(tmp_path)


# ------------------------------------------------------------------ the checks themselves


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200
    seen: list[str | None] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Authorization"))
        self.send_response(self.status if self.path == "/api/health" else 404)
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[str, type[_Health]]]:
    handler = type("Health", (_Health,), {"status": 200, "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api", handler
    server.shutdown()
    server.server_close()


def full_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": DB, "credentials_key": generate_key(), "terminal_backend": "simulated",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_complete_settings_pass_the_sync_preflight(health_server):
    url, handler = health_server
    api = preflight.for_sync(full_settings(), api=preflight.PrefectApi(url=url, api_key="pk"))
    assert api.url == url
    assert handler.seen == ["Bearer pk"]  # the key Prefect's client would send


def test_without_a_prefect_url_the_sync_preflight_needs_no_server():
    api = preflight.for_sync(full_settings(), api=preflight.PrefectApi(url=None))
    assert api.url is None


def test_a_secret_block_stands_in_for_the_key_for_syncs_only():
    s = full_settings(credentials_key=None, credentials_key_block="mt5sync-key")
    preflight.for_sync(s, api=preflight.PrefectApi(url=None))
    with pytest.raises(preflight.PreflightError, match="MT5SYNC_CREDENTIALS_KEY is not set"):
        preflight.credentials_key(s, block_allowed=False)


@pytest.mark.parametrize(("status", "words"), [(401, "refused the credentials"),
                                               (404, "answered HTTP 404")])
def test_a_prefect_url_that_answers_wrong_is_named(health_server, status, words):
    url, handler = health_server
    handler.status = status
    with pytest.raises(preflight.PreflightError, match=words) as err:
        preflight.prefect_reachable(preflight.PrefectApi(url=url))
    assert url in str(err.value) and "\n" not in str(err.value)


def test_basic_auth_string_wins_over_the_key(health_server):
    url, handler = health_server
    preflight.prefect_reachable(
        preflight.PrefectApi(url=url, api_key="pk", auth_string="admin:pass")
    )
    assert handler.seen == ["Basic YWRtaW46cGFzcw=="]


def test_migrate_takes_the_explicit_url_over_settings():
    assert preflight.migration_database(full_settings(database_url=None), "postgresql:///x") \
        == "postgresql:///x"
    with pytest.raises(preflight.PreflightError, match="DATABASE_URL"):
        preflight.migration_database(full_settings(database_url=None))
