"""Account health in the cycle: who is skipped, freshness figures, what a human must hear.

Plain functions (no Prefect): the flow asks the database which accounts are due
(``mt5_account_schedule_at``, the backoff rules live in
``supabase/migrations/20261203000400_account_health.sql``), turns the others into ``skipped``
outcomes here, and after the cycle summarises freshness and builds the events to emit.

Why skipped accounts are outcomes and not failures: issue 14 -- a broken account retried every
cycle made ~288 failed logins a day, and brokers block the source IP after repeated failed
logins; once backed off, an account must not count as a failure again, but it must stay
visible (reason and next attempt) in the summary.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from mt5_sync.sync.outcome import AccountOutcome

#: event names (Prefect events; deployments/bootstrap.py creates automations on them)
NEEDS_CREDENTIALS = "mt5.account.needs-credentials"
RECOVERED = "mt5.account.recovered"
CYCLE_DEGRADED = "mt5.cycle.degraded"
SERVER_PAUSED = "mt5.server.paused"


def split_due(
    accounts: Sequence[dict[str, Any]],
    schedule: Iterable[Mapping[str, Any]],
    *,
    now: datetime,
    sync_type: str,
) -> tuple[list[dict[str, Any]], dict[str, AccountOutcome]]:
    """(accounts to sync, in their order; account id -> ``skipped`` outcome for the others).

    ``schedule`` rows as ``Store.account_schedule`` returns them; an account without a row is
    due (it was created after the schedule was read).
    """
    rows = {str(r["account_id"]): r for r in schedule}
    due: list[dict[str, Any]] = []
    skipped: dict[str, AccountOutcome] = {}
    stamp = now.isoformat()
    for account in accounts:
        row = rows.get(account["id"])
        if row is None or row["due"]:
            due.append(account)
            continue
        nxt = row["next_attempt_at"]
        message = row["message"] or row["state"]
        if nxt is not None:
            message = f"{message}; next attempt {nxt.isoformat()}"
        skipped[account["id"]] = AccountOutcome(
            account_id=account["id"], status="skipped", started_at=stamp, completed_at=stamp,
            duration_ms=0, error_code=row["reason"], error_message=message,
            login=account["login"], sync_type=sync_type,
            extra={"state": row["state"],
                   "next_attempt_at": None if nxt is None else nxt.isoformat()},
        )
    return due, skipped


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks: PostgreSQL's ``percentile_cont(q)``."""
    pos = (len(ordered) - 1) * q
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def freshness_stats(
    rows: Iterable[Mapping[str, Any]], *, slo_s: int, at: datetime
) -> dict[str, Any]:
    """Staleness of the *active* accounts, from ``Store.account_freshness`` rows.

    Seconds, rounded to 0.1: ``p50S``, ``p95S``, ``maxS`` (None without any synced account)
    over accounts synced at least once; ``overSlo`` counts accounts older than ``slo_s``
    *and* never-synced ones (their data is missing, the worst staleness there is);
    ``neverSynced`` counts the latter alone.
    """
    active = [r for r in rows if r["is_active"]]
    ages = sorted(float(r["staleness_s"]) for r in active if r["staleness_s"] is not None)
    never = sum(1 for r in active if r["staleness_s"] is None)

    def fig(value: float | None) -> float | None:
        return None if value is None else round(value, 1)

    return {
        "at": at.isoformat(),
        "sloS": slo_s,
        "activeAccounts": len(active),
        "p50S": fig(_percentile(ages, 0.5)) if ages else None,
        "p95S": fig(_percentile(ages, 0.95)) if ages else None,
        "maxS": fig(ages[-1]) if ages else None,
        "overSlo": sum(1 for a in ages if a > slo_s) + never,
        "neverSynced": never,
        "states": _count(r["state"] for r in active),
    }


def freshness_line(freshness: Mapping[str, Any]) -> str:
    """One line for logs, the artifact and the demo."""
    def fig(key: str) -> str:
        value = freshness.get(key)
        return "-" if value is None else f"{value:g}s"

    return (
        f"freshness of {freshness['activeAccounts']} active accounts: p50 {fig('p50S')}, "
        f"p95 {fig('p95S')}, max {fig('maxS')}; {freshness['overSlo']} over the "
        f"{freshness['sloS']}s SLO ({freshness['neverSynced']} never synced)"
    )


def _count(values: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        out[value] = out.get(value, 0) + 1
    return dict(sorted(out.items()))


def degraded_reasons(
    summary: Mapping[str, Any], freshness: Mapping[str, Any], *, failure_rate: float
) -> list[str]:
    """Why the cycle needs a human's attention (empty: it does not).

    * the failed share of the accounts the cycle *tried* (skipped and deferred ones were not)
      is above ``failure_rate``;
    * the p95 staleness of active accounts is over the SLO.
    """
    reasons = []
    tried = summary["successCount"] + summary["partialCount"] + summary["failureCount"]
    if tried and summary["failureCount"] / tried > failure_rate:
        reasons.append(
            f"{summary['failureCount']} of {tried} accounts failed "
            f"(over {failure_rate:.0%})"
        )
    p95 = freshness.get("p95S")
    if p95 is not None and p95 > freshness["sloS"]:
        reasons.append(f"p95 staleness {p95:g}s is over the {freshness['sloS']}s SLO")
    return reasons


def account_resource(account_id: str, login: Any, server: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"mt5.account.{account_id}",
        "prefect.resource.name": f"{login}@{server}",
        "mt5.broker_server": server,
    }


def server_resource(server: str) -> dict[str, str]:
    return {"prefect.resource.id": f"mt5.server.{server}", "prefect.resource.name": server}


def account_event(row: Mapping[str, Any]) -> dict[str, Any]:
    """``emit_event`` arguments for one taken health event (``Store.take_health_events``).

    Carries codes, messages and times only: never a password or its ciphertext. The event's
    own time is Prefect's (when it was emitted); the product-clock instant of the change is
    ``payload.occurred_at``.
    """
    name = NEEDS_CREDENTIALS if row["kind"] == "needs-credentials" else RECOVERED
    nxt = row.get("next_attempt_at")
    return {
        "event": name,
        "resource": account_resource(row["account_id"], row["login_number"],
                                     row["broker_server"]),
        "payload": {
            "error_code": row["error_code"],
            "message": row["message"],
            "previous_state": row["previous_state"],
            "occurred_at": row["occurred_at"].isoformat(),
            "next_attempt_at": None if nxt is None else nxt.isoformat(),
            "sync_id": row["sync_id"],
        },
    }


def server_paused_event(row: Mapping[str, Any], execution_id: str) -> dict[str, Any]:
    return {
        "event": SERVER_PAUSED,
        "resource": server_resource(row["broker_server"]),
        "payload": {
            "error_code": row["error_code"],
            "accounts_failed": row["accounts_failed"],
            "accounts_tried": row["accounts_tried"],
            "paused_until": row["paused_until"].isoformat(),
            "execution_id": execution_id,
        },
    }


def cycle_degraded_event(
    reasons: Sequence[str], summary: Mapping[str, Any], freshness: Mapping[str, Any],
    flow_name: str,
) -> dict[str, Any]:
    return {
        "event": CYCLE_DEGRADED,
        "resource": {"prefect.resource.id": f"mt5.cycle.{flow_name}",
                     "prefect.resource.name": flow_name},
        "payload": {
            "reasons": list(reasons),
            "execution_id": summary["executionId"],
            "failureCount": summary["failureCount"],
            "totalAccounts": summary["totalAccounts"],
            "skippedCount": summary["skippedCount"],
            "freshness": {k: v for k, v in freshness.items() if k != "states"},
        },
    }
