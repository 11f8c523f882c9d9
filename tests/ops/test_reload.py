"""SIGHUP: what can change live applies at once, what cannot is refused by name."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.ops.helpers import OPER_PASSWORD, OpsServer, chat, join, operators_toml, sync
from tests.support.server import LineClient

pytestmark = pytest.mark.timeout(60)


def greeting(port: int) -> list[str]:
    client = LineClient(port)
    lines = []
    while (line := client.read_line()) != "*** Choose a nick:":
        lines.append(line)
    client.close()
    return lines


def test_live_changes_apply_and_listener_changes_are_refused(tmp_path: Path) -> None:
    server = OpsServer(tmp_path, overrides={"line": {"motd": "first motd"}}).start()
    port = server.ports["line"]
    assert "*** first motd" in greeting(port)
    alice = chat(port, "alice")
    join(alice, "dev")
    bob = chat(port, "bob")
    join(bob, "dev")

    old_port = port
    mark = len(server.log())
    server.edit_config(
        {
            "line": {"motd": "second motd", "port": 1, "flood_burst": 3, "flood_rate": 0.1},
            "chat": {"topic_max": 5, "cloak_secret": "new secret"},
            "server": {"listen": ["127.0.0.1", "::1"]},
        },
        extra=operators_toml(),
    )
    server.sighup()
    applied = server.wait_log("reload: configuration applied", start=mark)
    log = server.log()[mark:]
    assert (
        f"reload: [line] port cannot change while the server runs; keeping {old_port}"
        " (restart to use 1)" in log
    )
    assert 'reload: [chat] cloak_secret cannot change while the server runs; keeping ""' in log
    assert "reload: [server] listen cannot change" in log
    for key in ("[line] motd", "[line] flood_burst", "[chat] topic_max", "[[operators]]"):
        assert key in applied

    # The new MOTD for new connections, on the port that was kept.
    assert "*** second motd" in greeting(old_port)
    # [chat] settings at once.
    alice.send("/topic abcdefghij")
    assert bob.expect("changed the topic") == "-!- alice changed the topic of #dev to: abcde"
    # Operators from the reloaded file.
    alice.send("/oper admin " + OPER_PASSWORD)
    alice.expect("*** you are now a server operator")
    # Flood limits, on a connection opened before the reload.
    for i in range(6):
        bob.send(f"line {i}")
    assert bob.expect("!!!").startswith("!!! error: you are sending too fast")
    server.stop()


def test_a_file_with_errors_changes_nothing(tmp_path: Path) -> None:
    server = OpsServer(tmp_path, overrides={"line": {"motd": "kept"}}).start()
    text = server.config_path.read_text()
    server.config_path.write_text(text.replace('motd = "kept"', 'motd = "lost"') + "\n[nope]\n")
    mark = server.reload(expect="nothing changed")
    assert "[nope]: unknown section" in server.log()[mark:]
    assert "*** kept" in greeting(server.ports["line"])
    # The server still reloads once the file is fixed.
    server.config_path.write_text(text.replace('motd = "kept"', 'motd = "fixed"'))
    server.reload()
    assert "*** fixed" in greeting(server.ports["line"])
    server.stop()


def test_bans_from_a_reload_apply_to_users_online(tmp_path: Path) -> None:
    server = OpsServer(tmp_path).start()
    port = server.ports["line"]
    mallory = chat(port, "mallory")
    bystander = chat(port, "bob")
    server.edit_config({}, extra='[[bans]]\nmask = "mallory"\nreason = "enough"\n')
    mark = server.reload()
    assert "reload: banned users disconnected: mallory" in server.log()[mark:]
    assert mallory.expect("Server closing connection") == (
        "-!- Server closing connection: You are banned from this server: enough"
    )
    sync(bystander)
    # And lifted by the next reload.
    server.edit_config({}, extra="")
    server.reload()
    chat(port, "mallory")
    server.stop()


def test_irc_picks_up_its_new_section(tmp_path: Path) -> None:
    motd = tmp_path / "motd.txt"
    motd.write_text("old irc motd\n")
    server = OpsServer(
        tmp_path / "s", protocols=("line", "irc"), overrides={"irc": {"motd_file": str(motd)}}
    ).start()
    motd2 = tmp_path / "motd2.txt"
    motd2.write_text("new irc motd\n")
    server.edit_config({"irc": {"motd_file": str(motd2)}})
    server.reload()
    with socket.create_connection(("127.0.0.1", server.ports["irc"]), timeout=5) as irc:
        irc.sendall(b"NICK ircuser\r\nUSER u 0 * :U\r\n")
        data = b""
        deadline = time.monotonic() + 5
        while b" 376 " not in data and b" 422 " not in data and time.monotonic() < deadline:
            irc.settimeout(max(deadline - time.monotonic(), 0.01))
            data += irc.recv(65536)
    assert b"new irc motd" in data and b"old irc motd" not in data
    server.stop()
