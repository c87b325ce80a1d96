"""SIGTERM and SIGHUP stop the project's servers the way Ctrl+C does.

Every server the project starts (embedded PostgreSQL, the Prefect server's process group,
Redis, the Prefect services process) runs in a session of its own (``start_new_session=True``
or, for PostgreSQL, daemonized by ``pg_ctl``), so no signal meant for the starting process
reaches them: that process must stop them itself. Ctrl+C already does, because it raises
:class:`KeyboardInterrupt` in the main thread and the ``finally:`` blocks and context managers
around the stack (``LocalStack.stop``, the work directory's removal, pytest's fixture
teardown) run on the way out. Python's default for SIGTERM and SIGHUP is to die on the spot,
skipping all of that, so a process manager's stop or a closed SSH session left PostgreSQL and
Prefect running and the work directory behind.

:func:`stop_on_signals` routes SIGTERM and SIGHUP (and Windows' SIGBREAK; Windows has no
SIGHUP) into that same path: the handler raises :class:`StopSignal`, a ``KeyboardInterrupt``,
so there is one shutdown path to keep right instead of a second list of things to stop.
Raising (rather than stopping the servers inside the handler) also keeps the handler free of
locks the interrupted code may hold.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

import psutil

#: The signals that mean "stop" besides SIGINT: a process manager's SIGTERM, a closed
#: terminal's SIGHUP, the Windows console's Ctrl+Break.
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGBREAK") if hasattr(signal, name)
)


class StopSignal(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM/SIGHUP arrives, so Ctrl+C's cleanup runs."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        """The shell's convention for "ended by signal N": 128 + N (143 for SIGTERM)."""
        return 128 + self.signum


def exit_code_for(interrupt: KeyboardInterrupt) -> int:
    """128 + the signal that stopped us: 130 for Ctrl+C, 143 for SIGTERM, 129 for SIGHUP."""
    if isinstance(interrupt, StopSignal):
        return interrupt.exit_code
    return 128 + int(signal.SIGINT)


@contextlib.contextmanager
def stop_on_signals(signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> Iterator[None]:
    """While inside, each of ``signals`` raises :class:`StopSignal` in the main thread.

    Only the first signal raises: later ones are ignored until the block is left, so a
    process manager that repeats SIGTERM cannot interrupt the cleanup the first one started
    (SIGINT is left alone and still interrupts, as a last resort at a terminal; SIGKILL
    always works). A signal whose disposition is "ignore" when the block is entered stays
    ignored: ``nohup mt5-sync demo --keep-running`` must outlive its terminal. The previous
    handlers are restored on exit, so blocks nest.

    Outside the main thread this does nothing: Python runs signal handlers, and lets them be
    set, in the main thread only.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if fired:
            return
        fired = True
        raise StopSignal(signum)

    previous: dict[signal.Signals, object] = {}
    try:
        for sig in signals:
            current = signal.getsignal(sig)
            if current is signal.SIG_IGN:
                continue
            previous[sig] = current
            signal.signal(sig, handler)
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)  # type: ignore[arg-type]


def stop_process_tree(pid: int, timeout_s: float = 10.0) -> None:
    """Terminate a child process and every process below it; kill what outlives ``timeout_s``.

    For children that share our process group (so a terminal's Ctrl+C reaches them but a
    SIGTERM sent to our pid does not), e.g. ``mt5-sync sync`` and its terminal workers: a
    worker stuck in a hung terminal call would never notice its parent is gone. The tree is
    read before anything is signalled and again while the root lives (it may still start a
    process while it shuts down): once a parent is gone its orphans are re-parented and can
    no longer be found from it.
    """
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    seen: dict[int, psutil.Process] = {}

    def collect() -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            for proc in [root, *root.children(recursive=True)]:
                if proc.pid not in seen:
                    seen[proc.pid] = proc
                    with contextlib.suppress(psutil.Error):
                        proc.terminate()
        return [p for p in seen.values() if _running(p)]

    deadline = time.monotonic() + timeout_s
    while collect() and time.monotonic() < deadline:
        time.sleep(0.1)
    left = collect()
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(left, timeout=5)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
