"""SASL over AUTHENTICATE: PLAIN and SCRAM-SHA-256 against the shared accounts."""

from __future__ import annotations

import base64

import pytest
from scramp import ScramClient

from tests.irc.conftest import Client, IrcWorld, commands, find, last_param, one

PASSWORD = "correct horse"


@pytest.fixture
def world(irc: IrcWorld) -> IrcWorld:
    d = irc.service.accounts.create("Alice", PASSWORD)
    assert d.called
    return irc


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def start(world: IrcWorld, mechanism: str = "PLAIN") -> Client:
    c = world.connect()
    c.send("CAP LS 302", "CAP REQ :sasl", "NICK alice", "USER a 0 * :A")
    c.take()
    out = c.ask(f"AUTHENTICATE {mechanism}")
    if mechanism in ("PLAIN", "SCRAM-SHA-256"):
        assert one(out, "AUTHENTICATE").params == ("+",)
    return c


def test_plain_success_then_registration(world: IrcWorld) -> None:
    c = start(world)
    out = c.ask("AUTHENTICATE " + b64(b"\0Alice\0" + PASSWORD.encode()))
    logged = one(out, "900")
    assert logged.params[2] == "Alice"
    assert one(out, "903")
    assert not c.conn.registered
    c.send("CAP END")
    out = c.take()
    assert one(out, "001")
    assert c.user.account == "Alice"


def test_plain_wrong_password_and_retry(world: IrcWorld) -> None:
    c = start(world)
    out = c.ask("AUTHENTICATE " + b64(b"Alice\0Alice\0wrong"))
    assert commands(out) == ["904"]
    c.send("AUTHENTICATE PLAIN")
    out = c.ask("AUTHENTICATE " + b64(b"\0alice\0" + PASSWORD.encode()))
    assert one(out, "903")


def test_plain_refuses_other_authzid_and_garbage(world: IrcWorld) -> None:
    c = start(world)
    assert commands(c.ask("AUTHENTICATE " + b64(b"bob\0Alice\0" + PASSWORD.encode()))) == ["904"]
    c.send("AUTHENTICATE PLAIN")
    assert commands(c.ask("AUTHENTICATE !!notbase64")) == ["904"]
    c.send("AUTHENTICATE PLAIN")
    assert commands(c.ask("AUTHENTICATE " + b64(b"no-nuls"))) == ["904"]


def test_unknown_mechanism_lists_mechanisms(world: IrcWorld) -> None:
    c = start(world, "EXTERNAL")
    c.take()
    c.send("AUTHENTICATE EXTERNAL")
    out = c.take()
    assert one(out, "908").params[1] == "PLAIN,SCRAM-SHA-256"
    assert one(out, "904")


def test_abort_and_authenticate_again(world: IrcWorld) -> None:
    c = start(world)
    assert commands(c.ask("AUTHENTICATE *")) == ["906"]
    c.send("AUTHENTICATE PLAIN")
    c.send("AUTHENTICATE " + b64(b"\0Alice\0" + PASSWORD.encode()))
    c.take()
    # SASL 3.2: a client may authenticate again at any time.
    assert one(c.ask("AUTHENTICATE PLAIN"), "AUTHENTICATE").params == ("+",)


def test_needs_the_cap(world: IrcWorld) -> None:
    c = world.connect()
    assert commands(c.ask("AUTHENTICATE PLAIN")) == ["904"]


def test_chunked_payload(world: IrcWorld) -> None:
    # A payload whose base64 is exactly 400 bytes must be ended by "+".
    authzid = b""
    password_len = 300 - len(b"\0Alice\0")
    long_password = ("p" * password_len).encode()
    world.service.accounts.create("Bob", long_password.decode())
    c = world.connect()
    c.send("CAP REQ :sasl", "NICK bob", "USER b 0 * :B", "AUTHENTICATE PLAIN")
    c.take()
    text = b64(authzid + b"\0Bob\0" + long_password)
    assert len(text) == 400 * (len(text) // 400) or len(text) > 400
    chunks = [text[i : i + 400] for i in range(0, len(text), 400)]
    for chunk in chunks:
        c.send("AUTHENTICATE " + chunk)
    if len(chunks[-1]) == 400:
        assert c.take() == []
        c.send("AUTHENTICATE +")
    assert one(c.take(), "903")


def test_exactly_400_needs_plus(world: IrcWorld) -> None:
    # 300 raw bytes -> 400 base64 characters.
    password = "q" * (300 - len("\0Carol\0"))
    world.service.accounts.create("Carol", password)
    c = world.connect()
    c.send("CAP REQ :sasl", "AUTHENTICATE PLAIN")
    c.take()
    text = b64(b"\0Carol\0" + password.encode())
    assert len(text) == 400
    assert c.ask("AUTHENTICATE " + text) == []
    assert one(c.ask("AUTHENTICATE +"), "903")


def test_too_long(world: IrcWorld) -> None:
    c = start(world)
    assert commands(c.ask("AUTHENTICATE " + "A" * 401)) == ["905"]
    c.send("AUTHENTICATE PLAIN")
    # Chunks of the right size that add up to more than any mechanism needs: a failure
    # (904); 905 is for one line past 400 bytes.
    for _ in range(30):
        c.send("AUTHENTICATE " + "A" * 400)
    # (What follows the failure is taken for new exchanges with unknown mechanisms.)
    out = commands(c.take())
    assert out[:2] == ["AUTHENTICATE", "904"] and "905" not in out


def test_failures_are_throttled(world: IrcWorld) -> None:
    # Registered first, so that waiting out the throttle does not hit the registration timeout
    # (under another nick: the account's is kept for whoever logs in to it).
    c = world.client("ali", caps=("sasl",))
    for _ in range(6):
        c.send("AUTHENTICATE PLAIN", "AUTHENTICATE " + b64(b"\0Alice\0nope"))
    c.take()
    c.send("AUTHENTICATE PLAIN")
    # Even the right password is refused while throttled.
    out = c.ask("AUTHENTICATE " + b64(b"\0Alice\0" + PASSWORD.encode()))
    assert commands(out) == ["904"]
    world.clock.advance(100)  # a token back (one per 30 s), before any ping timeout
    c.send("AUTHENTICATE PLAIN")
    assert one(c.ask("AUTHENTICATE " + b64(b"\0Alice\0" + PASSWORD.encode())), "903")


def _scram(c: Client, user: str, password: str) -> list:
    client = ScramClient(["SCRAM-SHA-256"], user, password)
    out = c.ask("AUTHENTICATE " + b64(client.get_client_first().encode()))
    server_first = base64.b64decode(one(out, "AUTHENTICATE").params[0]).decode()
    client.set_server_first(server_first)
    out = c.ask("AUTHENTICATE " + b64(client.get_client_final().encode()))
    found = find(out, "AUTHENTICATE")
    if not found:
        return out
    client.set_server_final(base64.b64decode(found[0].params[0]).decode())  # verifies the server
    return c.ask("AUTHENTICATE +")


def test_scram_sha_256(world: IrcWorld) -> None:
    c = start(world, "SCRAM-SHA-256")
    out = _scram(c, "alice", PASSWORD)
    assert one(out, "900").params[2] == "Alice"
    assert one(out, "903")
    c.send("CAP END")
    assert one(c.take(), "001")
    assert c.user.account == "Alice"


def test_scram_wrong_password(world: IrcWorld) -> None:
    c = start(world, "SCRAM-SHA-256")
    out = _scram(c, "alice", "not it")
    assert commands(out) == ["904"]
    assert c.conn.core.account is None


def test_scram_unknown_user(world: IrcWorld) -> None:
    c = start(world, "SCRAM-SHA-256")
    client = ScramClient(["SCRAM-SHA-256"], "nobody", "x")
    out = c.ask("AUTHENTICATE " + b64(client.get_client_first().encode()))
    assert commands(out) == ["904"]


def test_sasl_after_registration_logs_in(world: IrcWorld) -> None:
    other = world.client("bob", caps=("account-notify",))
    other.send("JOIN #r")
    c = world.client("ali", caps=("sasl",))
    c.send("JOIN #r")
    other.take()
    c.send("AUTHENTICATE PLAIN")
    out = c.ask("AUTHENTICATE " + b64(b"\0Alice\0" + PASSWORD.encode()))
    assert len(find(out, "900")) == 1
    assert one(out, "903")
    assert one(other.take(), "ACCOUNT").params == ("Alice",)


def test_sasl_joins_the_account_already_online(world: IrcWorld) -> None:
    first = world.connect()
    first.send(
        "CAP REQ :sasl",
        "AUTHENTICATE PLAIN",
        "AUTHENTICATE " + b64(b"\0Alice\0" + PASSWORD.encode()),
    )
    first.send("NICK alice", "USER a 0 * :A", "CAP END", "JOIN #home")
    first.take()
    second = world.connect()
    second.send(
        "CAP REQ :sasl",
        "AUTHENTICATE PLAIN",
        "AUTHENTICATE " + b64(b"\0Alice\0" + PASSWORD.encode()),
    )
    second.send("NICK phone", "USER a 0 * :A", "CAP END")
    out = second.take()
    assert one(out, "001").params[0] == "alice"
    assert one(out, "JOIN").params == ("#home",)
    assert second.user is first.user
    assert last_param(one(out, "366")) == "End of /NAMES list"
