"""The seeded broker model: deterministic, time-consistent, and shaped like real MT5 ledgers."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import mt5_sync.mt5sim as mt5
from mt5_sync.mt5sim import broker
from mt5_sync.mt5sim.ledger import build_ledger
from mt5_sync.mt5sim.world import AccountSpec, World, build_world
from mt5_sync.servertime import ServerTimeRule

SEED = 11
START = datetime(2026, 8, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CASH_TYPES = {2, 3, 8, 12, 15, 17}


def account(**overrides: object) -> AccountSpec:
    fields: dict[str, object] = {
        "login": 51000001,
        "password": "inv",
        "server": "SimBroker-Live",
        "trades_per_day": 6.0,
        "symbols": ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD"],
    }
    fields.update(overrides)
    return AccountSpec.model_validate(fields)


HEDGING = account()
NETTING = account(login=51000002, margin_mode="netting", time_rule="fixed:+2")


def money(deal: mt5.TradeDeal) -> float:
    return deal.profit + deal.swap + deal.commission + deal.fee


def deals_at(spec: AccountSpec, now: datetime = NOW) -> list[broker.VisibleDeal]:
    return broker.visible_deals(spec, SEED, START, now)


def by_position(spec: AccountSpec, now: datetime = NOW) -> dict[int, list[broker.VisibleDeal]]:
    grouped: dict[int, list[broker.VisibleDeal]] = defaultdict(list)
    for row in deals_at(spec, now):
        if row.deal.position_id:
            grouped[row.deal.position_id].append(row)
    return grouped


# ---------------------------------------------------------------------- determinism


def test_same_seed_same_ledger_other_seed_other_ledger() -> None:
    first = build_ledger(HEDGING, SEED, START, NOW)
    again = build_ledger(HEDGING, SEED, START, NOW)
    other = build_ledger(HEDGING, SEED + 1, START, NOW)
    assert first.deals == again.deals
    assert first.deal_utc_ms == again.deal_utc_ms
    assert first.deals != other.deals


@pytest.mark.parametrize("spec", [HEDGING, NETTING], ids=["hedging", "netting"])
def test_the_past_does_not_depend_on_how_far_the_ledger_was_built(spec: AccountSpec) -> None:
    short = build_ledger(spec, SEED, START, NOW)
    long = build_ledger(spec, SEED, START, NOW + timedelta(days=20))
    cutoff = int(NOW.timestamp() * 1000)
    visible = sum(1 for ms in short.deal_utc_ms if ms <= cutoff)
    assert visible > 100
    assert short.deals[:visible] == long.deals[:visible]  # tickets and position ids included
    orders_short, times_short = short.orders()
    orders_long, _ = long.orders()
    known = sum(1 for ms in times_short if ms <= cutoff)
    assert orders_short[:known] == orders_long[:known]


def test_tickets_follow_true_time() -> None:
    rows = deals_at(HEDGING)
    tickets = [row.deal.ticket for row in rows]
    assert tickets == sorted(tickets)
    assert [row.time_utc for row in rows] == sorted(row.time_utc for row in rows)


# ---------------------------------------------------------------------- the passage of time


def test_advancing_now_opens_and_closes_positions() -> None:
    later = NOW + timedelta(hours=24)
    before = {t["ticket"]: t for t in broker.expected_trades(HEDGING, SEED, START, NOW)}
    after = {t["ticket"]: t for t in broker.expected_trades(HEDGING, SEED, START, later)}
    opened = set(after) - set(before)
    closed = {
        k for k, t in before.items() if t["status"] == "open" and after[k]["status"] == "closed"
    }
    assert opened and closed
    assert set(before) <= set(after)
    for ticket, trade in before.items():  # closed trades stay exactly as they were
        if trade["status"] == "closed":
            assert after[ticket] == trade


def test_open_positions_match_expected_open_trades() -> None:
    for spec in (HEDGING, NETTING):
        state = broker.account_state(spec, SEED, START, NOW)
        trades = broker.expected_trades(spec, SEED, START, NOW)
        open_ids = {t["ticket"] for t in trades if t["status"] == "open"}
        assert {p.ticket for p in state.positions} == open_ids
        assert all(p.ticket == p.identifier for p in state.positions)


# ---------------------------------------------------------------------- trade shapes


def test_partial_closes_exist() -> None:
    for spec in (HEDGING, NETTING):
        exits = Counter(
            row.deal.position_id for row in deals_at(spec) if row.deal.entry == mt5.DEAL_ENTRY_OUT
        )
        assert any(n >= 2 for n in exits.values()), spec.margin_mode


def test_hedging_close_by_pairs() -> None:
    view = broker.BrokerView(HEDGING, SEED, START, NOW)
    close_by = [d for d in view.deals() if d.entry == mt5.DEAL_ENTRY_OUT_BY]
    assert close_by
    orders = {o.ticket: o for o in view.orders()}
    pairs: dict[int, list[mt5.TradeDeal]] = defaultdict(list)
    for deal in close_by:
        pairs[deal.order].append(deal)
    for order_ticket, deals in pairs.items():
        assert len(deals) == 2
        first, second = deals
        assert first.position_id != second.position_id
        assert first.type != second.type and first.volume == second.volume
        order = orders[order_ticket]
        assert order.type == mt5.ORDER_TYPE_CLOSE_BY
        assert {order.position_id, order.position_by_id} == {first.position_id, second.position_id}


def test_netting_reversal_keeps_the_position_id() -> None:
    grouped = by_position(NETTING)
    reversed_ids = [
        pid
        for pid, rows in grouped.items()
        if any(r.deal.entry == mt5.DEAL_ENTRY_INOUT for r in rows)
    ]
    assert reversed_ids
    checked = 0
    for pid in reversed_ids:
        rows = grouped[pid]
        opening = rows[0].deal
        index = next(i for i, r in enumerate(rows) if r.deal.entry == mt5.DEAL_ENTRY_INOUT)
        flip = rows[index]
        assert opening.entry == mt5.DEAL_ENTRY_IN and flip.deal.type != opening.type
        held = sum(r.deal.volume for r in rows[:index] if r.deal.entry == mt5.DEAL_ENTRY_IN)
        if index + 1 < len(rows) and rows[index + 1].time_utc > flip.time_utc + timedelta(
            seconds=2
        ):
            moment = flip.time_utc + timedelta(seconds=1)
            state = broker.account_state(NETTING, SEED, START, moment)
            position = next(p for p in state.positions if p.ticket == pid)
            assert position.type == (
                mt5.POSITION_TYPE_SELL
                if opening.type == mt5.DEAL_TYPE_BUY
                else mt5.POSITION_TYPE_BUY
            )
            assert position.volume == pytest.approx(flip.deal.volume - held)
            assert position.price_open == pytest.approx(flip.deal.price)
            checked += 1
    assert checked


def test_netting_holds_at_most_one_position_per_symbol() -> None:
    for hours in range(0, 24 * 20, 7):
        state = broker.account_state(NETTING, SEED, START, START + timedelta(hours=hours))
        symbols = [p.symbol for p in state.positions]
        assert len(symbols) == len(set(symbols))


def test_netting_volume_adds_make_a_vwap_price() -> None:
    added = [
        rows
        for rows in by_position(NETTING).values()
        if sum(r.deal.entry == mt5.DEAL_ENTRY_IN for r in rows) >= 2
    ]
    assert added
    rows = added[0]
    entries = [r.deal for r in rows if r.deal.entry == mt5.DEAL_ENTRY_IN]
    moment = rows[1].time_utc + timedelta(milliseconds=1)
    state = broker.account_state(NETTING, SEED, START, moment)
    position = next(p for p in state.positions if p.ticket == entries[0].position_id)
    vwap = sum(d.price * d.volume for d in entries) / sum(d.volume for d in entries)
    assert position.volume == pytest.approx(sum(d.volume for d in entries))
    assert position.price_open == pytest.approx(vwap, abs=1e-3)


def test_position_id_is_the_opening_order_ticket() -> None:
    for pid, rows in by_position(HEDGING).items():
        assert rows[0].deal.entry == mt5.DEAL_ENTRY_IN
        assert rows[0].deal.order == pid


def test_cash_flows() -> None:
    flows = broker.expected_cash_flows(HEDGING, SEED, START, NOW)
    assert flows[0]["type"] == mt5.DEAL_TYPE_BALANCE
    assert flows[0]["amount"] == HEDGING.initial_deposit
    assert flows[0]["time_utc"] == START
    assert {f["type"] for f in flows} <= CASH_TYPES
    assert len({f["type"] for f in flows}) >= 4
    cash_deals = [r.deal for r in deals_at(HEDGING) if r.deal.type in CASH_TYPES]
    assert len(cash_deals) == len(flows)
    assert all(d.position_id == 0 and d.symbol == "" and d.order == 0 for d in cash_deals)


# ---------------------------------------------------------------------- money


def test_expected_trades_agree_with_the_deals() -> None:
    for spec in (HEDGING, NETTING):
        grouped = by_position(spec)
        trades = broker.expected_trades(spec, SEED, START, NOW)
        assert {t["ticket"] for t in trades} == set(grouped)
        for trade in trades:
            rows = grouped[trade["ticket"]]
            deals = [r.deal for r in rows]
            signed = sum(d.volume if d.type == mt5.DEAL_TYPE_BUY else -d.volume for d in deals)
            assert trade["deal_count"] == len(deals)
            assert trade["net_profit"] == pytest.approx(sum(money(d) for d in deals), abs=0.011)
            assert trade["side"] == ("buy" if deals[0].type == mt5.DEAL_TYPE_BUY else "sell")
            assert trade["open_time_utc"] == rows[0].time_utc
            assert trade["symbol"] == deals[0].symbol
            if trade["status"] == "closed":
                assert signed == pytest.approx(0.0, abs=1e-9)
                assert trade["close_time_utc"] == rows[-1].time_utc
            else:
                assert signed != pytest.approx(0.0, abs=1e-9)
                assert trade["close_time_utc"] is None
            opened = sum(d.volume for d in deals if d.entry == mt5.DEAL_ENTRY_IN)
            assert trade["volume"] >= opened - 1e-9


def test_balance_is_the_sum_of_deals_through_the_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = build_world(4, seed=SEED, now_utc=NOW, trades_per_day=4.0)
    monkeypatch.setenv("MT5SIM_WORLD", str(world.save(tmp_path / "world.json")))
    assert mt5.initialize()
    try:
        for spec in world.accounts:
            assert mt5.login(spec.login, password=spec.password, server=spec.server)
            deals = mt5.history_deals_get(0, 2_000_000_000)
            info = mt5.account_info()
            positions = mt5.positions_get()
            credit = sum(money(d) for d in deals if d.type == mt5.DEAL_TYPE_CREDIT)
            assert info.balance == pytest.approx(sum(money(d) for d in deals) - credit, abs=0.006)
            assert info.credit == pytest.approx(credit, abs=0.006)
            assert info.profit == pytest.approx(
                sum(p.profit + p.swap for p in positions), abs=0.006
            )
            assert info.equity == pytest.approx(info.balance + info.credit + info.profit, abs=0.011)
            assert info.margin_free == pytest.approx(info.equity - info.margin, abs=0.011)
            if positions:
                assert info.margin > 0 and info.margin_level > 0
    finally:
        mt5.shutdown()


# ---------------------------------------------------------------------- tickets and time


def test_tickets_unique_per_server_but_colliding_across_servers() -> None:
    world = build_world(8, seed=SEED, now_utc=NOW, timeline_start_utc=START)
    tickets: dict[str, list[int]] = defaultdict(list)
    per_account: list[set[int]] = []
    for spec in world.accounts:
        view = broker.BrokerView(spec, SEED, START, NOW)
        mine = {d.ticket for d in view.deals()} | {o.ticket for o in view.orders()}
        per_account.append(mine)
        tickets[spec.server].extend(mine)
    for server, numbers in tickets.items():
        assert len(numbers) == len(set(numbers)), server
    assert world.accounts[0].server != world.accounts[1].server
    assert per_account[0] & per_account[1]


@pytest.mark.parametrize(
    ("rule", "start", "now", "offset_h"),
    [
        ("ny+7", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 31, tzinfo=UTC), 2),
        ("ny+7", datetime(2026, 6, 20, tzinfo=UTC), datetime(2026, 7, 31, tzinfo=UTC), 3),
        ("fixed:+3", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 31, tzinfo=UTC), 3),
        ("utc", datetime(2026, 6, 20, tzinfo=UTC), datetime(2026, 7, 31, tzinfo=UTC), 0),
    ],
)
def test_deal_times_are_server_wall_clock(
    rule: str, start: datetime, now: datetime, offset_h: int
) -> None:
    spec = account(time_rule=rule)
    rows = broker.visible_deals(spec, SEED, start, now)
    assert len(rows) > 50
    parsed = ServerTimeRule.parse(rule)
    for row in rows:
        true_ms = round(row.time_utc.timestamp() * 1000)
        assert row.deal.time_msc - true_ms == offset_h * 3_600_000
        assert row.deal.time == row.deal.time_msc // 1000
        assert parsed.to_utc_msc(row.deal.time_msc) == row.time_utc
    state = broker.account_state(spec, SEED, start, now)
    for position in state.positions:
        assert position.time == position.time_msc // 1000


# ---------------------------------------------------------------------- the world file


def test_build_world_is_varied_and_deterministic(tmp_path: Path) -> None:
    world = build_world(8, seed=SEED, now_utc=NOW)
    assert {a.margin_mode for a in world.accounts} == {"hedging", "netting"}
    assert {a.time_rule for a in world.accounts} >= {"ny+7", "fixed:+2", "fixed:+3", "utc"}
    assert len({a.server for a in world.accounts}) >= 2
    assert len({(a.login, a.server) for a in world.accounts}) == 8
    again = build_world(8, seed=SEED, now_utc=NOW)
    assert [a.password for a in again.accounts] == [a.password for a in world.accounts]
    other = build_world(8, seed=SEED + 1, now_utc=NOW)
    assert [a.password for a in other.accounts] != [a.password for a in world.accounts]
    path = world.save(tmp_path / "w.json")
    assert World.load(path) == world
    moved = world.with_now(NOW + timedelta(hours=1))
    assert moved.now_utc == NOW + timedelta(hours=1) and world.now_utc == NOW
    assert moved.account(world.accounts[3].login, world.accounts[3].server) == world.accounts[3]


def test_build_world_applies_faults_and_login_delays() -> None:
    before = datetime.now(UTC)
    world = build_world(
        3,
        seed=SEED,
        now_utc=None,
        faults={1: [{"kind": "hang", "call": "positions_get", "times": 1}]},
        login_delay_sampler=lambda rng: round(rng.uniform(0.1, 0.2), 3),
    )
    assert world.now_utc is None
    assert before <= world.effective_now() <= datetime.now(UTC)  # the real clock
    assert [len(a.faults) for a in world.accounts] == [0, 1, 0]
    assert all(0.1 <= a.login_delay_s <= 0.2 for a in world.accounts)
