"""The simulator against the reference taken from the real MetaTrader5 5.0.6231 wheel.

Any drift (a renamed or re-valued constant, a missing function, a reordered structure field,
an invented constant) fails here, because code written against the simulator must run
unchanged against the real package.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

import pytest

import mt5_sync.mt5sim as mt5

REFERENCE = Path(
    os.environ.get("MT5_REFERENCE_JSON")
    or Path(__file__).resolve().parents[2].parent
    / "shared"
    / "reference"
    / "metatrader5-5.0.6231.json"
)


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    assert REFERENCE.is_file(), f"reference JSON missing at {REFERENCE} (set MT5_REFERENCE_JSON)"
    data: dict[str, Any] = json.loads(REFERENCE.read_text(encoding="utf-8"))
    return data


def test_reference_is_the_pinned_version(reference: dict[str, Any]) -> None:
    assert reference["package"] == "MetaTrader5"
    assert mt5.__version__ == reference["version"]


def test_every_constant_has_the_reference_name_and_value(reference: dict[str, Any]) -> None:
    constants = reference["constants"]
    assert len(constants) > 200
    wrong = {
        name: (getattr(mt5, name, "<missing>"), value)
        for name, value in constants.items()
        if type(getattr(mt5, name, None)) is not int or getattr(mt5, name) != value
    }
    assert wrong == {}


def test_no_constant_is_invented(reference: dict[str, Any]) -> None:
    prefixes = tuple(sorted({name.split("_")[0] + "_" for name in reference["constants"]}))
    ours = {name for name in dir(mt5) if name.isupper() and name.startswith(prefixes)}
    assert ours - set(reference["constants"]) == set()
    assert set(reference["constants"]) - ours == set()


def test_every_function_exists_and_is_callable(reference: dict[str, Any]) -> None:
    missing = [name for name in reference["functions"] if not callable(getattr(mt5, name, None))]
    assert missing == []


def test_no_function_is_invented(reference: dict[str, Any]) -> None:
    public = {
        name
        for name, value in vars(mt5).items()
        if not name.startswith("_") and inspect.isfunction(value)
    }
    assert public == set(reference["functions"])


@pytest.mark.parametrize(
    "structure", ["TradeDeal", "TradePosition", "TradeOrder", "AccountInfo", "TerminalInfo"]
)
def test_structure_fields_match_in_order(reference: dict[str, Any], structure: str) -> None:
    cls = getattr(mt5, structure)
    assert cls._fields == tuple(reference["structures"][structure])
    record = cls(*range(len(cls._fields)))
    assert list(record._asdict()) == reference["structures"][structure]


def test_reference_lists_exactly_the_structures_we_model(reference: dict[str, Any]) -> None:
    assert set(reference["structures"]) == {
        "TradeDeal",
        "TradePosition",
        "TradeOrder",
        "AccountInfo",
        "TerminalInfo",
    }


def test_connection_functions_accept_the_reference_keywords(reference: dict[str, Any]) -> None:
    accepted = set(reference["keyword_arguments_accepted"])
    init = inspect.signature(mt5.initialize).parameters
    login = inspect.signature(mt5.login).parameters
    for name in ("path", "login", "password", "server", "timeout", "portable"):
        assert name in accepted and name in init, name
    for name in ("login", "password", "server", "timeout"):
        assert name in login, name
    assert init["timeout"].default == 60_000
    assert login["timeout"].default == 60_000
