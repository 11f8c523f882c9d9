"""SASL: PLAIN and SCRAM against the shared accounts, and every failure condition."""

from __future__ import annotations

import base64

import pytest
from lxml import etree
from scramp import ScramClient

from chatserver.core.bans import ServerBan
from tests.xmpp.conftest import XmppTestClient

NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def auth(c: XmppTestClient, mechanism: str, data: str | None = None) -> etree._Element:
    body = "" if data is None else data
    c.send(f"<auth xmlns='{NS_SASL}' mechanism='{mechanism}'>{body}</auth>")
    return c.one()


def respond(c: XmppTestClient, data: str) -> etree._Element:
    c.send(f"<response xmlns='{NS_SASL}'>{data}</response>")
    return c.one()


def condition(el: etree._Element) -> str:
    assert etree.QName(el).localname == "failure", etree.tostring(el)
    return next(etree.QName(child).localname for child in el if child.tag != f"{{{NS_SASL}}}text")


def scram(c: XmppTestClient, mechanism: str, name: str, password: str) -> etree._Element:
    client = ScramClient([mechanism], name, password)
    challenge = auth(c, mechanism, b64(client.get_client_first()))
    if challenge.tag == f"{{{NS_SASL}}}failure":
        return challenge
    client.set_server_first(base64.b64decode(challenge.text).decode())
    result = respond(c, b64(client.get_client_final()))
    if result.tag == f"{{{NS_SASL}}}success":
        client.set_server_final(base64.b64decode(result.text).decode())  # verifies the server
    return result


@pytest.fixture
def opened(client, account):
    account("alice", "secret1")

    def make(address: str = "127.0.0.1") -> XmppTestClient:
        c = client(address)
        c.open()
        return c

    return make


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_scram_logs_in_and_proves_the_server(opened, mechanism: str) -> None:
    c = opened()
    result = scram(c, mechanism, "alice", "secret1")
    assert result.tag == f"{{{NS_SASL}}}success"
    assert c.conn.account == "alice"
    assert c.conn.core.account == "alice"
    c.open()
    assert c.bind("x") == "alice@localhost/x"


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_scram_wrong_password_is_not_authorized(opened, mechanism: str) -> None:
    c = opened()
    assert condition(scram(c, mechanism, "alice", "wrong-one")) == "not-authorized"
    assert c.conn.account is None and not c.closed
    # The stream stays usable: a second try with the right password works.
    assert scram(c, mechanism, "alice", "secret1").tag == f"{{{NS_SASL}}}success"


def test_scram_unknown_user_is_not_authorized(opened) -> None:
    c = opened()
    client = ScramClient(["SCRAM-SHA-256"], "nobody", "x")
    assert condition(auth(c, "SCRAM-SHA-256", b64(client.get_client_first()))) == "not-authorized"


def test_scram_garbage_is_malformed(opened) -> None:
    c = opened()
    assert condition(auth(c, "SCRAM-SHA-256", b64("hello"))) == "malformed-request"


def test_scram_without_initial_response_gets_an_empty_challenge(opened) -> None:
    c = opened()
    challenge = auth(c, "SCRAM-SHA-256")
    assert challenge.tag == f"{{{NS_SASL}}}challenge"
    assert (challenge.text or "") in ("", "=")
    client = ScramClient(["SCRAM-SHA-256"], "alice", "secret1")
    server_first = respond(c, b64(client.get_client_first()))
    client.set_server_first(base64.b64decode(server_first.text).decode())
    assert respond(c, b64(client.get_client_final())).tag == f"{{{NS_SASL}}}success"


def test_plain_logs_in(opened) -> None:
    c = opened()
    assert auth(c, "PLAIN", b64("\x00alice\x00secret1")).tag == f"{{{NS_SASL}}}success"
    assert c.conn.account == "alice"


def test_plain_account_name_is_case_insensitive(opened) -> None:
    c = opened()
    assert auth(c, "PLAIN", b64("\x00ALICE\x00secret1")).tag == f"{{{NS_SASL}}}success"
    assert c.conn.account == "alice"


def test_plain_with_matching_authzid(opened) -> None:
    c = opened()
    result = auth(c, "PLAIN", b64("alice@localhost\x00alice\x00secret1"))
    assert result.tag == f"{{{NS_SASL}}}success"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b64("\x00alice\x00nope"), "not-authorized"),
        (b64("\x00bob\x00secret1"), "not-authorized"),
        (b64("bob@localhost\x00alice\x00secret1"), "invalid-authzid"),
        (b64("alice-secret1"), "malformed-request"),
        (b64("\x00alice\x00"), "malformed-request"),
        (b64(b"\x00al\xffice\x00secret1"), "malformed-request"),
        ("not base64!!", "incorrect-encoding"),
    ],
)
def test_plain_failures(opened, data: str, expected: str) -> None:
    c = opened()
    assert condition(auth(c, "PLAIN", data)) == expected
    assert c.conn.account is None


def test_unknown_mechanism_is_invalid(opened) -> None:
    c = opened()
    assert condition(auth(c, "DIGEST-MD5", b64("x"))) == "invalid-mechanism"


def test_plain_is_not_offered_or_accepted_in_clear(client, account, service) -> None:
    from protocols.xmpp.factory import XmppFactory
    from tests.xmpp.conftest import make_xmpp_config

    account("alice")
    factory = XmppFactory(service, make_xmpp_config(require_tls=False), clock=service.clock)
    c = XmppTestClient(factory, "198.51.100.7")
    c.open()
    offered = [m.text for m in c.features.iter(f"{{{NS_SASL}}}mechanism")]
    assert offered == ["SCRAM-SHA-256", "SCRAM-SHA-1"]
    assert condition(auth(c, "PLAIN", b64("\x00alice\x00secret1"))) == "invalid-mechanism"
    assert scram(c, "SCRAM-SHA-256", "alice", "secret1").tag == f"{{{NS_SASL}}}success"


def test_abort(opened) -> None:
    c = opened()
    auth(c, "SCRAM-SHA-256")
    c.send(f"<abort xmlns='{NS_SASL}'/>")
    assert condition(c.one()) == "aborted"


def test_response_without_exchange_is_malformed(opened) -> None:
    c = opened()
    assert condition(respond(c, b64("x"))) == "malformed-request"


def test_failures_are_throttled_through_the_core(opened, service) -> None:
    c = opened()
    burst = service.settings.login_failure_burst
    for _ in range(burst):
        assert condition(auth(c, "PLAIN", b64("\x00alice\x00bad"))) == "not-authorized"
    # Now even the right password waits: temporary-auth-failure, as for IRC and line chat.
    result = auth(c, "PLAIN", b64("\x00alice\x00secret1"))
    assert condition(result) == "temporary-auth-failure"
    other = opened("127.0.0.2")
    assert condition(scram(other, "SCRAM-SHA-256", "alice", "secret1")) == "temporary-auth-failure"
    service.clock.advance(service.settings.login_failure_period * (burst + 1))
    # A new stream: that long without logging in has closed the first one.
    assert auth(opened(), "PLAIN", b64("\x00alice\x00secret1")).tag == f"{{{NS_SASL}}}success"


def test_sasl_after_authentication_is_unsupported(opened) -> None:
    c = opened()
    auth(c, "PLAIN", b64("\x00alice\x00secret1"))
    c.open()
    c.send(
        f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{b64(chr(0) + 'alice' + chr(0) + 'secret1')}</auth>"
    )
    assert c.stream_error == "unsupported-stanza-type"


PLAIN = ("", "alice", "secret1")


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_a_banned_account_gets_a_stream_error_and_no_success(
    opened, service, mechanism: str
) -> None:
    service.set_config_bans([ServerBan("$a:alice", "abuse", "config")])
    c = opened()
    # The core's record of the connection (a closed connection lets go of it).
    core = c.conn.core
    assert core is not None
    if mechanism == "PLAIN":
        c.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{b64(chr(0).join(PLAIN))}</auth>")
    else:
        client = ScramClient([mechanism], "alice", "secret1")
        challenge = auth(c, mechanism, b64(client.get_client_first()))
        client.set_server_first(base64.b64decode(challenge.text).decode())
        c.send(f"<response xmlns='{NS_SASL}'>{b64(client.get_client_final())}</response>")
    assert c.received() == []  # no <success/>: the stream error is all there is
    assert c.stream_error == "policy-violation"
    assert c.stream_error_text == "You are banned from this server: abuse"
    assert c.closed
    assert c.conn.account is None and core.account is None
    assert service.find_user("alice") is None
    # With the ban lifted, the account logs in again.
    service.set_config_bans([])
    assert auth(opened(), "PLAIN", b64("\x00alice\x00secret1")).tag == f"{{{NS_SASL}}}success"
