"""``mt5-sync`` command line: migrations, one-off syncs, credentials, the demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any


def _cmd_migrate(args: argparse.Namespace) -> int:
    from mt5_sync.settings import load_settings
    from mt5_sync.store.migrations import apply_migrations

    applied = apply_migrations(args.database_url or load_settings().require_database_url())
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    return 0


def _cmd_sync(args: argparse.Namespace) -> int:
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
    from mt5_sync.credentials import generate_key

    print(generate_key())
    return 0


def _cmd_encrypt_password(args: argparse.Namespace) -> int:
    from mt5_sync.credentials import encrypt_password
    from mt5_sync.settings import load_settings

    key = load_settings().credentials_key
    if key is None:
        print("MT5SYNC_CREDENTIALS_KEY is not set", file=sys.stderr)
        return 2
    password = sys.stdin.readline().rstrip("\n")
    print(encrypt_password(password, key.get_secret_value()))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from mt5_sync.demo import run_demo

    return run_demo(
        accounts=args.accounts,
        seed=args.seed,
        keep_running=args.keep_running,
        prefect_api_workers=args.prefect_api_workers,
    )


def _cmd_prefect_db_prepare(args: argparse.Namespace) -> int:
    import os

    from mt5_sync.localstack import prepare_prefect_database

    if not os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL") and not os.environ.get(
        "PREFECT_SERVER_DATABASE_CONNECTION_URL"
    ):
        print("PREFECT_API_DATABASE_CONNECTION_URL is not set (Prefect's own database)",
              file=sys.stderr)
        return 2
    try:
        prepare_prefect_database()
    except RuntimeError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print("Prefect database migrated and block types registered")
    return 0


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

    p = sub.add_parser("generate-key", help="print a new credentials key")
    p.set_defaults(func=_cmd_generate_key)

    p = sub.add_parser("encrypt-password", help="encrypt an investor password read from stdin")
    p.set_defaults(func=_cmd_encrypt_password)

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
        "prefect-db-prepare",
        help="migrate Prefect's own database and register block types, once, before "
             "starting several API workers (docs/prefect-server.md)",
    )
    p.set_defaults(func=_cmd_prefect_db_prepare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
