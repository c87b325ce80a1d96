"""Schema-driven fuzzing (schemathesis) of the served OpenAPI: positive and negative cases for
both operations, over real HTTP to a real uvicorn on loopback, against a real database.

Properties checked on every response: no 5xx; the status code is one the schema documents;
the body matches the documented schema for that code; the content type is documented; and
data the schema forbids is rejected. Bounded: a fixed number of examples per operation,
derandomized so CI runs are repeatable.

Half of the cases are pointed at the caller's real account (so the body reaches the database
and the 202/429 paths) or at an existing sync (GET's 200); the rest keep the generated id
(404 paths). One case in four keeps the generated auth headers (401 paths). The rate-limit
slot is reset before each call so valid bodies are really accepted.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from mt5_sync.api import create_app
from tests.api.conftest import USER_A, Accounts, auth_headers
from tests.api.support import JwksServer, Keys, ServedApp, StubOrchestrator, api_settings, served

MAX_EXAMPLES = 60


@pytest.fixture
def fuzz_app(db_url: str, jwks: JwksServer) -> Iterator[ServedApp]:
    with served(api_settings(db_url, jwks_url=jwks.url), StubOrchestrator()) as server:
        yield server


def _openapi() -> dict:
    """The app's OpenAPI document (building the app does no I/O); the test below checks it
    is exactly what the served app publishes at /openapi.json."""
    app = create_app(api_settings("postgresql://unused@127.0.0.1:9/none"),
                     prefect_api=StubOrchestrator())
    return app.openapi()


# Loaded at import (schemathesis' lazy fixture loader does not support this pytest version).
def _known_sync(accounts: Accounts) -> str:
    """A sync of the caller's account that exists (so GET reaches its 200 path)."""
    rows = accounts.store.fetch_all("select sync_id::text from sync_logs limit 1")
    if rows:
        return str(rows[0]["sync_id"])
    sync_id = str(uuid.uuid4())
    accounts.store.claim_manual_sync_slot(account_id=accounts.a_active, user_id=USER_A,
                                          sync_id=sync_id, sync_type="full", window_s=60)
    return sync_id


schema = schemathesis.openapi.from_dict(_openapi())
schema.config.generation.update(modes=list(schemathesis.GenerationMode),
                                max_examples=MAX_EXAMPLES)


def test_fuzzed_schema_is_the_served_one(fuzz_app: ServedApp) -> None:
    assert httpx.get(f"{fuzz_app.url}/openapi.json").json() == _openapi()


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_fuzz_no_server_errors(
    case: schemathesis.Case, fuzz_app: ServedApp, accounts: Accounts, keys: Keys,
) -> None:
    bucket = zlib.crc32(repr((case.path_parameters, case.body)).encode()) % 4
    params = case.path_parameters or {}
    if "account_id" in params and bucket in (0, 1):
        params["account_id"] = accounts.a_active
    if "sync_id" in params and bucket in (0, 1):
        params["sync_id"] = _known_sync(accounts)
    accounts.store.fetch_all("update trading_accounts set last_manual_sync_at = null")
    headers = None if bucket == 3 else auth_headers(keys.token(USER_A))
    response = case.call(base_url=fuzz_app.url, headers=headers, timeout=30)
    case.validate_response(response, checks=[
        not_a_server_error, status_code_conformance, content_type_conformance,
        response_schema_conformance, negative_data_rejection,
    ])
