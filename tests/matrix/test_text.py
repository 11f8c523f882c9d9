"""Text survives the trip: every kind of awkward text, from each protocol to each protocol.

Each text is said in a room (and a few of them privately) by a sender of each protocol that
can write it, and every viewer must get it exactly once, as its protocol carries text:

* IRC: byte for byte, one PRIVMSG per line of text, each cut to fit 512 bytes at a
  character boundary (the pieces put together are the line);
* line chat, JSON: the text exactly, one record; text mode: one display line per line of
  text, with control characters (and IRC formatting) removed;
* XMPP: one message with the whole text; IRC formatting, and the few characters XML 1.0
  cannot carry at all (C0 controls), are left out.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import pytest

from tests.matrix.clients import IrcPeer, LinePeer, Peer
from tests.matrix.conftest import World
from tests.matrix.forms import Ev
from tests.matrix.runner import enter, leave, step

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

LONG = (
    "Ünïcödé words to wrap at a space, " * 20
    # A run without spaces: the cut must fall between characters, not inside one.
    + "😀" * 150
    + "e\u0301" * 100
    + " the end"
)

TEXTS: dict[str, str] = {
    "emoji": "emoji 😀🎉 family 👩‍👩‍👧 flag 🇫🇷 keycap 1️⃣",
    "combining": "combining: e\u0301 a\u0308 n\u0303 Z\u0335\u0321 \u0915\u094d\u0937",
    "right-to-left": "RTL: שלום עולם, مرحبا بالعالم \u200f! mixed עברית and English",
    # Planes 0, 1, 2, 3, 14 (a variation selector, on its base), 15 and 16 (private use).
    "every-plane": "planes: é 中 𝄞 𠀋 𰀀 \u845b\U000e0100 \U000f0001 \U0010fffd",
    "leading-colon": ":leading colon, :: and a : spaced one",
    "leading-slash": "/etc/passwd is a file, not a command",
    "xml-specials": "<b>bold?</b> &amp; &lt; ' \" ]]> <![CDATA[x]]> <!-- no -->",
    "ctcp-looking": "\x01PING 12345\x01",
    "irc-formatting": "\x02bold\x02 \x0304,01red\x03 \x1ditalic\x1d \x1funder\x1f\x0f",
    "long": LONG,
    "multi-line": "first line\nsecond line\n\nfourth line, after a blank one",
}

# Who can write what.  XML 1.0 cannot carry U+0001 or IRC's formatting codes, so XMPP users
# cannot send those; an IRC message is one line of at most 512 bytes (a longer text is
# several messages); a telnet line is one line.
CANNOT_SEND: dict[str, set[str]] = {
    "irc": {"multi-line"},
    "line-text": {"multi-line", "ctcp-looking", "irc-formatting"},
    "xmpp": {"ctcp-looking", "irc-formatting"},
}
SENDERS = ("irc", "line", "line-text", "xmpp")
PRIVATE = ("emoji", "every-plane", "xml-specials", "long", "multi-line", "leading-colon")


def irc_longest(target: str) -> str:
    """The longest text an IRC client can send to ``target`` in one 512-byte line: the server
    must cut it again for IRC receivers, whose lines also carry the sender's mask."""
    budget = 512 - len(f"PRIVMSG {target} :\r\n".encode())
    out, size = [], 0
    for ch in "Ünï 😀 " * 200:
        width = len(ch.encode())
        if size + width > budget:
            break
        out.append(ch)
        size += width
    return "".join(out).rstrip()


@pytest.fixture(scope="module")
def people(world: World) -> Iterator[dict[str, Peer]]:
    yield {
        "irc": world.irc("txirc"),
        "line": world.line("txline"),
        "line-text": world.line("txtext", json_mode=False),
        "xmpp": world.xmpp("txxmpp"),
        "v-irc": world.irc("tvirc", caps=("message-tags",)),
        "v-line": world.line("tvline"),
        "v-text": world.line("tvtext", json_mode=False),
        "v-xmpp": world.xmpp("tvxmpp"),
    }


def viewers(people: dict[str, Peer]) -> list[Peer]:
    return [p for k, p in people.items() if k.startswith("v-")]


def say(sender: Peer, room: str, text: str) -> None:
    if isinstance(sender, LinePeer) and not sender.json:
        sender.plain(text)
    else:
        sender.say(room, text)


def cells(names: Iterable[str]) -> list[tuple[str, str]]:
    """Every text with every sender that can write it."""
    return [(n, s) for n in names for s in SENDERS if n not in CANNOT_SEND.get(s, set())]


@pytest.mark.parametrize(("name", "sender"), cells(TEXTS))
def test_text_in_a_room(world: World, people: dict[str, Peer], name: str, sender: str) -> None:
    actor, room = people[sender], world.room("t")
    text = TEXTS[name]
    if name == "long" and isinstance(actor, IrcPeer):
        text = irc_longest(f"#{room}")
    seen = viewers(people)
    enter(room, actor, *seen)
    try:
        step(actor, lambda: say(actor, room, text), [Ev("message", actor.nick, room, text)], seen)
    finally:
        leave(room, actor, *seen)


@pytest.mark.parametrize(("name", "sender"), cells(PRIVATE))
def test_text_in_private(people: dict[str, Peer], name: str, sender: str) -> None:
    actor = people[sender]
    for viewer in viewers(people):
        text = TEXTS[name]
        if name == "long" and isinstance(actor, IrcPeer):
            text = irc_longest(viewer.nick)
        step(
            actor,
            lambda v=viewer, t=text: actor.msg(v.nick, t),
            [Ev("privmsg", actor.nick, text=text)],
            [viewer],
        )


LONG_REASON = "a long reason, " * 60 + "😀" * 50

# Reasons, topics and away messages have no length limit of their own on line chat and XMPP.
LONG_EVENTS = ("part", "quit", "topic", "away")


@pytest.mark.parametrize("sender", ("line", "xmpp"))
@pytest.mark.parametrize("kind", LONG_EVENTS)
def test_long_reasons_fit_irc_lines(
    world: World, people: dict[str, Peer], kind: str, sender: str
) -> None:
    """Every IRC line fits in 512 bytes, cut at a character boundary; the other protocols
    get whatever the core kept."""
    room = world.room("lr")
    irc = people["v-irc"]
    actor: Peer
    if kind == "quit":
        actor = world.line(world.nick("lq")) if sender == "line" else world.xmpp(world.nick("lq"))
    else:
        actor = people[sender]
    enter(room, actor, irc)
    irc.send("CAP REQ :away-notify")
    try:
        actions = {
            "part": lambda: actor.part(room, LONG_REASON),
            "quit": lambda: actor.quit(LONG_REASON),
            "topic": lambda: actor.topic(room, LONG_REASON),
            "away": lambda: actor.away(LONG_REASON),
        }
        irc.sync()
        actions[kind]()
        if kind != "quit":
            actor.sync()
        else:
            # The quit takes effect when the server sees the connection close.
            time.sleep(0.3)
        command = {"part": "PART", "quit": "QUIT", "topic": "TOPIC", "away": "AWAY"}[kind]
        lines = [m for m in irc.sync() if m.command == command and m.nick == actor.nick]
        assert len(lines) == 1, lines
        raw = lines[0].raw.split(" ", 1)[1] if lines[0].raw.startswith("@") else lines[0].raw
        assert len(raw.encode()) + 2 <= 512
        shown = lines[0].last
        assert shown and LONG_REASON.startswith(shown.removeprefix("Quit: "))
    finally:
        if kind == "away":
            actor.away(None)
        leave(room, irc, *([actor] if kind not in ("part", "quit") else []))
