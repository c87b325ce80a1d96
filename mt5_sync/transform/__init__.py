"""Raw MT5 records -> validated rows -> one commit payload (plain Python, no Prefect).

- :mod:`.schemas`: pandera schemas and the MT5 constants they check against;
- :mod:`.records`: validation/quarantine and the deal, cash-flow, account and snapshot rows;
- :mod:`.trades`: closed trades reconstructed from deals, open trades from positions;
- :mod:`.payload`: :func:`build_commit_payload` (FetchResult -> CommitPayload).
"""

from mt5_sync.deal_sets import positions_needing_history
from mt5_sync.transform.payload import SyncContext, TransformReport, build_commit_payload
from mt5_sync.transform.records import (
    ValidatedFrame,
    account_frame,
    deals_frame,
    json_safe,
    positions_frame,
    server_ms_to_iso,
    server_ms_to_utc_ms,
    to_account_row,
    to_cash_flow_rows,
    to_deal_rows,
    to_snapshot_row,
)
from mt5_sync.transform.trades import (
    TradeBuild,
    build_trades,
    closed_trades,
    open_trades,
)

__all__ = [
    "SyncContext",
    "TradeBuild",
    "TransformReport",
    "ValidatedFrame",
    "account_frame",
    "build_commit_payload",
    "build_trades",
    "closed_trades",
    "deals_frame",
    "json_safe",
    "open_trades",
    "positions_frame",
    "positions_needing_history",
    "server_ms_to_iso",
    "server_ms_to_utc_ms",
    "to_account_row",
    "to_cash_flow_rows",
    "to_deal_rows",
    "to_snapshot_row",
]
