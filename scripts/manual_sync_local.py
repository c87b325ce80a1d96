#!/usr/bin/env python3
"""Try the manual sync API locally, end to end, with nothing but this repository.

Starts an embedded PostgreSQL (migrated) and a Prefect server on it, a simulated broker with
a few accounts of one user, the ``sync-account/manual-sync`` deployment (served by a Runner,
scripts/serve_manual_sync.py) and the API (``python -m mt5_sync.api`` on 127.0.0.1). Then
prints the variables and curl commands to try it as that user -- an HS256 token is minted
with the local JWT secret, as Supabase would issue one -- and keeps everything up until
Ctrl+C, SIGTERM or SIGHUP, which stop every process it started and remove its work dir.

    .venv/bin/python scripts/manual_sync_local.py            # serve, print curl commands
    .venv/bin/python scripts/manual_sync_local.py --check    # one request through, then exit
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mt5_sync.credentials import generate_key, public_key_text  # noqa: E402
from mt5_sync.demo import DEMO_USER, build_demo_world, register_accounts  # noqa: E402
from mt5_sync.localstack import free_port, prefect_client_env, short_root, start_local_stack  # noqa: E402
from mt5_sync.shutdown import exit_code_for, stop_on_signals  # noqa: E402
from mt5_sync.store.migrations import apply_migrations  # noqa: E402
from mt5_sync.store.postgres import PostgresStore  # noqa: E402

ISSUER = "http://127.0.0.1:54321/auth/v1"  # what Supabase puts in iss: <SUPABASE_URL>/auth/v1


def _wait(url: str, proc: subprocess.Popen[bytes], what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what} not up after {timeout_s:.0f}s")


def _check(api: str, headers: dict[str, str], account_id: str) -> int:
    accepted = httpx.post(f"{api}/api/mt5/account/{account_id}/sync", headers=headers,
                          json={"sync_type": "full"}, timeout=30)
    print(f"POST -> {accepted.status_code} {accepted.text}", flush=True)
    if accepted.status_code != 202:
        return 1
    sync_id = accepted.json()["sync_id"]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        status = httpx.get(f"{api}/api/mt5/sync/{sync_id}", headers=headers, timeout=30).json()
        if status["status"] != "processing":
            print(f"GET  -> {status}", flush=True)
            return 0 if status["status"] == "success" else 1
        time.sleep(1)
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=3)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--check", action="store_true", help="send one request, wait, exit")
    args = parser.parse_args()
    # SIGTERM/SIGHUP take Ctrl+C's way out, through _serve's finally (mt5_sync/shutdown.py).
    with stop_on_signals():
        try:
            return _serve(args)
        except KeyboardInterrupt as exc:
            return exit_code_for(exc) if args.check else 0  # serving ends by being stopped


def _serve(args: argparse.Namespace) -> int:
    root = short_root("mt5api-")
    procs: list[subprocess.Popen[bytes]] = []
    stack = None
    try:
        stack = start_local_stack(root)
        assert stack.prefect is not None
        apply_migrations(stack.app_database_url)
        world, world_path = build_demo_world(root, args.accounts, seed=2026)
        key = generate_key()
        ids = register_accounts(PostgresStore(stack.app_database_url), world, key)
        api_key, jwt_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(40)
        env = prefect_client_env(root / "prefect")
        env.update({
            "PREFECT_API_URL": stack.prefect.api_url, "PREFECT_RUNNER_POLL_FREQUENCY": "2",
            "DATABASE_URL": stack.app_database_url, "MT5SYNC_CREDENTIALS_KEY": key,
            "MT5SIM_WORLD": str(world_path), "MT5SYNC_TERMINAL_BACKEND": "simulated",
            "MT5SYNC_API_KEY": api_key, "SUPABASE_JWT_SECRET": jwt_secret,
            "MT5SYNC_API_JWT_ISSUER": ISSUER, "MT5SYNC_API_PORT": str(args.port or free_port()),
        })
        # The API holds only the public key (it refuses a private one): docs/accounts.md.
        api_env = {k: v for k, v in env.items() if k != "MT5SYNC_CREDENTIALS_KEY"}
        api_env["MT5SYNC_CREDENTIALS_PUBLIC_KEY"] = public_key_text(key)
        logs = root / "logs"
        logs.mkdir()
        for name, cmd, proc_env in (
            ("runner", [sys.executable, str(ROOT / "scripts" / "serve_manual_sync.py")], env),
            ("api", [sys.executable, "-m", "mt5_sync.api", "--log-level", "warning"], api_env),
        ):
            with (logs / f"{name}.log").open("wb") as out:
                procs.append(subprocess.Popen(cmd, cwd=ROOT, env=proc_env, stdout=out,
                                              stderr=subprocess.STDOUT))
        api = f"http://127.0.0.1:{env['MT5SYNC_API_PORT']}"
        _wait(f"{stack.prefect.api_url}/deployments/name/sync-account/manual-sync", procs[0],
              "the manual-sync runner")
        _wait(f"{api}/healthz", procs[1], "the API")
        now = int(time.time())
        token = jwt.encode({"sub": DEMO_USER, "aud": "authenticated", "iss": ISSUER,
                            "role": "authenticated", "iat": now, "exp": now + 86_400},
                           jwt_secret, algorithm="HS256")
        headers = {"X-API-Key": api_key, "Authorization": f"Bearer {token}"}
        if args.check:
            return _check(api, headers, ids[0])
        print(f"""
Manual sync API: {api}/docs    Prefect UI: {stack.prefect.ui_url}    logs: {logs}

export API={api}
export API_KEY='{api_key}'
export TOKEN='{token}'
export ACCOUNT={ids[0]}    # other accounts of this user: {' '.join(ids[1:])}

curl -s -X POST "$API/api/mt5/account/$ACCOUNT/sync" -H "X-API-Key: $API_KEY" \\
     -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
     -d '{{"sync_type": "full", "history_days": 30}}'
curl -s "$API/api/mt5/sync/<sync_id from the answer>" -H "X-API-Key: $API_KEY" \\
     -H "Authorization: Bearer $TOKEN"

Ctrl+C (or SIGTERM, SIGHUP) stops everything.""", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        return 0
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if stack is not None:
            stack.stop()
        if os.environ.get("KEEP_ROOT") is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
