"""One-to-one messages (RFC 6121 §5): ``account@domain`` is the user logged in to that
account, and ``~nick@domain`` a guest, on any protocol.

A message with a body goes through the core (``service.say``) as one message, so an IRC or
line-chat user gets it as a private message (one line per line of the body: their renderers
split it), history and moderation see it, and every connection of the target user gets it.
The core Message carries the stanza itself (:mod:`protocols.xmpp.relay`), so XMPP recipients
get the sender's stanza whole.  A message without a body (chat states, reactions, receipts,
markers) is relayed here to XMPP clients, by the same rule; the chat states and reactions
in it also reach the target's other connections as IRC client tags (:mod:`protocols.xmpp.tags`).
A retraction is :mod:`protocols.xmpp.retract`'s.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from lxml import etree
from twisted.internet.defer import Deferred

from chatserver.core.errors import NoSuchNick
from chatserver.core.events import MessageKind
from protocols.xmpp import relay, retract, stanzas, tags
from protocols.xmpp.jid import GUEST_MARK, JID, local_user, try_parse
from protocols.xmpp.router import StanzaError, handler

NS_CHAT_MARKERS = "urn:xmpp:chat-markers:0"

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection

# IRC and line chat show each line of a body as a line of its own: more than this many would
# flood them.
MAX_LINES = 30
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# conn.extra key: body-less messages waiting for the session's initial presence; at most
# HELD_MAX of them (a session that never sends presence holds no more).
HELD = "im.held"
HELD_MAX = 100


def _target(conn: XmppConnection, stanza: etree._Element) -> JID | None:
    """The local user a message is for, or None for the server itself."""
    jid = try_parse(stanza.get("to"))
    if jid is None or jid.local is None:
        return None
    if jid.domain != conn.domain:
        raise StanzaError("remote-server-not-found", "this server does not federate")
    return jid


def _check_lines(body: str) -> None:
    lines = [line for line in _LINE_BREAK.split(body) if line.strip()]
    if len(lines) > MAX_LINES:
        raise StanzaError("policy-violation", f"at most {MAX_LINES} lines per message")


@handler("message", "chat", None)
@handler("message", "normal", None)
def chat(conn: XmppConnection, stanza: etree._Element) -> Deferred | None:
    target = _target(conn, stanza)
    if target is None:
        return None
    body = stanzas.child_text(stanza, "body")
    assert conn.jid is not None
    if body is None or not body.strip():
        if local_user(conn.service, target.local or "") is None:
            # RFC 6121 §8.5.2.2.1, as for a message with a body: nobody to tell.
            raise StanzaError("service-unavailable", f"{target.local} is not connected")
        _pass_on(conn, stanza, target)
        _tags_to_others(conn, stanza, target.local or "")
        displayed = stanzas.find(stanza, "displayed", NS_CHAT_MARKERS)
        if displayed is not None and displayed.get("id"):
            return _mark_read(conn, target.local or "", displayed.get("id") or "")
        return None
    assert conn.core is not None
    _check_lines(body)
    kind: MessageKind = "privmsg"
    text = body
    if text.startswith("/me "):
        kind, text = "action", text[4:]
    native = relay.of(stanza, conn.jid, conn.lang)
    # A reply or a correction, for IRC clients (their msgids are the core's ids).
    client_tags = tags.private_tags(conn, stanza)
    local = target.local or ""
    if not local.startswith(GUEST_MARK) and local_user(conn.service, local) is None:
        # RFC 6121 §8.5.2.1.1: an account nobody is logged in to gets the message kept
        # (offline storage); a JID that is no account is unavailable.
        d = conn.service.say_offline(
            conn.core, nick=local, text=text, kind=kind, tags=client_tags, native=native
        )
        d.addErrback(_unavailable, local)
        return d
    try:
        if local.startswith(GUEST_MARK):
            # A guest's address reaches the guest on that nick, never a logged-in user.
            user = local_user(conn.service, local)
            if user is None:
                raise NoSuchNick(local)
            said = conn.service.say(
                conn.core, nick=user.nick, text=text, kind=kind, tags=client_tags, native=native
            )
        else:
            said = conn.service.say(
                conn.core,
                account=target.local,
                text=text,
                kind=kind,
                tags=client_tags,
                native=native,
            )
    except NoSuchNick:
        _unavailable(None, local)
        return None
    # A retraction (XEP-0424) will name the message by the id its sender gave it.
    retract.sent_ids(conn).add(conn.bare_jid or "", stanza.get("id"), said.id)
    return None


def _tags_to_others(conn: XmppConnection, stanza: etree._Element, local: str) -> None:
    """Chat states and reactions for the target's connections on other protocols (IRC
    client tags); its XMPP resources had the stanza itself."""
    if local.startswith(GUEST_MARK):
        tags.relay_private_tags(conn, stanza, nick=local[len(GUEST_MARK) :])
    else:
        tags.relay_private_tags(conn, stanza, account=local)


def _mark_read(conn: XmppConnection, nick: str, msgid: str) -> Deferred | None:
    """A displayed marker (XEP-0333) moves the account's read position in the conversation
    to that message, on every protocol (IRC ``draft/read-marker``)."""
    if conn.user is None or conn.user.account is None:
        return None
    assert conn.core is not None
    core = conn.core

    def found(message: Any) -> Any:
        if message is None:
            return None
        return conn.service.mark_read(core, message.ts, nick=nick)

    d = conn.service.archive_find(core, msgid).addCallback(found)
    # A marker is a hint: one that cannot be kept is dropped, never answered with an error.
    d.addErrback(lambda f: None)
    return d


def _unavailable(failure: Any, nick: str) -> None:
    if failure is not None:
        failure.trap(NoSuchNick)
    raise StanzaError("service-unavailable", f"{nick} is not connected")


def _pass_on(conn: XmppConnection, stanza: etree._Element, target: JID) -> None:
    """A stanza only XMPP clients understand: to the target's resources, carbons to the
    sender's (the rule of :func:`relay.deliver`).  When none of the target's resources is
    available yet but some are bound, it waits on them for their initial presence (a client
    that has just logged in sends it next): a receipt or a marker sent at that moment is
    not lost, as Prosody's offline storage keeps it for that presence."""
    assert conn.jid is not None and conn.bare_jid is not None
    native = relay.of(stanza, conn.jid, conn.lang)
    available = list(conn.factory.available(target.bare))
    for session in available:
        relay.deliver(session, native, recipient=True)
    if not available:
        for session in conn.factory.resources(target.bare):
            held = session.extra.setdefault(HELD, [])
            if len(held) < HELD_MAX:
                held.append(native)
    if target.bare != conn.bare_jid:
        for session in conn.factory.available(conn.bare_jid):
            relay.deliver(session, native, recipient=False)
        if target.local and not target.local.startswith(GUEST_MARK) and conn.core is not None:
            # The target's connections on another process of a cluster get it from there.
            conn.service.pass_on(conn.core, native, account=target.local)


def release_held(conn: XmppConnection) -> None:
    """``conn`` sent its initial presence: what waited for it (see :func:`_pass_on`)."""
    held = conn.extra.pop(HELD, None)
    for native in held or ():
        relay.deliver(conn, native, recipient=True)


@handler("message", "error", None)
def message_error(conn: XmppConnection, stanza: etree._Element) -> None:
    """An error about a message (a client refusing a chat state): pass it to XMPP users."""
    target = try_parse(stanza.get("to"))
    if target is not None and target.local is not None and target.domain == conn.domain:
        _pass_on(conn, stanza, target)


@handler("message", "headline", None)
@handler("message", "groupchat", None)
def ignored(conn: XmppConnection, stanza: etree._Element) -> None:
    """Headlines from clients, and groupchat outside the room service, go nowhere."""
