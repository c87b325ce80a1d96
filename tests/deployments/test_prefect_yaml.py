"""prefect.yaml, read as Prefect reads it: three deployments, the schedule, the trigger."""

from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mt5_sync.deployments import backfill, bootstrap, steps

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())


def by_name(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in config["deployments"]}


def test_four_deployments_on_the_process_pool(config):
    deployments = by_name(config)
    assert set(deployments) == {"scheduled-sync", "host-shard", "manual-sync", "backfill"}
    for d in deployments.values():
        assert d["work_pool"]["name"] == bootstrap.POOL_NAME
        assert d["work_pool"]["job_variables"]["env"]["PYTHONUTF8"] == "1"
        # every run heartbeats, and is tagged so the zombie automation watches it
        env = d["work_pool"]["job_variables"]["env"]
        assert int(env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]) == bootstrap.HEARTBEAT_S
        assert "mt5" in d["tags"]
    assert bootstrap.HEARTBEAT_GRACE_S > 2 * bootstrap.HEARTBEAT_S
    assert deployments["host-shard"]["entrypoint"] == (
        "flows/sync_cycle_shard.py:sync_cycle_shard"
    )
    assert "schedules" not in deployments["host-shard"]  # only ever started by a cycle
    assert deployments["scheduled-sync"]["entrypoint"] == (
        "flows/sync_trading_data.py:sync_trading_data"
    )
    assert deployments["manual-sync"]["entrypoint"] == "flows/sync_account.py:sync_account"
    assert deployments["backfill"]["entrypoint"] == "flows/sync_trading_data.py:sync_trading_data"
    # Resolved on the worker when a run starts, never from the deploying machine's env; from
    # the installed package, since the worker imports it before changing into any folder.
    assert config["pull"] == [
        {"mt5_sync.deployments.steps.set_project_working_directory": {}}
    ]
    assert "{{ $" not in json.dumps(config)  # no deploy-time environment templates at all


def test_schedule_every_five_minutes_utc_never_overlapping(config):
    scheduled = by_name(config)["scheduled-sync"]
    assert scheduled["schedules"] == [{"cron": "*/5 * * * *", "timezone": "UTC", "active": True}]
    assert scheduled["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    assert scheduled["parameters"] == {"trigger": "scheduled", "sync_type": "incremental"}


def test_backfill_is_a_full_sync(config):
    params = by_name(config)["backfill"]["parameters"]
    assert params == {"trigger": "backfill", "sync_type": "full"}
    from mt5_sync.flows.sync_trading_data import sync_trading_data

    accepted = set(inspect.signature(sync_trading_data.fn).parameters)
    assert {"account_ids", "full_from", "sync_type", "trigger"} <= accepted


def test_parameters_name_real_flow_parameters(config):
    from mt5_sync.flows.sync_account import sync_account
    from mt5_sync.flows.sync_cycle_shard import sync_cycle_shard
    from mt5_sync.flows.sync_trading_data import sync_trading_data

    flows = {"sync_account": sync_account, "sync_trading_data": sync_trading_data,
             "sync_cycle_shard": sync_cycle_shard}
    for d in config["deployments"]:
        flow = flows[d["entrypoint"].rsplit(":", 1)[1]]
        accepted = set(inspect.signature(flow.fn).parameters)
        assert set(d.get("parameters", {})) <= accepted, d["name"]
        for trigger in d.get("triggers", []):
            assert set(trigger["parameters"]) <= accepted, d["name"]


def test_the_cycle_starts_shards_with_parameters_the_shard_flow_takes():
    from mt5_sync.flows.sync_cycle_shard import sync_cycle_shard
    from mt5_sync.settings import Settings
    from mt5_sync.tasks.orchestration import SHARD_PARAMETERS

    assert Settings().shard_deployment == "sync-cycle-shard/host-shard"
    assert set(inspect.signature(sync_cycle_shard.fn).parameters) == SHARD_PARAMETERS


def _render(parameters: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """Render trigger parameters exactly as Prefect 3.8's RunDeployment action does."""
    from prefect.events import Event
    from prefect.server.events.actions import RunDeployment
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    params = copy.deepcopy(parameters)
    RunDeployment._upgrade_v1_templates(params)
    event = Event(event="mt5.sync.requested",
                  resource={"prefect.resource.id": f"mt5.account.{payload.get('account_id')}"},
                  payload=payload)
    return dict(hydrate(params, HydrationContext(
        raise_on_error=True, render_jinja=True, jinja_context={"event": event})))


ACCOUNT = "0f6b6c1e-6f0e-4d7e-9a53-3f2b8a1d2c44"
SYNC = "6f1f2a70-94f4-4d3c-8d6e-1f0b8fc0a001"


def test_trigger_renders_typed_parameters_from_the_event(config):
    [trigger] = by_name(config)["manual-sync"]["triggers"]
    assert trigger["expect"] == ["mt5.sync.requested"]
    assert trigger["match"] == {"prefect.resource.id": "mt5.account.*"}
    full = {"account_id": ACCOUNT, "sync_id": SYNC, "sync_type": "full", "sync_history": False,
            "history_days": 7, "account_label": "123@Broker", "trigger": "manual"}
    assert _render(trigger["parameters"], full) == {
        "account_id": ACCOUNT, "sync_id": SYNC, "sync_type": "full", "sync_history": False,
        "history_days": 7, "account_label": "123@Broker", "trigger": "manual"}
    # An emitter that sends only the account gets the flow's defaults, not empty strings.
    assert _render(trigger["parameters"], {"account_id": ACCOUNT}) == {
        "account_id": ACCOUNT, "sync_id": None, "sync_type": "incremental",
        "sync_history": True, "history_days": None, "account_label": ACCOUNT,
        "trigger": "manual"}


def test_trigger_covers_what_the_api_emits(config):
    orchestrator = pytest.importorskip("mt5_sync.api.orchestrator")
    [trigger] = by_name(config)["manual-sync"]["triggers"]
    run = orchestrator.ManualSyncRun(account_id=ACCOUNT, sync_id=SYNC, sync_type="incremental",
                                     sync_history=True, history_days=30, account_label="x")
    assert set(run.parameters()) <= set(trigger["parameters"])
    assert orchestrator.SYNC_REQUESTED_EVENT in trigger["expect"]


def test_backfill_parameters_insist_on_accounts_and_a_past_date():
    params = backfill.backfill_parameters([ACCOUNT.upper()], "2024-01-01")
    assert params == {"account_ids": [ACCOUNT], "full_from": "2024-01-01T00:00:00+00:00",
                      "sync_type": "full", "trigger": "backfill"}
    with pytest.raises(ValueError, match="at least one account"):
        backfill.backfill_parameters([], "2024-01-01")
    with pytest.raises(ValueError):
        backfill.backfill_parameters(["not-a-uuid"], "2024-01-01")
    with pytest.raises(ValueError, match="not in the past"):
        backfill.backfill_parameters([ACCOUNT], "2999-01-01T00:00:00+00:00")


def test_pull_step_changes_into_the_project_on_the_worker(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MT5SYNC_PROJECT_DIR", raising=False)
    assert steps.set_project_working_directory() == {"directory": str(REPO_ROOT)}
    assert Path.cwd() == REPO_ROOT  # the checkout the installed `mt5_sync` comes from
    other = tmp_path / "checkout"
    (other / "flows").mkdir(parents=True)
    (other / "flows" / "sync_account.py").write_text("")
    monkeypatch.setenv("MT5SYNC_PROJECT_DIR", str(other))
    assert steps.set_project_working_directory()["directory"] == str(other)
    assert Path.cwd() == other
    with pytest.raises(FileNotFoundError, match="MT5SYNC_PROJECT_DIR"):
        steps.set_project_working_directory(str(tmp_path / "nowhere"))
