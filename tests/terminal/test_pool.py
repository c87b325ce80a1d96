"""The gateway against real worker processes running the adapter on the simulated module."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mt5_sync import errors
from mt5_sync.contracts import Credentials, FetchRequest
from mt5_sync.mt5sim.world import build_world
from mt5_sync.servertime import ServerTimeRule
from mt5_sync.settings import Settings
from mt5_sync.terminal.pool import TerminalPool

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
REFERENCE_DEAL_FIELDS = [
    "ticket", "order", "time", "time_msc", "type", "entry", "magic", "position_id", "reason",
    "volume", "price", "commission", "swap", "profit", "fee", "symbol", "comment", "external_id",
]


@pytest.fixture
def world_path(tmp_path: Path) -> Path:
    world = build_world(
        4,
        seed=5,
        now_utc=NOW,
        timeline_start_utc=NOW - timedelta(days=10),
        faults={
            1: [{"kind": "wrong_password", "call": "login"}],
            2: [{"kind": "hang", "call": "positions_get", "times": 1}],
            3: [{"kind": "ipc_timeout", "call": "history_deals_get", "times": 1}],
        },
        state_dir=str(tmp_path / "state"),
    )
    return world.save(tmp_path / "world.json")


def request_for(world_path: Path, index: int, password: str | None = None) -> FetchRequest:
    from mt5_sync.mt5sim.world import World

    spec = World.load(world_path).accounts[index]
    rule = ServerTimeRule.parse(spec.time_rule)
    return FetchRequest(
        account_id=f"acc-{index}",
        credentials=Credentials(spec.login, spec.server, password or spec.password),
        date_from=rule.to_server_epoch(NOW - timedelta(days=30)),
        date_to=rule.to_server_epoch(NOW + timedelta(days=1)),
    )


def make_pool(
    world_path: Path, slots: int = 2, timeout_s: float = 10.0, **env: str
) -> TerminalPool:
    settings = Settings(
        terminal_backend="simulated", simulated_slots=slots, sim_world=world_path,
        terminal_timeout_s=timeout_s,
    )
    pool = TerminalPool.from_settings(settings)
    for slot in pool.slots:
        slot.env.update(env)
    return pool


def test_fetch_returns_raw_records_in_the_reference_shape(world_path):
    pool = make_pool(world_path)
    try:
        result = pool.fetch(request_for(world_path, 0))
    finally:
        pool.close()
    assert result.errors == []
    assert result.account_info is not None and result.account_info["login"] == result.login
    assert result.deals, "a 10-day-old account has deals"
    assert list(result.deals[0]) == REFERENCE_DEAL_FIELDS
    assert result.positions is not None


def test_wrong_password_is_an_authentication_failure(world_path):
    pool = make_pool(world_path)
    try:
        with pytest.raises(errors.AuthenticationFailed) as info:
            pool.fetch(request_for(world_path, 1))
    finally:
        pool.close()
    assert info.value.mt5_code == -6 and not info.value.transient


def test_hung_terminal_is_killed_from_outside_and_replaced(world_path):
    pool = make_pool(world_path, slots=1, timeout_s=60)
    try:
        slot = pool.slots[0]
        pool.fetch(request_for(world_path, 0))  # warm: the worker is up and logged in
        first_pid = slot.pid
        with pytest.raises(errors.TerminalTimeout) as caught:
            pool.fetch(request_for(world_path, 2), timeout_s=1.5)
        # cut off at the call's own timeout, not the pool's 60 s
        assert "did not answer within 1.5s; its process was killed" in caught.value.message
        assert slot.process is not None and slot.process.poll() is not None  # killed
        # The fault fired once; the replacement process serves the same account.
        result = pool.fetch(request_for(world_path, 2))
        assert result.errors == []
        assert slot.pid != first_pid and slot.restarts == 1
    finally:
        pool.close()


def test_ipc_fault_in_one_part_is_reported_not_raised(world_path):
    pool = make_pool(world_path)
    try:
        result = pool.fetch(request_for(world_path, 3))
    finally:
        pool.close()
    assert result.account_info is not None and result.positions is not None
    assert result.deals is None
    [error] = result.errors
    assert (error.part, error.code, error.mt5_code) == ("history", "ipc_timeout", -10005)


def test_cross_wired_terminal_is_detected(world_path):
    pool = make_pool(world_path, MT5SYNC_MT5_MODULE="tests.terminal.crosswired_mt5")
    try:
        with pytest.raises(errors.AccountMismatch, match="reports login"):
            pool.fetch(request_for(world_path, 0))
    finally:
        pool.close()


def test_slots_serve_accounts_in_parallel(world_path):
    from concurrent.futures import ThreadPoolExecutor

    pool = make_pool(world_path, slots=2)
    try:
        with ThreadPoolExecutor(4) as ex:
            results = list(ex.map(lambda i: pool.fetch(request_for(world_path, 0)), range(4)))
    finally:
        pool.close()
    assert len(results) == 4 and pool.max_in_use == 2


def test_cap_bounds_terminals_in_use_and_the_pool_records_its_waits(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from mt5_sync.mt5sim.world import FixedLatency
    from mt5_sync.verify import max_overlap

    world = build_world(2, seed=9, now_utc=NOW, timeline_start_utc=NOW - timedelta(days=5),
                        latency=FixedLatency(seconds=0.05), state_dir=str(tmp_path / "state"))
    path = world.save(tmp_path / "world.json")
    pool = make_pool(path, slots=4)
    pool.limit_in_use(2)
    pool.reset_usage()
    try:
        with ThreadPoolExecutor(8) as ex:
            results = list(ex.map(lambda i: pool.fetch(request_for(path, i % 2)), range(8)))
        usage = pool.usage.snapshot()
    finally:
        pool.close()
    assert all(r.errors == [] for r in results)
    intervals = [(acquired, released) for _, acquired, released in pool.borrows]
    assert len(intervals) == 8
    # Eight callers at once, two terminals: never more than two in use, the rest waited.
    assert max_overlap(intervals) == usage["peak"] == 2
    assert sum(r.slot_wait_ms > 0 for r in results) >= 6
    assert 0 < usage["mean"] <= 2
    assert pool.cap == 2 and {s for s, _, _ in pool.borrows} <= {0, 1, 2, 3}
