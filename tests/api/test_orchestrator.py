"""The Prefect adapter's REST contract, on a mock transport: which endpoints, which body,
retries only where the idempotency key makes them safe, and failures as OrchestratorUnavailable
without secrets. (The real Prefect server is exercised in test_e2e.py.)"""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest

from mt5_sync.api.orchestrator import (
    DeploymentRunStarter,
    EventRunStarter,
    ManualSyncRun,
    OrchestratorUnavailable,
    build_orchestrator,
)

DEPLOYMENT_ID = str(uuid.uuid4())
RUN = ManualSyncRun(account_id=str(uuid.uuid4()), sync_id=str(uuid.uuid4()),
                    sync_type="incremental", sync_history=True, history_days=30,
                    account_label="1001@Demo")


def _starter(handler, **kwargs) -> DeploymentRunStarter:  # type: ignore[no-untyped-def]
    return DeploymentRunStarter("http://prefect.test/api", "sync-account/manual-sync",
                                api_key="pnu_secret", transport=httpx.MockTransport(handler),
                                **kwargs)


def test_creates_a_run_with_the_sync_id_as_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/api/deployments/name/sync-account/manual-sync":
            return httpx.Response(200, json={"id": DEPLOYMENT_ID})
        assert request.url.path == f"/api/deployments/{DEPLOYMENT_ID}/create_flow_run"
        return httpx.Response(201, json={"id": "11111111-1111-4111-8111-111111111111"})

    starter = _starter(handler)
    assert asyncio.run(starter.start(RUN)) == "11111111-1111-4111-8111-111111111111"
    body = json.loads(seen[-1].content)
    assert body["idempotency_key"] == RUN.sync_id
    assert body["parameters"] == {**RUN.parameters(), "trigger": "manual"}
    assert seen[-1].headers["authorization"] == "Bearer pnu_secret"
    asyncio.run(starter.start(RUN))
    assert len(seen) == 3  # the deployment id is resolved once


def test_lost_replies_are_retried_with_the_same_key() -> None:
    keys: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if "name" in request.url.path:
            return httpx.Response(200, json={"id": DEPLOYMENT_ID})
        keys.append(json.loads(request.content)["idempotency_key"])
        if len(keys) == 1:
            raise httpx.ReadTimeout("lost")
        if len(keys) == 2:
            return httpx.Response(503)
        return httpx.Response(200, json={"id": "22222222-2222-4222-8222-222222222222"})

    assert asyncio.run(_starter(handler).start(RUN)) == "22222222-2222-4222-8222-222222222222"
    assert keys == [RUN.sync_id] * 3


def test_recreated_deployment_is_resolved_again() -> None:
    ids = iter([DEPLOYMENT_ID, "33333333-3333-4333-8333-333333333333"])
    posted: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if "name" in request.url.path:
            return httpx.Response(200, json={"id": next(ids)})
        posted.append(request.url.path)
        if DEPLOYMENT_ID in request.url.path:
            return httpx.Response(404, json={"detail": "Deployment not found"})
        return httpx.Response(201, json={"id": "44444444-4444-4444-8444-444444444444"})

    assert asyncio.run(_starter(handler).start(RUN)) is not None
    assert len(posted) == 2


@pytest.mark.parametrize("failure", ["refused", "missing_deployment", "server_error", "409"])
def test_failures_raise_unavailable_without_secrets(failure: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if failure == "refused":
            raise httpx.ConnectError("connection refused")
        if failure == "missing_deployment":
            return httpx.Response(404, json={"detail": "Deployment not found"})
        if "name" in request.url.path:
            return httpx.Response(200, json={"id": DEPLOYMENT_ID})
        return httpx.Response(500 if failure == "server_error" else 409, text="pnu_secret")

    with pytest.raises(OrchestratorUnavailable) as info:
        asyncio.run(_starter(handler).start(RUN))
    assert "pnu_secret" not in str(info.value)


def test_event_mode_emits_one_sync_requested_event() -> None:
    posted: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        posted.append(request)
        return httpx.Response(204)

    starter = EventRunStarter("http://prefect.test/api", transport=httpx.MockTransport(handler))
    assert asyncio.run(starter.start(RUN)) is None
    [request] = posted
    assert request.url.path == "/api/events"
    [event] = json.loads(request.content)
    assert event["event"] == "mt5.sync.requested"
    assert event["id"] == RUN.sync_id
    assert event["resource"]["prefect.resource.id"] == f"mt5.account.{RUN.account_id}"
    assert event["payload"]["sync_id"] == RUN.sync_id


def test_build_orchestrator_checks_configuration() -> None:
    with pytest.raises(ValueError, match="PREFECT_API_URL"):
        build_orchestrator(api_url=None, api_key=None, via="deployment",
                           deployment="sync-account/manual-sync", timeout_s=1)
    with pytest.raises(ValueError, match="<flow>/<deployment>"):
        build_orchestrator(api_url="http://x/api", api_key=None, via="deployment",
                           deployment="manual-sync", timeout_s=1)
    assert isinstance(build_orchestrator(api_url="http://x/api", api_key=None, via="event",
                                         deployment="a/b", timeout_s=1), EventRunStarter)
