"""The full auth matrix, each case with its status code, for HS256 (legacy secret) and
ES256/RS256 (keys from a JWKS served on 127.0.0.1). Real HTTP against a real uvicorn."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.api.conftest import USER_A, USER_B, Accounts, auth_headers
from tests.api.support import API_KEY, HS_SECRET, ISSUER, Keys

ALGS = ["HS256", "ES256", "RS256"]
Case = Callable[[Keys, str, Accounts], tuple[str, dict[str, str]]]


def _own(keys: Keys, alg: str, acc: Accounts, **claims: Any) -> tuple[str, dict[str, str]]:
    return acc.a_active, auth_headers(keys.token(USER_A, alg=alg, **claims))


def _bad_signature(keys: Keys, alg: str, acc: Accounts) -> tuple[str, dict[str, str]]:
    other = Keys(ec_key=ec.generate_private_key(ec.SECP256R1()))
    if alg == "HS256":
        token = jwt.encode(jwt.decode(keys.token(USER_A), options={"verify_signature": False}),
                           "a-different-secret-of-the-same-length-as-the-real-one!!", "HS256")
    elif alg == "ES256":
        token = other.token(USER_A, alg="ES256")  # same kid, other key
    else:
        real = keys.token(USER_A, alg="RS256")
        head, body, sig = real.split(".")
        token = ".".join([head, body, sig[:-6] + ("AAAAAA" if sig[-6:] != "AAAAAA" else "BBBBBB")])
    return acc.a_active, auth_headers(token)


def _tampered_claims(keys: Keys, alg: str, acc: Accounts) -> tuple[str, dict[str, str]]:
    """A real signature over other claims: sub swapped to another user."""
    head, body, sig = keys.token(USER_A, alg=alg).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["sub"] = USER_B
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return acc.b_active, auth_headers(f"{head}.{forged}.{sig}")


CASES: dict[str, tuple[Case, int]] = {
    "valid": (lambda k, a, acc: _own(k, a, acc), 202),
    "missing_api_key": (lambda k, a, acc: (acc.a_active, auth_headers(k.token(USER_A, alg=a),
                                                                      api_key=None)), 401),
    "wrong_api_key": (lambda k, a, acc: (acc.a_active, auth_headers(
        k.token(USER_A, alg=a), api_key=API_KEY[:-1] + "X")), 401),
    "missing_jwt": (lambda k, a, acc: (acc.a_active, auth_headers(None)), 401),
    "not_bearer_scheme": (lambda k, a, acc: (acc.a_active, {
        "X-API-Key": API_KEY, "Authorization": f"Basic {k.token(USER_A, alg=a)}"}), 401),
    "garbage_jwt": (lambda k, a, acc: (acc.a_active, auth_headers("not.a.jwt")), 401),
    "expired": (lambda k, a, acc: _own(k, a, acc, exp=int(time.time()) - 120), 401),
    "no_exp": (lambda k, a, acc: _own(k, a, acc, exp=None), 401),
    "wrong_audience": (lambda k, a, acc: _own(k, a, acc, aud="anon"), 401),
    "wrong_issuer": (lambda k, a, acc: _own(k, a, acc, iss="https://evil.example/auth/v1"), 401),
    "anon_role": (lambda k, a, acc: _own(k, a, acc, role="anon"), 403),
    "service_role": (lambda k, a, acc: _own(k, a, acc, role="service_role"), 403),
    "sub_not_uuid": (lambda k, a, acc: _own(k, a, acc, sub="admin"), 401),
    "bad_signature": (_bad_signature, 401),
    "tampered_claims": (_tampered_claims, 401),
    "other_users_account": (lambda k, a, acc: (acc.b_active, auth_headers(
        k.token(USER_A, alg=a))), 404),
    "inactive_account": (lambda k, a, acc: (acc.a_inactive, auth_headers(
        k.token(USER_A, alg=a))), 404),
    "unknown_account": (lambda k, a, acc: (str(uuid.uuid4()), auth_headers(
        k.token(USER_A, alg=a))), 404),
    "malformed_account_id": (lambda k, a, acc: ("not-a-uuid", auth_headers(
        k.token(USER_A, alg=a))), 404),
}


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("case", list(CASES))
def test_auth_matrix(case: str, alg: str, keys: Keys, accounts: Accounts,
                     client: httpx.Client) -> None:
    build, expected = CASES[case]
    account_id, headers = build(keys, alg, accounts)
    response = client.post(f"/api/mt5/account/{account_id}/sync", headers=headers, json={})
    assert response.status_code == expected, response.text
    body = response.json()
    # Nothing secret ever comes back: not the API key, not the token, not the JWT secret.
    for secret in (API_KEY, HS_SECRET, headers.get("Authorization", "-").removeprefix("Bearer ")):
        assert secret not in response.text
    if expected == 401:
        assert response.headers.get("www-authenticate", "").startswith("Bearer") or \
            "API key" in body["detail"]
    if expected == 404:
        assert body == {"detail": "not found"}  # the same for unknown, inactive, not yours
    if expected == 202:
        assert body["status"] == "processing"


@pytest.mark.parametrize("token_alg", ["none", "HS256-with-public-key", "HS512"])
def test_rejected_algorithms(token_alg: str, keys: Keys, accounts: Accounts,
                             client: httpx.Client) -> None:
    """alg=none, algorithm confusion (the JWKS public key used as an HMAC secret), and any
    algorithm outside HS256/ES256/RS256 are refused before anything else is read."""
    now = int(time.time())
    claims = {"sub": USER_A, "aud": "authenticated", "iss": ISSUER, "role": "authenticated",
              "exp": now + 600}
    if token_alg == "none":
        token = jwt.encode(claims, key=None, algorithm="none")
    elif token_alg == "HS512":
        token = jwt.encode(claims, HS_SECRET, algorithm="HS512")
    else:
        pem = keys.ec_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        header = base64.urlsafe_b64encode(json.dumps(
            {"alg": "HS256", "typ": "JWT", "kid": keys.ec_kid}).encode()).rstrip(b"=")
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
        import hashlib
        import hmac

        sig = base64.urlsafe_b64encode(hmac.new(pem, header + b"." + payload,
                                                hashlib.sha256).digest()).rstrip(b"=")
        token = b".".join([header, payload, sig]).decode()
    response = client.post(f"/api/mt5/account/{accounts.a_active}/sync",
                           headers=auth_headers(token))
    assert response.status_code == 401, response.text


def test_status_endpoint_auth(keys: Keys, accounts: Accounts, client: httpx.Client) -> None:
    """GET /sync/{id}: same key + token checks, and only the owner sees the sync."""
    accepted = client.post(f"/api/mt5/account/{accounts.a_active}/sync",
                           headers=auth_headers(keys.token(USER_A, alg="ES256")))
    assert accepted.status_code == 202
    sync_id = accepted.json()["sync_id"]
    url = f"/api/mt5/sync/{sync_id}"
    assert client.get(url, headers=auth_headers(keys.token(USER_A), api_key=None)
                      ).status_code == 401
    assert client.get(url, headers=auth_headers(None)).status_code == 401
    assert client.get(url, headers=auth_headers(keys.token(USER_A, role="anon"))
                      ).status_code == 403
    assert client.get(url, headers=auth_headers(keys.token(USER_B))).status_code == 404
    assert client.get(f"/api/mt5/sync/{uuid.uuid4()}",
                      headers=auth_headers(keys.token(USER_A))).status_code == 404
    assert client.get("/api/mt5/sync/xyz", headers=auth_headers(keys.token(USER_A))
                      ).status_code == 404
    mine = client.get(url, headers=auth_headers(keys.token(USER_A, alg="RS256")))
    assert mine.status_code == 200
    assert mine.json()["status"] == "processing" and mine.json()["trigger"] == "manual"
    accounts.store.fetch_all("update trading_accounts set is_active = false where id = %s",
                             (accounts.a_active,))
    assert client.get(url, headers=auth_headers(keys.token(USER_A))).status_code == 404
