"""Investor passwords at rest: sealed to a public key at the edge, opened only on the terminal host.

Construction: libsodium's sealed box (``crypto_box_seal``: an ephemeral X25519 key pair, then
XSalsa20-Poly1305 under the key agreed with the recipient's public key), through PyNaCl. It is
anonymous public-key encryption: whoever holds the **public** key can encrypt -- the API, the
app, a Supabase Edge Function (docs/accounts.md has Python and Deno snippets) -- and only the
holder of the **private** key can decrypt, which is the Windows terminal host (environment or
Prefect Secret block, :mod:`mt5_sync.secrets`). The API process therefore cannot read a stored
password even if it is compromised.

Text formats (ASCII, safe in env files and Secret blocks):

* private key: ``x25519-private:<base64 of 32 bytes>`` (``mt5-sync generate-key``);
* public key:  ``x25519-public:<base64 of 32 bytes>``;
* key id: the first 16 hex digits of SHA-256 over the raw 32-byte public key;
* ciphertext: ``v2:<key id>:<base64 sealed box>``. The key id says which private key opens
  it, so keys can rotate: a new pair encrypts from then on, the hosts hold both private keys
  (``MT5SYNC_CREDENTIALS_KEY`` is a comma-separated key ring), and ``mt5-sync credentials
  rotate`` re-encrypts the stored passwords to the new public key.
* legacy: Fernet tokens (``gAAAA...``) written before the switch still decrypt with a Fernet
  key in the ring until they are rotated.

Base64 is the standard alphabet with padding (RFC 4648 section 4).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from mt5_sync.errors import CredentialsError

PRIVATE_PREFIX = "x25519-private:"
PUBLIC_PREFIX = "x25519-public:"
CIPHERTEXT_VERSION = "v2"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyRing:
    """The private keys of one host, by key id, plus any legacy Fernet keys (oldest last)."""

    private: dict[str, PrivateKey]
    fernet: list[Fernet]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not base64") from None
    if len(raw) != 32:
        raise ValueError(f"{what} must be 32 bytes, got {len(raw)}")
    return raw


def key_id(public_key: PublicKey) -> str:
    """16 hex digits of SHA-256(raw public key): names a key, not a secret."""
    return hashlib.sha256(bytes(public_key)).hexdigest()[:16]


def generate_key() -> str:
    """A new private key in text form; :func:`public_key_text` gives its public half."""
    return PRIVATE_PREFIX + _b64(bytes(PrivateKey.generate()))


def parse_private_key(text: str) -> PrivateKey:
    """``x25519-private:<b64>`` -> key; raises ``ValueError`` on anything else."""
    if not text.startswith(PRIVATE_PREFIX):
        raise ValueError(f"a private key starts with {PRIVATE_PREFIX!r}")
    return PrivateKey(_unb64(text[len(PRIVATE_PREFIX):], "private key"))


def parse_public_key(text: str) -> PublicKey:
    """``x25519-public:<b64>`` (or a private key, whose public half is used) -> public key."""
    text = text.strip()
    if text.startswith(PRIVATE_PREFIX):
        return parse_private_key(text).public_key
    if not text.startswith(PUBLIC_PREFIX):
        raise ValueError(f"a public key starts with {PUBLIC_PREFIX!r}")
    return PublicKey(_unb64(text[len(PUBLIC_PREFIX):], "public key"))


def public_key_text(private_key_text: str) -> str:
    return PUBLIC_PREFIX + _b64(bytes(parse_private_key(private_key_text).public_key))


def parse_key_ring(text: str) -> KeyRing:
    """``MT5SYNC_CREDENTIALS_KEY``: private keys and/or legacy Fernet keys, comma-separated.

    Raises ``ValueError`` naming the position of an entry that is neither (never its value).
    """
    private: dict[str, PrivateKey] = {}
    fernet: list[Fernet] = []
    for index, entry in enumerate((e.strip() for e in text.split(",")), start=1):
        if not entry:
            continue
        try:
            if entry.startswith(PRIVATE_PREFIX):
                key = parse_private_key(entry)
                private[key_id(key.public_key)] = key
            else:
                fernet.append(Fernet(entry.encode()))
        except ValueError:
            raise ValueError(
                f"key {index} is neither an {PRIVATE_PREFIX}... key nor a Fernet key"
            ) from None
    if not private and not fernet:
        raise ValueError("no key given")
    return KeyRing(private, fernet)


def is_valid_key(key: str) -> bool:
    """Whether ``key`` is a usable key ring (see :func:`parse_key_ring`)."""
    try:
        parse_key_ring(key)
    except ValueError:
        return False
    return True


def encrypt_password(password: str, key: str) -> str:
    """Seal ``password`` to ``key`` (a public key, or a private key's public half).

    A bare Fernet key still produces a legacy Fernet token: only tests of the legacy path and
    old tooling use that; new passwords are sealed.
    """
    key = key.strip()
    if key.startswith((PUBLIC_PREFIX, PRIVATE_PREFIX)):
        public = parse_public_key(key)
        sealed = SealedBox(public).encrypt(password.encode("utf-8"))
        return f"{CIPHERTEXT_VERSION}:{key_id(public)}:{_b64(sealed)}"
    return Fernet(key.encode()).encrypt(password.encode()).decode()


def ciphertext_key_id(token: str) -> str | None:
    """The key id of a sealed ciphertext; None for a legacy Fernet token."""
    parts = token.split(":", 2)
    return parts[1] if len(parts) == 3 and parts[0] == CIPHERTEXT_VERSION else None


def decrypt_password(token: str, key: str | None) -> str:
    """Open a stored password with this host's key ring.

    Raises :class:`CredentialsError` (not retried) when no key is configured, when the ring
    lacks the ciphertext's key id, or when the ciphertext does not open (tampered, or sealed to
    another key with a colliding id). Messages name the key id, never key or password.
    """
    if not key:
        raise CredentialsError("MT5SYNC_CREDENTIALS_KEY is not set on this worker")
    try:
        ring = parse_key_ring(key)
    except ValueError as exc:
        raise CredentialsError(f"MT5SYNC_CREDENTIALS_KEY is invalid: {exc}") from None
    wanted = ciphertext_key_id(token)
    if wanted is not None:
        private = ring.private.get(wanted)
        if private is None:
            raise CredentialsError(
                f"stored investor password is sealed to key {wanted}, which this worker "
                "does not hold"
            )
        try:
            sealed = base64.b64decode(token.split(":", 2)[2], validate=True)
            return SealedBox(private).decrypt(sealed).decode("utf-8")
        except (CryptoError, binascii.Error, ValueError):
            raise CredentialsError(
                f"stored investor password does not open with key {wanted}"
            ) from None
    if not ring.fernet:
        raise CredentialsError("stored investor password is a legacy Fernet token and this "
                               "worker holds no Fernet key")
    try:
        return MultiFernet(ring.fernet).decrypt(token.encode()).decode()
    except (InvalidToken, ValueError) as exc:
        raise CredentialsError(
            "stored investor password cannot be decrypted with the configured key"
        ) from exc


def rotate_stored_passwords(store: Any, ring: str, public_key: str, *,
                            dry_run: bool = False) -> dict[str, int]:
    """Re-seal every stored password (active accounts or not) to ``public_key``.

    Run on a host whose ``ring`` holds every private key in use (old and new) plus any legacy
    Fernet key. Each row is written only if its ciphertext is still the one read
    (compare-and-set): a password replaced through the API meanwhile is not overwritten.
    ``store``: anything with ``fetch_all(sql, params)`` (PostgresStore). Returns counts:
    ``{"accounts", "current", "rotated", "changed_meanwhile", "failed"}`` -- a row that does
    not open (``failed``) is left as it is and named in no message but by account id in the
    log (never its ciphertext or password).
    """
    public = parse_public_key(public_key)
    target_id = key_id(public)
    report = {"accounts": 0, "current": 0, "rotated": 0, "changed_meanwhile": 0, "failed": 0}
    rows = store.fetch_all(
        "select id::text as id, investor_password_encrypted as token"
        " from public.trading_accounts order by id")
    for row in rows:
        report["accounts"] += 1
        if ciphertext_key_id(row["token"]) == target_id:
            report["current"] += 1
            continue
        try:
            password = decrypt_password(row["token"], ring)
        except CredentialsError as exc:
            log.error("account %s: %s", row["id"], exc)
            report["failed"] += 1
            continue
        if dry_run:
            report["rotated"] += 1
            continue
        updated = store.fetch_all(
            "update public.trading_accounts set investor_password_encrypted = %s,"
            " updated_at = now() where id = %s::uuid and investor_password_encrypted = %s"
            " returning 1 as ok",
            (encrypt_password(password, public_key), row["id"], row["token"]))
        report["rotated" if updated else "changed_meanwhile"] += 1
    return report
