"""The only place the API talks to Prefect: start one manual sync run.

Why plain REST (httpx) and not ``prefect.client``: the API service then needs neither Prefect's
settings nor its profile, every call has an explicit timeout, and the same two endpoints work
on a self-hosted server and on Prefect Cloud (``Authorization: Bearer <PREFECT_API_KEY>``).

Two ways to start the run (``MT5SYNC_MANUAL_SYNC_VIA``):

* ``deployment`` (default): ``POST /deployments/{id}/create_flow_run`` with
  ``idempotency_key = sync_id``. Retrying after a lost reply is therefore safe -- the server
  returns the run it already made -- so transport errors are retried a few times before
  giving up.
* ``event``: ``POST /events`` with one ``mt5.sync.requested`` event (event id = sync_id); a
  deployment trigger in ``prefect.yaml`` turns it into the same run.

Anything else than a created run raises :class:`OrchestratorUnavailable`; its message names
the failure class, never the API key or response bodies.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import httpx

from mt5_sync.clock import utc_now

log = logging.getLogger(__name__)

SYNC_REQUESTED_EVENT = "mt5.sync.requested"
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class OrchestratorUnavailable(Exception):
    """The run could not be handed to Prefect; the caller gives the rate-limit slot back."""


@dataclass(frozen=True)
class ManualSyncRun:
    """Parameters of one manual run of the ``sync-account`` flow."""

    account_id: str
    sync_id: str
    sync_type: str
    sync_history: bool
    history_days: int
    account_label: str

    def parameters(self) -> dict[str, Any]:
        return {**asdict(self), "trigger": "manual"}


class Orchestrator(Protocol):
    """What the routes need from Prefect; tests and the benchmark substitute a stub."""

    async def start(self, run: ManualSyncRun) -> str | None:
        """Hand the run over; return the flow run id when known (None for events)."""
        ...

    async def aclose(self) -> None: ...


class _PrefectRest:
    """Shared HTTP plumbing: base URL, auth header, timeouts, retries of idempotent calls."""

    def __init__(
        self,
        api_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 5.0,
        attempts: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=api_url.rstrip("/") + "/", headers=headers, timeout=timeout_s,
            transport=transport,
        )
        self._attempts = max(1, attempts)

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send an idempotent request; retry transport errors and 5xx/429 with short backoff."""
        what = f"{method} {path.split('/')[0]}"
        for attempt in range(1, self._attempts + 1):
            try:
                response = await self._client.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            else:
                if response.status_code not in _RETRYABLE_STATUS:
                    return response
                reason = f"HTTP {response.status_code}"
            log.warning("Prefect %s failed (%s), attempt %d/%d", what, reason, attempt,
                        self._attempts)
            if attempt < self._attempts:
                await asyncio.sleep(0.2 * 2 ** (attempt - 1))
        raise OrchestratorUnavailable(f"Prefect API unreachable ({reason})")

    async def aclose(self) -> None:
        await self._client.aclose()


class DeploymentRunStarter(_PrefectRest):
    """Creates a flow run of the manual-sync deployment, addressed by ``flow/deployment`` name."""

    def __init__(self, api_url: str, deployment: str, **kwargs: Any) -> None:
        super().__init__(api_url, **kwargs)
        if deployment.count("/") != 1:
            raise ValueError(f"deployment must be '<flow>/<deployment>', got {deployment!r}")
        self._deployment = deployment
        self._deployment_id: str | None = None

    async def _resolve(self) -> str:
        if self._deployment_id is None:
            response = await self._send("GET", f"deployments/name/{self._deployment}")
            if response.status_code == 404:
                raise OrchestratorUnavailable(f"deployment {self._deployment} not found")
            if response.status_code != 200:
                raise OrchestratorUnavailable(
                    f"reading deployment {self._deployment}: HTTP {response.status_code}"
                )
            self._deployment_id = str(response.json()["id"])
        return self._deployment_id

    async def start(self, run: ManualSyncRun) -> str | None:
        body = {"parameters": run.parameters(), "idempotency_key": run.sync_id,
                "name": f"manual-{run.account_label}-{run.sync_id[:8]}"}
        for _ in range(2):  # a second pass re-resolves a deployment that was re-created
            deployment_id = await self._resolve()
            response = await self._send(
                "POST", f"deployments/{deployment_id}/create_flow_run", json=body
            )
            if response.status_code in (200, 201):
                return str(response.json()["id"])
            if response.status_code != 404:
                break
            self._deployment_id = None
        raise OrchestratorUnavailable(f"create_flow_run: HTTP {response.status_code}")


class EventRunStarter(_PrefectRest):
    """Emits ``mt5.sync.requested``; the deployment's trigger starts the run."""

    async def start(self, run: ManualSyncRun) -> str | None:
        event = {
            "id": str(uuid.UUID(run.sync_id)),
            "occurred": utc_now().isoformat(),
            "event": SYNC_REQUESTED_EVENT,
            "resource": {
                "prefect.resource.id": f"mt5.account.{run.account_id}",
                "prefect.resource.name": run.account_label,
            },
            "payload": run.parameters(),
        }
        response = await self._send("POST", "events", json=[event])
        if response.status_code not in (200, 202, 204):
            raise OrchestratorUnavailable(f"emitting {SYNC_REQUESTED_EVENT}: HTTP "
                                          f"{response.status_code}")
        return None


def build_orchestrator(
    *,
    api_url: str | None,
    api_key: str | None,
    via: str,
    deployment: str,
    timeout_s: float,
) -> Orchestrator:
    """The configured starter; fails at start-up (not per request) when misconfigured."""
    if not api_url:
        raise ValueError("PREFECT_API_URL (or MT5SYNC_PREFECT_API_URL) is not set")
    if via == "event":
        return EventRunStarter(api_url, api_key=api_key, timeout_s=timeout_s)
    return DeploymentRunStarter(api_url, deployment, api_key=api_key, timeout_s=timeout_s)
