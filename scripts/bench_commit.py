"""Commit throughput for a large backfill: the atomic commit function against a COPY lower bound.

A backfill of ``--deals`` deals spread over ``--accounts`` accounts (default 200,000 over 100,
i.e. 2,000 per account: 1,000 positions opened and closed = 1,000 closed trades per account,
plus a deposit). Every figure is measured in the same run, on the same embedded PostgreSQL,
each on its own fresh copy of one registered-accounts database:

* **commit (first write)**: ``PooledPostgresStore.commit_account_sync(payload)`` per account
  (pooled connections, as the pipeline's store), i.e.
  ``select mt5_commit_account_sync(p jsonb)`` -- one transaction writing deals, cash flows,
  trades, the account row, the cursor and the log row (what the sync does);
* **commit (replay)**: the same payloads again (nothing changes: the idempotent path);
* **COPY -> temp table -> INSERT .. ON CONFLICT DO UPDATE** into ``deals`` and ``trades``
  (the bulk-upsert lower bound for the same rows; no validation, no log, no cursor);
* **plain COPY into ``deals``** (the absolute floor: no upsert at all).

Rates are deal rows per second (the goal: >= 40,000) and all rows per second.

    python scripts/bench_commit.py                       # 200,000 deals / 100 accounts
    python scripts/bench_commit.py --deals 50000 --accounts 25
    python scripts/bench_commit.py --concurrency 0      # skip the concurrent run
    python scripts/bench_commit.py --ledger             # + the ledger check's cost per commit

The store sends the row lists column by column (mt5_sync/store/chunks.columnar); the size
line reports that wire size and the row-form JSON size beside it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BENCH_USER = "00000000-0000-4000-8000-0000000000cb"
BASE = datetime(2025, 1, 6, 0, 0, tzinfo=UTC)
SERVER_OFFSET_S = 2 * 3600
SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "XAUUSD")
DEAL_COLUMNS = (
    "account_id", "ticket", "order_ticket", "position_id", "time", "time_server",
    "time_msc_server", "type", "entry", "magic", "reason", "volume", "price", "commission",
    "swap", "profit", "fee", "symbol", "comment", "external_id", "created_at", "updated_at",
)
TRADE_COLUMNS = (
    "account_id", "ticket", "symbol", "side", "status", "volume", "open_price", "open_time",
    "open_time_server", "close_price", "close_time", "close_time_server", "stop_loss",
    "take_profit", "current_price", "profit", "swap", "commission", "fee", "net_profit",
    "magic", "comment", "deal_count", "created_at", "updated_at",
)


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp()) + SERVER_OFFSET_S


def build_payload(account_id: str, login: int, n_deals: int, seed: int) -> dict[str, Any]:
    """A full-sync payload: n_deals - 1 trade deals (IN/OUT pairs) + one deposit."""
    import random

    rng = random.Random(seed)
    deals: list[dict[str, Any]] = []
    trades: list[dict[str, Any]] = []
    deposit_time = BASE - timedelta(hours=1)
    deals.append({
        "ticket": 1, "order_ticket": 0, "position_id": 0, "time_utc": deposit_time.isoformat(),
        "time_server": _epoch(deposit_time), "time_msc_server": _epoch(deposit_time) * 1000,
        "type": 2, "entry": 0, "magic": 0, "reason": 0, "volume": 0.0, "price": 0.0,
        "commission": 0.0, "swap": 0.0, "profit": 100_000.0, "fee": 0.0, "symbol": "",
        "comment": "deposit", "external_id": "",
    })
    ticket = 10
    for i in range((n_deals - 1) // 2):
        position = 1_000_000 + i
        opened = BASE + timedelta(minutes=7 * i)
        closed = opened + timedelta(minutes=rng.randint(1, 600))
        symbol = SYMBOLS[i % len(SYMBOLS)]
        volume = round(rng.choice([0.01, 0.1, 0.5, 1.0]), 2)
        p_open = round(rng.uniform(1.0, 2.0), 5)
        p_close = round(p_open + rng.uniform(-0.01, 0.01), 5)
        side_buy = i % 2 == 0
        profit = round((p_close - p_open) * volume * 100_000 * (1 if side_buy else -1), 2)
        commission = round(-3.5 * volume, 2)
        for entry, moment, price, pnl in ((0, opened, p_open, 0.0), (1, closed, p_close, profit)):
            ticket += 1
            deals.append({
                "ticket": ticket, "order_ticket": ticket + 5_000_000, "position_id": position,
                "time_utc": moment.isoformat(), "time_server": _epoch(moment),
                "time_msc_server": _epoch(moment) * 1000 + 17,
                "type": (0 if side_buy else 1) if entry == 0 else (1 if side_buy else 0),
                "entry": entry, "magic": 0, "reason": 0, "volume": volume, "price": price,
                "commission": commission, "swap": 0.0, "profit": pnl, "fee": 0.0,
                "symbol": symbol, "comment": "", "external_id": "",
            })
        trades.append({
            "ticket": position, "symbol": symbol, "side": "buy" if side_buy else "sell",
            "status": "closed", "volume": volume, "open_price": p_open,
            "open_time_utc": opened.isoformat(), "open_time_server": _epoch(opened),
            "close_price": p_close, "close_time_utc": closed.isoformat(),
            "close_time_server": _epoch(closed), "stop_loss": None, "take_profit": None,
            "current_price": None, "profit": profit, "swap": 0.0,
            "commission": 2 * commission, "fee": 0.0,
            "net_profit": round(profit + 2 * commission, 2), "magic": 0, "comment": "",
            "deal_count": 2,
        })
    completed = BASE + timedelta(days=400)
    return {
        "sync_id": str(uuid.uuid4()), "account_id": account_id, "execution_id": None,
        "flow_run_id": None, "trigger": "backfill", "sync_type": "full", "status": "success",
        "error_message": None, "error_code": None,
        "started_at": (completed - timedelta(seconds=30)).isoformat(),
        "completed_at": completed.isoformat(), "duration_ms": 30_000,
        "account": {
            "login": login, "server": "Bench-Server", "name": "Bench", "company": "Bench Ltd",
            "currency": "USD", "leverage": 100, "margin_mode": "hedging", "balance": 100_000.0,
            "credit": 0.0, "profit": 0.0, "equity": 100_000.0, "margin": 0.0,
            "free_margin": 100_000.0, "margin_level": None,
        },
        "snapshot": {"taken_at": completed.isoformat(), "balance": 100_000.0,
                     "equity": 100_000.0, "margin": 0.0, "free_margin": 100_000.0,
                     "margin_level": None},
        "open_positions": [],
        "closed_trades": trades,
        "deals": deals,
        "cash_flows": [{
            "deal_ticket": 1, "type": 2, "kind": "balance", "amount": 100_000.0,
            "time_utc": deposit_time.isoformat(), "time_server": _epoch(deposit_time),
            "comment": "deposit",
        }],
        "quarantine": [],
        "history_cursor": completed.isoformat(),
        "lease_holder": None,
    }


def with_ledger(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload with the ledger reconciliation asked for (the window holds the whole
    history: offset 0) and a balance its deals reproduce."""
    money = sum(d["profit"] + d["swap"] + d["commission"] + d["fee"]
                for d in payload["deals"] if d["type"] != 3)
    balance = round(money, 2)
    account = {**payload["account"], "balance": balance, "equity": balance,
               "free_margin": balance}
    return {**payload, "sync_id": str(uuid.uuid4()), "account": account,
            "ledger": {"expected_offset": 0.0}}


BEFORE_MIGRATION = "20261122000800"  # --baseline: the commit function before the columnar form


def row_form_store(conninfo: str, **kwargs: Any) -> Any:
    """A PostgresStore that sends the payload as the client did before 20261122000800: row
    lists as one JSON object per row, encoded with json (what the old function accepts)."""
    from psycopg.types.json import Jsonb

    from mt5_sync.store.postgres import PostgresStore

    class _RowForm(PostgresStore):
        def commit_account_sync(self, payload: Any) -> dict[str, Any]:
            text = json.dumps(payload, allow_nan=False, separators=(",", ":"))
            result = self._call("mt5_commit_account_sync",
                                "select public.mt5_commit_account_sync(%s)",
                                (Jsonb(None, dumps=lambda _o: text),))
            return dict(result or {})

    return _RowForm(conninfo, **kwargs)



def register(store: Any, n: int) -> list[tuple[str, int]]:
    store.ensure_user(BENCH_USER, "bench-commit@example.com")
    out = []
    for i in range(n):
        login = 7_000_000 + i
        out.append((store.register_account(
            user_id=BENCH_USER, login_number=login, broker_server="Bench-Server",
            broker_name="Bench Ltd", investor_password_encrypted="x", server_time_rule="fixed:+2",
        ), login))
    return out


def time_commits(
    store: Any, payloads: list[dict[str, Any]], concurrency: int = 1
) -> tuple[float, list[float]]:
    """Commit every payload (one account each); with ``concurrency`` > 1, that many accounts
    at once on threads (the flow commits accounts concurrently too)."""
    per: list[float] = []

    def one(p: dict[str, Any]) -> None:
        t = time.perf_counter()
        store.commit_account_sync(p)
        per.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    if concurrency <= 1:
        for p in payloads:
            one(p)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, payloads))
    return time.perf_counter() - t0, per


def _deal_tuple(account_id: str, d: dict[str, Any], stamp: str) -> tuple[Any, ...]:
    return (account_id, d["ticket"], d["order_ticket"], d["position_id"], d["time_utc"],
            d["time_server"], d["time_msc_server"], d["type"], d["entry"], d["magic"],
            d["reason"], d["volume"], d["price"], d["commission"], d["swap"], d["profit"],
            d["fee"], d["symbol"], d["comment"], d["external_id"], stamp, stamp)


def _trade_tuple(account_id: str, t: dict[str, Any], stamp: str) -> tuple[Any, ...]:
    return (account_id, t["ticket"], t["symbol"], t["side"], t["status"], t["volume"],
            t["open_price"], t["open_time_utc"], t["open_time_server"], t["close_price"],
            t["close_time_utc"], t["close_time_server"], t["stop_loss"], t["take_profit"],
            t["current_price"], t["profit"], t["swap"], t["commission"], t["fee"],
            t["net_profit"], t["magic"], t["comment"], t["deal_count"], stamp, stamp)


def time_copy_upsert(store: Any, payloads: list[dict[str, Any]]) -> float:
    """COPY each account's rows into temp tables, then one upsert per table (per account)."""
    set_deals = ", ".join(f"{c} = excluded.{c}" for c in DEAL_COLUMNS[2:-2])
    set_trades = ", ".join(f"{c} = excluded.{c}" for c in TRADE_COLUMNS[2:-2])
    t0 = time.perf_counter()
    for p in payloads:
        stamp = p["completed_at"]
        with store.connection() as conn, conn.cursor() as cur:
            cur.execute("create temp table d (like public.deals) on commit drop;"
                        "create temp table t (like public.trades including defaults)"
                        " on commit drop")
            with cur.copy(f"copy d ({', '.join(DEAL_COLUMNS)}) from stdin") as cp:
                for d in p["deals"]:
                    cp.write_row(_deal_tuple(p["account_id"], d, stamp))
            with cur.copy(f"copy t ({', '.join(TRADE_COLUMNS)}) from stdin") as cp:
                for tr in p["closed_trades"]:
                    cp.write_row(_trade_tuple(p["account_id"], tr, stamp))
            cur.execute(f"insert into public.deals ({', '.join(DEAL_COLUMNS)})"
                        f" select {', '.join(DEAL_COLUMNS)} from d"
                        f" on conflict (account_id, ticket) do update set {set_deals}")
            cur.execute(f"insert into public.trades ({', '.join(TRADE_COLUMNS)})"
                        f" select {', '.join(TRADE_COLUMNS)} from t"
                        f" on conflict (account_id, ticket) do update set {set_trades}")
    return time.perf_counter() - t0


def time_plain_copy(store: Any, payloads: list[dict[str, Any]]) -> float:
    t0 = time.perf_counter()
    for p in payloads:
        stamp = p["completed_at"]
        with store.connection() as conn, conn.cursor() as cur, cur.copy(
            f"copy public.deals ({', '.join(DEAL_COLUMNS)}) from stdin"
        ) as cp:
            for d in p["deals"]:
                cp.write_row(_deal_tuple(p["account_id"], d, stamp))
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--deals", type=int, default=200_000)
    ap.add_argument("--accounts", type=int, default=100)
    ap.add_argument("--baseline", action="store_true",
                    help="also time the commit as it was before 20261122000800 (rows sent as "
                         "one JSON object each, json encoding; same payloads, same run)")
    ap.add_argument("--concurrency", type=int, default=2,
                    help="also time first writes with this many accounts committing at once, on "
                         "a fresh database (0 or 1: skip)")
    ap.add_argument("--ledger", action="store_true",
                    help="also time the ledger reconciliation: replays with and without it "
                         "(payload 'ledger', consistent balance), interleaved on one database")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from mt5_sync.shutdown import stop_on_signals

    with stop_on_signals():  # SIGTERM/SIGHUP: the finally below runs, as on Ctrl+C
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from mt5_sync.localstack import EmbeddedPostgres, short_root
    from mt5_sync.store.chunks import columnar
    from mt5_sync.store.migrations import apply_migrations
    from mt5_sync.store.postgres import PooledPostgresStore, PostgresStore, _dumps

    root = short_root("mt5c-")
    pg: EmbeddedPostgres | None = None
    try:
        pg = EmbeddedPostgres.start(root / "pg")
        base_url = pg.create_database("base", drop=True)
        apply_migrations(base_url)
        accounts = register(PostgresStore(base_url), args.accounts)
        per_account = args.deals // args.accounts
        payloads = [build_payload(a, login, per_account, i)
                    for i, (a, login) in enumerate(accounts)]
        n_deals = sum(len(p["deals"]) for p in payloads)
        n_rows = sum(len(p["deals"]) + len(p["closed_trades"]) + len(p["cash_flows"])
                     for p in payloads)
        size_rows = sum(len(json.dumps(p, separators=(",", ":"))) for p in payloads)
        t = time.perf_counter()
        size = sum(len(_dumps(columnar(p))) for p in payloads)  # what the store sends
        encode_s = time.perf_counter() - t
        print(f"[commit] {n_deals} deals, {n_rows} rows, {size / 2**20:.1f} MiB on the wire "
              f"(columnar; {size_rows / 2**20:.1f} MiB as rows; encoded in {encode_s:.2f}s) "
              f"over {args.accounts} accounts", flush=True)

        # pooled, as the pipeline's store is (tasks/runtime.py): warm backends
        store = PooledPostgresStore(pg.create_database("c1", template="base", drop=True),
                                    max_size=2, statement_timeout_s=None)
        store.open()
        first_s, per = time_commits(store, payloads)
        print(f"[commit] first write {first_s:.2f}s", flush=True)
        replay_s, _ = time_commits(store, payloads)
        print(f"[commit] replay {replay_s:.2f}s", flush=True)
        ledger_report: dict[str, Any] = {}
        if args.ledger:
            # Same database, same accounts, interleaved: replays of each account's payload
            # with and without the check (a fresh database per variant measured mostly how
            # busy the machine was at the time).
            checked = [with_ledger(p) for p in payloads]
            time_commits(store, checked)  # first check of every account: offset 0
            bad = store.fetch_all(
                "select count(*) as n from mt5_ledger_reconciliation where status <> 'ok'")
            assert bad[0]["n"] == 0, bad
            with_check: list[float] = []
            without: list[float] = []
            for _ in range(3):
                for plain, led in zip(payloads, checked, strict=True):
                    for payload, bucket in ((led, with_check), (plain, without)):
                        t = time.perf_counter()
                        store.commit_account_sync(payload)  # type: ignore[arg-type]
                        bucket.append(time.perf_counter() - t)
            p50 = statistics.median
            ledger_report = {
                "ledger_replay_ms_per_account_p50": round(p50(with_check) * 1000, 1),
                "plain_replay_ms_per_account_p50": round(p50(without) * 1000, 1),
                "ledger_check_cost_ms_p50": round((p50(with_check) - p50(without)) * 1000, 1),
            }
            print(f"[commit] ledger check: {ledger_report['ledger_check_cost_ms_p50']} ms per "
                  "commit (p50, interleaved replays)", flush=True)
        check = store.fetch_all("select (select count(*) from deals) as deals,"
                                " (select count(*) from trades) as trades")[0]
        assert check["deals"] == n_deals, check

        concurrent: dict[str, Any] = {}
        if args.concurrency > 1:
            conc_store = PooledPostgresStore(
                pg.create_database("c4", template="base", drop=True),
                max_size=args.concurrency + 1, statement_timeout_s=None)
            conc_store.open()
            conc_s, _ = time_commits(conc_store, payloads, args.concurrency)
            print(f"[commit] first write, {args.concurrency} at once {conc_s:.2f}s", flush=True)
            check = conc_store.fetch_all("select count(*) as deals from deals")[0]
            assert check["deals"] == n_deals, check
            concurrent = {
                "commit_concurrency": args.concurrency,
                "commit_first_concurrent_s": round(conc_s, 2),
                "commit_first_concurrent_deals_per_s": round(n_deals / conc_s),
            }

        baseline: dict[str, Any] = {}
        if args.baseline:
            import tempfile

            from mt5_sync.store.migrations import MIGRATIONS_DIR

            older = Path(tempfile.mkdtemp(prefix="mig-", dir=str(root)))
            for f in sorted(MIGRATIONS_DIR.glob("*.sql")):
                if f.name < BEFORE_MIGRATION:
                    shutil.copy(f, older / f.name)
            old_url = pg.create_database("old", drop=True)
            apply_migrations(old_url, older)
            old_store = row_form_store(old_url, statement_timeout_s=None)
            old_accounts = register(old_store, args.accounts)
            old_payloads = [build_payload(a, login, per_account, i)
                            for i, (a, login) in enumerate(old_accounts)]
            old_first_s, old_per = time_commits(old_store, old_payloads)
            old_replay_s, _ = time_commits(old_store, old_payloads)
            baseline = {
                "before_commit_first_s": round(old_first_s, 2),
                "before_commit_first_deals_per_s": round(n_deals / old_first_s),
                "before_commit_replay_deals_per_s": round(n_deals / old_replay_s),
                "before_commit_ms_per_account_p50": round(statistics.median(old_per) * 1000, 1),
            }
            print(f"[commit] before {BEFORE_MIGRATION}: first write {old_first_s:.2f}s",
                  flush=True)

        copy_store = PostgresStore(pg.create_database("c2", template="base", drop=True),
                                   statement_timeout_s=None)
        upsert_s = time_copy_upsert(copy_store, payloads)
        upsert_replay_s = time_copy_upsert(copy_store, payloads)
        plain_store = PostgresStore(pg.create_database("c3", template="base", drop=True),
                                    statement_timeout_s=None)
        plain_s = time_plain_copy(plain_store, payloads)
        import os

        report = {
            "deals": n_deals,
            "rows": n_rows,
            "accounts": args.accounts,
            "payload_mib": round(size / 2**20, 1),
            "payload_as_rows_mib": round(size_rows / 2**20, 1),
            "commit_first_s": round(first_s, 2),
            "commit_first_deals_per_s": round(n_deals / first_s),
            "commit_first_rows_per_s": round(n_rows / first_s),
            "commit_ms_per_account_p50": round(statistics.median(per) * 1000, 1),
            "commit_replay_s": round(replay_s, 2),
            "commit_replay_deals_per_s": round(n_deals / replay_s),
            "copy_upsert_s": round(upsert_s, 2),
            "copy_upsert_deals_per_s": round(n_deals / upsert_s),
            "copy_upsert_replay_deals_per_s": round(n_deals / upsert_replay_s),
            "plain_copy_deals_per_s": round(n_deals / plain_s),
            "commit_over_copy_upsert": round(upsert_s / first_s, 2),
            **concurrent,
            **baseline,
            **ledger_report,
            "client_json_encode_s": round(encode_s, 2),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
            "command": "python scripts/bench_commit.py " + " ".join(sys.argv[1:]),
        }
        print(json.dumps(report, indent=1), flush=True)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(report, indent=1))
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
