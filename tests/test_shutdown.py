"""SIGTERM and SIGHUP stop what the project started, as Ctrl+C does: real signals, by pid.

Each test starts the real thing in a child process (the demo, the manual sync script, a
pytest run holding the session servers), waits until it says it is up, records every process
it runs (its descendants, and the processes whose command line names its work dir, its
PostgreSQL data dir or its Prefect server's port, with their children: PostgreSQL is
daemonized, so it is nobody's descendant), signals the child's pid, and then checks that all
of those processes are gone and the work dir removed. Nothing here bounds how long anything
takes; waits are for conditions, with generous limits.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import psutil
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
HAS_SIGHUP = hasattr(signal, "SIGHUP")
posix_only = pytest.mark.skipif(not HAS_SIGHUP, reason="SIGHUP is POSIX-only")
SIGHUP = getattr(signal, "SIGHUP", signal.SIGTERM)


class Output:
    """A child's merged output, read by a thread, so waiting for a line can have a bound."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.closed = False
        self._changed = threading.Condition()
        self._proc = proc
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout_s: float = 600) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                for line in self.lines:
                    if match := re.search(pattern, line):
                        return match
                remaining = deadline - time.monotonic()
                if self.closed or remaining <= 0:
                    pytest.fail(f"never printed {pattern!r}; output:\n{self.text}")
                self._changed.wait(min(remaining, 1.0))

    @property
    def text(self) -> str:
        return "\n".join(self.lines[-80:])


def start(
    cmd: list[str], env: dict[str, str] | None = None, *, new_session: bool = False
) -> tuple[subprocess.Popen[str], Output]:
    """``new_session``: its own process group, to signal the group as a terminal would.

    The command starts as from a terminal: SIGHUP at its default disposition, even when the
    suite itself runs under ``nohup`` (which would hand the ignored SIGHUP down to it, and the
    command rightly keeps an ignored SIGHUP ignored)."""
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
        start_new_session=new_session,
        preexec_fn=(lambda: signal.signal(SIGHUP, signal.SIG_DFL)) if HAS_SIGHUP else None,
    )
    return proc, Output(proc)


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except (psutil.Error, OSError):
        return ""


def matching(markers: Iterable[str]) -> list[psutil.Process]:
    """Processes (other than this one) whose command line names any of ``markers``."""
    markers = list(markers)
    return [p for p in psutil.process_iter()
            if p.pid != os.getpid() and any(m in _cmdline(p) for m in markers)]


def snapshot(pid: int, markers: Iterable[str]) -> list[psutil.Process]:
    """Everything ``pid`` runs: itself, its descendants, and the marked processes' trees."""
    found: dict[int, psutil.Process] = {}
    roots = matching(markers)
    with contextlib.suppress(psutil.NoSuchProcess):
        roots.append(psutil.Process(pid))
    for root in roots:
        found[root.pid] = root
        with contextlib.suppress(psutil.NoSuchProcess):
            found.update((c.pid, c) for c in root.children(recursive=True))
    found.pop(os.getpid(), None)
    return list(found.values())


def alive(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
    """Those still running (same pid *and* start time; zombies count as gone)."""
    left = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                left.append(p)
        except psutil.NoSuchProcess:
            pass
    return left


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def describe(procs: Iterable[psutil.Process]) -> list[str]:
    return [f"{p.pid}: {_cmdline(p)[:200]}" for p in procs]


@pytest.fixture
def reaper() -> Iterator[list[psutil.Process]]:
    """Processes a test recorded; any still alive at the end (the test failed) are killed,
    so a failing run leaves nothing behind either."""
    recorded: list[psutil.Process] = []
    yield recorded
    for p in alive(recorded):
        with contextlib.suppress(psutil.Error):
            p.kill()


def signal_and_check(proc: subprocess.Popen[str], out: Output, signum: int, markers: list[str],
                     work_dir: Path, reaper: list[psutil.Process], *, group: bool = False) -> int:
    """Send ``signum`` to ``proc`` alone (``group``: to its process group, as a terminal
    does); check that nothing it ran is left. Its exit code."""
    before = snapshot(proc.pid, markers)
    reaper.extend(before)
    assert len(before) > 1, describe(before)
    if group:
        os.killpg(proc.pid, signum)
    else:
        os.kill(proc.pid, signum)
    try:
        code = proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"still running 300 s after {signal.Signals(signum).name}:\n{out.text}")
    wait_until(lambda: not alive(before), 60)  # orphans are reaped by init, not us
    assert alive(before) == [], (describe(alive(before)), out.text)
    assert matching(markers) == [], describe(matching(markers))
    assert not work_dir.exists(), f"{work_dir} left behind:\n{out.text}"
    return code


# --------------------------------------------------------------------- the mechanism

_HOLDER = r"""
import pathlib, shutil, subprocess, sys, tempfile, time
from mt5_sync.shutdown import exit_code_for, stop_on_signals

release = pathlib.Path(sys.argv[1])
try:
    with stop_on_signals():
        root = pathlib.Path(tempfile.mkdtemp(prefix="mt5sig-"))
        server = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)", str(root)],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            print(f"up {root}", flush=True)
            time.sleep(600)
        finally:
            print("cleaning", flush=True)
            while not release.exists():  # a second signal must not cut this short
                time.sleep(0.05)
            server.terminate()
            server.wait()
            shutil.rmtree(root)
            print("cleaned", flush=True)
except KeyboardInterrupt as exc:
    print(exc, flush=True)
    sys.exit(exit_code_for(exc))
"""


@posix_only
@pytest.mark.parametrize("signum", [signal.SIGTERM, SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_signal_runs_the_cleanup_once_to_the_end(tmp_path, reaper, signum):
    release = tmp_path / "release"
    proc, out = start([sys.executable, "-c", _HOLDER, str(release)])
    root = Path(out.wait_for(r"^up (\S+)").group(1))
    before = snapshot(proc.pid, [str(root)])
    reaper.extend(before)
    assert len(before) == 2, describe(before)  # the holder and its own-session "server"

    os.kill(proc.pid, signum)
    out.wait_for("^cleaning$")
    os.kill(proc.pid, signum)  # a process manager repeating itself
    release.touch()

    assert proc.wait(timeout=120) == 128 + signum, out.text
    assert "cleaned" in out.lines
    assert f"stopped by {signal.Signals(signum).name}" in out.lines
    assert alive(before) == []
    assert not root.exists()


@posix_only
def test_an_ignored_sighup_stays_ignored(tmp_path, reaper):
    """``nohup mt5-sync demo --keep-running`` must outlive the terminal it was started in."""
    release = tmp_path / "release"
    release.touch()
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(release)], cwd=REPO_ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),  # what nohup does
    )
    out = Output(proc)
    out.wait_for(r"^up ")
    reaper.extend(snapshot(proc.pid, []))
    os.kill(proc.pid, signal.SIGHUP)  # discarded by the kernel: the disposition is "ignore"
    os.kill(proc.pid, signal.SIGTERM)  # delivered after it, so the SIGHUP had its chance
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, out.text
    assert "stopped by SIGTERM" in out.lines


# --------------------------------------------------------------------- the real entry points

DEMO = [sys.executable, "-m", "mt5_sync.cli", "demo", "--keep-running"]


def _demo_markers(out: Output) -> tuple[Path, list[str]]:
    work_dir = Path(out.wait_for(r"\(work dir (\S+)\)").group(1))
    port = out.wait_for(r"Prefect server: http://127\.0\.0\.1:(\d+)").group(1)
    return work_dir, [str(work_dir), f"--port {port}"]


@pytest.mark.e2e
@posix_only
def test_demo_kept_running_stops_everything_on_sigterm(reaper):
    proc, out = start([*DEMO, "--accounts", "3"])
    work_dir, markers = _demo_markers(out)
    out.wait_for("^servers left running")
    assert any(str(work_dir / "pg") in _cmdline(p) for p in matching(markers)), "postgres seen"

    code = signal_and_check(proc, out, signal.SIGTERM, markers, work_dir, reaper)

    assert code == 0, out.text  # stopping a kept-running demo is its normal end
    assert "stopping ..." in out.lines


@pytest.mark.e2e
@posix_only
def test_demo_stopped_mid_cycle_stops_the_sync_and_its_terminals_on_sighup(reaper):
    # 8 accounts: the 8th has a terminal that hangs (DEMO_FAULTS), so the cycle lasts at least
    # the demo's 8 s terminal timeout and one terminal worker never answers on its own.
    proc, out = start([*DEMO, "--accounts", "8"])
    work_dir, markers = _demo_markers(out)
    out.wait_for("^running one cycle")

    def terminal_workers() -> list[psutil.Process]:
        try:
            tree = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [p for p in tree if "mt5_sync.terminal.worker" in _cmdline(p)]

    assert wait_until(lambda: bool(terminal_workers()), 300), out.text
    workers = terminal_workers()
    reaper.extend(workers)

    code = signal_and_check(proc, out, SIGHUP, markers, work_dir, reaper)

    assert alive(workers) == []
    # 129 (the demo's own exit code for SIGHUP) mid-cycle; 0 only if the cycle had ended
    assert code in (128 + SIGHUP, 0), out.text


@pytest.mark.e2e
@posix_only
def test_manual_sync_script_stops_everything_on_sigterm(reaper):
    from mt5_sync.localstack import free_port

    proc, out = start([sys.executable, "scripts/manual_sync_local.py", "--accounts", "1",
                       "--port", str(free_port())])
    match = out.wait_for(r"Prefect UI: http://127\.0\.0\.1:(\d+)\s+logs: (\S+)")
    work_dir = Path(match.group(2)).parent
    markers = [str(work_dir), f"--port {match.group(1)}"]

    code = signal_and_check(proc, out, signal.SIGTERM, markers, work_dir, reaper)

    assert code == 0, out.text


@pytest.mark.e2e
@posix_only
def test_pytest_session_servers_are_torn_down_on_sigterm(tmp_path, reaper):
    info = tmp_path / "servers.json"
    proc, out = start(
        [sys.executable, "-m", "pytest", "tests/signal_target.py", "-p", "no:cacheprovider",
         "-q"],
        env={"MT5SYNC_SIGNAL_TARGET_INFO": str(info)},
    )
    assert wait_until(lambda: info.exists() or proc.poll() is not None, 600), out.text
    assert info.exists(), out.text
    servers = json.loads(info.read_text())
    work_dir = Path(servers["stack_root"])
    markers = [str(work_dir), f"--port {servers['prefect_port']}"]

    code = signal_and_check(proc, out, signal.SIGTERM, markers, work_dir, reaper)

    assert code == pytest.ExitCode.INTERRUPTED, out.text


@pytest.mark.e2e
@posix_only
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_dev_py_demo_lets_the_demo_clean_up(reaper, how):
    """``python3 dev.py demo`` (the Quick start) runs the demo as its child: Ctrl+C reaches
    both (the terminal signals the whole foreground group), SIGTERM only dev.py."""
    proc, out = start([sys.executable, "dev.py", "demo", "--accounts", "3", "--keep-running"],
                      new_session=True)
    work_dir, markers = _demo_markers(out)
    out.wait_for("^servers left running")

    if how == "ctrl-c":
        code = signal_and_check(proc, out, signal.SIGINT, markers, work_dir, reaper,
                                group=True)
    else:
        code = signal_and_check(proc, out, signal.SIGTERM, markers, work_dir, reaper)

    assert code == 0, out.text
