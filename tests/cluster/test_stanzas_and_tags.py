"""What a sender's protocol wrote crosses nodes whole: XMPP stanzas with their extensions
(OMEMO, receipts, markers, replies), tags without text (TAGMSG, chat states, reactions)
and redactions, between real clients on two chatserver processes."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest

from tests.cluster.test_cluster import eventually, try_nick
from tests.matrix.clients import MUC, XmppPeer, local
from tests.support.server import LineClient, ServerProcess
from tests.support.xmpp_client import DOMAIN

pytestmark = pytest.mark.timeout(120)

Node = Callable[..., ServerProcess]

NS_OMEMO = "eu.siacs.conversations.axolotl"
NS_RECEIPTS = "urn:xmpp:receipts"
NS_MARKERS = "urn:xmpp:chat-markers:0"
NS_STATES = "http://jabber.org/protocol/chatstates"
NS_REPLY = "urn:xmpp:reply:0"
NS_OCCUPANT_ID = "urn:xmpp:occupant-id:0"


def known_on(server: ServerProcess, nick: str) -> None:
    """Wait until ``server`` knows ``nick``, online on another node."""
    eventually(lambda: "already in use" in try_nick(server, nick), 10, f"{nick} known")


def with_id(stanza_id: str) -> Callable[[ET.Element], bool]:
    return lambda el: local(el) == "message" and el.get("id") == stanza_id


def irc_tags(server: ServerProcess, nick: str) -> LineClient:
    client = LineClient(server.ports["irc"])
    client.send("CAP REQ :message-tags draft/message-redaction")
    client.send(f"NICK {nick}")
    client.send(f"USER {nick} 0 * :{nick}")
    client.send("CAP END")
    client.expect(lambda text: f" 001 {nick} " in text)
    return client


def test_xmpp_private_stanzas_arrive_whole_on_another_node(make_node: Node) -> None:
    a = make_node("a", protocols=("line", "xmpp"))
    b = make_node("b", protocols=("line", "xmpp"))
    carol = XmppPeer(a.ports["xmpp"], "carol", "carol-secret-1", register=True)
    dave = XmppPeer(b.ports["xmpp"], "dave", "dave-secret-1", register=True)
    known_on(a, "dave")
    known_on(b, "carol")
    try:
        # An OMEMO message with a receipt request and a marker: all of it, with its id.
        carol.raw(
            f"<message to='dave@{DOMAIN}' type='chat' id='omemo-1'>"
            "<body>I sent you an OMEMO encrypted message</body>"
            f"<encrypted xmlns='{NS_OMEMO}'><header sid='7'><key rid='9'>a2V5</key>"
            "<iv>aXY=</iv></header><payload>cGF5bG9hZA==</payload></encrypted>"
            f"<request xmlns='{NS_RECEIPTS}'/><markable xmlns='{NS_MARKERS}'/></message>"
        )
        got = dave.expect(with_id("omemo-1"))
        assert got.get("from", "").startswith(f"carol@{DOMAIN}/")
        payload = got.find(f"{{{NS_OMEMO}}}encrypted/{{{NS_OMEMO}}}payload")
        assert payload is not None and payload.text == "cGF5bG9hZA=="
        key = got.find(f"{{{NS_OMEMO}}}encrypted/{{{NS_OMEMO}}}header/{{{NS_OMEMO}}}key")
        assert key is not None and key.get("rid") == "9" and key.text == "a2V5"
        assert got.find(f"{{{NS_RECEIPTS}}}request") is not None
        assert got.find(f"{{{NS_MARKERS}}}markable") is not None

        # Stanzas without a body go back whole too: a receipt, a marker, a chat state.
        dave.raw(
            f"<message to='carol@{DOMAIN}' type='chat' id='receipt-1'>"
            f"<received xmlns='{NS_RECEIPTS}' id='omemo-1'/></message>"
        )
        receipt = carol.expect(with_id("receipt-1"))
        received = receipt.find(f"{{{NS_RECEIPTS}}}received")
        assert received is not None and received.get("id") == "omemo-1"
        dave.raw(
            f"<message to='carol@{DOMAIN}' type='chat' id='marker-1'>"
            f"<displayed xmlns='{NS_MARKERS}' id='omemo-1'/></message>"
        )
        marker = carol.expect(with_id("marker-1"))
        displayed = marker.find(f"{{{NS_MARKERS}}}displayed")
        assert displayed is not None and displayed.get("id") == "omemo-1"
        dave.raw(
            f"<message to='carol@{DOMAIN}' type='chat' id='state-1'>"
            f"<composing xmlns='{NS_STATES}'/></message>"
        )
        state = carol.expect(with_id("state-1"))
        assert state.find(f"{{{NS_STATES}}}composing") is not None
    finally:
        carol.close()
        dave.close()


def test_xmpp_room_messages_keep_their_extensions_on_another_node(make_node: Node) -> None:
    # One cloak secret, as the README asks: occupant ids agree across nodes.
    same = {"chat": {"cloak_secret": "one secret for the cluster"}}
    a = make_node("a", protocols=("line", "xmpp", "irc"), overrides=same)
    b = make_node("b", protocols=("line", "xmpp", "irc"), overrides=same)
    carol = XmppPeer(a.ports["xmpp"], "carol", "carol-secret-1", register=True)
    dave = XmppPeer(b.ports["xmpp"], "dave", "dave-secret-1", register=True)
    try:
        carol.join("dev")
        carol.expect(lambda el: local(el) == "presence" and el.get("from", "").endswith("/carol"))
        known_on(b, "carol")
        dave.join("dev")
        seen = dave.expect(
            lambda el: local(el) == "presence" and el.get("from") == f"dev@{MUC}/carol"
        )
        carol.expect(lambda el: local(el) == "presence" and el.get("from", "").endswith("/dave"))
        carol.raw(
            f"<message to='dev@{MUC}' type='groupchat' id='room-1'>"
            "<body>a reply with extensions</body>"
            f"<reply xmlns='{NS_REPLY}' to='dev@{MUC}/dave' id='earlier'/>"
            f"<markable xmlns='{NS_MARKERS}'/></message>"
        )
        got = dave.expect(with_id("room-1"))
        assert got.get("from") == f"dev@{MUC}/carol"
        reply = got.find(f"{{{NS_REPLY}}}reply")
        assert reply is not None and reply.get("id") == "earlier"
        assert got.find(f"{{{NS_MARKERS}}}markable") is not None
        # The occupant id node a stamped is the one node b shows in carol's presence.
        stamped = got.find(f"{{{NS_OCCUPANT_ID}}}occupant-id")
        shown = seen.find(f"{{{NS_OCCUPANT_ID}}}occupant-id")
        assert stamped is not None and shown is not None
        assert stamped.get("id") == shown.get("id")

        # A chat state in the room crosses too (the sender's own stanza).
        carol.raw(
            f"<message to='dev@{MUC}' type='groupchat' id='room-state'>"
            f"<composing xmlns='{NS_STATES}'/></message>"
        )
        state = dave.expect(with_id("room-state"))
        assert state.find(f"{{{NS_STATES}}}composing") is not None
    finally:
        carol.close()
        dave.close()


def test_tagmsg_and_redactions_cross_nodes(make_node: Node) -> None:
    a = make_node("a", protocols=("line", "irc"))
    b = make_node("b", protocols=("line", "irc"))
    alice = irc_tags(a, "alice")
    bob = irc_tags(b, "bob")
    alice.send("JOIN #dev")
    alice.expect(" 366 alice #dev ")
    known_on(b, "alice")
    bob.send("JOIN #dev")
    alice.expect(lambda text: ":bob!" in text and " JOIN #dev" in text)

    # Typing and a reaction, in the room and privately.
    alice.send("@+typing=active TAGMSG #dev")
    typing = bob.expect(lambda text: " TAGMSG #dev" in text)
    assert typing.startswith("@") and "+typing=active" in typing and ":alice!" in typing
    alice.send("@+typing=paused TAGMSG bob")
    assert "+typing=paused" in bob.expect(lambda text: " TAGMSG bob" in text)

    # A message, then its removal by its sender: the other node's member is told.
    alice.send("PRIVMSG #dev :oops")
    said = bob.expect(lambda text: "PRIVMSG #dev :oops" in text)
    msgid = next(t for t in said[1:].split(" ", 1)[0].split(";") if t.startswith("msgid="))
    bob.send(f"@+draft/react=👍;+draft/reply={msgid[6:]} TAGMSG #dev")
    reaction = alice.expect(lambda text: " TAGMSG #dev" in text)
    assert "+draft/react=👍" in reaction and msgid[6:] in reaction
    alice.send(f"REDACT #dev {msgid[6:]} :typo")
    redact = bob.expect(lambda text: " REDACT #dev " in text)
    assert f" REDACT #dev {msgid[6:]} :typo" in redact and ":alice!" in redact
