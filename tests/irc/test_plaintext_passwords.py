"""Passwords over plaintext: refused from other machines unless ``[irc] plaintext_passwords``.

The StringTransport tests give connections the addresses the real server would see: a
TEST-NET address (another machine), ``127.0.0.1`` (loopback) and a TLS transport from another
machine.  The real server only listens on loopback in tests, so it shows the other half:
loopback keeps every password command, whatever ``plaintext_passwords`` says.
"""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import pytest
from scramp import ScramClient

from chatserver.config import IrcConfig, OperatorConfig
from chatserver.core.settings import CoreSettings
from chatserver.passwords import hash_password
from tests.irc.conftest import Client, IrcWorld, commands, find, last_param, one
from tests.ops.helpers import OPER_PASSWORD, OpsServer, operators_toml
from tests.support.server import LineClient

PASSWORD = "correct-horse"
REMOTE = "198.51.100.7"
NS = "NickServ!NickServ@irc.test"
REFUSED = (
    "passwords are not accepted over plaintext from another machine: connect with TLS to port 6697."
)
OPERATORS = (OperatorConfig("root", hash_password("hunter22", n=16, r=1, p=1)),)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def make_world(**config: object) -> IrcWorld:
    """A world with the real default: no passwords over plaintext from other machines."""
    world = IrcWorld(
        config=IrcConfig(flood_burst=0, **config),  # type: ignore[arg-type]
        operators=OPERATORS,
        settings=CoreSettings(server_name="irc.test", scram_iterations=4096, login_failure_burst=3),
    )
    assert world.service.accounts.create("alice", PASSWORD).called
    return world


@pytest.fixture
def world() -> IrcWorld:
    return make_world()


def sasl_value(client: Client) -> str:
    """The value of ``sasl`` in the client's CAP LS 302 reply."""
    out = client.ask("CAP LS 302")
    tokens = " ".join(last_param(m) for m in find(out, "CAP")).split()
    return next(t for t in tokens if t.startswith("sasl=")).split("=", 1)[1]


def ns_notices(client: Client, line: str) -> list[str]:
    return [m.params[-1] for m in client.ask(line) if m.command == "NOTICE" and m.source == NS]


# -- SASL --------------------------------------------------------------------------------------


def test_cap_ls_offers_plain_only_where_passwords_may_be_sent(world: IrcWorld) -> None:
    assert sasl_value(world.connect(REMOTE)) == "SCRAM-SHA-256"
    assert sasl_value(world.connect("127.0.0.1")) == "PLAIN,SCRAM-SHA-256"
    assert sasl_value(world.connect(REMOTE, tls=True)) == "PLAIN,SCRAM-SHA-256"
    allowed = make_world(plaintext_passwords=True)
    assert sasl_value(allowed.connect(REMOTE)) == "PLAIN,SCRAM-SHA-256"


def test_sasl_plain_refused_before_the_password_is_sent(world: IrcWorld) -> None:
    c = world.connect(REMOTE)
    c.send("CAP LS 302", "CAP REQ :sasl", "NICK alice", "USER a 0 * :A")
    out = c.ask("AUTHENTICATE PLAIN")
    # No "AUTHENTICATE +": the client is never asked for the password.
    assert commands(out) == ["908", "904"]
    assert one(out, "908").params[1] == "SCRAM-SHA-256"
    assert last_param(one(out, "904")) == (
        "SASL authentication failed: PLAIN is not accepted over plaintext from another"
        " machine; connect with TLS (port 6697) or use SCRAM-SHA-256"
    )
    # A client that sends the payload anyway starts nothing with it.
    out = c.ask("AUTHENTICATE " + b64(b"\0alice\0" + PASSWORD.encode()))
    assert "903" not in commands(out)
    assert c.conn.core.account is None
    assert one(c.ask("AUTHENTICATE EXTERNAL"), "908").params[1] == "SCRAM-SHA-256"


def test_sasl_plain_without_a_tls_port_says_scram(world: IrcWorld) -> None:
    no_tls = make_world(tls_port=0)
    c = no_tls.connect(REMOTE)
    c.send("CAP REQ :sasl")
    out = c.ask("AUTHENTICATE PLAIN")
    assert last_param(one(out, "904")).endswith("from another machine; use SCRAM-SHA-256")


def test_scram_still_works_over_plaintext(world: IrcWorld) -> None:
    c = world.connect(REMOTE)
    c.send("CAP LS 302", "CAP REQ :sasl", "NICK alice", "USER a 0 * :A")
    assert one(c.ask("AUTHENTICATE SCRAM-SHA-256"), "AUTHENTICATE").params == ("+",)
    scram = ScramClient(["SCRAM-SHA-256"], "alice", PASSWORD)
    out = c.ask("AUTHENTICATE " + b64(scram.get_client_first().encode()))
    scram.set_server_first(base64.b64decode(one(out, "AUTHENTICATE").params[0]).decode())
    out = c.ask("AUTHENTICATE " + b64(scram.get_client_final().encode()))
    scram.set_server_final(base64.b64decode(one(out, "AUTHENTICATE").params[0]).decode())
    out = c.ask("AUTHENTICATE +")
    assert one(out, "903")
    c.send("CAP END")
    assert one(c.take(), "001")
    assert c.user.account == "alice"


@pytest.mark.parametrize(
    ("address", "tls", "allowed"),
    [("127.0.0.1", False, False), (REMOTE, True, False), (REMOTE, False, True)],
    ids=["loopback", "tls", "plaintext_passwords"],
)
def test_sasl_plain_where_passwords_may_be_sent(address: str, tls: bool, allowed: bool) -> None:
    world = make_world(plaintext_passwords=allowed)
    c = world.connect(address, tls=tls)
    c.send("CAP REQ :sasl", "NICK alice", "USER a 0 * :A")
    assert one(c.ask("AUTHENTICATE PLAIN"), "AUTHENTICATE").params == ("+",)
    out = c.ask("AUTHENTICATE " + b64(b"\0alice\0" + PASSWORD.encode()))
    assert one(out, "903")


def test_a_reload_that_allows_plaintext_passwords_applies_to_open_connections(
    world: IrcWorld,
) -> None:
    c = world.connect(REMOTE)
    assert sasl_value(c) == "SCRAM-SHA-256"
    world.factory.config = dataclasses.replace(world.factory.config, plaintext_passwords=True)
    assert sasl_value(c) == "PLAIN,SCRAM-SHA-256"


# -- NickServ ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "name"),
    [
        (f"PRIVMSG NickServ :IDENTIFY {PASSWORD}", "IDENTIFY"),
        (f"PRIVMSG NickServ :IDENTIFY alice {PASSWORD}", "IDENTIFY"),
        ("PRIVMSG NickServ :REGISTER secret123", "REGISTER"),
        ("NS REGISTER secret123 bob@example.org", "REGISTER"),
        (f"PRIVMSG NickServ :DROP {PASSWORD}", "DROP"),
        (f"PRIVMSG NickServ :SET PASSWORD {PASSWORD} another1", "SET"),
        (f"PRIVMSG NickServ :GHOST alice {PASSWORD}", "GHOST"),
        (f"NICKSERV REGAIN alice {PASSWORD}", "REGAIN"),
    ],
)
def test_nickserv_refuses_passwords_over_plaintext(world: IrcWorld, line: str, name: str) -> None:
    c = world.client("bob", address=REMOTE)
    said = ns_notices(c, line)
    assert said[0] == f"{name} refused: {REFUSED}"
    assert c.user.account is None
    assert "bob" not in world.store.accounts


def test_nickserv_identify_refusal_points_to_scram(world: IrcWorld) -> None:
    c = world.client("bob", address=REMOTE)
    assert ns_notices(c, f"PRIVMSG NickServ :IDENTIFY alice {PASSWORD}") == [
        f"IDENTIFY refused: {REFUSED}",
        "SASL SCRAM-SHA-256 logs you in without sending your password.",
    ]


def test_refused_passwords_are_never_checked(world: IrcWorld) -> None:
    # Checked passwords would count as failed logins and throttle the address (a burst of 3
    # per account, 12 per address); refused ones must not even get that far.
    c = world.client("bob", address=REMOTE)
    for _ in range(20):
        c.send("PRIVMSG NickServ :IDENTIFY alice wrong-password", "OPER root wrong")
    assert not world.service.accounts.throttled("alice", REMOTE)
    secure = world.client("carol", address=REMOTE, tls=True)
    assert ns_notices(secure, f"PRIVMSG NickServ :IDENTIFY alice {PASSWORD}") == [
        "You are now logged in as alice."
    ]


def test_nickserv_without_passwords_still_works_over_plaintext(world: IrcWorld) -> None:
    c = world.client("bob", address=REMOTE)
    assert ns_notices(c, "PRIVMSG NickServ :INFO alice")[0] == "Information on alice:"
    # GHOST without a password carries none: it is answered, not refused.
    assert ns_notices(c, "PRIVMSG NickServ :GHOST alice") == [
        "GHOST failed: log in to the account alice first (or give its password)"
    ]


def test_nickserv_over_tls_and_loopback(world: IrcWorld) -> None:
    for address, tls in (("127.0.0.1", False), (REMOTE, True)):
        c = world.client("bob", address=address, tls=tls)
        assert ns_notices(c, f"NS IDENTIFY alice {PASSWORD}") == ["You are now logged in as alice."]
        c.send("QUIT")


# -- REGISTER and OPER -------------------------------------------------------------------------


def test_register_command_refused_over_plaintext(world: IrcWorld) -> None:
    c = world.client("bob", address=REMOTE)
    fail = one(c.ask("REGISTER * * secret123"), "FAIL")
    assert fail.params == (
        "REGISTER",
        "UNACCEPTABLE_PASSWORD",
        "*",
        "Passwords are not accepted over plaintext from another machine:"
        " connect with TLS to port 6697",
    )
    assert "bob" not in world.store.accounts
    local = world.client("carol", address="127.0.0.1")
    assert one(local.ask("REGISTER * * secret123"), "REGISTER").params[:2] == ("SUCCESS", "carol")


def test_oper_refused_over_plaintext(world: IrcWorld) -> None:
    c = world.client("bob", address=REMOTE)
    out = c.ask("OPER root hunter22")
    assert commands(out) == ["491"]
    assert last_param(out[0]) == (
        "Operator passwords are not accepted over plaintext from another machine:"
        " connect with TLS to port 6697"
    )
    assert not c.conn.is_oper
    secure = world.client("carol", address=REMOTE, tls=True)
    assert "381" in commands(secure.ask("OPER root hunter22"))


def test_pass_is_still_ignored(world: IrcWorld) -> None:
    c = world.connect(REMOTE)
    c.send("PASS whatever", "NICK bob", "USER b 0 * :B")
    out = c.take()
    assert one(out, "001")
    assert not [m for m in out if m.command in ("464", "FAIL", "ERROR")]


# -- the real server: loopback -----------------------------------------------------------------


def _read_until(client: LineClient, numerics: tuple[str, ...]) -> str:
    return client.expect(lambda line: any(f" {num} " in line for num in numerics))


@pytest.mark.parametrize("allowed", [False, True], ids=["default", "plaintext_passwords"])
def test_loopback_keeps_every_password_command(tmp_path: Path, allowed: bool) -> None:
    server = OpsServer(
        tmp_path,
        protocols=("irc",),
        overrides={"irc": {"plaintext_passwords": allowed}},
        extra=operators_toml(),
    ).start()
    try:
        server.create_account("alice", PASSWORD)
        port = server.ports["irc"]

        sasl = LineClient(port)
        sasl.send("CAP LS 302")
        assert "sasl=PLAIN,SCRAM-SHA-256" in sasl.cap_ls()
        for line in ("CAP REQ :sasl", "NICK alice", "USER a 0 * :A", "AUTHENTICATE PLAIN"):
            sasl.send(line)
        sasl.expect("AUTHENTICATE +")
        sasl.send("AUTHENTICATE " + b64(b"\0alice\0" + PASSWORD.encode()))
        assert " 903 " in _read_until(sasl, ("903", "904"))
        sasl.send("CAP END")
        sasl.expect(" 001 alice ")

        other = LineClient(port)
        other.send("NICK bob")
        other.send("USER b 0 * :B")
        other.expect(" 001 bob ")
        other.send(f"PRIVMSG NickServ :IDENTIFY alice {PASSWORD}")
        assert other.expect(":NickServ!").endswith(":You are now logged in as alice.")
        other.send(f"OPER admin {OPER_PASSWORD}")
        assert " 381 " in _read_until(other, ("381", "464", "491"))

        new = LineClient(port)
        new.send("NICK carol")
        new.send("USER c 0 * :C")
        new.expect(" 001 carol ")
        new.send("REGISTER * * secret123")
        assert new.expect("REGISTER ").endswith("REGISTER SUCCESS carol :Account created")
    finally:
        server.stop()
    assert "Traceback" not in server.log()
