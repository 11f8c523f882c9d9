"""The real server in a subprocess: readiness line, a line client, SIGTERM, exit status."""

from __future__ import annotations

import json
import os
import socket
import ssl
import sys
from pathlib import Path

from tests.app.helpers import (
    TAC_FILE,
    TIMEOUT,
    chatserver,
    clean_env,
    free_port,
    line_only_config,
    listening_pattern,
    recv_some,
    recv_until_closed,
    run_cli,
)


def test_run_greets_then_says_goodbye_on_sigterm(tmp_path: Path, spawn) -> None:
    port = free_port()
    config = line_only_config(tmp_path / "c.toml", port)
    server = spawn(
        chatserver("run", "--config", str(config), "--data-dir", str(tmp_path / "data")),
        env=clean_env(),
    )
    server.wait_for(listening_pattern("line", "127.0.0.1", port))
    server.wait_for(r"ready server=test\.chatserver listeners=1")

    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        greeting = recv_some(sock)
        assert greeting.strip()
        status = server.terminate()
        goodbye = recv_until_closed(sock)
    assert b"shutting down" in goodbye.lower(), goodbye
    assert status == 0, server.output()
    output = server.output()
    lines = output.splitlines()
    received = next(i for i, line in enumerate(lines) if "received SIGTERM, shutting down" in line)
    assert any(line.endswith("[chatserver.app#info] stopped") for line in lines[received:])
    assert "Traceback" not in output
    assert (tmp_path / "data" / "chatserver.db").exists()


def test_json_logs_and_sigint(tmp_path: Path, spawn) -> None:
    port = free_port()
    config = line_only_config(tmp_path / "c.toml", port, server={"log_level": "info"})
    server = spawn(
        chatserver(
            "run",
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path / "data"),
            "--log-format",
            "json",
        ),
        env=clean_env(),
    )
    server.wait_for(r'"protocol": "line"')
    server.proc.send_signal(2)
    assert server.wait() == 0
    events = [json.loads(line) for line in server.output().splitlines()]
    assert all({"time", "level", "namespace", "message"} <= set(e) for e in events)
    listening = [e for e in events if e["message"].startswith("listening ")]
    assert [(e["message"], e["protocol"], e["address"], e["level"]) for e in listening] == [
        (f"listening protocol=line address=127.0.0.1:{port}", "line", f"127.0.0.1:{port}", "info")
    ]
    assert any(e["message"] == "stopped" and e["namespace"] == "chatserver.app" for e in events)
    assert any(e["message"] == "received SIGINT, shutting down" for e in events)


def test_log_level_filters(tmp_path: Path, spawn) -> None:
    port = free_port()
    config = line_only_config(tmp_path / "c.toml", port, server={"log_level": "warn"})
    # A port in use makes the only line worth a warning (critical, in fact).
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        server = spawn(
            chatserver("run", "--config", str(config), "--data-dir", str(tmp_path / "data")),
            env=clean_env(),
        )
        assert server.wait() == 1
    output = server.output()
    assert f"cannot start: cannot listen protocol=line address=127.0.0.1:{port}" in output
    assert "listening protocol" not in output
    assert "#info]" not in output


def test_port_in_use_exits_1(tmp_path: Path, spawn) -> None:
    port = free_port()
    config = line_only_config(tmp_path / "c.toml", port)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        server = spawn(
            chatserver("run", "--config", str(config), "--data-dir", str(tmp_path / "data")),
            env=clean_env(),
        )
        assert server.wait() == 1
    output = server.output()
    assert f"cannot listen protocol=line address=127.0.0.1:{port}" in output
    assert "Address already in use" in output
    assert "stopped" in output


def test_account_commands_while_the_server_runs(tmp_path: Path, spawn) -> None:
    port = free_port()
    data = tmp_path / "data"
    config = line_only_config(tmp_path / "c.toml", port)
    server = spawn(
        chatserver("run", "--config", str(config), "--data-dir", str(data)), env=clean_env()
    )
    server.wait_for(listening_pattern("line", "127.0.0.1", port))
    created = run_cli(
        "account",
        "create",
        "frank",
        "--config",
        str(config),
        "--data-dir",
        str(data),
        stdin="pw-frank-1\n",
    )
    assert created.returncode == 0, created.stderr
    listed = run_cli("account", "list", "--config", str(config), "--data-dir", str(data))
    assert listed.stdout.startswith("frank\t")
    assert server.terminate() == 0


ECHO_SERVER = """
import sys
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol

from chatserver.server.app import ChatServer, listeners_for
from chatserver.config import load_config

class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)

def build_irc(ctx):
    return listeners_for("irc", ctx.config.irc, Factory.forProtocol(Echo))

from twisted.logger import globalLogBeginner, textFileLogObserver
globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
server = ChatServer(load_config(sys.argv[1]), reactor=reactor, protocols={"irc": build_irc})
reactor.callWhenRunning(server.startService)
reactor.addSystemEventTrigger("before", "shutdown", server.stopService)
reactor.run()
sys.exit(server.exit_status)
"""


def test_tls_listener_with_the_self_signed_certificate(tmp_path: Path, spawn) -> None:
    # The protocol table is the seam: a stand-in IRC entry gets a plain and a TLS listener.
    plain, tls = free_port(), free_port()
    config = line_only_config(
        tmp_path / "c.toml",
        free_port(),
        server={"data_dir": str(tmp_path / "data")},
        irc={"enabled": True, "port": plain, "tls_port": tls},
    )
    server = spawn([sys.executable, "-c", ECHO_SERVER, str(config)], env=clean_env())
    server.wait_for(listening_pattern("irc", "127.0.0.1", plain))
    line = server.wait_for(listening_pattern("irc", "127.0.0.1", tls))
    assert line.endswith(" tls=yes")
    assert "made a self-signed TLS certificate" in server.output()

    context = ssl.create_default_context(cafile=str(tmp_path / "data" / "tls.crt"))
    with socket.create_connection(("127.0.0.1", tls), timeout=TIMEOUT) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            assert sock.version() in ("TLSv1.2", "TLSv1.3")
            sock.sendall(b"hello over tls\n")
            assert sock.recv(100) == b"hello over tls\n"
    assert server.terminate() == 0


def test_twistd_runs_the_tac_file(tmp_path: Path, spawn) -> None:
    port = free_port()
    config = line_only_config(tmp_path / "c.toml", port)
    twistd = Path(sys.executable).with_name("twistd")
    argv = [str(twistd)] if twistd.exists() else [sys.executable, "-m", "twisted.scripts.twistd"]
    server = spawn(
        [*argv, "--nodaemon", "--pidfile=", "-y", str(TAC_FILE)],
        cwd=tmp_path,
        env=clean_env(CHATSERVER_CONFIG=str(config), CHATSERVER_DATA_DIR=str(tmp_path / "data")),
    )
    server.wait_for(listening_pattern("line", "127.0.0.1", port))
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        assert recv_some(sock).strip()
        # twistd re-raises the signal after a clean stop, so the status says "killed by SIGTERM".
        assert server.terminate() in (0, -15)
        assert b"shutting down" in recv_until_closed(sock).lower()
    assert "stopped" in server.output()
    assert (tmp_path / "data" / "chatserver.db").exists()
    assert not os.path.exists(tmp_path / "twistd.pid")
