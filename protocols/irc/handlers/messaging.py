"""PRIVMSG, NOTICE and TAGMSG; AWAY and SETNAME.

A ``\\x01ACTION …\\x01`` CTCP becomes the core's ``action`` kind (and is written back as
one); other CTCP passes through as text.  PRIVMSG to a pseudo-user (NickServ…) goes to its
handler in :data:`protocols.irc.services_registry.SERVICES` instead of the core.  Errors for
NOTICE are never answered (RFC 1459: no automatic reply to a notice).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, DeferredList

from chatserver.core.errors import ChatError
from chatserver.core.events import MessageKind, TagMessage
from chatserver.core.names import casefold
from protocols.costs import FANOUT
from protocols.irc import caps
from protocols.irc import numerics as n
from protocols.irc.channels import channel_name, is_channel, room_of
from protocols.irc.commands import command
from protocols.irc.connection import IrcConnection
from protocols.irc.handlers.multiline import add_line
from protocols.irc.handlers.registration import MAX_TARGETS
from protocols.irc.message import format_tags
from protocols.irc.render import cached, is_self, renders, server_time

if TYPE_CHECKING:
    from protocols.irc.message import IrcMessage

ACTION_START = "\x01ACTION"
STATUS_PREFIXES = {"@": "op", "+": "voice"}
# Client-only tags a client may send, in bytes (message-tags specification).
MAX_CLIENT_TAG_BYTES = 4094


def client_tags(conn: IrcConnection, msg: IrcMessage) -> dict[str, str]:
    """The ``+tags`` of a client message, when the client negotiated message-tags."""
    if not conn.cap_bits & caps.MESSAGE_TAGS or not msg.tags:
        return {}
    tags = {k: v for k, v in msg.tags.items() if k.startswith("+")}
    if tags and len(format_tags(tags).encode()) > MAX_CLIENT_TAG_BYTES:
        return {}
    return tags


def split_status(target: str) -> tuple[str | None, str]:
    """``@#room`` -> ("op", "#room"); the lowest of several prefixes counts (``@+#r``: voice)."""
    status = None
    while len(target) > 1 and target[0] in STATUS_PREFIXES and is_channel(target.lstrip("@+")):
        found = STATUS_PREFIXES[target[0]]
        if status is None or found == "voice":
            status = found
        target = target[1:]
    return status, target


def decode_ctcp_action(text: str) -> tuple[MessageKind, str] | None:
    """("action", body) for ``\\x01ACTION body\\x01``; None for anything else."""
    if not text.startswith(ACTION_START):
        return None
    rest = text[len(ACTION_START) :]
    if rest and rest[0] != " " and rest != "\x01":
        return None
    body = rest[1:] if rest.startswith(" ") else ""
    if body.endswith("\x01"):
        body = body[:-1]
    return "action", body


def _say(conn: IrcConnection, msg: IrcMessage, notice: bool) -> Deferred[Any] | None:
    assert conn.core is not None
    if "batch" in msg.tags and conn.cap_bits & caps.MULTILINE:
        # A line of a draft/multiline batch: said when the batch ends.
        add_line(conn, msg)
        return None
    name = msg.command
    if not msg.params or not msg.params[0]:
        if not notice:
            conn.reply(n.ERR_NORECIPIENT, f"No recipient given ({name})")
        return None
    if len(msg.params) < 2 or not msg.params[1]:
        if not notice:
            conn.reply(n.ERR_NOTEXTTOSEND, "No text to send")
        return None
    tags = client_tags(conn, msg)
    return say_text(conn, name, msg.params[0], msg.params[1], tuple(tags.items()) if tags else ())


def say_text(
    conn: IrcConnection,
    name: str,
    target_list: str,
    text: str,
    tags: tuple[tuple[str, str], ...],
    native: Any = None,
) -> Deferred[Any] | None:
    """Say ``text`` (from PRIVMSG or NOTICE, ``name``) to each of the targets."""
    assert conn.core is not None
    notice = name == "NOTICE"
    kind: MessageKind = "notice" if notice else "privmsg"
    if target_list[:1] == "#" and "," not in target_list and text[:1] != "\x01":
        # Nearly every message: plain text to one channel (no status prefix, no CTCP), which
        # the loop below comes to as well.
        room = room_of(target_list)
        if room is not None:
            try:
                conn.service.say(
                    conn.core, text=text, room=room, kind=kind, tags=tags, native=native
                )
            except ChatError as err:
                if not notice:
                    conn.reply_error(err, name, target_list)
            return None
    first = target_list
    targets = [first] if "," not in first else [t for t in first.split(",") if t]
    if len(targets) > MAX_TARGETS:
        if not notice:
            conn.reply(
                n.ERR_TOOMANYTARGETS, target_list, f"Too many targets (at most {MAX_TARGETS})"
            )
        return None
    if not notice:
        action = decode_ctcp_action(text)
        if action is not None:
            kind, text = action
            if not text:
                return None
    pending: list[Deferred[Any]] = []
    for raw_target in targets:
        status, target = split_status(raw_target)
        try:
            if is_channel(target):
                room = room_of(target)
                if room is None:
                    if not notice:
                        conn.reply(n.ERR_NOSUCHCHANNEL, target, "No such channel")
                    continue
                conn.service.say(
                    conn.core,
                    text=text,
                    room=room,
                    kind=kind,
                    tags=tags,
                    status=status,
                    native=native,
                )
                continue
            handler = conn.services.get(casefold(target))
            if handler is not None:
                if notice:
                    continue  # services never answer notices
                d = handler(conn, text)
                if isinstance(d, Deferred):
                    pending.append(d)
                continue
            if not notice and conn.service.find_user(target) is None:
                # Nobody has the nick: a registered account keeps it for its next login.
                d = conn.service.say_offline(
                    conn.core, nick=target, text=text, kind=kind, tags=tags
                )
                d.addErrback(_offline_failed, conn, name, target)
                pending.append(d)
                continue
            conn.service.say(conn.core, text=text, nick=target, kind=kind, tags=tags, native=native)
            if not notice:
                recipient = conn.service.find_user(target)
                if recipient is not None and recipient.away and recipient is not conn.user:
                    conn.reply(n.RPL_AWAY, recipient.nick, recipient.away)
        except ChatError as err:
            if not notice:
                conn.reply_error(err, name, target)
    if pending:
        return DeferredList(pending, consumeErrors=True).addCallback(lambda _: None)
    return None


def _offline_failed(failure: Any, conn: IrcConnection, name: str, target: str) -> None:
    failure.trap(ChatError)
    conn.reply_error(failure.value, name, target)


@command("PRIVMSG")
def privmsg(conn: IrcConnection, msg: IrcMessage) -> Deferred[Any] | None:
    return _say(conn, msg, notice=False)


@command("NOTICE")
def notice(conn: IrcConnection, msg: IrcMessage) -> Deferred[Any] | None:
    return _say(conn, msg, notice=True)


# -- TAGMSG ------------------------------------------------------------------------------------


@command("TAGMSG", min_params=1, cost=0.5)
def tagmsg(conn: IrcConnection, msg: IrcMessage) -> None:
    """Relay client-only tags (typing notices, reactions) through the core, which gives them
    to every protocol: IRC clients with message-tags get TAGMSG (:func:`render_tagmsg`), XMPP
    users chat states and reactions.  Nothing is kept in history."""
    assert conn.core is not None and conn.user is not None
    tags = tuple(client_tags(conn, msg).items())
    if not tags:
        return
    for raw_target in msg.params[0].split(",")[:MAX_TARGETS]:
        status, target = split_status(raw_target)
        try:
            if is_channel(target):
                key = room_of(target)
                if key is None or conn.service.get_room(key) is None:
                    conn.reply(n.ERR_NOSUCHCHANNEL, target, "No such channel")
                    continue
                conn.service.send_tags(conn.core, tags, room=key, status=status)
            else:
                conn.service.send_tags(conn.core, tags, nick=target)
        except ChatError as err:
            conn.reply_error(err, "TAGMSG", target)


TAGMSG_BITS = caps.MESSAGE_TAGS | caps.SERVER_TIME | caps.ACCOUNT_TAG


def _build_tagmsg(event: TagMessage, bits: int) -> bytes:
    tags = dict(event.tags)
    tags["msgid"] = event.id
    if bits & caps.SERVER_TIME:
        tags["time"] = server_time(event.ts)
    if bits & caps.ACCOUNT_TAG and event.source.account:
        tags["account"] = event.source.account
    if event.source.bot:
        tags["bot"] = ""
    if event.room is not None:
        prefix = "@" if event.status == "op" else "+" if event.status == "voice" else ""
        shown = prefix + channel_name(event.room)
    else:
        shown = event.target or "*"
    return f"@{format_tags(tags)} :{event.source.mask} TAGMSG {shown}\r\n".encode()


@renders(TagMessage)
def render_tagmsg(conn: IrcConnection, event: TagMessage) -> bytes | None:
    """TAGMSG for clients with message-tags (the others would not know what to do with it);
    the sender's own only with echo-message, or when it wrote to itself."""
    if not event.tags or not conn.cap_bits & caps.MESSAGE_TAGS:
        return None
    to_self = False
    if event.origin is conn:
        to_self = event.target is not None and is_self(conn, event.target)
        if not conn.cap_bits & caps.ECHO_MESSAGE:
            if not to_self:
                return None
            to_self = False
    data = cached(event, conn.cap_bits & TAGMSG_BITS, _build_tagmsg)
    if to_self:
        # To oneself with echo-message: the delivery, and the echo that answers.
        conn.emit_delivery(data)
    return data


# -- AWAY / SETNAME ----------------------------------------------------------------------------


@command("AWAY", per_delivery=FANOUT)
def away(conn: IrcConnection, msg: IrcMessage) -> None:
    assert conn.core is not None
    text = msg.params[0] if msg.params else ""
    conn.service.set_away(conn.core, text or None)
    if text:
        conn.reply(n.RPL_NOWAWAY, "You have been marked as being away")
    else:
        conn.reply(n.RPL_UNAWAY, "You are no longer marked as being away")


@command("SETNAME", min_params=1, per_delivery=FANOUT)
def setname(conn: IrcConnection, msg: IrcMessage) -> None:
    assert conn.core is not None
    realname = msg.params[0]
    if not realname or len(realname) > conn.service.settings.realname_max:
        conn.fail("SETNAME", "INVALID_REALNAME", description="Realname is not valid")
        return
    # The change comes back to this client as a SETNAME line (with the setname capability).
    conn.service.set_realname(conn.core, realname)
