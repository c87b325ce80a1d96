"""What the terminal slots of this host are doing: ``python -m mt5_sync.terminal.status``.

For the operator of the Windows host (docs/windows-runbook.md, "a terminal hangs"): for each
install in ``MT5SYNC_TERMINAL_PATHS`` it prints whether a sync holds the slot's lock and who
(pid, since when), and which ``terminal64.exe`` processes run from that install. It only looks:
it takes a free slot's lock for an instant and changes nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from mt5_sync.settings import Settings
from mt5_sync.terminal.slotlock import SlotLock, lock_path_for


def terminal_processes(terminal_path: str) -> list[dict[str, Any]]:
    """Processes running ``terminal_path`` (pid, status, start time, memory)."""
    import psutil

    target = os.path.normcase(os.path.realpath(terminal_path))
    found = []
    for proc in psutil.process_iter(["pid", "exe", "create_time", "memory_info", "status"]):
        exe = proc.info.get("exe")
        if exe and os.path.normcase(os.path.realpath(exe)) == target:
            memory = proc.info.get("memory_info")
            found.append(
                {
                    "pid": proc.info["pid"],
                    "status": proc.info.get("status"),
                    "started": proc.info.get("create_time"),
                    "rss_mb": round(memory.rss / 2**20, 1) if memory else None,
                }
            )
    return found


def slot_status(settings: Settings) -> list[dict[str, Any]]:
    """One row per configured install: lock state, holder, terminal processes."""
    rows = []
    for index, path in enumerate(settings.terminal_paths):
        lock = SlotLock(lock_path_for(path, settings.terminal_lock_dir))
        holder = lock.owner_text()
        error = None
        free = False
        try:
            free = lock.try_acquire(owner="status probe")
        except OSError as exc:
            error = str(exc)
        if free:
            lock.release(clear=True)
        rows.append(
            {
                "slot": index,
                "terminal": path,
                "installed": os.path.isfile(path),
                "lock_file": str(lock.path),
                "in_use": not free and error is None,
                "holder": "" if free else holder,
                "lock_error": error,
                "terminal_processes": terminal_processes(path),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    rows = slot_status(Settings())
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("MT5SYNC_TERMINAL_PATHS is empty: no terminal installs configured")
        return 1
    for row in rows:
        state = "IN USE by " + (row["holder"] or "?") if row["in_use"] else "free"
        if row["lock_error"]:
            state = f"lock error: {row['lock_error']}"
        procs = ", ".join(f"pid {p['pid']} ({p['status']})" for p in row["terminal_processes"])
        print(f"slot {row['slot']}: {row['terminal']}")
        print(f"    installed: {row['installed']}   lock: {state}")
        print(f"    terminal processes: {procs or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
