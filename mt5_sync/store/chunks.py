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

Both transports send the row lists of a commit in COLUMNAR form (:func:`columnar`): one value
per column (a PostgreSQL array literal in a JSON string, or a JSON array where a literal cannot
carry a value exactly) instead of one object per row. That is the wire format only -- the
payload the pipeline builds stays a dict of row lists -- and it is what makes a large commit
fast (measured on a 2,000-deal account: 0.45 instead of 1.05 MiB, parsed by PostgreSQL in ~1
instead of ~25 ms, and one ``unnest`` instead of a ``jsonb_to_record`` per row). The commit
function accepts both forms, so staged chunks (row lists, reassembled in the database) and
older clients keep working.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from operator import itemgetter
from typing import Any

import orjson

#: Row lists of a CommitPayload, in the order the staging function reassembles them.
STAGED_PARTS = ("deals", "cash_flows", "closed_trades", "open_positions", "quarantine")
#: Row lists sent column by column (the quarantine keeps its rows: few, and nested records).
COLUMNAR_PARTS = ("deals", "cash_flows", "closed_trades", "open_positions")
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


_NUMBERS = frozenset({int, float, type(None)})
_STRINGS = frozenset({str, type(None)})


def _literal(values: Sequence[Any]) -> str | list[Any]:
    """A column as a PostgreSQL array literal (``{1,2.5,null}``, ``{"a","b"}``) when that is
    cheap and exact, else a list (a JSON array, which the database also accepts).

    Numbers (finite only: a NaN stays in the list for the JSON encoder to refuse) and strings
    go as literals, null as ``null`` (array_in reads it as NULL); booleans, nested values,
    Decimals, datetimes stay JSON.
    """
    types = set(map(type, values))  # exact types: bool and str/int subclasses stay JSON
    if types <= _NUMBERS:
        if float in types:
            present = values if type(None) not in types else [v for v in values if v is not None]
            if not math.isfinite(sum(present)):  # NaN/inf, or a sum that overflows: the
                return list(values)               # JSON encoder judges each value
        return "{" + orjson.dumps(values)[1:-1].decode() + "}"
    if types <= _STRINGS:
        text = orjson.dumps(values)[1:-1].decode()
        if "\\" not in text:  # no JSON escapes: JSON string quoting is array-literal quoting
            return "{" + text + "}"
        return "{" + ",".join(
            "null" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
            for v in values
        ) + "}"
    return list(values)


def to_columns(rows: list[Any]) -> Any:
    """``[{"a": 1, "b": "x"}, {"a": 3, "b": "y"}]`` -> ``{"rows": 2, "columns": {"a": "{1,3}",
    "b": "{\\"x\\",\\"y\\"}"}}``: one value per column, a PostgreSQL array literal (or,
    for values a literal cannot carry exactly, a JSON array).

    A key missing from some rows gets null there (as the row form's missing key). Anything
    that is not a non-empty list of dicts is returned unchanged, for the database to judge.
    """
    if not isinstance(rows, list) or not rows or not isinstance(rows[0], dict):
        return rows
    keys = list(rows[0])
    if len(keys) > 1:
        try:  # transposed in C; rows that are not dicts with these keys fall through
            if all(len(r) == len(keys) for r in rows):
                columns = zip(*map(itemgetter(*keys), rows), strict=True)
                return {"rows": len(rows),
                        "columns": {k: _literal(c) for k, c in zip(keys, columns, strict=True)}}
        except (KeyError, TypeError):
            pass
    if not all(isinstance(r, dict) for r in rows):
        return rows
    union = list(dict.fromkeys(k for r in rows for k in r))
    return {"rows": len(rows),
            "columns": {k: _literal([r.get(k) for r in rows]) for k in union}}


def columnar(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The commit payload in its wire form: the row lists of :data:`COLUMNAR_PARTS` as columns
    (a shallow copy; the rows themselves are not copied or changed)."""
    out = dict(payload)
    for part in COLUMNAR_PARTS:
        if part in out:
            out[part] = to_columns(out[part])
    return out


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
    """Direct -- in the columnar wire form -- when ``{"p": columnar(payload)}`` fits in
    ``max_bytes``, else header + chunks of rows (reassembled in the database).

    A single row bigger than ``max_bytes`` still gets a chunk of its own (it cannot be split);
    a proxy limit below that is reported by the server as 413.
    """
    wire = columnar(payload)
    body_size = len(encode({"p": wire}))
    if body_size <= max_bytes:
        return CommitPlan(header=wire, body_size=body_size)
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
