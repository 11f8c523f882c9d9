"""Stream management and client state against Prosody (mod_smacks, mod_csi_simple)."""

from __future__ import annotations

import pytest
from lxml import etree

from tests.support.xmpp_differential import NS_DELAY, Session, archive_stanza_id, assert_same

pytestmark = pytest.mark.timeout(120)

NS_SM = "urn:xmpp:sm:3"


def sm_chosen(el: etree._Element) -> None:
    """The resumption id and the longest resumption time are each server's own choice."""
    if el.tag == f"{{{NS_SM}}}enabled":
        for key in ("id", "max"):
            if key in el.attrib:
                el.set(key, "*")


def csi_held_stamp(el: etree._Element) -> None:
    """Prosody's mod_csi_simple stamps each stanza it holds for an inactive client with
    ``<delay from='user@domain'/>`` (the recipient's own bare JID); chatserver holds
    stanzas unchanged."""
    own = (el.get("to") or "").partition("/")[0]
    for child in el.findall(f"{{{NS_DELAY}}}delay"):
        if own and child.get("from") == own:
            el.remove(child)


def acks_and_client_state(s: Session) -> None:
    s.login("alice", "alice", "a")
    s.login("bob", "bob", "b")
    s.drain()
    s.send("alice", f"<enable xmlns='{NS_SM}' resume='true'/>")
    s.settle()
    # Three stanzas in, the client asks for the server's count.
    for n in range(3):
        s.send("alice", f"<iq type='get' id='c-p{n}'><ping xmlns='urn:xmpp:ping'/></iq>")
    s.send("alice", f"<r xmlns='{NS_SM}'/>")
    s.settle()
    s.send("alice", f"<a xmlns='{NS_SM}' h='3'/>")
    s.settle()
    # Inactive: a chat state waits, a message brings it.
    s.send("alice", "<inactive xmlns='urn:xmpp:csi:0'/>")
    # Settled first: sent at once, the server may read bob's message before alice's state.
    s.settle()
    s.send(
        "bob",
        "<message to='alice@localhost/a' type='chat' id='c-1'>"
        "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
    )
    s.settle()
    s.send(
        "bob",
        "<message to='alice@localhost/a' type='chat' id='c-2'><body>wake up</body>"
        "<active xmlns='http://jabber.org/protocol/chatstates'/></message>",
    )
    s.settle()
    s.send("alice", "<active xmlns='urn:xmpp:csi:0'/>")
    s.send(
        "bob",
        "<message to='alice@localhost/a' type='chat' id='c-3'>"
        "<paused xmlns='http://jabber.org/protocol/chatstates'/></message>",
    )
    s.settle()


ACK_REQUEST = f"<{{{NS_SM}}}r></>"


def without_ack_requests(transcript: dict[str, list[list[str]]]) -> dict[str, list[list[str]]]:
    """When a server asks for acknowledgements is its own policy (Prosody: after every
    stanza; chatserver: once five wait, and when the stream is idle)."""
    return {
        name: [[line for line in step if line != ACK_REQUEST] for step in steps]
        for name, steps in transcript.items()
    }


def test_acks_and_client_state(run) -> None:
    ours, theirs = run(acks_and_client_state, rules=(archive_stanza_id, sm_chosen, csi_held_stamp))
    assert_same(without_ack_requests(ours), without_ack_requests(theirs))
    # The answer to <r/> counts the same three stanzas on both.
    assert f"<{{{NS_SM}}}a h='3'></>" in ours["alice"][1]
