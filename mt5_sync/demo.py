"""The demo: a whole cycle on an embedded stack, printed as a summary.

Embedded PostgreSQL (the app database and the Prefect server's), a local Prefect server, the
project's migrations, a simulated broker with 30 accounts of which some are broken on purpose
(wrong password, OTP-only, a hung terminal, malformed deals, a transient IPC fault that a retry
heals), one full cycle through the real flow, then the summary and a check of ``trades``
against the simulated broker's own ledger. Everything it starts it stops, and removes its work
dir; with ``--keep-running``, when it is stopped (Ctrl+C, SIGTERM, SIGHUP).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from mt5_sync.clock import utc_now
from mt5_sync.credentials import encrypt_password, generate_key
from mt5_sync.localstack import LocalStack, short_root, start_local_stack
from mt5_sync.mt5sim import world as simworld
from mt5_sync.report import render_summary, render_table
from mt5_sync.settings import load_settings
from mt5_sync.shutdown import stop_on_signals, stop_process_tree
from mt5_sync.store.migrations import apply_migrations
from mt5_sync.store.postgres import PostgresStore
from mt5_sync.verify import compare_with_broker

DEMO_USER = "00000000-0000-4000-8000-00000000d3e0"

# index -> faults: the failures the demo shows on purpose
DEMO_FAULTS: dict[int, list[dict[str, Any]]] = {
    3: [{"kind": "wrong_password", "call": "login", "times": None}],
    7: [{"kind": "hang", "call": "positions_get", "times": None}],
    11: [{"kind": "otp_required", "call": "login", "times": None}],
    15: [{"kind": "malformed_deals", "call": "history_deals_get", "times": None}],
    19: [{"kind": "ipc_timeout", "call": "history_deals_get", "times": 1}],
    23: [{"kind": "wrong_password", "call": "login", "times": None}],
}

# index -> terminal quirks (issue 13): history still loading after the login, so the first
# pass reads part of it; the ledger check flags it and the second pass heals it
DEMO_QUIRKS: dict[int, dict[str, Any]] = {
    5: {"staged_history": {"logins": 1, "mode": "older_than", "hours": 120}},
}


def _say(message: str) -> None:
    print(message, flush=True)


def build_demo_world(root: Path, accounts: int, seed: int) -> tuple[simworld.World, Path]:
    now = utc_now().replace(microsecond=0)
    world = simworld.build_world(
        accounts,
        seed=seed,
        now_utc=now,
        timeline_start_utc=now - timedelta(days=20),
        faults=DEMO_FAULTS,
        latency=simworld.LognormalLatency(median_s=0.02, sigma=0.8),
        state_dir=str(root / "sim-state"),
    )
    for index, quirks in DEMO_QUIRKS.items():
        if index < len(world.accounts):
            world.accounts[index].quirks = simworld.Quirks.model_validate(quirks)
    path = root / "world.json"
    world.save(path)
    return world, path


def register_accounts(store: PostgresStore, world: simworld.World, key: str) -> list[str]:
    store.ensure_user(DEMO_USER, "demo@example.com")
    ids = []
    for account in world.accounts:
        ids.append(
            store.register_account(
                user_id=DEMO_USER,
                login_number=account.login,
                broker_server=account.server,
                broker_name=account.company,
                investor_password_encrypted=encrypt_password(account.password, key),
                server_time_rule=account.time_rule,
            )
        )
    # One disabled account: the cycle must leave it alone.
    store.register_account(
        user_id=DEMO_USER,
        login_number=99_999_999,
        broker_server="SimBroker-Closed",
        broker_name="Sim Broker Ltd",
        investor_password_encrypted=encrypt_password("unused", key),
        server_time_rule="utc",
        is_active=False,
    )
    return ids


def _finished(store: PostgresStore) -> int:
    rows = store.fetch_all("SELECT count(*) AS n FROM sync_logs WHERE status <> 'processing'", ())
    return int(rows[0]["n"]) if rows else 0


def _progress(store: PostgresStore, total: int, stop: threading.Event) -> None:
    last = -1
    before = _finished(store)  # syncs of earlier passes
    while not stop.wait(2.0):
        done = _finished(store) - before
        if done != last:
            _say(f"  ... {done}/{total} accounts finished")
            last = done


def render_account_health(store: PostgresStore) -> str:
    """The accounts a human must act on, as ``mt5_account_freshness`` shows them now: the
    scheduled cycle leaves them alone until their credentials change."""
    rows = [r for r in store.account_freshness(utc_now(), load_settings().freshness_slo_s)
            if r["state"] == "needs_credentials"]
    if not rows:
        return "no account needs new credentials"
    lines = [f"{len(rows)} accounts need new credentials (mt5_account_freshness):"]
    for r in rows:
        lines.append(f"  {r['login_number']}@{r['broker_server']}: needs_credentials - "
                     f"{r['reason']}")
    return "\n".join(lines)


def ledger_rows(store: PostgresStore) -> list[dict[str, Any]]:
    """The reconciliation column per active account (view mt5_ledger_reconciliation)."""
    rows = store.fetch_all(
        "SELECT r.login_number AS login, r.status AS ledger, r.opening_offset, r.drift, "
        "r.equity_drift, r.healed_at IS NOT NULL AS healed "
        "FROM mt5_ledger_reconciliation r JOIN trading_accounts a ON a.id = r.account_id "
        "WHERE a.is_active ORDER BY r.login_number", (),
    )
    return [
        {**r, "opening_offset": None if r["opening_offset"] is None
         else f"{r['opening_offset']:.2f}",
         "drift": None if r["drift"] is None else f"{r['drift']:.2f}",
         "equity_drift": None if r["equity_drift"] is None else f"{r['equity_drift']:.2f}"}
        for r in rows
    ]


def run_cycle(
    stack: LocalStack, env: dict[str, str], store: PostgresStore, total: int,
    account_ids: list[str] | None = None,
) -> dict:
    """One cycle in a child ``mt5-sync sync --json``.

    Interrupted (Ctrl+C, SIGTERM, SIGHUP), the child is stopped with every process below it:
    its terminal workers share its process group, not a session of their own, and one stuck
    in the demo's hung terminal would never notice its parent is gone.
    """
    stop = threading.Event()
    watcher = threading.Thread(target=_progress, args=(store, total, stop), daemon=True)
    watcher.start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mt5_sync.cli", "sync", "--json",
         *(a for i in account_ids or [] for a in ("--account", i))],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=900)
    except BaseException:
        stop_process_tree(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=30)
        raise
    finally:
        stop.set()
        watcher.join()
    if proc.returncode not in (0, 1) or not stdout.strip().startswith("{"):
        raise RuntimeError(f"the cycle failed ({proc.returncode}):\n{stderr[-4000:]}")
    return dict(json.loads(stdout))


def run_demo(
    *,
    accounts: int = 30,
    seed: int = 2026,
    keep_running: bool = False,
    prefect_api_workers: int | None = None,
) -> int:
    """The demo; everything it starts is stopped and its work dir removed on the way out,
    also when it is stopped by Ctrl+C, SIGTERM or SIGHUP (:mod:`mt5_sync.shutdown`)."""
    t0 = time.monotonic()
    with stop_on_signals(), contextlib.ExitStack() as cleanup:
        root = short_root("mt5demo-")
        cleanup.callback(shutil.rmtree, root, ignore_errors=True)
        _say(f"mt5-sync demo: {accounts} simulated accounts (work dir {root})")
        _say("starting embedded PostgreSQL and a local Prefect server on it ...")
        stack = start_local_stack(root, prefect_api_workers=prefect_api_workers)
        cleanup.callback(stack.stop)
        return _demo(stack, root, t0, accounts=accounts, seed=seed, keep_running=keep_running)


def _demo(
    stack: LocalStack, root: Path, t0: float, *, accounts: int, seed: int, keep_running: bool
) -> int:
    assert stack.prefect is not None
    layout = (
        f" ({stack.prefect.api_workers} API workers + a services process + Redis)"
        if stack.prefect.scaled else ""
    )
    _say(f"  Prefect server: {stack.prefect.ui_url}{layout}")
    applied = apply_migrations(stack.app_database_url)
    _say(f"applied {len(applied)} migrations")
    world, world_path = build_demo_world(root, accounts, seed)
    key = generate_key()
    store = PostgresStore(stack.app_database_url)
    register_accounts(store, world, key)
    _say(f"registered {accounts} active accounts (+1 inactive) on a simulated broker")

    env = dict(os.environ)
    env.update(stack.prefect_env())
    env.update(
        {
            "DATABASE_URL": stack.app_database_url,
            "MT5SYNC_CREDENTIALS_KEY": key,
            "MT5SIM_WORLD": str(world_path),
            "MT5SYNC_TERMINAL_BACKEND": "simulated",
            "MT5SYNC_TERMINAL_TIMEOUT_S": "8",
            "MT5SYNC_FETCH_RETRIES": "2",
            "MT5SYNC_LEASE_WAIT_S": "10",
        }
    )
    _say("running one cycle (flow sync-trading-data, 10 terminals) ...")
    summary = run_cycle(stack, env, store, accounts)
    _say("")
    _say(render_summary(summary))
    _say("")
    _say(render_account_health(store))

    # Accounts whose stored ledger did not reproduce the balance get a second pass now (the
    # scheduled cycle would do the same at its next run): it re-reads their whole history.
    gaps = [r["account_id"] for r in store.fetch_all(
        "SELECT account_id::text AS account_id FROM mt5_ledger_reconciliation "
        "WHERE status = 'gap'", ())]
    if gaps:
        _say("")
        _say(f"second pass: {len(gaps)} account(s) with a ledger gap re-read their history ...")
        second = run_cycle(stack, env, store, len(gaps), account_ids=gaps)
        _say("  " + ", ".join(f"{r['login']}: {r['status']}" for r in second["syncResults"]))
    _say("")
    _say("ledger reconciliation (balance = stored deals + opening offset), per account:")
    ledger = ledger_rows(store)
    _say(render_table(ledger))
    pending = [r["login"] for r in ledger if r["ledger"] == "gap"]
    _say(f"  {sum(r['ledger'] == 'ok' for r in ledger)} ok, "
         f"{sum(bool(r['healed']) for r in ledger)} healed, "
         + (f"pending (re-read at the next sync): {pending}" if pending else "no gap pending"))

    report = compare_with_broker(store, world)
    _say("")
    _say("trades vs the simulated broker's ledger (accounts that synced):")
    _say(render_table(report.rows[:10]) + (f"\n  ... {len(report.rows) - 10} more"
                                            if len(report.rows) > 10 else ""))
    _say(
        f"  {report.accounts_checked} accounts checked, {report.mismatches} mismatches, "
        f"{report.duplicate_keys} duplicate (account_id, ticket) keys"
    )
    _say("")
    _say("where to look next:")
    if keep_running:
        _say(f"  Prefect UI:  {stack.prefect.ui_url}  (flow runs, the summary artifact)")
        _say(f"  psql:        psql '{stack.app_database_url}'")
    else:
        _say("  rerun with --keep-running to browse the Prefect UI and query the database")
    _say("  SQL:  SELECT status, count(*) FROM sync_logs GROUP BY status;")
    _say("        SELECT login_number, state, staleness_s, next_attempt_at, reason"
         " FROM mt5_account_freshness ORDER BY staleness_s DESC NULLS FIRST;")
    _say("        SELECT account_id, ticket, symbol, status, net_profit FROM trades "
         "ORDER BY close_time DESC NULLS FIRST LIMIT 20;")
    _say(f"demo wall time: {time.monotonic() - t0:.1f} s")
    ok = summary["totalAccounts"] == accounts and report.mismatches == 0 \
        and report.duplicate_keys == 0
    if keep_running:
        _say("servers left running; press Ctrl+C (or send SIGTERM) to stop them")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            _say("stopping ...")
    return 0 if ok else 1
