"""Terminals as messy as real ones (issue 13), end to end: the real flows, Prefect, Postgres.

Each test turns one quirk of the simulated terminal on (``mt5_sync.mt5sim.world.Quirks``) and
checks what the product does about it: nothing lost (at most two more syncs and the database
equals the broker's truth), nothing double-counted, the sync flagged while the data is
incomplete, and a position that left ``positions_get()`` without a visible closing deal never
closed with P/L 0. The ledger reconciliation (balance = stored deals + opening offset) is what
notices most of these.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from mt5_sync.mt5sim import constants as c
from mt5_sync.mt5sim.broker import BrokerView
from mt5_sync.verify import compare_with_broker

pytestmark = pytest.mark.e2e


def ledger(h: Any, login: int) -> dict[str, Any]:
    [row] = h.query(
        "SELECT * FROM mt5_ledger_reconciliation WHERE login_number = %s", login)
    return row


def broker_problems(h: Any) -> list[str]:
    report = compare_with_broker(h.store, h.world)
    assert report.duplicate_keys == 0
    return report.problems


def stored_balance_moving_sum(h: Any, login: int) -> Decimal:
    [row] = h.query(
        "SELECT coalesce(sum(d.profit + d.swap + d.commission + d.fee), 0) AS s FROM deals d "
        "JOIN trading_accounts a ON a.id = d.account_id "
        "WHERE a.login_number = %s AND d.type <> 3", login)
    return Decimal(row["s"])


def assert_ledger_closes(h: Any, index: int) -> None:
    """The stored ledger reproduces the broker's balance to the cent (offset 0: these worlds'
    windows hold every deal since the first deposit)."""
    spec = h.world.accounts[index]
    balance = Decimal(str(h.broker_view(index).account_info().balance))
    assert abs(balance - stored_balance_moving_sum(h, spec.login)) <= Decimal("0.01")
    row = ledger(h, spec.login)
    assert row["status"] == "ok" and row["opening_offset"] == 0, row


def test_history_that_arrives_in_stages_after_login_is_flagged_then_healed(make_harness):
    h = make_harness(2, trades_per_day=4.0)
    h.set_quirks(0, staged_history={"logins": 1, "mode": "older_than", "hours": 72})
    h.set_quirks(1, staged_history={"logins": 1, "mode": "newest", "newest": 5})
    logins = [a.login for a in h.world.accounts]

    first = h.run_cycle()
    by_login = {r["login"]: r for r in first["syncResults"]}
    for login in logins:
        assert by_login[login]["status"] == "partial", by_login[login]
        assert by_login[login]["error_code"] == "ledger_gap"
        assert "expected 0" in by_login[login]["error_message"]
        assert ledger(h, login)["status"] == "gap"
    assert broker_problems(h)  # the data is incomplete, and the sync said so
    assert h.query("SELECT count(*) AS n FROM trading_accounts "
                   "WHERE history_cursor IS NOT NULL")[0]["n"] == 0

    h.advance(timedelta(minutes=10))
    second = h.run_cycle()
    assert second["successCount"] == 2, second["syncResults"]
    assert broker_problems(h) == []
    for index, login in enumerate(logins):
        assert_ledger_closes(h, index)
        row = ledger(h, login)
        assert row["healed_at"] is not None and "closed by full sync" in row["heal_note"]


def _next_exit(h: Any, index: int) -> tuple[int, int]:
    """(position id, UTC ms) of the first position open now whose last deal is a plain exit."""
    view = h.broker_view(index)
    deals = view.ledger.deals
    metas = [m for m in view.ledger.positions
             if m.open_ms < view.now_ms < m.close_ms
             and deals[m.deal_index[-1]].entry == c.DEAL_ENTRY_OUT]
    meta = min(metas, key=lambda m: m.close_ms)
    return meta.position_id, meta.close_ms


def _advance_until_no_exit_is_hidden(h: Any, index: int, late_ms: int) -> None:
    """Move both clocks to the first moment no exit deal is still hidden by ``late_close_s``."""
    view = h.broker_view(index)
    exits = [u for d, u in zip(view.ledger.deals, view.ledger.deal_utc_ms, strict=True)
             if d.entry in (c.DEAL_ENTRY_OUT, c.DEAL_ENTRY_OUT_BY)]
    t = view.now_ms
    while hidden := [u for u in exits if t - late_ms < u <= t]:
        t = max(hidden) + late_ms + 1000
    h.advance(timedelta(milliseconds=t - view.now_ms))


def test_a_position_gone_before_its_closing_deal_shows_stays_open(make_harness):
    h = make_harness(1, trades_per_day=6.0)
    late_ms = 1_800_000
    h.set_quirks(0, late_close_s=late_ms / 1000)
    login = h.world.accounts[0].login
    _advance_until_no_exit_is_hidden(h, 0, late_ms)
    assert h.run_cycle()["successCount"] == 1
    position_id, close_ms = _next_exit(h, 0)
    # Just after the close: gone from positions_get(), its closing deal not in history yet.
    now_ms = int(h.world.effective_now().timestamp() * 1000)
    h.advance(timedelta(milliseconds=close_ms - now_ms + 60_000))
    assert position_id not in {p.identifier for p in h.broker_view(0).positions()}

    second = h.run_cycle()["syncResults"][0]
    assert (second["status"], second["error_code"]) == ("partial", "ledger_gap"), second
    [trade] = h.query("SELECT status, close_time FROM trades WHERE ticket = %s", position_id)
    assert trade["status"] == "open" and trade["close_time"] is None  # never closed at P/L 0
    assert ledger(h, login)["status"] == "gap"

    _advance_until_no_exit_is_hidden(h, 0, late_ms)
    third = h.run_cycle()["syncResults"][0]
    assert third["status"] == "success", third
    [trade] = h.query("SELECT status FROM trades WHERE ticket = %s", position_id)
    assert trade["status"] == "closed"
    assert broker_problems(h) == []
    assert_ledger_closes(h, 0)


def test_a_trade_cancelled_after_the_fact_heals_through_a_full_reread(make_harness, world_start):
    h = make_harness(1, trades_per_day=4.0)
    cancel_at = world_start + timedelta(hours=2)
    h.set_quirks(0, cancelled={"at_utc": cancel_at.isoformat(), "position_index": 0})
    login = h.world.accounts[0].login
    assert h.run_cycle()["successCount"] == 1
    position_id = h.broker_view(0).cancelled_position().position_id  # type: ignore[union-attr]
    assert h.query("SELECT status FROM trades WHERE ticket = %s", position_id)

    h.advance(timedelta(hours=3))
    second = h.run_cycle()["syncResults"][0]
    # The incremental window saw the correction deal, not the (older) cancelled ones.
    assert (second["status"], second["error_code"]) == ("partial", "ledger_gap"), second
    h.advance(timedelta(minutes=10))
    third = h.run_cycle()["syncResults"][0]
    assert third["status"] == "success" and third["sync_type"] == "full", third
    types = {r["type"] for r in h.query(
        "SELECT type FROM deals WHERE position_id = %s", position_id)}
    assert types <= {c.DEAL_TYPE_BUY_CANCELED, c.DEAL_TYPE_SELL_CANCELED}, types
    assert h.query("SELECT 1 FROM trades WHERE ticket = %s", position_id) == []
    assert broker_problems(h) == []
    assert_ledger_closes(h, 0)
    assert ledger(h, login)["healed_at"] is not None


def test_netting_reversal_keys_the_position_on_its_identifier(make_harness):
    h = make_harness(2, trades_per_day=8.0)  # account 1 is netting
    h.set_quirks(1, reversal_ticket=True)
    now_ms = h.broker_view(1).now_ms
    # The broker's ledger two months ahead: the first reversal from now on.
    ahead = BrokerView(h.world.accounts[1], h.world.seed, h.world.timeline_start_utc,
                       h.world.effective_now() + timedelta(days=60))
    deals, utc = ahead.ledger.deals, ahead.ledger.deal_utc_ms
    reversals = [(utc[i], m) for m in ahead.ledger.positions for i in m.deal_index
                 if deals[i].entry == c.DEAL_ENTRY_INOUT and utc[i] > now_ms
                 and m.close_ms > utc[i] + 120_000]
    at_ms, meta = min(reversals, key=lambda r: r[0])
    h.advance(timedelta(milliseconds=at_ms - now_ms + 60_000))
    [position] = [p for p in h.broker_view(1).positions() if p.identifier == meta.position_id]
    assert position.ticket != position.identifier  # the quirk is on

    result = h.run_account(h.world.accounts[1].login, sync_type="full", history_days=200)[1]
    assert result["status"] == "success", result
    [trade] = h.query("SELECT ticket, status FROM trades WHERE ticket = %s", meta.position_id)
    assert trade["status"] == "open"
    assert h.query("SELECT 1 FROM trades WHERE ticket = %s", position.ticket) == []
    assert_ledger_closes(h, 1)


def test_agent_commissions_and_broker_symbol_names_reconcile(make_harness):
    h = make_harness(1, trades_per_day=3.0)
    names = {"EURUSD": "EURUSDm", "XAUUSD": "XAUUSD.a", "GBPUSD": "US30.cash",
             "USDJPY": "#AAPL"}
    h.set_quirks(0, agent_commissions=True, symbol_names=names, comment_suffix=" — éé 取引")
    result = h.run_cycle()["syncResults"][0]
    assert result["status"] == "success", result

    kinds = {r["type"] for r in h.query("SELECT DISTINCT type FROM cash_flows")}
    assert c.DEAL_TYPE_COMMISSION_AGENT_DAILY in kinds
    agent = h.query("SELECT count(*) AS n FROM deals WHERE type IN (10, 11) AND position_id = 0")
    assert agent[0]["n"] >= 19  # one a day for 20 days (plus monthly ones)
    symbols = {r["symbol"] for r in h.query("SELECT DISTINCT symbol FROM trades")}
    assert symbols and symbols <= set(names.values()), symbols
    comments = h.query("SELECT comment FROM deals WHERE type = 2 ORDER BY ticket LIMIT 1")
    assert comments[0]["comment"].endswith(" — éé 取引")
    assert broker_problems(h) == []
    assert_ledger_closes(h, 0)


def test_a_terminal_cross_wired_mid_fetch_is_discarded_and_retried(make_harness):
    h = make_harness(2, trades_per_day=3.0)
    h.set_quirks(0, crosswire_logins=1)
    login, other = h.world.accounts[0].login, h.world.accounts[1].login
    state, result = h.run_account(login)
    assert state.is_completed() and result["status"] == "success", result
    # Only account 0's deals were written under it: its ledger closes to the cent.
    assert_ledger_closes(h, 0)
    assert h.query("SELECT count(*) AS n FROM trading_accounts a JOIN deals d "
                   "ON d.account_id = a.id WHERE a.login_number = %s", other)[0]["n"] == 0
    [count] = h.query("SELECT count(*) AS n FROM deals")
    assert count["n"] == len(h.broker_view(0).deals())


def test_a_host_clock_ahead_of_the_broker_skips_no_deal(make_harness):
    h = make_harness(1, trades_per_day=6.0)
    # The host's clock runs three days ahead of the broker's (more than the 48 h overlap).
    h.clock.set(h.clock.now() + timedelta(days=3))
    assert h.run_cycle()["successCount"] == 1
    h.advance(timedelta(days=1))
    second = h.run_cycle()["syncResults"][0]
    assert second["status"] == "success", second
    assert broker_problems(h) == []
    assert_ledger_closes(h, 0)
