"""Where the worker finds the key ring that decrypts investor passwords.

The ring is the private keys (and any legacy Fernet keys) of :mod:`mt5_sync.credentials`,
comma-separated; it belongs on the terminal hosts only (the API holds the public key).

Order: ``MT5SYNC_CREDENTIALS_KEY`` in the worker's environment, else the Prefect Secret block
named by ``MT5SYNC_CREDENTIALS_KEY_BLOCK`` (read from the Prefect API by the flow-run process
on the worker, once per process). The key is never a flow or task parameter and is never
returned in a result: callers decrypt with it on the worker and drop it.

Create the block once, from any machine logged in to the Prefect API (Python)::

    from prefect.blocks.system import Secret
    Secret(value="<x25519-private:...>[,<older key>...]").save("mt5sync-credentials-key")
"""

from __future__ import annotations

import asyncio

from mt5_sync.errors import CredentialsError
from mt5_sync.settings import Settings

_block_values: dict[str, str] = {}


async def aresolve_credentials_key(settings: Settings) -> str | None:
    """The key ring, from the environment or the configured Secret block (cached)."""
    if settings.credentials_key is not None:
        return settings.credentials_key.get_secret_value()
    name = settings.credentials_key_block
    if not name:
        return None
    if name in _block_values:
        return _block_values[name]
    from prefect.blocks.system import Secret

    # Two concurrent first reads both load the block: harmless, and no lock to tie to a loop.
    try:
        block: Secret[str] = await Secret.aload(name)
    except ValueError as exc:  # Prefect: "Unable to find block document named ..."
        raise CredentialsError(
            f"Prefect Secret block {name!r} (MT5SYNC_CREDENTIALS_KEY_BLOCK) not found"
        ) from exc
    value = block.get()
    if not isinstance(value, str) or not value:
        raise CredentialsError(f"Prefect Secret block {name!r} holds no string key")
    _block_values[name] = value
    return value


def resolve_credentials_key(settings: Settings) -> str | None:
    """Synchronous variant for scripts and CLIs (not from inside a running event loop)."""
    return asyncio.run(aresolve_credentials_key(settings))


def forget_cached_keys() -> None:
    """Drop cached block values (tests; or after rotating the key in the block)."""
    _block_values.clear()
