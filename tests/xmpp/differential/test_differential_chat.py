"""One-to-one chat against Prosody: the same stanzas in, the same stanzas out."""

from __future__ import annotations

import pytest

from tests.support.xmpp_differential import Session, archive_stanza_id, assert_same, error_text

pytestmark = pytest.mark.timeout(120)

OMEMO = "eu.siacs.conversations.axolotl"


def chat_with_extensions(s: Session) -> None:
    s.login("alice", "alice", "a")
    s.login("bob", "bob", "b")
    s.drain()
    s.send(
        "alice",
        "<message to='bob@localhost' type='chat' id='c-1'>"
        "<body>hello</body><thread>t-1</thread>"
        "<request xmlns='urn:xmpp:receipts'/><markable xmlns='urn:xmpp:chat-markers:0'/>"
        "<origin-id xmlns='urn:xmpp:sid:0' id='c-1'/>"
        "<active xmlns='http://jabber.org/protocol/chatstates'/></message>",
    )
    s.settle()
    s.send(
        "bob",
        "<message to='alice@localhost/a' type='chat' id='c-2'>"
        "<received xmlns='urn:xmpp:receipts' id='c-1'/></message>",
    )
    s.send(
        "bob",
        "<message to='alice@localhost/a' type='chat' id='c-3'>"
        "<displayed xmlns='urn:xmpp:chat-markers:0' id='c-1'/></message>",
    )
    s.settle()
    s.send(
        "alice",
        "<message to='bob@localhost' type='chat' id='c-4'><body>hello, bob</body>"
        "<replace xmlns='urn:xmpp:message-correct:0' id='c-1'/></message>",
    )
    s.send(
        "bob",
        "<message to='alice@localhost' type='chat' id='c-5'><body>&gt; hello\nhi</body>"
        "<reply xmlns='urn:xmpp:reply:0' to='alice@localhost/a' id='c-1'/></message>",
    )
    s.send(
        "bob",
        "<message to='alice@localhost' type='chat' id='c-6'>"
        "<reactions xmlns='urn:xmpp:reactions:0' id='c-1'><reaction>\U0001f44d</reaction>"
        "</reactions><store xmlns='urn:xmpp:hints'/></message>",
    )
    s.send(
        "bob",
        "<message to='alice@localhost' type='chat' id='c-7'>"
        "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
    )
    s.settle()
    s.send(
        "alice",
        f"<message to='bob@localhost' type='chat' id='c-8'>"
        f"<encrypted xmlns='{OMEMO}'><header sid='1'><key rid='2'>a2V5</key><iv>aXY=</iv>"
        f"</header><payload>cGF5bG9hZA==</payload></encrypted>"
        "<encryption xmlns='urn:xmpp:eme:0' namespace='eu.siacs.conversations.axolotl'/>"
        "<body>I sent you an OMEMO encrypted message.</body>"
        "<store xmlns='urn:xmpp:hints'/></message>",
    )
    s.settle()
    # A stanza-id a client makes up is not passed on as if the server had stamped it.
    s.send(
        "alice",
        "<message to='bob@localhost' type='chat' id='c-9'><body>forged</body>"
        "<stanza-id xmlns='urn:xmpp:sid:0' by='bob@localhost' id='forged'/></message>",
    )
    s.settle()
    # To one's own full JID.
    s.send(
        "alice",
        "<message to='alice@localhost/a' type='chat' id='c-10'><body>note to self</body></message>",
    )
    s.settle()
    # A chat state to an account that is not connected.  (A message with a body differs by
    # design: Prosody's archive keeps it for later, chatserver answers service-unavailable.)
    s.send(
        "alice",
        "<message to='carol@localhost' type='chat' id='c-12'>"
        "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
    )
    s.settle()


def test_chat_with_extensions(run) -> None:
    ours, theirs = run(chat_with_extensions, rules=(archive_stanza_id, error_text))
    assert_same(ours, theirs)


CARBONS = "<iq type='set' id='c-carbons'><enable xmlns='urn:xmpp:carbons:2'/></iq>"


def carbons(s: Session) -> None:
    s.login("phone", "alice", "phone")
    s.login("desk", "alice", "desk")
    s.login("bob", "bob", "b")
    s.drain()
    s.send("phone", CARBONS)
    s.send("desk", CARBONS)
    s.settle()
    # Sent from one resource: a <sent/> copy for the other.
    s.send(
        "phone",
        "<message to='bob@localhost' type='chat' id='c-1'><body>from my phone</body>"
        "<request xmlns='urn:xmpp:receipts'/></message>",
    )
    s.settle()
    # To the bare JID: every resource; to one resource: a <received/> copy for the other.
    s.send(
        "bob", "<message to='alice@localhost' type='chat' id='c-2'><body>to you</body></message>"
    )
    s.settle()
    s.send(
        "bob",
        "<message to='alice@localhost/phone' type='chat' id='c-3'><body>to the phone</body>"
        "</message>",
    )
    s.settle()
    # Chat states and receipts are copied too; private ones are not.
    s.send(
        "phone",
        "<message to='bob@localhost' type='chat' id='c-4'>"
        "<received xmlns='urn:xmpp:receipts' id='c-3'/></message>",
    )
    s.send(
        "phone",
        "<message to='bob@localhost' type='chat' id='c-5'><body>secret</body>"
        "<private xmlns='urn:xmpp:carbons:2'/><no-copy xmlns='urn:xmpp:hints'/></message>",
    )
    s.settle()


def test_carbons(run) -> None:
    ours, theirs = run(carbons, rules=(archive_stanza_id,))
    assert_same(ours, theirs)
