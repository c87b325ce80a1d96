"""Fixtures of the API tests: a fresh migrated database with two users' accounts, a local
JWKS host, and the app served by a real uvicorn on loopback with a stub Prefect adapter."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from mt5_sync.store.postgres import PostgresStore
from tests.api.support import (
    API_KEY,
    JwksServer,
    Keys,
    ServedApp,
    StubOrchestrator,
    api_settings,
    served,
)

USER_A = "00000000-0000-4000-8000-00000000000a"
USER_B = "00000000-0000-4000-8000-00000000000b"


@dataclass
class Accounts:
    store: PostgresStore
    a_active: str
    a_inactive: str
    b_active: str

    def add(self, user_id: str, login: int, *, active: bool = True) -> str:
        return self.store.register_account(
            user_id=user_id, login_number=login, broker_server="Demo-Server",
            broker_name="Demo", investor_password_encrypted="not-used-by-the-api",
            server_time_rule="utc", is_active=active,
        )


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys()


@pytest.fixture(scope="session")
def jwks(keys: Keys) -> Iterator[JwksServer]:
    server = JwksServer(keys)
    yield server
    server.close()


@pytest.fixture
def accounts(db_url: str) -> Accounts:
    store = PostgresStore(db_url)
    acc = Accounts(store, "", "", "")
    acc.a_active = acc.add(USER_A, 1001)
    acc.a_inactive = acc.add(USER_A, 1002, active=False)
    acc.b_active = acc.add(USER_B, 2001)
    return acc


@pytest.fixture
def stub() -> StubOrchestrator:
    return StubOrchestrator()


@pytest.fixture
def api(db_url: str, jwks: JwksServer, stub: StubOrchestrator) -> Iterator[ServedApp]:
    with served(api_settings(db_url, jwks_url=jwks.url), stub) as server:
        yield server


@pytest.fixture
def client(api: ServedApp) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=30) as c:
        yield c


def auth_headers(token: str | None, api_key: str | None = API_KEY) -> dict[str, str]:
    headers = {}
    if api_key is not None:
        headers["X-API-Key"] = api_key
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers
