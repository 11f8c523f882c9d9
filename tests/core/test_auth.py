"""The shared SASL mechanisms (chatserver.auth.sasl) against the core's accounts, without a
protocol: what each message is answered with, the same for IRC and XMPP."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scramp import ScramClient
from twisted.internet.defer import Deferred, fail

from chatserver.auth import sasl
from chatserver.auth.sasl import Challenge, Failure, SaslServer, Success, scram_identities
from chatserver.core.settings import CoreSettings
from tests.core.fakes import FakeClient
from tests.support.memstore import make_service

PASSWORD = "secret-pass"


def result(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "Deferred has not fired"
    return out[0]


@pytest.fixture
def service() -> Any:
    svc = make_service(CoreSettings(login_failure_burst=3, login_failure_period=10))
    conn = svc.connect(FakeClient())
    svc.claim_nick(conn, "Alice")
    result(svc.register(conn, PASSWORD))
    return svc


def server(service: Any, mechanism: str, realm: str | None = None) -> SaslServer:
    return SaslServer(service, mechanism, address="198.51.100.1", protocol="test", realm=realm)


def plain(service: Any, authzid: str, authcid: str, password: str, realm: str | None = None):
    message = "\0".join((authzid, authcid, password)).encode()
    return result(server(service, "PLAIN", realm).step(message))


def test_plain(service: Any) -> None:
    assert plain(service, "", "alice", PASSWORD) == Success("Alice")
    assert plain(service, "", "alice", "wrong") == Failure(sasl.NOT_AUTHORIZED)
    assert plain(service, "", "nobody", PASSWORD) == Failure(sasl.NOT_AUTHORIZED)


@pytest.mark.parametrize("authzid", ["alice", "ALICE", "Alice"])
def test_an_authzid_naming_yourself(service: Any, authzid: str) -> None:
    assert plain(service, authzid, "alice", PASSWORD) == Success("Alice")


def test_an_authzid_with_the_realm_only_where_there_is_one(service: Any) -> None:
    assert plain(service, "ALICE@example.org", "alice", PASSWORD, "example.org") == Success("Alice")
    refused = plain(service, "alice@example.org", "alice", PASSWORD)
    assert isinstance(refused, Failure) and refused.reason == sasl.INVALID_AUTHZID


@pytest.mark.parametrize(
    "message", [b"", b"alice", b"\0alice", b"\0\0pw", b"\0alice\0", b"a\0b\0c\0d", b"\xff\0a\0b"]
)
def test_malformed_plain(service: Any, message: bytes) -> None:
    outcome = result(server(service, "PLAIN").step(message))
    assert isinstance(outcome, Failure) and outcome.reason == sasl.MALFORMED


@pytest.mark.parametrize("mechanism", sasl.SCRAM_MECHANISMS)
def test_scram(service: Any, mechanism: str) -> None:
    exchange = server(service, mechanism)
    client = ScramClient([mechanism], "alice", PASSWORD)
    challenge = result(exchange.step(client.get_client_first().encode()))
    assert isinstance(challenge, Challenge)
    client.set_server_first(challenge.data.decode())
    done = result(exchange.step(client.get_client_final().encode()))
    assert isinstance(done, Success) and done.account == "Alice" and done.data is not None
    client.set_server_final(done.data.decode())
    # Nothing more is expected.
    assert result(exchange.step(b"")).reason == sasl.MALFORMED


def test_scram_wrong_password_and_throttle(service: Any) -> None:
    for _ in range(3):
        exchange = server(service, "SCRAM-SHA-256")
        client = ScramClient(["SCRAM-SHA-256"], "alice", "wrong")
        challenge = result(exchange.step(client.get_client_first().encode()))
        client.set_server_first(challenge.data.decode())
        assert result(exchange.step(client.get_client_final().encode())) == Failure(
            sasl.NOT_AUTHORIZED
        )
    first = ScramClient(["SCRAM-SHA-256"], "alice", PASSWORD).get_client_first().encode()
    throttled = result(server(service, "SCRAM-SHA-256").step(first))
    assert isinstance(throttled, Failure) and throttled.reason == sasl.THROTTLED


def test_a_broken_store_is_a_temporary_failure(service: Any) -> None:
    service.accounts.store.get_account = lambda name: fail(RuntimeError("disk on fire"))
    assert plain(service, "", "alice", PASSWORD).reason == sasl.TEMPORARY
    first = ScramClient(["SCRAM-SHA-1"], "alice", PASSWORD).get_client_first().encode()
    assert result(server(service, "SCRAM-SHA-1").step(first)).reason == sasl.TEMPORARY


def test_scram_identities() -> None:
    assert scram_identities("n,,n=alice,r=abc") == ("", "alice")
    assert scram_identities("y,a=bob,n=al=2Cice=3D,r=abc") == ("bob", "al,ice=")
    for bad in ("", "n,,r=abc", "p=tls-unique,,n=alice,r=x", "n,b=x,n=alice,r=x", "n,,n=,r=x"):
        with pytest.raises(ValueError):
            scram_identities(bad)


@given(st.text(max_size=60))
def test_scram_identities_parses_or_refuses(text: str) -> None:
    try:
        authzid, name = scram_identities(text)
    except ValueError:
        return
    # Only a message without channel binding, with a username, gets this far.
    assert text[:2] in ("n,", "y,") and name
    assert authzid == "" or text.split(",")[1].startswith("a=")
