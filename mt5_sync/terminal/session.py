"""The MetaTrader5 adapter: everything that talks to the ``MetaTrader5`` API lives here.

It is written against the real package's contract (reference/metatrader5-5.0.6231.json) and is
handed the module to use, so the very same code drives a real terminal on Windows and the
simulated one (``mt5_sync.mt5sim``) everywhere else. It runs inside a terminal worker
process (see ``worker.py``): one process, one terminal, one logged-in account at a time.

Connection life cycle of one slot:

* ``initialize(path=<terminal64.exe>, portable=True, timeout=...)`` once, on the first fetch;
  the connection is then reused for every account the slot syncs (one ``login`` per account);
* after an IPC fault (-10000..-10005) or an unexplained ``None`` the connection is dropped
  (``shutdown``) and initialised again before the next call, also within one fetch;
* ``shutdown()`` when the worker process exits (see ``worker.py``).

Every call that can fail is checked: ``False``/``None`` results become an error carrying
``last_error()``'s code and message, never a silent empty result; after each login the
terminal must report the login and server asked for (a cross-wired terminal is reset).
The investor password is passed to ``login`` and nowhere else: it is not kept, logged or
put into any error message.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

from mt5_sync.contracts import Credentials, FetchRequest, FetchResult, PartError
from mt5_sync.deal_sets import positions_needing_history
from mt5_sync.errors import (
    AccountMismatch,
    AuthenticationFailed,
    InvalidRequest,
    SyncError,
    TerminalError,
    TerminalUnavailable,
)

log = logging.getLogger(__name__)

RES_S_OK = 1
RES_E_FAIL = -1
RES_E_INVALID_PARAMS = -2
RES_E_AUTH_FAILED = -6
IPC_CODES = range(-10005, -9999)  # -10005 .. -10000 (RES_E_INTERNAL_FAIL_*)
IPC_TIMEOUT = -10005
IPC_INIT = -10003
_BAD_PATH_MARKERS = ("process create failed", "x64 not found")
_OTP_MARKERS = ("otp", "one-time", "one time", "certificate")

#: Part-error codes after which a whole fetch may succeed if tried again.
TRANSIENT_PART_CODES = frozenset({"ipc_timeout", "ipc_error", "no_result"})


def classify_error(code: int, message: str, during: str) -> SyncError:
    """Turn ``last_error()`` into our failure vocabulary (this decides what is retried).

    * -6, or any message asking for OTP/a certificate: permanent (never retried);
    * -10003 "Process create failed" / "x64 not found": the terminal path is wrong, a
      configuration error of the host, never retried (DESIGN.md, real terminals' failure modes);
    * -10000..-10005 (IPC send/receive/init/connect/timeout): transient;
    * ``RES_S_OK`` although the call failed (``None`` with no error): transient ``no_result``;
    * -2 invalid parameters: a bug, not retried; anything else: a terminal error, not retried.
    """
    text = f"{during} failed: {message} ({code})"
    lowered = message.lower()
    if code not in IPC_CODES and any(marker in lowered for marker in _OTP_MARKERS):
        return AuthenticationFailed(
            f"{text}; the account needs OTP or a certificate, which the MetaTrader5 API "
            "cannot provide: use an investor password without OTP",
            mt5_code=code,
            code="auth_otp_required",
        )
    if code == RES_E_AUTH_FAILED:
        return AuthenticationFailed(
            f"{text}; check the login, the investor password and the server name",
            mt5_code=code,
        )
    if code == IPC_INIT and any(m in lowered for m in _BAD_PATH_MARKERS):
        return TerminalError(
            f"{text}; check MT5SYNC_TERMINAL_PATHS on this host: each entry must be an "
            "installed terminal64.exe", mt5_code=code, code="terminal_misconfigured",
        )
    if code in IPC_CODES:
        return TerminalUnavailable(
            text, mt5_code=code, code="ipc_timeout" if code == IPC_TIMEOUT else "ipc_error"
        )
    if code == RES_S_OK:
        return TerminalUnavailable(
            f"{during} returned no result although last_error() reports {message!r} ({code})",
            mt5_code=code,
            code="no_result",
        )
    if code == RES_E_INVALID_PARAMS:
        return InvalidRequest(text, code="invalid_params")
    return TerminalError(text, mt5_code=code)


class TerminalSession:
    """A connection to one terminal, reused across the accounts this slot syncs."""

    def __init__(
        self,
        mt5: ModuleType,
        *,
        terminal_path: str | None = None,
        portable: bool = True,
        timeout_ms: int = 30_000,
    ) -> None:
        self._mt5 = mt5
        self._path = terminal_path
        self._portable = portable
        self._timeout_ms = timeout_ms
        self._initialized = False
        self._logged_in: tuple[int, str] | None = None
        self.initializations = 0  # how many times this slot connected (reuse is visible)

    @property
    def initialized(self) -> bool:
        return self._initialized

    @property
    def logged_in(self) -> tuple[int, str] | None:
        return self._logged_in

    # ------------------------------------------------------------------ lifecycle

    def _last_error(self) -> tuple[int, str]:
        """``last_error()``, made total: a dead terminal may fail to say what went wrong."""
        try:
            code, message = self._mt5.last_error()
            return int(code), str(message)
        except Exception as exc:
            return RES_E_FAIL, f"last_error() unavailable ({type(exc).__name__})"

    def _fail(self, during: str) -> SyncError:
        code, message = self._last_error()
        error = classify_error(code, message, during)
        if isinstance(error, TerminalUnavailable):
            self.reset()  # IPC faults leave the connection unusable: re-initialise next time
        return error

    def ensure_initialized(self) -> None:
        if self._initialized:
            return
        kwargs: dict[str, Any] = {"timeout": self._timeout_ms}
        if self._path:
            kwargs.update(path=self._path, portable=self._portable)
        if not self._mt5.initialize(**kwargs):
            error = self._fail("initialize")
            if isinstance(error, TerminalError) and self._path:
                error = type(error)(
                    f"{error.message}; terminal {self._path}",
                    mt5_code=error.mt5_code,
                    code=error.code,
                )
            raise error
        self._initialized = True
        self.initializations += 1

    def reset(self) -> None:
        """Drop the connection; the next call initialises again (after faults, mismatches)."""
        if self._initialized:
            try:
                self._mt5.shutdown()
            except Exception:  # a dead terminal may not even shut down cleanly
                log.debug("shutdown after fault raised", exc_info=True)
        self._initialized = False
        self._logged_in = None

    def shutdown(self) -> None:
        """Close the connection for good (the worker is exiting)."""
        self.reset()

    def login(self, credentials: Credentials) -> Any:
        """Log in (or stay logged in) and prove the terminal holds the account asked for."""
        self.ensure_initialized()
        self._logged_in = None
        ok = self._mt5.login(
            credentials.login,
            password=credentials.password,
            server=credentials.server,
            timeout=self._timeout_ms,
        )
        if not ok:
            raise self._fail("login")
        info = self._mt5.account_info()
        if info is None:
            raise self._fail("account_info")
        if int(info.login) != credentials.login or str(info.server) != credentials.server:
            self.reset()
            raise AccountMismatch(
                f"terminal reports login {info.login} on {info.server!r} after logging in to "
                f"{credentials.login} on {credentials.server!r}; the slot was reset"
            )
        self._logged_in = (credentials.login, credentials.server)
        return info

    # ------------------------------------------------------------------ the fetch

    def fetch(self, request: FetchRequest) -> FetchResult:
        """Account info, then open positions, then deals — in that order on purpose.

        A position that closes between the two reads is then absent from the positions and
        present, closed, in the deals; the reverse order could lose it for a cycle.
        Login/auth failures raise; a failing later part is reported in ``errors`` (after an
        IPC fault the connection is re-established, with a fresh login, for the next part).
        """
        started = time.monotonic()
        # The cursor's moment is the planner's (one clock for the product, see mt5_sync.clock).
        # It precedes every read below, so the cursor never claims history the fetch missed.
        fetched_at = request.as_of_utc or datetime.now(UTC).isoformat()
        info = self.login(request.credentials)
        result = FetchResult(
            account_id=request.account_id,
            login=request.credentials.login,
            server=request.credentials.server,
            fetched_at_utc=fetched_at,
            account_info=info._asdict(),
            positions=None,
            deals=None,
        )
        if request.fetch_positions:
            try:
                result.positions = self._positions()
            except TerminalError as exc:
                result.errors.append(_part_error("positions", exc))
        if request.date_from is not None and request.date_to is not None:
            try:
                self._reconnect(request.credentials)
                result.deals = self._deals(request.date_from, request.date_to)
                result.deals_before_window = self._deals_before(request.date_from)
            except TerminalError as exc:
                result.errors.append(_part_error("history", exc))
        self._still_the_same_account(request.credentials)
        result.terminal_ms = int((time.monotonic() - started) * 1000)
        return result

    def _still_the_same_account(self, credentials: Credentials) -> None:
        """Ask ``account_info()`` again at the end of the fetch: with several terminals on one
        host a reconnect can leave this process reading another terminal's account mid-fetch
        (DESIGN.md, "Real terminals are messier"). Then nothing of the fetch can be trusted:
        it is discarded (the slot is reset; AccountMismatch is transient, so it is retried)."""
        if self._logged_in is None:  # a part failed and dropped the connection: checked on login
            return
        info = self._mt5.account_info()
        if info is None:
            raise self._fail("account_info (end of fetch)")
        if int(info.login) != credentials.login or str(info.server) != credentials.server:
            self.reset()
            raise AccountMismatch(
                f"terminal reports login {info.login} on {info.server!r} at the end of the fetch "
                f"of {credentials.login} on {credentials.server!r}: the fetch was discarded and "
                "the slot reset"
            )

    def _reconnect(self, credentials: Credentials) -> None:
        """After a fault dropped the connection mid-fetch, connect and log in again."""
        if self._logged_in != (credentials.login, credentials.server):
            self.login(credentials)

    def _positions(self) -> list[dict[str, Any]]:
        rows = self._mt5.positions_get()
        if rows is None:
            raise self._fail("positions_get")
        return [p._asdict() for p in rows]

    def _deals_before(self, date_from: int) -> int | None:
        """How many deals the terminal holds before the window (None: it would not say)."""
        if date_from <= 0:
            return 0
        total = self._mt5.history_deals_total(0, date_from - 1)
        return None if total is None else int(total)

    def _window(self, date_from: int, date_to: int) -> list[Any]:
        """Every deal in [date_from, date_to] (server epoch seconds, both ends included).

        A terminal can cut a large answer short without an error, so the rows are counted
        against ``history_deals_total`` for the same window; fewer rows than that and the
        window is read again in two halves, down to single seconds.
        """
        rows = self._mt5.history_deals_get(date_from, date_to)
        if rows is None:
            raise self._fail("history_deals_get")
        total = self._mt5.history_deals_total(date_from, date_to)
        if total is None:
            raise self._fail("history_deals_total")
        if len(rows) >= int(total):
            return list(rows)
        if date_to <= date_from:
            raise TerminalError(
                f"history_deals_get returned {len(rows)} of {total} deals at server time "
                f"{date_from}: history truncated"
            )
        middle = (date_from + date_to) // 2
        return self._window(date_from, middle) + self._window(middle + 1, date_to)

    def _deals(self, date_from: int, date_to: int) -> list[dict[str, Any]]:
        deals = {int(d.ticket): d._asdict() for d in self._window(date_from, date_to)}
        # A trade closed inside the window may have opened before it: read the rest of each
        # such position by id (position= ignores dates) so trades are never half-built.
        for position_id in positions_needing_history(deals.values()):
            more = self._mt5.history_deals_get(position=position_id)
            if more is None:
                raise self._fail(f"history_deals_get(position={position_id})")
            for d in more:
                deals.setdefault(int(d.ticket), d._asdict())
        return list(deals.values())


def _part_error(part: str, exc: TerminalError) -> PartError:
    return PartError(part=part, code=exc.code, message=exc.message, mt5_code=exc.mt5_code)
