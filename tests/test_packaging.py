"""What installing mt5-sync adds to an environment: the one import name ``mt5_sync``.

The repository keeps top-level ``flows/``, ``tasks/`` and ``deployments/`` folders (prefect.yaml's
entrypoints, the worker script), but an environment that also runs another Prefect project
often has its own ``flows`` package: installing ours under that name would shadow it or be
shadowed by it. These tests build the real wheel, look into the installed environment, and
check that the entrypoint files still hand Prefect the very flow objects of ``mt5_sync.flows``.
"""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
GENERIC = ("flows", "tasks", "deployments")
# what setuptools reads to build the wheel (everything else is ignored by its package finder)
BUILD_INPUTS = ("pyproject.toml", "README.md", "mt5_sync", *GENERIC)


def _build_wheel(tmp_path: Path) -> tuple[Path, str]:
    """Build the wheel from a copy of the sources with the environment's own setuptools
    (the locked one dev.py builds the editable install with), no network, no build/ left in
    the checkout. Returns the wheel and everything the build printed."""
    src = tmp_path / "src"
    for name in BUILD_INPUTS:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(path, src / name)
    out = tmp_path / "dist"
    # (PYTHONDONTWRITEBYTECODE, set on some machines, only adds setuptools' note that it
    # skipped byte-compiling)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c",
         "import sys, setuptools.build_meta as b; print(b.build_wheel(sys.argv[1]))", str(out)],
        cwd=src, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out / done.stdout.strip().splitlines()[-1], done.stdout + done.stderr


def test_the_wheel_installs_mt5_sync_only_and_builds_without_warnings(tmp_path):
    wheel, output = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/", 1)[0] for n in names}
    assert top_level == {"mt5_sync", "mt5_sync-0.1.0.dist-info"}, sorted(top_level)
    for name in ("mt5_sync/flows/sync_account.py", "mt5_sync/flows/sync_trading_data.py",
                 "mt5_sync/tasks/terminal.py", "mt5_sync/deployments/steps.py"):
        assert name in names
    dist_info = "mt5_sync-0.1.0.dist-info"
    with zipfile.ZipFile(wheel) as zf:
        if f"{dist_info}/top_level.txt" in names:
            assert zf.read(f"{dist_info}/top_level.txt").decode().split() == ["mt5_sync"]
    # The old configuration built quietly too, with flows/, tasks/ and deployments/ at the
    # wheel's top level: the check above is the one that failed then. This one keeps the
    # build free of warnings (a package half-included, a deprecated setting).
    warnings = [line for line in output.splitlines() if "warn" in line.lower()]
    assert warnings == [], output


PROBE = """
import importlib.util, json, sys
import mt5_sync.deployments.steps, mt5_sync.flows.sync_trading_data
found = {}
for name in sys.argv[1:]:
    spec = importlib.util.find_spec(name)
    found[name] = None if spec is None else [spec.origin, *(spec.submodule_search_locations or [])]
print(json.dumps(found))
"""


def test_the_installed_environment_has_no_generic_top_level_names(tmp_path):
    """In the dev venv (an editable install), from a folder that is not the checkout, with
    no PYTHONPATH (-I): ``mt5_sync.flows`` imports, the generic names lead to nothing of ours."""
    done = subprocess.run([sys.executable, "-I", "-c", PROBE, *GENERIC], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    # None: not importable at all; a path elsewhere would be another project's, not ours
    ours = {name: paths for name, paths in found.items()
            if paths and any(str(p or "").startswith(str(REPO_ROOT)) for p in paths)}
    assert ours == {}, found


def test_entrypoint_files_hand_prefect_the_package_flows():
    """prefect.yaml's entrypoints, loaded as Prefect loads them (by file path), are the flow
    objects of ``mt5_sync.flows``: same names, same functions, one object."""
    from prefect.flows import load_flow_from_entrypoint

    from mt5_sync.flows.sync_account import sync_account
    from mt5_sync.flows.sync_trading_data import sync_trading_data

    for entrypoint, flow, name in (
        ("flows/sync_trading_data.py:sync_trading_data", sync_trading_data, "sync-trading-data"),
        ("flows/sync_account.py:sync_account", sync_account, "sync-account"),
    ):
        loaded = load_flow_from_entrypoint(str(REPO_ROOT / entrypoint))
        assert loaded is flow
        assert loaded.name == name


@pytest.mark.parametrize("module", ["database", "terminal"])
def test_top_level_task_files_re_export_every_task(module):
    from prefect import Task

    package = __import__(f"mt5_sync.tasks.{module}", fromlist=["_"])
    defined = {k: v for k, v in vars(package).items() if isinstance(v, Task)}
    shim = runpy.run_path(str(REPO_ROOT / "tasks" / f"{module}.py"))
    assert set(shim["__all__"]) == set(defined)
    assert all(shim[name] is task for name, task in defined.items())


def test_the_fetch_cache_key_does_not_depend_on_the_module_path():
    """The fetch's persisted result is found by its cache key alone (no task source, no
    module name): runs cached before the move to mt5_sync.tasks are still found after it."""
    from prefect.cache_policies import CacheKeyFnPolicy

    from mt5_sync.tasks.terminal import fetch_account_snapshot

    policy = fetch_account_snapshot.cache_policy
    assert isinstance(policy, CacheKeyFnPolicy)
    key = policy.compute_key(None, {"account_id": "a1", "sync_id": "s1"}, {})
    assert key == "mt5-fetch-a1-s1"


@pytest.mark.parametrize("command", [
    ["-m", "mt5_sync.deployments.bootstrap", "--help"],  # documented: works from anywhere
    ["-m", "mt5_sync.deployments.backfill", "--help"],
])
def test_deployment_commands_run_from_any_folder(tmp_path, command):
    done = subprocess.run([sys.executable, "-I", *command], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


@pytest.mark.parametrize("module", ["deployments.bootstrap", "deployments.backfill"])
def test_old_deployment_commands_still_run_from_the_checkout(module):
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
