#!/usr/bin/env python3
"""Bootstrap and run: the only thing a fresh machine needs is Python 3.11.

    python3 dev.py demo     # venv + install, embedded stack, one full cycle, summary
    python3 dev.py test     # venv + install, the whole test suite (what CI runs)
    python3 dev.py lint     # ruff + mypy
    python3 dev.py bench    # the cycle benchmark (see docs/benchmarks.md)
    python3 dev.py lock     # refresh requirements/lock.txt from pyproject.toml (--upgrade: all)

The virtualenv lives in .venv. It is installed from requirements/lock.txt (every package
pinned, with its hashes, for Linux and Windows), then the project itself without
dependencies; it is reinstalled only when pyproject.toml or the lock changes.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".installed-from"
LOCK = ROOT / "requirements" / "lock.txt"
# The lock's own header repeats this command; tests/test_lock.py keeps the two the same.
LOCK_COMMAND = (
    "uv", "pip", "compile", "pyproject.toml", "--extra", "dev", "--universal",
    "--python-version", "3.11", "--generate-hashes", "-o", "requirements/lock.txt",
)


def _run(*cmd: str | Path, env: dict[str, str] | None = None) -> int:
    """Run a command to its end, and let it end cleanly when it is stopped.

    The command shares our process group, so a terminal's Ctrl+C and SIGHUP reach it by
    themselves: here they must neither kill us first (the demo's servers would lose the
    process that stops them) nor kill the command mid-cleanup, which ``subprocess.call`` does
    on KeyboardInterrupt. So SIGINT is ignored while it runs, and SIGTERM and SIGHUP (a
    process manager or ``kill`` naming dev.py's pid only) are passed on to it.
    """
    proc = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, env=env)
    previous = {}
    if os.name != "nt":
        def forward(signum: int, frame: object) -> None:
            proc.send_signal(signum)

        previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) is not signal.SIG_IGN:  # nohup keeps SIGHUP ignored
                previous[sig] = signal.signal(sig, forward)
    try:
        return proc.wait()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _installed_from() -> str:
    digest = hashlib.sha256()
    for path in (ROOT / "pyproject.toml", LOCK):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _uv_requirement() -> str:
    """The lock's own pin of uv, hashes included: what pip installs first."""
    lines = LOCK.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("uv=="))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i][:1].isspace()),
               len(lines))
    return "\n".join(lines[start:end]) + "\n"


def ensure_venv() -> None:
    """Install .venv from the lock: pip installs uv (pinned and hashed in the lock), uv
    installs the rest, hashes checked, then the project, editable, built by the locked
    setuptools (no isolated build environment to download).

    uv rather than pip for the bulk: pip fetched, hashed and byte-compiled the ~160 packages
    one by one, 50-140 s on the 2-core CI machine; the whole install now takes about 10 s
    (README, "Installs and the lock"). Modules compile on first import instead.
    """
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"mt5-sync needs Python 3.11 (this is {sys.version.split()[0]})")
    wanted = _installed_from()
    if PY.exists() and STAMP.exists() and STAMP.read_text().strip() == wanted:
        return
    if not PY.exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing mt5-sync and its locked dependencies into .venv ...", flush=True)
    quiet = [] if os.environ.get("CI") else ["-q"]
    pinned_uv = VENV / "uv-requirement.txt"
    pinned_uv.write_text(_uv_requirement(), encoding="utf-8")
    if _run(PY, "-m", "pip", "install", "--disable-pip-version-check", *quiet,
            "--require-hashes", "-r", pinned_uv) != 0:
        sys.exit("installing uv (pinned in requirements/lock.txt) failed")
    uv: list[str | Path] = [BIN / "uv", "pip", "install", "--python", PY, *quiet]
    if _run(*uv, "--require-hashes", "-r", LOCK) != 0:
        sys.exit(f"installing {LOCK.relative_to(ROOT)} failed")
    if _run(*uv, "--no-deps", "--no-build-isolation", "-e", ".") != 0:
        sys.exit("installing the project failed")
    STAMP.write_text(wanted)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "help"
    rest = argv[1:]
    if command in ("help", "-h", "--help"):
        print(__doc__)
        return 0
    ensure_venv()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if command == "demo":
        return _run(PY, "-m", "mt5_sync.cli", "demo", *rest, env=env)
    if command == "test":
        return _run(PY, "-m", "pytest", *(rest or ["-q"]), env=env)
    if command == "lint":
        return _run(BIN / "ruff", "check", ".") or _run(PY, "-m", "mypy", ".")
    if command == "bench":
        return _run(PY, "scripts/bench_cycle.py", *rest, env=env)
    if command == "lock":
        return _run(BIN / "uv", *LOCK_COMMAND[1:], *rest, env=env)
    print(f"unknown command {command!r}\n{__doc__}")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
