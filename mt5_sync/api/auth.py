"""Who is calling: the service's API key, then the user's Supabase JWT.

Why both: the API key says "this request comes from our backend/app", the JWT says which user
it acts for (``sub``). Neither alone is enough: a leaked anon key must not trigger syncs, and
a valid user token must not be usable from anywhere without the service key.

JWT rules (supabase-py's ``get_claims()`` checks neither ``aud`` nor ``role``, so we do):

* the algorithm picks the key and nothing else: HS256 only with the legacy secret, ES256/RS256
  only with a key from the project's JWKS (fetched by kid and cached by PyJWKClient); any
  other ``alg`` (``none`` included) is rejected. An HMAC token is never checked against a
  public key (the classic algorithm-confusion attack).
* ``exp``, ``aud`` (default ``authenticated``) and ``iss`` are required and verified, with 30 s
  of leeway for clock skew; ``role`` must be ``authenticated`` (anon and service_role tokens
  are not users); ``sub`` must be a UUID.

Status codes: 401 for a missing or wrong API key and for any token that does not verify;
403 for a verified token that is not a signed-in user (``role`` other than authenticated);
503 when the JWKS cannot be fetched (we cannot tell, so we do not blame the caller).
Messages say what was wrong in general terms and never echo a key or a token.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from dataclasses import dataclass

import jwt
from fastapi import HTTPException, status

log = logging.getLogger(__name__)

ASYMMETRIC_ALGORITHMS = ("ES256", "RS256")
LEEWAY_S = 30
_BEARER = {"WWW-Authenticate": "Bearer"}
_INVALID_TOKEN = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


@dataclass(frozen=True)
class User:
    """The verified caller."""

    id: str
    role: str


def _unauthorized(detail: str, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers=headers)


class Authenticator:
    """Verifies the API key and the bearer token of one request (no I/O but the JWKS fetch)."""

    def __init__(
        self,
        *,
        api_key: str,
        issuer: str,
        audience: str = "authenticated",
        hs256_secret: str | None = None,
        jwks_url: str | None = None,
        jwks_timeout_s: float = 5.0,
    ) -> None:
        if not api_key:
            raise ValueError("MT5SYNC_API_KEY is not set")
        if not issuer:
            raise ValueError("MT5SYNC_API_JWT_ISSUER is not set (<SUPABASE_URL>/auth/v1)")
        if not hs256_secret and not jwks_url:
            raise ValueError(
                "no way to verify user tokens: set SUPABASE_JWT_SECRET (HS256) and/or "
                "MT5SYNC_API_JWKS_URL (ES256/RS256)"
            )
        self._api_key = api_key.encode()
        self._issuer = issuer
        self._audience = audience
        self._secret = hs256_secret
        self._jwks = (
            jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=600, timeout=int(jwks_timeout_s))
            if jwks_url else None
        )

    def check_api_key(self, presented: str | None) -> None:
        if not presented or not hmac.compare_digest(presented.encode(), self._api_key):
            raise _unauthorized("missing or invalid API key")

    def may_fetch_keys(self, token: str | None) -> bool:
        """Whether verifying ``token`` could block on a JWKS fetch (asymmetric alg)."""
        if not token or self._jwks is None:
            return False
        try:
            return jwt.get_unverified_header(token).get("alg") in ASYMMETRIC_ALGORITHMS
        except jwt.PyJWTError:
            return False

    def _key_for(self, token: str) -> tuple[object, str]:
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            raise _unauthorized("malformed bearer token", _INVALID_TOKEN) from None
        if alg == "HS256" and self._secret:
            return self._secret, alg
        if alg in ASYMMETRIC_ALGORITHMS and self._jwks is not None:
            try:
                return self._jwks.get_signing_key_from_jwt(token).key, alg
            except jwt.PyJWKClientConnectionError:
                log.warning("JWKS unreachable; cannot verify an %s token", alg)
                raise HTTPException(
                    status.HTTP_503_SERVICE_UNAVAILABLE,
                    detail="cannot verify the token right now; retry later",
                    headers={"Retry-After": "5"},
                ) from None
            except jwt.PyJWTError:
                raise _unauthorized("token signed with an unknown key", _INVALID_TOKEN) from None
        raise _unauthorized("token algorithm not accepted", _INVALID_TOKEN)

    def verify_token(self, token: str | None) -> User:
        if not token:
            raise _unauthorized("missing bearer token", _BEARER)
        key, alg = self._key_for(token)
        try:
            claims = jwt.decode(
                token,
                key=key,  # type: ignore[arg-type]
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "aud", "iss", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise _unauthorized("token expired", _INVALID_TOKEN) from None
        except jwt.InvalidAudienceError:
            raise _unauthorized("token audience not accepted", _INVALID_TOKEN) from None
        except jwt.InvalidIssuerError:
            raise _unauthorized("token issuer not accepted", _INVALID_TOKEN) from None
        except jwt.InvalidSignatureError:
            raise _unauthorized("token signature invalid", _INVALID_TOKEN) from None
        except jwt.PyJWTError:
            raise _unauthorized("invalid token", _INVALID_TOKEN) from None
        role = claims.get("role")
        if role != "authenticated":
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail="token is not a signed-in user's (role must be authenticated)",
                headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'},
            )
        try:
            user_id = str(uuid.UUID(str(claims["sub"])))
        except ValueError:
            raise _unauthorized("token subject is not a user id", _INVALID_TOKEN) from None
        return User(id=user_id, role=role)
