"""Prometheus metrics and the health check, from the running server over HTTP."""

from __future__ import annotations

import base64
import time
import types
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.internet.task import Clock

from chatserver.server import health
from tests.hostile.clients import XmppClient, local
from tests.ops.helpers import PASSWORD, OpsServer, chat, cli, free_port, join, sync
from tests.support.server import LineClient

pytestmark = pytest.mark.timeout(60)


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def metrics_server(tmp_path: Path) -> tuple[OpsServer, str]:
    port = free_port()
    server = OpsServer(
        tmp_path,
        overrides={
            "metrics": {"enabled": True, "port": port, "lag_interval": 0.05},
            "line": {"flood_burst": 10, "flood_rate": 1.0, "flood_max_warnings": 0},
        },
    ).start()
    return server, f"http://127.0.0.1:{port}"


def test_metrics_count_what_happens(tmp_path: Path) -> None:
    server, base = metrics_server(tmp_path)
    port = server.ports["line"]
    alice = chat(port, "alice")
    alice.send("/register " + PASSWORD)
    alice.expect("*** alice is now registered")
    join(alice, "dev")
    bob = chat(port, "bob")
    join(bob, "dev")
    for i in range(3):
        alice.send(f"message {i}")
    bob.expect("[#dev] <alice> message 2")
    bob.send(f"/identify alice wrong-{PASSWORD}")
    bob.expect("!!! error: invalid password")
    flooder = chat(port, "flooder")
    flooder.send(b"".join(b"flood\r\n" for _ in range(40)))
    flooder.expect("Server closing connection: Excess flood")
    # A user who leaves with the same words was not dropped by the server.
    typist = chat(port, "typist")
    join(typist, "dev")
    typist.send("/quit Excess flood")
    bob.expect("-!- typist quit (Quit: Excess flood)")
    sync(bob)

    # The first lag sample comes one interval after the start.
    deadline = time.monotonic() + 5
    while True:
        status, content_type, text = get(f"{base}/metrics")
        found = samples(text)
        if found[("chatserver_event_loop_lag_seconds_count", ())] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    line = (("protocol", "line"),)
    assert found[("chatserver_connections", line)] == 2
    assert found[("chatserver_users", ())] == 2
    assert found[("chatserver_rooms", (("kind", "unregistered"),))] == 1
    assert found[("chatserver_messages_received_total", line)] == 3
    # Bob got the three messages (and joins); alice's own lines count as deliveries to her.
    assert found[("chatserver_deliveries_total", line)] >= 6
    assert found[("chatserver_logins_total", line)] == 1
    assert found[("chatserver_login_failures_total", line)] == 1
    assert found[("chatserver_disconnects_total", (*line, ("reason", "flood")))] == 1
    assert found[("chatserver_disconnects_total", (*line, ("reason", "slow_reader")))] == 0
    assert found[("chatserver_storage_seconds_count", (("operation", "create_account"),))] == 1
    assert found[("chatserver_event_loop_lag_seconds_count", ())] >= 1
    assert found[("process_open_fds", ())] > 5
    assert found[("process_resident_memory_bytes", ())] > 1e6

    assert get(f"{base}/health") == (200, "text/plain; charset=utf-8", "ok\n")
    assert "/metrics" in get(f"{base}/")[2]
    result = cli("health", "--config", str(server.config_path))
    assert (result.returncode, result.stdout) == (0, "ok\n")
    for client in (alice, bob):
        client.close()
    server.stop()
    down = cli("health", "--config", str(server.config_path))
    assert down.returncode == 1 and "no answer from" in down.stderr


def test_login_failures_are_counted_by_protocol(tmp_path: Path) -> None:
    port = free_port()
    server = OpsServer(
        tmp_path,
        protocols=("line", "irc", "xmpp"),
        overrides={"metrics": {"enabled": True, "port": port}},
    ).start()
    server.create_account("alice", PASSWORD)

    def failures() -> dict[str, float]:
        found = samples(get(f"http://127.0.0.1:{port}/metrics")[2])
        return {
            dict(labels)["protocol"]: value
            for (name, labels), value in found.items()
            if name == "chatserver_login_failures_total"
        }

    assert failures() == {"line": 0, "irc": 0, "xmpp": 0}

    line_user = chat(server.ports["line"], "bob")
    line_user.send(f"/identify alice wrong-{PASSWORD}")
    line_user.expect("!!! error: invalid password")

    irc = LineClient(server.ports["irc"])
    token = base64.b64encode(f"\0alice\0wrong-{PASSWORD}".encode()).decode()
    irc.send("CAP REQ :sasl")
    irc.send("AUTHENTICATE PLAIN")
    irc.expect("AUTHENTICATE +")
    irc.send(f"AUTHENTICATE {token}")
    irc.expect(" 904 ")
    # A wrong operator name is a failed check too (no [[operators]] here at all).
    irc.send("CAP END")
    irc.send("NICK carol")
    irc.send("USER carol 0 * :carol")
    irc.expect(" 001 carol ")
    irc.send(f"OPER admin {PASSWORD}")
    irc.expect(" 464 ")  # the answer to every failed OPER

    xmpp = XmppClient(server.ports["xmpp"])
    assert local(xmpp.auth_plain("alice", f"wrong-{PASSWORD}")) == "failure"
    xmpp.close()

    assert failures() == {"line": 1, "irc": 2, "xmpp": 1}
    for client in (line_user, irc):
        client.close()
    server.stop()


def test_health_command_without_metrics_connects_to_a_listener(tmp_path: Path) -> None:
    server = OpsServer(tmp_path).start()
    result = cli("health", "--config", str(server.config_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"line listens at 127.0.0.1:{server.ports['line']}\n"
    LineClient(server.ports["line"]).expect("*** Choose a nick:")
    server.stop()
    down = cli("health", "--config", str(server.config_path))
    assert down.returncode == 1 and "cannot connect to line" in down.stderr


# -- the check itself, on a fake server ------------------------------------------------------


class FakeStore:
    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def schema_version(self) -> defer.Deferred[int]:
        if isinstance(self.answer, Exception):
            return defer.fail(self.answer)
        if self.answer is None:
            return defer.Deferred()  # never answers
        return defer.succeed(self.answer)


def fake_server(store: Any, *, ready: bool = True, listening: bool = True) -> Any:
    listener = types.SimpleNamespace(protocol="line", point="127.0.0.1:2323")
    port = types.SimpleNamespace(connected=listening)
    return types.SimpleNamespace(
        ready=ready, exit_status=0, ports=[(listener, port)], store=store, reactor=Clock()
    )


def outcome(server: Any) -> Any:
    results: list[Any] = []
    defer.ensureDeferred(health.check(server)).addBoth(results.append)
    if not results:
        server.reactor.advance(health.STORE_TIMEOUT + 1)
    return results[0]


def test_health_check_reasons() -> None:
    assert outcome(fake_server(FakeStore(3))) == (True, "ok")
    assert outcome(fake_server(FakeStore(3), ready=False)) == (False, "starting")
    assert outcome(fake_server(FakeStore(3), listening=False)) == (
        False,
        "not listening: line 127.0.0.1:2323",
    )
    assert outcome(fake_server(FakeStore(OSError("disk I/O error")))) == (
        False,
        "the database failed: disk I/O error",
    )
    assert outcome(fake_server(FakeStore(None))) == (
        False,
        "the database did not answer within 3 seconds",
    )
