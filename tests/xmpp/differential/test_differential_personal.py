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
