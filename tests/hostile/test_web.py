"""Hostile clients of the web listener: slow upgrades (slowloris), frame floods, a client
that never reads.  Each test checks that a bystander on a WebSocket keeps its service and
that the server goes on."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import LineClient, ServerProcess
from tests.web.conftest import WsClient, irc_register, ws_url

HEADER_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        Path(tmp_path_factory.mktemp("hostile-web")),
        protocols=("irc", "web"),
        overrides={
            "web": {"header_timeout": HEADER_TIMEOUT},
            # Flood control as shipped; the sender of the slow-reader test is exempt.
            "irc": {"sendq_bytes": 65536, "flood_exempt": ["127.0.0.5"]},
            "chat": {"max_connections_per_address": 0},
        },
    )
    proc.start()
    yield proc
    proc.kill()


@pytest.fixture
def bystander(server: ServerProcess) -> Iterator[WsClient]:
    client = WsClient(ws_url(server, "/irc"), subprotocols=["text.ircv3.net"])
    irc_register(client, f"calm{int(time.monotonic() * 1000) % 100000}")
    yield client
    client.close()


def _round_trip(client: WsClient, token: str) -> float:
    start = time.monotonic()
    client.send(f"PING :{token}")
    client.expect(token)
    return time.monotonic() - start


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except OSError:
        pass
    return True


def test_slowloris_upgrades_are_cut_off(server: ServerProcess, bystander: WsClient) -> None:
    port = server.ports["web"]
    slow = []
    for _ in range(40):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"GET /irc HTTP/1.1\r\nHost: x\r\n")
        slow.append(sock)
    started = time.monotonic()
    # A byte now and then keeps an idle timer happy, not the header deadline.
    for _ in range(3):
        for sock in slow:
            try:
                sock.sendall(b"X")
            except OSError:
                pass
        assert _round_trip(bystander, f"t{_}") < 1.0
        time.sleep(0.4)
    for sock in slow:
        assert _closed_within(sock, HEADER_TIMEOUT + 3)
        sock.close()
    assert time.monotonic() - started < HEADER_TIMEOUT + 4
    # A new client is served as before.
    fresh = WsClient(ws_url(server, "/irc"), subprotocols=["text.ircv3.net"])
    fresh.send("PING :fresh")
    fresh.expect("fresh")
    fresh.close()


def test_message_frame_flood_is_flood_controlled(
    server: ServerProcess, bystander: WsClient
) -> None:
    flooder = WsClient(ws_url(server, "/irc"), subprotocols=["text.ircv3.net"])
    irc_register(flooder, "flooder")
    frames = b"".join(
        __import__("websocket").ABNF.create_frame(f"PRIVMSG calm :{i}", 0x1).format()
        for i in range(2000)
    )
    flooder.ws.sock.sendall(frames)
    # Past the queue the IRC flood rule closes it, as it would over TCP.
    flooder.expect(lambda m: m.startswith("ERROR") and "Excess Flood" in m, timeout=10)
    assert flooder.close_code() == 1000
    flooder.close()
    assert _round_trip(bystander, "after-flood") < 1.0


def test_ping_frame_flood_from_a_client_that_never_reads(
    server: ServerProcess, bystander: WsClient
) -> None:
    pinger = WsClient(ws_url(server, "/irc"), subprotocols=["text.ircv3.net"], rcvbuf=4096)
    frame = __import__("websocket").ABNF.create_frame(b"p" * 125, 0x9).format()
    sock = pinger.ws.sock
    sock.setblocking(False)
    sent = 0
    deadline = time.monotonic() + 3
    # Ping frames as fast as the server takes them, answers never read: the pongs must not
    # pile up in the server without bound.
    while time.monotonic() < deadline:
        try:
            sent += sock.send(frame * 64)
        except BlockingIOError:
            time.sleep(0.01)
        except OSError:
            break
    assert sent > 1_000_000
    assert _round_trip(bystander, "after-pings") < 1.0
    pinger.ws.shutdown()


def test_a_client_that_never_reads_is_dropped_and_others_carry_on(
    server: ServerProcess, bystander: WsClient
) -> None:
    reader = WsClient(ws_url(server, "/irc"), subprotocols=["text.ircv3.net"], rcvbuf=4096)
    irc_register(reader, "deaf")
    reader.send("JOIN #loud")
    reader.expect(lambda m: " 366 " in m)
    sender = LineClient(server.ports["irc"])
    sender.sock.close()
    sender.sock = socket.socket()
    sender.sock.bind(("127.0.0.5", 0))
    sender.sock.settimeout(10)
    sender.sock.connect(("127.0.0.1", server.ports["irc"]))
    sender.send("NICK loud")
    sender.send("USER l 0 * :l")
    sender.expect(" 001 loud ")
    sender.send("JOIN #loud")
    sender.expect(" 366 ")
    line = b"PRIVMSG #loud :" + b"x" * 400 + b"\r\n"
    # The sender reads nothing while it sends: all it gets is the QUIT of the one it floods.
    for _ in range(100):
        try:
            sender.sock.sendall(line * 100)
        except OSError:
            break
        time.sleep(0.01)
    quit_line = sender.expect(lambda m: "QUIT" in m, timeout=15)
    quit_seen = quit_line.startswith(":deaf!")
    assert quit_seen, "the client that never reads was not dropped"
    assert "SendQ exceeded" in quit_line
    sender.close()
    reader.ws.shutdown()
    assert _round_trip(bystander, "after-deaf") < 2.0


def test_a_reader_that_keeps_up_is_not_dropped_by_a_burst(
    server: ServerProcess, bystander: WsClient
) -> None:
    # Five times the send queue (64 KiB here) in a quick stream: the WebSocket's output goes
    # straight to the socket, as TCP's does, so a client that reads is not taken for one
    # that does not.
    bystander.send("JOIN #burst")
    bystander.expect(lambda m: " 366 " in m)
    sender = socket.socket()
    sender.bind(("127.0.0.5", 0))
    sender.settimeout(10)
    sender.connect(("127.0.0.1", server.ports["irc"]))
    sender.sendall(b"NICK burster\r\nUSER b 0 * :b\r\nJOIN #burst\r\n")
    time.sleep(0.5)
    count = 900
    lines = [b"PRIVMSG #burst :%d %s\r\n" % (i, b"y" * 400) for i in range(count)]
    for start in range(0, count, 30):
        sender.sendall(b"".join(lines[start : start + 30]))
        time.sleep(0.02)
    last = bystander.expect(f"PRIVMSG #burst :{count - 1} ", timeout=15)
    assert last.startswith(":burster!")
    assert _round_trip(bystander, "after-burst") < 1.0
    sender.close()
