"""Run one TerminalPool in its own process (as a flow run would) and fetch accounts with it.

    python -m tests.terminal.pool_driver WORLD PATHS ACCOUNTS ROUNDS [--no-locks]
        [--ready FILE --go FILE]

PATHS is ';'-separated terminal paths, ACCOUNTS comma-separated account indexes. Prints a JSON
summary. ``--no-locks`` drops the slots' OS locks, to show what the locks prevent.
``--ready``/``--go``: a start barrier. With its workers started, the driver creates the ready
file and waits for the go file, so two drivers fetch at the same time however long each took
to import and start (otherwise a fast one can finish before a slow one begins).
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mt5_sync.contracts import Credentials, FetchRequest
from mt5_sync.mt5sim.world import World
from mt5_sync.servertime import ServerTimeRule
from mt5_sync.settings import Settings
from mt5_sync.terminal.pool import TerminalPool


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("world")
    parser.add_argument("paths")
    parser.add_argument("accounts")
    parser.add_argument("rounds", type=int)
    parser.add_argument("--no-locks", action="store_true")
    parser.add_argument("--ready", default=None)
    parser.add_argument("--go", default=None)
    args = parser.parse_args()
    world = World.load(args.world)
    settings = Settings(
        terminal_backend="simulated", terminal_paths=args.paths, sim_world=args.world,
        terminal_timeout_s=60, terminal_slot_wait_s=60,
    )
    pool = TerminalPool.from_settings(settings)
    if args.no_locks:
        for slot in pool.slots:
            slot.lock = None
    now = world.effective_now()

    def fetch(index: int) -> str:
        spec = world.accounts[index]
        rule = ServerTimeRule.parse(spec.time_rule)
        result = pool.fetch(FetchRequest(
            account_id=str(index),
            credentials=Credentials(spec.login, spec.server, spec.password),
            date_from=rule.to_server_epoch(now - timedelta(days=5)),
            date_to=rule.to_server_epoch(now + timedelta(days=1)),
        ))
        return "ok" if not result.errors and result.login == spec.login else "bad"

    indexes = [int(i) for i in args.accounts.split(",")] * args.rounds
    if args.ready and args.go:
        pool.warm_up()
        Path(args.ready).touch()
        while not Path(args.go).exists():
            time.sleep(0.01)
    started = datetime.now(UTC)
    try:
        with ThreadPoolExecutor(pool.size) as ex:
            outcomes = list(ex.map(fetch, indexes))
    finally:
        pool.close()
    print(json.dumps({
        "outcomes": outcomes, "max_in_use": pool.max_in_use, "lock_skips": pool.lock_skips,
        "seconds": (datetime.now(UTC) - started).total_seconds(),
    }))


if __name__ == "__main__":
    main()
