"""Unit tests of the limits the battery needed: per-address exemptions, the registration
throttle, IRC replies cut to 512 bytes, the XMPP stream's element cap and bad names, and
the TLS handshake deadline.  (The battery proves them over sockets; these pin them down.)"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from chatserver.config import ConfigError, load_config
from chatserver.core.errors import AccountError, LimitExceeded
from chatserver.core.limits import AddressSet
from chatserver.core.settings import CoreSettings
from chatserver.server.tls import ReloadableTls, load_options, make_self_signed
from protocols.irc.message import IrcMessage, serialize, serialize_fitted
from protocols.xmpp.stream import Limits, StreamError, StreamOpened, StreamParser
from tests.support.memstore import make_service

HEADER = (
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
    b" to='localhost' version='1.0'>"
)


def test_address_set() -> None:
    exempt = AddressSet(["127.0.0.0/8", "::1", "10.1.2.3"])
    assert "127.0.0.2" in exempt
    assert "::ffff:127.0.0.1" in exempt
    assert "::1" in exempt
    assert "10.1.2.3" in exempt
    assert "10.1.2.4" not in exempt
    assert "2001:db8::1" not in exempt
    assert "localhost" not in exempt
    assert "127.0.0.1" not in AddressSet([])


class _Client:
    """The least a core connection needs: an address and a protocol."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.protocol = "line"

    def deliver(self, event: Any) -> None:
        pass

    def deliver_batch(self, batch: Any) -> None:
        pass


def test_connection_cap_spares_only_the_exempt_addresses() -> None:
    settings = CoreSettings(max_connections_per_address=2, address_limit_exempt=("10.0.0.0/8",))
    service = make_service(settings)
    for _ in range(5):
        service.connect(_Client("10.9.9.9"))
    service.connect(_Client("127.0.0.1"))
    service.connect(_Client("127.0.0.1"))
    with pytest.raises(LimitExceeded):
        service.connect(_Client("127.0.0.1"))


def test_registration_is_throttled_per_address() -> None:
    settings = CoreSettings(registration_burst=2, address_limit_exempt=())
    service = make_service(settings)
    results = []
    for i in range(3):
        conn = service.connect(_Client("192.0.2.1"))
        service.claim_nick(conn, f"user{i}")
        d = service.register(conn, "password1")
        d.addErrback(lambda f: f.value)
        results.append(d.result)
    assert [getattr(r, "name", None) for r in results[:2]] == ["user0", "user1"]
    assert isinstance(results[2], AccountError) and results[2].code == AccountError.THROTTLED
    # Another address is not concerned; a weak password uses up no try.
    conn = service.connect(_Client("192.0.2.2"))
    service.claim_nick(conn, "other")
    weak = service.register(conn, "x")
    weak.addErrback(lambda f: f.value)
    assert weak.result.code == AccountError.WEAK_PASSWORD
    assert service.take_registration("192.0.2.2")
    assert service.take_registration("192.0.2.2")
    assert not service.take_registration("192.0.2.2")
    service.clock.advance(settings.registration_period)
    assert service.take_registration("192.0.2.2")


def test_config_checks_the_new_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[chat]\naddress_limit_exempt = ["192.0.2.0/24"]\nregistration_burst = 1\n'
        "[tls]\nhandshake_timeout = 5\n"
        "[xmpp]\nnegotiation_timeout = 7\nflood_burst = 3\nmax_stanza_elements = 100\n"
    )
    config = load_config(path)
    assert config.chat.address_limit_exempt == ("192.0.2.0/24",)
    assert config.tls.handshake_timeout == 5
    assert (config.xmpp.negotiation_timeout, config.xmpp.flood_burst) == (7, 3)
    path.write_text('[chat]\naddress_limit_exempt = ["nonsense"]\n')
    with pytest.raises(ConfigError, match="address_limit_exempt"):
        load_config(path)


def test_irc_replies_fit_512_bytes() -> None:
    long = IrcMessage("421", ("nick", "X" * 600, "Unknown command"), "irc.example.org")
    assert len(serialize(long)) > 512
    fitted = serialize_fitted(long, force_trailing=True)
    assert len(fitted) == 512
    assert fitted.startswith(b":irc.example.org 421 nick XXX") and fitted.endswith(
        b" :Unknown command\r\n"
    )
    # Cut on a character boundary; tags do not count.
    wide = IrcMessage("403", ("nick", "#" + "é" * 400, "No such channel"), "s", {"a": "b" * 50})
    data = serialize_fitted(wide, force_trailing=True)
    data.decode("utf-8")
    assert len(data.partition(b" ")[2]) <= 512
    short = IrcMessage("001", ("nick", "Welcome"), "s")
    assert serialize_fitted(short) == serialize(short)
    # Echoed middle parameters that came as trailing ones (CAP :a b) are made writable.
    odd = IrcMessage("410", ("nick", "message-tags batch", "Invalid CAP command"), "s")
    assert serialize_fitted(odd, force_trailing=True) == (
        b":s 410 nick message-tags :Invalid CAP command\r\n"
    )
    for echoed, written in (("", "*"), (":x y", "x"), (" ", "*"), ("::", "*")):
        odd = IrcMessage("421", ("nick", echoed, "Unknown command"), "s")
        assert serialize_fitted(odd, force_trailing=True) == (
            f":s 421 nick {written} :Unknown command\r\n".encode()
        )


def test_xmpp_header_with_a_bad_name_is_not_well_formed() -> None:
    parser = StreamParser()
    events = []
    with pytest.raises(StreamError) as err:
        for event in parser.feed(
            b"<stream:a:stream xmlns='jabber:client'"
            b" xmlns:stream='http://etherx.jabber.org/streams'>"
        ):
            events.append(event)
    assert err.value.condition == "not-well-formed"
    assert not [e for e in events if isinstance(e, StreamOpened)]


def test_xmpp_stanza_element_cap() -> None:
    parser = StreamParser(Limits(elements=100))
    list(parser.feed(HEADER))
    assert len(list(parser.feed(b"<message>" + b"<b/>" * 99 + b"</message>"))) == 1
    with pytest.raises(StreamError) as err:
        list(parser.feed(b"<message>" + b"<b/>" * 100 + b"</message>"))
    assert err.value.condition == "policy-violation"


class _TcpTransport:
    connected = True


class _TlsProtocol:
    def __init__(self) -> None:
        self.transport = _TcpTransport()
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True


def test_tls_handshake_deadline(tmp_path: Path) -> None:
    cert, key = make_self_signed(["localhost"])
    (tmp_path / "c").write_bytes(cert)
    (tmp_path / "k").write_bytes(key)
    options = load_options(tmp_path / "c", tmp_path / "k")
    clock = Clock()
    tls = ReloadableTls(lambda: options, handshake_timeout=lambda: 5.0, clock=clock)
    stalled, finished = _TlsProtocol(), _TlsProtocol()
    tls.serverConnectionForTLS(stalled)
    tls.serverConnectionForTLS(finished)
    finished.transport.connected = False  # gone already: nothing to abort
    clock.advance(4.9)
    assert not stalled.aborted
    clock.advance(0.2)
    assert stalled.aborted and not finished.aborted


def test_core_settings_defaults_keep_loopback_exempt() -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(CoreSettings)}
    assert defaults["address_limit_exempt"] == ("127.0.0.0/8", "::1")


def test_password_checks_compare_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Timing cannot be measured reliably over sockets; what makes it constant is that the
    derived key is compared with hmac.compare_digest, whatever the password."""
    from chatserver.core import accounts

    calls: list[tuple[bytes, bytes]] = []
    real = accounts.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(accounts.hmac, "compare_digest", spy)
    cred = accounts.make_credentials("right-password", 4096)[0]
    assert accounts.check_password(cred, "right-password")
    assert not accounts.check_password(cred, "wrong-password")
    assert len(calls) == 2
