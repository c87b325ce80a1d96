"""OS-level exclusive locks on terminal installs, shared by every process on the host.

The scheduled cycle and a manual sync are separate OS processes on the same Windows host,
each with its own :class:`~mt5_sync.terminal.pool.TerminalPool` built from the same
``MT5SYNC_TERMINAL_PATHS``. A terminal holds one logged-in account at a time, so two pools
must never drive the same install at once: a login from one would switch the account under
the other's fetch. Each pool therefore takes this lock on a slot's install for as long as one
of its fetches uses that install, and tries another slot when the lock is taken.

The lock is a file (by default next to ``terminal64.exe``, or in ``MT5SYNC_TERMINAL_LOCK_DIR``)
locked with ``msvcrt.locking`` on Windows and ``fcntl.flock`` elsewhere. The operating system
drops it when the holder's handle is closed or the holder dies, so a crashed or killed flow
run never leaves a terminal locked. The file's text says who holds it (pid, host, since when)
for whoever investigates a stuck slot; the text is informational only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sys
from pathlib import Path

from mt5_sync.clock import utc_now

LOCK_FILE_NAME = "mt5sync-slot.lock"
# Windows locks a byte range, not the file: lock one byte far past the owner text so that
# other processes can still read who holds the lock (locking beyond EOF is allowed).
WINDOWS_LOCK_OFFSET = 1 << 20


def lock_path_for(terminal_path: str, lock_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the lock of one terminal install lives.

    Without ``lock_dir``: ``<install dir>/mt5sync-slot.lock``, shared by every user and process
    on the host. With ``lock_dir``: one file per install, named after its normalised path.
    """
    if lock_dir is None:
        return Path(terminal_path).parent / LOCK_FILE_NAME
    normalised = os.path.normcase(os.path.abspath(terminal_path))
    digest = hashlib.sha1(normalised.encode("utf-8")).hexdigest()[:16]
    stem = "".join(ch if ch.isalnum() else "-" for ch in Path(terminal_path).parent.name)[:40]
    return Path(lock_dir) / f"{stem or 'terminal'}-{digest}.lock"


class SlotLock:
    """A non-blocking exclusive lock on one terminal install (not re-entrant)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self, owner: str = "") -> bool:
        """Take the lock if nobody holds it; never waits. Raises OSError if it cannot be made."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this SlotLock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # os.open handles are not inherited by child processes (PEP 446): the terminal worker
        # started while we hold the lock does not keep it alive after we release it.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            locked = _lock(fd)
        except BaseException:
            os.close(fd)
            raise
        if not locked:
            os.close(fd)
            return False
        self._fd = fd
        with contextlib.suppress(OSError):
            text = (
                f"pid={os.getpid()} host={socket.gethostname()} "
                f"since={utc_now().isoformat(timespec='seconds')} {owner}".rstrip()
            )
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, (text + "\n").encode("utf-8"))
        return True

    def release(self, *, clear: bool = False) -> None:
        """Give the lock up; ``clear`` also erases the holder text (nobody holds it now)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if clear:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            _unlock(fd)
        os.close(fd)

    def owner_text(self) -> str:
        """What the lock file says about its last holder (stale once the lock is free)."""
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                return f.read(512).strip()
        except OSError:
            return ""


if sys.platform == "win32":  # pragma: no cover - exercised on Windows hosts only
    import msvcrt

    def _lock(fd: int) -> bool:
        os.lseek(fd, WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import errno
    import fcntl

    def _lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
