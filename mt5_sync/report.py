"""Plain-text rendering of a cycle summary for terminals and logs."""

from __future__ import annotations

from typing import Any

from mt5_sync.sync.health import freshness_line
from mt5_sync.sync.outcome import summary_table

MAX_CELL = 72


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def render_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows)"
    headers = list(rows[0])
    cells = [[_cell(r.get(h, "")) for h in headers] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join([line, rule, *body])


def render_summary(summary: dict[str, Any]) -> str:
    totals = (
        f"totalAccounts={summary['totalAccounts']}  successCount={summary['successCount']}  "
        f"partialCount={summary['partialCount']}  failureCount={summary['failureCount']}  "
        f"duration_ms={summary['duration_ms']}"
    )
    if "maxInFlight" in summary:
        totals += f"  maxInFlight={summary['maxInFlight']}"
    if "terminalsBusyMean" in summary:
        totals += (f"  terminals={summary['terminals']} busy peak "
                   f"{summary['terminalsBusyPeak']} mean {summary['terminalsBusyMean']}")
    if summary.get("skippedCount"):
        totals += f"  skippedCount={summary['skippedCount']}"
    parts = [render_table(summary_table(summary)), "", totals]
    if summary.get("freshness"):
        parts.append(freshness_line(summary["freshness"]))
    for paused in summary.get("pausedServers") or []:
        parts.append(f"server {paused['broker_server']} paused until {paused['paused_until']}"
                     f" ({paused['accounts_failed']} of {paused['accounts_tried']} accounts"
                     f" failed with {paused['error_code']})")
    if summary.get("degraded"):
        parts.append("degraded: " + "; ".join(summary["degraded"]))
    if summary.get("message"):
        parts.append(summary["message"])
    return "\n".join(parts)
