"""Literal transcripts: what one user types, and the exact text each other user receives.

These are the examples of the README's "How each protocol sees the others", checked as written.  A transcript is lines of

* ``who> input``: ``who`` sends ``input`` raw in its protocol (an IRC line, a line-chat line
  or JSON command, an XMPP stanza);
* ``who< output``: ``who`` receives exactly one thing matching ``output`` in reply to the
  last input: an IRC line (``*`` matches any text, for the host cloaks; tags are not
  compared), a line-chat text line exactly, a line-chat JSON object (these fields), an XMPP
  stanza (these attributes and children, at least; ``to`` is left out).

``{room}`` is the transcript's room, ``{muc}`` the room service.  The cast: ``ann`` (IRC),
``bob`` (XMPP), ``cat`` (line chat, JSON), ``dan`` (line chat, text) and ``eve`` (IRC with
away-notify and invite-notify); all but the invitee join ``{room}`` first, ``ann`` first
(so she is its operator).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest

from tests.matrix.clients import MUC, NS_CLIENT, IrcLine, IrcPeer, LinePeer, Peer, XmppPeer
from tests.matrix.conftest import World
from tests.matrix.forms import describe
from tests.matrix.runner import enter, leave

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

MUC_USER = "http://jabber.org/protocol/muc#user"

TRANSCRIPTS: dict[str, str] = {
    "room message from IRC": """
ann> PRIVMSG #{room} :hi <you> & "all"
bob< <message type='groupchat' from='{room}@{muc}/ann'><body>hi &lt;you&gt; &amp; "all"</body></message>
cat< {"type": "message", "kind": "privmsg", "room": "{room}", "from": "ann", "to": null, "text": "hi <you> & \\"all\\""}
dan< [#{room}] <ann> hi <you> & "all"
eve< :ann!*@* PRIVMSG #{room} :hi <you> & "all"
""",
    "action from XMPP": """
bob> <message to='{room}@{muc}' type='groupchat'><body>/me waves</body></message>
ann< :bob!*@* PRIVMSG #{room} :\x01ACTION waves\x01
cat< {"type": "message", "kind": "action", "room": "{room}", "from": "bob", "text": "waves"}
dan< [#{room}] * bob waves
bob< <message type='groupchat' from='{room}@{muc}/bob'><body>/me waves</body></message>
""",
    "notice from line chat": """
cat> {"cmd": "notice", "to": "#{room}", "text": "build is green"}
ann< :cat!*@* NOTICE #{room} :build is green
bob< <message type='groupchat' from='{room}@{muc}/cat'><body>build is green</body></message>
dan< [#{room}] -cat- build is green
""",
    "private messages": """
dan> /msg ann psst
ann< :dan!*@* PRIVMSG ann :psst
ann> PRIVMSG bob :hi bob
bob< <message type='chat' from='~ann@localhost'><body>hi bob</body></message>
bob> <message to='~cat@localhost' type='chat'><body>hi cat</body></message>
cat< {"type": "message", "kind": "privmsg", "room": null, "to": "cat", "from": "bob", "text": "hi cat"}
cat> {"cmd": "msg", "to": "dan", "text": "hi dan"}
dan< *cat* hi dan
bob> <message to='{room}@{muc}/dan' type='chat'><body>through the room</body></message>
dan< *bob* through the room
""",
    "topic from XMPP": """
ann> MODE #{room} -t
dan< -!- ann sets mode -topic_lock on #{room}
bob> <message to='{room}@{muc}' type='groupchat'><subject>Release on Friday</subject></message>
ann< :bob!*@* TOPIC #{room} :Release on Friday
cat< {"type": "topic", "room": "{room}", "from": "bob", "text": "Release on Friday"}
dan< -!- bob changed the topic of #{room} to: Release on Friday
""",
    "kick from IRC": """
ann> KICK #{room} dan :behave
bob< <presence type='unavailable' from='{room}@{muc}/dan'><x xmlns='http://jabber.org/protocol/muc#user'><item role='none'><actor nick='ann'/><reason>behave</reason></item><status code='307'/></x></presence>
cat< {"type": "kick", "room": "{room}", "from": "ann", "target": "dan", "reason": "behave"}
dan< *** ann kicked you from #{room} (behave)
eve< :ann!*@* KICK #{room} dan :behave
""",
    "ban from line chat, by an operator": """
ann> MODE #{room} +o cat
bob< <presence from='{room}@{muc}/cat'><x xmlns='http://jabber.org/protocol/muc#user'><item role='moderator' affiliation='owner'/></x></presence>
dan< -!- ann sets mode +op cat on #{room}
cat> {"cmd": "ban", "room": "{room}", "mask": "dan"}
ann< :cat!*@* MODE #{room} +b dan!*@*
dan< -!- cat sets mode +ban dan!*@* on #{room}
cat> {"cmd": "kick", "room": "{room}", "nick": "dan", "reason": "banned"}
bob< <presence type='unavailable' from='{room}@{muc}/dan'><x xmlns='http://jabber.org/protocol/muc#user'><item role='none' affiliation='outcast'><actor nick='cat'/><reason>banned</reason></item><status code='301'/></x></presence>
eve< :cat!*@* KICK #{room} dan :banned
dan> /join {room}
dan< !!! error: cannot join #{room}: you are banned from this room
""",
    "moderation from XMPP": """
ann> MODE #{room} +o bob
bob< <presence from='{room}@{muc}/bob'><x xmlns='http://jabber.org/protocol/muc#user'><item role='moderator'/><status code='110'/></x></presence>
bob> <iq type='set' id='r1' to='{room}@{muc}'><query xmlns='http://jabber.org/protocol/muc#admin'><item nick='eve' role='moderator'/></query></iq>
ann< :bob!*@* MODE #{room} +o eve
cat< {"type": "mode", "room": "{room}", "from": "bob", "changes": [{"adding": true, "mode": "op", "arg": "eve"}]}
dan< -!- bob sets mode +op eve on #{room}
bob> <iq type='set' id='r2' to='{room}@{muc}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_moderatedroom'><value>1</value></field></x></query></iq>
eve< :bob!*@* MODE #{room} +m
dan< -!- bob sets mode +moderated on #{room}
bob< <message type='groupchat' from='{room}@{muc}'><x xmlns='http://jabber.org/protocol/muc#user'><status code='104'/></x></message>
bob< <presence from='{room}@{muc}/dan'><x xmlns='http://jabber.org/protocol/muc#user'><item role='visitor'/></x></presence>
""",
    "part from XMPP, join and quit from IRC": """
bob> <presence type='unavailable' to='{room}@{muc}/bob'><status>see you</status></presence>
ann< :bob!*@* PART #{room} :see you
cat< {"type": "part", "room": "{room}", "from": "bob", "reason": "see you"}
dan< -!- bob left #{room} (see you)
bob> <presence to='{room}@{muc}/bob'><x xmlns='http://jabber.org/protocol/muc'/></presence>
ann< :bob!*@* JOIN #{room}
dan< -!- bob joined #{room}
eve> QUIT :gone home
bob< <presence type='unavailable' from='{room}@{muc}/eve'><status>Quit: gone home</status></presence>
cat< {"type": "quit", "from": "eve", "reason": "Quit: gone home"}
dan< -!- eve quit (Quit: gone home)
""",
    "nick change from line chat": """
dan> /nick danny
ann< :dan!*@* NICK danny
bob< <presence type='unavailable' from='{room}@{muc}/dan'><x xmlns='http://jabber.org/protocol/muc#user'><item nick='danny'/><status code='303'/></x></presence>
bob< <presence from='{room}@{muc}/danny'/>
cat< {"type": "nick", "from": "dan", "nick": "danny"}
dan> /nick dan
cat< {"type": "nick", "from": "danny", "nick": "dan"}
""",
    "away and back from XMPP": """
bob> <presence><show>away</show><status>lunch</status></presence>
eve< :bob!*@* AWAY :lunch
cat< {"type": "away", "from": "bob", "text": "lunch"}
dan< -!- bob is away: lunch
bob> <presence/>
eve< :bob!*@* AWAY
dan< -!- bob is back
""",
    "invite from IRC": """
ann> MODE #{room} +i
dan< -!- ann sets mode +invite_only on #{room}
ann> INVITE zed #{room}
zed< -!- ann invites you to #{room}
dan< -!- ann invited zed to #{room}
eve< :ann!*@* INVITE zed #{room}
""",
}


@pytest.fixture(scope="module")
def cast(world: World) -> Iterator[dict[str, Peer]]:
    yield {
        "ann": world.irc("ann"),
        "bob": world.xmpp("bob"),
        "cat": world.line("cat"),
        "dan": world.line("dan", json_mode=False),
        "eve": world.irc("eve", caps=("away-notify", "invite-notify")),
        "zed": world.line("zed", json_mode=False),
    }


def send_raw(peer: Peer, text: str) -> None:
    if isinstance(peer, IrcPeer):
        peer.send(text)
    elif isinstance(peer, LinePeer):
        peer.line(text)
    else:
        assert isinstance(peer, XmppPeer)
        peer.raw(text)


def irc_pattern(text: str) -> re.Pattern[str]:
    return re.compile(
        "".join(".*" if part == "*" else re.escape(part) for part in re.split(r"(\*)", text))
        + r"\Z"
    )


def xml_contains(got: ET.Element, wanted: ET.Element) -> bool:
    """``got`` has ``wanted``'s tag, attributes and text, and a match for each child."""
    if got.tag != wanted.tag:
        return False
    if any(got.get(k) != v for k, v in wanted.attrib.items()):
        return False
    if (wanted.text or "").strip() and (got.text or "") != wanted.text:
        return False
    return all(any(xml_contains(g, w) for g in got) for w in wanted)


def with_namespace(el: ET.Element) -> ET.Element:
    """Stanzas arrive in jabber:client; the transcript leaves that namespace out."""
    for node in el.iter():
        if not node.tag.startswith("{"):
            node.tag = f"{{{NS_CLIENT}}}{node.tag}"
    return el


def matcher(peer: Peer, text: str) -> Any:
    if isinstance(peer, IrcPeer):
        pattern = irc_pattern(text)
        return lambda m: (
            isinstance(m, IrcLine)
            and bool(pattern.match(m.raw.split(" ", 1)[1] if m.raw.startswith("@") else m.raw))
        )
    if isinstance(peer, LinePeer):
        if peer.json:
            fields = json.loads(text)
            return lambda o: isinstance(o, dict) and all(o.get(k) == v for k, v in fields.items())
        return lambda s: s == text
    wanted = with_namespace(ET.fromstring(text))
    return lambda el: isinstance(el, ET.Element) and xml_contains(el, wanted)


def run(transcript: str, cast: dict[str, Peer], room: str) -> None:
    actor: Peer | None = None
    received: dict[str, list[Any]] = {}
    for raw in transcript.strip().splitlines():
        match = re.match(r"(\w+)([<>]) ?(.*)\Z", raw)
        assert match, raw
        name, arrow, text = match.groups()
        text = text.replace("{room}", room).replace("{muc}", MUC)
        peer = cast[name]
        if arrow == ">":
            send_raw(peer, text)
            if isinstance(peer, IrcPeer) and text.startswith("QUIT"):
                # The server has handled it once it has closed the link.
                received = {name: peer.client.read_until_closed()}
            else:
                # The server has handled it once the sender's round trip is back.
                received = {name: peer.sync()}
            actor = peer
            continue
        assert actor is not None, "a transcript starts with an input"
        if name not in received:
            received[name] = peer.sync()
        test = matcher(peer, text)
        hits = [item for item in received[name] if _safe(test, item)]
        seen = "\n  ".join(describe(item) for item in received[name])
        assert len(hits) == 1, f"{name} got {len(hits)} of: {text}\nit got:\n  {seen}"


def _safe(test: Any, item: Any) -> bool:
    try:
        return bool(test(item))
    except (AttributeError, KeyError, TypeError):
        return False


@pytest.mark.parametrize("title", list(TRANSCRIPTS))
def test_transcript(world: World, cast: dict[str, Peer], title: str) -> None:
    room = world.room("tr")
    people = [cast[n] for n in ("ann", "bob", "cat", "dan", "eve")]
    for peer in cast.values():
        peer.sync()
    enter(room, *people)
    try:
        run(TRANSCRIPTS[title], cast, room)
    finally:
        if "eve> QUIT" in TRANSCRIPTS[title]:
            cast["eve"].close()
            cast["eve"] = world.irc("eve", caps=("away-notify", "invite-notify"))
        leave(room, *[cast[n] for n in ("ann", "bob", "cat", "dan", "eve")])
