"""Investor passwords sealed to a public key (issue 14, part 2): key ids, rotation, legacy
Fernet tokens, and that the public key alone cannot open what it sealed."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from nacl.public import PrivateKey, SealedBox

from mt5_sync.credentials import (
    ciphertext_key_id,
    decrypt_password,
    encrypt_password,
    generate_key,
    is_valid_key,
    key_id,
    parse_public_key,
    public_key_text,
    rotate_stored_passwords,
)
from mt5_sync.errors import CredentialsError
from mt5_sync.localstack import EmbeddedPostgres
from mt5_sync.store.postgres import PostgresStore

PASSWORD = "inv-Pässwörd-42"
ROOT = Path(__file__).resolve().parents[2]


def test_sealed_with_the_public_key_opens_only_with_its_private_key() -> None:
    private = generate_key()
    public = public_key_text(private)
    token = encrypt_password(PASSWORD, public)
    version, kid, body = token.split(":", 2)
    assert version == "v2" and kid == key_id(parse_public_key(public)) and len(kid) == 16
    assert PASSWORD not in token and "Pässwörd" not in base64.b64decode(body).decode("latin-1")
    assert decrypt_password(token, private) == PASSWORD
    # Sealing is randomized (an ephemeral key per message): equal passwords do not show.
    assert encrypt_password(PASSWORD, public) != token
    # The public key is not a key ring: whoever holds only it cannot decrypt.
    with pytest.raises(CredentialsError, match="invalid"):
        decrypt_password(token, public)
    with pytest.raises(CredentialsError, match="does not hold"):
        decrypt_password(token, generate_key())


def test_the_format_is_libsodium_sealed_box_so_other_runtimes_interoperate() -> None:
    """What docs/accounts.md's snippets produce: crypto_box_seal over the raw public key,
    base64 (standard alphabet); PyNaCl here stands in for libsodium-wrappers."""
    raw = PrivateKey.generate()
    private = "x25519-private:" + base64.b64encode(bytes(raw)).decode()
    sealed = SealedBox(raw.public_key).encrypt(PASSWORD.encode())
    token = f"v2:{key_id(raw.public_key)}:{base64.b64encode(sealed).decode()}"
    assert decrypt_password(token, private) == PASSWORD


def test_a_tampered_ciphertext_is_refused() -> None:
    private = generate_key()
    token = encrypt_password(PASSWORD, public_key_text(private))
    head, body = token.rsplit(":", 1)
    raw = bytearray(base64.b64decode(body))
    raw[-1] ^= 1
    with pytest.raises(CredentialsError, match="does not open"):
        decrypt_password(f"{head}:{base64.b64encode(bytes(raw)).decode()}", private)


def test_a_key_ring_opens_old_new_and_legacy_fernet_tokens() -> None:
    old, new, fernet = generate_key(), generate_key(), Fernet.generate_key().decode()
    ring = f"{new}, {old},{fernet}"
    assert is_valid_key(ring) and not is_valid_key("x25519-private:AAAA") and not is_valid_key("")
    by_old = encrypt_password(PASSWORD, public_key_text(old))
    by_new = encrypt_password(PASSWORD, public_key_text(new))
    legacy = Fernet(fernet.encode()).encrypt(PASSWORD.encode()).decode()
    assert legacy.startswith("gAAAA") and ciphertext_key_id(legacy) is None
    assert {decrypt_password(t, ring) for t in (by_old, by_new, legacy)} == {PASSWORD}
    with pytest.raises(CredentialsError, match="no Fernet key"):
        decrypt_password(legacy, new)


def test_rotate_reseals_every_stored_password_to_the_new_key(
    pg: EmbeddedPostgres, migrated_template: str
) -> None:
    store = PostgresStore(pg.create_database("rotate", template=migrated_template, drop=True))
    old, new, fernet = generate_key(), generate_key(), Fernet.generate_key().decode()
    user = "00000000-0000-4000-8000-0000000000aa"
    tokens = {
        1: encrypt_password("p-one", public_key_text(old)),
        2: Fernet(fernet.encode()).encrypt(b"p-two").decode(),
        3: encrypt_password("p-three", public_key_text(new)),
        4: encrypt_password("p-four", public_key_text(generate_key())),  # a key nobody holds
    }
    ids = {login: store.register_account(
        user_id=user, login_number=login, broker_server="S", broker_name=None,
        investor_password_encrypted=token, server_time_rule="utc", is_active=login != 2)
        for login, token in tokens.items()}
    ring = f"{old},{new},{fernet}"
    dry = rotate_stored_passwords(store, ring, public_key_text(new), dry_run=True)
    assert dry == {"accounts": 4, "current": 1, "rotated": 2, "changed_meanwhile": 0,
                   "failed": 1}
    assert store.fetch_all("select investor_password_encrypted as t from trading_accounts"
                           " where id = %s", (ids[1],)) == [{"t": tokens[1]}]
    report = rotate_stored_passwords(store, ring, public_key_text(new))
    assert report == dry
    rows = {r["login_number"]: r["t"] for r in store.fetch_all(
        "select login_number, investor_password_encrypted as t from trading_accounts")}
    new_id = key_id(parse_public_key(public_key_text(new)))
    for login, plain in ((1, "p-one"), (2, "p-two"), (3, "p-three")):
        assert ciphertext_key_id(rows[login]) == new_id
        assert decrypt_password(rows[login], new) == plain  # the new key alone opens them
    assert rows[3] == tokens[3] and rows[4] == tokens[4]  # current: untouched; unopenable: kept
    # Idempotent.
    again = rotate_stored_passwords(store, ring, public_key_text(new))
    assert again["rotated"] == 0 and again["current"] == 3


def test_cli_generate_key_and_encrypt_password_need_no_private_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MT5SYNC_")}
    env["HOME"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-m", "mt5_sync.cli", "generate-key"], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    pair = dict(line.split("=", 1) for line in done.stdout.splitlines())
    assert set(pair) == {"MT5SYNC_CREDENTIALS_KEY", "MT5SYNC_CREDENTIALS_PUBLIC_KEY"}
    sealed = subprocess.run(
        [sys.executable, "-m", "mt5_sync.cli", "encrypt-password"], input=PASSWORD + "\n",
        env={**env, "MT5SYNC_CREDENTIALS_PUBLIC_KEY": pair["MT5SYNC_CREDENTIALS_PUBLIC_KEY"]},
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    assert PASSWORD not in sealed
    assert decrypt_password(sealed, pair["MT5SYNC_CREDENTIALS_KEY"]) == PASSWORD
    json.dumps(pair)  # plain text, env-file safe
