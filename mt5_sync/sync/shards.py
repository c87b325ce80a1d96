"""Merge the hosts' shard reports into one cycle: one outcome per account, one line per host.

Plain data, no Prefect: the parent flow reads the shard reports and the cycle's claims and
``sync_logs`` rows from the database (``mt5_cycle_report``) and hands them here. A host that
died mid-cycle sent no report, so its accounts are reported from what reached the database:
a final ``sync_logs`` row if the sync got that far, else ``failed`` / ``host_lost`` (its lease
lapses within one TTL and the account is claimed again -- by another host in this cycle if
one is still claiming, else first in the next). An account nobody claimed is ``deferred``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mt5_sync.sync.outcome import AccountOutcome

_OUTCOME_FIELDS = set(AccountOutcome.__dataclass_fields__)


@dataclass
class MergedCycle:
    outcomes: list[AccountOutcome]
    #: one entry per host that reported or claimed: host, terminals, accounts, claims, ...
    hosts: list[dict[str, Any]] = field(default_factory=list)
    terminals: int = 0
    max_in_flight: int = 0
    terminals_busy: dict[str, float] | None = None
    #: accounts no host claimed: the parent logs them 'deferred'
    unclaimed: list[AccountOutcome] = field(default_factory=list)
    #: "host: what is wrong" for each host with a configuration error (it claimed nothing)
    host_errors: list[str] = field(default_factory=list)


def _outcome(data: Mapping[str, Any]) -> AccountOutcome:
    return AccountOutcome(**{k: v for k, v in data.items() if k in _OUTCOME_FIELDS})


def _from_log(row: Mapping[str, Any], host: str | None) -> AccountOutcome:
    return AccountOutcome(
        account_id=str(row["account_id"]), status=row["status"],
        started_at=str(row["started_at"]), completed_at=str(row.get("completed_at") or ""),
        duration_ms=int(row.get("duration_ms") or 0),
        trades_synced=int(row.get("trades_synced") or 0),
        deals_synced=int(row.get("deals_synced") or 0),
        error_code=row.get("error_code"), error_message=row.get("error_message"),
        sync_id=str(row["sync_id"]), sync_type=row.get("sync_type"), host=host,
    )


def merge_cycle(
    accounts: Sequence[Mapping[str, Any]],
    shard_reports: Iterable[Mapping[str, Any]],
    claims: Iterable[Mapping[str, Any]],
    logs: Iterable[Mapping[str, Any]],
    *,
    now_iso: str,
    sync_type: str,
) -> MergedCycle:
    """One outcome per account of ``accounts`` (``{"id", "login", ...}``, in queue order),
    then any account a shard synced that the list did not have (added mid-cycle)."""
    reported: dict[str, AccountOutcome] = {}
    merged = MergedCycle(outcomes=[])
    mean_total = 0.0
    peak_total = 0
    any_busy = False
    for report in shard_reports:
        for data in report.get("outcomes") or []:
            outcome = _outcome(data)
            outcome.host = outcome.host or report.get("host")
            reported[outcome.account_id] = outcome
        merged.terminals += int(report.get("terminals") or 0)
        merged.max_in_flight += int(report.get("max_in_flight") or 0)
        busy = report.get("terminals_busy")
        if busy:
            any_busy = True
            peak_total += int(busy.get("peak", 0))
            mean_total += float(busy.get("mean", 0.0))
        merged.hosts.append({
            "host": report.get("host"), "terminals": report.get("terminals"),
            "accounts": len(report.get("outcomes") or []), "claims": report.get("claims", 0),
            "takenOver": report.get("taken_over", 0), "durationS": report.get("duration_s"),
            "terminalsBusyMean": round(float(busy["mean"]), 2) if busy else None,
            "reported": True,
            "error": report.get("error"),
        })
        if report.get("error"):
            merged.host_errors.append(f"{report.get('host')}: {report['error']}")
    if any_busy:
        merged.terminals_busy = {"peak": float(peak_total), "mean": mean_total}

    claim_of = {str(c["account_id"]): c for c in claims}
    final_log: dict[str, Mapping[str, Any]] = {}
    for row in logs:
        if row.get("status") == "processing":
            continue
        key = str(row["account_id"])
        if key not in final_log or str(row.get("completed_at")) > str(
                final_log[key].get("completed_at")):
            final_log[key] = row
    reporting_hosts = {h["host"] for h in merged.hosts}
    lost_hosts: dict[str, int] = {}

    def resolve(account_id: str, login: int | None) -> AccountOutcome:
        if account_id in reported:
            return reported[account_id]
        claim = claim_of.get(account_id)
        host = claim.get("host") if claim else None
        if account_id in final_log:
            outcome = _from_log(final_log[account_id], host)
        elif claim is not None and claim.get("outcome") == "claimed":
            lost_hosts[str(host)] = lost_hosts.get(str(host), 0) + 1
            outcome = AccountOutcome(
                account_id=account_id, status="failed", started_at=now_iso,
                completed_at=now_iso, duration_ms=0, error_code="host_lost",
                error_message=f"host {host} stopped before finishing this account; its lease "
                "lapses and the next claim takes it over", sync_type=sync_type, host=host,
            )
        else:
            outcome = AccountOutcome(
                account_id=account_id, status="deferred", started_at=now_iso,
                completed_at=now_iso, duration_ms=0, error_code="unclaimed",
                error_message="no host claimed this account before the cycle ended; first in "
                "line next cycle", sync_type=sync_type,
            )
            merged.unclaimed.append(outcome)
        outcome.login = outcome.login or login
        return outcome

    seen: set[str] = set()
    for account in accounts:
        account_id = str(account["id"])
        seen.add(account_id)
        merged.outcomes.append(resolve(account_id, account.get("login")))
    for account_id, outcome in reported.items():
        if account_id not in seen:
            seen.add(account_id)
            merged.outcomes.append(outcome)
    for host, n in sorted(lost_hosts.items()):
        if host not in reporting_hosts:
            merged.hosts.append({"host": host, "accounts": n, "reported": False})
    return merged
