"""requirements/lock.txt agrees with pyproject.toml (read statically: no index, no network).

dev.py and CI install the lock, not pyproject's ranges. A dependency added to pyproject but
not to the lock would be missing from every install; a range narrowed past its pin would be
silently ignored. Refresh with ``python3 dev.py lock`` (README, "Installs and the lock").
"""

from __future__ import annotations

import runpy
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
SELF = "mt5-sync"
DIRECT = f"{SELF} (pyproject.toml)"  # uv's annotation for a requirement pyproject names


def _environment(system: str) -> dict[str, str]:
    """Marker variables of a CPython 3.11 on ``system`` (the platforms the lock serves)."""
    windows = system == "Windows"
    return {
        "implementation_name": "cpython", "implementation_version": "3.11.9",
        "os_name": "nt" if windows else "posix",
        "platform_machine": "AMD64" if windows else "x86_64",
        "platform_python_implementation": "CPython", "platform_release": "",
        "platform_system": system, "platform_version": "", "python_full_version": "3.11.9",
        "python_version": "3.11", "sys_platform": "win32" if windows else "linux", "extra": "",
    }


ENVIRONMENTS = {system: _environment(system) for system in ("Linux", "Windows")}


@dataclass
class Pin:
    name: str
    version: Version
    marker: Marker | None
    hashes: int = 0
    via: list[str] = field(default_factory=list)

    def applies(self, environment: dict[str, str]) -> bool:
        return self.marker is None or self.marker.evaluate(environment)


def read_lock(text: str) -> tuple[list[str], list[Pin]]:
    """The lock's header comment lines, and its pins (with hash count and 'via' notes)."""
    header: list[str] = []
    pins: list[Pin] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            note = line.lstrip("#").strip()
            if not pins:
                header.append(note)
                continue
            note = note.removeprefix("via").strip()
            if note:
                pins[-1].via.append(note)
        elif line.startswith("--hash="):
            pins[-1].hashes += 1
        else:
            req = Requirement(line.rstrip("\\").strip())
            [spec] = req.specifier
            assert spec.operator == "==", line
            pins.append(Pin(canonicalize_name(req.name), Version(spec.version), req.marker))
    return header, pins


def project_requirements(pyproject: dict) -> list[Requirement]:
    """Everything an install from the lock must satisfy: dependencies, every extra (dev
    includes scale), and the build backend (dev.py builds without isolation)."""
    project = pyproject["project"]
    names = [*project["dependencies"],
             *(r for extra in project["optional-dependencies"].values() for r in extra),
             *pyproject["build-system"]["requires"]]
    return [r for r in map(Requirement, names) if canonicalize_name(r.name) != SELF]


def disagreements(pyproject: dict, lock_text: str) -> list[str]:
    """Why the lock does not serve pyproject, one line per problem (empty: it does)."""
    _, pins = read_lock(lock_text)
    problems = [f"{p.name}=={p.version} has no hashes" for p in pins if p.hashes == 0]
    for req in project_requirements(pyproject):
        name = canonicalize_name(req.name)
        for system, environment in ENVIRONMENTS.items():
            if req.marker is not None and not req.marker.evaluate(environment):
                continue
            chosen = [p for p in pins if p.name == name and p.applies(environment)]
            if len(chosen) != 1:
                problems.append(f"{req} on {system}: {len(chosen)} pins in the lock")
            elif not req.specifier.contains(chosen[0].version, prereleases=True):
                problems.append(f"{req} on {system}: the lock pins {chosen[0].version}")
    # The other way round: every pin the lock says pyproject asked for, pyproject still asks for.
    named = {canonicalize_name(r.name) for r in project_requirements(pyproject)}
    problems += [f"{p.name} is in the lock for pyproject, which no longer names it"
                 for p in pins if DIRECT in p.via and p.name not in named]
    return problems


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_lock_pins_every_requirement_of_pyproject_on_linux_and_windows():
    assert disagreements(_pyproject(), LOCK.read_text(encoding="utf-8")) == [], (
        "requirements/lock.txt is stale: run `python3 dev.py lock` and commit the lock"
    )


def test_the_check_fails_on_a_stale_lock():
    """The same check on doctored copies: it does see a missing pin, a pin outside the
    range, a Windows-only pin missing, and a pin pyproject dropped."""
    pyproject = _pyproject()
    lock = LOCK.read_text(encoding="utf-8")
    _, pins = read_lock(lock)
    pandas = next(p for p in pins if p.name == "pandas")

    narrowed = _pyproject()
    deps = narrowed["project"]["dependencies"]
    deps[:] = [d if not d.startswith("pandas") else f"pandas>{pandas.version}" for d in deps]
    assert disagreements(narrowed, lock) == [
        f"pandas>{pandas.version} on {s}: the lock pins {pandas.version}" for s in ENVIRONMENTS]

    added = _pyproject()
    added["project"]["dependencies"].append("some-new-package>=1")
    assert disagreements(added, lock) == [
        f"some-new-package>=1 on {s}: 0 pins in the lock" for s in ENVIRONMENTS]

    without_mt5 = lock.replace("metatrader5==", "metatrader5-gone==")
    assert disagreements(pyproject, without_mt5) == [
        "MetaTrader5==5.0.6231; sys_platform == \"win32\" on Windows: 0 pins in the lock",
        "metatrader5-gone is in the lock for pyproject, which no longer names it"]

    dropped = _pyproject()
    dropped["project"]["dependencies"].remove(
        next(d for d in dropped["project"]["dependencies"] if d.startswith("psutil")))
    assert disagreements(dropped, lock) == [
        "psutil is in the lock for pyproject, which no longer names it"]


def test_the_lock_says_how_it_was_made_and_dev_py_remakes_it_the_same_way():
    header, _ = read_lock(LOCK.read_text(encoding="utf-8"))
    command = runpy.run_path(str(ROOT / "dev.py"))["LOCK_COMMAND"]
    assert " ".join(command) in header
    assert "python3 dev.py lock" in (ROOT / "README.md").read_text(encoding="utf-8")
