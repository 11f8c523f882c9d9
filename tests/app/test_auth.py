"""The shared SASL mechanisms and the operator check, through the real server: IRC and XMPP
answer the same exchange the same way, and no operator login tells which names exist."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from scramp import ScramClient

from chatserver.passwords import hash_password
from tests.hostile.clients import IrcUser, LineUser, XmppClient, close_all, irc_command, local
from tests.support.server import ServerProcess

ACCOUNT = "Sasluser"
PASSWORD = "sasl-password"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
AUTH_OR_FAIL = ("AUTHENTICATE", "904")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("auth"), protocols=("line", "irc", "xmpp"))
    with open(proc.config_path, "a") as config:
        config.write(f'\n[[operators]]\nname = "root"\npassword = "{hash_password("op-pass")}"\n')
    proc.start()
    proc.create_account(ACCOUNT, PASSWORD)
    yield proc
    close_all()
    proc.stop()


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


# -- IRC ---------------------------------------------------------------------------------------


def irc_sasl(server: ServerProcess, mechanism: str, source: str) -> IrcUser:
    c = IrcUser(server.ports["irc"], "x", source=source, register=False)
    c.send_line("CAP REQ :sasl")
    c.expect(lambda line: " ACK " in line)
    c.send_line(f"AUTHENTICATE {mechanism}")
    c.expect("AUTHENTICATE +")
    return c


def irc_result(c: IrcUser) -> tuple[str, str]:
    line = c.expect(lambda line: irc_command(line)[0] in ("903", "904"))
    command, params = irc_command(line)
    return command, params[-1]


def irc_plain(server: ServerProcess, authzid: str, source: str) -> tuple[str, str]:
    c = irc_sasl(server, "PLAIN", source)
    c.send_line("AUTHENTICATE " + b64("\0".join((authzid, ACCOUNT.lower(), PASSWORD))))
    return irc_result(c)


def irc_scram(server: ServerProcess, authzid: str, source: str) -> tuple[str, str]:
    c = irc_sasl(server, "SCRAM-SHA-256", source)
    client = ScramClient(["SCRAM-SHA-256"], ACCOUNT, PASSWORD)
    first = client.get_client_first()
    if authzid:
        first = first.replace("n,,", f"n,a={authzid},", 1)
    c.send_line("AUTHENTICATE " + b64(first))
    command, params = irc_command(c.expect(lambda line: irc_command(line)[0] in AUTH_OR_FAIL))
    if command == "904":
        return "904", params[-1]
    if authzid:
        # scramp checks the header it sent; this test only needs the server's answer.
        raise AssertionError(f"authzid {authzid!r} was not refused")
    client.set_server_first(base64.b64decode(params[0]).decode())
    c.send_line("AUTHENTICATE " + b64(client.get_client_final()))
    command, params = irc_command(c.expect(lambda line: irc_command(line)[0] in AUTH_OR_FAIL))
    assert command == "AUTHENTICATE", params
    client.set_server_final(base64.b64decode(params[0]).decode())
    c.send_line("AUTHENTICATE +")
    return irc_result(c)


# -- XMPP --------------------------------------------------------------------------------------


def xmpp_outcome(el: Any) -> str:
    return "success" if local(el) == "success" else local(el[0])


def xmpp_plain(server: ServerProcess, authzid: str, source: str) -> str:
    c = XmppClient(server.ports["xmpp"], source=source)
    token = b64("\0".join((authzid, ACCOUNT.lower(), PASSWORD)))
    c.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
    return xmpp_outcome(c.expect(lambda el: local(el) in ("success", "failure")))


def xmpp_scram(server: ServerProcess, mechanism: str, authzid: str, source: str) -> str:
    c = XmppClient(server.ports["xmpp"], source=source)
    client = ScramClient([mechanism], ACCOUNT, PASSWORD)
    first = client.get_client_first()
    if authzid:
        first = first.replace("n,,", f"n,a={authzid},", 1)
    c.send(f"<auth xmlns='{NS_SASL}' mechanism='{mechanism}'>{b64(first)}</auth>")
    el = c.expect(lambda el: local(el) in ("challenge", "failure"))
    if local(el) == "failure":
        return xmpp_outcome(el)
    client.set_server_first(base64.b64decode(el.text).decode())
    c.send(f"<response xmlns='{NS_SASL}'>{b64(client.get_client_final())}</response>")
    el = c.expect(lambda el: local(el) in ("success", "failure"))
    if local(el) == "success":
        client.set_server_final(base64.b64decode(el.text).decode())
    return xmpp_outcome(el)


# -- the tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("authzid", ["", ACCOUNT, ACCOUNT.upper(), ACCOUNT.lower()])
def test_an_authzid_naming_yourself_is_accepted_by_both(
    server: ServerProcess, authzid: str
) -> None:
    assert irc_plain(server, authzid, "127.50.0.1")[0] == "903"
    assert xmpp_plain(server, authzid, "127.50.0.1") == "success"


def test_xmpp_accepts_the_bare_jid_as_authzid(server: ServerProcess) -> None:
    assert xmpp_plain(server, f"{ACCOUNT.upper()}@localhost", "127.50.0.1") == "success"


@pytest.mark.parametrize("authzid", ["someoneelse", "Sasluser2"])
def test_an_authzid_naming_another_is_refused_by_both(server: ServerProcess, authzid: str) -> None:
    command, text = irc_plain(server, authzid, "127.50.0.2")
    assert command == "904" and "only log in as yourself" in text
    assert xmpp_plain(server, authzid, "127.50.0.2") == "invalid-authzid"
    command, text = irc_scram(server, authzid, "127.50.0.2")
    assert command == "904" and "only log in as yourself" in text
    assert xmpp_scram(server, "SCRAM-SHA-256", authzid, "127.50.0.2") == "invalid-authzid"


def test_scram_on_both(server: ServerProcess) -> None:
    assert irc_scram(server, "", "127.50.0.3")[0] == "903"
    assert xmpp_scram(server, "SCRAM-SHA-256", "", "127.50.0.3") == "success"
    assert xmpp_scram(server, "SCRAM-SHA-1", "", "127.50.0.3") == "success"


def test_operator_login_gives_one_answer_for_every_failure(server: ServerProcess) -> None:
    irc = IrcUser(server.ports["irc"], "opguess", source="127.50.0.4")
    answers = []
    for name, password in (("root", "wrong"), ("nobody", "op-pass"), ("nobody", "wrong")):
        irc.send_line(f"OPER {name} {password}")
        answers.append(irc_command(irc.expect(lambda line: " 464 " in line or " 491 " in line)))
    assert answers[0][0] == "464"
    assert answers[1:] == [answers[0]] * 2
    line = LineUser(server.ports["line"], "lineguess", source="127.50.0.4")
    said = []
    for name, password in (("root", "wrong"), ("nobody", "op-pass")):
        line.send_line(f"/oper {name} {password}")
        said.append(line.expect(lambda text: text.startswith("!!!")))
    assert said[0] == said[1] == "!!! error: wrong operator name or password"
    irc.send_line("OPER root op-pass")
    assert irc.expect(lambda line: " 381 " in line or " 464 " in line).split()[1] == "381"
