"""Settings pick the transport; missing or contradictory database settings fail clearly."""

from __future__ import annotations

from typing import Any

import pytest

from mt5_sync.settings import Settings, StoreConfigError
from mt5_sync.store import PostgresStore
from mt5_sync.store.factory import Store, make_store

from .postgrest_standin import ANON_JWT, SB_PUBLISHABLE, SB_SECRET, SERVICE_JWT, make_jwt

REF = "abcdefghijklmnopqrst"
URL = f"https://{REF}.supabase.co"
DIRECT = f"postgresql://postgres:pw@db.{REF}.supabase.co:5432/postgres"
POOLER = f"postgresql://postgres.{REF}:pw@aws-0-eu-central-1.pooler.supabase.com:5432/postgres"
ENV_NAMES = ("DATABASE_URL", "MT5SYNC_DATABASE_URL", "SUPABASE_URL", "MT5SYNC_SUPABASE_URL",
             "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SECRET_KEY", "MT5SYNC_SUPABASE_SERVICE_KEY",
             "MT5SYNC_STORE_TRANSPORT")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> pytest.MonkeyPatch:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def settings(env: pytest.MonkeyPatch, **values: str) -> Settings:
    for name, value in values.items():
        env.setenv(name, value)
    return Settings()


def test_settings_build_without_any_database(env: pytest.MonkeyPatch) -> None:
    s = settings(env)  # what `mt5-sync generate-key` needs
    with pytest.raises(StoreConfigError, match=r"no database configured.*DATABASE_URL.*SUPABASE"):
        s.require_store_config()
    with pytest.raises(ValueError, match="DATABASE_URL"):
        s.require_database_url()


def test_database_url_alone_picks_the_direct_path(env: pytest.MonkeyPatch) -> None:
    s = settings(env, DATABASE_URL="postgresql://postgres@localhost/app")
    assert s.require_database_url() == "postgresql://postgres@localhost/app"
    store = make_store(s)
    assert isinstance(store, PostgresStore) and isinstance(store, Store)


@pytest.mark.parametrize("key_env", ["SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SECRET_KEY",
                                     "MT5SYNC_SUPABASE_SERVICE_KEY"])
@pytest.mark.parametrize("key", [SB_SECRET, SERVICE_JWT])
def test_url_and_service_key_pick_supabase_py(env: pytest.MonkeyPatch, key_env: str,
                                              key: str) -> None:
    from mt5_sync.store.supabase_rest import SupabaseRestStore

    s = settings(env, SUPABASE_URL=URL + "/", **{key_env: key},
                 MT5SYNC_SUPABASE_TIMEOUT_S="7.5", MT5SYNC_SUPABASE_CHUNK_BYTES="500000")
    config = s.require_store_config()
    assert (config.transport, config.supabase_url, config.timeout_s, config.chunk_bytes,
            config.http2) == ("supabase", URL, 7.5, 500_000, False)
    assert key not in repr(config) and key not in repr(s)
    store = make_store(s)
    assert isinstance(store, SupabaseRestStore) and isinstance(store, Store)
    store.close()


def test_both_configured_prefers_direct_unless_told(env: pytest.MonkeyPatch) -> None:
    s = settings(env, DATABASE_URL=POOLER, SUPABASE_URL=URL, SUPABASE_SECRET_KEY=SB_SECRET)
    assert s.require_store_config().transport == "postgres"
    env.setenv("MT5SYNC_STORE_TRANSPORT", "supabase")
    assert Settings().require_store_config().transport == "supabase"


@pytest.mark.parametrize(("values", "message"), [
    ({"SUPABASE_URL": URL}, "SUPABASE_URL is set but SUPABASE_SERVICE_ROLE_KEY"),
    ({"SUPABASE_SECRET_KEY": SB_SECRET}, "is set but SUPABASE_URL is not"),
    ({"SUPABASE_URL": URL, "SUPABASE_SERVICE_ROLE_KEY": ANON_JWT}, "role 'anon'"),
    ({"SUPABASE_URL": URL, "SUPABASE_SECRET_KEY": SB_PUBLISHABLE}, "publishable key"),
    ({"SUPABASE_URL": URL, "SUPABASE_SECRET_KEY": "hunter2"}, "neither a secret key"),
    ({"SUPABASE_URL": f"{URL}/rest/v1", "SUPABASE_SECRET_KEY": SB_SECRET}, "without a path"),
    ({"SUPABASE_URL": f"http://{REF}.supabase.co", "SUPABASE_SECRET_KEY": SB_SECRET}, "https"),
    ({"SUPABASE_URL": "db.example.com", "SUPABASE_SECRET_KEY": SB_SECRET}, "http"),
    ({"DATABASE_URL": DIRECT.replace(REF, "zyxwvutsrqponmlkjihg"), "SUPABASE_URL": URL,
      "SUPABASE_SECRET_KEY": SB_SECRET}, "different Supabase projects"),
    ({"SUPABASE_URL": URL, "SUPABASE_SERVICE_ROLE_KEY": make_jwt(
        "service_role", ref="zyxwvutsrqponmlkjihg")}, "different Supabase projects"),
    ({"MT5SYNC_STORE_TRANSPORT": "supabase", "DATABASE_URL": DIRECT}, "needs SUPABASE_URL"),
    ({"MT5SYNC_STORE_TRANSPORT": "postgres", "SUPABASE_URL": URL,
      "SUPABASE_SECRET_KEY": SB_SECRET}, "needs DATABASE_URL"),
])
def test_inconsistent_settings_fail_clearly(env: pytest.MonkeyPatch, values: dict[str, str],
                                            message: str) -> None:
    s = settings(env, **values)  # building settings never fails on database config
    with pytest.raises(StoreConfigError, match=message) as caught:
        make_store(s)
    for secret in (SB_SECRET, ANON_JWT, "pw@"):
        assert secret not in str(caught.value)


def test_matching_project_refs_are_consistent(env: pytest.MonkeyPatch) -> None:
    for db in (DIRECT, POOLER, f"host=db.{REF}.supabase.co user=postgres password=pw"):
        s = settings(env, DATABASE_URL=db, SUPABASE_URL=URL, SUPABASE_SERVICE_ROLE_KEY=SERVICE_JWT)
        assert s.require_store_config().transport == "postgres"


def test_local_supabase_over_http_is_allowed(env: pytest.MonkeyPatch) -> None:
    s = settings(env, SUPABASE_URL="http://127.0.0.1:54321", SUPABASE_SECRET_KEY=SB_SECRET)
    assert s.require_store_config().supabase_url == "http://127.0.0.1:54321"


def test_the_runtime_builds_one_store_per_configuration(env: pytest.MonkeyPatch) -> None:
    from mt5_sync.settings import load_settings
    from mt5_sync.store.supabase_rest import SupabaseRestStore
    from mt5_sync.tasks import runtime

    def fresh() -> None:
        load_settings.cache_clear()

    env.setenv("DATABASE_URL", "postgresql://postgres@localhost/app")
    fresh()
    try:
        first = runtime.store()
        assert isinstance(first, PostgresStore) and runtime.store() is first
        env.setenv("SUPABASE_URL", "http://127.0.0.1:54321")
        env.setenv("SUPABASE_SECRET_KEY", SB_SECRET)
        env.setenv("MT5SYNC_STORE_TRANSPORT", "supabase")
        fresh()
        second = runtime.store()
        assert isinstance(second, SupabaseRestStore) and runtime.store() is second
    finally:
        fresh()
        runtime.close_stores()
