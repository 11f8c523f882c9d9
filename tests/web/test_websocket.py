"""IRC and line chat over WebSocket, through the real server, with a real WebSocket client."""

from __future__ import annotations

import json
import os
import socket
import struct
import urllib.request

import pytest
import websocket

from tests.support.server import LineClient, ServerProcess
from tests.web.conftest import TRUSTED_PROXY, WsClient, irc_register, ws_url


def _irc_tcp(server: ServerProcess, nick: str) -> LineClient:
    client = LineClient(server.ports["irc"])
    client.send(f"NICK {nick}")
    client.send(f"USER {nick} 0 * :{nick}")
    client.expect(f" 001 {nick} ")
    return client


def test_irc_text_subprotocol_meets_tcp_irc(web_server: ServerProcess) -> None:
    ws = WsClient(ws_url(web_server, "/irc"), subprotocols=["text.ircv3.net"])
    assert ws.subprotocol == "text.ircv3.net"
    tcp = _irc_tcp(web_server, "tcpann")
    try:
        irc_register(ws, "webann")
        ws.send("JOIN #wsroom")
        ws.expect(lambda m: " 366 " in m)
        tcp.send("JOIN #wsroom")
        tcp.expect(" 366 ")
        tcp.send("PRIVMSG #wsroom :hello from tcp")
        got = ws.expect("hello from tcp")
        # One message per frame, as text, without the line ending.
        assert isinstance(got, str)
        assert got.endswith("PRIVMSG #wsroom :hello from tcp")
        assert "\n" not in got and "\r" not in got
        ws.send("PRIVMSG #wsroom :hello from the web")
        assert tcp.expect("hello from the web").startswith(":webann!")
    finally:
        ws.close()
        tcp.close()


def test_irc_binary_subprotocol(web_server: ServerProcess) -> None:
    ws = WsClient(ws_url(web_server, "/irc"), subprotocols=["binary.ircv3.net"])
    try:
        assert ws.subprotocol == "binary.ircv3.net"
        ws.ws.send_binary(b"NICK binbob")
        ws.ws.send_binary(b"USER b 0 * :b")
        welcome = ws.expect(lambda m: b" 001 binbob " in m)
        assert isinstance(welcome, bytes)
        ws.ws.send_binary(b"PING :abc")
        assert ws.expect(lambda m: b"PONG" in m).endswith(b" abc")
    finally:
        ws.close()


def test_line_json_over_websocket_meets_irc(web_server: ServerProcess) -> None:
    ws = WsClient(ws_url(web_server, "/line"))
    tcp = _irc_tcp(web_server, "tcpcat")
    try:
        # JSON Lines from the first message: no banner text.
        welcome = json.loads(ws.recv())
        assert welcome["type"] == "welcome"
        assert json.loads(ws.recv()) == {"type": "prompt", "prompt": "nick"}
        ws.send_obj({"cmd": "nick", "nick": "jsondog"})
        ws.expect(lambda m: json.loads(m).get("type") == "ok")
        ws.send_obj({"cmd": "join", "room": "wsline"})
        ws.expect(lambda m: '"join"' in m)
        tcp.send("JOIN #wsline")
        tcp.expect(" 366 ")
        tcp.send("PRIVMSG #wsline :woof?")
        event = json.loads(ws.expect("woof?"))
        assert event["type"] == "message" and event["from"] == "tcpcat"
        ws.send_obj({"cmd": "say", "room": "wsline", "text": "meow"})
        assert tcp.expect("meow").startswith(":jsondog!")
    finally:
        ws.close()
        tcp.close()


def test_wrong_subprotocol_is_refused(web_server: ServerProcess) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        WsClient(ws_url(web_server, "/irc"), subprotocols=["xmpp"])
    assert refused.value.status_code == 400


def test_plain_get_is_not_an_upgrade(web_server: ServerProcess) -> None:
    sock = socket.create_connection(("127.0.0.1", web_server.ports["web"]), timeout=5)
    sock.sendall(b"GET /irc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    reply = b""
    while chunk := sock.recv(4096):
        reply += chunk
    sock.close()
    assert reply.startswith(b"HTTP/1.1 400")
    assert b"expected a WebSocket upgrade" in reply


def _masked(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    key = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode])
    length = len(payload)
    bit = 0x80 if mask else 0
    if length < 126:
        head += bytes([bit | length])
    elif length < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", length)
    if not mask:
        return head + payload
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        # A client's frames must be masked.
        (_masked(0x1, b"NICK x", mask=False), 1002),
        # Reserved opcode.
        (_masked(0x3, b"??"), 1002),
        # A text frame that is not UTF-8.
        (_masked(0x1, b"PRIVMSG #a :\xff\xfe"), 1007),
        # A control frame may not be fragmented.
        (_masked(0x9, b"ping", fin=False), 1002),
    ],
    ids=["unmasked", "reserved-opcode", "not-utf8", "fragmented-ping"],
)
def test_bad_frames_close_with_a_protocol_error(
    web_server: ServerProcess, frame: bytes, code: int
) -> None:
    bystander = WsClient(ws_url(web_server, "/irc"), subprotocols=["text.ircv3.net"])
    bad = WsClient(ws_url(web_server, "/irc"), subprotocols=["text.ircv3.net"])
    try:
        irc_register(bystander, "calm")
        bad.ws.sock.sendall(frame)
        assert bad.close_code() == code
        # The other client carries on.
        bystander.send("PING :still")
        bystander.expect("still")
    finally:
        bad.close()
        bystander.close()


def test_oversized_message_closes_with_1009_and_others_carry_on(
    web_server: ServerProcess,
) -> None:
    tcp = _irc_tcp(web_server, "tcpbig")
    big = WsClient(ws_url(web_server, "/irc"), subprotocols=["text.ircv3.net"])
    try:
        tcp.send("JOIN #bigroom")
        tcp.expect(" 366 ")
        irc_register(big, "bigmouth")
        big.send("JOIN #bigroom")
        big.expect(lambda m: " 366 " in m)
        # [web] max_message_bytes is 4096 here: this message is over it, in two frames.
        big.ws.send_frame(websocket.ABNF.create_frame("PRIVMSG #bigroom :" + "a" * 3000, 0x1, 0))
        big.ws.send_frame(websocket.ABNF.create_frame("b" * 3000, 0x0, 1))
        assert big.close_code() == 1009
        # The room saw the sender go, and nothing of the message.
        quit_line = tcp.expect(lambda line: "QUIT" in line or "PRIVMSG" in line)
        assert "QUIT" in quit_line and "bigmouth" in quit_line
        tcp.send("PRIVMSG #bigroom :still here")
        tcp.send("PING :alive")
        tcp.expect("alive")
    finally:
        big.close()
        tcp.close()


def test_refused_origin(web_server: ServerProcess) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        WsClient(
            ws_url(web_server, "/irc"),
            subprotocols=["text.ircv3.net"],
            origin="https://evil.example",
        )
    assert refused.value.status_code == 403


def test_the_pages_own_origin_is_allowed(web_server: ServerProcess) -> None:
    port = web_server.ports["web"]
    for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
        ws = WsClient(
            ws_url(web_server, "/irc"),
            subprotocols=["text.ircv3.net"],
            origin=origin,
            host=origin.split("//")[1],
        )
        ws.send("PING :x")
        ws.expect("PONG")
        ws.close()


def _ws_from(server: ServerProcess, source: str, forwarded_for: str) -> WsClient:
    return WsClient(
        ws_url(server, "/irc"),
        subprotocols=["text.ircv3.net"],
        source=source,
        header=[f"X-Forwarded-For: {forwarded_for}"],
    )


def _refused(client: WsClient) -> bool:
    """Whether the server refused the connection (the per-address limit)."""
    client.send("PING :x")
    try:
        reply = client.expect(lambda m: "PONG" in m or "ERROR" in m)
    except (websocket.WebSocketConnectionClosedException, ConnectionError):
        return True
    return "ERROR" in reply


def test_proxy_header_from_an_untrusted_peer_is_ignored(web_server: ServerProcess) -> None:
    # 127.0.0.3 is no trusted proxy: its header is ignored, so its clients all count as
    # 127.0.0.3, and the per-address limit (3) refuses the fourth.
    clients = [_ws_from(web_server, "127.0.0.3", f"198.51.100.{i}") for i in range(4)]
    try:
        assert [_refused(c) for c in clients] == [False, False, False, True]
    finally:
        for c in clients:
            c.close()


def test_proxy_header_from_a_trusted_proxy_names_the_client(web_server: ServerProcess) -> None:
    clients = [_ws_from(web_server, TRUSTED_PROXY, f"198.51.100.{i}") for i in range(4)]
    same = [_ws_from(web_server, TRUSTED_PROXY, "203.0.113.7") for _ in range(4)]
    try:
        # Four clients behind the proxy: four addresses, none over the limit.
        assert [_refused(c) for c in clients] == [False] * 4
        # The same client address four times is over it, proxy or not.
        assert [_refused(c) for c in same] == [False, False, False, True]
    finally:
        for c in clients + same:
            c.close()


def test_without_the_web_client_the_page_says_how_to_get_it(make_server, tmp_path) -> None:
    empty = tmp_path / "no-client"
    empty.mkdir()
    server = make_server(
        protocols=("irc", "web"),
        overrides={"web": {"client_dir": str(empty), "default_rooms": ["lobby", "dev"]}},
    )
    url = f"http://127.0.0.1:{server.ports['web']}/"
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        page = response.read().decode()
    assert "make web" in page and "npm" in page and "client_dir" in page
    # Which rooms, and who else is in them.
    assert "<b>lobby</b>" in page and "<b>dev</b>" in page
    assert "IRC" in page and "telnet" in page
