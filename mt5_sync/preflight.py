"""What each CLI command needs from its settings, checked before it starts anything.

Without these checks ``mt5-sync sync`` with no database configured started a temporary Prefect
server, ran the flow and ended in a 100-line traceback from deep inside a task. Each check
here raises :class:`PreflightError` with one line that names the setting to fix; the CLI
prints it and exits with 2, the exit code of a usage error (as argparse does).

The checks read settings only (and, for Prefect, one short ``GET /health``): a database that
is configured but down is a runtime failure, reported as such by the command itself.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

import httpx
from pydantic import ValidationError

from mt5_sync.credentials import is_valid_key, parse_public_key
from mt5_sync.settings import Settings, StoreConfig, StoreConfigError, load_settings

#: Exit code of a command whose settings are missing or wrong (argparse's, for usage errors).
EXIT_SETTINGS = 2


class PreflightError(Exception):
    """A setting is missing or wrong; the message is one line naming it."""


def settings() -> Settings:
    """This process's settings, or the first invalid variable as one line.

    pydantic's own message is several lines per error; the first error is enough to fix one
    thing at a time, and its location is the field, spelled here as its variable.
    """
    try:
        return load_settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [str(part) for part in error.get("loc", ())]
        name = ""
        if loc:  # a field name, or the alias it was read from (DATABASE_URL, ...)
            name = (loc[0] if loc[0].isupper() else f"MT5SYNC_{loc[0].upper()}") + ": "
        # The input is not repeated: it may be a secret.
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        raise PreflightError(f"{name}{message}") from None


def database(s: Settings) -> StoreConfig:
    """The store the sync writes to: DATABASE_URL, or SUPABASE_URL with the service key."""
    try:
        return s.require_store_config()
    except StoreConfigError as exc:
        raise PreflightError(str(exc)) from None


def migration_database(s: Settings, explicit: str | None = None) -> str:
    """Migrations need a direct PostgreSQL connection (``--database-url`` or DATABASE_URL)."""
    if explicit:
        return explicit
    if s.database_url is None:
        raise PreflightError(
            "DATABASE_URL (or MT5SYNC_DATABASE_URL) is not set: migrations need a PostgreSQL "
            "connection (or pass --database-url)"
        )
    return s.database_url.get_secret_value()


def credentials_key(s: Settings, *, block_allowed: bool = True) -> None:
    """The key ring that decrypts investor passwords: set, and well-formed.

    ``block_allowed``: a Prefect Secret block named by MT5SYNC_CREDENTIALS_KEY_BLOCK is read by
    the flow itself, so it counts for the sync commands (its contents are checked there).
    """
    if s.credentials_key is None:
        if block_allowed and s.credentials_key_block:
            return
        hint = " or MT5SYNC_CREDENTIALS_KEY_BLOCK" if block_allowed else ""
        raise PreflightError(
            f"MT5SYNC_CREDENTIALS_KEY{hint} is not set: the key that decrypts investor "
            "passwords (make one with `mt5-sync generate-key`)"
        )
    if not is_valid_key(s.credentials_key.get_secret_value()):
        raise PreflightError(
            "MT5SYNC_CREDENTIALS_KEY is not a key ring (x25519-private:... keys and/or "
            "Fernet keys, comma-separated; `mt5-sync generate-key` makes one)"
        )


@dataclass(frozen=True)
class PrefectApi:
    """Where Prefect clients of this process connect, as Prefect itself resolves it."""

    url: str | None
    api_key: str | None = None
    auth_string: str | None = None
    verify: bool | str = True


def prefect_api() -> PrefectApi:
    """Prefect's own resolution (environment, ``.env``, the active profile): the flow's client
    connects where Prefect says, which :class:`Settings` alone cannot know."""
    from prefect.settings import get_current_settings

    api = get_current_settings().api

    def secret(value: object) -> str | None:
        raw = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        return str(raw) if raw else None

    verify: bool | str = True
    if api.tls_insecure_skip_verify:
        verify = False
    elif api.ssl_cert_file:
        verify = str(api.ssl_cert_file)
    return PrefectApi(
        url=api.url, api_key=secret(api.key), auth_string=secret(api.auth_string), verify=verify
    )


def prefect_reachable(api: PrefectApi, timeout_s: float = 5.0) -> None:
    """A configured PREFECT_API_URL answers ``GET /health``; no URL is fine (Prefect then
    starts a temporary local server for the command)."""
    if not api.url:
        return
    headers = {}
    if api.auth_string:
        headers["Authorization"] = "Basic " + base64.b64encode(api.auth_string.encode()).decode()
    elif api.api_key:
        headers["Authorization"] = f"Bearer {api.api_key}"
    url = api.url.rstrip("/")
    try:
        response = httpx.get(f"{url}/health", headers=headers, timeout=timeout_s, verify=api.verify)
    except httpx.HTTPError as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise PreflightError(
            f"PREFECT_API_URL {url} is not reachable: {reason} "
            "(unset it to use a temporary local server)"
        ) from None
    if response.status_code in (401, 403):
        raise PreflightError(
            f"PREFECT_API_URL {url} refused the credentials (HTTP {response.status_code}): "
            "check PREFECT_API_KEY or PREFECT_API_AUTH_STRING"
        )
    if response.status_code != 200:
        raise PreflightError(
            f"PREFECT_API_URL {url} answered HTTP {response.status_code} on /health: is it a "
            "Prefect API URL (ending in /api)?"
        )


# ------------------------------------------------------------------ one check per command


def for_sync(s: Settings | None = None, *, api: PrefectApi | None = None) -> PrefectApi:
    """``sync`` and ``sync-account``: settings, a database, the credentials key, Prefect.

    ``s``: default this process's. ``api``: where Prefect connects (default:
    :func:`prefect_api`, read after the cheap checks, since it imports Prefect). Returns it,
    checked.
    """
    s = s if s is not None else settings()
    database(s)
    credentials_key(s)
    api = api if api is not None else prefect_api()
    prefect_reachable(api, timeout_s=s.prefect_timeout_s)
    return api


def for_migrate(explicit_url: str | None) -> str:
    """``migrate``: the database to migrate."""
    return migration_database(settings(), explicit_url)


def credentials_public_key(s: Settings) -> str:
    """The public key new passwords are sealed to: set, and well-formed."""
    if not s.credentials_public_key:
        raise PreflightError(
            "MT5SYNC_CREDENTIALS_PUBLIC_KEY is not set: the x25519-public:... key that "
            "investor passwords are sealed to (`mt5-sync generate-key` prints it)"
        )
    try:
        parse_public_key(s.credentials_public_key)
    except ValueError:
        raise PreflightError(
            "MT5SYNC_CREDENTIALS_PUBLIC_KEY is not an x25519-public:... key"
        ) from None
    return s.credentials_public_key


def for_encrypt_password() -> str:
    """``encrypt-password``: only the public key (no private key is needed to encrypt)."""
    return credentials_public_key(settings())


def for_credentials_rotate() -> tuple[Settings, str, str]:
    """``credentials rotate``: a database, every private key (the ring itself, not a block
    read elsewhere) and the new public key. Returns (settings, ring, public key)."""
    s = settings()
    database(s)
    credentials_key(s, block_allowed=False)
    assert s.credentials_key is not None
    return s, s.credentials_key.get_secret_value(), credentials_public_key(s)


def for_demo(prefect_api_workers: int | None) -> None:
    """``demo``: nothing from the environment, except Redis for the scaled Prefect layout."""
    if prefect_api_workers is None:
        return
    if prefect_api_workers < 1:
        raise PreflightError("--prefect-api-workers must be at least 1")
    from mt5_sync.localstack import redis_server_binary

    try:
        redis_server_binary()
    except RuntimeError as exc:
        raise PreflightError(str(exc)) from None


def for_prefect_db_prepare() -> None:
    """``prefect-db-prepare``: where Prefect's own database is."""
    if not os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL") and not os.environ.get(
        "PREFECT_SERVER_DATABASE_CONNECTION_URL"
    ):
        raise PreflightError(
            "PREFECT_API_DATABASE_CONNECTION_URL is not set (Prefect's own database)"
        )
