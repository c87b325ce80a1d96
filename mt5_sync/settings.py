"""One settings object, read from the environment (or ``.env``) at the entry point.

Secrets are ``SecretStr`` so they never print; flows never take settings as parameters
(Prefect stores flow parameters on the server), they build them from the environment of the
worker that runs them.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

TerminalBackend = Literal["simulated", "metatrader5"]
StoreTransport = Literal["auto", "postgres", "supabase"]


def _default_host_name() -> str:
    import socket

    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname().split(".")[0]).strip("-._")
    return name.lower() or "localhost"


def _default_backend() -> TerminalBackend:
    return "metatrader5" if sys.platform == "win32" else "simulated"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MT5SYNC_", env_file=".env", extra="ignore", populate_by_name=True
    )

    # --- where the data goes
    database_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("MT5SYNC_DATABASE_URL", "DATABASE_URL"),
        description="PostgreSQL conninfo/URL (direct, session pooler, or transaction pooler).",
    )
    supabase_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MT5SYNC_SUPABASE_URL", "SUPABASE_URL"),
        description="Supabase project URL (https://<ref>.supabase.co): the supabase-py path.",
    )
    supabase_service_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "MT5SYNC_SUPABASE_SERVICE_KEY", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SECRET_KEY"
        ),
        description="Legacy service_role JWT or a secret key (sb_secret_...). Never anon.",
    )
    store_transport: StoreTransport = Field(
        default="auto",
        description="auto: DATABASE_URL when set, else SUPABASE_URL + key.",
    )
    supabase_timeout_s: float = Field(
        default=60.0, gt=0, le=600, description="Per HTTP request (read/write/pool)."
    )
    supabase_connect_timeout_s: float = Field(default=10.0, gt=0, le=120)
    supabase_chunk_bytes: int = Field(
        default=1_000_000,
        ge=16_384,
        le=50_000_000,
        description="Largest JSON body per request; bigger commits are staged in chunks.",
    )
    supabase_max_attempts: int = Field(default=4, ge=1, le=10)
    supabase_retry_backoff_s: float = Field(default=0.5, ge=0, le=30)
    supabase_http2: bool = Field(
        default=False, description="HTTP/1.1 by default: long-lived HTTP/2 connections drop."
    )

    # --- credentials at rest
    credentials_key: SecretStr | None = Field(
        default=None,
        description="Terminal hosts only: the key ring that decrypts "
        "trading_accounts.investor_password_encrypted -- x25519-private:... keys and/or "
        "legacy Fernet keys, comma-separated (mt5_sync/credentials.py).",
    )
    credentials_public_key: str | None = Field(
        default=None,
        description="x25519-public:... key that new investor passwords are sealed to (the "
        "API, encrypt-password, credentials rotate). Not a secret.",
    )

    # --- terminals
    terminal_backend: TerminalBackend = Field(default_factory=_default_backend)
    terminal_paths: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="One terminal64.exe per slot (portable installs). Empty = simulated slots.",
    )
    terminal_portable: bool = True
    simulated_slots: int = Field(default=10, ge=1, le=64)
    sim_world: Path | None = Field(
        default=None, validation_alias=AliasChoices("MT5SYNC_SIM_WORLD", "MT5SIM_WORLD")
    )
    terminal_timeout_s: float = Field(
        default=60.0, gt=0, description="Hard limit for one account's terminal work."
    )
    terminal_login_timeout_ms: int = Field(default=30_000, gt=0)

    # --- cycle shape
    max_concurrency: int = Field(
        default=10, ge=1, le=64,
        description="Most accounts holding a terminal at once (never more than the slots).",
    )
    queued_accounts: int | None = Field(
        default=None, ge=0, le=256,
        description="Accounts a cycle keeps in flight beyond its terminals: their subflow "
        "created, lease held and window planned, queued for the next free terminal, so no "
        "terminal waits for Prefect's bookkeeping. Default: as many as the terminals.",
    )
    initial_history_days: int = Field(default=30, ge=1, le=3650)
    history_overlap_hours: float = Field(default=48.0, ge=0)
    fetch_retries: int = Field(default=3, ge=0, le=10)
    commit_retries: int = Field(default=3, ge=0, le=10)
    retry_backoff_s: float = Field(default=2.0, ge=0)
    retry_jitter_factor: float = Field(default=0.5, ge=0, le=2)
    lease_ttl_s: int = Field(
        default=30, ge=5, le=3600,
        description="An account's sync lease lasts this long and its holder renews it every "
        "third of it (mt5_sync/sync/leases.py): a host that dies frees its accounts within "
        "one TTL.",
    )
    lease_wait_s: float = Field(
        default=120.0, ge=0,
        description="How long a manual sync waits for another sync of the same account. The "
        "scheduled cycle never waits: it skips that account for this cycle.",
    )
    # --- hosts (flows/sync_trading_data.py: one shard per live host queue)
    host_name: str = Field(
        default_factory=lambda: _default_host_name(),
        min_length=1, max_length=120, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        validation_alias=AliasChoices("MT5SYNC_HOST", "host_name"),
        description="This host's name: its work queue on the pool (`prefect worker start "
        "--work-queue <host>`), and the host named in the cycle summary. Default: the "
        "machine's host name.",
    )
    host_liveness_s: float = Field(
        default=60.0, ge=5,
        description="A host is live when its work queue was polled within this many seconds.",
    )
    shard_deployment: str = Field(
        default="sync-cycle-shard/host-shard",
        description="The deployment a cycle runs on every live host's queue (prefect.yaml).",
    )
    fetch_cache_expiration_s: int = Field(default=3600, ge=0)

    # --- cycle deadline (flows/sync_trading_data.py, mt5_sync/sync/deadline.py)
    cycle_budget_s: float = Field(
        default=270.0,
        ge=0,
        description="Start no account that is expected to end later than this many seconds "
        "after the cycle started (270 of a 5-minute schedule); those are reported 'deferred' "
        "and go first next cycle. 0 = no deadline.",
    )
    estimate_history_syncs: int = Field(
        default=5, ge=1, le=50,
        description="An account's expected duration: median of its last N finished syncs.",
    )
    default_account_estimate_s: float = Field(
        default=10.0, gt=0,
        description="Expected duration of an account without history, before any account "
        "of the cycle has finished (then the cycle's running mean is used).",
    )

    # --- account health (issue 14; supabase/migrations/20261203000400_account_health.sql)
    freshness_slo_s: int = Field(
        default=900, ge=1,
        description="An active account's data older than this (seconds since its last "
        "successful sync) is over the freshness SLO: counted in the cycle summary, state "
        "'stale' in mt5_account_freshness, and part of mt5.cycle.degraded.",
    )
    degraded_failure_rate: float = Field(
        default=0.25, ge=0, le=1,
        description="A cycle whose failed share of the accounts it tried exceeds this emits "
        "mt5.cycle.degraded.",
    )
    server_pause_s: float = Field(
        default=600.0, ge=0,
        description="How long a broker server is left alone after most of its accounts failed "
        "the same transient way in one cycle (0 = never pause a server).",
    )
    server_pause_min_accounts: int = Field(
        default=3, ge=1,
        description="A server is paused only when at least this many of its accounts were tried.",
    )
    server_pause_ratio: float = Field(
        default=0.8, gt=0, le=1,
        description="...and at least this share of them failed with one transient error code.",
    )

    # --- manual sync API (mt5_sync/api; only the API service reads these)
    api_key: SecretStr | None = Field(
        default=None, description="Shared key callers send as X-API-Key (constant-time compare)."
    )
    api_jwt_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("MT5SYNC_API_JWT_SECRET", "SUPABASE_JWT_SECRET"),
        description="Supabase legacy JWT secret: verifies HS256 user tokens.",
    )
    api_jwks_url: str | None = Field(
        default=None,
        description="Supabase JWKS (<SUPABASE_URL>/auth/v1/.well-known/jwks.json): ES256/RS256.",
    )
    api_jwt_issuer: str | None = Field(
        default=None, description="Expected iss of user tokens: <SUPABASE_URL>/auth/v1."
    )
    api_jwt_audience: str = "authenticated"
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=1, le=65535)
    api_db_pool_size: int = Field(default=10, ge=1, le=100)
    manual_sync_deployment: str = Field(
        default="sync-account/manual-sync", description="<flow name>/<deployment name>."
    )
    manual_sync_via: Literal["deployment", "event"] = Field(
        default="deployment",
        description="deployment: create_flow_run with an idempotency key; event: emit "
        "mt5.sync.requested for a deployment trigger.",
    )
    manual_sync_window_s: int = Field(default=60, ge=1, le=86_400)
    manual_sync_default_estimate_s: int = Field(default=30, ge=1)
    prefect_api_url: str | None = Field(
        default=None, validation_alias=AliasChoices("MT5SYNC_PREFECT_API_URL", "PREFECT_API_URL")
    )
    prefect_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("MT5SYNC_PREFECT_API_KEY", "PREFECT_API_KEY")
    )
    prefect_timeout_s: float = Field(default=5.0, gt=0, le=60)

    # --- terminal pool on the host (issue 3: Windows process worker; mt5_sync/terminal)
    terminal_lock_dir: Path | None = Field(
        default=None,
        description="Where the per-install slot locks live; default: next to each "
        "terminal64.exe. Every process on the host must use the same value.",
    )
    terminal_slot_wait_s: float = Field(
        default=300.0,
        ge=0,
        description="How long a fetch waits for a free terminal slot (slots in use by this "
        "process, or locked by another process on the host, e.g. the scheduled cycle).",
    )
    terminal_startup_timeout_s: float = Field(
        default=60.0, gt=0, description="Limit for a terminal worker process to start."
    )
    terminal_kill_hung: bool = Field(
        default=True,
        description="After a timeout, also kill the slot's terminal64.exe (matched by path), "
        "so the next initialize starts a fresh terminal instead of reattaching to a hung one.",
    )
    credentials_key_block: str | None = Field(
        default=None,
        description="Name of a Prefect Secret block holding the key ring; used when "
        "MT5SYNC_CREDENTIALS_KEY is not set (see mt5_sync/secrets.py).",
    )

    @field_validator("terminal_paths", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip().startswith("["):
            return [p.strip() for p in value.split(";") if p.strip()]
        return value

    @model_validator(mode="after")
    def _check_backend(self) -> Settings:
        if self.terminal_backend == "metatrader5" and not self.terminal_paths:
            raise ValueError(
                "MT5SYNC_TERMINAL_PATHS is required with the metatrader5 backend: "
                "one portable terminal64.exe per slot, separated by ';'"
            )
        return self

    @property
    def slot_count(self) -> int:
        return len(self.terminal_paths) or self.simulated_slots

    @property
    def effective_concurrency(self) -> int:
        """One terminal holds one account at a time, so slots cap the fan-out."""
        return min(self.max_concurrency, self.slot_count)

    def in_flight_for(self, terminals: int) -> int:
        """Subflows a cycle keeps in flight to keep ``terminals`` busy."""
        queued = terminals if self.queued_accounts is None else self.queued_accounts
        return terminals + queued

    def require_database_url(self) -> str:
        if self.database_url is None:
            raise ValueError("DATABASE_URL (or MT5SYNC_DATABASE_URL) is not set")
        return self.database_url.get_secret_value()

    def require_store_config(self) -> StoreConfig:
        """Which database transport to use, checked; raises :class:`StoreConfigError`.

        Checked here and not when Settings is built, so commands that need no database
        (``mt5-sync generate-key``) still start without one configured.
        """
        return resolve_store_config(self)


class StoreConfigError(ValueError):
    """The database settings are missing or contradict each other (a startup error)."""


@dataclass(frozen=True)
class StoreConfig:
    """The resolved choice of transport: hashable, so a process can cache its store by it."""

    transport: Literal["postgres", "supabase"]
    database_url: SecretStr | None = None
    supabase_url: str | None = None
    supabase_key: SecretStr | None = None
    timeout_s: float = 60.0
    connect_timeout_s: float = 10.0
    chunk_bytes: int = 1_000_000
    max_attempts: int = 4
    retry_backoff_s: float = 0.5
    http2: bool = False


_KEY_NAMES = "SUPABASE_SERVICE_ROLE_KEY (or SUPABASE_SECRET_KEY)"
_PROJECT_HOST = re.compile(r"^([a-z0-9]{20})\.supabase\.(?:co|in)$")
_DB_HOST = re.compile(r"^db\.([a-z0-9]{20})\.supabase\.(?:co|in)$")
_POOLER_USER = re.compile(r"^[a-z_]+\.([a-z0-9]{20})$")


def _jwt_claims(token: str) -> dict[str, object] | None:
    """The (unverified) claims of a JWT-shaped key; None if it is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        raw = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def _check_service_key(key: str) -> str | None:
    """Reject keys that cannot write (anon/publishable) with a message saying which key is needed.

    Returns the project ref a legacy JWT names (its ``ref`` claim), if any.
    """
    if key.startswith("sb_secret_"):
        return None
    if key.startswith("sb_publishable_"):
        raise StoreConfigError(
            f"{_KEY_NAMES} holds a publishable key (sb_publishable_...): the sync writes as the "
            "service role and needs a secret key (sb_secret_...) or the legacy service_role key"
        )
    claims = _jwt_claims(key)
    if claims is None:
        raise StoreConfigError(
            f"{_KEY_NAMES} is neither a secret key (sb_secret_...) nor a service_role JWT"
        )
    if claims.get("role") != "service_role":
        raise StoreConfigError(
            f"{_KEY_NAMES} is a JWT with role {claims.get('role')!r}; the sync needs the "
            "service_role key (Project Settings > API keys), never the anon key"
        )
    ref = claims.get("ref")
    return ref if isinstance(ref, str) else None


def _check_supabase_url(url: str) -> str | None:
    """Validate the project URL; return its project ref when it is a hosted one."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StoreConfigError(f"SUPABASE_URL must be an http(s) URL, got {url!r}")
    if parts.path.rstrip("/"):
        raise StoreConfigError(
            f"SUPABASE_URL must be the project URL without a path (https://<ref>.supabase.co), "
            f"got {url!r}"
        )
    if parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
        raise StoreConfigError("SUPABASE_URL must use https (plain http only for localhost)")
    match = _PROJECT_HOST.match(parts.hostname)
    return match.group(1) if match else None


def _database_ref(conninfo: str) -> str | None:
    """The Supabase project ref a DATABASE_URL points at (direct host or pooler user)."""
    from urllib.parse import unquote, urlsplit

    if "://" not in conninfo:
        host = re.search(r"\bhost\s*=\s*(\S+)", conninfo)
        user = re.search(r"\buser\s*=\s*(\S+)", conninfo)
        hostname, username = (host.group(1) if host else ""), (user.group(1) if user else "")
    else:
        try:
            parts = urlsplit(conninfo)
            hostname, username = parts.hostname or "", unquote(parts.username or "")
        except ValueError:
            return None
    for pattern, text in ((_DB_HOST, hostname.lower()), (_POOLER_USER, username)):
        match = pattern.match(text)
        if match:
            return match.group(1)
    return None


def resolve_store_config(s: Settings) -> StoreConfig:
    """DATABASE_URL and/or SUPABASE_URL + service key -> one transport, or a clear error.

    Inconsistent means: a URL without its key (or the reverse), a key that cannot write
    (anon/publishable), a malformed URL, a transport forced without its settings, or
    DATABASE_URL, SUPABASE_URL and the key naming different Supabase projects.
    """
    db = s.database_url.get_secret_value() if s.database_url else None
    url = (s.supabase_url or "").strip() or None
    key = s.supabase_service_key.get_secret_value().strip() if s.supabase_service_key else None
    if url and not key:
        raise StoreConfigError(f"SUPABASE_URL is set but {_KEY_NAMES} is not")
    if key and not url:
        raise StoreConfigError(f"{_KEY_NAMES} is set but SUPABASE_URL is not")
    refs: dict[str, str] = {}
    if url and key:
        for name, ref in (("SUPABASE_URL", _check_supabase_url(url)),
                          ("the service key", _check_service_key(key))):
            if ref:
                refs[name] = ref
    if db and (ref := _database_ref(db)):
        refs["DATABASE_URL"] = ref
    if len(set(refs.values())) > 1:
        named = ", ".join(f"{name} -> {ref}" for name, ref in refs.items())
        raise StoreConfigError(f"database settings name different Supabase projects: {named}")

    transport = s.store_transport
    if transport == "auto":
        if not db and not url:
            raise StoreConfigError(
                "no database configured: set DATABASE_URL (direct or session-pooler connection) "
                f"or SUPABASE_URL and {_KEY_NAMES}"
            )
        transport = "postgres" if db else "supabase"
    if transport == "postgres":
        if not db:
            raise StoreConfigError("MT5SYNC_STORE_TRANSPORT=postgres needs DATABASE_URL")
        return StoreConfig("postgres", database_url=s.database_url)
    if not (url and key):
        raise StoreConfigError(
            f"MT5SYNC_STORE_TRANSPORT=supabase needs SUPABASE_URL and {_KEY_NAMES}"
        )
    return StoreConfig(
        "supabase",
        supabase_url=url.rstrip("/"),
        supabase_key=SecretStr(key),
        timeout_s=s.supabase_timeout_s,
        connect_timeout_s=s.supabase_connect_timeout_s,
        chunk_bytes=s.supabase_chunk_bytes,
        max_attempts=s.supabase_max_attempts,
        retry_backoff_s=s.supabase_retry_backoff_s,
        http2=s.supabase_http2,
    )


@lru_cache(maxsize=1)
def load_settings() -> Settings:
    """Settings of this process, built once from its environment."""
    return Settings()
