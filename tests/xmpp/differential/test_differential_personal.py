"""Personal data against Prosody: vCards and the avatar hash in presence, PEP publish, read and
retract, and the block list."""

from __future__ import annotations

import base64
import hashlib

import pytest

from tests.support.xmpp_differential import (
    Session,
    assert_same,
    error_text,
    pep_presence_access,
    vcard_empty_name,
)

pytestmark = pytest.mark.timeout(120)

PUBSUB = "http://jabber.org/protocol/pubsub"
BLOCKING = "urn:xmpp:blocking"
PHOTO = b"\x89PNG\r\n\x1a\n not really a picture"
PHOTO_HASH = hashlib.sha1(PHOTO).hexdigest()
VCARD = (
    "<vCard xmlns='vcard-temp'><FN>Alice</FN>"
    f"<PHOTO><TYPE>image/png</TYPE><BINVAL>{base64.b64encode(PHOTO).decode()}</BINVAL></PHOTO>"
    "</vCard>"
)


def vcard_and_avatar_hash(s: Session) -> None:
    s.login("alice", "alice", "a")
    s.login("bob", "bob", "b")
    s.drain()
    # Without a vCard, presence says "no avatar" (an empty photo).
    s.send("alice", "<presence to='bob@localhost/b' id='c-p0'/>")
    s.settle()
    s.send("alice", f"<iq type='set' id='c-v1'>{VCARD}</iq>")
    s.settle()
    s.send("bob", "<iq type='get' id='c-v2' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>")
    s.settle()
    # Now every available presence carries the photo's hash.
    s.send("alice", "<presence to='bob@localhost/b' id='c-p1'><status>here</status></presence>")
    s.settle()
    # A client's own hash is left alone; an empty <x/> gets the server's filled in.
    s.send(
        "alice",
        "<presence to='bob@localhost/b' id='c-p2'>"
        "<x xmlns='vcard-temp:x:update'><photo>0123</photo></x></presence>",
    )
    s.send(
        "alice",
        "<presence to='bob@localhost/b' id='c-p3'><x xmlns='vcard-temp:x:update'/></presence>",
    )
    s.settle()
    # Unavailable presence carries none.
    s.send("alice", "<presence to='bob@localhost/b' type='unavailable' id='c-p4'/>")
    s.settle()


def test_vcard_and_avatar_hash(run) -> None:
    ours, theirs = run(vcard_and_avatar_hash, rules=(error_text, vcard_empty_name))
    assert_same(ours, theirs)
    (presence,) = [p for p in ours["bob"][3] if "c-p1" in p]
    assert PHOTO_HASH in presence


def pep_publish_read_retract(s: Session) -> None:
    s.login("alice", "alice", "a")
    s.login("bob", "bob", "b")
    s.drain()
    s.send(
        "alice",
        f"<iq type='set' id='c-1'><pubsub xmlns='{PUBSUB}'>"
        "<publish node='urn:example:notes'><item id='n1'><note xmlns='urn:example:notes'>one"
        "</note></item></publish>"
        "<publish-options><x xmlns='jabber:x:data' type='submit'>"
        "<field var='FORM_TYPE' type='hidden'>"
        "<value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
        "<field var='pubsub#access_model'><value>open</value></field>"
        "</x></publish-options></pubsub></iq>",
    )
    s.settle()
    s.send(
        "alice",
        f"<iq type='get' id='c-2'><pubsub xmlns='{PUBSUB}'>"
        "<items node='urn:example:notes'/></pubsub></iq>",
    )
    s.send(
        "bob",
        f"<iq type='get' id='c-3' to='alice@localhost'><pubsub xmlns='{PUBSUB}'>"
        "<items node='urn:example:notes'/></pubsub></iq>",
    )
    s.settle()
    # A node with the default access model (presence): bob is no subscriber.
    s.send(
        "alice",
        f"<iq type='set' id='c-4'><pubsub xmlns='{PUBSUB}'>"
        "<publish node='urn:example:secret'><item id='s1'><secret xmlns='urn:example:secret'/>"
        "</item></publish></pubsub></iq>",
    )
    s.settle()
    s.send(
        "bob",
        f"<iq type='get' id='c-5' to='alice@localhost'><pubsub xmlns='{PUBSUB}'>"
        "<items node='urn:example:secret'/></pubsub></iq>",
    )
    s.settle()
    # Only the owner publishes.
    s.send(
        "bob",
        f"<iq type='set' id='c-6' to='alice@localhost'><pubsub xmlns='{PUBSUB}'>"
        "<publish node='urn:example:notes'><item id='n9'><note xmlns='urn:example:notes'/>"
        "</item></publish></pubsub></iq>",
    )
    s.settle()
    s.send(
        "alice",
        f"<iq type='set' id='c-7'><pubsub xmlns='{PUBSUB}'>"
        "<retract node='urn:example:notes'><item id='n1'/></retract></pubsub></iq>",
    )
    s.settle()
    s.send(
        "bob",
        f"<iq type='get' id='c-8' to='alice@localhost'><pubsub xmlns='{PUBSUB}'>"
        "<items node='urn:example:notes'/></pubsub></iq>",
    )
    s.settle()


def test_pep_publish_read_retract(run) -> None:
    ours, theirs = run(pep_publish_read_retract, rules=(error_text, pep_presence_access))
    assert_same(ours, theirs)


def blocking(s: Session) -> None:
    s.login("alice", "alice", "a")
    s.login("alice2", "alice", "a2")
    s.login("carol", "carol", "c")
    s.drain()
    s.send("alice", f"<iq type='get' id='c-1'><blocklist xmlns='{BLOCKING}'/></iq>")
    s.settle()
    s.send(
        "alice",
        f"<iq type='set' id='c-2'><block xmlns='{BLOCKING}'>"
        "<item jid='carol@localhost'/></block></iq>",
    )
    s.settle()
    s.send("alice", f"<iq type='get' id='c-3'><blocklist xmlns='{BLOCKING}'/></iq>")
    s.settle()
    s.send(
        "alice",
        f"<iq type='set' id='c-4'><unblock xmlns='{BLOCKING}'>"
        "<item jid='carol@localhost'/></unblock></iq>",
    )
    s.settle()
    s.send("alice", f"<iq type='set' id='c-5'><block xmlns='{BLOCKING}'/></iq>")
    s.settle()


def test_blocking(run) -> None:
    ours, theirs = run(blocking, rules=(error_text,))
    assert_same(ours, theirs)


CAPS = "http://jabber.org/protocol/caps"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
BOOKMARKS = "urn:xmpp:bookmarks:1"
LEGACY = "storage:bookmarks"
FOLLOWED = ("urn:xmpp:bookmarks:1+notify", "storage:bookmarks+notify")


def _ver(features: tuple[str, ...]) -> str:
    """The XEP-0115 §5.1 hash of a client with one identity and ``features``."""
    text = "client/pc//follower<" + "".join(f"{f}<" for f in sorted(features))
    return base64.b64encode(hashlib.sha1(text.encode()).digest()).decode()


def _announce_caps(s: Session, name: str, features: tuple[str, ...]) -> None:
    """Initial presence with capabilities, and the answer to the server's disco#info query
    about them (not part of the comparison: each server asks in its own words)."""
    node = "https://example.org/follower"
    ver = _ver(features)
    s.send(name, f"<presence><c xmlns='{CAPS}' hash='sha-1' node='{node}' ver='{ver}'/></presence>")
    client = s.clients[name]
    for _ in range(20):
        asked = [
            el
            for el in client.collect(0.3)
            if el.tag == "iq"
            and el.get("type") == "get"
            and el.find(f"{{{DISCO_INFO}}}query") is not None
        ]
        for iq in asked:
            feats = "".join(f"<feature var='{f}'/>" for f in features)
            client.send(
                f"<iq type='result' id='{iq.get('id')}' to='{iq.get('from')}'>"
                f"<query xmlns='{DISCO_INFO}' node='{node}#{ver}'>"
                f"<identity category='client' type='pc' name='follower'/>{feats}</query></iq>"
            )
        if asked:
            return


def _storage(*conferences: str) -> str:
    return f"<storage xmlns='{LEGACY}'>{''.join(conferences)}</storage>"


def bookmarks(s: Session) -> None:
    s.login("writer", "carol", "w", presence=False)
    s.login("follower", "carol", "f", presence=False)
    s.drain()
    _announce_caps(s, "follower", FOLLOWED)
    s.drain()
    # XEP-0048 in private storage: XEP-0402 followers hear of the new room.
    s.send(
        "writer",
        "<iq type='set' id='c-1'><query xmlns='jabber:iq:private'>"
        + _storage(
            "<conference jid='tea@conference.localhost' name='Tea' autojoin='true'>"
            "<nick>carol</nick></conference>"
        )
        + "</query></iq>",
    )
    s.settle()
    s.send(
        "writer",
        f"<iq type='get' id='c-2'><pubsub xmlns='{PUBSUB}'><items node='{BOOKMARKS}'/></pubsub></iq>",
    )
    s.settle()
    # XEP-0402 publish: read back through private storage and the legacy PEP node.
    s.send(
        "writer",
        f"<iq type='set' id='c-3'><pubsub xmlns='{PUBSUB}'><publish node='{BOOKMARKS}'>"
        "<item id='coffee@conference.localhost'>"
        f"<conference xmlns='{BOOKMARKS}' name='Coffee' autojoin='false'/></item></publish>"
        "<publish-options><x xmlns='jabber:x:data' type='submit'>"
        "<field var='FORM_TYPE' type='hidden'>"
        "<value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
        "<field var='pubsub#persist_items'><value>true</value></field>"
        "<field var='pubsub#max_items'><value>max</value></field>"
        "<field var='pubsub#access_model'><value>whitelist</value></field>"
        "</x></publish-options></pubsub></iq>",
    )
    s.settle()
    s.send(
        "writer",
        f"<iq type='get' id='c-4'><query xmlns='jabber:iq:private'><storage xmlns='{LEGACY}'/>"
        "</query></iq>",
    )
    s.send(
        "writer",
        f"<iq type='get' id='c-5'><pubsub xmlns='{PUBSUB}'><items node='{LEGACY}'/></pubsub></iq>",
    )
    s.settle()
    # XEP-0048 over PEP, leaving a room out: it is retracted.
    s.send(
        "writer",
        f"<iq type='set' id='c-6'><pubsub xmlns='{PUBSUB}'><publish node='{LEGACY}'>"
        "<item id='current'>"
        + _storage("<conference jid='coffee@conference.localhost' name='Coffee' autojoin='false'/>")
        + "</item></publish></pubsub></iq>",
    )
    s.settle()
    # An empty storage purges the XEP-0402 node.
    s.send(
        "writer",
        "<iq type='set' id='c-7'><query xmlns='jabber:iq:private'>" + _storage() + "</query></iq>",
    )
    s.settle()
    s.send(
        "writer",
        f"<iq type='get' id='c-8'><query xmlns='jabber:iq:private'><storage xmlns='{LEGACY}'/>"
        "</query></iq>",
    )
    s.settle()


def test_bookmarks_in_step(run) -> None:
    ours, theirs = run(bookmarks, rules=(error_text,))
    assert_same(ours, theirs)
    # The follower heard of every change, in both forms.
    heard = " ".join(" ".join(step) for step in ours["follower"])
    assert "tea@conference.localhost" in heard and "purge" in heard
    assert heard.count(f"node='{LEGACY}'") >= 3
