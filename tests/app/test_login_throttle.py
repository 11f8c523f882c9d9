"""The login throttle through the real server: attempts are counted when they start, per
address and per account, and the per-account budget does not lock the owner out.

Each connection comes from its own loopback address (all of 127.0.0.0/8 is loopback on
Linux), as the guesses of a botnet would.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import pytest
from scramp import ScramClient

from tests.hostile.clients import IrcUser, LineUser, XmppClient, close_all, irc_command, local
from tests.support.server import ServerProcess

ACCOUNT = "victim"
PASSWORD = "the-right-password"
BURST = 5  # [chat] login_failure_burst
OWNER = "127.9.0.1"  # where the owner logged in before the attack
ATTACKERS = 60  # per protocol, each from an address of its own


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("throttle"),
        protocols=("line", "irc", "xmpp"),
        overrides={"chat": {"login_failure_burst": BURST, "login_failure_period": 600.0}},
    ).start()
    proc.create_account(ACCOUNT, PASSWORD)
    yield proc
    close_all()
    proc.stop()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# -- one login attempt per protocol, as its clients make it ----------------------------------


def line_prepare(server: ServerProcess, source: str, nick: str) -> LineUser:
    return LineUser(server.ports["line"], nick, source=source)


def line_send(c: LineUser, password: str) -> None:
    c.send_line(f"/identify {ACCOUNT} {password}")


def line_answer(c: LineUser) -> str:
    line = c.expect(lambda line: line.startswith("!!!") or "logged in as" in line)
    if "logged in" in line:
        return "ok"
    return "throttled" if "too many failed" in line else "wrong"


def irc_prepare(server: ServerProcess, source: str, nick: str) -> IrcUser:
    c = IrcUser(server.ports["irc"], nick, source=source, register=False)
    c.send_line("CAP REQ :sasl")
    c.expect(lambda line: " ACK " in line)
    c.send_line("AUTHENTICATE PLAIN")
    c.expect("AUTHENTICATE +")
    return c


def irc_send(c: IrcUser, password: str) -> None:
    c.send_line("AUTHENTICATE " + b64("\0".join((ACCOUNT, ACCOUNT, password))))


def irc_answer(c: IrcUser) -> str:
    line = c.expect(lambda line: irc_command(line)[0] in ("903", "904"))
    command, params = irc_command(line)
    if command == "903":
        return "ok"
    return "throttled" if "too many failed" in params[-1] else "wrong"


class ScramXmpp(XmppClient):
    """An XMPP stream that logs in with SCRAM-SHA-1 (the attempt starts with client-first)."""

    scram: ScramClient


def xmpp_prepare(server: ServerProcess, source: str, _nick: str) -> ScramXmpp:
    return ScramXmpp(server.ports["xmpp"], source=source)


def xmpp_send(c: ScramXmpp, password: str) -> None:
    c.scram = ScramClient(["SCRAM-SHA-1"], ACCOUNT, password)
    first = b64(c.scram.get_client_first())
    c.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>{first}</auth>")


def xmpp_answer(c: ScramXmpp) -> str:
    el = c.expect(lambda el: local(el) in ("challenge", "failure"))
    if local(el) == "challenge":
        c.scram.set_server_first(base64.b64decode(el.text).decode())
        final = b64(c.scram.get_client_final())
        c.send(f"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{final}</response>")
        el = c.expect(lambda el: local(el) in ("success", "failure"))
    if local(el) == "success":
        return "ok"
    condition = local(el[0])
    assert condition in ("not-authorized", "temporary-auth-failure"), condition
    return "throttled" if condition == "temporary-auth-failure" else "wrong"


PROTOCOLS = {
    "line": (line_prepare, line_send, line_answer),
    "irc": (irc_prepare, irc_send, irc_answer),
    "xmpp": (xmpp_prepare, xmpp_send, xmpp_answer),
}


def attempt(server: ServerProcess, protocol: str, source: str, password: str, nick: str) -> str:
    prepare, send, answer = PROTOCOLS[protocol]
    c = prepare(server, source, nick)
    try:
        send(c, password)
        return answer(c)
    finally:
        c.close()


def test_owner_logs_in_before_the_attack(server: ServerProcess) -> None:
    for protocol in PROTOCOLS:
        assert attempt(server, protocol, OWNER, PASSWORD, f"own{protocol}") == "ok"


def test_simultaneous_guesses_from_many_addresses_are_bounded(server: ServerProcess) -> None:
    """Sixty guesses per protocol from 180 addresses, all sent before any is answered: only
    the account's budget of them is checked, the others are refused as throttled."""
    clients = []
    for p, protocol in enumerate(PROTOCOLS):
        prepare, _send, _answer = PROTOCOLS[protocol]
        for i in range(ATTACKERS):
            source = f"127.{20 + p}.0.{i + 1}"
            clients.append((protocol, prepare(server, source, f"g{protocol[0]}{i}")))
    for protocol, c in clients:
        PROTOCOLS[protocol][1](c, "a-wrong-guess")
    answers = [PROTOCOLS[protocol][2](c) for protocol, c in clients]
    for _protocol, c in clients:
        c.close()
    assert len(answers) == ATTACKERS * len(PROTOCOLS)
    assert answers.count("ok") == 0
    # Every check that ran was charged when it started: at most the burst, over all
    # protocols and addresses together.
    assert 1 <= answers.count("wrong") <= BURST
    assert answers.count("throttled") >= ATTACKERS * len(PROTOCOLS) - BURST


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_the_owner_is_not_locked_out(server: ServerProcess, protocol: str) -> None:
    """After the attack the account's budget is spent, yet the owner's address, which logged
    in before, still gets in with the right password, on every protocol."""
    assert attempt(server, protocol, "127.30.0.1", PASSWORD, f"new{protocol}") == "throttled"
    assert attempt(server, protocol, OWNER, PASSWORD, f"back{protocol}") == "ok"


def test_one_address_is_limited_whatever_accounts_it_tries(server: ServerProcess) -> None:
    """Per address the budget is four times the burst, over every account and protocol."""
    source = "127.31.0.1"
    c = LineUser(server.ports["line"], "many", source=source)
    answers = []
    for i in range(BURST * 4 + 1):
        time.sleep(0.05)  # inside the flood budget: every guess gets its answer
        c.send_line(f"/identify nosuch{i} whatever")
        answers.append(c.expect(lambda line: line.startswith("!!!")))
    c.close()
    assert all("too many failed" not in a for a in answers[:-1])
    assert "too many failed" in answers[-1]
    assert attempt(server, "irc", source, PASSWORD, "many-irc") == "throttled"
