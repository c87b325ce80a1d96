"""Failure vocabulary shared by the gateway, the transforms and the flows.

Every failure carries a stable ``code`` (what lands in ``sync_logs.error_code``) and says whether
retrying can help. Retry policy in tasks/ reads only ``transient``; nothing else decides it.
"""

from __future__ import annotations


class SyncError(Exception):
    """Base class: a failure with a stable code and a retry verdict."""

    code: str = "sync_error"
    transient: bool = False

    #: set by the terminal pool on a failed fetch: ms queued for a terminal before it failed
    slot_wait_ms: int = 0

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class TerminalError(SyncError):
    """The terminal answered with an error (``last_error()`` code and message)."""

    code = "terminal_error"

    def __init__(self, message: str, *, mt5_code: int | None = None, code: str | None = None):
        super().__init__(message, code=code)
        self.mt5_code = mt5_code


class AuthenticationFailed(TerminalError):
    """Wrong investor password, unknown login, or OTP/certificate required: never retried."""

    code = "auth_failed"
    transient = False


class TerminalUnavailable(TerminalError):
    """IPC faults (-10000..-10005), a terminal that could not start, a dropped connection."""

    code = "terminal_unavailable"
    transient = True


class TerminalTimeout(TerminalError):
    """The terminal did not answer within the hard timeout; its process was killed."""

    code = "terminal_timeout"
    transient = True


class AccountMismatch(TerminalError):
    """After login the terminal reports a different login/server than asked: cross-wired slot."""

    code = "account_mismatch"
    transient = True


class InvalidRequest(SyncError):
    """A bug or bad configuration (e.g. -2 invalid params, unknown time rule): not retried."""

    code = "invalid_request"


class CredentialsError(SyncError):
    """The stored investor password cannot be decrypted with the configured key."""

    code = "credentials_error"


class StoreUnavailable(SyncError):
    """The database could not be reached or dropped the connection mid-commit."""

    code = "database_unavailable"
    transient = True


class StoreError(SyncError):
    """The database rejected the commit (constraint, bad payload): retrying will not help."""

    code = "database_error"


def is_transient(exc: BaseException) -> bool:
    """Whether a retry may succeed; unknown exceptions are not retried (they are bugs)."""
    return isinstance(exc, SyncError) and exc.transient
