"""A second IRC client of an account, on another node than the account's user: handed off to
the user's node, it is a second client of that user exactly as on one server.  Through two
real nodes, a private Redis and a shared PostgreSQL, with raw IRC over TCP, TLS, WebSocket
and through a WEBIRC gateway, and with the irc package's client."""

from __future__ import annotations

import base64
import re
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import scramp

from chatserver.passwords import hash_password
from tests.cluster.test_accounts import PASSWORD, b64, irc_sasl, read_until, register, shared
from tests.cluster.test_cluster import eventually, irc
from tests.irc.test_clients import JaracoClient
from tests.support.postgres import PostgresServer
from tests.support.redis import RedisServer
from tests.support.server import LineClient, ServerProcess
from tests.web.conftest import WsClient, ws_url

pytestmark = pytest.mark.timeout(120)

Node = Callable[..., ServerProcess]

CAPS = ("echo-message", "labeled-response", "batch", "server-time", "message-tags")
# LUSERS counts everyone on the node, MOTD and ISUPPORT are the listener's: not the
# connection's story.
SERVER_NUMERICS = re.compile(r" (00[2-5]|25[0-9]|26[56]|37[256]|422) ")


def account_of(node: ServerProcess, account: str) -> None:
    """Register ``account`` (from a line-chat connection that then leaves)."""
    client = register(node, account)
    client.close()


def begin(
    send: Callable[[str], None], expect: Callable[[str], object], nick: str, caps: str
) -> None:
    """Registration up to the SASL exchange (over any transport): CAP LS 302, NICK and USER
    given, the capabilities (``sasl`` among them) acknowledged."""
    for line in ("CAP LS 302", f"NICK {nick}", f"USER {nick} 0 * :{nick}", f"CAP REQ :{caps}"):
        send(line)
    expect(" ACK ")


def plain(account: str) -> str:
    return b64(f"{account}\0{account}\0{PASSWORD}")


def logged_in(node: ServerProcess, account: str, nick: str) -> LineClient:
    """An IRC client of ``account`` on ``node``, registered (SASL, then CAP END)."""
    client = irc_sasl(node, nick, CAPS)
    client.send(f"AUTHENTICATE {plain(account)}\r\nCAP END")
    client.expect(f" 001 {account} ")
    return client


def user_in_rooms(node: ServerProcess, name: str) -> LineClient:
    """The account ``name`` registered, and its IRC client on ``node`` in the rooms
    ``#<name>r`` and ``#<name>r2``."""
    account_of(node, name)
    client = logged_in(node, name, name)
    for room in (f"#{name}r", f"#{name}r2"):
        client.send(f"JOIN {room}")
        client.expect(f" 366 {name} {room} ")
    return client


def drain(client: LineClient, tag: str) -> None:
    """Read everything the server sent before the answer to a PING of ``tag``."""
    client.send(f"PING :{tag}")
    client.expect(lambda t: " PONG " in t and t.endswith(tag))


class Story:
    """One account's two clients and a third user, the second client on ``second_node``:
    what each of them was sent, for the same steps."""

    def __init__(self, a: ServerProcess, b: ServerProcess, second_node: ServerProcess, name: str):
        self.name = name
        self.second_closed = False
        self.first = user_in_rooms(a, name)
        self.third = irc(b, f"{name}c")

        def user_there() -> bool:
            self.third.send(f"NAMES #{name}r")
            found = self.third.expect(lambda t: " 353 " in t or " 366 " in t)
            if " 353 " in found:
                self.third.expect(" 366 ")
            return f"@{name}" in found.rsplit(" :", 1)[-1].split()

        # Node b knows the user in the room before the third user joins it.
        eventually(user_there, 10, "the user's room known on node b")
        self.third.send(f"JOIN #{name}r")
        self.third.expect(f" 366 {name}c #{name}r ")
        # The third user's join has reached the first node.
        self.first.expect(f":{name}c!")
        self.second_node = second_node
        self.second: LineClient | None = None
        # Where each transcript starts: the story is what comes after the setting up.
        self.marks = {"first": len(self.first.seen), "second": 0, "third": len(self.third.seen)}

    def clients(self) -> dict[str, LineClient]:
        assert self.second is not None
        return {"first": self.first, "second": self.second, "third": self.third}

    def settle(self, step: str) -> None:
        for who, client in self.clients().items():
            if who == "second" and self.second_closed:
                continue
            drain(client, f"{step}-{who}")

    def run(self) -> None:
        name = self.name
        # The second client logs in under another nick; CAP END comes with the response.
        self.second = irc_sasl(self.second_node, f"{name}x", CAPS)
        self.second.send(f"@label=au1 AUTHENTICATE {plain(name)}\r\nCAP END")
        self.second.expect(f" 366 {name} #{name}r2 ")
        self.settle("login")
        self.second.send(f"PRIVMSG #{name}r :from the second")
        self.first.expect("from the second")
        self.third.expect("from the second")
        self.settle("second-says")
        self.first.send(f"PRIVMSG #{name}r :from the first")
        self.second.expect("from the first")
        self.third.expect("from the first")
        self.settle("first-says")
        self.third.send(f"PRIVMSG #{name}r :from the third")
        self.first.expect("from the third")
        self.second.expect("from the third")
        self.settle("third-says")
        self.third.send(f"PRIVMSG {name} :psst")
        self.first.expect("psst")
        self.second.expect("psst")
        self.settle("third-whispers")
        self.first.send(f"@label=pm1 PRIVMSG {name}c :hello third")
        self.third.expect("hello third")
        self.settle("first-whispers")
        self.second.send(f"@label=q1 PRIVMSG {name}c :hello from the second")
        self.third.expect("hello from the second")
        self.settle("second-whispers")
        self.second.send("QUIT :bye")
        self.second.read_until_closed()
        self.second_closed = True
        self.third.send(f"PRIVMSG #{name}r :after the quit")
        self.first.expect("after the quit")
        self.settle("second-quit")

    def transcript(self, who: str) -> list[str]:
        return normalized(self.clients()[who].seen[self.marks[who] :], self.name)


# The run's names (an account and its user, the third user, the nick the second client asked
# for, two rooms) and what they stand for in a transcript.
STAND_INS = {"": "USER", "c": "THIRD", "x": "GIVEN", "r": "ROOM", "r2": "ROOM2"}


def untagged(line: str) -> str:
    return line.split(" ", 1)[1] if line.startswith("@") else line


def command_of(line: str) -> str:
    """The command (or numeric) of a line the server sent."""
    return untagged(line).split()[1]


def normalized(lines: list[str], name: str, stand_ins: dict[str, str] = STAND_INS) -> list[str]:
    """Lines without what differs between two runs: times, message ids, batch references,
    the run's names (``name`` and each suffix of ``stand_ins``), the order of NAMES; the
    server-wide numerics are left out."""
    out = []
    batches: dict[str, str] = {}
    suffixes = "|".join(sorted((s for s in stand_ins if s), key=len, reverse=True))

    def batch(match: re.Match[str]) -> str:
        ref = batches.setdefault(match.group(2), f"B{len(batches)}")
        return match.group(1) + ref

    for line in lines:
        if SERVER_NUMERICS.search(line) or " PONG " in line:
            continue
        if line.startswith("@"):
            tags, _, rest = line[1:].partition(" ")
            kept = [t for t in tags.split(";") if not t.startswith(("time=", "msgid="))]
            line = ("@" + ";".join(kept) + " " if kept else "") + rest
        line = re.sub(r"(batch=|BATCH [+-])([0-9a-z]+)", batch, line)
        line = re.sub(rf"\b{name}({suffixes})?\b", lambda m: stand_ins[m.group(1) or ""], line)
        if " 353 " in line:
            head, _, members = line.rpartition(" :")
            line = head + " :" + " ".join(sorted(members.split()))
        out.append(line)
    return out


def test_a_second_client_on_another_node_is_a_second_client_of_the_user_as_on_one_node(
    make_node: Node, redis: RedisServer, postgres: PostgresServer
) -> None:
    config = shared(postgres)
    a = make_node("a", overrides=config)
    b = make_node("b", overrides=config)
    # The same steps with the second client on the user's node, then on the other one.
    local = Story(a, b, a, "zlocal")
    local.run()
    started = time.monotonic()
    handed = Story(a, b, b, "zhanded")
    handed.run()
    print(f"handed-off story in {time.monotonic() - started:.2f}s")
    for who in ("second", "first", "third"):
        assert handed.transcript(who) == local.transcript(who), who
    # What the transcripts show, said outright: the second client is the user on B's socket.
    second = handed.transcript("second")
    assert any(" 001 USER " in t for t in second), second
    batch_start = next(t for t in second if " BATCH +" in t)
    assert batch_start.startswith("@label=au1 ") and "labeled-response" in batch_start
    after = second[second.index(batch_start) + 1 :][:3]
    assert [command_of(t) for t in after] == ["900", "903", "BATCH"], second
    assert any(t.startswith(":USER!") and t.endswith("JOIN #ROOM2") for t in second), second
    for who in ("first", "third"):
        assert not [t for t in handed.transcript(who) if " QUIT " in t], who
    # Each client of the user got the other's words, the third user's, and its own echo.
    for who in ("first", "second"):
        said = [t for t in handed.transcript(who) if " PRIVMSG #ROOM :" in t]
        assert [t.rsplit(" :", 1)[1] for t in said] == [
            "from the second",
            "from the first",
            "from the third",
            "after the quit",
        ][: 4 if who == "first" else 3], (who, said)

    # The user's node dies: node b closes the socket of a client handed off there, saying why.
    again = logged_in(b, "zhanded", "zhandedx")
    a.kill()
    closing = again.read_until_closed(timeout=15)
    assert [t for t in closing if t.startswith("ERROR :Closing Link: 127.0.0.1 (")], closing


def scram_login(send: Callable[[str], None], expect: Callable[[str], str], account: str) -> None:
    """A SCRAM-SHA-256 exchange over AUTHENTICATE lines, up to the client's last (empty)
    message."""
    client = scramp.ScramClient(["SCRAM-SHA-256"], account, PASSWORD)
    send("AUTHENTICATE SCRAM-SHA-256")
    expect("AUTHENTICATE +")
    send("AUTHENTICATE " + b64(client.get_client_first()))
    first = expect("AUTHENTICATE ").rsplit(" ", 1)[1]
    client.set_server_first(_unb64(first))
    send("AUTHENTICATE " + b64(client.get_client_final()))
    final = expect("AUTHENTICATE ").rsplit(" ", 1)[1]
    client.set_server_final(_unb64(final))
    send("AUTHENTICATE +")


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


class TlsClient(LineClient):
    """A LineClient over TLS (the server's certificate is its own, not checked)."""

    def __init__(self, port: int) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.timeout = 5.0
        self.buffer = b""
        self.seen = []


GATEWAY_PASSWORD = "gateway-secret"


def gateway_node(
    tmp_path: Path, redis: RedisServer, name: str, config: dict[str, dict[str, Any]]
) -> ServerProcess:
    """A node (IRC, line chat, WebSocket) that lets a web gateway on loopback send WEBIRC."""
    sections = {"cluster": {"redis": redis.url, "node": name, "lease": 3.0}, **config}
    (tmp_path / name).mkdir()
    node = ServerProcess(tmp_path / name, protocols=("line", "irc", "web"), overrides=sections)
    with open(node.config_path, "a") as toml:
        toml.write(
            f'\n[[webirc]]\nname = "lounge"\npassword = "{hash_password(GATEWAY_PASSWORD)}"\n'
            'hosts = ["127.0.0.1/32"]\n'
        )
    return node.start()


def offered_sasl(client: LineClient) -> str:
    """The SASL mechanisms a registered client is offered (CAP LS 302's ``sasl=`` value)."""
    client.send("CAP LS 302")
    return next(t for t in client.cap_ls().split() if t.startswith("sasl="))


def test_tls_websocket_gateway_and_library_clients_are_handed_off_and_forgotten_when_they_close(
    make_node: Node, redis: RedisServer, postgres: PostgresServer, tmp_path: Path
) -> None:
    config = shared(postgres)
    a = make_node("a", protocols=("line", "irc", "web"), overrides=config)
    b = gateway_node(tmp_path, redis, "b", config)
    try:
        tls_websocket_gateway_and_library(a, b)
    finally:
        b.kill()


def tls_websocket_gateway_and_library(a: ServerProcess, b: ServerProcess) -> None:
    account_of(a, "erin")
    first = logged_in(a, "erin", "erin")
    first.send("JOIN #tls")
    first.expect(" 366 erin #tls ")
    watcher = irc(b, "wat")
    watcher.send("JOIN #tls")
    watcher.expect(" 366 wat #tls ")

    # Over TLS, with SCRAM-SHA-256 (its last step is the client's empty message).
    tls = TlsClient(b.ports["irc_tls"])
    begin(tls.send, tls.expect, "erintls", "sasl echo-message")
    scram_login(tls.send, tls.expect, "erin")
    tls.expect(" 903 ")
    tls.send("CAP END")
    tls.expect(" 001 erin ")
    tls.expect(" 366 erin #tls ")
    tls.send("PRIVMSG #tls :over tls")
    assert untagged(first.expect("over tls")).startswith(":erin!")
    assert tls.expect("over tls").startswith(":erin!")
    assert watcher.expect("over tls").startswith(":erin!")

    # Over WebSocket (text.ircv3.net): lines without line endings, one per message.
    ws = WsClient(ws_url(b, "/irc"), subprotocols=["text.ircv3.net"])
    begin(ws.send, lambda text: ws.expect(lambda m: text in m), "erinws", "sasl")
    ws.send("AUTHENTICATE PLAIN")
    ws.expect(lambda m: "AUTHENTICATE +" in m)
    ws.send(f"AUTHENTICATE {plain('erin')}")
    ws.expect(lambda m: " 903 " in m)
    ws.send("CAP END")
    ws.expect(lambda m: " 001 erin " in m)
    ws.expect(lambda m: " 366 erin #tls " in m)
    first.send("PRIVMSG #tls :to the web")
    assert ws.expect(lambda m: "to the web" in m).startswith(":erin!")
    ws.send("PRIVMSG #tls :from the web")
    assert untagged(first.expect("from the web")).startswith(":erin!")

    # The irc package's client, which does SASL PLAIN during registration.
    jar = JaracoClient(b.ports["irc"], "erinlib", password=PASSWORD, sasl_login="erin")
    assert jar.wait_type("welcome").target == "erin"
    jar.wait(lambda e: e.type == "join" and e.target == "#tls")
    first.send("PRIVMSG #tls :to the library")
    assert jar.wait(lambda e: e.type == "pubmsg").arguments == ["to the library"]

    # Through a web gateway on node b (WEBIRC): node a serves them from the address the
    # gateway named, secure as the gateway said.  Not on loopback, a user is secure (offered
    # PLAIN) only if the gateway said its own hop was; SCRAM-SHA-256 is offered either way.
    gateway = {}
    for options, nick in (("secure", "eringw"), ("", "eringw2")):
        client = LineClient(b.ports["irc"])
        client.send(f"WEBIRC {GATEWAY_PASSWORD} lounge user.example 203.0.113.9 :{options}")
        begin(client.send, client.expect, nick, "sasl")
        scram_login(client.send, client.expect, "erin")
        client.expect(" 903 ")
        client.send("CAP END")
        client.expect(" 001 erin ")
        gateway[options] = offered_sasl(client)
        client.close()
    assert gateway == {"secure": "sasl=PLAIN,SCRAM-SHA-256", "": "sasl=SCRAM-SHA-256"}

    # Their sockets close on node b, without a QUIT: the user stays, with its first client.
    jar.conn.socket.shutdown(socket.SHUT_RDWR)
    jar.conn.socket.close()
    ws.close()
    tls.close()
    time.sleep(0.5)
    first.send("PRIVMSG #tls :still here")
    seen = read_until(watcher, "still here")
    assert not [t for t in seen if " QUIT " in t or " PART " in t], seen
    # Node a forgot the three connections: the first one's QUIT is the user's (were one of
    # them still held there, nobody would see the user quit).
    first.send("QUIT :last one")
    watcher.expect(lambda t: t.startswith(":erin!") and " QUIT " in t, timeout=10)
