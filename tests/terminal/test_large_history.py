"""An account with 60,000 deals whose terminal cuts every history answer at 10,000 rows
(issue 13), at the adapter + store level: a flow run of 60k deals would be slow, and what is
under test is that the adapter reads the window in pieces and the ledger then closes.

The adapter counts each answer against ``history_deals_total`` and re-reads a short answer in
two halves (mt5_sync.terminal.session.TerminalSession._window).
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import mt5_sync.mt5sim as mt5
from mt5_sync.contracts import Credentials, FetchRequest
from mt5_sync.mt5sim.broker import BrokerView
from mt5_sync.mt5sim.world import WORLD_ENV, Quirks, build_world
from mt5_sync.servertime import ServerTimeRule
from mt5_sync.store import PostgresStore
from mt5_sync.terminal.session import TerminalSession
from mt5_sync.transform.payload import SyncContext, build_commit_payload

NOW = datetime(2027, 3, 16, 12, 0, tzinfo=UTC)
CAP = 10_000


class Counting:
    """The simulated module, counting calls."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        target = getattr(mt5, name)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return target(*args, **kwargs)

        return call


@pytest.fixture
def big_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    world = build_world(1, seed=3, now_utc=NOW, timeline_start_utc=NOW - timedelta(days=20),
                        trades_per_day=1400.0, state_dir=str(tmp_path / "state"))
    world.accounts[0].quirks = Quirks(max_history_rows=CAP)
    monkeypatch.setenv(WORLD_ENV, str(world.save(tmp_path / "world.json")))
    yield world
    mt5.shutdown()


def test_60k_deals_are_read_whole_in_windows_and_the_ledger_closes(big_world, db_url):
    spec = big_world.accounts[0]
    truth = BrokerView(spec, big_world.seed, big_world.timeline_start_utc, NOW)
    assert len(truth.deals()) >= 60_000
    rule = ServerTimeRule.parse(spec.time_rule)
    start, end = NOW - timedelta(days=30), NOW + timedelta(days=1)
    module = Counting()
    session = TerminalSession(module)  # type: ignore[arg-type]
    fetched = session.fetch(FetchRequest(
        account_id="acc-big",
        credentials=Credentials(spec.login, spec.server, spec.password),
        date_from=rule.to_server_epoch(start), date_to=rule.to_server_epoch(end),
        as_of_utc=NOW.isoformat(),
    ))
    assert fetched.errors == []
    assert fetched.deals is not None
    assert {d["ticket"] for d in fetched.deals} == {d.ticket for d in truth.deals()}
    assert module.calls["history_deals_get"] > len(truth.deals()) // CAP  # read in pieces
    assert fetched.deals_before_window == 0

    store = PostgresStore(db_url)
    account_id = store.register_account(
        user_id=str(uuid.uuid4()), login_number=spec.login, broker_server=spec.server,
        broker_name=None, investor_password_encrypted="x", server_time_rule=spec.time_rule,
    )
    payload, _ = build_commit_payload(
        fetched,
        SyncContext(sync_id=str(uuid.uuid4()), account_id=account_id, execution_id=None,
                    flow_run_id=None, trigger="backfill", sync_type="full",
                    started_at=NOW, time_rule=spec.time_rule),
        completed_at=NOW,
    )
    result = store.commit_account_sync(payload)
    assert result["status"] == "success", result
    assert result["deals_synced"] == len(truth.deals())
    [row] = store.fetch_all(
        "select status, opening_offset, drift from mt5_ledger_reconciliation "
        "where account_id = %s", (account_id,))
    assert (row["status"], row["opening_offset"], row["drift"]) == ("ok", 0, 0)
