"""One list of core errors drives every protocol's error table: a new core error (or a new
kind of join refusal, account error or SASL failure) that one protocol forgot fails here."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from chatserver.auth import sasl
from chatserver.core import errors
from chatserver.core.errors import CORE_ERRORS, AccountError, ChatError, JoinRefused
from protocols.irc import errors as irc_errors
from protocols.irc import sasl as irc_sasl
from protocols.line import errors as line_errors
from protocols.xmpp import errors as xmpp_errors
from protocols.xmpp import sasl as xmpp_sasl
from protocols.xmpp.muc import join as muc_join

TABLES = {
    "irc": irc_errors.ERRORS,
    "xmpp": xmpp_errors.CONDITIONS,
    "line": line_errors.ERRORS,
}


def kinds(cls: type) -> set[str]:
    """The string constants a class names its kinds with (``BANNED = "banned"`` …)."""
    return {value for name, value in vars(cls).items() if name.isupper() and isinstance(value, str)}


def test_the_list_holds_every_core_error() -> None:
    defined = {
        obj for obj in vars(errors).values() if inspect.isclass(obj) and issubclass(obj, ChatError)
    }
    assert defined == set(CORE_ERRORS)


@pytest.mark.parametrize("protocol", list(TABLES))
def test_every_protocol_maps_every_core_error(protocol: str) -> None:
    assert set(TABLES[protocol]) == set(CORE_ERRORS)


def test_the_kinds_are_listed() -> None:
    assert set(JoinRefused.WHYS) == kinds(JoinRefused)
    assert set(AccountError.CODES) == kinds(AccountError)
    assert set(sasl.REASONS) == {
        getattr(sasl, name)
        for name in ("MALFORMED", "INVALID_AUTHZID", "NOT_AUTHORIZED", "THROTTLED", "TEMPORARY")
    }


@pytest.mark.parametrize(
    "table, listed",
    [
        (irc_errors.JOIN_REFUSALS, JoinRefused.WHYS),
        (xmpp_errors.JOIN_CONDITIONS, JoinRefused.WHYS),
        (muc_join.JOIN_ERRORS, JoinRefused.WHYS),
        (xmpp_errors.ACCOUNT_CONDITIONS, AccountError.CODES),
        (irc_sasl.FAILURE_TEXT, sasl.REASONS),
        (xmpp_sasl.CONDITIONS, sasl.REASONS),
    ],
)
def test_every_kind_is_mapped(table: dict[str, Any], listed: tuple[str, ...]) -> None:
    assert set(table) == set(listed)


def test_an_error_of_no_listed_class_gets_its_nearest_entry() -> None:
    class Unlisted(errors.NotPermitted):
        pass

    err = Unlisted("no")
    for table in TABLES.values():
        assert errors.entry_for(table, err) is table[errors.NotPermitted]
