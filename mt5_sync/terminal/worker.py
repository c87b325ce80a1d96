"""Terminal worker process: owns one terminal connection and serves fetches over stdin/stdout.

The MetaTrader5 package is one connection per process, and a hung terminal can block a call
forever, so each slot's terminal is driven from its own OS process. The parent (``pool.py``)
enforces the hard timeout from outside and kills this process when it stops answering.

Protocol: one JSON object per line. First the worker announces itself once it has imported
the MetaTrader5 module: ``{"ready": true, "pid": ..., "module": ...}`` (or ``{"ready": false,
"error": {...}}``), so the parent can tell a slow interpreter start from a hung terminal.
Requests ``{"op": "fetch", "request": {...}}``, ``{"op": "ping"}``, ``{"op": "shutdown"}``;
replies ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {"type", "code",
"message", "mt5_code"}}``.

The investor password arrives in a fetch request on stdin and goes to ``login`` only: error
replies are scrubbed of it, and nothing here logs a request.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
from types import ModuleType
from typing import IO, Any

from mt5_sync import errors
from mt5_sync.contracts import Credentials, FetchRequest
from mt5_sync.terminal.session import TerminalSession

BACKEND_MODULES = {"metatrader5": "MetaTrader5", "simulated": "mt5_sync.mt5sim"}


def load_mt5_module(backend: str) -> ModuleType:
    """The one import seam for the MetaTrader5 API.

    ``MT5SYNC_MT5_MODULE`` may name a stand-in module (used to run the real adapter path
    against the simulator on Linux); otherwise the backend decides.
    """
    name = os.environ.get("MT5SYNC_MT5_MODULE") or BACKEND_MODULES[backend]
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise errors.TerminalUnavailable(
            f"cannot import {name!r} for the {backend} backend: {exc}. The MetaTrader5 "
            "package exists for Windows only; elsewhere use MT5SYNC_TERMINAL_BACKEND=simulated",
            code="backend_unavailable",
        ) from exc


def _parse_request(data: dict[str, Any]) -> FetchRequest:
    creds = data["credentials"]
    return FetchRequest(
        account_id=data["account_id"],
        credentials=Credentials(
            login=int(creds["login"]), server=str(creds["server"]), password=creds["password"]
        ),
        date_from=data.get("date_from"),
        date_to=data.get("date_to"),
        fetch_positions=bool(data.get("fetch_positions", True)),
        as_of_utc=data.get("as_of_utc"),
    )


REDACTED = "***"


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, REDACTED) if secret else text


def _error_reply(exc: BaseException, secret: str | None = None) -> dict[str, Any]:
    if isinstance(exc, errors.SyncError):
        return {
            "ok": False,
            "error": {
                "type": type(exc).__name__,
                "code": exc.code,
                "message": _redact(exc.message, secret),
                "mt5_code": getattr(exc, "mt5_code", None),
            },
        }
    return {
        "ok": False,
        "error": {
            "type": "TerminalError",
            "code": "terminal_worker_error",
            "message": _redact(f"{type(exc).__name__}: {exc}", secret),
            "mt5_code": None,
        },
    }


def _password_of(message: dict[str, Any]) -> str | None:
    try:
        password = message["request"]["credentials"]["password"]
    except (KeyError, TypeError):
        return None
    return password if isinstance(password, str) and password else None


def serve(session: TerminalSession, inbox: IO[str], outbox: IO[str]) -> None:
    """Answer requests until EOF or ``shutdown``; the terminal connection is closed either way."""
    try:
        for line in inbox:
            if not line.strip():
                continue
            secret: str | None = None
            try:
                message = json.loads(line)
                op = message.get("op")
                secret = _password_of(message)
                if op == "fetch":
                    reply: dict[str, Any] = {
                        "ok": True,
                        "result": session.fetch(_parse_request(message["request"])).to_dict(),
                    }
                elif op == "ping":
                    reply = {"ok": True, "result": {"pid": os.getpid()}}
                elif op == "shutdown":
                    session.shutdown()
                    outbox.write(json.dumps({"ok": True, "result": None}) + "\n")
                    outbox.flush()
                    return
                else:
                    reply = _error_reply(ValueError(f"unknown op {op!r}"))
            except Exception as exc:
                reply = _error_reply(exc, secret)
            outbox.write(json.dumps(reply, allow_nan=True, default=str) + "\n")
            outbox.flush()
    finally:
        session.shutdown()


def _exit_on_signal(signum: int, frame: object) -> None:
    # Turn SIGTERM (and SIGBREAK on Windows) into SystemExit so serve()'s finally runs and
    # the terminal connection is shut down cleanly.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=sorted(BACKEND_MODULES), required=True)
    parser.add_argument("--path", default=None, help="terminal64.exe of this slot")
    parser.add_argument("--no-portable", action="store_true")
    parser.add_argument("--timeout-ms", type=int, default=30_000)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for name in ("SIGTERM", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _exit_on_signal)
    # The protocol owns stdout; anything else printed (by us or a library) goes to stderr.
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout = sys.stderr
    try:
        mt5 = load_mt5_module(args.backend)
    except errors.SyncError as exc:
        # Say so at once, then answer every request with the import failure.
        failure = _error_reply(exc)
        protocol_out.write(json.dumps({"ready": False, "error": failure["error"]}) + "\n")
        protocol_out.flush()
        for line in sys.stdin:
            if line.strip():
                protocol_out.write(json.dumps(failure) + "\n")
                protocol_out.flush()
        return 1
    protocol_out.write(
        json.dumps({"ready": True, "pid": os.getpid(), "module": mt5.__name__}) + "\n"
    )
    protocol_out.flush()
    session = TerminalSession(
        mt5, terminal_path=args.path, portable=not args.no_portable, timeout_ms=args.timeout_ms
    )
    serve(session, sys.stdin, protocol_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
