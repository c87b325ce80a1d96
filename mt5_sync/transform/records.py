"""Raw MT5 records -> validated, typed frames -> database rows; bad records -> quarantine.

Raw records are the ``_asdict()`` of MT5 structures, times still server epochs. Every record
either becomes a row or is quarantined with readable reasons; none is silently dropped and no
bad value crashes the sync.

Pipeline per structure (column-wise and vectorised: 200,000 deals -> rows in ~1.3 s CPU on
the 2-core CI machine, most of it building the 200,000 row dicts):

1. shape: a record that is not a mapping or lacks a structure field is quarantined
   ("missing field price"). Extra keys are ignored (a newer terminal may add fields).
2. coercion: columns become ``int64`` / ``float64`` / ``str``; a value of the wrong type
   becomes missing (it then fails ``not_nullable``, reported as "price is not a number").
3. pandera (``lazy=True``): every failed check of every row is collected; the rows with
   failures are quarantined, their reasons built from the rules in :mod:`.schemas`.
4. duplicate tickets (a deal fetched by the date window and again by position) keep the last.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pandera.pandas as pa

from mt5_sync.contracts import AccountRow, CashFlowRow, DealRow, QuarantineRow, SnapshotRow
from mt5_sync.servertime import ServerTimeRule
from mt5_sync.transform.schemas import (
    ACCOUNT_SPEC,
    CASH_FLOW_KINDS,
    DEAL_SPEC,
    INT64_MAX,
    INT64_MIN,
    MARGIN_MODES,
    POSITION_SPEC,
    RecordSpec,
)

_MS_PER_HOUR = 3_600_000
_NEW_YORK = "America/New_York"
_REASON_MAX = 1_000  # one quarantine row's reasons string


class ValidatedFrame(NamedTuple):
    """Valid rows as a typed frame, plus the quarantined records."""

    frame: pd.DataFrame
    quarantine: list[QuarantineRow]
    duplicates: int = 0


# ---------------------------------------------------------------- JSON safety


def json_safe(value: Any) -> Any:
    """A raw value made JSON-safe: NaN/inf -> "nan"/"inf", numpy -> Python, others -> str."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _readable_int(value: Any) -> int | None:
    if isinstance(value, np.integer):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX:
        return value
    return None


def _show(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _quarantine_row(spec: RecordSpec, record: Any, reasons: Sequence[str]) -> QuarantineRow:
    ticket = None
    if spec.ticket_field and isinstance(record, Mapping):
        ticket = _readable_int(record.get(spec.ticket_field))
    text = "; ".join(reasons)
    if len(text) > _REASON_MAX:
        text = text[: _REASON_MAX - 3] + "..."
    safe = json_safe(record) if isinstance(record, Mapping) else {"value": json_safe(record)}
    return QuarantineRow(kind=spec.kind, ticket=ticket, reasons=text, record=safe)


# ---------------------------------------------------------------- coercion


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if INT64_MIN <= value <= INT64_MAX else None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return None


def _float_or_nan(value: Any) -> float:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            return math.nan
    return math.nan


def _column_values(records: Sequence[Mapping[str, Any]], spec: RecordSpec) -> dict[str, list[Any]]:
    """Column-wise raw values (C-level ``itemgetter`` loops); KeyError when a field is missing."""
    return {col: list(map(itemgetter(col), records)) for col in spec.columns}


def _coerce(values: dict[str, list[Any]], spec: RecordSpec) -> pd.DataFrame:
    """Typed frame from raw column values.

    Fast path: numpy infers ``int64`` / ``float64`` from a clean list in C. Any other
    inferred type (a None, a string, a float in an integer field, an int beyond int64) sends
    that column down the element-wise path, where a value of the wrong type becomes missing.
    Booleans are ints to numpy; MT5 never sends them in these fields.
    """
    out: dict[str, Any] = {}
    for col in spec.columns:
        raw = values[col]
        if col in spec.ints:
            arr = _infer(raw)
            if arr is not None and arr.dtype == np.int64:
                out[col] = arr
            else:
                out[col] = pd.array([_int_or_none(v) for v in raw], dtype="Int64")
        elif col in spec.floats:
            arr = _infer(raw)
            if arr is not None and arr.dtype.kind in "fi":
                out[col] = arr.astype("float64", copy=False)
            else:
                out[col] = np.array([_float_or_nan(v) for v in raw], dtype="float64")
        else:
            strs = np.fromiter(raw, dtype=object, count=len(raw))
            if pd.api.types.infer_dtype(strs, skipna=False) != "string":
                strs = np.array([v if isinstance(v, str) else None for v in raw], dtype=object)
            out[col] = pd.Series(strs, dtype=object, copy=False)
    return pd.DataFrame(out, copy=False)


def _infer(values: list[Any]) -> np.ndarray | None:
    """numpy's C-level type inference; ``None`` when it fails or is not a flat column."""
    try:
        arr = np.array(values)
    except (TypeError, ValueError, OverflowError):
        return None
    return arr if arr.ndim == 1 else None


def _empty_frame(spec: RecordSpec) -> pd.DataFrame:
    data: dict[str, Any] = {}
    for col in spec.columns:
        if col in spec.ints:
            data[col] = np.array([], "int64")
        elif col in spec.floats:
            data[col] = np.array([], "float64")
        else:
            data[col] = np.array([], object)
    return pd.DataFrame(data)


def _reason(spec: RecordSpec, check: str, column: str | None, raw_value: Any) -> str:
    """One failed check as a sentence quoting the raw value, e.g. "price is NaN"."""
    if check == "not_nullable" and column is not None:
        if isinstance(raw_value, float) and math.isnan(raw_value):
            return f"{column} is NaN"
        if raw_value is None:
            return f"{column} is missing (None)"
        article = "an" if column in spec.ints else "a"
        return f"{column} is not {article} {spec.type_of(column)} (got {_show(raw_value)})"
    rule = spec.rules_by_name.get(check)
    if rule is None:  # a pandera built-in check we did not name (should not happen)
        return f"{column}: failed {check}" if column else f"failed {check}"
    if rule.shows is not None:
        return f"{rule.message} (got {_show(raw_value)})"
    return rule.message


def _split_by_shape(
    raw: Sequence[Any], spec: RecordSpec
) -> tuple[list[Mapping[str, Any]], list[QuarantineRow]]:
    """Records having every structure field, and the quarantine of those that do not."""
    required = frozenset(spec.fields)
    complete: list[Mapping[str, Any]] = []
    quarantine: list[QuarantineRow] = []
    for record in raw:
        if not isinstance(record, Mapping):
            quarantine.append(_quarantine_row(spec, record, ["record is not a mapping"]))
        elif record.keys() >= required:
            complete.append(record)
        else:
            missing = [f for f in spec.fields if f not in record]
            reasons = [f"missing field {', '.join(missing)}"]
            quarantine.append(_quarantine_row(spec, record, reasons))
    return complete, quarantine


def _validate(raw: Sequence[Any] | None, spec: RecordSpec) -> ValidatedFrame:
    if not raw:
        return ValidatedFrame(_empty_frame(spec), [])
    complete: Sequence[Mapping[str, Any]]
    quarantine: list[QuarantineRow] = []
    values: dict[str, list[Any]] | None = None
    if len(spec.columns) == len(spec.fields):  # every field is a column: one pass checks both
        try:
            values = _column_values(raw, spec)
            complete = raw
        except Exception:  # a missing key or a record that is not a mapping
            values = None
    if values is None:
        complete, quarantine = _split_by_shape(raw, spec)
        if not complete:
            return ValidatedFrame(_empty_frame(spec), quarantine)
        values = _column_values(complete, spec)

    typed = _coerce(values, spec)
    if not all_rules_pass(typed, spec):
        try:
            spec.schema.validate(typed, lazy=True, inplace=True)
        except pa.errors.SchemaErrors as exc:
            bad = _failures(exc.failure_cases, complete, spec)
            for idx in sorted(bad):
                quarantine.append(_quarantine_row(spec, complete[idx], bad[idx]))
            typed = typed.drop(index=list(bad))
    typed = _finalise_dtypes(typed, spec)

    duplicates = 0
    if spec.ticket_field is not None and len(typed) > 1:
        dup = typed.duplicated(spec.ticket_field, keep="last")
        duplicates = int(dup.sum())
        if duplicates:
            typed = typed.loc[~dup]
    return ValidatedFrame(typed.reset_index(drop=True), quarantine, duplicates)


def all_rules_pass(typed: pd.DataFrame, spec: RecordSpec) -> bool:
    """True when pandera would find nothing: no missing value and every rule true everywhere.

    The same rule functions the pandera schema runs, evaluated once each with none of
    pandera's per-check bookkeeping, which was 60 % of the transform's CPU on clean
    100-row frames (docs/benchmarks.md). It only ever short-circuits a *pass*: as soon as
    anything fails, pandera validates the frame and its failure cases are what gets
    quarantined and reported, so the reasons are pandera's. The schema has no dtype checks
    (``dtype=None``; ``_coerce`` fixes the dtypes) and ``strict=False``, so missing values
    and the rules are all it checks.
    """
    if typed.isna().to_numpy().any():
        return False
    for rule in spec.rules:
        result = rule.fn(typed if rule.column is None else typed[rule.column])
        verdict = np.asarray(result)
        if verdict.dtype != np.bool_ or not verdict.all():
            return False
    return True


def _failures(
    cases: pd.DataFrame, records: Sequence[Mapping[str, Any]], spec: RecordSpec
) -> dict[int, list[str]]:
    """Row index -> readable reasons (one per failed check), in structure field order."""
    rule_rank = {r.name: i for i, r in enumerate(spec.rules)}
    field_rank = {f: i for i, f in enumerate(spec.fields)}
    per_row: dict[int, dict[str, tuple[tuple[int, int], str]]] = {}
    unattributed: list[str] = []
    for check, column, index in zip(
        cases["check"].astype(str), cases["column"], cases["index"], strict=True
    ):
        if index is None or pd.isna(index):
            # not attributable to one row (should not happen after coercion): all rows fail
            unattributed.append(f"{column}: failed {check}")
            continue
        idx = int(index)
        rule = spec.rules_by_name.get(check)
        if rule is not None and rule.column is None:  # frame-wide: reported once per column
            key, about = check, rule.shows
        else:
            key, about = f"{check}:{column}", str(column)
        reasons = per_row.setdefault(idx, {})
        if key in reasons:
            continue
        value = records[idx].get(about) if about is not None else None
        rank = (field_rank.get(about or "", len(field_rank)), rule_rank.get(check, -1))
        reasons[key] = (rank, _reason(spec, check, about, value))
    if unattributed:
        text = "; ".join(dict.fromkeys(unattributed))
        for idx in range(len(records)):
            per_row.setdefault(idx, {})["schema"] = ((10**6, 0), text)
    return {idx: [t for _, t in sorted(r.values())] for idx, r in per_row.items()}


def _finalise_dtypes(frame: pd.DataFrame, spec: RecordSpec) -> pd.DataFrame:
    for col in spec.ints:
        if frame[col].dtype != np.int64:
            frame[col] = frame[col].astype("int64")
    return frame


# ---------------------------------------------------------------- public: frames


def deals_frame(raw: Sequence[Mapping[str, Any]] | None) -> ValidatedFrame:
    """Validate raw ``TradeDeal`` dicts; columns as the structure, ``int64/float64/str``."""
    return _validate(raw, DEAL_SPEC)


def positions_frame(raw: Sequence[Mapping[str, Any]] | None) -> ValidatedFrame:
    """Validate raw ``TradePosition`` dicts."""
    return _validate(raw, POSITION_SPEC)


def account_frame(raw: Mapping[str, Any] | None) -> ValidatedFrame:
    """Validate one raw ``AccountInfo`` dict: a frame of 0 or 1 rows."""
    return _validate([raw] if raw is not None else None, ACCOUNT_SPEC)


# ---------------------------------------------------------------- time conversion


def server_ms_to_utc_ms(server_ms: np.ndarray | pd.Series, rule: ServerTimeRule) -> np.ndarray:
    """Vectorised :meth:`ServerTimeRule.to_utc_msc` as UTC epoch milliseconds (``int64``).

    For ``ny`` rules a repeated wall-clock hour reads as the earlier (daylight) instant and a
    skipped one as the standard-time instant, exactly as ``ServerTimeRule.to_utc`` (fold=0).
    """
    ms = np.asarray(server_ms, dtype="int64")
    wall = ms - round(rule.hours * _MS_PER_HOUR)
    if rule.kind == "fixed" or len(wall) == 0:
        return wall
    naive = pd.DatetimeIndex(wall.astype("datetime64[ms]"))
    local = naive.tz_localize(
        _NEW_YORK,
        ambiguous=np.ones(len(naive), dtype=bool),
        nonexistent=pd.Timedelta(hours=1),
    )
    utc = local.tz_convert("UTC").tz_localize(None)
    return np.asarray(utc.to_numpy().astype("datetime64[ms]").astype("int64"))


# ".mmm000+00:00" for each millisecond; "" fraction for whole seconds, as isoformat() does
_ISO_SUFFIX = np.array(["+00:00"] + [f".{i:03d}000+00:00" for i in range(1, 1000)])


def utc_ms_to_iso(utc_ms: np.ndarray) -> list[str]:
    """UTC epoch ms -> ISO 8601 strings identical to ``datetime.isoformat()`` (+00:00)."""
    ms = np.asarray(utc_ms, dtype="int64")
    if len(ms) == 0:
        return []
    whole = np.datetime_as_string((ms // 1000).astype("datetime64[s]"), unit="s")
    text: list[str] = np.strings.add(whole, _ISO_SUFFIX[ms % 1000]).tolist()
    return text


def server_ms_to_iso(server_ms: np.ndarray | pd.Series, rule: ServerTimeRule) -> list[str]:
    """Server ``time_msc`` values -> UTC ISO strings."""
    return utc_ms_to_iso(server_ms_to_utc_ms(server_ms, rule))


# ---------------------------------------------------------------- public: rows


def _str_list(series: pd.Series) -> list[str]:
    """A validated string column as a list (never missing: ``not_nullable`` checked it)."""
    values: list[str] = series.to_numpy(object).tolist()
    return values


def to_deal_rows(deals: pd.DataFrame, rule: ServerTimeRule) -> list[DealRow]:
    """Validated deals frame -> :class:`DealRow` dicts (every deal, cash flows included)."""
    if deals.empty:
        return []
    time_utc = server_ms_to_iso(deals["time_msc"].to_numpy(), rule)
    cols = (
        deals["ticket"].tolist(),
        deals["order"].tolist(),
        deals["position_id"].tolist(),
        time_utc,
        deals["time"].tolist(),
        deals["time_msc"].tolist(),
        deals["type"].tolist(),
        deals["entry"].tolist(),
        deals["magic"].tolist(),
        deals["reason"].tolist(),
        deals["volume"].tolist(),
        deals["price"].tolist(),
        deals["commission"].tolist(),
        deals["swap"].tolist(),
        deals["profit"].tolist(),
        deals["fee"].tolist(),
        _str_list(deals["symbol"]),
        _str_list(deals["comment"]),
        _str_list(deals["external_id"]),
    )
    return [
        {
            "ticket": a,
            "order_ticket": b,
            "position_id": c,
            "time_utc": d,
            "time_server": e,
            "time_msc_server": f,
            "type": g,
            "entry": h,
            "magic": i,
            "reason": j,
            "volume": k,
            "price": m,
            "commission": n,
            "swap": o,
            "profit": p,
            "fee": q,
            "symbol": r,
            "comment": s,
            "external_id": t,
        }
        for a, b, c, d, e, f, g, h, i, j, k, m, n, o, p, q, r, s, t in zip(*cols, strict=False)
    ]


def to_cash_flow_rows(deals: pd.DataFrame, rule: ServerTimeRule) -> list[CashFlowRow]:
    """Cash-flow deals (types 2..12, 15..17) -> :class:`CashFlowRow`.

    ``amount`` = profit + commission + swap + fee (the last three are normally 0).
    """
    if deals.empty:
        return []
    flows = deals.loc[deals["type"].isin(list(CASH_FLOW_KINDS))]
    if flows.empty:
        return []
    amount = flows["profit"] + flows["commission"] + flows["swap"] + flows["fee"]
    kinds = flows["type"].map(CASH_FLOW_KINDS)
    time_utc = server_ms_to_iso(flows["time_msc"].to_numpy(), rule)
    return [
        {
            "deal_ticket": ticket,
            "type": type_,
            "kind": kind,
            "amount": value,
            "time_utc": when,
            "time_server": server,
            "comment": comment,
        }
        for ticket, type_, kind, value, when, server, comment in zip(
            flows["ticket"].tolist(),
            flows["type"].tolist(),
            kinds.tolist(),
            amount.tolist(),
            time_utc,
            flows["time"].tolist(),
            _str_list(flows["comment"]),
            strict=True,
        )
    ]


def to_account_row(account: pd.DataFrame) -> AccountRow | None:
    """Validated account frame (0 or 1 row) -> :class:`AccountRow`; ``None`` when empty.

    ``margin_level`` is ``None`` when ``margin`` is 0 (MT5 then reports 0, meaning "n/a").
    """
    if account.empty:
        return None
    r = account.iloc[0]
    margin = float(r["margin"])
    return AccountRow(
        login=int(r["login"]),
        server=str(r["server"]),
        name=str(r["name"]),
        company=str(r["company"]),
        currency=str(r["currency"]),
        leverage=int(r["leverage"]),
        margin_mode=MARGIN_MODES[int(r["margin_mode"])],
        balance=float(r["balance"]),
        credit=float(r["credit"]),
        profit=float(r["profit"]),
        equity=float(r["equity"]),
        margin=margin,
        free_margin=float(r["margin_free"]),
        margin_level=None if margin == 0 else float(r["margin_level"]),
    )


def to_snapshot_row(account: AccountRow, taken_at: str) -> SnapshotRow:
    """The balance/equity snapshot of an account row at ``taken_at`` (ISO UTC)."""
    return SnapshotRow(
        taken_at=taken_at,
        balance=account["balance"],
        equity=account["equity"],
        margin=account["margin"],
        free_margin=account["free_margin"],
        margin_level=account["margin_level"],
    )


def quarantined_position_ids(quarantine: Iterable[QuarantineRow]) -> set[int]:
    """Position ids readable from quarantined deal records (their trades must be skipped)."""
    ids: set[int] = set()
    for row in quarantine:
        if row["kind"] != "deal":
            continue
        pid = _readable_int(row["record"].get("position_id"))
        if pid is not None and pid > 0:
            ids.add(pid)
    return ids
