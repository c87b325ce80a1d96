"""The terminal gateway: a pool of terminal worker processes, one per terminal slot.

``TerminalPool.fetch(request)`` is the single interface the sync uses, whatever the backend:
it borrows a free slot, sends the request to that slot's worker process and waits at most
``timeout_s``. A worker that does not answer in time is killed (the hard timeout is enforced
here, outside the process that talks to the terminal) and replaced on the slot's next use.

Thread-safe and blocking on purpose: async callers run it in :attr:`executor`, a thread pool
as wide as the slot count (the default asyncio executor is only ``cpu + 4`` wide and would
silently cap the fan-out on a 2-core worker).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import queue
import selectors
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from mt5_sync import errors
from mt5_sync.contracts import FetchRequest, FetchResult
from mt5_sync.settings import Settings

log = logging.getLogger(__name__)

_ERROR_TYPES: dict[str, type[errors.SyncError]] = {
    cls.__name__: cls
    for cls in (
        errors.TerminalError,
        errors.AuthenticationFailed,
        errors.TerminalUnavailable,
        errors.TerminalTimeout,
        errors.AccountMismatch,
        errors.InvalidRequest,
    )
}


class TerminalSlot:
    """One terminal install and the worker process currently driving it."""

    def __init__(
        self,
        index: int,
        *,
        backend: str,
        path: str | None,
        portable: bool,
        login_timeout_ms: int,
        env: dict[str, str],
    ) -> None:
        self.index = index
        self.backend = backend
        self.path = path
        self.portable = portable
        self.login_timeout_ms = login_timeout_ms
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _ensure_started(self) -> subprocess.Popen[bytes]:
        if self.process is not None and self.process.poll() is None:
            return self.process
        if self.process is not None:
            self.restarts += 1
        cmd = [
            sys.executable,
            "-m",
            "mt5_sync.terminal.worker",
            "--backend",
            self.backend,
            "--timeout-ms",
            str(self.login_timeout_ms),
        ]
        if self.path:
            cmd += ["--path", self.path]
        if not self.portable:
            cmd.append("--no-portable")
        self.process = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # worker logs go to our stderr (never secrets)
            env=self.env,
        )
        self._buffer = b""
        return self.process

    def call(self, message: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        process = self._ensure_started()
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(json.dumps(message).encode() + b"\n")
            process.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            self.kill()
            raise errors.TerminalUnavailable(
                f"terminal slot {self.index}: worker process is gone ({exc})",
                code="terminal_worker_died",
            ) from exc
        line = self._read_line(process, time.monotonic() + timeout_s, timeout_s)
        return dict(json.loads(line))

    def _read_line(
        self, process: subprocess.Popen[bytes], deadline: float, timeout_s: float
    ) -> bytes:
        assert process.stdout is not None
        fd = process.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    self.kill()
                    raise errors.TerminalTimeout(
                        f"terminal slot {self.index} did not answer within {timeout_s:g}s; "
                        "its process was killed and will be replaced",
                        mt5_code=-10005,
                    )
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    code = process.poll()
                    self.kill()
                    raise errors.TerminalUnavailable(
                        f"terminal slot {self.index}: worker process exited ({code})",
                        code="terminal_worker_died",
                    )
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def kill(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        with contextlib.suppress(Exception):
            self.process.wait(5)
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(Exception):
                if stream is not None:
                    stream.close()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(Exception):
                self.call({"op": "shutdown"}, timeout_s=5)
        self.kill()


class TerminalPool:
    """The gateway: "for these credentials, fetch account info, positions and deals"."""

    def __init__(self, slots: list[TerminalSlot], *, timeout_s: float) -> None:
        if not slots:
            raise ValueError("a terminal pool needs at least one slot")
        self.slots = slots
        self.timeout_s = timeout_s
        self._free: queue.SimpleQueue[TerminalSlot] = queue.SimpleQueue()
        for slot in slots:
            self._free.put(slot)
        self._in_use = 0
        self.max_in_use = 0
        self._lock = threading.Lock()
        self.executor = ThreadPoolExecutor(
            max_workers=len(slots), thread_name_prefix="terminal-slot"
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> TerminalPool:
        env = dict(os.environ)
        if settings.sim_world is not None:
            env["MT5SIM_WORLD"] = str(settings.sim_world)
        paths: list[str | None] = list(settings.terminal_paths) or [None] * settings.slot_count
        slots = [
            TerminalSlot(
                i,
                backend=settings.terminal_backend,
                path=path,
                portable=settings.terminal_portable,
                login_timeout_ms=settings.terminal_login_timeout_ms,
                env=env,
            )
            for i, path in enumerate(paths)
        ]
        return cls(slots, timeout_s=settings.terminal_timeout_s)

    @property
    def size(self) -> int:
        return len(self.slots)

    def fetch(self, request: FetchRequest, *, timeout_s: float | None = None) -> FetchResult:
        slot = self._free.get()
        with self._lock:
            self._in_use += 1
            self.max_in_use = max(self.max_in_use, self._in_use)
        try:
            reply = slot.call(
                {"op": "fetch", "request": asdict(request)}, timeout_s or self.timeout_s
            )
        finally:
            with self._lock:
                self._in_use -= 1
            self._free.put(slot)
        if reply.get("ok"):
            return FetchResult.from_dict(reply["result"])
        raise _rebuild_error(reply.get("error") or {})

    def warm_up(self) -> None:
        """Start every slot's worker now rather than on first use (parallel, bounded)."""
        list(self.executor.map(lambda s: s.call({"op": "ping"}, 60), self.slots))

    def close(self) -> None:
        for slot in self.slots:
            slot.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


def _rebuild_error(error: dict[str, Any]) -> errors.SyncError:
    cls = _ERROR_TYPES.get(str(error.get("type")), errors.TerminalError)
    message = str(error.get("message") or "terminal error")
    code = error.get("code")
    if issubclass(cls, errors.TerminalError):
        return cls(message, mt5_code=error.get("mt5_code"), code=code)
    return cls(message, code=code)


_pools: dict[str, TerminalPool] = {}
_pools_lock = threading.Lock()


def get_terminal_pool(settings: Settings) -> TerminalPool:
    """The process-wide pool for these settings (terminals are expensive to start)."""
    key = json.dumps(
        [
            settings.terminal_backend,
            settings.terminal_paths,
            settings.slot_count,
            str(settings.sim_world),
            settings.terminal_timeout_s,
        ]
    )
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = TerminalPool.from_settings(settings)
        return pool


@atexit.register
def close_all_pools() -> None:
    with _pools_lock:
        for pool in _pools.values():
            pool.close()
        _pools.clear()
