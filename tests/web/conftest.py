"""The real server with its web listener, and a WebSocket client (websocket-client) for it.

``web_server``   one server per module: line, IRC, XMPP and web on loopback; per-address limit
                 of 3 connections (loopback not exempt), ``127.0.0.2`` a trusted proxy.
``WsClient``     a blocking WebSocket client: ``send``, ``recv`` (one message), ``expect``,
                 ``close_code`` (the code of the server's close frame).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket

from tests.support.server import ServerProcess

TRUSTED_PROXY = "127.0.0.2"
PER_ADDRESS = 3


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(
        Path(tmp_path_factory.mktemp("web")),
        protocols=("line", "irc", "xmpp", "web"),
        overrides={
            "chat": {"max_connections_per_address": PER_ADDRESS, "address_limit_exempt": []},
            "web": {"trusted_proxies": [TRUSTED_PROXY], "max_message_bytes": 4096},
            "xmpp": {"registration": "open"},
            "irc": {"flood_burst": 0},
        },
    )
    server.start()
    yield server
    server.kill()


def ws_url(server: ServerProcess, path: str) -> str:
    return f"ws://127.0.0.1:{server.ports['web']}{path}"


class WsClient:
    """One WebSocket connection; every wait is bounded."""

    def __init__(
        self,
        url: str,
        *,
        subprotocols: list[str] | None = None,
        source: str | None = None,
        rcvbuf: int | None = None,
        timeout: float = 5.0,
        **options: Any,
    ) -> None:
        sock = None
        if source is not None or rcvbuf is not None:
            host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if rcvbuf is not None:
                # Set before connecting, so the window the server sees is small from the start.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(timeout)
            if source is not None:
                sock.bind((source, 0))
            sock.connect((host, int(port)))
        self.ws = websocket.create_connection(
            url, subprotocols=subprotocols, timeout=timeout, socket=sock, **options
        )
        self.seen: list[str | bytes] = []

    @property
    def subprotocol(self) -> str | None:
        return self.ws.subprotocol

    def send(self, text: str) -> None:
        self.ws.send(text)

    def send_obj(self, obj: dict[str, Any]) -> None:
        self.ws.send(json.dumps(obj))

    def recv(self) -> str | bytes:
        message = self.ws.recv()
        self.seen.append(message)
        return message

    def expect(self, predicate: Any, timeout: float = 5.0) -> str | bytes:
        """Messages until one contains ``predicate`` (str) or satisfies it (callable)."""
        test = predicate if callable(predicate) else (lambda m: predicate in m)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.recv()
            if test(message):
                return message
        raise TimeoutError(f"not seen; last messages: {self.seen[-10:]}")

    def close_code(self, timeout: float = 5.0) -> int:
        """Read until the server's close frame; its status code.  The close is answered as
        a client does, but a peer that has gone already (it closed on a flood whose rest it
        never read, so its kernel reset the connection) does not hide the code it sent."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = self.ws.recv_frame()
            if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
                data = frame.data
                try:
                    self.ws.send_close()
                except (OSError, websocket.WebSocketException):
                    pass
                return int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
        raise TimeoutError("no close frame")

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except Exception:
            self.ws.shutdown()


def irc_register(client: WsClient, nick: str) -> None:
    client.send(f"NICK {nick}")
    client.send(f"USER {nick} 0 * :{nick}")
    client.expect(lambda m: f" 001 {nick} " in _text(m))


def _text(message: str | bytes) -> str:
    return message.decode() if isinstance(message, bytes) else message
