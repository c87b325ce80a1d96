"""The columnar wire form of a commit (chunks.columnar + 20261122000800_fast_commit.sql).

The pipeline builds row lists; both transports send them column by column (PostgreSQL array
literals, or JSON arrays where a literal cannot carry a value exactly). The property that
matters: whatever form a payload travels in, the database ends up with exactly the rows the
row form would have written -- tested by committing the same rows both ways, side by side.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from mt5_sync.errors import StoreError, StoreUnavailable
from mt5_sync.store import PostgresStore
from mt5_sync.store.chunks import COLUMNAR_PARTS, columnar, plain, to_columns

from . import LOGIN, SERVER, clone, commit_payload

# Values a naive encoder gets wrong: quoting, escapes, separators, the word NULL, unicode,
# leading/trailing blanks, JSON-escaped control characters.
AWKWARD_TEXT = [
    'say "hi"', "back\\slash", "a,b", "{braces}", "NULL", "null", "", "  padded  ",
    "tab\there", "new\nline", "ünïcödé €", "[1,2]", "quote\\\"mix",
]


@pytest.fixture
def store(db_url: str) -> PostgresStore:
    return PostgresStore(db_url)


def register(store: PostgresStore, login: int = LOGIN) -> str:
    return store.register_account(
        user_id=str(uuid.uuid4()), login_number=login, broker_server=SERVER, broker_name=None,
        investor_password_encrypted="x", server_time_rule="ny+7",
    )


def commit_raw(db_url: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Call the function with exactly this JSON (no client-side encoding)."""
    with psycopg.connect(db_url) as conn:
        row = conn.execute("select mt5_commit_account_sync(%s)", (Jsonb(payload),)).fetchone()
    assert row is not None
    return dict(row[0])


def rows_of(store: PostgresStore, account_id: str) -> dict[str, list[str]]:
    """Every written row of the account, minus the account id (to compare two accounts)."""
    out = {}
    for table, key in (("deals", "ticket"), ("trades", "ticket"),
                       ("cash_flows", "deal_ticket")):
        rows = store.fetch_all(
            f"select (to_jsonb(t) - 'account_id' - 'id')::text as r from {table} t"
            f" where account_id = %s order by {key}", (account_id,))
        out[table] = [r["r"] for r in rows]
    return out


def awkward_payload(account_id: str, login: int) -> dict[str, Any]:
    payload: dict[str, Any] = plain(commit_payload(account_id))
    payload["account"]["login"] = login
    for i, deal in enumerate(payload["deals"]):
        deal["comment"] = AWKWARD_TEXT[i % len(AWKWARD_TEXT)]
        deal["symbol"] = AWKWARD_TEXT[(i + 3) % len(AWKWARD_TEXT)]
        deal["external_id"] = AWKWARD_TEXT[(i + 7) % len(AWKWARD_TEXT)]
    payload["deals"][0]["price"] = 0.30000000000000004  # rounded by numeric(28, 8)
    payload["deals"][1]["volume"] = 1e-05
    payload["deals"][2]["magic"] = 2**62
    payload["closed_trades"][0]["comment"] = 'closed "by" \\ stop, {x}'
    return payload


# ---------------------------------------------------------------- the encoder


def test_rows_become_columns_in_row_order() -> None:
    rows = [{"a": 1, "b": "x", "c": None}, {"a": 2.5, "b": 'q"', "c": 3}]
    assert to_columns(rows) == {
        "rows": 2, "columns": {"a": "{1,2.5}", "b": '{"x","q\\""}', "c": "{null,3}"}}


def test_rows_with_different_keys_get_nulls_where_a_key_is_missing() -> None:
    cols = to_columns([{"a": 1}, {"b": "y"}, {"a": 3, "b": "z"}])
    assert cols == {"rows": 3, "columns": {"a": "{1,null,3}", "b": '{null,"y","z"}'}}


def test_values_a_literal_cannot_carry_stay_json() -> None:
    nan = float("nan")
    cols = to_columns([{"flag": True, "n": nan, "mixed": 1, "nested": [1]},
                       {"flag": False, "n": 1.0, "mixed": "1", "nested": [2]}])
    assert cols["columns"]["flag"] == [True, False]
    assert cols["columns"]["mixed"] == [1, "1"]
    assert cols["columns"]["nested"] == [[1], [2]]
    n = cols["columns"]["n"]
    assert isinstance(n, list) and n[0] != n[0] and n[1] == 1.0  # NaN left for the encoder


def test_anything_but_a_list_of_rows_is_left_for_the_database() -> None:
    for value in ([], {}, None, "x", [1, 2], [{"a": 1}, 2]):
        assert to_columns(value) == value  # type: ignore[arg-type]


def test_only_the_row_lists_change_and_the_input_is_not_touched() -> None:
    payload = plain(commit_payload(str(uuid.uuid4())))
    before = json.dumps(payload, sort_keys=True)
    wire = columnar(payload)
    assert json.dumps(payload, sort_keys=True) == before
    assert {k: v for k, v in wire.items() if k not in COLUMNAR_PARTS} == {
        k: v for k, v in payload.items() if k not in COLUMNAR_PARTS}
    for part in COLUMNAR_PARTS:
        assert wire[part]["rows"] == len(payload[part])


# ---------------------------------------------------------------- both forms, same rows


@pytest.mark.parametrize("form", ["literals", "json arrays"])
def test_columns_write_exactly_what_rows_write(
    store: PostgresStore, db_url: str, form: str
) -> None:
    by_rows, by_columns = register(store, LOGIN), register(store, LOGIN + 1)
    rows_payload = awkward_payload(by_rows, LOGIN)
    cols_payload = columnar(awkward_payload(by_columns, LOGIN + 1))
    if form == "json arrays":  # what a client without the literal encoder may send
        for part in COLUMNAR_PARTS:
            cols_payload[part]["columns"] = {
                k: [r.get(k) for r in rows_payload[part]] for k in rows_payload[part][0]}
    else:
        assert isinstance(cols_payload["deals"]["columns"]["comment"], str)

    first_rows = commit_raw(db_url, rows_payload)
    first_cols = commit_raw(db_url, cols_payload)

    assert {k: v for k, v in first_rows.items() if k != "sync_id"} == {
        k: v for k, v in first_cols.items() if k != "sync_id"}
    written = rows_of(store, by_rows)
    assert written == rows_of(store, by_columns)
    assert len(written["deals"]) == len(rows_payload["deals"]) and written["deals"]
    comments = store.fetch_all(
        "select comment from deals where account_id = %s order by ticket", (by_columns,))
    assert {r["comment"] for r in comments} <= set(AWKWARD_TEXT)
    assert store.fetch_all(
        "select price from deals where account_id = %s and ticket = %s",
        (by_columns, rows_payload["deals"][0]["ticket"]))[0]["price"] == Decimal("0.3")


def test_replaying_the_columnar_form_of_a_row_form_commit_changes_nothing(
    store: PostgresStore, db_url: str
) -> None:
    account_id = register(store)
    payload = awkward_payload(account_id, LOGIN)
    commit_raw(db_url, payload)
    before = store.fetch_all(
        "select t::text as r, xmin::text as x from deals t order by ticket")
    store.commit_account_sync(clone(payload))  # the store sends columns
    assert store.fetch_all(
        "select t::text as r, xmin::text as x from deals t order by ticket") == before


def test_last_occurrence_of_a_ticket_wins_in_columns_too(store: PostgresStore) -> None:
    account_id = register(store)
    payload = commit_payload(account_id)
    twice = dict(payload["deals"][0])
    twice["comment"] = "the later copy"
    payload["deals"].append(twice)  # type: ignore[arg-type]
    store.commit_account_sync(payload)
    [row] = store.fetch_all("select comment from deals where account_id = %s and ticket = %s",
                            (account_id, twice["ticket"]))
    assert row["comment"] == "the later copy"


# ---------------------------------------------------------------- malformed columns


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["columns"].update(ticket="{1,2}"), 'payload column "ticket" has 2 values'),
        (lambda d: d.update(rows=d["rows"] + 1), '"rows" says'),
        (lambda d: d["columns"].update(price=[[1.0]] * d["rows"]), "scalar values"),
        (lambda d: d["columns"].update(price={"a": 1}), "must be a JSON array or an array literal"),
        (lambda d: d.update(rows=-1), "non-negative integer"),
        (lambda d: d.pop("rows"), '{"rows": n, "columns"'),
        (lambda d: d.update(extra=1), '{"rows": n, "columns"'),
        (lambda d: d["columns"].update(ticket="not an array"), "malformed array literal"),
        (lambda d: d["columns"].update(type="{1,x}"), "invalid input syntax for type integer"),
    ],
)
def test_malformed_columns_are_rejected_clearly_and_write_nothing(
    store: PostgresStore, db_url: str, mutate: Any, expected: str
) -> None:
    account_id = register(store)
    payload = columnar(plain(commit_payload(account_id)))
    mutate(payload["deals"])
    before = store.fetch_all("select count(*) as n from deals")
    with pytest.raises(psycopg.Error) as caught:
        commit_raw(db_url, payload)
    assert expected in str(caught.value)
    assert "mt5_commit_account_sync" in str(caught.value) or "payload column" in str(
        caught.value)
    assert store.fetch_all("select count(*) as n from deals") == before
    assert store.fetch_all(
        "select count(*) as n from sync_logs where account_id = %s", (account_id,)
    ) == [{"n": 0}]


def test_closed_trades_sent_as_columns_must_all_be_closed(store: PostgresStore) -> None:
    account_id = register(store)
    payload = commit_payload(account_id)
    payload["closed_trades"][0]["status"] = "open"
    with pytest.raises(StoreError, match='"closed_trades" must have status "closed"') as caught:
        store.commit_account_sync(payload)
    assert not isinstance(caught.value, StoreUnavailable)
