"""Check the database against the simulated broker's own ledger (demo, tests, benchmarks).

The broker model computes its truth from its ledger, independently of the project's
transforms, so agreement here means the whole path — terminal API, transforms, commit —
reconstructed every position correctly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from mt5_sync.mt5sim import broker
from mt5_sync.mt5sim.world import World
from mt5_sync.servertime import ServerTimeRule
from mt5_sync.store.postgres import PostgresStore

MONEY_TOLERANCE = Decimal("0.01")


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    """Most intervals open at one instant: in-flight syncs read back from sync_logs, as an
    observation independent of the flow's own gauge."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


@dataclass
class BrokerComparison:
    rows: list[dict[str, Any]] = field(default_factory=list)
    accounts_checked: int = 0
    mismatches: int = 0
    duplicate_keys: int = 0
    problems: list[str] = field(default_factory=list)


def _db_trades(store: PostgresStore, account_id: str) -> dict[int, dict[str, Any]]:
    rows = store.fetch_all(
        "SELECT ticket, status, symbol, side, volume, net_profit, open_time, close_time "
        "FROM trades WHERE account_id = %s",
        (account_id,),
    )
    return {int(r["ticket"]): r for r in rows}


def compare_account(
    store: PostgresStore, world: World, account_id: str, login: int, server: str
) -> tuple[int, list[str]]:
    """(number of trades expected, list of differences) for one account."""
    spec = world.account(login, server)
    assert spec is not None, f"{login}@{server} is not in the simulated world"
    rule = ServerTimeRule.parse(spec.time_rule)
    expected = {
        int(t["ticket"]): t
        for t in broker.expected_trades(
            spec, world.seed, world.timeline_start_utc, world.effective_now()
        )
    }
    actual = _db_trades(store, account_id)
    problems: list[str] = []
    for ticket in sorted(expected.keys() - actual.keys()):
        problems.append(f"{login}: position {ticket} missing")
    for ticket in sorted(actual.keys() - expected.keys()):
        problems.append(f"{login}: position {ticket} not at the broker")
    for ticket in sorted(expected.keys() & actual.keys()):
        want, got = expected[ticket], actual[ticket]
        if want["status"] != got["status"]:
            problems.append(f"{login}: {ticket} is {got['status']}, broker says {want['status']}")
            continue
        if want["status"] == "closed":
            diff = abs(Decimal(str(want["net_profit"])) - Decimal(str(got["net_profit"])))
            if diff > MONEY_TOLERANCE:
                problems.append(
                    f"{login}: {ticket} net {got['net_profit']} != broker {want['net_profit']}"
                )
            if abs(float(want["volume"]) - float(got["volume"])) > 1e-6:
                problems.append(f"{login}: {ticket} volume {got['volume']} != {want['volume']}")
            readable = as_the_terminal_reads(rule, want["close_time_utc"])
            if got["close_time"] != readable:
                problems.append(
                    f"{login}: {ticket} closed {got['close_time']} != {readable}"
                    + (f" (true {want['close_time_utc']})"
                       if readable != want["close_time_utc"] else "")
                )
    return len(expected), problems


def as_the_terminal_reads(rule: ServerTimeRule, moment: datetime) -> datetime:
    """``moment`` after the round trip every deal time makes: the trade server writes its
    wall clock (:meth:`ServerTimeRule.to_server_epoch`), the product reads it back
    (:meth:`ServerTimeRule.to_utc_msc`). Equal to ``moment`` except in the hour a "ny" server
    repeats when New York leaves daylight time: a wall-clock time there names two instants,
    and the product documents that it takes the earlier one."""
    millis = round(moment.timestamp() * 1000) % 1000
    return rule.to_utc_msc(rule.to_server_epoch(moment) * 1000 + millis)


def compare_with_broker(store: PostgresStore, world: World) -> BrokerComparison:
    """Every account whose last sync committed data (success or partial) is compared."""
    report = BrokerComparison()
    accounts = store.fetch_all(
        "SELECT a.id::text AS id, a.login_number, a.broker_server, l.status "
        "FROM trading_accounts a JOIN LATERAL ("
        "  SELECT status FROM sync_logs s WHERE s.account_id = a.id "
        "  ORDER BY started_at DESC LIMIT 1) l ON true "
        "WHERE l.status IN ('success', 'partial') ORDER BY a.login_number",
        (),
    )
    for acc in accounts:
        n, problems = compare_account(
            store, world, acc["id"], int(acc["login_number"]), acc["broker_server"]
        )
        report.accounts_checked += 1
        report.mismatches += len(problems)
        report.problems.extend(problems)
        db_count = store.fetch_all(
            "SELECT count(*) AS n FROM trades WHERE account_id = %s", (acc["id"],)
        )[0]["n"]
        report.rows.append(
            {
                "login": acc["login_number"],
                "sync": acc["status"],
                "broker_positions": n,
                "trades_rows": db_count,
                "differences": len(problems),
            }
        )
    dup = store.fetch_all(
        "SELECT count(*) AS n FROM (SELECT account_id, ticket FROM trades "
        "GROUP BY 1, 2 HAVING count(*) > 1) d",
        (),
    )
    report.duplicate_keys = int(dup[0]["n"])
    return report
