"""In-band registration (XEP-0077): new accounts, password changes and account removal.

Registration is open, closed or by invitation by ``[xmpp] registration``, which by default
follows the core's ``[chat] registration``.  By invitation, only a username that an operator
has invited can be registered (the core uses up the invitation with the registration, whatever
the protocol).  Before authentication only the registration form and the registration itself
are allowed (rate-limited per address); after it, the same namespace changes the password or
removes the account.  Accounts are the core's: a nick registered here is an account on IRC
and line chat too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lxml import etree
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chatserver.core.errors import AccountError, BadName, ChatError
from chatserver.core.names import casefold
from protocols.xmpp import stanzas
from protocols.xmpp.errors import chat_error_condition
from protocols.xmpp.router import StanzaError, handler
from protocols.xmpp.stanzas import NS_REGISTER

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection

log = Logger()

INSTRUCTIONS = (
    "Choose a username and password. The username is also your nick on IRC and line chat."
)
INVITE_INSTRUCTIONS = (
    "Registration on this server is by invitation: only a username that an operator has"
    " invited can be registered. " + INSTRUCTIONS
)


def registration_mode(conn: XmppConnection) -> str:
    """``[xmpp] registration`` ("open", "closed" or "invite"), else ``[chat] registration``."""
    return conn.factory.config.registration or conn.service.settings.registration


def _query() -> etree._Element:
    return stanzas.element("query", ns=NS_REGISTER)


def _fields(stanza: etree._Element) -> tuple[etree._Element, str | None, str | None]:
    query = stanzas.payload(stanza)
    if query is None:
        raise StanzaError("bad-request")
    username = stanzas.child_text(query, "username", NS_REGISTER)
    password = stanzas.child_text(query, "password", NS_REGISTER)
    return query, username, password


def _account_error(failure: Any) -> None:
    failure.trap(ChatError)
    err = failure.value
    condition = chat_error_condition(err)
    if isinstance(err, BadName):
        condition = "not-acceptable"
    raise StanzaError(condition, err.reason)


def handle_preauth(conn: XmppConnection, stanza: etree._Element) -> Deferred[Any] | None:
    """A registration IQ before authentication: the form, or a new account."""
    if not conn.registration_open():
        raise StanzaError("service-unavailable", "registration is closed on this server")
    mode = registration_mode(conn)
    type_ = stanza.get("type")
    if type_ == "get":
        query = _query()
        instructions = INVITE_INSTRUCTIONS if mode == "invite" else INSTRUCTIONS
        stanzas.sub(query, "instructions", text=instructions)
        stanzas.sub(query, "username")
        stanzas.sub(query, "password")
        if conn.service.settings.registration_email_required:
            stanzas.sub(query, "email")
        conn.iq_result(stanza, query)
        return None
    if type_ != "set":
        return None
    query, username, password = _fields(stanza)
    if stanzas.find(query, "remove", NS_REGISTER) is not None:
        raise StanzaError("not-allowed", "log in to remove an account")
    if not username or not password:
        raise StanzaError("not-acceptable", "a username and a password are needed")
    # The core's throttle, shared with line and IRC registration ([chat] registration_burst),
    # is asked by the core once the cheap refusals have passed.
    d = conn.service.register_account(
        username,
        password,
        stanzas.child_text(query, "email", NS_REGISTER) or None,
        address=conn.address,
        mode=mode,
        protocol="xmpp",
    )

    def created(record: Any) -> None:
        conn.iq_result(stanza)

    return d.addCallbacks(created, _account_error)


@handler("iq", "get", NS_REGISTER)
def registered(conn: XmppConnection, stanza: etree._Element) -> None:
    _to_server(stanza)
    query = _query()
    stanzas.sub(query, "registered")
    stanzas.sub(query, "username", text=conn.account)
    stanzas.sub(query, "password")
    conn.iq_result(stanza, query)


@handler("iq", "set", NS_REGISTER)
def change(conn: XmppConnection, stanza: etree._Element) -> Deferred[Any]:
    _to_server(stanza)
    query, username, password = _fields(stanza)
    account = conn.account
    assert account is not None
    if stanzas.find(query, "remove", NS_REGISTER) is not None:
        return _remove(conn, stanza, account)
    if not password:
        raise StanzaError("bad-request", "a new password is needed")
    if username is not None and casefold(username) != casefold(account):
        raise StanzaError("bad-request", "you can only change your own password")
    # The account's other sessions end: they proved the old password.
    d = conn.service.set_account_password(account, password, keep=conn.core)

    def changed(_: Any) -> None:
        log.info("xmpp password changed for {account}", account=account)
        conn.iq_result(stanza)

    return d.addCallbacks(changed, _account_error)


def _remove(conn: XmppConnection, stanza: etree._Element, account: str) -> Deferred[Any]:
    # Every other session of the account ends now; this one right below, after its answer.
    d = conn.service.delete_account(account, requester=conn.core)

    def removed(existed: bool) -> None:
        if not existed:
            raise StanzaError("item-not-found")
        log.info("xmpp removed account {account}", account=account)
        conn.iq_result(stanza)
        for store in (conn.factory.roster_store, conn.factory.pep_store):
            if hasattr(store, "delete_account"):
                store.delete_account(account)
        conn.factory.rosters.forget(account)
        conn.factory.pep.forget(account)
        if conn.core is not None and conn.user is not None and conn.user.account is not None:
            try:
                conn.service.logout(conn.core)
            except AccountError:
                pass
        # XEP-0077 §3.2: the account is gone, so are its sessions.
        for session in conn.factory.resources(conn.bare_jid or ""):
            session.stream_error("not-authorized", "the account was removed")

    return d.addCallbacks(removed, _account_error)


def _to_server(stanza: etree._Element) -> None:
    to = stanza.get("to")
    if to is not None and "@" in to:
        raise StanzaError("service-unavailable")
