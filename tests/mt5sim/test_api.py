"""Calling conventions of the simulated MetaTrader5 module (what the sync's adapter relies on)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import mt5_sync.mt5sim as mt5
from mt5_sync.mt5sim.world import AccountSpec, FixedLatency, World, build_world

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
FAR_FUTURE = 2_000_000_000
NO_IPC = (-10004, "No IPC connection")
INVALID = (-2, "Invalid parameters")
AUTH = (-6, "Terminal: Authorization failed")

WorldFactory = Callable[..., tuple[World, Path]]


@pytest.fixture(autouse=True)
def _fresh_terminal() -> Iterator[None]:
    mt5.shutdown()
    yield
    mt5.shutdown()


@pytest.fixture
def make_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WorldFactory:
    """Write a 4-account world (one per server/time rule) and point MT5SIM_WORLD at it."""

    def make(**kwargs: Any) -> tuple[World, Path]:
        kwargs.setdefault("seed", 7)
        kwargs.setdefault("now_utc", NOW)
        kwargs.setdefault("trades_per_day", 3.0)
        world = build_world(4, **kwargs)
        path = world.save(tmp_path / "world.json")
        monkeypatch.setenv("MT5SIM_WORLD", str(path))
        return world, path

    return make


def login_as(account: AccountSpec) -> None:
    assert mt5.initialize(), mt5.last_error()
    assert mt5.login(account.login, password=account.password, server=account.server), (
        mt5.last_error()
    )


def run_python(code: str, world: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MT5SIM_WORLD": str(world)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


# ---------------------------------------------------------------------- connection


@pytest.mark.parametrize(
    "call",
    [
        lambda: mt5.account_info(),
        lambda: mt5.terminal_info(),
        lambda: mt5.version(),
        lambda: mt5.positions_get(),
        lambda: mt5.positions_total(),
        lambda: mt5.orders_get(),
        lambda: mt5.history_deals_get(0, FAR_FUTURE),
        lambda: mt5.history_deals_total(0, FAR_FUTURE),
        lambda: mt5.history_orders_get(0, FAR_FUTURE),
        lambda: mt5.copy_rates_from("EURUSD", mt5.TIMEFRAME_M1, 0, 10),
    ],
)
def test_calls_before_initialize_fail_with_no_ipc(
    make_world: WorldFactory, call: Callable[[], Any]
) -> None:
    make_world()
    assert call() is None
    assert mt5.last_error() == NO_IPC


def test_login_before_initialize_fails(make_world: WorldFactory) -> None:
    world, _ = make_world()
    account = world.accounts[0]
    assert mt5.login(account.login, password=account.password, server=account.server) is False
    assert mt5.last_error() == NO_IPC


def test_initialize_needs_a_world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MT5SIM_WORLD", raising=False)
    assert mt5.initialize() is False
    assert mt5.last_error()[0] == -10003
    monkeypatch.setenv("MT5SIM_WORLD", str(tmp_path / "missing.json"))
    assert mt5.initialize() is False
    assert mt5.last_error()[0] == -10003


def test_success_resets_last_error(make_world: WorldFactory) -> None:
    world, _ = make_world()
    assert mt5.account_info() is None
    login_as(world.accounts[0])
    assert mt5.last_error() == (1, "Success")
    assert mt5.history_deals_get(date_from=0, date_to=1) is None
    assert mt5.account_info() is not None
    assert mt5.last_error() == (1, "Success")


def test_login_switches_account_and_account_info_proves_it(make_world: WorldFactory) -> None:
    world, _ = make_world()
    assert mt5.initialize()
    for account in world.accounts:
        assert mt5.login(account.login, account.password, account.server)
        info = mt5.account_info()
        assert (info.login, info.server) == (account.login, account.server)
        assert info.margin_mode == (
            mt5.ACCOUNT_MARGIN_MODE_RETAIL_HEDGING
            if account.margin_mode == "hedging"
            else mt5.ACCOUNT_MARGIN_MODE_RETAIL_NETTING
        )


def test_initialize_can_log_in_and_records_the_path(make_world: WorldFactory) -> None:
    world, _ = make_world()
    account = world.accounts[1]
    path = r"C:\MT5\slot-03\terminal64.exe"
    assert mt5.initialize(
        path,
        login=account.login,
        password=account.password,
        server=account.server,
        timeout=5_000,
        portable=True,
    )
    assert mt5.account_info().login == account.login
    info = mt5.terminal_info()
    assert info.path == r"C:\MT5\slot-03"
    assert info.connected is True


def test_initialize_with_bad_credentials_fails(make_world: WorldFactory) -> None:
    world, _ = make_world()
    account = world.accounts[0]
    assert mt5.initialize(login=account.login, password="nope", server=account.server) is False
    assert mt5.last_error() == AUTH
    assert mt5.account_info() is None
    assert mt5.last_error() == NO_IPC


def test_shutdown_disconnects(make_world: WorldFactory) -> None:
    world, _ = make_world()
    login_as(world.accounts[0])
    assert mt5.shutdown() is None
    assert mt5.account_info() is None
    assert mt5.last_error() == NO_IPC


# ---------------------------------------------------------------------- authentication


def test_wrong_password_unknown_login_or_server(make_world: WorldFactory) -> None:
    world, _ = make_world()
    account = world.accounts[0]
    assert mt5.initialize()
    assert mt5.login(account.login, password="wrong", server=account.server) is False
    assert mt5.last_error() == AUTH
    assert mt5.account_info() is None  # a failed login leaves no account behind
    assert mt5.login(99_999_999, password=account.password, server=account.server) is False
    assert mt5.last_error() == AUTH
    other_server = world.accounts[1].server
    assert mt5.login(account.login, password=account.password, server=other_server) is False
    assert mt5.last_error() == AUTH


def test_wrong_password_fault_rejects_the_right_password(make_world: WorldFactory) -> None:
    world, _ = make_world(faults={0: [{"kind": "wrong_password"}]})
    account = world.accounts[0]
    assert mt5.initialize()
    for _ in range(3):
        assert mt5.login(account.login, password=account.password, server=account.server) is False
        assert mt5.last_error() == AUTH


def test_otp_required_says_so(make_world: WorldFactory) -> None:
    world, _ = make_world(faults={2: [{"kind": "otp_required", "call": "login"}]})
    account = world.accounts[2]
    assert mt5.initialize()
    assert mt5.login(account.login, password=account.password, server=account.server) is False
    code, message = mt5.last_error()
    assert code == -6
    assert "one-time password (OTP) required" in message


def test_init_failure_is_transient(make_world: WorldFactory) -> None:
    world, _ = make_world(faults={0: [{"kind": "init_failure", "times": 1}]})
    account = world.accounts[0]
    assert mt5.initialize()
    assert mt5.login(account.login, password=account.password, server=account.server) is False
    assert mt5.last_error() == (-10003, "IPC initialize failed")
    assert mt5.login(account.login, password=account.password, server=account.server) is True


# ---------------------------------------------------------------------- history arguments


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((), {"date_from": 0, "date_to": FAR_FUTURE}),
        ((0,), {"date_to": FAR_FUTURE}),
        ((0, FAR_FUTURE), {"symbol": "EURUSD"}),
        ((0, FAR_FUTURE), {"unknown": 1}),
        ((0,), {}),
        ((), {}),
        (("yesterday", FAR_FUTURE), {}),
    ],
)
def test_bad_history_arguments_are_invalid_params(
    make_world: WorldFactory, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    world, _ = make_world()
    login_as(world.accounts[0])
    assert mt5.history_deals_get(*args, **kwargs) is None
    assert mt5.last_error() == INVALID
    assert mt5.history_orders_get(*args, **kwargs) is None
    assert mt5.last_error() == INVALID


def test_unknown_keyword_on_positions_is_invalid(make_world: WorldFactory) -> None:
    world, _ = make_world()
    login_as(world.accounts[0])
    assert mt5.positions_get(position=1) is None
    assert mt5.last_error() == INVALID


def test_no_rows_is_an_empty_tuple(make_world: WorldFactory) -> None:
    world, _ = make_world()
    login_as(world.accounts[0])
    empty = mt5.history_deals_get(
        datetime(2001, 1, 1, tzinfo=UTC), datetime(2001, 2, 1, tzinfo=UTC)
    )
    assert empty == () and isinstance(empty, tuple)
    assert mt5.last_error() == (1, "Success")
    assert mt5.positions_get(symbol="NOPE") == ()
    assert mt5.positions_get(ticket=1) == ()
    assert mt5.history_deals_get(position=1) == ()
    assert mt5.history_deals_total(0, 1) == 0
    assert mt5.orders_get() == ()
    assert mt5.orders_total() == 0


def test_rows_are_tuples_of_structures(make_world: WorldFactory) -> None:
    world, _ = make_world()
    login_as(world.accounts[0])
    deals = mt5.history_deals_get(0, FAR_FUTURE)
    assert isinstance(deals, tuple) and deals
    assert all(type(d) is mt5.TradeDeal for d in deals)
    assert set(deals[0]._asdict()) == set(mt5.TradeDeal._fields)
    assert mt5.history_deals_total(0, FAR_FUTURE) == len(deals)
    positions = mt5.positions_get()
    assert isinstance(positions, tuple)
    assert all(type(p) is mt5.TradePosition for p in positions)
    assert mt5.positions_total() == len(positions)


def test_date_range_is_inclusive_on_server_time(make_world: WorldFactory) -> None:
    world, _ = make_world()
    login_as(world.accounts[0])
    deal = mt5.history_deals_get(0, FAR_FUTURE)[10]
    same_second = mt5.history_deals_get(deal.time, deal.time)
    assert deal in same_second
    assert all(d.time == deal.time for d in same_second)


def test_datetime_and_epoch_arguments_are_equivalent(make_world: WorldFactory) -> None:
    world, _ = make_world()
    login_as(world.accounts[0])
    start = datetime(2026, 10, 1, tzinfo=UTC)
    end = datetime(2026, 10, 15, 6, 30, tzinfo=UTC)
    by_datetime = mt5.history_deals_get(start, end)
    by_epoch = mt5.history_deals_get(int(start.timestamp()), int(end.timestamp()))
    assert by_datetime and by_datetime == by_epoch
    naive = datetime(2026, 10, 1, 0, 0)  # read in the host's local time zone, like the real one
    assert mt5.history_deals_get(naive, end) == mt5.history_deals_get(
        int(naive.timestamp()), int(end.timestamp())
    )


def test_ticket_filters_by_order_and_ignores_dates(make_world: WorldFactory) -> None:
    world, _ = make_world()
    login_as(world.accounts[0])
    deals = mt5.history_deals_get(0, FAR_FUTURE)
    deal = next(d for d in deals if d.order and d.entry == mt5.DEAL_ENTRY_OUT)
    assert deal.ticket != deal.order
    by_order = mt5.history_deals_get(ticket=deal.order)
    assert deal in by_order
    assert all(d.order == deal.order for d in by_order)
    assert mt5.history_deals_get(0, 1, ticket=deal.order) == by_order
    assert mt5.history_deals_get(ticket=deal.ticket) == ()  # a deal ticket is not an order


def test_position_filter_ignores_dates(make_world: WorldFactory) -> None:
    world, _ = make_world()
    login_as(world.accounts[0])
    deals = mt5.history_deals_get(0, FAR_FUTURE)
    exits = [d for d in deals if d.entry == mt5.DEAL_ENTRY_OUT]
    pid = exits[len(exits) // 2].position_id
    expected = tuple(d for d in deals if d.position_id == pid)
    assert len(expected) >= 2
    assert mt5.history_deals_get(position=pid) == expected
    assert mt5.history_deals_get(0, 1, position=pid) == expected
    orders = mt5.history_orders_get(position=pid)
    assert orders and all(o.position_id == pid for o in orders)
    assert {o.ticket for o in orders} == {d.order for d in expected}


def test_group_filters_symbols(make_world: WorldFactory) -> None:
    world, _ = make_world()
    login_as(world.accounts[0])
    eur = mt5.history_deals_get(0, FAR_FUTURE, group="*EUR*")
    assert eur and all("EUR" in d.symbol for d in eur)
    no_eur = mt5.history_deals_get(0, FAR_FUTURE, group="*,!*EUR*")
    assert no_eur and all("EUR" not in d.symbol for d in no_eur)


def test_positions_filters(make_world: WorldFactory) -> None:
    world, _ = make_world()
    login_as(world.accounts[0])
    positions = mt5.positions_get()
    assert positions, "the seeded account should hold open positions at NOW"
    first = positions[0]
    assert first.ticket == first.identifier
    assert mt5.positions_get(ticket=first.ticket) == (first,)
    assert all(p.symbol == first.symbol for p in mt5.positions_get(symbol=first.symbol))


def test_history_orders_ticket_is_the_order(make_world: WorldFactory) -> None:
    world, _ = make_world()
    login_as(world.accounts[0])
    orders = mt5.history_orders_get(0, FAR_FUTURE)
    assert orders and all(type(o) is mt5.TradeOrder for o in orders)
    assert mt5.history_orders_get(ticket=orders[3].ticket) == (orders[3],)
    assert mt5.history_orders_total(0, FAR_FUTURE) == len(orders)


def test_unmodelled_functions_say_unsupported(make_world: WorldFactory) -> None:
    world, _ = make_world()
    login_as(world.accounts[0])
    assert mt5.copy_rates_from("EURUSD", mt5.TIMEFRAME_M1, 0, 10) is None
    assert mt5.last_error() == (-7, "Unsupported")
    assert mt5.market_book_add("EURUSD") is False
    assert mt5.last_error() == (-7, "Unsupported")
    assert mt5.symbol_select(world.accounts[0].symbols[0]) is True


# ---------------------------------------------------------------------- clock, latency, faults


def test_rewriting_the_world_file_advances_the_clock(make_world: WorldFactory) -> None:
    world, path = make_world()
    login_as(world.accounts[0])
    before = mt5.history_deals_get(0, FAR_FUTURE)
    info_before = mt5.account_info()
    world.with_now(NOW + timedelta(hours=36)).save(path)
    after = mt5.history_deals_get(0, FAR_FUTURE)
    assert len(after) > len(before)
    assert after[: len(before)] == before  # the past does not change
    assert mt5.account_info() != info_before


def test_latency_and_login_delay_are_slept(
    make_world: WorldFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mt5_sync.mt5sim import terminal as simterminal

    world, path = make_world(latency=FixedLatency(seconds=0.05))
    account = world.accounts[0].model_copy(update={"login_delay_s": 0.2})
    world.accounts[0] = account
    world.save(path)
    assert mt5.initialize()
    slept: list[float] = []
    monkeypatch.setattr(simterminal, "_sleep", slept.append)
    assert mt5.login(account.login, password=account.password, server=account.server)
    assert slept == [0.05, 0.2]  # the call's latency, then the login delay
    slept.clear()
    assert mt5.account_info() is not None
    assert slept == [0.05]


def test_malformed_deals_are_appended(make_world: WorldFactory) -> None:
    world, _ = make_world(faults={1: [{"kind": "malformed_deals", "times": 1}]})
    login_as(world.accounts[1])
    broken = mt5.history_deals_get(0, FAR_FUTURE)
    clean = mt5.history_deals_get(0, FAR_FUTURE)
    extra = set(broken) - set(clean)
    assert len(extra) == 4
    assert len({d.ticket for d in broken}) == len(broken)
    assert any(d.price != d.price for d in extra)  # NaN
    assert any(d.volume < 0 for d in extra)
    assert any(d.symbol == "" and d.type == mt5.DEAL_TYPE_BUY and d.entry == 0 for d in extra)
    assert any(d.time == 0 for d in extra)


def test_ipc_timeout_counts_across_processes(make_world: WorldFactory) -> None:
    world, path = make_world(
        faults={0: [{"kind": "ipc_timeout", "call": "account_info", "times": 2}]}
    )
    account = world.accounts[0]
    script = f"""
        import mt5_sync.mt5sim as mt5
        assert mt5.initialize()
        assert mt5.login({account.login}, password={account.password!r}, server={account.server!r})
        print(mt5.account_info(), mt5.last_error())
    """
    for _ in range(2):  # two separate terminal processes each eat one failure
        out = run_python(script, path).stdout.strip()
        assert out == "None (-10005, 'IPC timeout')"
    login_as(account)
    info = mt5.account_info()
    assert info is not None and info.login == account.login


def test_ipc_timeout_with_null_times_never_recovers(make_world: WorldFactory) -> None:
    world, _ = make_world(faults={3: [{"kind": "ipc_timeout", "call": "history_deals_get"}]})
    login_as(world.accounts[3])
    for _ in range(3):
        assert mt5.history_deals_get(0, FAR_FUTURE) is None
        assert mt5.last_error() == (-10005, "IPC timeout")
    assert mt5.positions_get() is not None  # other calls still work


def test_hang_blocks_the_call_then_a_retry_elsewhere_succeeds(make_world: WorldFactory) -> None:
    world, path = make_world(faults={0: [{"kind": "hang", "call": "positions_get", "times": 2}]})
    account = world.accounts[0]
    script = f"""
        import sys, threading
        import mt5_sync.mt5sim as mt5
        assert mt5.initialize()
        assert mt5.login({account.login}, password={account.password!r}, server={account.server!r})
        worker = threading.Thread(target=mt5.positions_get, daemon=True)
        worker.start()
        worker.join(1.0)
        print("blocked" if worker.is_alive() else "returned", flush=True)
        mt5.positions_get()  # the main thread is stuck too: only a kill ends this process
        print("unreachable", flush=True)
    """
    env = {**os.environ, "MT5SIM_WORLD": str(path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "blocked"
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1.0)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    # Both counts were used up by the killed process: this call returns promptly.
    login_as(account)
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(mt5.positions_get()), daemon=True)
    worker.start()
    worker.join(10.0)
    assert not worker.is_alive()
    assert isinstance(result[0], tuple)
