"""Logging in to a server-banned account over IRC, on the real server.

The core refuses the login, tells the client why and closes the connection; the IRC side
must then stay quiet (nothing after the ERROR line) and log no traceback.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

import pytest
from scramp import ScramClient

from tests.ops.helpers import OPER_PASSWORD, OpsServer, operators_toml
from tests.support.server import LineClient

PASSWORD = "mallory-pw"
BANNED = "(You are banned from this server: abuse)"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsServer]:
    process = OpsServer(
        tmp_path_factory.mktemp("banned"), protocols=("irc",), extra=operators_toml()
    ).start()
    process.create_account("mallory", PASSWORD)
    boss = LineClient(process.ports["irc"])
    boss.send("NICK boss")
    boss.send("USER boss 0 * :Boss")
    boss.expect(" 001 boss ")
    boss.send(f"OPER admin {OPER_PASSWORD}")
    boss.expect(" 381 boss ")
    for mask in ("$a:mallory", "$a:newbie"):
        boss.send(f"KLINE {mask} :abuse")
        boss.expect(f"Added K-line on {mask}")
    yield process
    boss.close()
    process.stop()
    assert "Traceback" not in process.log()


def closed_after(
    server: OpsServer, client: LineClient, mark: int, mask: str = "$a:mallory"
) -> list[str]:
    """Every line up to the close, which must end with the ban's ERROR; the log (from
    ``mark`` on) notes the refusal in one line, without a traceback."""
    lines = client.read_until_closed()
    assert lines and lines[-1].startswith("ERROR :Closing Link: "), lines
    assert lines[-1].endswith(BANNED)
    server.wait_log("login refused by the server ban " + re.escape(mask), start=mark)
    assert "Traceback" not in server.log()[mark:]
    return lines


def sasl_start(port: int, mechanism: str) -> LineClient:
    client = LineClient(port)
    for line in ("CAP LS 302", "CAP REQ :sasl", "NICK mallory", "USER m 0 * :M"):
        client.send(line)
    client.send(f"AUTHENTICATE {mechanism}")
    client.expect("AUTHENTICATE +")
    return client


def registered(port: int, nick: str) -> LineClient:
    client = LineClient(port)
    client.send(f"NICK {nick}")
    client.send(f"USER {nick} 0 * :{nick}")
    client.expect(f" 001 {nick} ")
    return client


def test_sasl_plain(server: OpsServer) -> None:
    mark = len(server.log())
    client = sasl_start(server.ports["irc"], "PLAIN")
    client.send("AUTHENTICATE " + b64(b"\0mallory\0" + PASSWORD.encode()))
    closed_after(server, client, mark)


def test_sasl_scram(server: OpsServer) -> None:
    mark = len(server.log())
    client = sasl_start(server.ports["irc"], "SCRAM-SHA-256")
    scram = ScramClient(["SCRAM-SHA-256"], "mallory", PASSWORD)
    client.send("AUTHENTICATE " + b64(scram.get_client_first().encode()))
    server_first = client.expect("AUTHENTICATE ").split()[-1]
    scram.set_server_first(base64.b64decode(server_first).decode())
    client.send("AUTHENTICATE " + b64(scram.get_client_final().encode()))
    server_final = client.expect("AUTHENTICATE ").split()[-1]
    scram.set_server_final(base64.b64decode(server_final).decode())
    client.send("AUTHENTICATE +")
    closed_after(server, client, mark)


def test_nickserv_identify(server: OpsServer) -> None:
    mark = len(server.log())
    client = registered(server.ports["irc"], "someone")
    client.send(f"PRIVMSG NickServ :IDENTIFY mallory {PASSWORD}")
    lines = closed_after(server, client, mark)
    assert not any(":NickServ!" in line for line in lines)


def test_register_of_a_banned_account(server: OpsServer) -> None:
    # The account is made, then logging in to it meets the ban.
    mark = len(server.log())
    client = registered(server.ports["irc"], "newbie")
    client.send("REGISTER * * newbie-pw")
    lines = closed_after(server, client, mark, "$a:newbie")
    assert not any("FAIL REGISTER" in line for line in lines)
