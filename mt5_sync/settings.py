"""One settings object, read from the environment (or ``.env``) at the entry point.

Secrets are ``SecretStr`` so they never print; flows never take settings as parameters
(Prefect stores flow parameters on the server), they build them from the environment of the
worker that runs them.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

TerminalBackend = Literal["simulated", "metatrader5"]


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

    # --- credentials at rest
    credentials_key: SecretStr | None = Field(
        default=None,
        description="Fernet key that decrypts trading_accounts.investor_password_encrypted.",
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
    max_concurrency: int = Field(default=10, ge=1, le=64)
    initial_history_days: int = Field(default=30, ge=1, le=3650)
    history_overlap_hours: float = Field(default=48.0, ge=0)
    fetch_retries: int = Field(default=3, ge=0, le=10)
    commit_retries: int = Field(default=3, ge=0, le=10)
    retry_backoff_s: float = Field(default=2.0, ge=0)
    retry_jitter_factor: float = Field(default=0.5, ge=0, le=2)
    lease_ttl_s: int = Field(default=900, ge=30)
    lease_wait_s: float = Field(default=120.0, ge=0)
    fetch_cache_expiration_s: int = Field(default=3600, ge=0)

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

    def require_database_url(self) -> str:
        if self.database_url is None:
            raise ValueError("DATABASE_URL (or MT5SYNC_DATABASE_URL) is not set")
        return self.database_url.get_secret_value()


@lru_cache(maxsize=1)
def load_settings() -> Settings:
    """Settings of this process, built once from its environment."""
    return Settings()
