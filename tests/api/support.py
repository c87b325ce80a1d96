"""Test plumbing for the API: real uvicorn servers on loopback, token minting, a JWKS host,
a stub Prefect adapter, and a TCP proxy that can take Prefect "down" and back up."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from mt5_sync.api import create_app
from mt5_sync.api.orchestrator import ManualSyncRun, OrchestratorUnavailable
from mt5_sync.credentials import generate_key, public_key_text
from mt5_sync.localstack import free_port
from mt5_sync.settings import Settings

ISSUER = "http://127.0.0.1:54321/auth/v1"
API_KEY = "test-api-key-0123456789abcdef"
HS_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
#: The terminal hosts' key pair: the API gets only the public half.
HOST_PRIVATE_KEY = generate_key()
HOST_PUBLIC_KEY = public_key_text(HOST_PRIVATE_KEY)


@dataclass
class Keys:
    """Signing material of a fake Supabase project: the legacy secret and two JWKS keys."""

    ec_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    rsa_key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048))
    ec_kid: str = "ec-key-1"
    rsa_kid: str = "rsa-key-1"

    def jwks(self) -> dict[str, Any]:
        ec_jwk = ECAlgorithm.to_jwk(self.ec_key.public_key(), as_dict=True)
        rsa_jwk = RSAAlgorithm.to_jwk(self.rsa_key.public_key(), as_dict=True)
        return {"keys": [
            {**ec_jwk, "kid": self.ec_kid, "alg": "ES256", "use": "sig"},
            {**rsa_jwk, "kid": self.rsa_kid, "alg": "RS256", "use": "sig"},
        ]}

    def token(self, user_id: str, *, alg: str = "HS256", **overrides: Any) -> str:
        """A Supabase-shaped access token; ``overrides`` replace claims (None removes one)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": user_id, "aud": "authenticated", "iss": ISSUER, "role": "authenticated",
            "iat": now, "exp": now + 3600, "email": "user@example.com", "session_id": "s",
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        if alg == "HS256":
            return jwt.encode(claims, HS_SECRET, algorithm="HS256")
        if alg == "ES256":
            return jwt.encode(claims, self.ec_key, algorithm="ES256",
                              headers={"kid": self.ec_kid})
        if alg == "RS256":
            return jwt.encode(claims, self.rsa_key, algorithm="RS256",
                              headers={"kid": self.rsa_kid})
        raise ValueError(alg)


class JwksServer:
    """Serves ``/auth/v1/.well-known/jwks.json`` on 127.0.0.1 like a Supabase project."""

    def __init__(self, keys: Keys) -> None:
        body = json.dumps(keys.jwks()).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if self.path.endswith("jwks.json") else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/auth/v1/.well-known/jwks.json"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class StubOrchestrator:
    """Records the runs it was given; ``fail`` makes it behave like an unreachable Prefect."""

    def __init__(self) -> None:
        self.runs: list[ManualSyncRun] = []
        self.fail: bool | Exception = False

    async def start(self, run: ManualSyncRun) -> str | None:
        if isinstance(self.fail, Exception):
            raise self.fail
        if self.fail:
            raise OrchestratorUnavailable("Prefect API unreachable (ConnectError)")
        self.runs.append(run)
        return str(uuid.uuid4())

    async def aclose(self) -> None:
        pass


def api_settings(db_url: str, *, jwks_url: str | None = None, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url, "api_key": API_KEY, "api_jwt_secret": HS_SECRET,
        "api_jwks_url": jwks_url, "api_jwt_issuer": ISSUER,
        "prefect_api_url": "http://127.0.0.1:9/api", "terminal_backend": "simulated",
        "credentials_key": None, "credentials_key_block": None,
        "credentials_public_key": HOST_PUBLIC_KEY,
    }
    values.update(extra)
    return Settings(**values)


class ServedApp:
    """``create_app(...)`` served by a real uvicorn on a free loopback port, in a thread."""

    def __init__(self, settings: Settings, prefect_api: Any = None) -> None:
        self.app = create_app(settings, prefect_api=prefect_api)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)


@contextlib.contextmanager
def served(settings: Settings, prefect_api: Any = None) -> Iterator[ServedApp]:
    server = ServedApp(settings, prefect_api)
    try:
        yield server
    finally:
        server.close()


class ToggleProxy:
    """A loopback TCP forwarder to ``target_port``; ``down()`` refuses connections, ``up()``
    listens again on the same port. Lets a test take the real Prefect server away and back."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self.up()

    def up(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        for conn in self._open:  # established connections die too, as with a dead server
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
