"""The simulated terminal: module-level API functions with MetaTrader5's calling conventions.

Like the real package, one process holds one connection to one terminal, which holds one
logged-in account; state is therefore module-global. Every function returns its result, or
``None``/``False`` on error with ``last_error()`` telling why, and sets ``(1, 'Success')``
when it succeeds. The world (accounts, clock, faults) comes from the file in ``MT5SIM_WORLD``
and is re-read whenever that file changes, so tests can move the clock between calls.
"""

from __future__ import annotations

import contextlib
import functools
import ntpath
import os
import random
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from mt5_sync.mt5sim import constants as c
from mt5_sync.mt5sim import faults
from mt5_sync.mt5sim.broker import BrokerView
from mt5_sync.mt5sim.structures import (
    AccountInfo,
    TerminalInfo,
    TradeDeal,
    TradeOrder,
    TradePosition,
)
from mt5_sync.mt5sim.world import WORLD_ENV, AccountSpec, World

P = ParamSpec("P")
T = TypeVar("T")
R = TypeVar("R")

SUCCESS = (c.RES_S_OK, "Success")
NO_IPC = (c.RES_E_INTERNAL_FAIL_CONNECT, "No IPC connection")
INVALID_PARAMS = (c.RES_E_INVALID_PARAMS, "Invalid parameters")
AUTH_FAILED = (c.RES_E_AUTH_FAILED, "Terminal: Authorization failed")
OTP_REQUIRED = (
    c.RES_E_AUTH_FAILED,
    "Terminal: Authorization failed: one-time password (OTP) required",
)
IPC_TIMEOUT = (c.RES_E_INTERNAL_FAIL_TIMEOUT, "IPC timeout")
IPC_INIT_FAILED = (c.RES_E_INTERNAL_FAIL_INIT, "IPC initialize failed")
NOT_FOUND_TERMINAL = (
    c.RES_E_INTERNAL_FAIL_INIT,
    f"IPC initialize failed, MetaTrader 5 x64 not found (set {WORLD_ENV})",
)
#: initialize(path=...) naming no terminal64.exe: what a wrong MT5SYNC_TERMINAL_PATHS entry gets
PROCESS_CREATE_FAILED = (c.RES_E_INTERNAL_FAIL_INIT, "IPC initialize failed, Process create failed")
NOT_LOGGED_IN = (c.RES_E_FAIL, "Terminal: Not logged in")
NOT_FOUND = (c.RES_E_NOT_FOUND, "Terminal: Not found")
UNSUPPORTED = (c.RES_E_UNSUPPORTED, "Unsupported")
DEFAULT_PATH = r"C:\Program Files\MetaTrader 5\terminal64.exe"
VERSION = (500, 5200, "1 Aug 2025")


class _Fail(Exception):
    """Internal: abort the current API call with a ``last_error()`` value."""

    def __init__(self, error: tuple[int, str]) -> None:
        super().__init__(error)
        self.error = error


@dataclass
class _Session:
    initialized: bool = False
    world: World | None = None
    world_path: str | None = None
    world_stamp: tuple[int, int, int] | None = None
    account: AccountSpec | None = None
    terminal_path: str | None = None
    portable: bool = False
    error: tuple[int, str] = SUCCESS
    #: this login's session sees history still loading (quirk ``staged_history``)
    staged: bool = False
    #: this login's session switches to another account after positions_get (``crosswire``)
    crosswire: bool = False


_S = _Session()
_LATENCY_RNG = random.Random()


def _api(failure: R) -> Callable[[Callable[P, T]], Callable[P, T | R]]:
    """Turn ``_Fail`` into (``failure`` + ``last_error``) and success into ``(1, 'Success')``."""

    def decorate(fn: Callable[P, T]) -> Callable[P, T | R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T | R:
            try:
                result = fn(*args, **kwargs)
            except _Fail as exc:
                _S.error = exc.error
                return failure
            _S.error = SUCCESS
            return result

        return wrapper

    return decorate


# ---------------------------------------------------------------------- plumbing


def _refresh_world() -> World:
    """Re-read the world file when it changed (new inode, mtime or size).

    A vanished or unreadable file leaves the last good world in place, as a running terminal
    keeps its state; the unreadable one is retried on the next call.
    """
    path = os.environ.get(WORLD_ENV)
    stamp = None
    if path:
        with contextlib.suppress(OSError):
            st = os.stat(path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
    if path and stamp and (path != _S.world_path or stamp != _S.world_stamp):
        try:
            world = World.load(path)
        except (OSError, ValueError) as exc:
            if _S.world is None:
                raise _Fail((NOT_FOUND_TERMINAL[0], f"{NOT_FOUND_TERMINAL[1]}: {exc}")) from None
        else:
            _S.world, _S.world_path, _S.world_stamp = world, path, stamp
            if _S.account is not None:
                _S.account = world.account(_S.account.login, _S.account.server)
    if _S.world is None:
        raise _Fail(NOT_FOUND_TERMINAL)
    return _S.world


def _state_dir(world: World) -> Path:
    return world.resolved_state_dir(_S.world_path or ".")


def _sleep(seconds: float) -> None:
    """Every simulated delay goes through here (tests record what was asked for)."""
    time.sleep(seconds)


def _sleep_latency(world: World, spec: AccountSpec | None) -> None:
    model = spec.latency if spec is not None and spec.latency is not None else world.latency
    seconds = model.sample(_LATENCY_RNG)
    if seconds > 0:
        _sleep(seconds)


def _call_faults(world: World, spec: AccountSpec | None, calls: Collection[str]) -> None:
    """Apply ipc_timeout / hang faults configured for this call."""
    if spec is None:
        return
    fault = faults.firing(spec, _state_dir(world), calls, faults.CALL_KINDS)
    if fault is None:
        return
    if fault.kind == "hang":
        faults.hang_forever()
    raise _Fail(IPC_TIMEOUT)


def _enter(call: str) -> tuple[World, AccountSpec]:
    """Common preamble of calls that need a logged-in account."""
    if not _S.initialized:
        raise _Fail(NO_IPC)
    world = _refresh_world()
    _sleep_latency(world, _S.account)
    _call_faults(world, _S.account, {call})
    if _S.account is None:
        raise _Fail(NOT_LOGGED_IN)
    return world, _S.account


def _view(world: World, spec: AccountSpec) -> BrokerView:
    return BrokerView(spec, world.seed, world.timeline_start_utc, world.effective_now())


def _no_kwargs(kwargs: dict[str, Any], allowed: Iterable[str] = ()) -> None:
    if set(kwargs) - set(allowed):
        raise _Fail(INVALID_PARAMS)


def _epoch(value: Any) -> int:
    """A date argument: datetime via ``.timestamp()`` (naive = host local time) or epoch int."""
    if isinstance(value, datetime):
        return int(value.timestamp())
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Fail(INVALID_PARAMS)
    return int(value)


def _date_range(args: tuple[Any, ...]) -> tuple[int, int]:
    if len(args) != 2:
        raise _Fail(INVALID_PARAMS)
    return _epoch(args[0]), _epoch(args[1])


def _group_match(symbol: str, group: str) -> bool:
    """MT5 group syntax: comma-separated globs, ``!`` excludes."""
    patterns = [p.strip() for p in group.split(",") if p.strip()]
    include = [p for p in patterns if not p.startswith("!")]
    exclude = [p[1:] for p in patterns if p.startswith("!")]
    if any(fnmatchcase(symbol, p) for p in exclude):
        return False
    return not include or any(fnmatchcase(symbol, p) for p in include)


def _do_login(login: Any, password: Any, server: Any, calls: Collection[str]) -> None:
    world = _refresh_world()
    _S.account = None
    _S.staged = _S.crosswire = False
    try:
        target = world.account(int(login), server if server else None)
    except (TypeError, ValueError):
        raise _Fail(INVALID_PARAMS) from None
    _sleep_latency(world, target)
    if target is None:
        raise _Fail(AUTH_FAILED)
    if target.login_delay_s > 0:
        _sleep(target.login_delay_s)
    _call_faults(world, target, calls)
    fault = faults.firing(target, _state_dir(world), calls, faults.LOGIN_KINDS)
    if fault is not None:
        raise _Fail(
            {"otp_required": OTP_REQUIRED, "init_failure": IPC_INIT_FAILED}.get(
                fault.kind, AUTH_FAILED
            )
        )
    if password != target.password:
        raise _Fail(AUTH_FAILED)
    _S.account = target
    quirks = target.quirks
    key = f"{target.server}-{target.login}"
    _S.staged = quirks.staged_history is not None and faults.consume(
        _state_dir(world), f"{key}-staged-history", quirks.staged_history.logins
    )
    _S.crosswire = quirks.crosswire_logins > 0 and faults.consume(
        _state_dir(world), f"{key}-crosswire", quirks.crosswire_logins
    )


# ---------------------------------------------------------------------- connection


@_api(False)
def initialize(
    path: str | None = None,
    *,
    login: int | None = None,
    password: str | None = None,
    server: str | None = None,
    timeout: int = 60_000,
    portable: bool = False,
    **kwargs: Any,
) -> bool:
    """Connect to the terminal (the world file); log in too when ``login`` is given."""
    _no_kwargs(kwargs)
    world_path = os.environ.get(WORLD_ENV)
    if not world_path or not os.path.isfile(world_path):
        _S.initialized, _S.account = False, None
        raise _Fail(NOT_FOUND_TERMINAL)
    # A path this machine can resolve must name a file, as on Windows; a Windows-style path
    # (C:\MT5\...) on Linux stands for an install the simulator cannot see, taken as present.
    if path is not None and os.path.isabs(path) and not os.path.isfile(path):
        _S.initialized, _S.account = False, None
        raise _Fail(PROCESS_CREATE_FAILED)
    world = _refresh_world()
    _S.initialized = True
    _S.terminal_path, _S.portable = path, bool(portable)
    if login is None:
        _sleep_latency(world, None)
        return True
    try:
        _do_login(login, password, server, {"initialize", "login"})
    except _Fail:
        _S.initialized = False
        raise
    return True


@_api(False)
def login(
    login: int,
    password: str | None = None,
    server: str | None = None,
    timeout: int = 60_000,
    **kwargs: Any,
) -> bool:
    """Switch the terminal to another account."""
    _no_kwargs(kwargs)
    if not _S.initialized:
        raise _Fail(NO_IPC)
    _do_login(login, password, server, {"login"})
    return True


def shutdown() -> None:
    """Close the connection; the next session must initialize (and log in) again."""
    _S.initialized = False
    _S.account = None
    _S.staged = _S.crosswire = False
    _S.error = SUCCESS


def last_error() -> tuple[int, str]:
    """``(code, message)`` of the last call."""
    return _S.error


@_api(None)
def version() -> tuple[int, int, str]:
    if not _S.initialized:
        raise _Fail(NO_IPC)
    return VERSION


@_api(None)
def terminal_info() -> TerminalInfo:
    if not _S.initialized:
        raise _Fail(NO_IPC)
    world = _refresh_world()
    _sleep_latency(world, _S.account)
    _call_faults(world, _S.account, {"terminal_info"})
    path = _S.terminal_path or DEFAULT_PATH
    folder = ntpath.dirname(path) if path.lower().endswith(".exe") else path
    data = folder if _S.portable else r"C:\Users\sim\AppData\Roaming\MetaQuotes\Terminal\SIM"
    return TerminalInfo(
        False,
        False,
        _S.account is not None,
        False,
        False,
        False,
        False,
        False,
        False,
        False,
        VERSION[1],
        100_000,
        0,
        25_000,
        0.0,
        0.0,
        _S.account.company if _S.account else "MetaQuotes Ltd.",
        "MetaTrader 5",
        "English",
        folder,
        data,
        r"C:\Users\sim\AppData\Roaming\MetaQuotes\Terminal\Common",
    )


# ---------------------------------------------------------------------- account & positions


_Presented = TypeVar("_Presented", TradeDeal, TradePosition)


def _present(spec: AccountSpec, record: _Presented) -> _Presented:
    """The broker's own symbol names and comment text on a deal or position (quirks
    ``symbol_names``, ``comment_suffix``); the model keeps the plain names it prices with."""
    quirks = spec.quirks
    if not quirks.symbol_names and not quirks.comment_suffix:
        return record
    return record._replace(
        symbol=quirks.symbol_names.get(record.symbol, record.symbol),
        comment=record.comment + quirks.comment_suffix,
    )


def _positions(world: World, spec: AccountSpec) -> list[TradePosition]:
    return [_present(spec, p) for p in _view(world, spec).positions()]


def _history(world: World, spec: AccountSpec, date_range: bool) -> list[TradeDeal]:
    """The deals the terminal shows now: visible at the broker, minus exits not yet shown
    (``late_close_s``) and, in a session still loading its history, what is not loaded yet
    (``staged_history``, date-range calls only)."""
    view = _view(world, spec)
    rows = view.deals_with_utc()
    quirks = spec.quirks
    if quirks.late_close_s > 0:
        shown_before = view.now_ms - int(quirks.late_close_s * 1000)
        rows = [
            (d, ms) for d, ms in rows
            if ms <= shown_before or d.entry not in (c.DEAL_ENTRY_OUT, c.DEAL_ENTRY_OUT_BY)
        ]
    staged = quirks.staged_history
    if date_range and _S.staged and staged is not None:
        if staged.mode == "older_than":
            loaded_until = view.now_ms - int(staged.hours * 3_600_000)
            rows = [(d, ms) for d, ms in rows if ms <= loaded_until]
        else:
            rows = rows[len(rows) - staged.newest:] if staged.newest else []
    return [_present(spec, d) for d, _ in rows]


@_api(None)
def account_info() -> AccountInfo:
    world, spec = _enter("account_info")
    return _view(world, spec).account_info()


@_api(None)
def positions_get(*args: Any, **kwargs: Any) -> tuple[TradePosition, ...]:
    """Open positions, optionally by ``symbol``, ``group`` (globs) or ``ticket``."""
    if args:
        raise _Fail(INVALID_PARAMS)
    _no_kwargs(kwargs, ("symbol", "group", "ticket"))
    world, spec = _enter("positions_get")
    rows = _positions(world, spec)
    if _S.crosswire:
        # Another terminal's account from here on: what a reconnect on a shared host can do.
        _S.crosswire = False
        _S.account = next((a for a in world.accounts if a.login != spec.login), spec)
    if "ticket" in kwargs:
        rows = [p for p in rows if p.ticket == kwargs["ticket"]]
    elif "symbol" in kwargs:
        rows = [p for p in rows if p.symbol == kwargs["symbol"]]
    elif "group" in kwargs:
        rows = [p for p in rows if _group_match(p.symbol, str(kwargs["group"]))]
    return tuple(rows)


@_api(None)
def positions_total() -> int:
    world, spec = _enter("positions_total")
    return len(_positions(world, spec))


@_api(None)
def orders_get(*args: Any, **kwargs: Any) -> tuple[TradeOrder, ...]:
    """Active pending orders: the simulated accounts trade at market only, so none."""
    if args:
        raise _Fail(INVALID_PARAMS)
    _no_kwargs(kwargs, ("symbol", "group", "ticket"))
    _enter("orders_get")
    return ()


@_api(None)
def orders_total() -> int:
    _enter("orders_total")
    return 0


# ---------------------------------------------------------------------- history


def _history_filter(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    time_of: Callable[[Any], int],
    symbol_of: Callable[[Any], str],
    order_of: Callable[[Any], int],
    position_of: Callable[[Any], int],
) -> Callable[[Any], bool]:
    """The row predicate of history_*_get: ticket= (order) / position= ignore the dates."""
    _no_kwargs(kwargs, ("group", "ticket", "position"))
    if "ticket" in kwargs:
        ticket = kwargs["ticket"]
        return lambda row: order_of(row) == ticket
    if "position" in kwargs:
        position = kwargs["position"]
        return lambda row: position_of(row) == position
    date_from, date_to = _date_range(args)
    group = kwargs.get("group")
    if group is None:
        return lambda row: date_from <= time_of(row) <= date_to
    return lambda row: (
        date_from <= time_of(row) <= date_to and _group_match(symbol_of(row), str(group))
    )


@_api(None)
def history_deals_get(*args: Any, **kwargs: Any) -> tuple[TradeDeal, ...]:
    """Deals with ``date_from <= time <= date_to`` (server epoch); dates are positional."""
    keep = _history_filter(
        args,
        kwargs,
        lambda d: d.time,
        lambda d: d.symbol,
        lambda d: d.order,
        lambda d: d.position_id,
    )
    world, spec = _enter("history_deals_get")
    date_range = not ({"ticket", "position"} & set(kwargs))
    rows = [d for d in _history(world, spec, date_range) if keep(d)]
    if date_range:
        cap = spec.quirks.max_history_rows
        if cap is not None:
            rows = rows[:cap]  # a large answer cut short, silently (the oldest rows kept)
        bad = faults.firing(spec, _state_dir(world), {"history_deals_get"}, {"malformed_deals"})
        if bad is not None:
            rows.extend(faults.malformed_deals(spec, _view(world, spec).server_now()))
    return tuple(rows)


@_api(None)
def history_deals_total(*args: Any, **kwargs: Any) -> int:
    _no_kwargs(kwargs)
    date_from, date_to = _date_range(args)
    world, spec = _enter("history_deals_total")
    return sum(1 for d in _history(world, spec, True) if date_from <= d.time <= date_to)


@_api(None)
def history_orders_get(*args: Any, **kwargs: Any) -> tuple[TradeOrder, ...]:
    """Filled orders with ``date_from <= time_setup <= date_to``; ``ticket=`` is the order."""
    keep = _history_filter(
        args,
        kwargs,
        lambda o: o.time_setup,
        lambda o: o.symbol,
        lambda o: o.ticket,
        lambda o: o.position_id,
    )
    world, spec = _enter("history_orders_get")
    return tuple(o for o in _view(world, spec).orders() if keep(o))


@_api(None)
def history_orders_total(*args: Any, **kwargs: Any) -> int:
    _no_kwargs(kwargs)
    date_from, date_to = _date_range(args)
    world, spec = _enter("history_orders_total")
    return sum(1 for o in _view(world, spec).orders() if date_from <= o.time_setup <= date_to)


# ---------------------------------------------------------------------- market data & trading


@_api(None)
def symbols_total() -> int:
    _, spec = _enter("symbols_total")
    return len(spec.symbols)


@_api(False)
def symbol_select(symbol: str, enable: bool = True) -> bool:
    _, spec = _enter("symbol_select")
    if symbol not in spec.symbols:
        raise _Fail(NOT_FOUND)
    return True


def _unsupported(name: str, failure: Any) -> Callable[..., Any]:
    """A function the simulator does not model: the usual guards, then ``Unsupported``."""

    @_api(failure)
    def fn(*args: Any, **kwargs: Any) -> Any:
        if not _S.initialized:
            raise _Fail(NO_IPC)
        raise _Fail(UNSUPPORTED)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"Not simulated: returns {failure!r} with last_error() == {UNSUPPORTED}."
    return fn


copy_rates_from = _unsupported("copy_rates_from", None)
copy_rates_from_pos = _unsupported("copy_rates_from_pos", None)
copy_rates_range = _unsupported("copy_rates_range", None)
copy_ticks_from = _unsupported("copy_ticks_from", None)
copy_ticks_range = _unsupported("copy_ticks_range", None)
market_book_add = _unsupported("market_book_add", False)
market_book_get = _unsupported("market_book_get", None)
market_book_release = _unsupported("market_book_release", False)
order_calc_margin = _unsupported("order_calc_margin", None)
order_calc_profit = _unsupported("order_calc_profit", None)
order_check = _unsupported("order_check", None)
order_send = _unsupported("order_send", None)
symbol_info = _unsupported("symbol_info", None)
symbol_info_tick = _unsupported("symbol_info_tick", None)
symbols_get = _unsupported("symbols_get", None)
