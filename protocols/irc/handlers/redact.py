"""Message redaction (IRCv3 ``draft/message-redaction``): ``REDACT <target> <msgid> [:reason]``.

The core removes the message (:mod:`chatserver.core.redaction`) and tells everyone concerned;
IRC clients that negotiated the capability get ``REDACT``, others nothing (the specification
leaves a fallback to the server, and a notice for every removal would be noise).  The redactor's
own line comes with its command's reply, so that a label covers it.
"""

from __future__ import annotations

from typing import Any

from chatserver.core.errors import (
    ChatError,
    NoSuchNick,
    NoSuchRoom,
    NotOnRoom,
    NotPermitted,
)
from chatserver.core.events import Redaction
from chatserver.core.names import is_valid_nick
from protocols.irc import caps
from protocols.irc.caps import Capability, add_capability
from protocols.irc.channels import channel_name, is_channel, room_of
from protocols.irc.commands import command
from protocols.irc.render import cached, event_tags, line, renders

CAP = "draft/message-redaction"
add_capability(Capability(CAP, requires_command="REDACT"))

REDACT_BITS = caps.MESSAGE_TAGS | caps.SERVER_TIME | caps.ACCOUNT_TAG


@command("REDACT", min_params=2)
def redact(conn: Any, msg: Any) -> Any:
    target, msgid = msg.params[0], msg.params[1]
    reason = msg.params[2] if len(msg.params) > 2 else ""
    if is_channel(target):
        key = room_of(target)
        if key is None or conn.service.get_room(key) is None:
            return _invalid_target(conn, target)
        d = conn.service.redact(conn.core, msgid, room=key, reason=reason)
    elif is_valid_nick(target):
        d = conn.service.redact(conn.core, msgid, nick=target, reason=reason)
    else:
        return _invalid_target(conn, target)
    d.addCallbacks(_done, _failed, callbackArgs=(conn,), errbackArgs=(conn, target, msgid))
    return d


def _invalid_target(conn: Any, target: str) -> None:
    conn.fail(
        "REDACT", "INVALID_TARGET", target, description=f"You cannot delete messages from {target}"
    )


def _done(event: Redaction, conn: Any) -> None:
    if CAP in conn.caps:
        conn.queue_line(_build(event, conn.cap_bits & REDACT_BITS))


def _failed(failure: Any, conn: Any, target: str, msgid: str) -> None:
    err = failure.check(ChatError) and failure.value
    if not err:
        failure.raiseException()
    if isinstance(err, NotOnRoom | NoSuchRoom | NoSuchNick):
        _invalid_target(conn, target)
    elif isinstance(err, NotPermitted):
        conn.fail(
            "REDACT",
            "REDACT_FORBIDDEN",
            target,
            msgid,
            description="You are not authorised to delete this message",
        )
    else:
        # NoSuchMessage is UNKNOWN_MSGID (protocols.irc.errors).
        conn.reply_error(err, "REDACT", target)


def _build(event: Redaction, bits: int) -> bytes:
    tags = event_tags(event.ts, event.who, bits) or {}
    if bits & caps.MESSAGE_TAGS:
        tags["msgid"] = event.id
    shown = channel_name(event.room) if event.room is not None else event.target or "*"
    return line(tags or None, event.who.mask, "REDACT", (shown, event.msgid), event.reason or None)


@renders(Redaction)
def render_redaction(conn: Any, event: Redaction) -> bytes | None:
    # The redactor's own connection has its line with the reply (``_done``).
    if CAP not in conn.caps or event.origin is conn:
        return None
    return cached(event, conn.cap_bits & REDACT_BITS, _build)
