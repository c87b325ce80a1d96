"""End-to-end harness: the real flows, a real Prefect server, real Postgres, simulated MT5.

Flows run in the test process (as ``mt5-sync sync`` does) against the session's Prefect
server; terminals are real worker processes running the project's MT5 adapter against the
simulated ``MetaTrader5`` module.

One clock for broker and product: every harness builds its world at a start instant, pins the
simulated broker's clock there and drives the product's clock (:mod:`mt5_sync.clock`) from the
same instant; :meth:`SyncHarness.advance` moves both. Every test here runs at today's date and
at each of :data:`OTHER_DATES` (``MT5SYNC_TEST_DATES=today`` runs today's only; an ISO instant
there reproduces a failure seen at that date).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mt5_sync import clock
from mt5_sync.credentials import encrypt_password, generate_key
from mt5_sync.localstack import PrefectServer
from mt5_sync.mt5sim.broker import BrokerView
from mt5_sync.mt5sim.world import Fault, Quirks, World, build_world
from mt5_sync.settings import load_settings
from mt5_sync.store.postgres import PostgresStore
from mt5_sync.tasks.runtime import close_stores
from mt5_sync.terminal.pool import close_all_pools

USER_ID = "00000000-0000-4000-8000-0000000000e2"

#: Besides today, the dates every test here runs at:
#: - the week after the US moved to daylight time (2027-03-14) while Europe had not
#:   (2027-03-28): NY+7 servers are at +3, the fixed +2 servers at +2; the 20-day world
#:   timeline starts before the switch;
#: - mid-summer (every rule at its summer offset, no switch in the timeline);
#: - the day after the US fell back (2027-11-07): the timeline spans the EU switch (10-31)
#:   and the US one, where NY+7 server wall-clock hours repeat.
OTHER_DATES = {
    "us-dst-start-week": datetime(2027, 3, 16, 12, 0, tzinfo=UTC),
    "july": datetime(2027, 7, 15, 12, 0, tzinfo=UTC),
    "us-dst-end-week": datetime(2027, 11, 8, 12, 0, tzinfo=UTC),
}
DATES_ENV = "MT5SYNC_TEST_DATES"


def _test_dates() -> list[str]:
    wanted = os.environ.get(DATES_ENV, "")
    return [d.strip() for d in wanted.split(",") if d.strip()] or ["today", *OTHER_DATES]


def start_instant(name: str) -> datetime:
    """The instant a date id stands for: today's (the real clock, to the second), a named
    date from :data:`OTHER_DATES`, or an ISO 8601 instant."""
    if name == "today":
        return datetime.now(UTC).replace(microsecond=0)
    if name in OTHER_DATES:
        return OTHER_DATES[name]
    moment = datetime.fromisoformat(name)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@pytest.fixture(params=_test_dates())
def world_start(request: pytest.FixtureRequest) -> datetime:
    """When the test's world (broker and product clocks) starts."""
    return start_instant(request.param)


@pytest.fixture(scope="session", autouse=True)
def _prefect_api(prefect_server: PrefectServer, stack_root: Path) -> Iterator[None]:
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_LOGGING_LEVEL,
        temporary_settings,
    )

    with temporary_settings(
        updates={
            PREFECT_API_URL: prefect_server.api_url,
            PREFECT_LOCAL_STORAGE_PATH: str(stack_root / "results"),
            PREFECT_LOGGING_LEVEL: "WARNING",
        }
    ):
        yield


@dataclass
class SyncHarness:
    db_url: str
    world: World
    world_path: Path
    store: PostgresStore
    key: str
    clock: clock.RunningClock
    account_ids: dict[int, str] = field(default_factory=dict)

    def register(self, *, active: bool = True) -> None:
        self.store.ensure_user(USER_ID, "e2e@example.com")
        for spec in self.world.accounts:
            self.account_ids[spec.login] = self.store.register_account(
                user_id=USER_ID,
                login_number=spec.login,
                broker_server=spec.server,
                broker_name=spec.company,
                investor_password_encrypted=encrypt_password(spec.password, self.key),
                server_time_rule=spec.time_rule,
                is_active=active,
            )

    def run_cycle(self, **params: Any) -> dict[str, Any]:
        from mt5_sync.flows.sync_trading_data import sync_trading_data

        return asyncio.run(sync_trading_data(**params))

    def run_account(self, login: int, **params: Any) -> tuple[Any, dict[str, Any]]:
        from mt5_sync.flows.sync_account import sync_account

        async def go() -> tuple[Any, dict[str, Any]]:
            state = await sync_account(
                account_id=self.account_ids[login], account_label=str(login),
                return_state=True, **params,
            )
            return state, await state.aresult(raise_on_failure=False)

        return asyncio.run(go())

    def advance(self, delta: timedelta) -> None:
        """Move the broker's clock and the product's by ``delta`` (the product keeps the few
        seconds it has run ahead of the pinned broker clock, as a real host would)."""
        self.world = self.world.with_now(self.world.effective_now() + delta)
        self.world.save(self.world_path)
        self.clock.set(self.clock.now() + delta)

    def set_faults(self, index: int, faults: list[dict[str, Any]]) -> None:
        """Give account ``index`` these faults (before its next terminal call)."""
        spec = self.world.accounts[index]
        self.world.accounts[index] = spec.model_copy(
            update={"faults": [Fault.model_validate(f) for f in faults]}
        )
        self.world = World.model_validate(self.world.model_dump())
        self.world.save(self.world_path)

    def set_quirks(self, index: int, **quirks: Any) -> None:
        """Make account ``index``'s terminal messy (``mt5_sync.mt5sim.world.Quirks`` fields)."""
        spec = self.world.accounts[index]
        merged = {**spec.quirks.model_dump(), **quirks}
        self.world.accounts[index] = spec.model_copy(
            update={"quirks": Quirks.model_validate(merged)}
        )
        self.world = World.model_validate(self.world.model_dump())
        self.world.save(self.world_path)

    def broker_view(self, index: int) -> BrokerView:
        """Account ``index`` at the broker, now."""
        return BrokerView(
            self.world.accounts[index], self.world.seed, self.world.timeline_start_utc,
            self.world.effective_now(),
        )

    def broker_open_positions(self, index: int) -> int:
        """How many positions account ``index`` has open at the broker now."""
        view = BrokerView(
            self.world.accounts[index], self.world.seed, self.world.timeline_start_utc,
            self.world.effective_now(),
        )
        return len(view.positions())

    def terminal_borrows(self) -> list[tuple[float, float]]:
        """The terminal pool's record of this test's borrows: (acquired, released), monotonic."""
        from mt5_sync.tasks import runtime

        return [(a, r) for _, a, r in runtime.terminals().borrows]

    def query(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        return self.store.fetch_all(sql, params)


@pytest.fixture
def make_harness(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, world_start: datetime
) -> Iterator[Any]:
    """Build a world of N simulated accounts (with faults) starting at ``world_start``, point
    the settings at it and drive the product's clock from the same instant."""
    product_clock = clock.RunningClock(world_start)

    def make(
        n: int,
        *,
        faults: dict[int, list[dict[str, Any]]] | None = None,
        seed: int = 11,
        terminal_timeout_s: float = 20.0,
        fetch_retries: int = 2,
        active: bool = True,
        **world_kwargs: Any,
    ) -> SyncHarness:
        world = build_world(
            n,
            seed=seed,
            now_utc=world_start,
            timeline_start_utc=world_start - timedelta(days=20),
            faults=faults or {},
            state_dir=str(tmp_path / "sim-state"),
            **world_kwargs,
        )
        world_path = world.save(tmp_path / "world.json")
        key = generate_key()
        for name, value in {
            "DATABASE_URL": db_url,
            "MT5SYNC_CREDENTIALS_KEY": key,
            "MT5SIM_WORLD": str(world_path),
            "MT5SYNC_TERMINAL_BACKEND": "simulated",
            "MT5SYNC_TERMINAL_TIMEOUT_S": str(terminal_timeout_s),
            "MT5SYNC_FETCH_RETRIES": str(fetch_retries),
            "MT5SYNC_RETRY_BACKOFF_S": "0.2",
            "MT5SYNC_LEASE_WAIT_S": "5",
        }.items():
            monkeypatch.setenv(name, value)
        load_settings.cache_clear()
        harness = SyncHarness(
            db_url, world, world_path, PostgresStore(db_url), key, product_clock
        )
        harness.register(active=active)
        return harness

    with clock.driven_by(product_clock):
        yield make
    close_all_pools()
    close_stores()
    load_settings.cache_clear()
