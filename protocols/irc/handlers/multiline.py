"""draft/multiline: a message of several lines sent as one batch.

``BATCH +ref draft/multiline <target>``, then ``@batch=ref PRIVMSG <target> :line`` (with
``draft/multiline-concat`` on a line that continues the one before), then ``BATCH -ref``.
The batch becomes one core message: its text has a newline between lines (continued lines
joined without one), which XMPP gets as one body and line chat as its lines; the lines as
the client cut them travel as ``Message.native`` (:class:`protocols.irc.render.IrcLines`)
for IRC recipients.  A label on ``BATCH +`` answers the batch when it ends.

The limits are advertised in the capability's value and enforced as lines arrive, with the
specification's ``FAIL BATCH`` codes; a batch that failed is dropped, and the rest of its
lines are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred

from protocols.irc import caps
from protocols.irc.caps import Capability, add_capability
from protocols.irc.commands import command
from protocols.irc.connection import IrcConnection
from protocols.irc.message import IrcMessage
from protocols.irc.render import CONCAT_TAG, MULTILINE_BATCH, IrcLines

MAX_BYTES = 4096
MAX_LINES = 100

add_capability(
    Capability(
        MULTILINE_BATCH, f"max-bytes={MAX_BYTES},max-lines={MAX_LINES}", requires_command="BATCH"
    )
)


@dataclass(slots=True)
class OpenBatch:
    """A multiline batch the client has opened and not yet closed."""

    ref: str
    target: str
    # The label of ``BATCH +`` (the echo at the end carries it) and its client-only tags.
    label: str | None
    tags: dict[str, str]
    command: str | None = None
    pieces: list[tuple[str, bool]] = field(default_factory=list)
    size: int = 0
    # Set when the batch failed: its remaining lines are dropped without a word.
    failed: bool = False


def _fail(conn: IrcConnection, code: str, *context: str, description: str) -> None:
    conn.fail("BATCH", code, *context, description=description)


def _drop(conn: IrcConnection, batch: OpenBatch, code: str, *context: str, text: str) -> None:
    batch.failed = True
    batch.pieces.clear()
    _fail(conn, code, *context, description=text)


@command("BATCH", min_params=1, cost=0.5)
def batch_command(conn: IrcConnection, msg: IrcMessage) -> Deferred[Any] | None:
    ref = msg.params[0]
    if ref.startswith("+") and len(ref) > 1:
        _open(conn, msg, ref[1:])
        return None
    if ref.startswith("-") and len(ref) > 1:
        return _close(conn, ref[1:])
    _fail(conn, "MULTILINE_INVALID", description="Invalid batch reference")
    return None


def _open(conn: IrcConnection, msg: IrcMessage, ref: str) -> None:
    if not conn.cap_bits & caps.MULTILINE:
        _fail(conn, "MULTILINE_INVALID", description="draft/multiline was not negotiated")
        return
    if len(msg.params) < 3 or msg.params[1] != MULTILINE_BATCH:
        _fail(conn, "MULTILINE_INVALID", description="Only draft/multiline batches are accepted")
        return
    current = conn.multiline
    if current is not None and not current.failed:
        _fail(conn, "MULTILINE_INVALID", description="A multiline batch is already open")
        return
    # Imported here: messaging imports this module for the lines inside a batch.
    from protocols.irc.handlers.messaging import client_tags

    conn.multiline = OpenBatch(ref, msg.params[2], conn.take_label(), client_tags(conn, msg))


def add_line(conn: IrcConnection, msg: IrcMessage) -> None:
    """A PRIVMSG or NOTICE tagged ``batch=``: the next line of the open batch."""
    batch = conn.multiline
    ref = msg.tags.get("batch", "")
    if batch is None or batch.ref != ref:
        _fail(conn, "MULTILINE_INVALID", description="No multiline batch is open with that ref")
        return
    if batch.failed:
        return
    target = msg.params[0] if msg.params else ""
    text = msg.params[1] if len(msg.params) > 1 else ""
    if target != batch.target:
        _drop(conn, batch, "MULTILINE_INVALID_TARGET", batch.target, target, text="Wrong target")
        return
    if batch.command is None:
        batch.command = msg.command
    elif batch.command != msg.command:
        _drop(conn, batch, "MULTILINE_INVALID", text="PRIVMSG and NOTICE cannot be mixed")
        return
    concat = CONCAT_TAG in msg.tags
    if concat and not text:
        _drop(conn, batch, "MULTILINE_INVALID", text="A blank line cannot be concatenated")
        return
    if len(batch.pieces) + 1 > MAX_LINES:
        _drop(conn, batch, "MULTILINE_MAX_LINES", str(MAX_LINES), text="Too many lines")
        return
    batch.size += len(text.encode("utf-8"))
    if batch.size > MAX_BYTES:
        _drop(conn, batch, "MULTILINE_MAX_BYTES", str(MAX_BYTES), text="Message is too long")
        return
    batch.pieces.append((text, concat and bool(batch.pieces)))


def _close(conn: IrcConnection, ref: str) -> Deferred[Any] | None:
    batch = conn.multiline
    if batch is None or batch.ref != ref:
        _fail(conn, "MULTILINE_INVALID", description="No multiline batch is open with that ref")
        return None
    conn.multiline = None
    if batch.failed:
        return None
    if not batch.pieces or not any(text for text, _ in batch.pieces):
        _fail(conn, "MULTILINE_INVALID", description="The batch has no text")
        return None
    text = joined_text(batch.pieces)
    from protocols.irc.handlers.messaging import say_text

    conn.put_label(batch.label)
    return say_text(
        conn,
        batch.command or "PRIVMSG",
        batch.target,
        text,
        tuple(batch.tags.items()),
        native=IrcLines(tuple(batch.pieces)),
    )


def joined_text(pieces: list[tuple[str, bool]]) -> str:
    """The core's text of a batch: a newline between lines, continued lines joined."""
    out: list[str] = []
    for text, concat in pieces:
        if concat and out:
            out[-1] += text
        else:
            out.append(text)
    return "\n".join(out)
