"""The terminal gateway: a pool of terminal worker processes, one per terminal slot.

``TerminalPool.fetch(request)`` is the single interface the sync uses, whatever the backend:
it borrows a free slot, sends the request to that slot's worker process and waits at most
``timeout_s``. A worker that does not answer in time is killed (the hard timeout is enforced
here, outside the process that talks to the terminal) together with the slot's hung
``terminal64.exe``, and replaced on the slot's next use.

Slots and installs. ``MT5SYNC_TERMINAL_PATHS`` lists one portable terminal install per slot;
the pool is as wide as that list (without paths: ``MT5SYNC_SIMULATED_SLOTS`` simulated
slots). Other processes on the same host (the scheduled cycle and a manual sync are separate
flow-run processes, each with its own pool) use the same installs, so a fetch holds an
OS-level lock on its slot's install (:mod:`mt5_sync.terminal.slotlock`) while it runs; a
slot locked by another process is skipped for another one, and when every slot is busy the
fetch waits up to ``MT5SYNC_TERMINAL_SLOT_WAIT_S``. The worker process keeps its terminal
connection between fetches (one ``initialize``, one ``login`` per account): every fetch logs
in and checks the account again, so a login made in between by another process is harmless.

Thread-safe and blocking on purpose: async callers run it in :attr:`executor`, a thread pool
as wide as the slot count (the default asyncio executor is only ``cpu + 4`` wide and would
silently cap the fan-out on a 2-core worker).

The cap. A slot is held only for the terminal work of one fetch, never for the orchestration
around it, so a cycle keeps more accounts in flight than it has terminals and the next one is
already waiting when a slot frees up. :meth:`TerminalPool.limit_in_use` caps how many slots
this process uses at once (the cycle's ``max_concurrency``); fetches beyond the executor's
width queue in its FIFO work queue; each release wakes the longest waiter for a slot (a
caller arriving at that instant can still take it first).
:attr:`TerminalPool.usage` measures how busy the terminals were (peak and time-weighted mean)
and :attr:`TerminalPool.borrows` keeps the recent borrow intervals: the pool's own record.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import selectors
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from mt5_sync import errors
from mt5_sync.contracts import FetchRequest, FetchResult
from mt5_sync.settings import Settings
from mt5_sync.terminal.slotlock import SlotLock, lock_path_for

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
_LOCK_POLL_S = 0.1
_BORROW_LOG = 10_000


class BusyMeter:
    """Terminals in use over time: the peak and the time-weighted mean since :meth:`reset`.

    Not thread-safe by itself: the pool calls it under its own lock.
    """

    def __init__(self) -> None:
        self.reset(0)

    def reset(self, in_use: int) -> None:
        self._since = self._last = time.monotonic()
        self._area = 0.0
        self._current = in_use
        self.peak = in_use

    def change(self, in_use: int) -> None:
        now = time.monotonic()
        self._area += self._current * (now - self._last)
        self._last, self._current = now, in_use
        self.peak = max(self.peak, in_use)

    def snapshot(self) -> dict[str, float]:
        """``{"peak", "mean", "seconds"}``: ``mean`` terminals busy over ``seconds``."""
        now = time.monotonic()
        area = self._area + self._current * (now - self._last)
        span = now - self._since
        return {"peak": self.peak, "mean": area / span if span > 0 else 0.0, "seconds": span}


def kill_terminal_processes(terminal_path: str) -> list[int]:
    """Kill every process whose executable is ``terminal_path``; return their pids.

    A terminal that stopped answering keeps running after its worker is killed, and the next
    ``initialize(path=...)`` would attach to it again. Processes we may not inspect (another
    user's) are left alone.
    """
    import psutil

    target = os.path.normcase(os.path.realpath(terminal_path))
    victims = []
    for proc in psutil.process_iter(["exe"]):
        exe = proc.info.get("exe")
        if exe and os.path.normcase(os.path.realpath(exe)) == target:
            with contextlib.suppress(psutil.Error):
                proc.kill()
                victims.append(proc)
    psutil.wait_procs(victims, timeout=5)
    return [p.pid for p in victims]


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
        lock: SlotLock | None = None,
        startup_timeout_s: float = 60.0,
        kill_hung_terminal: bool = True,
    ) -> None:
        self.index = index
        self.backend = backend
        self.path = path
        self.portable = portable
        self.login_timeout_ms = login_timeout_ms
        self.env = env
        self.lock = lock
        self.startup_timeout_s = startup_timeout_s
        self.kill_hung_terminal = kill_hung_terminal
        self.process: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self.restarts = 0
        self.busy = False  # borrowed by a thread of this process (guarded by the pool)
        self.acquired_at = 0.0  # time.monotonic() of the current borrow

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __repr__(self) -> str:
        return f"TerminalSlot({self.index}, path={self.path!r}, pid={self.pid})"

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
        # The worker says "ready" once Python and the MetaTrader5 module are loaded: a slow
        # interpreter start (a busy host) is not charged to the terminal's hard timeout.
        hello = json.loads(
            self._read_line(self.process, self.startup_timeout_s, starting=True)
        )
        if not hello.get("ready"):
            self.kill()
            raise _rebuild_error(hello.get("error") or {})
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
        return dict(json.loads(self._read_line(process, timeout_s)))

    def _read_line(
        self, process: subprocess.Popen[bytes], timeout_s: float, *, starting: bool = False
    ) -> bytes:
        assert process.stdout is not None
        deadline = time.monotonic() + timeout_s
        fd = process.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    self.kill()
                    if starting:
                        raise errors.TerminalUnavailable(
                            f"terminal slot {self.index}: worker process did not start within "
                            f"{timeout_s:g}s (MT5SYNC_TERMINAL_STARTUP_TIMEOUT_S)",
                            code="terminal_worker_start_timeout",
                        )
                    killed = self._kill_hung_terminal()
                    raise errors.TerminalTimeout(
                        f"terminal slot {self.index} did not answer within {timeout_s:g}s; "
                        "its process was killed and will be replaced"
                        + (f" (terminal pids {killed} killed too)" if killed else ""),
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

    def _kill_hung_terminal(self) -> list[int]:
        if not (self.kill_hung_terminal and self.path):
            return []
        try:
            killed = kill_terminal_processes(self.path)
        except Exception:  # never let the clean-up hide the timeout itself
            log.warning("could not kill the terminal of slot %d", self.index, exc_info=True)
            return []
        if killed:
            log.warning("slot %d: killed hung terminal %s (pids %s)", self.index, self.path,
                        killed)
        return killed

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
        """Ask the worker to shut its terminal connection down and exit; kill it if it won't."""
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(Exception):
                self.call({"op": "shutdown"}, timeout_s=5)
                if process.stdin is not None:
                    process.stdin.close()
                process.wait(5)  # let it exit on its own (atexit handlers, clean shutdown)
        self.kill()
        if self.lock is not None:
            self.lock.release()


class TerminalPool:
    """The gateway: "for these credentials, fetch account info, positions and deals"."""

    def __init__(
        self, slots: list[TerminalSlot], *, timeout_s: float, slot_wait_s: float = 300.0
    ) -> None:
        if not slots:
            raise ValueError("a terminal pool needs at least one slot")
        self.slots = slots
        self.timeout_s = timeout_s
        self.slot_wait_s = slot_wait_s
        self._cond = threading.Condition()
        self._in_use = 0
        self.cap = len(slots)
        self.max_in_use = 0
        self.usage = BusyMeter()
        #: (slot index, acquired, released) on the monotonic clock, most recent last
        self.borrows: deque[tuple[int, float, float]] = deque(maxlen=_BORROW_LOG)
        self.lock_skips = 0  # times a slot was passed over because another process held it
        self._closed = False
        self.executor = ThreadPoolExecutor(
            max_workers=len(slots), thread_name_prefix="terminal-slot"
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> TerminalPool:
        env = dict(os.environ)
        if settings.sim_world is not None:
            env["MT5SIM_WORLD"] = str(settings.sim_world)
        paths: list[str | None] = list(settings.terminal_paths) or [None] * settings.slot_count
        if len(set(filter(None, paths))) != len(list(filter(None, paths))):
            raise ValueError("MT5SYNC_TERMINAL_PATHS lists the same terminal twice")
        slots = [
            TerminalSlot(
                i,
                backend=settings.terminal_backend,
                path=path,
                portable=settings.terminal_portable,
                login_timeout_ms=settings.terminal_login_timeout_ms,
                env=env,
                lock=SlotLock(lock_path_for(path, settings.terminal_lock_dir)) if path else None,
                startup_timeout_s=settings.terminal_startup_timeout_s,
                kill_hung_terminal=settings.terminal_kill_hung,
            )
            for i, path in enumerate(paths)
        ]
        return cls(
            slots, timeout_s=settings.terminal_timeout_s, slot_wait_s=settings.terminal_slot_wait_s
        )

    @property
    def size(self) -> int:
        return len(self.slots)

    # ------------------------------------------------------------------ borrowing slots

    def _try_take(self, slot: TerminalSlot) -> bool:
        """Take a slot this process is not using if no other process holds its install."""
        if slot.lock is not None:
            try:
                taken = slot.lock.try_acquire(owner=f"slot={slot.index}")
            except OSError as exc:
                raise errors.TerminalError(
                    f"cannot create the lock file {slot.lock.path} of terminal slot "
                    f"{slot.index} ({exc}); make its folder writable or set "
                    "MT5SYNC_TERMINAL_LOCK_DIR",
                    code="terminal_lock_error",
                ) from exc
            if not taken:
                self.lock_skips += 1
                return False
        slot.busy = True
        self._in_use += 1
        self.max_in_use = max(self.max_in_use, self._in_use)
        self.usage.change(self._in_use)
        return True

    def limit_in_use(self, cap: int) -> None:
        """Use at most ``cap`` slots at once (clamped to 1..size); waiters queue for them."""
        with self._cond:
            self.cap = max(1, min(int(cap), self.size))
            self._cond.notify_all()

    def reset_usage(self) -> None:
        """Start measuring :attr:`usage` afresh (a cycle does, when it starts)."""
        with self._cond:
            self.usage.reset(self._in_use)

    def usage_snapshot(self) -> dict[str, float]:
        """:meth:`BusyMeter.snapshot` of :attr:`usage`, read under the pool's lock."""
        with self._cond:
            return self.usage.snapshot()

    def _acquire(self, wait_s: float) -> TerminalSlot:
        deadline = time.monotonic() + wait_s
        with self._cond:
            while True:
                if self._closed:
                    raise errors.TerminalUnavailable("the terminal pool is closed")
                free = [s for s in self.slots if not s.busy] if self._in_use < self.cap else []
                # Prefer slots whose worker is already connected (no new terminal start).
                for slot in sorted(free, key=lambda s: (not s.running, s.index)):
                    if self._try_take(slot):
                        slot.acquired_at = time.monotonic()
                        return slot
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise errors.TerminalUnavailable(
                        f"no terminal slot became free within {wait_s:g}s: {self._in_use} of "
                        f"{self.size} in use by this process (cap {self.cap}), the others "
                        "locked by another process on this host (MT5SYNC_TERMINAL_SLOT_WAIT_S)",
                        code="terminal_slots_busy",
                    )
                # Slots freed in this process notify; locks freed by other processes do not,
                # so poll while some free slot is locked elsewhere.
                self._cond.wait(min(remaining, _LOCK_POLL_S) if free else remaining)

    def _release(self, slot: TerminalSlot) -> None:
        with self._cond:
            if slot.lock is not None:
                slot.lock.release()
            slot.busy = False
            self._in_use -= 1
            self.usage.change(self._in_use)
            self.borrows.append((slot.index, slot.acquired_at, time.monotonic()))
            self._cond.notify()

    @contextlib.contextmanager
    def borrow(self, wait_s: float | None = None) -> Iterator[TerminalSlot]:
        """Hold one slot (and its install's OS lock) for the duration of the block."""
        slot = self._acquire(self.slot_wait_s if wait_s is None else wait_s)
        try:
            yield slot
        finally:
            self._release(slot)

    # ------------------------------------------------------------------ the gateway

    def fetch(
        self,
        request: FetchRequest,
        *,
        timeout_s: float | None = None,
        queued_at: float | None = None,
    ) -> FetchResult:
        """One account's fetch on a free slot. ``queued_at`` (``time.monotonic()``): when the
        caller asked, if earlier than this call (queued in :attr:`executor`); the result's
        ``slot_wait_ms`` is the time from then until a slot was taken."""
        asked = time.monotonic() if queued_at is None else queued_at
        waited_ms: int | None = None
        try:
            with self.borrow() as slot:
                waited_ms = max(0, round((slot.acquired_at - asked) * 1000))
                reply = slot.call(
                    {"op": "fetch", "request": asdict(request)}, timeout_s or self.timeout_s
                )
            if not reply.get("ok"):
                raise _rebuild_error(reply.get("error") or {})
        except errors.SyncError as exc:
            # Failed fetches report their queueing too (all of it, if no slot was ever free).
            exc.slot_wait_ms = (
                waited_ms if waited_ms is not None
                else max(0, round((time.monotonic() - asked) * 1000))
            )
            raise
        result = FetchResult.from_dict(reply["result"])
        result.slot_wait_ms = waited_ms
        return result

    def warm_up(self) -> None:
        """Start every idle slot's worker process now rather than on first use (in parallel).

        Starting a worker does not touch its terminal (``initialize`` waits for the first
        fetch), so no install lock is taken; slots busy in this process are left alone.
        """

        def ping(slot: TerminalSlot) -> None:
            with self._cond:
                if slot.busy or self._closed:
                    return
                slot.busy = True
            try:
                if not slot.running:
                    slot.call({"op": "ping"}, slot.startup_timeout_s)
            finally:
                with self._cond:
                    slot.busy = False
                    self._cond.notify()

        list(self.executor.map(ping, self.slots))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
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
            str(settings.terminal_lock_dir),
            settings.terminal_slot_wait_s,
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

