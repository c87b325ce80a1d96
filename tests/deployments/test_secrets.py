"""The credentials key: from the worker's environment, or from a Prefect Secret block."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr

from mt5_sync import secrets
from mt5_sync.errors import CredentialsError
from mt5_sync.settings import Settings


@pytest.fixture(autouse=True)
def _fresh_cache():
    secrets.forget_cached_keys()
    yield
    secrets.forget_cached_keys()


def test_environment_key_wins_and_needs_no_api():
    settings = Settings(credentials_key=SecretStr("env-key"), credentials_key_block="unused")
    assert asyncio.run(secrets.aresolve_credentials_key(settings)) == "env-key"
    assert secrets.resolve_credentials_key(Settings(credentials_key=None)) is None


def test_key_from_a_prefect_secret_block(prefect_server, monkeypatch):
    from prefect.blocks.system import Secret
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("MT5SYNC_CREDENTIALS_KEY", raising=False)
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        Secret(value="block-key").save("mt5sync-test-key", overwrite=True)
        settings = Settings(credentials_key=None, credentials_key_block="mt5sync-test-key")
        assert secrets.resolve_credentials_key(settings) == "block-key"
        # cached per process: a second read does not go to the API
        Secret(value="rotated").save("mt5sync-test-key", overwrite=True)
        assert secrets.resolve_credentials_key(settings) == "block-key"
        secrets.forget_cached_keys()
        assert secrets.resolve_credentials_key(settings) == "rotated"
        with pytest.raises(CredentialsError, match="not found"):
            secrets.resolve_credentials_key(
                Settings(credentials_key=None, credentials_key_block="no-such-block"))
