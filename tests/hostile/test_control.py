"""Hostile input on the operator's control socket (the real server), with line-chat bystanders
chatting beside it.

Only the server's own user can reach the socket, so these are that user's scripts gone
wrong: generated JSON and bytes, requests far too long, a script that never reads its
answers, many connections at once.  Each must get a documented answer (a JSON object with
``ok``, and ``error`` when it is false) or a clean close, and never harm anyone else.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.hostile import fuzz
from tests.hostile.harness import Env, count, start_env, stop_env

pytestmark = pytest.mark.usefixtures("guard")

PROTO = "control"
BATCH = 25
# Commands that change nothing others see: generated requests may name any of these, or
# anything else; the ones that act (kill, kline, notice …) get only badly typed parameters.
HARMLESS = ["who", "rooms", "klines", "account-list", "purge", "nope", "", "WHO"]
ACTING = ["kill", "kick", "kline", "unkline", "notice", "account-create", "account-delete"]

JSON_SCALAR = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
JSON_VALUE = st.recursive(
    JSON_SCALAR,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
HARMLESS_REQUEST = st.builds(
    lambda cmd, extra: {"cmd": cmd, **extra},
    st.sampled_from(HARMLESS) | st.text(max_size=12),
    st.dictionaries(
        st.sampled_from(["room", "protocol", "nick", "x", "cmd2"]), JSON_VALUE, max_size=3
    ),
)
# Non-string values only: the table refuses them before any handler runs.
BADLY_TYPED = st.builds(
    lambda cmd, name, value: {"cmd": cmd, name: value},
    st.sampled_from(ACTING),
    st.sampled_from(["nick", "room", "mask", "text", "name", "password"]),
    st.none() | st.booleans() | st.integers() | st.lists(st.text(max_size=5), max_size=3),
)
CASE = (
    HARMLESS_REQUEST.map(lambda r: json.dumps(r).encode())
    | BADLY_TYPED.map(lambda r: json.dumps(r).encode())
    | JSON_VALUE.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=200).map(lambda b: b.replace(b"\n", b" "))
)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    environment = start_env(tmp_path_factory.mktemp("control"), "line", protocols=("line",))
    yield environment
    stop_env(environment)


def control(env: Env) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(env.server.data_dir / "control.sock"))
    return sock


def answers(sock: socket.socket, n: int) -> list[dict[str, Any]]:
    reader = sock.makefile("rb")
    got = []
    for _ in range(n):
        line = reader.readline()
        assert line.endswith(b"\n"), f"closed after {len(got)} answers"
        got.append(json.loads(line))
    return got


def documented(answer: dict[str, Any]) -> bool:
    if not isinstance(answer.get("ok"), bool):
        return False
    if answer["ok"]:
        return True
    error = answer.get("error")
    return isinstance(error, str) and bool(error) and not error.startswith("internal error")


def test_generated_requests(env: Env, scale: int) -> None:
    """Generated JSON and bytes: one documented answer per non-empty line, in order."""
    sock = control(env)

    @fuzz.batch_settings(40 * scale)
    @given(st.lists(CASE, min_size=BATCH, max_size=BATCH))
    def batches(payloads: list[bytes]) -> None:
        lines = [p for p in payloads if p.strip()]
        sock.sendall(b"".join(p + b"\n" for p in payloads))
        got = answers(sock, len(lines))
        assert all(documented(a) for a in got), got
        count(PROTO, len(payloads))

    try:
        batches()
    finally:
        sock.close()


def test_a_request_far_too_long_closes_only_that_connection(env: Env) -> None:
    sock = control(env)
    other = control(env)
    sock.sendall(b'{"cmd": "who", "x": "' + b"a" * 70000)
    assert answers(sock, 1) == [{"ok": False, "error": "request longer than 65536 bytes"}]
    other.sendall(b'{"cmd": "rooms"}\n')
    assert answers(other, 1)[0]["ok"] is True
    sock.close()
    other.close()
    count(PROTO, 2)


def test_a_script_that_never_reads(env: Env) -> None:
    """Thousands of requests, no answer read: the server stops reading that socket once its
    answers pile up, and serves everyone else meanwhile."""
    sloth = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sloth.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sloth.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sloth.connect(str(env.server.data_dir / "control.sock"))
    sloth.setblocking(False)
    request = b'{"cmd": "klines"}\n' * 100
    sent = 0
    blocked_since: float | None = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            sent += sloth.send(request)
            blocked_since = None
        except BlockingIOError:
            # Blocked for a whole second: the server no longer reads this peer (it would
            # drain a few KiB in far less).
            now = time.monotonic()
            blocked_since = blocked_since or now
            if now - blocked_since >= 1.0:
                break
            time.sleep(0.05)
    assert time.monotonic() < deadline, "the server kept reading a peer that never reads"
    other = control(env)
    other.sendall(b'{"cmd": "who"}\n')
    assert answers(other, 1)[0]["ok"] is True
    sloth.close()
    other.close()
    env.notes.append(f"control: a peer that never reads was stopped after {sent // 1024} KiB")
    count(PROTO, 2)


def test_many_connections_at_once(env: Env) -> None:
    socks = [control(env) for _ in range(200)]
    for sock in socks:
        sock.sendall(b'{"cmd": "who"}\ngarbage\n')
    for sock in socks:
        first, second = answers(sock, 2)
        assert first["ok"] is True and second["error"].startswith("not JSON")
        sock.close()
    count(PROTO, 200)
