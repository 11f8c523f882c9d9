"""Core events as IRC lines: one renderer per event type.

The hot path is a room message fanned out to many members.  A renderer writes an event once
per *variant* — the subset of the recipient's capabilities that changes the bytes (tags,
extended-join …) — and caches the bytes on the event under ``("irc", bits)``; every other
recipient with the same variant gets the same bytes object.  Only rare, per-recipient events
(server notices, numerics for the user's own account) are written per connection.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chatserver.core.events import (
    AccountChange,
    Away,
    Event,
    HostChange,
    Invite,
    Join,
    Kick,
    Message,
    MessageBatch,
    MessageRun,
    MissedMessages,
    ModeChange,
    NickChange,
    OfflineMessages,
    Part,
    Quit,
    RealnameChange,
    ServerNotice,
    Topic,
    UserModeChange,
    Wallops,
    Who,
    share_rendering,
)
from chatserver.core.names import casefold
from chatserver.core.records import RoomEventRecord
from protocols.irc import caps
from protocols.irc import numerics as n
from protocols.irc.channels import channel_name, send_names, send_topic
from protocols.irc.message import format_tags
from protocols.irc.modes import format_changes

if TYPE_CHECKING:
    from protocols.irc.connection import IrcConnection

# A room message's bytes for a variant depend on the message alone: a cluster node may send
# them with the message, and another node's members of that variant get them as they are.
share_rendering("irc")

Renderer = Callable[["IrcConnection", Any], "bytes | None"]
RENDERERS: dict[type, Renderer] = {}

# The bits that change each kind of line.
TAG_BITS = caps.SERVER_TIME | caps.ACCOUNT_TAG
MESSAGE_BITS = caps.MESSAGE_TAGS | caps.SERVER_TIME | caps.ACCOUNT_TAG | caps.MULTILINE
JOIN_BITS = TAG_BITS | caps.EXTENDED_JOIN | caps.AWAY_NOTIFY
BATCH_BITS = MESSAGE_BITS | JOIN_BITS

LINE_BYTES = 512
ACTION_PREFIX = "\x01ACTION "
MULTILINE_BATCH = "draft/multiline"
CONCAT_TAG = "draft/multiline-concat"
_UNSAFE = str.maketrans({"\r": " ", "\n": " ", "\x00": " "})


def renders(event_type: type) -> Callable[[Renderer], Renderer]:
    def register(func: Renderer) -> Renderer:
        RENDERERS[event_type] = func
        return func

    return register


def render(conn: IrcConnection, event: Event) -> bytes | None:
    """The bytes ``conn`` should get for ``event`` (None: nothing for this connection)."""
    renderer = RENDERERS.get(type(event))
    if renderer is None:
        return None
    return renderer(conn, event)


# -- building blocks ---------------------------------------------------------------------------


def server_time(ts: float) -> str:
    """IRCv3 server-time: ``YYYY-MM-DDThh:mm:ss.sssZ`` in UTC."""
    dt = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def clean(text: str) -> str:
    """Text from other protocols may hold line breaks or NUL; on one IRC line they become spaces."""
    if "\r" in text or "\n" in text or "\x00" in text:
        return text.translate(_UNSAFE)
    return text


def line(
    tags: dict[str, str] | None,
    source: str,
    command: str,
    middles: tuple[str, ...] = (),
    trailing: str | None = None,
) -> bytes:
    """One wire line; ``middles`` must be safe words (names), ``trailing`` any text.

    The line (without its tags) fits in 512 bytes: a trailing text from another protocol
    (a part or quit reason from line chat or XMPP has no IRC-sized limit) is cut to fit, at
    a character boundary.
    """
    parts = [":" + source, command, *middles]
    if trailing is not None:
        text = clean(trailing)
        budget = LINE_BYTES - 2 - len(" ".join(parts).encode("utf-8")) - 2
        parts.append(":" + cut_utf8(text, budget))
    if tags:
        parts.insert(0, "@" + format_tags(tags))
    return (" ".join(parts) + "\r\n").encode("utf-8")


def event_tags(ts: float, who: Who | None, bits: int) -> dict[str, str] | None:
    """``time`` and ``account`` tags as the variant asks."""
    tags: dict[str, str] = {}
    if bits & caps.SERVER_TIME:
        tags["time"] = server_time(ts)
    if bits & caps.ACCOUNT_TAG and who is not None and who.account:
        tags["account"] = who.account
    return tags or None


def cached(event: Event, bits: int, build: Callable[[Any, int], bytes]) -> bytes:
    """The bytes of ``event`` for variant ``bits``, built on first use."""
    key = ("irc", bits)
    data = event.rendered.get(key)
    if data is None:
        data = event.rendered[key] = build(event, bits)
    return data


def is_self(conn: IrcConnection, nick: str) -> bool:
    user = conn.user
    return user is not None and casefold(nick) == user.key


def cut_utf8(text: str, budget: int) -> str:
    """``text`` cut to at most ``budget`` UTF-8 bytes at a character boundary."""
    data = text.encode("utf-8")
    if len(data) <= budget:
        return text
    # Dropping the bytes of a character cut in two leaves whole characters only.
    return data[: max(budget, 0)].decode("utf-8", "ignore")


def split_utf8(text: str, budget: int) -> list[str]:
    """Pieces of ``text`` of at most ``budget`` UTF-8 bytes, cut at character boundaries
    (at a space near the end of the window when there is one); joined they are ``text``."""
    data = text.encode("utf-8")
    if len(data) <= budget:
        return [text]
    budget = max(budget, 4)
    pieces = []
    while len(data) > budget:
        cut = budget
        # Never inside a character: back up over continuation bytes (10xxxxxx).
        while cut > 0 and (data[cut] & 0xC0) == 0x80:
            cut -= 1
        space = data.rfind(b" ", (budget * 7) // 10, cut)
        if space > 0:
            cut = space + 1
        pieces.append(data[:cut].decode("utf-8"))
        data = data[cut:]
    if data:
        pieces.append(data.decode("utf-8"))
    return pieces


# -- messages ----------------------------------------------------------------------------------


def message_target(msg: Message) -> str:
    if msg.room is not None:
        prefix = "@" if msg.status == "op" else "+" if msg.status == "voice" else ""
        return prefix + channel_name(msg.room)
    return msg.target or "*"


def message_tags(msg: Message, bits: int) -> dict[str, str]:
    tags: dict[str, str] = {}
    if bits & caps.SERVER_TIME:
        tags["time"] = server_time(msg.ts)
    if bits & caps.MESSAGE_TAGS:
        tags["msgid"] = msg.id
        if msg.source.bot:
            tags["bot"] = ""
        for key, value in msg.tags:
            # Only client-only tags travel; anything else a client claimed is dropped.
            if key.startswith("+"):
                tags[key] = value
    if bits & caps.ACCOUNT_TAG and msg.source.account:
        tags["account"] = msg.source.account
    return tags


@dataclass(frozen=True, slots=True)
class IrcLines:
    """A draft/multiline message as the IRC client sent it (``Message.native``): its lines,
    each with whether it continues the line before (``draft/multiline-concat``).  The core
    has the text with a newline between lines; IRC recipients get the sender's own cut."""

    pieces: tuple[tuple[str, bool], ...]


def _pieces(msg: Message, budget: int, sent_budget: int) -> list[tuple[str, bool]]:
    """The message's lines as (text, continues the line before), each within ``budget``.

    A line of text that an IRC client could have sent on one line stays one line, cut at a
    character boundary when the sender's prefix makes it too long to relay whole (clients
    take each PRIVMSG for a message of its own).  Longer text, which only other protocols
    can send, is split into as many pieces as it needs, the later ones continuing the first.
    """
    native = msg.native
    if isinstance(native, IrcLines):
        return [(cut_utf8(text, budget), concat) for text, concat in native.pieces]
    text = msg.text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    out: list[tuple[str, bool]] = []
    for text_line in text.split("\n"):
        if len(text_line.encode("utf-8")) <= sent_budget:
            out.append((cut_utf8(text_line, budget), False))
            continue
        first, *rest = split_utf8(text_line, budget)
        out.append((first, False))
        out.extend((piece, True) for piece in rest)
    return out


def message_lines(msg: Message, tags: dict[str, str], multiline: bool = False) -> list[bytes]:
    """The lines of one message, each made to fit 512 bytes (see :func:`_pieces`).

    Without ``multiline`` each non-blank piece is a PRIVMSG of its own, and only the first
    carries ``msgid`` (a msgid names one line to clients).  With it (draft/multiline), a
    message of several pieces is one ``draft/multiline`` batch: the tags on its start, each
    piece inside it, blank ones too.
    """
    command = "NOTICE" if msg.kind == "notice" else "PRIVMSG"
    source = msg.source.mask
    target = message_target(msg)
    head = f":{source} {command} {target} :"
    budget = LINE_BYTES - 2 - len(head.encode("utf-8"))
    # What the sender's own line could hold: ``COMMAND target text`` (one word needs no
    # colon).
    sent_budget = LINE_BYTES - 2 - len(f"{command} {target} ".encode())
    action = msg.kind == "action"
    if action:
        budget -= len(ACTION_PREFIX) + 1
        sent_budget -= len(ACTION_PREFIX) + 1
    tag_text = "@" + format_tags(tags) + " " if tags else ""
    text = msg.text
    if (
        text
        and type(msg.native) is not IrcLines
        and text.isascii()
        and len(text) <= budget
        and "\n" not in text
        and "\r" not in text
        and "\x00" not in text
    ):
        # Almost every message: one line of ASCII that fits whole (what the general case
        # below comes to for it, without its splitting and measuring).
        body = f"{ACTION_PREFIX}{text}\x01" if action else text
        return [f"{tag_text}{head}{body}\r\n".encode()]
    pieces = _pieces(msg, budget, sent_budget)
    out: list[bytes] = []
    if multiline and len(pieces) > 1:
        ref = "ml" + msg.id
        out.append(f"{tag_text}:{source} BATCH +{ref} {MULTILINE_BATCH} {target}\r\n".encode())
        for piece, concat in pieces:
            body = f"{ACTION_PREFIX}{piece}\x01" if action else piece
            inner = f"@batch={ref};{CONCAT_TAG} " if concat and piece else f"@batch={ref} "
            out.append(f"{inner}{head}{body}\r\n".encode())
        out.append(f":{source} BATCH -{ref}\r\n".encode())
        return out
    rest_tags = {k: v for k, v in tags.items() if k != "msgid"}
    rest_text = "@" + format_tags(rest_tags) + " " if rest_tags else ""
    for piece, _concat in pieces:
        if not piece:
            continue
        body = f"{ACTION_PREFIX}{piece}\x01" if action else piece
        prefix = tag_text if not out else rest_text
        out.append(f"{prefix}{head}{body}\r\n".encode())
    return out


def build_message(msg: Message, bits: int) -> bytes:
    return b"".join(message_lines(msg, message_tags(msg, bits), bool(bits & caps.MULTILINE)))


def render_run(conn: IrcConnection, run: MessageRun) -> bytes:
    """Another node's run of room messages: the bytes its node made for this variant, if it
    sent them (they are what the messages render to here), else made of its messages."""
    key = ("irc", conn.cap_bits & MESSAGE_BITS)
    data = run.rendered.get(key)
    if data is None:
        # The first member of this variant: what its node shipped, or made here.
        data = run.shipped.get(key)
        if data is None:
            bits = key[1]
            parts = []
            for msg in run.messages():
                part = msg.rendered.get(key)
                if part is None:
                    part = msg.rendered[key] = build_message(msg, bits)
                parts.append(part)
            data = b"".join(parts)
        run.rendered[key] = data
    return data


RENDERERS[MessageRun] = render_run


@renders(Message)
def render_message(conn: IrcConnection, msg: Message) -> bytes | None:
    to_self = False
    if msg.origin is conn:
        to_self = msg.target is not None and is_self(conn, msg.target)
        if not conn.cap_bits & caps.ECHO_MESSAGE:
            # The sender sees its own message only with echo-message, unless it wrote to
            # itself.
            if not to_self:
                return None
            to_self = False
    bits = conn.cap_bits & MESSAGE_BITS
    key = ("irc", bits)
    data = msg.rendered.get(key)
    if data is None:
        data = msg.rendered[key] = build_message(msg, bits)
    if to_self:
        # A message to oneself with echo-message comes twice: the delivery, and the echo
        # that answers the command (the one a label goes on).
        conn.emit_delivery(data)
    return data


def render_batch(conn: IrcConnection, batch: MessageBatch) -> bytes:
    """The joined lines of a batch of room events (messages, and joins and parts in a big
    room) from other connections, built once per variant and shared by every member of
    that variant: a batch holds nothing that reads differently to one of its recipients."""
    base = batch.base
    if base is not None:
        parts = _message_parts(conn, base)
        if parts is not None:
            # A sender's rest of the turn: runs of what every member of its variant gets.
            # Made for this one member, so not kept.
            return batch.join_spans(parts)
    key = ("irc", conn.cap_bits & BATCH_BITS)
    data = batch.rendered.get(key)
    if data is None:
        data = batch.rendered[key] = b"".join(_batch_lines(conn, batch.messages))
    return data


def _message_parts(conn: IrcConnection, batch: MessageBatch) -> list[bytes] | None:
    """The bytes of each message of ``batch`` as a member of ``conn``'s variant who said
    none of them gets it, made once per variant; None if the batch holds anything else."""
    bits = conn.cap_bits & MESSAGE_BITS
    key = ("irc-parts", bits)
    parts: list[bytes] | None = batch.rendered.get(key)
    if parts is None:
        message_key = ("irc", bits)
        parts = []
        for event in batch.messages:
            if type(event) is MessageRun:
                parts.append(render_run(conn, event))
                continue
            if type(event) is not Message:
                return None
            data = event.rendered.get(message_key)
            if data is None:
                data = event.rendered[message_key] = build_message(event, bits)
            parts.append(data)
        batch.rendered[key] = parts
    return parts


def _batch_lines(conn: IrcConnection, events: Sequence[Event]) -> list[bytes]:
    """The bytes of each event of a batch: a message from another connection (nearly all
    of them) straight from its cache, as :func:`render_message` would give it; anything
    else through its renderer."""
    bits = conn.cap_bits & MESSAGE_BITS
    key = ("irc", bits)
    out = []
    for event in events:
        if type(event) is Message and event.origin is not conn:
            data = event.rendered.get(key)
            if data is None:
                data = event.rendered[key] = build_message(event, bits)
        else:
            data = render(conn, event) or b""
        out.append(data)
    return out


def history_lines(
    conn: IrcConnection, msg: Message | RoomEventRecord, batch_id: str | None
) -> bytes:
    """A stored message (or room event) as ``conn`` would have seen it live, inside batch
    ``batch_id``."""
    if isinstance(msg, RoomEventRecord):
        return history_event_line(conn, msg, batch_id)
    bits = conn.cap_bits & MESSAGE_BITS
    tags = message_tags(msg, bits)
    if batch_id is not None:
        tags["batch"] = batch_id
    return b"".join(message_lines(msg, tags, bool(bits & caps.MULTILINE)))


def history_event_line(conn: IrcConnection, event: RoomEventRecord, batch_id: str | None) -> bytes:
    """A stored room event (draft/event-playback) as the line it was live, with its id."""
    bits = conn.cap_bits
    tags = event_tags(event.ts, event.who, bits & TAG_BITS) or {}
    if bits & caps.MESSAGE_TAGS:
        tags["msgid"] = event.id
    if batch_id is not None:
        tags["batch"] = batch_id
    name = channel_name(event.room)
    who = event.who
    kind = event.kind
    if kind == "join":
        if bits & caps.EXTENDED_JOIN:
            return line(tags, who.mask, "JOIN", (name, who.account or "*"), who.realname)
        return line(tags, who.mask, "JOIN", (name,))
    if kind == "part":
        return line(tags, who.mask, "PART", (name,), event.text or None)
    if kind == "quit":
        return line(tags, who.mask, "QUIT", (), event.text)
    if kind == "kick":
        return line(tags, who.mask, "KICK", (name, event.object), event.text or who.nick)
    if kind == "nick":
        return line(tags, who.mask, "NICK", (event.text,))
    if kind == "topic":
        return line(tags, who.mask, "TOPIC", (name,), event.text)
    return b""


# -- membership and room state -----------------------------------------------------------------


def _build_join(event: Join, bits: int) -> bytes:
    tags = event_tags(event.ts, event.who, bits)
    name = channel_name(event.room)
    who = event.who
    if bits & caps.EXTENDED_JOIN:
        data = line(tags, who.mask, "JOIN", (name, who.account or "*"), who.realname)
    else:
        data = line(tags, who.mask, "JOIN", (name,))
    if bits & caps.AWAY_NOTIFY and who.away is not None:
        # Members learn at once that the newcomer is away (away-notify).
        data += line(tags, who.mask, "AWAY", (), who.away)
    return data


@renders(Join)
def render_join(conn: IrcConnection, event: Join) -> bytes | None:
    me = is_self(conn, event.who.nick)
    # The joining user knows its own away state.
    bits = conn.cap_bits & (JOIN_BITS & ~caps.AWAY_NOTIFY if me else JOIN_BITS)
    data = cached(event, bits, _build_join)
    if me and event.origin is not conn:
        # The user joined from another connection (or this one logged in to a user that
        # is already in rooms): this client needs the room's topic and names as well (its
        # own JOIN's handler sends them).
        room = conn.service.get_room(event.room)
        conn.emit(data)
        if room is not None:
            send_topic(conn, room, quiet_if_none=True)
            send_names(conn, room)
        return None
    return data


@renders(Part)
def render_part(conn: IrcConnection, event: Part) -> bytes | None:
    def build(ev: Part, bits: int) -> bytes:
        trailing = ev.reason or None
        return line(
            event_tags(ev.ts, ev.who, bits), ev.who.mask, "PART", (channel_name(ev.room),), trailing
        )

    return cached(event, conn.cap_bits & TAG_BITS, build)


@renders(Quit)
def render_quit(conn: IrcConnection, event: Quit) -> bytes | None:
    def build(ev: Quit, bits: int) -> bytes:
        return line(event_tags(ev.ts, ev.who, bits), ev.who.mask, "QUIT", (), ev.reason)

    return cached(event, conn.cap_bits & TAG_BITS, build)


@renders(NickChange)
def render_nick(conn: IrcConnection, event: NickChange) -> bytes | None:
    def build(ev: NickChange, bits: int) -> bytes:
        return line(event_tags(ev.ts, ev.who, bits), ev.who.mask, "NICK", (ev.new_nick,))

    return cached(event, conn.cap_bits & TAG_BITS, build)


@renders(Topic)
def render_topic(conn: IrcConnection, event: Topic) -> bytes | None:
    def build(ev: Topic, bits: int) -> bytes:
        tags = event_tags(ev.ts, ev.who, bits)
        if bits & caps.MESSAGE_TAGS and ev.id:
            # The id CHATHISTORY replays it with (draft/event-playback).
            tags = {**(tags or {}), "msgid": ev.id}
        return line(tags, ev.who.mask, "TOPIC", (channel_name(ev.room),), ev.text)

    return cached(event, conn.cap_bits & (TAG_BITS | caps.MESSAGE_TAGS), build)


@renders(Kick)
def render_kick(conn: IrcConnection, event: Kick) -> bytes | None:
    def build(ev: Kick, bits: int) -> bytes:
        tags = event_tags(ev.ts, ev.who, bits)
        middles = (channel_name(ev.room), ev.target.nick)
        return line(tags, ev.who.mask, "KICK", middles, ev.reason or ev.who.nick)

    return cached(event, conn.cap_bits & TAG_BITS, build)


@renders(ModeChange)
def render_mode(conn: IrcConnection, event: ModeChange) -> bytes | None:
    def build(ev: ModeChange, bits: int) -> bytes:
        params = format_changes(ev.changes)
        if not params:
            return b""
        tags = event_tags(ev.ts, ev.who, bits)
        return line(tags, ev.who.mask, "MODE", (channel_name(ev.room), *params))

    return cached(event, conn.cap_bits & TAG_BITS, build) or None


@renders(UserModeChange)
def render_user_mode(conn: IrcConnection, event: UserModeChange) -> bytes | None:
    params = format_changes(event.changes)
    if not params:
        return None
    return line(None, event.who.mask, "MODE", (event.who.nick,), params[0])


@renders(Invite)
def render_invite(conn: IrcConnection, event: Invite) -> bytes | None:
    if not is_self(conn, event.target):
        # Others in the room hear of it with invite-notify; the inviter has its 341.
        if not conn.cap_bits & caps.INVITE_NOTIFY or is_self(conn, event.who.nick):
            return None

    def build(ev: Invite, bits: int) -> bytes:
        tags = event_tags(ev.ts, ev.who, bits)
        return line(tags, ev.who.mask, "INVITE", (ev.target, channel_name(ev.room)))

    return cached(event, conn.cap_bits & TAG_BITS, build)


# -- the user's state --------------------------------------------------------------------------


@renders(Away)
def render_away(conn: IrcConnection, event: Away) -> bytes | None:
    if is_self(conn, event.who.nick):
        if event.origin is conn:
            # This connection sent the AWAY: its handler answers with the numeric.
            return None
        # Set from another connection of the same user (line chat, an XMPP presence): the
        # numeric this client would have got, so that it shows the user's state.
        if event.message is None:
            return line(
                None,
                conn.server_name,
                n.RPL_UNAWAY,
                (conn.nick,),
                "You are no longer marked as being away",
            )
        return line(
            None,
            conn.server_name,
            n.RPL_NOWAWAY,
            (conn.nick,),
            "You have been marked as being away",
        )
    if not conn.cap_bits & caps.AWAY_NOTIFY:
        return None

    def build(ev: Away, bits: int) -> bytes:
        return line(event_tags(ev.ts, ev.who, bits), ev.who.mask, "AWAY", (), ev.message)

    return cached(event, conn.cap_bits & TAG_BITS, build)


@renders(RealnameChange)
def render_setname(conn: IrcConnection, event: RealnameChange) -> bytes | None:
    if not conn.cap_bits & caps.SETNAME:
        return None

    def build(ev: RealnameChange, bits: int) -> bytes:
        return line(event_tags(ev.ts, ev.who, bits), ev.who.mask, "SETNAME", (), ev.realname)

    return cached(event, conn.cap_bits & TAG_BITS, build)


@renders(HostChange)
def render_chghost(conn: IrcConnection, event: HostChange) -> bytes | None:
    if not conn.cap_bits & caps.CHGHOST:
        return None

    def build(ev: HostChange, bits: int) -> bytes:
        tags = event_tags(ev.ts, ev.who, bits)
        return line(tags, ev.who.mask, "CHGHOST", (ev.ident, ev.host))

    return cached(event, conn.cap_bits & TAG_BITS, build)


@renders(AccountChange)
def render_account(conn: IrcConnection, event: AccountChange) -> bytes | None:
    out = b""
    if is_self(conn, event.who.nick):
        # The user's own connections learn of it as SASL would have told them.
        conn.account_numerics_sent += 1
        me = conn.server_name
        nick = event.who.nick
        if event.account is not None:
            out += line(
                None,
                me,
                n.RPL_LOGGEDIN,
                (nick, event.who.mask, event.account),
                f"You are now logged in as {event.account}",
            )
        else:
            out += line(None, me, n.RPL_LOGGEDOUT, (nick, event.who.mask), "You are now logged out")
    if conn.cap_bits & caps.ACCOUNT_NOTIFY:

        def build(ev: AccountChange, bits: int) -> bytes:
            tags = event_tags(ev.ts, ev.who, bits)
            return line(tags, ev.who.mask, "ACCOUNT", (ev.account or "*",))

        out += cached(event, conn.cap_bits & TAG_BITS, build)
    return out or None


@renders(ServerNotice)
def render_server_notice(conn: IrcConnection, event: ServerNotice) -> bytes | None:
    tags = event_tags(event.ts, None, conn.cap_bits & caps.SERVER_TIME)
    return line(tags, conn.server_name, "NOTICE", (conn.nick,), event.text)


@renders(OfflineMessages)
def render_offline(conn: IrcConnection, event: OfflineMessages) -> bytes | None:
    """Private messages kept while the account was away: a notice, then the messages as they
    were sent (with their times under server-time), in a ``chathistory`` batch when the
    client has batches."""
    count = len(event.messages)
    tags = event_tags(event.ts, None, conn.cap_bits & caps.SERVER_TIME)
    out = [
        line(
            tags,
            conn.server_name,
            "NOTICE",
            (conn.nick,),
            f"{count} private message{'s' if count != 1 else ''} arrived while you were away",
        )
    ]
    batch_id = conn.new_batch_id() if conn.cap_bits & caps.BATCH else None
    if batch_id is not None:
        out.append(
            line(None, conn.server_name, "BATCH", ("+" + batch_id, "chathistory", conn.nick))
        )
    out.extend(history_lines(conn, msg, batch_id) for msg in event.messages)
    if batch_id is not None:
        out.append(line(None, conn.server_name, "BATCH", ("-" + batch_id,)))
    return b"".join(out)


@renders(MissedMessages)
def render_missed(conn: IrcConnection, event: MissedMessages) -> bytes | None:
    """What was said in a room while an always-on account had no connection: a
    ``chathistory`` batch for clients with batches, else the messages (with their times
    under server-time).  A client with ``draft/chathistory`` asks for it itself."""
    if "draft/chathistory" in conn.caps:
        return None
    batch_id = conn.new_batch_id() if conn.cap_bits & caps.BATCH else None
    out = []
    if batch_id is not None:
        out.append(
            line(
                None,
                conn.server_name,
                "BATCH",
                ("+" + batch_id, "chathistory", channel_name(event.room)),
            )
        )
    out.extend(history_lines(conn, msg, batch_id) for msg in event.messages)
    if batch_id is not None:
        out.append(line(None, conn.server_name, "BATCH", ("-" + batch_id,)))
    return b"".join(out)


@renders(Wallops)
def render_wallops(conn: IrcConnection, event: Wallops) -> bytes | None:
    def build(ev: Wallops, bits: int) -> bytes:
        return line(event_tags(ev.ts, ev.who, bits), ev.who.mask, "WALLOPS", (), ev.text)

    return cached(event, conn.cap_bits & TAG_BITS, build)
