"""``mt5-sync`` command line: migrations, one-off syncs, credentials, the demo.

Every command checks its settings first (:mod:`mt5_sync.preflight`): a missing or wrong one
is one line on stderr and exit code 2, before anything is started. SIGTERM and SIGHUP stop a
command the way Ctrl+C does (:mod:`mt5_sync.shutdown`), so what it started is stopped; the
exit code is then 128 + the signal's number (130 for Ctrl+C, 143 for SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from mt5_sync import preflight
from mt5_sync.shutdown import exit_code_for, stop_on_signals


def _cmd_migrate(args: argparse.Namespace) -> int:
    url = preflight.for_migrate(args.database_url)
    from mt5_sync.store.migrations import apply_migrations

    applied = apply_migrations(url)
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    return 0


def _quiet_temporary_server() -> None:
    """Without PREFECT_API_URL, Prefect starts a temporary server for this one command, with
    this process's environment. Its telemetry service would log ``ERROR ... Failed to send
    telemetry`` on any machine without internet access, which nobody running a sync can act
    on; the local stack's servers run with it off for the same reason. An explicit
    PREFECT_SERVER_ANALYTICS_ENABLED is kept."""
    import os

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _preflight_sync() -> None:
    if not preflight.for_sync().url:
        _quiet_temporary_server()


def _cmd_sync(args: argparse.Namespace) -> int:
    _preflight_sync()
    from mt5_sync.flows.sync_trading_data import sync_trading_data

    summary: dict[str, Any] = asyncio.run(
        sync_trading_data(
            max_concurrency=args.max_concurrency,
            sync_type=args.sync_type,
            account_ids=args.account or None,
        )
    )
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        from mt5_sync.report import render_summary

        print(render_summary(summary))
    return 0 if summary["success"] else 1


def _cmd_sync_account(args: argparse.Namespace) -> int:
    _preflight_sync()
    from mt5_sync.flows.sync_account import sync_account

    state: Any = asyncio.run(
        sync_account(  # type: ignore[arg-type]
            account_id=args.account_id,
            trigger="manual",
            sync_type=args.sync_type,
            sync_id=args.sync_id,
            account_label=args.account_id,
            return_state=True,
        )
    )
    outcome = asyncio.run(state.aresult(raise_on_failure=False))
    print(json.dumps(outcome, indent=2, default=str))
    return 0 if state.is_completed() else 1


def _cmd_generate_key(args: argparse.Namespace) -> int:
    from mt5_sync.credentials import generate_key, key_id, parse_public_key, public_key_text

    private = generate_key()
    public = public_key_text(private)
    print(f"# key id {key_id(parse_public_key(public))}: the private key goes on the terminal "
          "hosts only; the public key on the API/app", file=sys.stderr)
    print(f"MT5SYNC_CREDENTIALS_KEY={private}")
    print(f"MT5SYNC_CREDENTIALS_PUBLIC_KEY={public}")
    return 0


def _cmd_encrypt_password(args: argparse.Namespace) -> int:
    key = preflight.for_encrypt_password()
    from mt5_sync.credentials import encrypt_password

    password = sys.stdin.readline().rstrip("\n")
    print(encrypt_password(password, key))
    return 0


def _cmd_credentials_rotate(args: argparse.Namespace) -> int:
    settings, ring, public = preflight.for_credentials_rotate()
    from mt5_sync.credentials import rotate_stored_passwords
    from mt5_sync.store.postgres import PostgresStore

    report = rotate_stored_passwords(PostgresStore(settings.require_database_url()), ring,
                                     public, dry_run=args.dry_run)
    print(json.dumps(report))
    return 1 if report["failed"] else 0


def _cmd_demo(args: argparse.Namespace) -> int:
    preflight.for_demo(args.prefect_api_workers)
    from mt5_sync.demo import run_demo

    return run_demo(
        accounts=args.accounts,
        seed=args.seed,
        keep_running=args.keep_running,
        prefect_api_workers=args.prefect_api_workers,
    )


def _cmd_prefect_db_prepare(args: argparse.Namespace) -> int:
    preflight.for_prefect_db_prepare()
    from mt5_sync.localstack import prepare_prefect_database

    try:
        prepare_prefect_database()
    except RuntimeError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print("Prefect database migrated and block types registered")
    return 0


def _prefect_executable() -> str:
    """The ``prefect`` of this environment (a venv's scripts folder need not be on PATH)."""
    import os
    import shutil
    from pathlib import Path

    beside = Path(sys.executable).with_name("prefect.exe" if os.name == "nt" else "prefect")
    return str(beside) if beside.exists() else (shutil.which("prefect") or "prefect")


def _cmd_worker(args: argparse.Namespace) -> int:
    """Check this host's terminals once, then run the Prefect process worker for its queue."""
    import os

    from mt5_sync.deployments.bootstrap import POOL_NAME
    from mt5_sync.settings import load_settings
    from mt5_sync.terminal.check import describe, misconfigured_installs

    settings = load_settings()
    host = args.host or settings.host_name
    problems = misconfigured_installs(settings.terminal_paths)
    if problems:
        # Said once, here; the host's shards say it again in every cycle summary and claim
        # nothing, so no account is tried (and failed) on a terminal that cannot start.
        print(f"mt5-sync worker {host}: {describe(problems)}", file=sys.stderr)
    else:
        print(f"mt5-sync worker {host}: {settings.slot_count} terminal slots "
              f"({'simulated' if settings.terminal_backend == 'simulated' else 'MetaTrader 5'})")
    command = [
        _prefect_executable(), "worker", "start", "--pool", args.pool or POOL_NAME,
        "--name", args.name or host, "--work-queue", host, "--work-queue", "default",
        *args.prefect_args,
    ]
    if args.dry_run:
        print(" ".join(command))
        return 2 if problems else 0
    # A worker polling a queue that does not exist polls nothing (the API answers 404 and the
    # worker says nothing): create the host's queue first, so a new host needs no bootstrap.
    import asyncio

    from mt5_sync.deployments.bootstrap import ensure_work_pool

    report = asyncio.run(ensure_work_pool(args.pool or POOL_NAME, queues=[host]))
    if report.queues_created:
        print(f"mt5-sync worker {host}: work queue {host!r} created on pool {report.pool!r}")
    env = dict(os.environ, MT5SYNC_HOST=host)
    env.setdefault("PYTHONUTF8", "1")
    import subprocess

    return subprocess.call(command, env=env)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mt5-sync", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("migrate", help="apply supabase/migrations to DATABASE_URL")
    p.add_argument("--database-url", default=None)
    p.set_defaults(func=_cmd_migrate)

    p = sub.add_parser("sync", help="run one cycle over every active account, here and now")
    p.add_argument("--max-concurrency", type=int, default=None)
    p.add_argument("--sync-type", choices=["incremental", "full"], default="incremental")
    p.add_argument("--account", action="append", help="limit to these account ids")
    p.add_argument("--json", action="store_true", help="print the full JSON summary")
    p.set_defaults(func=_cmd_sync)

    p = sub.add_parser("sync-account", help="sync one account now (manual trigger)")
    p.add_argument("account_id")
    p.add_argument("--sync-type", choices=["incremental", "full"], default="incremental")
    p.add_argument("--sync-id", default=None)
    p.set_defaults(func=_cmd_sync_account)

    p = sub.add_parser("generate-key", help="print a new credentials key pair (private, public)")
    p.set_defaults(func=_cmd_generate_key)

    p = sub.add_parser("encrypt-password", help="seal an investor password read from stdin "
                       "to MT5SYNC_CREDENTIALS_PUBLIC_KEY")
    p.set_defaults(func=_cmd_encrypt_password)

    p = sub.add_parser("credentials", help="manage stored investor passwords")
    creds = p.add_subparsers(dest="credentials_command", required=True)
    p = creds.add_parser(
        "rotate", help="re-seal every stored password to MT5SYNC_CREDENTIALS_PUBLIC_KEY, on a "
        "host whose MT5SYNC_CREDENTIALS_KEY holds the old and the new private keys")
    p.add_argument("--dry-run", action="store_true", help="count, change nothing")
    p.set_defaults(func=_cmd_credentials_rotate)

    p = sub.add_parser("demo", help="embedded stack + simulated broker + one full cycle")
    p.add_argument("--accounts", type=int, default=30)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--keep-running", action="store_true",
                   help="leave Postgres and the Prefect UI running after the demo")
    p.add_argument("--prefect-api-workers", type=int, default=None, metavar="N",
                   help="run Prefect as the scaled service: N API workers, a services "
                        "process and Redis (default: one process; docs/prefect-server.md)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "worker",
        help="run this host's Prefect process worker: its own work queue (the host name) and "
             "'default'; checks the terminal paths first (docs/windows-runbook.md, More hosts)",
    )
    p.add_argument("--host", default=None,
                   help="this host's queue name (default: MT5SYNC_HOST, else the host name)")
    p.add_argument("--pool", default=None, help="work pool (default: mt5-windows)")
    p.add_argument("--name", default=None, help="worker name (default: the host name)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the terminals and print the worker command, start nothing")
    p.add_argument("prefect_args", nargs="*", help="passed on to `prefect worker start` (after --)")
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser(
        "prefect-db-prepare",
        help="migrate Prefect's own database and register block types, once, before "
             "starting several API workers (docs/prefect-server.md)",
    )
    p.set_defaults(func=_cmd_prefect_db_prepare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with stop_on_signals():
            return int(args.func(args))
    except preflight.PreflightError as exc:
        print(f"mt5-sync {args.command}: {exc}", file=sys.stderr)
        return preflight.EXIT_SETTINGS
    except KeyboardInterrupt as exc:  # Ctrl+C, or SIGTERM/SIGHUP: cleanup has run by now
        print(f"mt5-sync {args.command}: {str(exc) or 'interrupted'}", file=sys.stderr)
        return exit_code_for(exc)


if __name__ == "__main__":
    raise SystemExit(main())
