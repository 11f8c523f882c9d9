"""Hostile input against XMPP (the real server, over sockets), with the bystanders chatting
in a room beside it.  The errors asserted are RFC 6120 stream errors and XEP stanza errors."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from tests.hostile import fuzz
from tests.hostile.clients import (
    ATTACKER,
    BYSTANDER,
    FUZZ,
    GUESSER,
    GUESSER2,
    GUESSER3,
    MUC_DOMAIN,
    REGISTRAR,
    VICTIM,
    XMPP_HEADER,
    Closed,
    XmppClient,
    keep,
    local,
    xmpp_user,
)
from tests.hostile.harness import Env, count, flood_until_quit, start_env, stop_env, wait_until
from tests.hostile.tlsclose import assert_tls_peers_let_go
from tests.hostile.tlsstall import HALF_CLIENT_HELLO, assert_tls_stall_dropped
from tests.transport.tlsclient import SilentTlsPeer

pytestmark = pytest.mark.usefixtures("guard")

PROTO = "xmpp"
FUZZER = "fuzzer"
PASSWORD = "fuzz-password-1"
MAX_STANZA = 262144

# Stream errors a stream may end with when the client sent garbage before binding.
PREAUTH_ERRORS = {
    "not-well-formed",
    "restricted-xml",
    "policy-violation",
    "invalid-namespace",
    "host-unknown",
    "unsupported-version",
    "unsupported-stanza-type",
    "not-authorized",
    "bad-format",
}
# ... and once bound, for well-formed stanzas the server will not take.
BOUND_ERRORS = {"unsupported-stanza-type", "invalid-from", "invalid-namespace"}

HEADER = XMPP_HEADER
PREAUTH_CORPUS = [
    HEADER,
    HEADER
    + b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AG5vYm9keQB4</auth>",
    HEADER + b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
    HEADER + b"<iq type='get' id='g'><query xmlns='jabber:iq:register'/></iq>",
    HEADER + b"<message to='fzwatch@localhost'><body>early</body></message>",
    b"<?xml version='1.0' encoding='UTF-8'?><stream:stream to='localhost' "
    b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
    b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>",
    b"<stream xmlns='http://etherx.jabber.org/streams' version='0.9'>",
    HEADER + b"</stream:stream>",
    HEADER
    + b"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
]
STANZA_CORPUS = [
    b"<message to='fuzzroom@conference.localhost' type='groupchat'><body>hi &amp; bye</body>"
    b"</message>",
    b"<message to='fzwatch@localhost' type='chat' id='m1'><body>hello</body><active "
    b"xmlns='http://jabber.org/protocol/chatstates'/></message>",
    b"<presence to='fuzzroom@conference.localhost/fz'><x xmlns='http://jabber.org/protocol/muc'>"
    b"<history maxstanzas='5'/></x></presence>",
    b"<presence type='unavailable' to='fuzzroom@conference.localhost/fz'/>",
    b"<presence><show>away</show><status>gone</status><priority>5</priority></presence>",
    b"<presence type='subscribe' to='fzwatch@localhost'/>",
    b"<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>",
    b"<iq type='set' id='r2'><query xmlns='jabber:iq:roster'><item jid='a@localhost' name='A'>"
    b"<group>g</group></item></query></iq>",
    b"<iq type='get' id='d1' to='conference.localhost'><query "
    b"xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    b"<iq type='get' id='d2' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/>"
    b"</iq>",
    b"<iq type='get' id='v1' to='localhost'><query xmlns='jabber:iq:version'/></iq>",
    b"<iq type='set' id='a1' to='fuzzroom@conference.localhost'><query "
    b"xmlns='http://jabber.org/protocol/muc#admin'><item nick='fzwatch' role='none'/></query></iq>",
    b"<iq type='get' id='o1' to='fuzzroom@conference.localhost'><query "
    b"xmlns='http://jabber.org/protocol/muc#owner'/></iq>",
    b"<iq type='set' id='c1'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
    b"<iq type='result' id='x1'/>",
    b"<iq type='error' id='x2'><error type='cancel'><item-not-found "
    b"xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
    b"<message type='error' to='fzwatch@localhost'><error/></message>",
    b"<message to='fuzzroom@conference.localhost' type='groupchat'><subject>topic</subject>"
    b"</message>",
    b"<iq type='get' id='p1' to='fzwatch@localhost/x'><ping xmlns='urn:xmpp:ping'/></iq>",
    b"<message to='fuzzroom@conference.localhost/fzwatch' type='chat'><body>pm</body></message>",
    b"<message to='fuzzroom@conference.localhost' type='groupchat'><retract id='x' "
    b"xmlns='urn:xmpp:message-retract:1'/><body>retracted</body></message>",
    b"<message to='fzwatch@localhost' type='chat' id='r9'><retract id='m1' "
    b"xmlns='urn:xmpp:message-retract:1'/></message>",
    b"<iq type='set' id='mod1' to='fuzzroom@conference.localhost'><moderate id='x' "
    b"xmlns='urn:xmpp:message-moderate:1'><retract xmlns='urn:xmpp:message-retract:1'/>"
    b"<reason>r</reason></moderate></iq>",
    b"<message to='fuzzroom@conference.localhost' type='groupchat'><reactions id='x' "
    b"xmlns='urn:xmpp:reactions:0'><reaction>+</reaction></reactions></message>",
    b"<iq type='set' id='n1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish "
    b"node='http://jabber.org/protocol/nick'><item><nick xmlns='http://jabber.org/protocol/nick'>"
    b"Fuzz</nick></item></publish></pubsub></iq>",
    b" ",
]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    environment = start_env(tmp_path_factory.mktemp("xmpp"), PROTO, protocols=("line", "xmpp"))
    try:
        # Accounts made from the trusted address: the registration throttle is tested apart.
        for name in (FUZZER, "fzwatch", "sloth", "guessme", "hasty", "flooder"):
            client = XmppClient(environment.ports[PROTO], source=BYSTANDER)
            answer = client.register(name, PASSWORD)
            assert answer.get("type") == "result", etree.tostring(answer)
            client.close()
    except Exception:
        stop_env(environment)
        raise
    environment.new_log()
    yield environment
    stop_env(environment)


class XmppWatcher:
    """An occupant of fuzzroom who reads everything in a thread: the server must only ever
    send it well-formed XML (the client's parser raises otherwise)."""

    def __init__(self, port: int) -> None:
        self.client = keep(xmpp_user(port, "fzwatch", PASSWORD, source=VICTIM, register=False))
        self.client.join_room("fuzzroom", "fzwatch")
        self.problems: list[str] = []
        self.seen: list[Any] = []
        self.running = True
        self.client.on_element = self._element
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _element(self, el: Any) -> bool:
        self.seen.append(el)
        if local(el) == "iq" and el.get("type") == "get":
            self.client.send(f"<iq type='result' id='{el.get('id') or ''}' to='{el.get('from')}'/>")
        return True

    def _read(self) -> None:
        while self.running:
            try:
                self.client._fill(time.monotonic() + 0.5)
            except TimeoutError:
                continue
            except Exception as err:
                if self.running:
                    self.problems.append(f"{type(err).__name__}: {err}")
                return

    def check(self) -> None:
        assert not self.problems, f"the watcher's stream broke: {self.problems}"

    def stop(self) -> None:
        self.running = False
        self.client.close()


@pytest.fixture(scope="module")
def watcher(env: Env) -> Iterator[XmppWatcher]:
    watch = XmppWatcher(env.ports[PROTO])
    yield watch
    watch.stop()


# -- generated input -------------------------------------------------------------------------


def run_preauth_case(port: int, payload: bytes) -> None:
    """A fresh stream: the payload, then a NUL (never XML), so that the server must end the
    stream with a stream error if the payload did not end it already (or moved it to TLS
    with <proceed/>: then the bytes after <starttls/> are dropped, and the stream waits for
    a TLS handshake, which test_starttls_handshake_stall covers)."""
    client = XmppClient(port, source=FUZZ, open_stream=False, timeout=10.0)
    deadline = time.monotonic() + 10.0
    proceeded = False
    try:
        client.send(payload + b"\x00")
        while not proceeded:
            client._fill(deadline)
            proceeded = any(local(el) == "proceed" for el in client.pending)
    except (Closed, OSError):
        pass
    finally:
        client.close()
    condition = client.stream_error
    assert condition in PREAUTH_ERRORS or proceeded or client.reader.ended, (
        f"{payload[:300]!r} ended with {condition!r}"
    )


_RESTRICTED = (b"<!", b"<?", b"&")


def wellformed(payload: bytes) -> bool:
    """Whether ``payload`` is a sequence of complete elements the server must accept as XML
    (no restricted construct, no undefined entity, inside the limits)."""
    if len(payload) > MAX_STANZA // 2:
        return False
    for bad in _RESTRICTED:
        if bad in payload.replace(b"&amp;", b"").replace(b"&lt;", b"").replace(b"&gt;", b""):
            return False
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        root = etree.fromstring(b"<r xmlns='jabber:client'>" + payload + b"</r>", parser)
    except (etree.XMLSyntaxError, ValueError):
        return False
    # XMPP's XML must be namespace-well-formed (RFC 6120 11.2): libxml2 only logs a name that
    # is no QName (an attribute ":id"), which the server refuses as not-well-formed; a
    # relative namespace name is a warning, and accepted.
    if any(
        error.domain == etree.ErrorDomains.NAMESPACE and error.level >= etree.ErrorLevels.ERROR
        for error in parser.error_log
    ):
        return False
    depth = max((len(list(el.iterancestors())) for el in root.iter()), default=0)
    # Between stanzas only whitespace may stand.
    between = [root.text or ""] + [child.tail or "" for child in root]
    return depth <= 30 and not "".join(between).strip(" \t\r\n")


class Session:
    """A bound stream of the fuzzer's account, opened again whenever a case ends it."""

    ids = itertools.count(1)

    def __init__(self, port: int) -> None:
        self.port = port
        self.client: XmppClient | None = None

    def open(self) -> XmppClient:
        if self.client is None:
            # Not FUZZ: the generated SASL attempts before login get that address throttled.
            client = XmppClient(self.port, source=ATTACKER, timeout=10.0)
            client.login(FUZZER, PASSWORD, f"fz{next(self.ids)}")
            client.on_element = self._chores
            self.client = client
        return self.client

    def _chores(self, el: Any) -> bool:
        # Pings from the server and others: answer; everything else is kept for checks.
        if local(el) == "iq" and el.get("type") == "get" and el.get("id", "").startswith("ping-"):
            assert self.client is not None
            self.client.send(f"<iq type='result' id='{el.get('id')}' to='{el.get('from')}'/>")
            return True
        return False

    def run(self, payload: bytes) -> None:
        client = self.open()
        client.pending.clear()
        good = wellformed(payload)
        probe = f"probe{next(self.ids)}"
        if good:
            ping = f"<iq type='get' id='{probe}'><ping xmlns='urn:xmpp:ping'/></iq>"
            client.send(payload + ping.encode())
        else:
            client.send(payload + b"\x00")
        try:
            client.expect(lambda el: el.get("id") == probe, 10.0)
        except Closed:
            condition = client.stream_error
            self.close()
            allowed = BOUND_ERRORS if good else BOUND_ERRORS | PREAUTH_ERRORS
            # A payload that closes the stream itself is answered by the server's own close,
            # whatever follows it (RFC 6120 4.4).
            closed_by_client = b"</stream:stream>" in payload
            assert condition in allowed or ((good or closed_by_client) and condition is None), (
                f"{payload[:300]!r} (well-formed: {good}) ended with {condition!r}"
            )
            return
        assert good, f"{payload[:300]!r} is not XML, yet the stream went on"

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


PREAUTH_CASE = st.one_of(
    fuzz.random_bytes().map(lambda data: HEADER + data),
    fuzz.random_bytes(),
    fuzz.mutated(PREAUTH_CORPUS),
)
BOUND_CASE = st.one_of(fuzz.mutated(STANZA_CORPUS), fuzz.random_bytes(200))
BATCH = 25


def test_generated_input_before_auth(env: Env, watcher: XmppWatcher, scale: int) -> None:
    port = env.ports[PROTO]

    @fuzz.batch_settings(100 * scale)
    @given(st.lists(PREAUTH_CASE, min_size=BATCH, max_size=BATCH))
    def batches(cases: list[bytes]) -> None:
        for payload in cases:
            run_preauth_case(port, payload)
        count(PROTO, len(cases))

    batches()
    watcher.check()


def test_generated_stanzas_when_bound(env: Env, watcher: XmppWatcher, scale: int) -> None:
    session = Session(env.ports[PROTO])

    @fuzz.batch_settings(100 * scale)
    @given(st.lists(BOUND_CASE, min_size=BATCH, max_size=BATCH))
    def batches(cases: list[bytes]) -> None:
        for payload in cases:
            session.run(payload)
        count(PROTO, len(cases))

    try:
        batches()
    finally:
        session.close()
    watcher.check()


# -- XML attacks -----------------------------------------------------------------------------

BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
        for i in range(1, 10)
    )
    + b"]>"
    + HEADER
    + b"<message><body>&lol9;</body></message>"
)
QUADRATIC = (
    b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY a "'
    + b"x" * 50_000
    + b'">]>'
    + HEADER
    + b"<message><body>"
    + b"&a;" * 20_000
    + b"</body></message>"
)
EXTERNAL = (
    b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    + HEADER
    + b"<message><body>&x;</body></message>"
)
PARAMETER = (
    b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY % p SYSTEM "http://192.0.2.1/x.dtd"> %p;]>'
    + HEADER
)

# 24,000 attributes in 250 KB: building that element took lxml seconds.
MANY_ATTRIBUTES = b"<message " + b" ".join(b"a%d='x'" % i for i in range(24_000)) + b"/>"
LONG_VALUES = b" ".join(b"v%d='%s'" % (i, b"w" * 8000) for i in range(3))

# (name, bytes after the stream header or whole, the stream error)
ATTACKS = [
    ("billion laughs", BILLION_LAUGHS, "restricted-xml"),
    ("quadratic blow-up", QUADRATIC, "restricted-xml"),
    ("external entity", EXTERNAL, "restricted-xml"),
    ("parameter entity", PARAMETER, "restricted-xml"),
    ("doctype mid-stream", HEADER + b"<!DOCTYPE x [<!ENTITY a 'b'>]><message/>", "restricted-xml"),
    ("entity reference", HEADER + b"<message><body>&nbsp;</body></message>", "restricted-xml"),
    ("comment", HEADER + b"<message><!-- hi --></message>", "restricted-xml"),
    ("processing instruction", HEADER + b"<message><?php x ?></message>", "restricted-xml"),
    ("deep nesting", HEADER + b"<message>" + b"<a>" * 100_000, "policy-violation"),
    (
        "huge attribute count",
        HEADER + b"<message " + b" ".join(b"a%d='x'" % i for i in range(100_000)) + b"/>",
        "policy-violation",
    ),
    ("huge attribute", HEADER + b"<message to='" + b"a" * 1_000_000 + b"'/>", "policy-violation"),
    ("huge stanza", HEADER + b"<message><body>" + b"a" * 1_000_000, "policy-violation"),
    # Within the stanza size: refused for their count, before lxml builds the element.
    ("attributes within the size", HEADER + MANY_ATTRIBUTES, "policy-violation"),
    (
        "namespace declarations",
        HEADER + b"<iq " + b" ".join(b"xmlns:n%d='urn:n'" % i for i in range(15_000)) + b"/>",
        "policy-violation",
    ),
    (
        "attributes on a child",
        HEADER + b"<message><body " + b" ".join(b"b%d=''" % i for i in range(200)) + b"/>",
        "policy-violation",
    ),
    ("long attribute values", HEADER + b"<presence " + LONG_VALUES + b"/>", "policy-violation"),
    ("text between stanzas", HEADER + b"words " * 50_000, "bad-format"),
    ("whitespace without end", HEADER + b" \n\t" * 400_000, "policy-violation"),
    ("invalid utf-8", HEADER + b"<message><body>\xc3\x28</body></message>", "not-well-formed"),
    ("nul", HEADER + b"<message><body>a\x00b</body></message>", "not-well-formed"),
    ("mismatched tags", HEADER + b"<message></presence>", "not-well-formed"),
    # Well-formed XML, but no QName: not namespace-well-formed, which XMPP requires.
    (
        "attribute name with an empty prefix",
        HEADER + b"<iq type='get' :id='r1'><query xmlns='jabber:iq:roster'/></iq>",
        "not-well-formed",
    ),
    # Characters outside the text rule, however spelled: XML's parser is XMPP's edge.
    (
        "surrogate reference",
        HEADER + b"<message><body>&#xD800;</body></message>",
        "not-well-formed",
    ),
    (
        "low surrogate reference",
        HEADER + b"<message><body>x&#56320;y</body></message>",
        "not-well-formed",
    ),
    ("nul reference", HEADER + b"<message><body>&#0;</body></message>", "not-well-formed"),
    (
        "noncharacter reference",
        HEADER + b"<message><body>&#xFFFE;</body></message>",
        "not-well-formed",
    ),
    (
        "surrogate as utf-8",
        HEADER + b"<message><body>\xed\xa0\x80</body></message>",
        "not-well-formed",
    ),
    (
        "surrogate in attribute",
        HEADER + b"<message id='&#xDBFF;'><body>x</body></message>",
        "not-well-formed",
    ),
]


def expect_stream_error(client: XmppClient, condition: str, started: float) -> None:
    got = client.until_closed(10.0)
    assert got == condition, f"ended with {got!r}, not {condition!r}"
    assert time.monotonic() - started < 5.0


@pytest.mark.parametrize("name,data,condition", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_xml_attack_before_auth(env: Env, name: str, data: bytes, condition: str) -> None:
    client = XmppClient(env.ports[PROTO], source=ATTACKER, open_stream=False, timeout=10.0)
    start = time.monotonic()
    try:
        client.send(data)
    except OSError:
        pass  # closed while we were still sending: the error is already in the buffer
    expect_stream_error(client, condition, start)
    count(PROTO)


@pytest.mark.parametrize(
    "name,data,condition",
    [a for a in ATTACKS if a[1].startswith(HEADER)],
    ids=[a[0] for a in ATTACKS if a[1].startswith(HEADER)],
)
def test_xml_attack_when_bound(env: Env, name: str, data: bytes, condition: str) -> None:
    client = XmppClient(env.ports[PROTO], source=ATTACKER, timeout=10.0)
    client.login(FUZZER, PASSWORD, "attack")
    start = time.monotonic()
    try:
        client.send(data[len(HEADER) :])
    except OSError:
        pass
    expect_stream_error(client, condition, start)
    count(PROTO)


def test_unclosed_tags_forever(env: Env) -> None:
    """An element that never ends, fed slowly in 16 KiB pieces: refused once it passes the
    stanza limit, not held until memory runs out."""
    client = XmppClient(env.ports[PROTO], source=ATTACKER, timeout=10.0)
    client.login(FUZZER, PASSWORD, "unclosed")
    client.send(b"<message to='fuzzroom@conference.localhost'><body>")
    sent = 0
    try:
        while sent < 4 * MAX_STANZA:
            client.send(b"<b>x</b>" * 2048)
            sent += 8 * 2048
    except OSError:
        pass
    assert client.until_closed(5.0) == "policy-violation"
    count(PROTO)


def send_until_error(port: int, data: bytes) -> str | None:
    """A fresh stream that sends ``data``: the stream error it ends with."""
    client = XmppClient(port, source=ATTACKER, open_stream=False, timeout=10.0)
    try:
        client.send(data)
    except OSError:
        pass  # closed while we were still sending
    try:
        return client.until_closed(10.0)
    finally:
        client.close()


def test_elements_before_login_take_tokens(env: Env) -> None:
    """Hundreds of in-band registration queries before logging in, pipelined: the stream
    ends with policy-violation once the flood budget is spent (a login takes a handful of
    elements), and only that many were answered."""
    query = b"<iq type='get' id='q'><query xmlns='jabber:iq:register'/></iq>"
    client = XmppClient(env.ports[PROTO], source=ATTACKER, open_stream=False, timeout=10.0)
    try:
        client.send(HEADER + query * 500)
    except OSError:
        pass  # closed while we were still sending
    assert client.until_closed(10.0) == "policy-violation"
    answered = [el for el in client.pending if local(el) == "iq"]
    assert 10 <= len(answered) <= 25, len(answered)
    client.close()
    count(PROTO, 500)


def test_attribute_floods_cost_the_server_little(env: Env) -> None:
    """Four streams at once, for three seconds, each sending start tags of 24,000
    attributes before logging in, over and over: each costs the server about what reading
    250 KB costs, and the bystanders beside them do not notice (the guard checks their
    latency over the window)."""
    port = env.ports[PROTO]
    errors: list[str | None] = []
    deadline = time.monotonic() + 3.0

    def attack() -> None:
        while time.monotonic() < deadline:
            errors.append(send_until_error(port, HEADER + MANY_ATTRIBUTES))

    threads = [threading.Thread(target=attack) for _ in range(4)]
    used = env.cpu()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    per_stanza = (env.cpu() - used) / len(errors)
    assert errors == ["policy-violation"] * len(errors)
    env.notes.append(
        f"xmpp: {len(errors)} start tags of 24,000 attributes from 4 streams in 3 s cost the"
        f" server {per_stanza * 1000:.1f} ms of CPU each"
    )
    # Before the limit, each cost 0.4-1.7 s.
    assert per_stanza < 0.05
    count(PROTO, len(errors))


# -- resources -------------------------------------------------------------------------------


def test_slowloris_before_auth(env: Env) -> None:
    """A byte a second and never a stanza: the negotiation deadline ends the stream."""
    clients = [XmppClient(env.ports[PROTO], source=ATTACKER, timeout=10.0) for _ in range(5)]
    for client in clients:
        client.send(b"<iq type='get' id='slow'><query xmlns='jabber:iq:register'>")
    start = time.monotonic()
    open_clients = list(clients)
    while open_clients and time.monotonic() - start < 12:
        for client in list(open_clients):
            try:
                client.send(b" ")
                client._fill(time.monotonic() + 0.01)
            except TimeoutError:
                pass
            except (Closed, OSError):
                open_clients.remove(client)
        time.sleep(1.0)
    took = time.monotonic() - start
    assert not open_clients, "a slowloris stream was still open"
    for client in clients:
        assert client.stream_error == "connection-timeout"
    assert took < 9
    count(PROTO, len(clients))


def test_never_reads(env: Env) -> None:
    """An occupant who never reads while line-chat writers fill the room: dropped once its
    unsent output passes the limit."""
    sloth = XmppClient(env.ports[PROTO], source=VICTIM, timeout=10.0)
    sloth.login("sloth", PASSWORD, "never")
    sloth.join_room("bigroom", "sloth")
    quit_line, took = flood_until_quit(
        env.ports["line"], "bigroom", "sloth", keepalive=lambda: sloth.send(b" ")
    )
    assert quit_line == "-!- sloth quit (Output backlog full)"
    env.notes.append(f"xmpp: the reader that never reads was dropped after {took:.1f} s")
    count(PROTO)


def test_connection_flood(env: Env) -> None:
    port = env.ports[PROTO]
    time.sleep(0.3)
    held = [XmppClient(port, source=ATTACKER) for _ in range(20)]
    refused = XmppClient(port, source=ATTACKER, open_stream=False)
    assert refused.until_closed(5) == "policy-violation"
    # Another address still gets a stream (open() waits for its features).
    XmppClient(port, source=VICTIM).close()
    for client in held:
        client.close()
    count(PROTO, 21)
    for i in range(300):
        client = XmppClient(port, source=ATTACKER, open_stream=bool(i % 2))
        client.close()
    count(PROTO, 300)
    assert wait_until(lambda: stream_opens(port), 5)


def stream_opens(port: int) -> bool:
    try:
        XmppClient(port, source=ATTACKER, timeout=1).close()
        return True
    except (Closed, TimeoutError, OSError):
        return False


def test_registration_flood(env: Env) -> None:
    """Three new accounts from one address, then resource-constraint."""
    port = env.ports[PROTO]
    results = []
    for i in range(6):
        client = XmppClient(port, source=REGISTRAR)
        answer = client.register(f"newacct{i}", PASSWORD)
        results.append(answer.get("type"))
        if answer.get("type") == "error":
            error = answer.find("{jabber:client}error")
            assert error is not None and error.get("type") == "wait"
            assert (
                error.find("{urn:ietf:params:xml:ns:xmpp-stanzas}resource-constraint") is not None
            )
        client.close()
    assert results == ["result"] * 3 + ["error"] * 3
    count(PROTO, 6)


def sasl_failure(port: int, password: str, source: str) -> str:
    """``success``, or the condition of the SASL failure."""
    client = XmppClient(port, source=source)
    result = client.auth_plain("guessme", password)
    client.close()
    if local(result) == "success":
        return "success"
    return local(next(iter(result)))


def test_password_guessing(env: Env) -> None:
    """Five wrong passwords lock the account for every address but one that logged in to
    it before: its owner's."""
    port = env.ports[PROTO]
    assert sasl_failure(port, PASSWORD, GUESSER2) == "success"
    assert [sasl_failure(port, f"wrong{i}", GUESSER) for i in range(5)] == ["not-authorized"] * 5
    assert sasl_failure(port, PASSWORD, GUESSER) == "temporary-auth-failure"
    assert sasl_failure(port, PASSWORD, GUESSER3) == "temporary-auth-failure"
    assert sasl_failure(port, PASSWORD, GUESSER2) == "success"
    count(PROTO, 9)


def groupchat(texts: list[str]) -> bytes:
    return "".join(
        f"<message to='fuzzroom@{MUC_DOMAIN}' type='groupchat'><body>{text}</body></message>"
        for text in texts
    ).encode()


def room_texts(watcher: XmppWatcher, nick: str, mark: int) -> list[str]:
    source = f"fuzzroom@{MUC_DOMAIN}/{nick}"
    return [
        el.findtext("{jabber:client}body") or ""
        for el in watcher.seen[mark:]
        if local(el) == "message" and el.get("from") == source
    ]


def test_message_flood(env: Env, watcher: XmppWatcher) -> None:
    """Within the budget stanzas pass at once; past it they wait their turn, none lost; a
    queue past flood_max_queue ends the stream with policy-violation."""
    port = env.ports[PROTO]
    client = XmppClient(port, source=ATTACKER, timeout=10.0)
    client.login("hasty", PASSWORD, "flood")
    client.join_room("fuzzroom", "hasty")
    time.sleep(1.0)  # login and join cost tokens; let the bucket fill again
    mark = len(watcher.seen)
    start = time.monotonic()
    client.send(groupchat([f"burst {i}" for i in range(19)]))
    client.ping()
    assert time.monotonic() - start < 0.5, "a burst inside the budget was delayed"
    assert wait_until(lambda: len(room_texts(watcher, "hasty", mark)) >= 19, 5)
    time.sleep(1.0)
    mark = len(watcher.seen)
    start = time.monotonic()
    client.send(groupchat([f"many {i}" for i in range(60)]))
    client.ping()
    took = time.monotonic() - start
    # 20 at once, then 25 a second: the ping waits behind the last ones.
    assert took > 1.2, f"60 stanzas were not delayed ({took:.2f} s)"
    assert wait_until(lambda: len(room_texts(watcher, "hasty", mark)) >= 60, 5)
    assert room_texts(watcher, "hasty", mark) == [f"many {i}" for i in range(60)]
    flooder = XmppClient(port, source=ATTACKER, timeout=10.0)
    flooder.login("flooder", PASSWORD, "flooder")
    try:
        flooder.send(groupchat([f"flood {i}" for i in range(5000)]))
    except OSError:
        pass  # closed while still sending
    assert flooder.until_closed(10) == "policy-violation"
    count(PROTO, 3)
    watcher.check()


def test_tls_handshake_stall(env: Env) -> None:
    cases = assert_tls_stall_dropped(
        env.ports["xmpp_tls"], timeout=2.0, probe=(HEADER, b"<stream:features")
    )
    count(PROTO, cases)


def test_tls_peers_that_leave_the_end_to_the_server(env: Env) -> None:
    """Over direct TLS: end the stream and never answer the close; trickle a stream header a
    byte at a time; trickle a TLS record.  The server lets go of each in time (negotiation
    deadline 3 s, then the close's bound)."""

    def login(peer: SilentTlsPeer, i: int) -> None:
        peer.send(HEADER)
        peer.read_until(b"</stream:features>")

    count(
        PROTO,
        assert_tls_peers_let_go(
            env.ports["xmpp_tls"],
            login=login,
            end=b"</stream:stream>",
            first=HEADER,
            bound=15.0,
            pid=env.pid,
        ),
    )


def test_starttls_handshake_stall(env: Env) -> None:
    """STARTTLS, then half a ClientHello: the stream is dropped, not kept for ever."""
    client = XmppClient(env.ports[PROTO], source=ATTACKER, timeout=10.0)
    client.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    client.expect(lambda el: local(el) == "proceed")
    client.send(HALF_CLIENT_HELLO)
    start = time.monotonic()
    client.sock.settimeout(12)
    try:
        while client.sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    assert time.monotonic() - start < 11
    count(PROTO)
