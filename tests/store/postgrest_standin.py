"""A stand-in for Supabase's API gateway + PostgREST, backed by a real PostgreSQL database.

No PostgREST binary or Supabase CLI exists here, so the supabase-py transport is tested against
this: an httpx transport (or, via :func:`serve`, a real HTTP/1.1 server on 127.0.0.1) that
records every request exactly as sent and answers it the way PostgREST would, by running the
equivalent SQL on the database under the request's role:

* gateway: ``apikey`` must be a known key; its role (legacy JWT ``role`` claim, ``sb_secret_``
  -> service_role, ``sb_publishable_`` -> anon) applies unless ``Authorization`` carries a JWT.
  A non-JWT in ``Authorization`` is PGRST301 "Expected 3 parts in JWT; got 1" (what PostgREST
  answers an ``sb_secret_`` bearer);
* each request is one transaction: ``set local role``, ``request.jwt.claims``, TimeZone UTC;
* ``GET /rest/v1/<table>``: select, eq/neq/gt/gte/lt/lte/is/in filters, order, limit, offset;
  the body is built by ``json_agg`` in the database, as PostgREST does;
* ``POST /rest/v1/<table>``: insert/upsert through ``json_populate_recordset`` honouring
  ``columns``, ``on_conflict`` and ``Prefer: resolution=..., return=...``;
* ``DELETE /rest/v1/<table>``: filters as for GET;
* ``POST /rest/v1/rpc/<fn>``: named arguments from the JSON object, void -> 204;
* errors: ``{"code","message","details","hint"}`` with PostgREST's SQLSTATE -> status mapping.

Faults (an HTTP status before the database, a dropped connection before or after it) are
queued with :meth:`PostgrestStandIn.fail_next`.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import httpx
import jwt
import psycopg
from psycopg import sql

JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
PROJECT_REF = "abcdefghijklmnopqrst"
SB_SECRET = "sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvz"
SB_PUBLISHABLE = "sb_publishable_ACJWlzQHlZjBrEguHvfOxg_3BJgxAaH"


def make_jwt(role: str, **claims: Any) -> str:
    return jwt.encode({"iss": "supabase", "ref": PROJECT_REF, "role": role, "iat": 1_700_000_000,
                       "exp": 2_100_000_000, **claims}, JWT_SECRET, algorithm="HS256")


SERVICE_JWT = make_jwt("service_role")
ANON_JWT = make_jwt("anon")

_STATUS_BY_CODE = {"23503": 409, "23505": 409, "25006": 405, "P0001": 400, "42883": 404,
                   "42P01": 404, "53400": 500}
_STATUS_BY_CLASS = {"08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500,
                    "38": 500, "39": 500, "3B": 500, "40": 500, "53": 503, "54": 413, "55": 500,
                    "57": 500, "58": 500, "F0": 500, "HV": 500, "P0": 500, "XX": 500}
_OPS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def http_status(sqlstate: str, role: str) -> int:
    """PostgREST's documented mapping of SQLSTATE to HTTP status."""
    if sqlstate == "42501":
        return 401 if role == "anon" else 403
    if sqlstate.startswith("PT") and sqlstate[2:].isdigit():
        return int(sqlstate[2:])
    return _STATUS_BY_CODE.get(sqlstate) or _STATUS_BY_CLASS.get(sqlstate[:2], 400)


@dataclass
class Captured:
    """One request exactly as the client sent it."""

    method: str
    path: str
    params: list[tuple[str, str]]
    headers: dict[str, str]
    body: Any
    http_version: str = "HTTP/1.1"

    def param(self, name: str) -> str | None:
        return next((v for k, v in self.params if k == name), None)

    @property
    def prefer(self) -> set[str]:
        return {p.strip() for p in self.headers.get("prefer", "").split(",") if p.strip()}


@dataclass
class _Fault:
    when: str  # "before" (never reaches the database) or "after" (done, reply lost)
    status: int | None = None
    error: type[httpx.TransportError] | None = None
    code: str | None = None


class _Reply(Exception):
    def __init__(self, status: int, body: Any = None) -> None:
        super().__init__(status)
        self.status, self.body = status, body


def _arg(value: Any, pg_type: str) -> Any:
    """A JSON argument as a query parameter for ``%s::pg_type`` (what PostgREST's casts do)."""
    if pg_type in ("json", "jsonb"):
        return json.dumps(value)
    if value is None or isinstance(value, list):
        return value
    return str(value).lower() if isinstance(value, bool) else str(value)


def _fault_body(fault: _Fault) -> dict[str, Any]:
    if fault.code is None:  # a gateway's error page, not PostgREST's
        return {"message": "stand-in fault"}
    return {"code": fault.code, "message": "stand-in fault", "details": None, "hint": None}


def _error(status: int, code: str, message: str, details: Any = None, hint: Any = None) -> _Reply:
    return _Reply(status, {"code": code, "message": message, "details": details, "hint": hint})


@dataclass
class PostgrestStandIn:
    conninfo: str | None
    keys: dict[str, str] = field(default_factory=lambda: {
        SERVICE_JWT: "service_role", ANON_JWT: "anon", SB_SECRET: "service_role",
        SB_PUBLISHABLE: "anon"})
    requests: list[Captured] = field(default_factory=list)
    canned: dict[str, Any] = field(default_factory=dict)  # path -> body, when conninfo is None
    max_rows: int = 1000  # Supabase's db-max-rows: caps every read
    _faults: deque[_Fault] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ------------------------------------------------------------ public helpers

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def fail_next(self, n: int = 1, *, status: int | None = None, code: str | None = None,
                  error: type[httpx.TransportError] | None = None, after_db: bool = False) -> None:
        """Queue ``n`` faults: an HTTP ``status`` (with PostgREST error ``code``) or a dropped
        connection (``error``), before the database or after it (the work is done)."""
        for _ in range(n):
            self._faults.append(_Fault("after" if after_db else "before", status, error, code))

    def rpc_bodies(self, fn: str) -> list[Any]:
        return [r.body for r in self.requests if r.path == f"/rest/v1/rpc/{fn}"]

    # ------------------------------------------------------------ the handler

    def handle(self, request: httpx.Request, http_version: str = "HTTP/1.1") -> httpx.Response:
        raw = request.read()
        captured = Captured(
            method=request.method,
            path=request.url.path,
            params=list(parse_qsl(request.url.query.decode(), keep_blank_values=True)),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=json.loads(raw) if raw else None,
            http_version=http_version,
        )
        with self._lock:
            self.requests.append(captured)
            fault = self._faults.popleft() if self._faults else None
        if fault and fault.when == "before":
            if fault.error:
                raise fault.error("stand-in: connection dropped", request=request)
            return httpx.Response(fault.status or 503, json=_fault_body(fault))
        try:
            role, claims = self._authenticate(captured)
            status, body = self._dispatch(captured, role, claims)
        except _Reply as reply:
            status, body = reply.status, reply.body
        if fault and fault.when == "after":
            if fault.error:
                raise fault.error("stand-in: reply lost", request=request)
            status, body = fault.status or 502, _fault_body(fault)
        if body is None:
            return httpx.Response(status)
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content,
                              headers={"content-type": "application/json; charset=utf-8"})

    def _authenticate(self, req: Captured) -> tuple[str, dict[str, Any]]:
        apikey = req.headers.get("apikey")
        if apikey not in self.keys:
            raise _Reply(401, {"message": "Invalid API key", "hint": "Double check your key"})
        role = self.keys[apikey]
        bearer = req.headers.get("authorization")
        if bearer is None:
            return role, {"role": role}
        token = bearer.removeprefix("Bearer ").strip()
        if token.count(".") != 2:
            raise _error(401, "PGRST301", f"Expected 3 parts in JWT; got {token.count('.') + 1}")
        try:
            claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"],
                                options={"verify_aud": False})
        except jwt.PyJWTError as exc:
            raise _error(401, "PGRST301", str(exc)) from None
        return str(claims.get("role", "anon")), claims

    def _dispatch(self, req: Captured, role: str, claims: dict[str, Any]) -> tuple[int, Any]:
        if not req.path.startswith("/rest/v1/"):
            raise _Reply(404, {"message": "no Route matched with those values"})
        target = req.path.removeprefix("/rest/v1/")
        if self.conninfo is None:  # capture-only mode: canned PostgREST-shaped replies
            body = self.canned.get(target)
            return (204, None) if body is None and target.startswith("rpc/") else (
                200 if req.method == "GET" or target.startswith("rpc/") else 201, body)
        try:
            with psycopg.connect(self.conninfo) as conn:
                conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
                conn.execute("select set_config('request.jwt.claims', %s, true),"
                             " set_config('TimeZone', 'UTC', true)", (json.dumps(claims),))
                if target.startswith("rpc/"):
                    return self._rpc(conn, target.removeprefix("rpc/"), req)
                return self._table(conn, target, req)
        except psycopg.Error as exc:
            diag = exc.diag
            state = exc.sqlstate or "08000"
            raise _error(http_status(state, role), state, diag.message_primary or str(exc),
                         diag.message_detail, diag.message_hint) from None

    # ------------------------------------------------------------ rpc

    def _rpc(self, conn: psycopg.Connection[Any], fn: str, req: Captured) -> tuple[int, Any]:
        if req.method != "POST":
            raise _error(405, "PGRST101", "only GET and POST are allowed for functions")
        args = req.body if isinstance(req.body, dict) else {}
        row = conn.execute(
            "select p.proargnames[1:p.pronargs],"
            " array(select format_type(t, null) from unnest(p.proargtypes) t),"
            " format_type(p.prorettype, null), p.proretset, p.pronargdefaults"
            " from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
            " where n.nspname = 'public' and p.proname = %s", (fn,)).fetchone()
        names: list[str] = list(row[0] or []) if row else []
        required = set(names[: len(names) - row[4]]) if row else set()
        if row is None or not (required <= set(args) <= set(names)):
            raise _error(404, "PGRST202", f"Could not find the function public.{fn}("
                         f"{', '.join(sorted(args))}) in the schema cache")
        types = dict(zip(names, row[1], strict=True))
        call = sql.SQL("public.{}({})").format(sql.Identifier(fn), sql.SQL(", ").join(
            sql.SQL("{} := %s::{}").format(sql.Identifier(n), sql.SQL(types[n])) for n in args))
        values = [_arg(args[n], types[n]) for n in args]
        if row[3]:  # set-returning: a JSON array of rows
            query = sql.SQL("select coalesce(json_agg(_t), '[]')::text from {} _t").format(call)
        elif row[2] == "void":
            conn.execute(sql.SQL("select {}").format(call), values)
            return 204, None
        else:
            query = sql.SQL("select to_json({})::text").format(call)
        result = conn.execute(query, values).fetchone()
        return 200, (result[0] if result and result[0] is not None else "null").encode()

    # ------------------------------------------------------------ tables

    def _where(self, req: Captured) -> tuple[sql.Composable, list[Any]]:
        reserved = {"select", "order", "limit", "offset", "on_conflict", "columns"}
        parts: list[sql.Composable] = []
        values: list[Any] = []
        for column, expr in req.params:
            if column in reserved:
                continue
            op, _, value = expr.partition(".")
            ident = sql.Identifier(column)
            if op in _OPS:
                parts.append(sql.SQL("{} {} %s").format(ident, sql.SQL(_OPS[op])))
                values.append(value)
            elif op == "is" and value in ("null", "true", "false"):
                parts.append(sql.SQL("{} is {}").format(ident, sql.SQL(value)))
            elif op == "in" and value.startswith("(") and value.endswith(")"):
                items = [v.strip('"') for v in value[1:-1].split(",") if v]
                parts.append(sql.SQL("{} in ({})").format(
                    ident, sql.SQL(", ").join(sql.Placeholder() * len(items))) if items
                    else sql.SQL("false"))
                values.extend(items)
            else:
                raise _error(400, "PGRST100", f'failed to parse filter ({expr})')
        where = sql.SQL(" where ") + sql.SQL(" and ").join(parts) if parts else sql.SQL("")
        return where, values

    def _table(self, conn: psycopg.Connection[Any], table: str, req: Captured) -> tuple[int, Any]:
        if conn.execute("select to_regclass(%s)", (f"public.{table}",)).fetchone() == (None,):
            raise _error(404, "PGRST205",
                         f"Could not find the table 'public.{table}' in the schema cache")
        rel = sql.Identifier("public", table)
        where, values = self._where(req)
        if req.method == "GET":
            select = req.param("select") or "*"
            cols = sql.SQL("*") if select == "*" else sql.SQL(", ").join(
                sql.Identifier(c.strip()) for c in select.split(","))
            order: sql.Composable = sql.SQL("")
            if req.param("order"):
                terms = []
                for term in (req.param("order") or "").split(","):
                    col, *mods = term.split(".")
                    terms.append(sql.SQL(" ").join(
                        [sql.Identifier(col), *(sql.SQL(m.replace("nulls", "nulls "))
                                                for m in mods if m in
                                                ("asc", "desc", "nullsfirst", "nullslast"))]))
                order = sql.SQL(" order by ") + sql.SQL(", ").join(terms)
            limit = sql.SQL(" limit {} offset {}").format(
                sql.Literal(min(int(req.param("limit") or self.max_rows), self.max_rows)),
                sql.Literal(int(req.param("offset") or 0)))
            query = sql.SQL("select coalesce(json_agg(_t), '[]')::text from "
                            "(select {} from {}{}{}{}) _t").format(cols, rel, where, order, limit)
            return 200, conn.execute(query, values).fetchone()[0].encode()  # type: ignore[index]
        if req.method == "DELETE":
            conn.execute(sql.SQL("delete from {}{}").format(rel, where), values)
            return 204, None
        if req.method == "POST":
            return self._insert(conn, rel, req)
        raise _error(405, "PGRST105", f"{req.method} is not supported by the stand-in")

    def _insert(self, conn: psycopg.Connection[Any], rel: sql.Identifier,
                req: Captured) -> tuple[int, Any]:
        rows = req.body if isinstance(req.body, list) else [req.body]
        if not rows or not all(isinstance(r, dict) for r in rows):
            raise _error(400, "PGRST102", "Empty or invalid json")
        names = [c.strip('"') for c in (req.param("columns") or ",".join(rows[0])).split(",")]
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in names)
        conflict: sql.Composable = sql.SQL("")
        keys = sql.SQL(", ").join(
            sql.Identifier(c) for c in (req.param("on_conflict") or "").split(",") if c)
        if "resolution=ignore-duplicates" in req.prefer:
            conflict = sql.SQL(" on conflict ({}) do nothing").format(keys)
        elif "resolution=merge-duplicates" in req.prefer:
            updates = sql.SQL(", ").join(
                sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in names)
            conflict = sql.SQL(" on conflict ({}) do update set {}").format(keys, updates)
        returning = "return=representation" in req.prefer
        query = sql.SQL("insert into {0} ({1}) select {1} from json_populate_recordset(null::{0},"
                        " %s::json){2}{3}").format(
            rel, cols, conflict, sql.SQL(" returning *") if returning else sql.SQL(""))
        if not returning:
            conn.execute(query, (json.dumps(rows),))
            return 201, None
        wrapped = sql.SQL(
            "with _t as ({}) select coalesce(json_agg(_t), '[]')::text from _t").format(query)
        return 201, conn.execute(wrapped, (json.dumps(rows),)).fetchone()[0].encode()  # type: ignore[index]


# ---------------------------------------------------------------- a real HTTP/1.1 server


@contextlib.contextmanager
def serve(standin: PostgrestStandIn, *, delay_s: float = 0.0) -> Iterator[str]:
    """Serve the stand-in on 127.0.0.1 (HTTP/1.1, real sockets); yields the base URL.

    A queued ``error`` fault closes the connection without a response; ``delay_s`` delays
    every reply (timeouts).
    """
    import time

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _any(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            request = httpx.Request(self.command, f"http://stand-in{self.path}",
                                    headers=list(self.headers.items()), content=body)
            try:
                response = standin.handle(request, http_version=self.request_version)
            except httpx.TransportError:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            time.sleep(delay_s)
            content = response.content
            self.send_response(response.status_code)
            for key, value in response.headers.items():
                if key.lower() not in ("content-length", "transfer-encoding"):
                    self.send_header(key, value)
            self.send_header("content-length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = do_DELETE = do_PATCH = _any

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- helpers for the tests

# Every table the sync writes (and the staging table), with its key order, for full dumps.
DUMP_TABLES: dict[str, str] = {
    "trading_accounts": "id",
    "trades": "account_id, ticket",
    "deals": "account_id, ticket",
    "cash_flows": "account_id, deal_ticket",
    "account_snapshots": "account_id, taken_at",
    "sync_logs": "sync_id",
    "sync_quarantine": "sync_id, kind, ordinal",
    "sync_commit_chunks": "sync_id, part, seq",
    "mt5_account_health": "account_id",
    "mt5_server_pauses": "broker_server",
    "mt5_account_health_events": "occurred_at, account_id",
}


def dump(conninfo: str) -> dict[str, list[str]]:
    """Every row of every table as JSON text, minus random surrogate ids (trades, sync_logs)."""
    out: dict[str, list[str]] = {}
    with psycopg.connect(conninfo) as conn:
        for table, keys in DUMP_TABLES.items():
            row = "to_jsonb(t)" if table == "trading_accounts" else "(to_jsonb(t) - 'id')"
            rows = conn.execute(
                f"select {row}::text from public.{table} t order by {keys}").fetchall()
            out[table] = [r[0] for r in rows]
    return out


def seed_account(conninfo: str, account_id: str, user_id: str, login: int, server: str,
                 *, rule: str = "ny+7", active: bool = True, password: str = "gAAAA-enc") -> None:
    """An account with fixed id and timestamps, so two databases can hold identical rows."""
    with psycopg.connect(conninfo) as conn:
        conn.execute("insert into auth.users (id) values (%s) on conflict do nothing", (user_id,))
        conn.execute(
            "insert into public.trading_accounts (id, user_id, login_number, broker_server,"
            " investor_password_encrypted, server_time_rule, is_active, created_at, updated_at)"
            " values (%s, %s, %s, %s, %s, %s, %s, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
            (account_id, user_id, login, server, password, rule, active))
