"""The simulated world file: accounts, clock, latency and faults, plus a builder.

The simulator (``mt5_sync.mt5sim``) reads the file named by ``MT5SIM_WORLD``; tests and
benchmarks write it. Everything the broker model generates is a pure function of the
world's seed and one account's spec, so a world file is all a test needs to know the truth.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from mt5_sync.mt5sim.prices import SYMBOLS
from mt5_sync.servertime import ServerTimeRule

TIMELINE_DAYS = 150
WORLD_ENV = "MT5SIM_WORLD"


class LognormalLatency(BaseModel):
    """Per-call latency with a long right tail, like a terminal talking to a remote server."""

    model_config = ConfigDict(extra="forbid")
    distribution: Literal["lognormal"] = "lognormal"
    median_s: float = Field(0.01, ge=0)
    sigma: float = Field(0.5, ge=0)

    def sample(self, rng: random.Random) -> float:
        return self.median_s * float(rng.lognormvariate(0.0, self.sigma))


class FixedLatency(BaseModel):
    """Constant per-call latency (0 for fast tests)."""

    model_config = ConfigDict(extra="forbid")
    distribution: Literal["fixed"] = "fixed"
    seconds: float = Field(0.0, ge=0)

    def sample(self, rng: random.Random) -> float:
        return self.seconds


Latency = Annotated[LognormalLatency | FixedLatency, Field(discriminator="distribution")]
FaultKind = Literal[
    "wrong_password", "otp_required", "ipc_timeout", "hang", "malformed_deals", "init_failure"
]


class Fault(BaseModel):
    """A misbehaviour of one account's terminal; ``times`` = first N matching calls, None = all."""

    model_config = ConfigDict(extra="forbid")
    kind: FaultKind
    call: str = "*"
    times: int | None = None


class StagedHistory(BaseModel):
    """History still loading after a login (public reports: the terminal fetches the account's
    history from the server after ``login()``, so the first reads can be partial).

    The first ``logins`` logins of the account (counted across terminal processes) leave the
    terminal loading for that whole session: every date-range history call (``_get`` and
    ``_total`` alike) sees ``older_than``: only deals older than ``hours`` before now, or
    ``newest``: only the ``newest`` most recent deals.
    """

    model_config = ConfigDict(extra="forbid")
    logins: int = Field(1, ge=1)
    mode: Literal["older_than", "newest"] = "older_than"
    hours: float = Field(24.0, gt=0)
    newest: int = Field(5, ge=0)


class CancelledDeal(BaseModel):
    """A trade the broker cancels after the fact (at ``at_utc``): both deals of the
    ``position_index``-th one-in-one-out position that closed at least ``older_than_hours``
    before ``at_utc`` become ``DEAL_TYPE_BUY_CANCELED`` / ``SELL_CANCELED`` with zero money,
    and a ``DEAL_TYPE_CORRECTION`` deal at ``at_utc`` carries that money (the balance stays)."""

    model_config = ConfigDict(extra="forbid")
    at_utc: AwareDatetime
    position_index: int = Field(0, ge=0)
    older_than_hours: float = Field(72.0, ge=0)


class Quirks(BaseModel):
    """How messy this account's terminal is (issue 13); the defaults are a tidy terminal."""

    model_config = ConfigDict(extra="forbid")
    staged_history: StagedHistory | None = None
    #: an exit deal (OUT / OUT_BY) shows in history this long after it happened, while its
    #: position is already gone from ``positions_get()`` (the balance already has its money)
    late_close_s: float = Field(0.0, ge=0)
    cancelled: CancelledDeal | None = None
    #: after a netting reversal (INOUT) ``TradePosition.ticket`` is the reversing order's
    #: ticket; ``identifier`` stays (MQL5: POSITION_TICKET / POSITION_IDENTIFIER)
    reversal_ticket: bool = False
    #: agent commissions as their own deals: daily (type 10) and monthly (11), position 0
    agent_commissions: bool = False
    #: broker symbol names: ``{"EURUSD": "EURUSDm", "XAUUSD": "XAUUSD.a"}``
    symbol_names: dict[str, str] = Field(default_factory=dict)
    #: appended to every deal and position comment (e.g. non-ASCII text)
    comment_suffix: str = ""
    #: one ``history_deals_get`` call returns at most this many rows (the oldest), silently
    max_history_rows: int | None = Field(None, ge=1)
    #: the first N logins (across processes): after ``positions_get`` the terminal is reading
    #: another account of the world (cross-wired mid-fetch, several terminals on one host)
    crosswire_logins: int = Field(0, ge=0)


class AccountSpec(BaseModel):
    """One broker account as the simulated trade server knows it."""

    model_config = ConfigDict(extra="forbid")
    login: int
    password: str
    server: str
    name: str = "Sim Trader"
    company: str = "Sim Broker Ltd"
    currency: str = "USD"
    leverage: int = Field(100, ge=1)
    margin_mode: Literal["hedging", "netting"] = "hedging"
    time_rule: str = "ny+7"
    initial_deposit: float = 10_000.0
    trades_per_day: float = Field(4.0, ge=0)
    symbols: list[str] = Field(default_factory=lambda: ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD"])
    login_delay_s: float = Field(0.0, ge=0)
    latency: Latency | None = None
    faults: list[Fault] = Field(default_factory=list)
    quirks: Quirks = Field(default_factory=lambda: Quirks.model_validate({}))

    @field_validator("time_rule")
    @classmethod
    def _rule_parses(cls, value: str) -> str:
        ServerTimeRule.parse(value)
        return value

    @field_validator("symbols")
    @classmethod
    def _symbols_known(cls, value: list[str]) -> list[str]:
        unknown = [s for s in value if s not in SYMBOLS]
        if unknown or not value:
            raise ValueError(f"symbols must be a non-empty subset of {sorted(SYMBOLS)}")
        return value


class World(BaseModel):
    """The whole simulated world; see module docstring."""

    model_config = ConfigDict(extra="forbid")
    seed: int
    now_utc: AwareDatetime | None = None
    timeline_start_utc: AwareDatetime
    latency: Latency = Field(default_factory=lambda: FixedLatency(seconds=0.0))
    state_dir: str | None = None
    accounts: list[AccountSpec] = Field(default_factory=list)
    _index: dict[tuple[int, str], AccountSpec] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any) -> None:
        self._index = {(a.login, a.server): a for a in self.accounts}

    # ------------------------------------------------------------------ queries

    def effective_now(self) -> datetime:
        """The simulated clock (``now_utc``) or, when it is null, the real one."""
        return self.now_utc if self.now_utc is not None else datetime.now(UTC)

    def account(self, login: int, server: str | None = None) -> AccountSpec | None:
        """The account with ``login`` (on ``server`` when given)."""
        if server is not None:
            return self._index.get((int(login), server))
        return next((a for a in self.accounts if a.login == int(login)), None)

    def resolved_state_dir(self, world_path: str | Path) -> Path:
        """Where cross-process fault counters live (default: ``<world dir>/state``)."""
        if self.state_dir:
            return Path(self.state_dir)
        return Path(world_path).resolve().parent / "state"

    # ------------------------------------------------------------------ persistence

    def with_now(self, now_utc: datetime | None) -> World:
        """A copy with the clock moved (tests advance time between syncs with this)."""
        return self.model_copy(update={"now_utc": now_utc})

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file + rename) so a running simulator never reads half a file.

        The rename also gives the file a new inode, which the simulator's reload check sees
        even when two writes land within one mtime tick.
        """
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(self.model_dump_json(indent=1))
        os.replace(tmp, target)
        return target

    @classmethod
    def load(cls, path: str | Path) -> World:
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------- builder


class ServerProfile(NamedTuple):
    """A trade server the builder spreads accounts over (logins = prefix * 10**6 + n)."""

    name: str
    company: str
    time_rule: str
    login_prefix: int


DEFAULT_SERVERS: tuple[ServerProfile, ...] = (
    ServerProfile("SimBroker-Live", "Sim Broker Ltd", "ny+7", 51),
    ServerProfile("AlphaFX-Real", "Alpha FX Markets Ltd", "fixed:+2", 52),
    ServerProfile("BetaTrade-Server", "Beta Trade Inc", "fixed:+3", 53),
    ServerProfile("GammaPrime-Demo", "Gamma Prime Capital", "utc", 54),
)
_SYMBOL_SETS = (
    ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD"],
    ["EURUSD", "USDJPY"],
    ["XAUUSD", "EURUSD", "AUDUSD"],
    ["GBPUSD", "USDCAD", "USDCHF", "EURUSD"],
    ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "AUDUSD", "USDCAD", "USDCHF"],
)


def account_password(seed: int, login: int, server: str) -> str:
    """The investor password the builder gives an account (deterministic, so tests know it)."""
    digest = hashlib.sha256(f"{seed}:{server}:{login}".encode()).hexdigest()
    return f"inv-{digest[:12]}"


def _floor_day(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def build_world(
    n_accounts: int,
    *,
    seed: int,
    now_utc: datetime | None,
    timeline_start_utc: datetime | None = None,
    faults: Mapping[int, Sequence[Fault | Mapping[str, Any]]] | None = None,
    latency: LognormalLatency | FixedLatency | None = None,
    login_delay_sampler: Callable[[random.Random], float] | None = None,
    trades_per_day: float | tuple[float, float] = (0.5, 3.0),
    servers: Sequence[ServerProfile] = DEFAULT_SERVERS,
    state_dir: str | None = None,
) -> World:
    """A varied, deterministic world of ``n_accounts`` accounts.

    Accounts go round-robin over ``servers`` (so four accounts already cover the time rules
    ny+7, fixed:+2, fixed:+3 and utc); every third account is netting. The n-th account on
    each server has login ``prefix * 10**6 + n``, so tickets collide across servers (the
    ticket range follows ``login % 10**6``). ``faults`` maps account index -> faults;
    ``trades_per_day`` is a value or a (low, high) range sampled per account.
    ``login_delay_sampler(rng)`` gives each account's extra login seconds.
    """
    if timeline_start_utc is None:
        timeline_start_utc = _floor_day((now_utc or datetime.now(UTC)) - timedelta(days=100))
    faults = faults or {}
    accounts: list[AccountSpec] = []
    for i in range(n_accounts):
        rng = random.Random(f"world:{seed}:{i}")
        profile = servers[i % len(servers)]
        login = profile.login_prefix * 1_000_000 + i // len(servers) + 1
        if isinstance(trades_per_day, tuple):
            rate = round(rng.uniform(*trades_per_day), 2)
        else:
            rate = float(trades_per_day)
        accounts.append(
            AccountSpec(
                login=login,
                password=account_password(seed, login, profile.name),
                server=profile.name,
                name=f"Sim Trader {i + 1}",
                company=profile.company,
                currency="EUR" if i % 7 == 5 else "USD",
                leverage=rng.choice([30, 100, 200, 500]),
                margin_mode="netting" if i % 3 == 1 else "hedging",
                time_rule=profile.time_rule,
                initial_deposit=float(rng.choice([1_000, 5_000, 10_000, 25_000, 50_000])),
                trades_per_day=rate,
                symbols=list(_SYMBOL_SETS[i % len(_SYMBOL_SETS)]),
                login_delay_s=login_delay_sampler(rng) if login_delay_sampler else 0.0,
                faults=[Fault.model_validate(f) for f in faults.get(i, [])],
            )
        )
    return World(
        seed=seed,
        now_utc=now_utc,
        timeline_start_utc=timeline_start_utc,
        latency=latency or FixedLatency(seconds=0.0),
        state_dir=state_dir,
        accounts=accounts,
    )
