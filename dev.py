#!/usr/bin/env python3
"""Bootstrap and run: the only thing a fresh machine needs is Python 3.11.

    python3 dev.py demo     # venv + install, embedded stack, one full cycle, summary
    python3 dev.py test     # venv + install, the whole test suite (what CI runs)
    python3 dev.py lint     # ruff + mypy
    python3 dev.py bench    # the cycle benchmark (see docs/benchmarks.md)

The virtualenv lives in .venv and is reinstalled only when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".installed-from"


def _run(*cmd: str | Path, env: dict[str, str] | None = None) -> int:
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, env=env)


def ensure_venv() -> None:
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"mt5-sync needs Python 3.11 (this is {sys.version.split()[0]})")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if PY.exists() and STAMP.exists() and STAMP.read_text().strip() == wanted:
        return
    if not PY.exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing mt5-sync and its dependencies into .venv (about a minute) ...", flush=True)
    quiet = [] if os.environ.get("CI") else ["-q"]
    if _run(PY, "-m", "pip", "install", *quiet, "--upgrade", "pip") != 0:
        sys.exit("pip upgrade failed")
    if _run(PY, "-m", "pip", "install", *quiet, "-e", ".[dev]") != 0:
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
        return _run(PY, "-m", "mt5_sync.cli", "bench", *rest, env=env)
    print(f"unknown command {command!r}\n{__doc__}")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
