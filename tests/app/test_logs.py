"""What the real server writes to its log: its own lines, not Twisted's machinery; one shape
of connection line on every protocol; errors before the start in the chosen format."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.app.helpers import REPO, chatserver, clean_env, line_only_config, run_cli
from tests.hostile.clients import IrcUser, LineUser, XmppClient, close_all
from tests.support.server import ServerProcess

pytestmark = pytest.mark.timeout(60)

PASSWORD = "log-test-pw"
# Twisted's own lines: what the server must not say at info.
CHATTER = re.compile(
    r"Starting factory|Stopping factory|starting on \d|Port \d+ Closed|Main loop|0x[0-9a-f]{6,}"
)


def events(server: ServerProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]


def wait_for_event(server: ServerProcess, test: Any, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in events(server) if test(e)]
        if found:
            return found[0]
        assert time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.05)


def json_server(tmp_path: Path, level: str = "info") -> ServerProcess:
    return ServerProcess(
        tmp_path,
        protocols=("line", "irc", "xmpp"),
        overrides={"server": {"log_format": "json", "log_level": level}},
    ).start()


def by_message(found: list[dict[str, Any]], pattern: str) -> list[dict[str, Any]]:
    regex = re.compile(pattern)
    return [e for e in found if regex.search(e["message"])]


def test_connection_lines_are_one_shape_on_every_protocol_and_probes_stay_out(
    tmp_path: Path,
) -> None:
    server = json_server(tmp_path)
    try:
        irc = IrcUser(server.ports["irc"], "bob")
        irc.send_line(f"PRIVMSG NickServ :REGISTER {PASSWORD}")
        irc.expect(lambda text: "NOTICE bob" in text and "registered" in text)
        irc.send_line("QUIT :bye")
        irc.read_until_closed()
        line = LineUser(server.ports["line"], "alice")
        line.send_line(f"/register {PASSWORD}")
        line.expect("*** alice is now registered")
        line.send_line("/quit")
        line.read_until_closed()
        xmpp = XmppClient(server.ports["xmpp"])
        assert xmpp.register("carol", PASSWORD).get("type") == "result"
        xmpp.login("carol", PASSWORD, "phone")
        xmpp.send("</stream:stream>")
        xmpp.until_closed()
        # Health probes (and port scanners): connect, say nothing, go.
        for name in ("line", "irc", "xmpp"):
            socket.create_connection(("127.0.0.1", server.ports[name]), timeout=5).close()
        probe = run_cli("health", "--config", str(server.config_path), timeout=30)
        assert probe.returncode == 0, probe.stderr
    finally:
        close_all()
        assert server.stop() == 0
    found = events(server)
    connection_lines = [e for e in found if " connection " in e["message"]]
    # Each user: "is <nick>" when it registers, "(<nick>) closed" when it goes; nothing else at
    # info, and nothing at all for the probes.
    shapes = sorted(
        re.sub(r"connection \d+", "connection N", e["message"]) for e in connection_lines
    )
    assert shapes == sorted(
        [
            "irc connection N from 127.0.0.1 is bob",
            "irc connection N (bob) closed (Quit: bye)",
            "line connection N from 127.0.0.1 is alice",
            "line connection N (alice) closed (quit)",
            "xmpp connection N from 127.0.0.1 is carol",
            "xmpp connection N (carol) closed (Disconnected)",
        ]
    ), shapes
    for e in connection_lines:
        assert e["level"] == "info" and e["address"] == "127.0.0.1" and e["nick"] in e["message"]
        assert e["namespace"] == f"protocols.{e['protocol']}.connection"
    assert "(*)" not in server.log()
    # Every account registration, whatever its protocol, in the same words.
    registered = sorted(e["message"] for e in found if " registered from " in e["message"])
    assert registered == [
        "account alice registered from 127.0.0.1 (line)",
        "account bob registered from 127.0.0.1 (irc)",
        "account carol registered from 127.0.0.1 (xmpp)",
    ]


def test_no_twisted_chatter_at_info_and_no_legacy_namespace(tmp_path: Path) -> None:
    server = json_server(tmp_path)
    IrcUser(server.ports["irc"], "dave").close()
    close_all()
    assert server.stop() == 0
    found = events(server)
    assert [e["message"] for e in found if CHATTER.search(e["message"])] == []
    assert {e["namespace"] for e in found} & {"log_legacy", "-"} == set()
    # What the server itself says about its listeners is still there.
    assert len(by_message(found, r"^listening protocol=")) == 5
    assert by_message(found, r"^stopped$")


def test_twisteds_lines_are_debug_and_named_twisted(tmp_path: Path) -> None:
    server = json_server(tmp_path, level="debug")
    socket.create_connection(("127.0.0.1", server.ports["line"]), timeout=5).close()
    wait_for_event(server, lambda e: e["message"].startswith("line connection ") and "closed" in e["message"])  # fmt: skip
    assert server.stop() == 0
    found = events(server)
    chatter = [e for e in found if CHATTER.search(e["message"])]
    assert by_message(chatter, r"Port \d+ Closed") and by_message(chatter, r"starting on \d")
    assert {e["level"] for e in chatter} == {"debug"}
    assert {e["namespace"] for e in found} & {"log_legacy", "-"} == set()
    assert all(e["namespace"] == "twisted" for e in by_message(chatter, r"Port \d+ Closed"))
    # The probes (ours, and the readiness check's): opened and closed, at debug.
    probes = [e for e in found if e["message"].startswith("line connection ")]
    assert by_message(probes, r" from 127\.0\.0\.1 closed \(by the client\)$")
    assert {e["level"] for e in probes} == {"debug"}, probes


def test_errors_before_the_start_are_json_when_the_log_is(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[line]\nport = "many"\n')
    done = run_cli("run", "--config", str(config), "--log-format", "json")
    assert done.returncode == 2
    (record,) = [json.loads(line) for line in done.stderr.splitlines()]
    assert record["level"] == "critical" and record["namespace"] == "chatserver.cli"
    assert "[line] port" in record["message"] and record["time"].endswith("+00:00")
    # Said in the file: the same (the line that is wrong is another one).
    config.write_text('[server]\nlog_format = "json"\n[line]\nport = "many"\n')
    done = run_cli("run", "--config", str(config))
    assert json.loads(done.stderr)["level"] == "critical"
    # Text otherwise.
    config.write_text('[line]\nport = "many"\n')
    done = run_cli("run", "--config", str(config))
    assert done.returncode == 2 and not done.stderr.startswith("{")
    assert "[line] port" in done.stderr


def test_a_failed_start_is_json_when_the_log_is(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = line_only_config(tmp_path / "c.toml", port)
        done = subprocess.run(
            chatserver("run", "--config", str(config), "--data-dir", str(tmp_path / "d"), "--log-format", "json"),
            capture_output=True, text=True, env=clean_env(), timeout=30,
        )  # fmt: skip
    assert done.returncode == 1
    found = [json.loads(line) for line in done.stderr.splitlines()]
    (failure,) = [e for e in found if e["level"] == "critical"]
    assert failure["message"].startswith(
        f"cannot start: cannot listen protocol=line address=127.0.0.1:{port}"
    )


def test_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "chatserver", "--version"],
        capture_output=True, text=True, env=clean_env(), timeout=30,
    )  # fmt: skip
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert done.returncode == 0
    assert done.stdout.strip() == f"chatserver {project['version']}"


def test_the_start_up_heap_is_frozen_once_ready(tmp_path: Path) -> None:
    # Full collections then skip what start-up built (chatserver/server/collector.py).
    server = json_server(tmp_path, level="debug")
    try:
        event = wait_for_event(server, lambda e: e["message"].startswith("froze "))
    finally:
        assert server.stop() == 0
    assert event["namespace"] == "chatserver.collector" and event["level"] == "debug"
    # The modules, tables and machinery of a started server: tens of thousands of objects.
    assert event["count"] > 10_000
    # Once: frozen after "ready", and only then.
    found = events(server)
    ready = next(i for i, e in enumerate(found) if e["message"].startswith("ready "))
    froze = [i for i, e in enumerate(found) if e["message"].startswith("froze ")]
    assert len(froze) == 1 and froze[0] > ready
