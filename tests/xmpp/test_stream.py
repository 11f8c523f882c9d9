"""The stream layer: the parser at every chunk boundary, and stream negotiation over a real
connection (headers, features, STARTTLS, binding, stream errors, keep-alives)."""

from __future__ import annotations

import dataclasses
import gc
import time
import weakref
from typing import Any
from xml.sax.saxutils import escape

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from chatserver.core.bans import ServerBan
from chatserver.core.settings import CoreSettings
from protocols.xmpp.connection import PARK_AFTER
from protocols.xmpp.factory import XmppFactory
from protocols.xmpp.stanzas import to_bytes
from protocols.xmpp.stream import (
    Limits,
    StreamError,
    StreamOpened,
    StreamParser,
    TopElement,
)
from tests.support.memstore import make_service
from tests.xmpp.conftest import HEADER, XmppTestClient, make_xmpp_config

NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"

SAMPLE = (
    HEADER.format(to="localhost")
    + "<message to='bob@localhost' id='m1' type='chat'><body>caf\u00e9 &amp; &lt;tea&gt;"
    " &#x263A;</body><active xmlns='http://jabber.org/protocol/chatstates'/></message> \n "
    "<iq type='get' id='i1'><query xmlns='jabber:iq:roster'/></iq>"
    "<presence><show>away</show><status><![CDATA[a <b> c]]></status></presence>"
    "</stream:stream>"
).encode()


def parse(chunks: list[bytes]) -> list[Any]:
    """Events (elements serialized) and the final error, if any."""
    parser = StreamParser()
    out: list[Any] = []
    try:
        for chunk in chunks:
            for event in parser.feed(chunk):
                if isinstance(event, TopElement):
                    out.append(to_bytes(event.element))
                elif isinstance(event, StreamOpened):
                    out.append(("open", event.attrib.get("to")))
                else:
                    out.append("close")
    except StreamError as err:
        out.append(("error", err.condition))
    return out


EXPECTED = parse([SAMPLE])


def test_the_sample_parses_into_stanzas_without_the_client_namespace() -> None:
    assert EXPECTED[0] == ("open", "localhost")
    assert EXPECTED[1] == (
        b'<message to="bob@localhost" id="m1" type="chat"><body>caf\xc3\xa9 &amp; '
        b"&lt;tea&gt; \xe2\x98\xba</body>"
        b'<active xmlns="http://jabber.org/protocol/chatstates"/></message>'
    )
    assert EXPECTED[2] == b'<iq type="get" id="i1"><query xmlns="jabber:iq:roster"/></iq>'
    assert EXPECTED[3] == b"<presence><show>away</show><status>a &lt;b&gt; c</status></presence>"
    assert EXPECTED[4] == "close"


def test_every_split_in_two_gives_the_same_events() -> None:
    for cut in range(len(SAMPLE) + 1):
        assert parse([SAMPLE[:cut], SAMPLE[cut:]]) == EXPECTED, cut


def test_one_byte_at_a_time_gives_the_same_events() -> None:
    assert parse([SAMPLE[i : i + 1] for i in range(len(SAMPLE))]) == EXPECTED


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(SAMPLE)), max_size=12))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [SAMPLE[a:b] for a, b in zip([0, *points], [*points, len(SAMPLE)], strict=True)]
    assert parse(chunks) == EXPECTED


def _check_events(out: list[Any]) -> None:
    for item in out[:-1]:
        assert isinstance(item, bytes | tuple | str)
        assert not (isinstance(item, tuple) and item[0] == "error")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=6))
def test_random_bytes_never_crash(data: bytes, cuts: list[int]) -> None:
    points = sorted({c for c in cuts if c <= len(data)})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    _check_events(parse(chunks))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, len(SAMPLE) - 1),
    st.binary(min_size=1, max_size=8),
    st.sampled_from(["insert", "replace", "delete"]),
)
def test_mutated_streams_give_stanzas_or_a_stream_error(where: int, junk: bytes, how: str) -> None:
    if how == "insert":
        data = SAMPLE[:where] + junk + SAMPLE[where:]
    elif how == "replace":
        data = SAMPLE[:where] + junk + SAMPLE[where + len(junk) :]
    else:
        data = SAMPLE[:where] + SAMPLE[where + len(junk) :]
    out = parse([data])
    _check_events(out)
    if out and ((isinstance(out[-1], tuple) and out[-1][0] == "error") or out[-1] == "close"):
        return
    # Unfinished: more input that never completes a stanza must end in a stream error, never
    # in unbounded buffering.
    more = parse([data] + [b"<x a='" + b"y" * 4000] + [b"z" * 4096] * 80)
    assert isinstance(more[-1], tuple) and more[-1][0] == "error", more[-3:]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_in_a_body_round_trips(text: str) -> None:
    from protocols.xmpp.stanzas import element, sub, xml_safe

    msg = element("message")
    sub(msg, "body", text=text)
    data = HEADER.format(to="localhost").encode() + to_bytes(msg)
    out = parse([data])
    assert (etree.fromstring(out[1]).findtext("body") or "") == xml_safe(text)


def test_a_restart_drops_what_the_client_pipelined() -> None:
    parser = StreamParser()
    data = HEADER.format(to="localhost").encode() + b"<a/><b/><c/>"
    seen = []
    for event in parser.feed(data):
        seen.append(event)
        if isinstance(event, TopElement):
            parser.reset()
    assert [type(e) for e in seen] == [StreamOpened, TopElement]
    # The new parser expects a new stream header.
    assert [type(e) for e in parser.feed(HEADER.format(to="localhost").encode())] == [StreamOpened]


def test_whitespace_between_stanzas_is_not_kept_and_not_counted_in_the_next_stanza() -> None:
    parser = StreamParser(Limits(stanza_bytes=4096))
    list(parser.feed(HEADER.format(to="localhost").encode()))
    for _ in range(2000):
        assert list(parser.feed(b" \n")) == []
    [event] = parser.feed(b"<presence>" + b" " * 4000 + b"</presence>")
    assert to_bytes(event.element) == b"<presence>" + b" " * 4000 + b"</presence>"
    # Each stanza starts the count again.
    for _ in range(2000):
        assert list(parser.feed(b"\t\r")) == []


def test_endless_whitespace_between_stanzas_is_a_policy_violation() -> None:
    parser = StreamParser(Limits(stanza_bytes=4096))
    list(parser.feed(HEADER.format(to="localhost").encode()))
    with pytest.raises(StreamError) as caught:
        for _ in range(5000):
            list(parser.feed(b" \n"))
    assert caught.value.condition == "policy-violation"
    assert "whitespace" in str(caught.value)


def test_keep_alives_after_a_pause_start_the_whitespace_count_again() -> None:
    """A client that only ever sends keep-alives, with pauses that park the parser between
    them, never reaches the limit."""
    parser = StreamParser(Limits(stanza_bytes=4096))
    list(parser.feed(HEADER.format(to="localhost").encode()))
    for _ in range(60):
        assert list(parser.feed(b" " * 100)) == []
        assert parser.park()
    [event] = parser.feed(b"<presence/>")
    assert to_bytes(event.element) == b"<presence/>"


@pytest.mark.parametrize(
    ("text", "condition"),
    [
        (b"hello", "bad-format"),
        (b" \n x", "bad-format"),
        ("\u00a0".encode(), "bad-format"),
        (b"<![CDATA[x]]>", "bad-format"),
        (b"&#x41;", "bad-format"),
        (b"]]>", "not-well-formed"),
    ],
)
def test_text_between_stanzas_ends_the_stream(text: bytes, condition: str) -> None:
    got = parse([HEADER.format(to="localhost").encode(), text, b"<presence/>"])
    assert got == [("open", "localhost"), ("error", condition)]


XML_CHARS = st.characters(
    blacklist_categories=("Cs",), blacklist_characters="\x00\ufffe\uffff", min_codepoint=9
).filter(lambda c: c in "\t\n\r" or c >= " ")


@settings(max_examples=200, deadline=None)
@given(st.text(XML_CHARS, min_size=1).filter(lambda t: t.strip(" \t\r\n")), st.integers(1, 64))
def test_any_text_between_stanzas_is_refused_and_nothing_after_it_is_seen(
    text: str, chunk: int
) -> None:
    data = (
        HEADER.format(to="localhost").encode()
        + b"<presence/>"
        + escape(text).encode()
        + b"<message><body>after</body></message>"
    )
    got = parse([data[i : i + chunk] for i in range(0, len(data), chunk)])
    assert got == [("open", "localhost"), b"<presence/>", ("error", "bad-format")]


def attributes(n: int, value: bytes = b"x") -> bytes:
    return b" ".join(b"a%d='%s'" % (i, value) for i in range(n))


@pytest.mark.parametrize(
    "element",
    [
        b"<message " + attributes(65) + b"/>",
        b"<message><body " + attributes(100) + b">x</body></message>",
        b"<message " + b" ".join(b"xmlns:p%d='urn:x'" % i for i in range(65)) + b"/>",
        b"<message xmlns:p='urn:p' " + b" ".join(b"p:a%d='x'" % i for i in range(70)) + b"/>",
        b"<message "
        + attributes(40)
        + b" "
        + b" ".join(b"xmlns:p%d='u'" % i for i in range(30))
        + b"/>",
        b"<message to='" + b"a" * 16385 + b"'/>",
        b"<message " + attributes(5, b"b" * 4000) + b"/>",
        # 5,000 characters, 15,000 bytes, and more in the next attribute.
        b"<message to='" + "\u20ac".encode() * 5000 + b"' id='" + b"i" * 2000 + b"'/>",
    ],
    ids=[
        "65",
        "100 on a child",
        "65 declarations",
        "70 prefixed",
        "40+30",
        "one long",
        "five long",
        "multibyte",
    ],
)
def test_attribute_limits_are_policy_violations(element: bytes) -> None:
    got = parse([HEADER.format(to="localhost").encode(), element])
    assert got == [("open", "localhost"), ("error", "policy-violation")]


def test_a_stream_header_with_too_many_attributes_is_refused() -> None:
    header = HEADER.format(to="localhost").encode()
    assert parse([header.replace(b" to=", b" " + attributes(70) + b" to=")]) == [
        ("error", "policy-violation")
    ]


def test_attributes_up_to_the_limits_pass() -> None:
    element = (
        b"<message " + attributes(62) + b" xmlns:p='urn:p' p:x='y'>"
        b"<body to='" + "\u20ac".encode() * 5461 + b"'>hi</body></message>"
    )
    [_, got] = parse([HEADER.format(to="localhost").encode(), element])
    el = etree.fromstring(got)
    assert len(el.attrib) == 63 and len(el[0].get("to")) == 5461


@pytest.mark.parametrize("chunk", [4096, 1000, 65536])
def test_a_tag_longer_than_the_attribute_limits_is_refused_before_it_is_read(chunk: int) -> None:
    """Refused once it passes Limits.tag_bytes, without waiting for its end: a ">" inside
    a quoted value does not end it."""
    data = HEADER.format(to="localhost").encode() + b"<message a='>' " + attributes(24_000)
    got = parse([data[i : i + chunk] for i in range(0, len(data), chunk)])
    assert got == [("open", "localhost"), ("error", "policy-violation")]


def test_a_long_cdata_section_is_bounded_by_the_stanza_size_only() -> None:
    text = b"a < b, " * 20_000
    data = (
        HEADER.format(to="localhost").encode()
        + b"<message><body><![CDATA["
        + text
        + b"]]></body></message>"
    )
    [_, got] = parse([data[i : i + 4096] for i in range(0, len(data), 4096)])
    assert etree.fromstring(got).findtext("body") == text.decode()


def test_many_attributes_cost_little() -> None:
    """24,000 attributes in one start tag (within the stanza size) are refused in about the
    time libxml2 takes to read them; building the element would take seconds."""
    parser = StreamParser()
    list(parser.feed(HEADER.format(to="localhost").encode()))
    started = time.process_time()
    with pytest.raises(StreamError) as caught:
        list(parser.feed(b"<message " + attributes(24_000) + b"/>"))
    assert caught.value.condition == "policy-violation"
    assert time.process_time() - started < 0.1


# -- negotiation over a connection -----------------------------------------------------------------


def feature_names(c: XmppTestClient) -> list[str]:
    assert c.features is not None
    return [etree.QName(f).localname for f in c.features]


def mechanisms(c: XmppTestClient) -> list[str]:
    assert c.features is not None
    return [m.text for m in c.features.iter(f"{{{NS_SASL}}}mechanism")]


@pytest.mark.parametrize("how", ["lost", "closed", "stream error", "unauthenticated"])
def test_a_closed_connection_is_freed_without_the_garbage_collector(
    factory, account, how: str
) -> None:
    # A burst of short connections left each one's objects to the cyclic collector, whose
    # full collections then cost a tenth of what a connection costs.
    account("alice")
    c = XmppTestClient(factory)
    if how == "unauthenticated":
        c.open()
    else:
        c.login("alice", "secret1", presence=True)
        c.send(
            "<presence to='room@muc.localhost/alice'>"
            "<x xmlns='http://jabber.org/protocol/muc'/></presence>"
        )
    if how == "closed":
        c.send("</stream:stream>")
    elif how == "stream error":
        c.send("<nonsense/>")
        c.received()
        assert c.stream_error is not None
    c.close()
    assert factory.service.find_user("alice") is None
    conn = weakref.ref(c.conn)
    gc.collect()
    gc.disable()
    try:
        del c
        assert conn() is None, gc.get_referrers(conn())
    finally:
        gc.enable()


def test_header_and_features_on_loopback(client) -> None:
    c = client()
    c.open()
    assert c.header["from"] == "localhost"
    assert c.header["version"] == "1.0"
    assert len(c.header["id"]) >= 16
    assert feature_names(c) == ["starttls", "mechanisms", "register"]
    assert c.features.find(f"{{{NS_TLS}}}starttls/{{{NS_TLS}}}required") is None
    assert mechanisms(c) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
    assert c.transport.nodelay


def test_tls_is_required_before_auth_off_loopback(client, account) -> None:
    account("alice")
    c = client("198.51.100.7")
    c.open()
    assert feature_names(c) == ["starttls"]
    assert c.features.find(f"{{{NS_TLS}}}starttls/{{{NS_TLS}}}required") is not None
    c.send(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldDE=</auth>"
    )
    failure = c.one()
    assert failure.find(f"{{{NS_SASL}}}encryption-required") is not None
    assert c.conn.account is None


def test_starttls_restarts_the_stream_and_then_offers_sasl(client, account) -> None:
    account("alice")
    c = client("198.51.100.7")
    c.open()
    first_id = c.header["id"]
    c.send(f"<starttls xmlns='{NS_TLS}'/>")
    proceed = c.one()
    assert proceed.tag == f"{{{NS_TLS}}}proceed"
    assert c.transport.tls_started and c.conn.tls and c.conn.secure
    c.header = {}
    c.open()
    assert c.header["id"] != first_id
    assert feature_names(c) == ["mechanisms", "register"]
    assert mechanisms(c) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
    c.authenticate("alice", "secret1")


def test_plaintext_pipelined_after_starttls_is_dropped(client, account) -> None:
    account("alice")
    c = client("198.51.100.7")
    c.open()
    c.send(
        f"<starttls xmlns='{NS_TLS}'/>"
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldDE=</auth>"
    )
    assert [e.tag for e in c.received()] == [f"{{{NS_TLS}}}proceed"]
    assert c.conn.account is None and not c.closed


def test_direct_tls_offers_no_starttls(client) -> None:
    c = client("198.51.100.7", direct_tls=True)
    c.open()
    assert feature_names(c) == ["mechanisms", "register"]
    assert c.conn.tls


def test_starttls_twice_fails_and_closes(client) -> None:
    c = client(direct_tls=True)
    c.open()
    c.send(f"<starttls xmlns='{NS_TLS}'/>")
    assert c.one().tag == f"{{{NS_TLS}}}failure"
    assert c.closed


def test_no_starttls_without_a_certificate(service) -> None:
    factory = XmppFactory(service, make_xmpp_config(), clock=service.clock)
    c = XmppTestClient(factory, "198.51.100.7")
    c.open()
    # Nothing to offer and TLS required: the client cannot go on, and is told so by SASL.
    assert feature_names(c) == []


def test_login_bind_and_session(client, account, service) -> None:
    account("alice")
    c = client()
    c.open()
    c.authenticate("alice", "secret1")
    assert c.conn.account == "alice"
    c.open()
    assert feature_names(c) == ["bind", "session", "sm", "csi", "c", "ver"]
    assert c.features.find(f"{{{NS_SESSION}}}session/{{{NS_SESSION}}}optional") is not None
    jid = c.bind("phone")
    assert jid == "alice@localhost/phone"
    assert c.conn.jid == jid and c.conn.bare_jid == "alice@localhost"
    assert c.conn.user is service.find_user("alice")
    reply = c.iq("set", f"<session xmlns='{NS_SESSION}'/>")
    assert reply.get("type") == "result"


def test_server_generates_a_resource_and_resolves_conflicts(client, account, service) -> None:
    account("alice")
    first = client()
    first.open()
    first.authenticate("alice", "secret1")
    first.open()
    generated = first.bind(None)
    assert generated.startswith("alice@localhost/") and len(generated) > len("alice@localhost/")
    second = client().login("alice", "secret1", resource="desk")
    third = client()
    third.open()
    third.authenticate("alice", "secret1")
    third.open()
    other = third.bind("desk")
    assert other != "alice@localhost/desk" and other.startswith("alice@localhost/desk")
    # One user, three connections.
    user = service.find_user("alice")
    assert len(user.connections) == 3
    assert second.conn.user is user and third.conn.user is user


def test_binding_takes_the_nick_back_from_a_guest(client, account, service, other_user) -> None:
    # Only with "timeout" enforcement can a guest hold a registered nick.
    service.apply_settings(dataclasses.replace(service.settings, nick_enforcement="timeout"))
    account("alice")
    guest = other_user("alice")
    c = client().login("alice", "secret1")
    user = service.find_user("alice")
    assert user is c.conn.user and user.account == "alice"
    assert guest.core.user.nick != "alice"


def test_a_banned_nick_ends_the_stream_at_bind(client, account, service) -> None:
    account("alice")
    # A nick mask: the account logs in, the nick is refused when the user is made.
    service.set_config_bans([ServerBan("alice!*@*", "pick another name", "config")])
    c = client()
    c.open()
    c.authenticate("alice", "secret1")
    c.open()
    c.send(f"<iq type='set' id='b1'><bind xmlns='{NS_BIND}'><resource>r</resource></bind></iq>")
    assert c.received() == []
    assert c.stream_error == "policy-violation"
    assert c.stream_error_text == "You are banned from this server: pick another name"
    assert c.closed and c.conn.jid is None
    assert service.find_user("alice") is None


def test_stanza_before_auth_is_not_authorized(client) -> None:
    c = client()
    c.open()
    c.send("<message to='bob@localhost'><body>hi</body></message>")
    assert c.stream_error == "not-authorized"
    assert c.closed
    assert c.transport.value() == b"" and c.reader.depth == 0


def test_stanza_before_bind_gets_an_error(client, account) -> None:
    account("alice")
    c = client()
    c.open()
    c.authenticate("alice", "secret1")
    c.open()
    reply = c.iq("get", "<query xmlns='jabber:iq:roster'/>")
    assert reply.get("type") == "error"
    assert reply.find("error/{urn:ietf:params:xml:ns:xmpp-stanzas}not-authorized") is not None


@pytest.mark.parametrize(
    ("header", "condition"),
    [
        (
            "<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong' to='localhost'"
            " version='1.0'>",
            "invalid-namespace",
        ),
        (
            "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'"
            " to='localhost' version='1.0'>",
            "invalid-namespace",
        ),
        ("<html>", "invalid-namespace"),
        (HEADER.format(to="elsewhere.example"), "host-unknown"),
        (HEADER.format(to="conference.localhost"), "host-unknown"),
        (
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
            " to='localhost'>",
            "unsupported-version",
        ),
        ("GET / HTTP/1.1\r\n", "not-well-formed"),
        # A TLS ClientHello on the STARTTLS port: as Prosody answers it.
        (bytes.fromhex("16030100a5010000a10303") + bytes(32), "not-well-formed"),
    ],
)
def test_bad_stream_headers(client, header: str | bytes, condition: str) -> None:
    c = client()
    c.send(header)
    assert c.stream_error == condition
    assert c.header["from"] == "localhost"  # a header is always sent before the error
    assert c.closed


def test_unknown_top_level_element_is_unsupported(client, account) -> None:
    account("alice")
    c = client().login("alice", "secret1")
    c.send("<frobnicate xmlns='urn:example:unknown'/>")
    assert c.stream_error == "unsupported-stanza-type"
    assert c.closed


def test_stream_ends_with_close_tag(client) -> None:
    c = client()
    c.open()
    c.received()
    c.conn.dataReceived(b"<message>")
    c.conn.dataReceived(b"</iq>")
    data = c.transport.value()
    assert data.endswith(b"</stream:error></stream:stream>")
    assert b"not-well-formed" in data


def test_whitespace_keepalives_are_accepted(client, account) -> None:
    account("alice")
    c = client().login("alice", "secret1")
    for _ in range(100):
        c.send(" ")
        c.send("\n")
    assert c.received() == [] and not c.closed
    assert c.iq("get", "<ping xmlns='urn:xmpp:ping'/>").get("type") == "result"


def test_client_closing_the_stream_is_answered_and_quits(client, account, service) -> None:
    account("alice")
    c = client().login("alice", "secret1")
    c.send("</stream:stream>")
    assert c.closed
    assert service.find_user("alice") is None
    assert service.connection_count() == 0


def test_spoofed_from_is_a_stream_error(client, account) -> None:
    account("alice")
    account("mallory")
    c = client().login("mallory", "secret1")
    c.send("<message from='alice@localhost/x' to='alice@localhost'><body>hi</body></message>")
    assert c.stream_error == "invalid-from"


def test_idle_client_is_pinged_then_dropped(client, account, service, xmpp_config) -> None:
    account("alice")
    c = client().login("alice", "secret1")
    service.clock.advance(xmpp_config.idle_timeout + 1)
    ping = c.one("iq")
    assert ping.get("type") == "get" and ping.get("from") == "localhost"
    assert ping.find("{urn:xmpp:ping}ping") is not None
    c.send(f"<iq type='result' id='{ping.get('id')}' to='localhost'/>")
    service.clock.advance(xmpp_config.ping_timeout + 1)
    assert not c.closed
    service.clock.advance(xmpp_config.idle_timeout)
    c.one("iq")
    service.clock.advance(xmpp_config.ping_timeout + 1)
    c.received()
    assert c.stream_error == "connection-timeout"
    assert service.find_user("alice") is None


@pytest.mark.parametrize(
    ("reason", "condition"),
    [
        ("Server shutting down", "system-shutdown"),
        ("Killed by oper: spam", "policy-violation"),
        # A reason's own words do not make a ban look like a shutdown.
        ("You are banned from this server: shut down your bot", "policy-violation"),
    ],
)
def test_server_side_disconnect(client, account, reason: str, condition: str) -> None:
    account("alice")
    c = client().login("alice", "secret1")
    c.conn.disconnect(reason)
    c.received()
    assert c.stream_error == condition
    assert c.stream_error_text == reason
    assert c.closed


def test_connection_lost_quits_once(client, account, service) -> None:
    account("alice")
    c = client().login("alice", "secret1")
    core = c.conn.core
    c.close()
    c.conn.connectionLost(None)
    assert service.find_user("alice") is None
    assert core.id not in service.connections


def test_too_many_connections_from_one_address() -> None:
    service = make_service(CoreSettings(scram_iterations=4096, max_connections_per_address=1))
    factory = XmppFactory(service, make_xmpp_config(), clock=service.clock)
    XmppTestClient(factory, "198.51.100.9")
    second = XmppTestClient(factory, "198.51.100.9")
    second._pump()
    assert second.stream_error == "policy-violation"
    assert second.closed


def test_logs_name_no_passwords_or_bodies(client, account, other_user) -> None:
    from twisted.logger import formatEvent, globalLogPublisher

    seen: list[str] = []

    def observer(event: dict[str, Any]) -> None:
        seen.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    try:
        account("alice", "hunter22")
        other_user("bob")
        c = client().login("alice", "hunter22")
        c.send("<message to='bob@localhost' type='chat'><body>very private words</body></message>")
        c.send("</stream:stream>")
    finally:
        globalLogPublisher.removeObserver(observer)
    text = "\n".join(seen)
    assert "alice" in text and "xmpp" in text
    assert "hunter22" not in text and "private words" not in text


FRAGMENTS = [
    "<message to='bob@localhost' type='chat'><body>hi</body></message>",
    "<message to='conference.localhost'/>",
    "<message type='groupchat' to='room@conference.localhost'><body>x</body></message>",
    "<presence/>",
    "<presence type='unavailable'/>",
    "<presence to='bob@localhost' type='subscribe'/>",
    "<presence to='nobody@localhost' type='probe'/>",
    "<presence to='room@conference.localhost/me'><x xmlns='http://jabber.org/protocol/muc'/></presence>",
    "<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>",
    "<iq type='set' id='2'><query xmlns='jabber:iq:roster'><item jid='x@localhost'/></query></iq>",
    "<iq type='get' id='3' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    "<iq type='get' id='4'/>",
    "<iq id='5'/>",
    "<iq type='result' id='6'/>",
    "<iq type='set' id='7'><query xmlns='jabber:iq:register'><remove/></query></iq>",
    "<message to='@@'/>",
    "<message to=''><body/></message>",
    "<presence type='bogus'/>",
    " ",
    "<a>",
    "</a>",
    "&amp;",
    "<message",
    ">",
    "</stream:stream>",
]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=12), st.integers(1, 40))
def test_any_sequence_of_stanzas_never_raises(fragments: list[str], chunk: int) -> None:
    service = make_service()
    factory = XmppFactory(service, make_xmpp_config(), clock=service.clock)
    service.accounts.create("alice", "secret1")
    service.accounts.create("bob", "secret1")
    c = XmppTestClient(factory).login("alice", "secret1")
    data = "".join(fragments).encode()
    got = []
    for offset in range(0, len(data), chunk):
        if c.closed:
            break
        c.send(data[offset : offset + chunk])  # raises if the stream layer crashes
        got.extend(c.received())
    # A handler that crashed would have answered internal-server-error.
    assert not [el for el in got if el.find(".//{*}internal-server-error") is not None]
    assert c.closed == (c.stream_error is not None or c.conn.state == "closed")


def test_a_client_that_stops_reading_is_dropped(client, account, other_user, service) -> None:
    account("alice")
    bob = other_user("bob")
    c = client().login("alice", "secret1")
    c.conn.transport.producer.pauseProducing()  # what the transport does when the socket's buffer is full
    for _ in range(2000):
        service.say(bob.core, nick="alice", text="x" * 1000)
    assert c.transport.disconnecting
    assert len(c.transport.value()) < 1_200_000


def test_a_parked_parser_keeps_the_namespaces_of_the_stream_header() -> None:
    parser = StreamParser()
    header = (
        b"<s:stream xmlns='jabber:client' xmlns:s='http://etherx.jabber.org/streams'"
        b" xmlns:c='http://jabber.org/protocol/chatstates' version='1.0'>"
    )
    assert [type(e) for e in parser.feed(header)] == [StreamOpened]
    assert parser.park() and parser.parked
    events = list(parser.feed(b"<message><c:active/></message></s:stream>"))
    assert to_bytes(events[0].element) == (
        b'<message xmlns:c="http://jabber.org/protocol/chatstates"><c:active/></message>'
    )
    assert len(events) == 2 and not isinstance(events[1], StreamOpened | TopElement)


def test_a_parser_is_not_parked_in_the_middle_of_a_stanza() -> None:
    parser = StreamParser()
    list(parser.feed(HEADER.format(to="localhost").encode()))
    assert list(parser.feed(b"<message><body>half")) == []
    assert not parser.park() and not parser.parked
    [event] = parser.feed(b" way</body></message>")
    assert to_bytes(event.element) == b"<message><body>half way</body></message>"
    # A ">" inside an attribute value does not end the tag that libxml2 still holds.
    assert list(parser.feed(b"<presence type='>'")) == []
    assert not parser.park()
    [event] = parser.feed(b" to='bob@localhost'/>")
    assert event.element.get("type") == ">" and event.element.get("to") == "bob@localhost"
    assert parser.park() and parser.parked


def test_a_stream_that_only_sends_whitespace_after_a_park_parks_again() -> None:
    parser = StreamParser()
    list(parser.feed(HEADER.format(to="localhost").encode()))
    assert list(parser.feed(b"<presence/>"))
    assert parser.park() and parser.parked
    # A whitespace keep-alive wakes the parser without a tag of its own.
    assert list(parser.feed(b" ")) == []
    assert not parser.parked
    assert parser.park() and parser.parked
    [event] = parser.feed(b"<message to='bob@localhost'><body>hi</body></message>")
    assert to_bytes(event.element) == b'<message to="bob@localhost"><body>hi</body></message>'


def test_a_stream_given_up_mid_stanza_leaves_nothing_for_the_next_one() -> None:
    # A parser a stream gives back goes to the next stream: whatever the first left half
    # said must not reach the second.
    first = StreamParser()
    list(first.feed(HEADER.format(to="localhost").encode()))
    assert list(first.feed(b"<message to='eve@localhost'><body>half")) == []
    parser = first._parser
    first.release()
    second = StreamParser()
    list(second.feed(HEADER.format(to="localhost").encode()))
    assert second._parser is parser
    [event] = second.feed(b"<presence/>")
    assert to_bytes(event.element) == b"<presence/>"
    assert second.park() and second.parked


def test_a_parser_that_refused_its_input_is_not_used_again() -> None:
    bad = StreamParser()
    list(bad.feed(HEADER.format(to="localhost").encode()))
    with pytest.raises(StreamError):
        list(bad.feed(b"<message><</message>"))
    parser = bad._parser
    bad.release()
    fresh = StreamParser()
    list(fresh.feed(HEADER.format(to="localhost").encode()))
    assert fresh._parser is not parser
    [event] = fresh.feed(b"<presence/>")
    assert to_bytes(event.element) == b"<presence/>"


def test_an_idle_stream_parks_its_parser_and_still_answers(client, account, service) -> None:
    account("alice")
    c = client().login("alice", "secret1")
    assert not c.conn.parser.parked
    service.clock.advance(PARK_AFTER + 0.1)
    assert c.conn.parser.parked
    assert c.iq("get", "<ping xmlns='urn:xmpp:ping'/>").get("type") == "result"
    assert not c.conn.parser.parked and not c.closed
