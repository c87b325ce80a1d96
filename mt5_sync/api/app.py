"""The FastAPI application of the manual sync service (its own deployable part).

``create_app`` checks the configuration at start-up -- a service that cannot verify tokens or
reach its database should fail to start, not answer 500 to every request -- and wires the
store, the authenticator and the Prefect adapter into ``app.state`` so tests and the benchmark
can substitute the adapter (``prefect_api=``) without patching.

Error answers are small JSON bodies (``{"detail": ...}``) written here: database errors become
503 (unavailable, retry) or 500 (anything else) with a generic message; the exception text,
which may carry a conninfo, goes only to the log, already redacted by the store.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import CapacityLimiter
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from mt5_sync.api.auth import Authenticator
from mt5_sync.api.orchestrator import Orchestrator, build_orchestrator
from mt5_sync.api.routes import router
from mt5_sync.credentials import parse_public_key
from mt5_sync.errors import StoreUnavailable
from mt5_sync.settings import Settings
from mt5_sync.store.postgres import PooledPostgresStore

log = logging.getLogger(__name__)

DESCRIPTION = """Starts a manual sync of one MetaTrader 5 account as a run of the Prefect
deployment `sync-account/manual-sync`, and reports its outcome from `sync_logs`. Connects new
accounts (the investor password is sealed to the terminal hosts' public key), verifies their
login with a `verify` sync of the same deployment, replaces credentials, deactivates accounts.

Every call needs `X-API-Key` and `Authorization: Bearer <Supabase access token>`.
At most one manual sync per account per minute (429 + Retry-After)."""


def _secret(value: object) -> str | None:
    return value.get_secret_value() if value is not None else None  # type: ignore[attr-defined]


def create_app(settings: Settings, *, prefect_api: Orchestrator | None = None) -> FastAPI:
    """Build the app; raises ``ValueError`` naming what is missing from the configuration.

    Refuses a private credentials key (``MT5SYNC_CREDENTIALS_KEY``/``_BLOCK``): the API seals
    investor passwords with the public key only, and must hold nothing that opens them
    (issue 14: "decrypt only on the terminal host"). Without
    ``MT5SYNC_CREDENTIALS_PUBLIC_KEY`` the service starts, and the endpoints that take a
    password answer 503.
    """
    if settings.credentials_key is not None or settings.credentials_key_block:
        raise ValueError(
            "MT5SYNC_CREDENTIALS_KEY/MT5SYNC_CREDENTIALS_KEY_BLOCK is set: the API must hold "
            "only MT5SYNC_CREDENTIALS_PUBLIC_KEY (private keys belong on the terminal hosts)"
        )
    if settings.credentials_public_key:
        parse_public_key(settings.credentials_public_key)  # ValueError names the problem
    else:
        log.warning("MT5SYNC_CREDENTIALS_PUBLIC_KEY is not set: accounts cannot be connected")
    # Supabase's issuer and JWKS live under the project URL; explicit settings win.
    auth_base = f"{settings.supabase_url.rstrip('/')}/auth/v1" if settings.supabase_url else None
    authenticator = Authenticator(
        api_key=_secret(settings.api_key) or "",
        issuer=settings.api_jwt_issuer or auth_base or "",
        audience=settings.api_jwt_audience,
        hs256_secret=_secret(settings.api_jwt_secret),
        jwks_url=settings.api_jwks_url
        or (f"{auth_base}/.well-known/jwks.json" if auth_base else None),
    )
    store = PooledPostgresStore(settings.require_database_url(), statement_timeout_s=10.0,
                                max_size=settings.api_db_pool_size)
    owns_orchestrator = prefect_api is None
    orchestrator = prefect_api or build_orchestrator(
        api_url=settings.prefect_api_url, api_key=_secret(settings.prefect_api_key),
        via=settings.manual_sync_via, deployment=settings.manual_sync_deployment,
        timeout_s=settings.prefect_timeout_s,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store.open()
        try:
            yield
        finally:
            store.close()
            if owns_orchestrator:
                await orchestrator.aclose()

    app = FastAPI(title="mt5-sync manual sync API", version="1.0.0", description=DESCRIPTION,
                  lifespan=lifespan)
    app.state.config = settings
    app.state.store = store
    app.state.db_limiter = CapacityLimiter(settings.api_db_pool_size)
    app.state.authenticator = authenticator
    app.state.orchestrator = orchestrator
    app.include_router(router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Field, message and type only: the rejected input is not echoed back.
        issues = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""),
                   "type": e.get("type", "")} for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": issues})

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        log.error("database unavailable: %s", exc)
        return JSONResponse(status_code=503, headers={"Retry-After": "5"},
                            content={"detail": "database unavailable; retry shortly"})

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled %s on %s %s: %s", type(exc).__name__, request.method,
                  request.url.path, exc)
        return JSONResponse(status_code=500, content={"detail": "internal error"})

    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` and multi-worker serving: settings from the env."""
    return create_app(Settings())
