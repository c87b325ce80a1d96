"""A simulated ``MetaTrader5`` module: ``import mt5_sync.mt5sim as mt5`` works like the real one.

The real package is Windows-only; this one runs anywhere and is driven by a world file (path
in ``MT5SIM_WORLD``, see ``world.py``) describing accounts, the clock, latency and faults.
Same constants, function names, structure field orders and calling conventions as
MetaTrader5 5.0.6231 (checked by tests/mt5sim/test_conformance.py). The broker model behind
it (``broker.py``) also answers "what should the database contain" for tests.
"""

from mt5_sync.mt5sim import constants as _constants
from mt5_sync.mt5sim.constants import *  # noqa: F403  (the real module exports them the same way)
from mt5_sync.mt5sim.structures import (
    AccountInfo,
    TerminalInfo,
    TradeDeal,
    TradeOrder,
    TradePosition,
)
from mt5_sync.mt5sim.terminal import (
    account_info,
    copy_rates_from,
    copy_rates_from_pos,
    copy_rates_range,
    copy_ticks_from,
    copy_ticks_range,
    history_deals_get,
    history_deals_total,
    history_orders_get,
    history_orders_total,
    initialize,
    last_error,
    login,
    market_book_add,
    market_book_get,
    market_book_release,
    order_calc_margin,
    order_calc_profit,
    order_check,
    order_send,
    orders_get,
    orders_total,
    positions_get,
    positions_total,
    shutdown,
    symbol_info,
    symbol_info_tick,
    symbol_select,
    symbols_get,
    symbols_total,
    terminal_info,
    version,
)

__version__ = "5.0.6231"
__author__ = "MetaQuotes Ltd. (simulated)"

__all__ = [
    *(name for name in dir(_constants) if name.isupper()),
    "AccountInfo",
    "TerminalInfo",
    "TradeDeal",
    "TradeOrder",
    "TradePosition",
    "account_info",
    "copy_rates_from",
    "copy_rates_from_pos",
    "copy_rates_range",
    "copy_ticks_from",
    "copy_ticks_range",
    "history_deals_get",
    "history_deals_total",
    "history_orders_get",
    "history_orders_total",
    "initialize",
    "last_error",
    "login",
    "market_book_add",
    "market_book_get",
    "market_book_release",
    "order_calc_margin",
    "order_calc_profit",
    "order_check",
    "order_send",
    "orders_get",
    "orders_total",
    "positions_get",
    "positions_total",
    "shutdown",
    "symbol_info",
    "symbol_info_tick",
    "symbol_select",
    "symbols_get",
    "symbols_total",
    "terminal_info",
    "version",
]
