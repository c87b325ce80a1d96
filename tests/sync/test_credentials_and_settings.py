import pytest

from mt5_sync.credentials import decrypt_password, encrypt_password, generate_key
from mt5_sync.errors import CredentialsError
from mt5_sync.settings import Settings


def test_password_round_trip_and_wrong_key_is_a_clear_error():
    key = generate_key()
    token = encrypt_password("s3cret-investor", key)
    assert "s3cret" not in token
    assert decrypt_password(token, key) == "s3cret-investor"
    with pytest.raises(CredentialsError, match="does not hold"):
        decrypt_password(token, generate_key())
    with pytest.raises(CredentialsError, match="not set"):
        decrypt_password(token, None)


def test_settings_hide_secrets_and_cap_concurrency_by_slots(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:hunter2@db/x")
    monkeypatch.setenv("MT5SYNC_CREDENTIALS_KEY", "k" * 44)
    monkeypatch.setenv("MT5SYNC_TERMINAL_BACKEND", "metatrader5")
    monkeypatch.setenv(
        "MT5SYNC_TERMINAL_PATHS", r"C:\mt5\t1\terminal64.exe;C:\mt5\t2\terminal64.exe"
    )
    s = Settings()
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())
    assert s.slot_count == 2
    assert s.effective_concurrency == 2
    assert s.in_flight_for(2) == 4  # as many queued as there are terminals, by default


def test_queued_accounts_setting_sets_the_subflows_beyond_the_terminals(monkeypatch):
    monkeypatch.setenv("MT5SYNC_QUEUED_ACCOUNTS", "0")
    assert Settings().in_flight_for(10) == 10  # one subflow per terminal: the old shape
    monkeypatch.setenv("MT5SYNC_QUEUED_ACCOUNTS", "3")
    assert Settings().in_flight_for(10) == 13
    monkeypatch.setenv("MT5SYNC_QUEUED_ACCOUNTS", "-1")
    with pytest.raises(ValueError, match="queued_accounts"):
        Settings()


def test_metatrader5_backend_without_terminal_paths_is_rejected(monkeypatch):
    monkeypatch.setenv("MT5SYNC_TERMINAL_BACKEND", "metatrader5")
    monkeypatch.delenv("MT5SYNC_TERMINAL_PATHS", raising=False)
    with pytest.raises(ValueError, match="MT5SYNC_TERMINAL_PATHS"):
        Settings()
