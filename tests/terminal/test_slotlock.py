"""Terminal installs are locked at OS level: two processes never drive one terminal at once."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mt5_sync import errors
from mt5_sync.mt5sim.world import FixedLatency, build_world
from mt5_sync.settings import Settings
from mt5_sync.terminal import slotlock, status
from mt5_sync.terminal.pool import TerminalPool, kill_terminal_processes
from mt5_sync.terminal.slotlock import SlotLock, lock_path_for
from tests.terminal.test_pool import request_for

REPO_ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def installs(tmp_path: Path) -> list[str]:
    """Three fake portable installs (the simulated backend never starts them)."""
    paths = []
    for i in range(3):
        exe = tmp_path / f"MT5-{i}" / "terminal64.exe"
        exe.parent.mkdir()
        exe.write_text("not a real terminal")
        paths.append(str(exe))
    return paths


@pytest.fixture
def world_path(tmp_path: Path) -> Path:
    world = build_world(
        4, seed=5, now_utc=NOW, timeline_start_utc=NOW - timedelta(days=6),
        latency=FixedLatency(seconds=0.01), state_dir=str(tmp_path / "state"),
        faults={2: [{"kind": "hang", "call": "positions_get", "times": 1}]},
    )
    return world.save(tmp_path / "world.json")


def pool_for(world_path: Path, paths: list[str], **overrides: Any) -> TerminalPool:
    settings = Settings(
        terminal_backend="simulated", terminal_paths=paths, sim_world=world_path,
        terminal_timeout_s=overrides.pop("timeout_s", 30.0), **overrides,
    )
    return TerminalPool.from_settings(settings)


# ---------------------------------------------------------------- the lock itself


def test_lock_file_lives_next_to_the_terminal_or_in_the_lock_dir(tmp_path):
    exe = r"C:\MT5\slot 1\terminal64.exe" if os.name == "nt" else "/opt/mt5/slot 1/t64.exe"
    assert lock_path_for(exe) == Path(exe).parent / slotlock.LOCK_FILE_NAME
    in_dir = lock_path_for(exe, tmp_path)
    assert in_dir.parent == tmp_path and in_dir.name.startswith("slot-1-")
    assert lock_path_for(exe, tmp_path) == in_dir != lock_path_for(exe + "x", tmp_path)


def test_lock_is_exclusive_and_says_who_holds_it(tmp_path):
    a, b = SlotLock(tmp_path / "x.lock"), SlotLock(tmp_path / "x.lock")
    assert a.try_acquire(owner="slot=0") and a.held
    assert not b.try_acquire() and not b.held  # also within one process
    assert f"pid={os.getpid()}" in b.owner_text() and "slot=0" in b.owner_text()
    with pytest.raises(RuntimeError):
        a.try_acquire()
    a.release()
    a.release()  # idempotent
    assert b.try_acquire()
    b.release(clear=True)
    assert b.owner_text() == ""


def test_lock_held_by_another_process_is_dropped_when_that_process_dies(tmp_path):
    path = tmp_path / "t.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; "
         "from mt5_sync.terminal.slotlock import SlotLock; "
         f"assert SlotLock(Path({str(path)!r})).try_acquire(); print('held', flush=True); "
         "time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        mine = SlotLock(path)
        assert not mine.try_acquire()
        assert f"pid={holder.pid}" in mine.owner_text()
    finally:
        holder.kill()
        holder.wait()
    assert mine.try_acquire()  # the OS released the dead holder's lock
    mine.release()


def test_unwritable_lock_location_is_a_clear_error(world_path, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    pool = pool_for(world_path, [str(tmp_path / "x" / "terminal64.exe")],
                    terminal_lock_dir=blocker)
    try:
        with pytest.raises(errors.TerminalError) as caught:
            pool.fetch(request_for(world_path, 0))
    finally:
        pool.close()
    assert caught.value.code == "terminal_lock_error"
    assert "MT5SYNC_TERMINAL_LOCK_DIR" in caught.value.message


def _windows_branch(monkeypatch: pytest.MonkeyPatch, fake: Any) -> Any:
    """Load slotlock as it would be on Windows, with a stand-in msvcrt."""
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setitem(sys.modules, "msvcrt", fake)
    spec = importlib.util.spec_from_file_location("_slotlock_win", slotlock.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_windows_branch_locks_one_byte_past_the_owner_text(tmp_path, monkeypatch):
    calls: list[tuple[str, int]] = []
    held: set[int] = set()

    def locking(fd: int, mode: int, nbytes: int) -> None:
        where = os.lseek(fd, 0, os.SEEK_CUR)
        calls.append((mode, where))
        if mode == 2 and where in held:
            raise OSError(36, "Resource deadlock avoided")
        (held.add if mode == 2 else held.discard)(where)

    fake = SimpleNamespace(LK_NBLCK=2, LK_UNLCK=0, locking=locking)
    win = _windows_branch(monkeypatch, fake)
    a, b = win.SlotLock(tmp_path / "w.lock"), win.SlotLock(tmp_path / "w.lock")
    assert a.try_acquire() and not b.try_acquire()
    a.release()
    assert b.try_acquire()
    b.release()
    offset = win.WINDOWS_LOCK_OFFSET
    assert calls == [(2, offset), (2, offset), (0, offset), (2, offset), (0, offset)]
    assert "pid=" in (tmp_path / "w.lock").read_text()


# ---------------------------------------------------------------- pools and locks


def test_pool_skips_a_slot_locked_by_another_process(world_path, installs):
    other = SlotLock(lock_path_for(installs[0]))
    assert other.try_acquire(owner="scheduled cycle")
    pool = pool_for(world_path, installs[:2])
    try:
        pool.fetch(request_for(world_path, 0))
        assert pool.slots[0].process is None and pool.slots[1].running
        assert pool.lock_skips >= 1
        assert not pool.slots[1].lock.held  # released after the fetch
    finally:
        pool.close()
        other.release()


def test_pool_waits_for_a_locked_install_then_gives_up_or_proceeds(world_path, installs):
    other = SlotLock(lock_path_for(installs[0]))
    assert other.try_acquire()
    pool = pool_for(world_path, installs[:1], terminal_slot_wait_s=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(errors.TerminalUnavailable) as caught:
            pool.fetch(request_for(world_path, 0))
        assert caught.value.code == "terminal_slots_busy" and caught.value.transient
        assert "no terminal slot became free within 0.5s" in caught.value.message
        # It waited its full 0.5 s (a lower bound: a slow machine cannot make it shorter), and
        # the wait is what the pool reports for the failed fetch.
        assert time.monotonic() - started >= 0.5
        assert caught.value.slot_wait_ms >= 500 and len(pool.borrows) == 0
        pool.slot_wait_s = 30
        threading.Timer(0.5, other.release).start()
        assert pool.fetch(request_for(world_path, 0)).errors == []
    finally:
        pool.close()
        other.release()


def test_slots_busy_in_this_process_are_waited_for(world_path, installs):
    pool = pool_for(world_path, installs[:1])
    try:
        with (
            pool.borrow(),
            pytest.raises(errors.TerminalUnavailable, match="no terminal slot"),
            pool.borrow(wait_s=0.2),
        ):
            pass  # pragma: no cover
        with pool.borrow() as slot:
            assert slot.lock.held
        assert not slot.lock.held
    finally:
        pool.close()
    with pytest.raises(errors.TerminalUnavailable, match="closed"):
        pool.fetch(request_for(world_path, 0))


def test_same_install_twice_is_rejected(world_path, installs):
    with pytest.raises(ValueError, match="same terminal twice"):
        pool_for(world_path, [installs[0], installs[0]])


def _driver(world_path: Path, paths: list[str], log: Path, *flags: str) -> subprocess.Popen[str]:
    env = dict(os.environ, MT5SYNC_MT5_MODULE="tests.terminal.recording_mt5",
               MT5SIM_CALL_LOG=str(log), PYTHONPATH=str(REPO_ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "tests.terminal.pool_driver", str(world_path), ";".join(paths),
         "0,1,3", "3", *flags],
        stdout=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT,
    )


def interleavings(log: Path) -> list[str]:
    """Places where a process called into an install while another one's fetch was running.

    Per install, in time order: when the calling process changes, the newcomer must start a
    fetch (initialize or login), and its call must not start before the other's last one ended.
    """
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    problems = []
    by_path: dict[str, list[dict[str, Any]]] = {}
    for call in calls:
        by_path.setdefault(call["path"], []).append(call)
    for path, seq in by_path.items():
        seq.sort(key=lambda c: c["t0"])
        for prev, cur in itertools.pairwise(seq):
            if cur["pid"] == prev["pid"] or cur["call"] == "shutdown":
                continue
            if cur["call"] not in ("initialize", "login") or cur["t0"] < prev["t1"]:
                problems.append(f"{path}: pid {cur['pid']} {cur['call']} after pid "
                                f"{prev['pid']} {prev['call']}")
    return problems


def _run_two_pools(world_path: Path, paths: list[str], log: Path, *flags: str) -> list[dict]:
    """Two pool processes on the same installs, released together once both have started."""
    go = log.with_suffix(".go")
    ready = [log.with_suffix(f".ready{i}") for i in range(2)]
    procs = [
        _driver(world_path, paths, log, *flags, "--ready", str(r), "--go", str(go))
        for r in ready
    ]
    deadline = time.monotonic() + 120
    while not all(r.exists() for r in ready):
        assert all(p.poll() is None for p in procs), "a pool driver exited before starting"
        assert time.monotonic() < deadline, "pool drivers did not start"
        time.sleep(0.05)
    go.touch()
    outs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs


def test_two_processes_never_drive_the_same_install_at_once(world_path, installs, tmp_path):
    # One install, two pool processes released at once: both must drive it, so they contend
    # for it whatever the scheduling (with two installs each pool may keep to one of them).
    # Without the locks they interleave on it (the check bites)...
    unlocked = tmp_path / "unlocked.jsonl"
    _run_two_pools(world_path, installs[:1], unlocked, "--no-locks")
    assert interleavings(unlocked), "expected interleaved calls without locks"
    # ...with them, every fetch on the install runs alone, and both processes finish.
    locked = tmp_path / "locked.jsonl"
    outs = _run_two_pools(world_path, installs[:1], locked)
    assert interleavings(locked) == []
    assert all(o["outcomes"] == ["ok"] * 9 for o in outs)
    calls = [json.loads(line) for line in locked.read_text().splitlines()]
    assert {c["path"] for c in calls} == {installs[0]}
    # Both processes' workers drove it, taking turns (one worker per pool, each switch a new
    # login): the lock was contended, not just never needed.
    assert len({c["pid"] for c in calls}) == 2
    switches = sum(a["pid"] != b["pid"] for a, b in itertools.pairwise(
        sorted(calls, key=lambda c: c["t0"])))
    assert switches >= 1


# ---------------------------------------------------------------- hung terminals


@pytest.fixture
def fake_terminal(tmp_path: Path):
    """A process whose executable is a 'terminal64.exe' in a portable install folder."""
    exe = tmp_path / "MT5-hung" / "terminal64.exe"
    exe.parent.mkdir()
    shutil.copy(shutil.which("sleep") or "/bin/sleep", exe)
    proc = subprocess.Popen([str(exe), "120"])
    yield str(exe), proc
    proc.kill()
    proc.wait()


def test_kill_terminal_processes_matches_by_executable_path(fake_terminal, tmp_path):
    exe, proc = fake_terminal
    assert kill_terminal_processes(str(tmp_path / "elsewhere" / "terminal64.exe")) == []
    assert kill_terminal_processes(exe) == [proc.pid]
    assert proc.wait(5) is not None


def test_hung_terminal_is_killed_with_its_worker(world_path, fake_terminal):
    exe, proc = fake_terminal
    pool = pool_for(world_path, [exe])
    try:
        pool.fetch(request_for(world_path, 0))  # warm: worker up
        with pytest.raises(errors.TerminalTimeout, match=f"terminal pids \\[{proc.pid}\\]"):
            pool.fetch(request_for(world_path, 2), timeout_s=1.5)
        assert proc.wait(5) is not None  # the hung terminal64.exe is gone too
        assert not pool.slots[0].lock.held
        assert pool.fetch(request_for(world_path, 2)).errors == []  # fault fired once
    finally:
        pool.close()


def test_worker_that_cannot_import_the_package_fails_fast(world_path, installs):
    if sys.platform == "win32":
        pytest.skip("MetaTrader5 may be installed on Windows")
    settings = Settings(terminal_backend="metatrader5", terminal_paths=installs[:1],
                        sim_world=world_path)
    pool = TerminalPool.from_settings(settings)
    try:
        with pytest.raises(errors.TerminalUnavailable) as caught:
            pool.fetch(request_for(world_path, 0))
    finally:
        pool.close()
    assert caught.value.code == "backend_unavailable"
    assert "Windows only" in caught.value.message


def test_status_shows_who_holds_each_install(world_path, installs, fake_terminal, capsys):
    exe, proc = fake_terminal
    settings = Settings(terminal_backend="simulated", terminal_paths=[installs[0], exe])
    holder = SlotLock(lock_path_for(installs[0]))
    assert holder.try_acquire(owner="slot=0")
    try:
        rows = status.slot_status(settings)
    finally:
        holder.release()
    assert rows[0]["in_use"] and f"pid={os.getpid()}" in rows[0]["holder"]
    assert not rows[1]["in_use"] and rows[1]["holder"] == ""
    assert [p["pid"] for p in rows[1]["terminal_processes"]] == [proc.pid]
    assert status.slot_status(settings)[0]["in_use"] is False


def test_status_cli(monkeypatch, installs, capsys):
    monkeypatch.setenv("MT5SYNC_TERMINAL_BACKEND", "simulated")
    monkeypatch.setenv("MT5SYNC_TERMINAL_PATHS", ";".join(installs[:2]))
    assert status.main([]) == 0
    text = capsys.readouterr().out
    assert "slot 0:" in text and "slot 1:" in text and "lock: free" in text
    assert status.main(["--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    monkeypatch.setenv("MT5SYNC_TERMINAL_PATHS", "")
    assert status.main([]) == 1


def test_warm_up_starts_every_idle_worker_without_locking_installs(world_path, installs):
    other = SlotLock(lock_path_for(installs[2]))
    assert other.try_acquire()  # another process is using install 2: warming it is harmless
    pool = pool_for(world_path, installs)
    try:
        with pool.borrow() as busy:
            pool.warm_up()
            assert [s.running for s in pool.slots if s is not busy] == [True, True]
            assert not busy.running  # in use here: left alone
        assert all(s.lock is None or not s.lock.held for s in pool.slots)
        assert pool.fetch(request_for(world_path, 0)).errors == []
    finally:
        pool.close()
        other.release()
