"""CPU of the transform for one typical account: validation (deals, positions, account) and
trade reconstruction, the part of ``commit-account-sync`` that runs in the flow process.

    python scripts/bench_transform.py                    # 118 deals, 5 positions, 200 runs
    python scripts/bench_transform.py --positions 60 --open 5 --runs 500

Builds realistic raw MT5 records with the test builders (``tests/transform``), so the frames
are exactly what the terminal adapter hands over, and prints milliseconds per account.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--positions", type=int, default=59, help="closed positions (2 deals each)")
    ap.add_argument("--open", type=int, default=5, help="open positions")
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args(argv)

    from mt5_sync.servertime import ServerTimeRule
    from mt5_sync.transform.records import account_frame, deals_frame, positions_frame
    from mt5_sync.transform.trades import build_trades
    from tests.transform import SELL, account_info, deal, position

    rule = ServerTimeRule.parse("ny+7")
    deals = []
    for p in range(1, args.positions + 1):
        deals.append(deal(2 * p, position_id=p))
        deals.append(deal(2 * p + 1, position_id=p, entry=1, type=SELL))
    positions = [position(10_000 + i) for i in range(args.open)]
    account = account_info()

    def one() -> None:
        d = deals_frame(deals)
        ps = positions_frame(positions)
        account_frame(account)
        build_trades(d.frame, ps.frame, rule)

    one()
    t0 = time.perf_counter()
    for _ in range(args.runs):
        one()
    ms = (time.perf_counter() - t0) / args.runs * 1000
    print(f"{ms:.2f} ms per account ({len(deals)} deals, {len(positions)} open positions, "
          f"{args.runs} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
