"""Investor passwords at rest: Fernet-encrypted in the database, decrypted only on the worker.

The key comes from the worker's environment (``MT5SYNC_CREDENTIALS_KEY``) or a Prefect Secret
block resolved by the flow; the plaintext lives only in memory long enough to reach the
terminal process.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

from mt5_sync.errors import CredentialsError


def generate_key() -> str:
    return Fernet.generate_key().decode()


def is_valid_key(key: str) -> bool:
    """A Fernet key: 32 url-safe base64-encoded bytes (what :func:`generate_key` makes)."""
    try:
        Fernet(key.encode())
    except ValueError:
        return False
    return True


def encrypt_password(password: str, key: str) -> str:
    return Fernet(key.encode()).encrypt(password.encode()).decode()


def decrypt_password(token: str, key: str | None) -> str:
    if not key:
        raise CredentialsError("MT5SYNC_CREDENTIALS_KEY is not set on this worker")
    try:
        return Fernet(key.encode()).decrypt(token.encode()).decode()
    except (InvalidToken, ValueError) as exc:
        raise CredentialsError(
            "stored investor password cannot be decrypted with the configured key"
        ) from exc
