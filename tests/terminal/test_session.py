"""The MetaTrader5 adapter in-process, against the simulated module and small stubs.

Covers the connection life cycle (one initialize per slot, one login per account, re-init
after IPC faults, shutdown), every branch of the error classification, ``None`` results,
the post-login account check, and the worker protocol (ready line, redaction, shutdown).
"""

from __future__ import annotations

import io
import json
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mt5_sync import errors
from mt5_sync.contracts import Credentials, FetchRequest
from mt5_sync.mt5sim.world import WORLD_ENV, World, build_world
from mt5_sync.servertime import ServerTimeRule
from mt5_sync.terminal import worker
from mt5_sync.terminal.session import (
    TRANSIENT_PART_CODES,
    TerminalSession,
    classify_error,
)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
IPC_ONCE = {"kind": "ipc_timeout", "times": 1}


class Recorder:
    """The simulated module behind a proxy that counts calls (and can override some)."""

    def __init__(self, module: Any, **overrides: Any) -> None:
        self._module = module
        self._overrides = overrides
        self.calls: Counter[str] = Counter()
        self.__name__ = "recorder"

    def __getattr__(self, name: str) -> Any:
        target = self._overrides.get(name) or getattr(self._module, name)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return target(*args, **kwargs)

        return call


@pytest.fixture
def sim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The simulated MetaTrader5 module, in this process, over a four-account world."""
    import mt5_sync.mt5sim as mt5

    def make(faults: dict[int, list[dict[str, Any]]] | None = None) -> tuple[Any, World]:
        world = build_world(
            4, seed=3, now_utc=NOW, timeline_start_utc=NOW - timedelta(days=8),
            faults=faults or {}, state_dir=str(tmp_path / "state"),
        )
        path = world.save(tmp_path / "world.json")
        monkeypatch.setenv(WORLD_ENV, str(path))
        return mt5, world

    yield make
    mt5.shutdown()


def request(world: World, index: int, password: str | None = None) -> FetchRequest:
    spec = world.accounts[index]
    rule = ServerTimeRule.parse(spec.time_rule)
    return FetchRequest(
        account_id=f"acc-{index}",
        credentials=Credentials(spec.login, spec.server, password or spec.password),
        date_from=rule.to_server_epoch(NOW - timedelta(days=30)),
        date_to=rule.to_server_epoch(NOW + timedelta(days=1)),
    )


# ---------------------------------------------------------------- connection life cycle


def test_one_initialize_per_slot_one_login_per_account(sim):
    mt5, world = sim()
    rec = Recorder(mt5)
    session = TerminalSession(rec, terminal_path=r"C:\MT5\slot1\terminal64.exe")
    for index in (0, 1, 2, 0):
        result = session.fetch(request(world, index))
        assert result.errors == [] and result.account_info["login"] == world.accounts[index].login
    assert rec.calls["initialize"] == 1 and session.initializations == 1
    assert rec.calls["login"] == 4
    assert session.logged_in == (world.accounts[0].login, world.accounts[0].server)
    session.shutdown()
    assert rec.calls["shutdown"] == 1 and not session.initialized


def test_initialize_gets_path_portable_and_timeout(sim):
    mt5, world = sim()
    seen: dict[str, Any] = {}

    def initialize(**kwargs: Any) -> bool:
        seen.update(kwargs)
        return mt5.initialize(**kwargs)

    session = TerminalSession(
        Recorder(mt5, initialize=initialize), terminal_path=r"D:\t\terminal64.exe",
        portable=True, timeout_ms=12_345,
    )
    session.fetch(request(world, 0))
    assert seen == {"path": r"D:\t\terminal64.exe", "portable": True, "timeout": 12_345}


def test_wrong_password_is_permanent_and_keeps_the_connection(sim):
    mt5, world = sim()
    rec = Recorder(mt5)
    session = TerminalSession(rec)
    with pytest.raises(errors.AuthenticationFailed) as caught:
        session.fetch(request(world, 1, password="not-the-password"))
    assert caught.value.mt5_code == -6 and caught.value.code == "auth_failed"
    assert not caught.value.transient
    assert "not-the-password" not in caught.value.message
    assert session.initialized and session.logged_in is None  # no reset for an auth failure
    assert session.fetch(request(world, 0)).errors == []
    assert rec.calls["initialize"] == 1


def test_otp_required_is_permanent_with_a_clear_message(sim):
    mt5, world = sim({2: [{"kind": "otp_required", "call": "login"}]})
    with pytest.raises(errors.AuthenticationFailed) as caught:
        TerminalSession(mt5).fetch(request(world, 2))
    assert caught.value.code == "auth_otp_required" and not caught.value.transient
    assert "OTP" in caught.value.message and "investor password" in caught.value.message


def test_ipc_timeout_in_history_resets_and_next_fetch_initialises_again(sim):
    mt5, world = sim({3: [{**IPC_ONCE, "call": "history_deals_get"}]})
    rec = Recorder(mt5)
    session = TerminalSession(rec)
    first = session.fetch(request(world, 3))
    assert first.positions is not None and first.deals is None
    [error] = first.errors
    assert (error.part, error.code, error.mt5_code) == ("history", "ipc_timeout", -10005)
    assert error.code in TRANSIENT_PART_CODES
    assert not session.initialized  # the fault dropped the connection
    second = session.fetch(request(world, 3))
    assert second.errors == [] and second.deals
    assert rec.calls["initialize"] == 2 and rec.calls["shutdown"] == 1


def test_ipc_fault_in_positions_reconnects_for_the_history(sim):
    mt5, world = sim({0: [{**IPC_ONCE, "call": "positions_get"}]})
    rec = Recorder(mt5)
    result = TerminalSession(rec).fetch(request(world, 0))
    [error] = result.errors
    assert (error.part, error.code) == ("positions", "ipc_timeout")
    assert result.positions is None and result.deals  # history came after a re-login
    assert rec.calls["initialize"] == 2 and rec.calls["login"] == 2


def test_ipc_fault_on_login_is_transient_and_resets(sim):
    mt5, world = sim({1: [{**IPC_ONCE, "call": "login"}]})
    session = TerminalSession(mt5)
    with pytest.raises(errors.TerminalUnavailable) as caught:
        session.fetch(request(world, 1))
    assert caught.value.transient and caught.value.code == "ipc_timeout"
    assert not session.initialized
    assert session.fetch(request(world, 1)).errors == []


def test_cross_wired_terminal_is_reset(sim, monkeypatch):
    monkeypatch.setenv("MT5SIM_CROSSWIRED_LOGINS", "")
    import tests.terminal.crosswired_mt5 as crosswired

    _, world = sim()
    session = TerminalSession(crosswired)
    with pytest.raises(errors.AccountMismatch, match="reports login"):
        session.fetch(request(world, 0))
    assert not session.initialized and session.logged_in is None


def test_selective_cross_wiring_only_hits_the_listed_logins(sim, monkeypatch):
    import tests.terminal.crosswired_mt5 as crosswired

    _, world = sim()
    monkeypatch.setenv("MT5SIM_CROSSWIRED_LOGINS", str(world.accounts[1].login))
    session = TerminalSession(crosswired)
    assert session.fetch(request(world, 0)).errors == []
    with pytest.raises(errors.AccountMismatch):
        session.fetch(request(world, 1))


def test_server_mismatch_is_detected_too(sim):
    mt5, world = sim()

    def account_info() -> Any:
        return mt5.account_info()._replace(server="Other-Server")

    with pytest.raises(errors.AccountMismatch, match="Other-Server"):
        TerminalSession(Recorder(mt5, account_info=account_info)).fetch(request(world, 0))


# ---------------------------------------------------------------- None results


def _stub(**overrides: Any) -> SimpleNamespace:
    """A terminal where everything works unless overridden."""
    info = SimpleNamespace(login=7, server="S", _asdict=lambda: {"login": 7, "server": "S"})
    base: dict[str, Any] = {
        "initialize": lambda **kw: True,
        "login": lambda *a, **kw: True,
        "account_info": lambda: info,
        "positions_get": lambda: (),
        "history_deals_get": lambda *a, **kw: (),
        "history_deals_total": lambda *a, **kw: 0,
        "last_error": lambda: (1, "Success"),
        "shutdown": lambda: None,
    }
    base.update(overrides)
    return SimpleNamespace(**base)


STUB_REQUEST = FetchRequest("a", Credentials(7, "S", "pw-secret"), 0, 10)


def test_none_with_success_code_is_still_an_error():
    stub = _stub(positions_get=lambda: None)
    result = TerminalSession(stub).fetch(STUB_REQUEST)
    [error] = result.errors
    assert error.code == "no_result" and error.mt5_code == 1
    assert "positions_get returned no result" in error.message
    assert result.deals == []  # reconnected, then the history worked


def test_account_info_none_after_login_is_an_error():
    stub = _stub(account_info=lambda: None, last_error=lambda: (-10004, "No IPC connection"))
    with pytest.raises(errors.TerminalUnavailable) as caught:
        TerminalSession(stub).fetch(STUB_REQUEST)
    assert caught.value.mt5_code == -10004 and caught.value.code == "ipc_error"


def test_history_none_by_position_is_an_error():
    deal = SimpleNamespace(
        ticket=2, _asdict=lambda: {"ticket": 2, "order": 2, "time": 5, "time_msc": 5000,
                                   "type": 1, "entry": 1, "position_id": 9, "volume": 0.1})

    def history(*args: Any, **kwargs: Any) -> Any:
        return None if "position" in kwargs else (deal,)

    stub = _stub(history_deals_get=history, last_error=lambda: (-4, "Terminal: Not found"))
    result = TerminalSession(stub).fetch(STUB_REQUEST)
    [error] = result.errors
    assert error.part == "history" and error.mt5_code == -4
    assert "position=9" in error.message


def test_last_error_that_raises_is_still_reported():
    def broken() -> Any:
        raise RuntimeError("terminal gone")

    stub = _stub(login=lambda *a, **kw: False, last_error=broken)
    with pytest.raises(errors.TerminalError) as caught:
        TerminalSession(stub).fetch(STUB_REQUEST)
    assert caught.value.mt5_code == -1 and "last_error() unavailable" in caught.value.message


@pytest.mark.parametrize(("message", "cls", "err_code"), [
    ("IPC initialize failed, MetaTrader 5 x64 not found", errors.TerminalError,
     "terminal_misconfigured"),
    ("IPC initialize failed, Process create failed", errors.TerminalError,
     "terminal_misconfigured"),
    ("IPC initialize failed", errors.TerminalUnavailable, "ipc_error"),
])
def test_initialize_failure_names_the_terminal(message, cls, err_code):
    stub = _stub(initialize=lambda **kw: False, last_error=lambda: (-10003, message))
    with pytest.raises(cls) as caught:
        TerminalSession(stub, terminal_path=r"C:\MT5\s1\terminal64.exe").fetch(STUB_REQUEST)
    assert r"C:\MT5\s1\terminal64.exe" in caught.value.message
    assert caught.value.code == err_code
    assert caught.value.transient is (err_code == "ipc_error")


def test_shutdown_that_raises_does_not_hide_the_fault():
    def boom() -> None:
        raise OSError("pipe closed")

    stub = _stub(positions_get=lambda: None, last_error=lambda: (-10002, "receive failed"),
                 shutdown=boom)
    result = TerminalSession(stub).fetch(STUB_REQUEST)
    assert result.errors[0].code == "ipc_error"


@pytest.mark.parametrize(
    ("code", "message", "cls", "err_code", "transient"),
    [
        (-6, "Terminal: Authorization failed", errors.AuthenticationFailed, "auth_failed", False),
        (-6, "Authorization failed: OTP required", errors.AuthenticationFailed,
         "auth_otp_required", False),
        (-1, "Certificate required for this account", errors.AuthenticationFailed,
         "auth_otp_required", False),
        (-10000, "internal fail", errors.TerminalUnavailable, "ipc_error", True),
        (-10001, "send failed", errors.TerminalUnavailable, "ipc_error", True),
        (-10002, "receive failed", errors.TerminalUnavailable, "ipc_error", True),
        (-10003, "IPC initialize failed", errors.TerminalUnavailable, "ipc_error", True),
        (-10003, "IPC initialize failed, Process create failed", errors.TerminalError,
         "terminal_misconfigured", False),
        (-10004, "No IPC connection", errors.TerminalUnavailable, "ipc_error", True),
        (-10005, "IPC timeout", errors.TerminalUnavailable, "ipc_timeout", True),
        (1, "Success", errors.TerminalUnavailable, "no_result", True),
        (-2, "Invalid parameters", errors.InvalidRequest, "invalid_params", False),
        (-4, "Terminal: Not found", errors.TerminalError, "terminal_error", False),
        (-5, "Invalid version", errors.TerminalError, "terminal_error", False),
    ],
)
def test_classification(code, message, cls, err_code, transient):
    error = classify_error(code, message, "login")
    assert type(error) is cls and error.code == err_code and error.transient is transient
    assert str(code) in error.message


def test_ipc_message_mentioning_a_certificate_stays_transient():
    error = classify_error(-10004, "No IPC connection (certificate store busy)", "initialize")
    assert isinstance(error, errors.TerminalUnavailable)


# ---------------------------------------------------------------- the worker protocol


def _serve(stub: Any, *messages: dict[str, Any]) -> list[dict[str, Any]]:
    out = io.StringIO()
    session = TerminalSession(stub)
    worker.serve(session, io.StringIO("".join(json.dumps(m) + "\n" for m in messages)), out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _fetch_message(password: str) -> dict[str, Any]:
    return {"op": "fetch", "request": {
        "account_id": "a", "credentials": {"login": 7, "server": "S", "password": password},
        "date_from": None, "date_to": None}}


def test_worker_scrubs_the_password_from_error_replies():
    def login(login: int, password: str, **kw: Any) -> bool:
        raise ValueError(f"bad password {password!r} for {login}")

    shutdowns = []
    stub = _stub(login=login, shutdown=lambda: shutdowns.append(1))
    [reply] = _serve(stub, _fetch_message("hunter2-secret"))
    assert not reply["ok"] and "hunter2-secret" not in json.dumps(reply)
    assert worker.REDACTED in reply["error"]["message"]
    assert reply["error"]["code"] == "terminal_worker_error"


def test_worker_shuts_the_terminal_down_on_eof_and_on_request():
    shutdowns: list[int] = []
    stub = _stub(shutdown=lambda: shutdowns.append(1))
    replies = _serve(stub, _fetch_message("pw"), {"op": "ping"}, {"op": "nope"})
    assert [r["ok"] for r in replies] == [True, True, False]
    assert "unknown op" in replies[2]["error"]["message"]
    assert shutdowns == [1]  # EOF: the connection was closed
    replies = _serve(_stub(shutdown=lambda: shutdowns.append(2)), {"op": "shutdown"})
    assert replies == [{"ok": True, "result": None}] and shutdowns == [1]  # not initialised


def test_import_seam_override_and_missing_package(monkeypatch):
    monkeypatch.setenv("MT5SYNC_MT5_MODULE", "tests.terminal.crosswired_mt5")
    assert worker.load_mt5_module("metatrader5").__name__ == "tests.terminal.crosswired_mt5"
    monkeypatch.delenv("MT5SYNC_MT5_MODULE")
    if sys.platform != "win32":
        with pytest.raises(errors.TerminalUnavailable) as caught:
            worker.load_mt5_module("metatrader5")
        assert caught.value.code == "backend_unavailable"
