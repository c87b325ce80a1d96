"""Splitting one commit payload into requests of bounded size (pure: no HTTP, no database).

Why: over the REST path the whole account sync travels in ONE ``.rpc`` body. A first full
sync of a busy account is several MB of JSON (measured: 7,958 deals + 3,492 trades = 4.8 MB),
more than a reverse proxy in front of a self-hosted Supabase accepts by default (nginx's
``client_max_body_size`` is 1 MiB), and a big upload is the request most likely to be cut and
have to be sent again. So a payload above ``max_bytes`` is split:

1. every row list of the payload (deals, cash flows, trades, positions, quarantine) is packed,
   in order, into chunks whose JSON is at most ``max_bytes``; each chunk is one row of the
   staging table ``sync_commit_chunks`` keyed (sync_id, part, seq), upserted idempotently;
2. the remaining small header (ids, status, account, snapshot, cursor) plus a manifest of how
   many chunks and rows each part has goes to ``mt5_commit_staged_account_sync``, which checks
   the manifest, reassembles the payload in the database and calls ``mt5_commit_account_sync``
   -- ONE transaction, so the cursor still advances only together with every row it covers.

Staging writes no real table; a sync that dies between the two steps leaves only staged rows,
which the next commit of the account (or its failure record) clears.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

#: Row lists of a CommitPayload, in the order the staging function reassembles them.
STAGED_PARTS = ("deals", "cash_flows", "closed_trades", "open_positions", "quarantine")
#: Default largest JSON body per request (bytes): below nginx's 1 MiB default.
DEFAULT_MAX_BYTES = 1_000_000
# Room for a staging row's other columns and the JSON array around it.
_ROW_OVERHEAD = 256


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise TypeError(f"naive datetime {value!r}: payload times must be timezone-aware")
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode(obj: Any) -> bytes:
    """Compact UTF-8 JSON exactly as postgrest-py sends it (so sizes measured here are real)."""
    return json.dumps(
        obj, default=_default, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    ).encode("utf-8")


def plain(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The payload as plain JSON values (Decimal, datetime, UUID rendered); raises ValueError
    or TypeError for what JSON cannot carry (NaN, naive datetimes)."""
    result: dict[str, Any] = json.loads(encode(payload))
    return result


@dataclass(frozen=True)
class Chunk:
    """One staging row: ``rows`` of ``part`` at position ``seq``."""

    part: str
    seq: int
    rows: list[Any]
    size: int


@dataclass
class CommitPlan:
    """How one payload travels: directly (``chunks`` empty) or staged then committed."""

    header: dict[str, Any]
    chunks: list[Chunk] = field(default_factory=list)
    body_size: int = 0

    @property
    def staged(self) -> bool:
        return bool(self.chunks) or "staged" in self.header


def _pack(part: str, rows: list[Any], max_bytes: int) -> list[Chunk]:
    chunks: list[Chunk] = []
    current: list[Any] = []
    size = 2  # "[]"
    for row in rows:
        row_size = len(encode(row)) + 1
        if current and size + row_size + _ROW_OVERHEAD > max_bytes:
            chunks.append(Chunk(part, len(chunks), current, size))
            current, size = [], 2
        current.append(row)
        size += row_size
    if current:
        chunks.append(Chunk(part, len(chunks), current, size))
    return chunks


def plan_commit(payload: dict[str, Any], max_bytes: int = DEFAULT_MAX_BYTES) -> CommitPlan:
    """Direct when ``{"p": payload}`` fits in ``max_bytes``, else header + chunks.

    A single row bigger than ``max_bytes`` still gets a chunk of its own (it cannot be split);
    a proxy limit below that is reported by the server as 413.
    """
    body_size = len(encode({"p": payload}))
    if body_size <= max_bytes:
        return CommitPlan(header=payload, body_size=body_size)
    header = dict(payload)
    chunks: list[Chunk] = []
    manifest: dict[str, dict[str, int]] = {}
    for part in STAGED_PARTS:
        rows = payload.get(part)
        if not isinstance(rows, list) or not rows:
            continue  # None ("not fetched") and [] stay as they are in the header
        part_chunks = _pack(part, rows, max_bytes)
        chunks.extend(part_chunks)
        manifest[part] = {"chunks": len(part_chunks), "rows": len(rows)}
        header[part] = []
    header["staged"] = manifest
    return CommitPlan(header=header, chunks=chunks, body_size=body_size)
