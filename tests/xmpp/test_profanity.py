"""End to end with a real terminal XMPP client: profanity, driven in tmux, logs in over
STARTTLS, chats with a line-chat user, joins a room and talks there.

Skipped when profanity or tmux is missing, unless CI is set (CI installs both: .ci/run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.server import LineClient, ServerProcess

pytestmark = pytest.mark.timeout(60)

PASSWORD = "correct horse"
WAIT = 8.0

if not (shutil.which("profanity") and shutil.which("tmux")) and not os.environ.get("CI"):
    pytest.skip("profanity and tmux are not installed", allow_module_level=True)


class Terminal:
    """profanity in a detached tmux session on a tmux server of its own."""

    def __init__(self, home: Path, command: str) -> None:
        self.socket = f"chatserver-test-{uuid.uuid4().hex[:8]}"
        self.tmux("new-session", "-d", "-s", "t", "-x", "200", "-y", "50", command)

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        return done.stdout

    def type(self, line: str) -> None:
        self.tmux("send-keys", "-t", "t", "-l", line)
        self.tmux("send-keys", "-t", "t", "Enter")

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def wait_for(self, text: str) -> str:
        deadline = time.monotonic() + WAIT
        while True:
            screen = self.screen()
            if text in screen:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never appeared on:\n{screen}")
            time.sleep(0.1)

    def close(self) -> None:
        self.tmux("kill-server")


def create_account(server: ServerProcess, name: str) -> None:
    server.create_account(name, PASSWORD)


@pytest.fixture
def profanity(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> Iterator[tuple[ServerProcess, Terminal]]:
    server = make_server(protocols=("line", "xmpp"))
    create_account(server, "alice")
    home = tmp_path / "home"
    accounts = home / "data" / "profanity" / "accounts"
    accounts.parent.mkdir(parents=True)
    (home / "config" / "profanity").mkdir(parents=True)
    # tls.policy=trust: STARTTLS is required, and the self-signed certificate is accepted.
    accounts.write_text(
        "[alice@localhost]\n"
        "enabled=true\n"
        "jid=alice@localhost\n"
        "server=127.0.0.1\n"
        f"port={server.ports['xmpp']}\n"
        "resource=profanity\n"
        f"password={PASSWORD}\n"
        "tls.policy=trust\n"
        "muc.service=conference.localhost\n"
        "muc.nick=alice\n"
    )
    accounts.chmod(0o600)
    terminal = Terminal(
        home,
        f"env HOME={home} XDG_DATA_HOME={home / 'data'} XDG_CONFIG_HOME={home / 'config'}"
        " TERM=xterm-256color profanity -a alice@localhost",
    )
    try:
        deadline = time.monotonic() + WAIT
        while "xmpp connection" not in server.log() or " is alice" not in server.log():
            assert time.monotonic() < deadline, f"profanity did not log in:\n{terminal.screen()}"
            time.sleep(0.1)
        terminal.wait_for("[TLS] [online]")
        yield server, terminal
    finally:
        terminal.close()


def line_user(server: ServerProcess, nick: str) -> LineClient:
    client = LineClient(server.ports["line"], timeout=WAIT)
    client.expect("*** Choose a nick:")
    client.send(nick)
    client.expect(f"*** You are {nick}.")
    return client


def test_profanity_chats_and_joins_a_room(profanity: tuple[ServerProcess, Terminal]) -> None:
    server, terminal = profanity
    carol = line_user(server, "carol")
    try:
        # One to one, both ways.
        terminal.type("/msg ~carol@localhost hello from profanity")
        assert carol.expect("*alice*") == "*alice* hello from profanity"
        carol.send("/msg alice hi back from line chat")
        terminal.type("/win 2")
        terminal.wait_for("~carol@localhost: hi back from line chat")

        # A room shared with the line-chat user.
        carol.send("/join dev")
        carol.expect("*** now talking in #dev")
        terminal.type("/join dev@conference.localhost")
        carol.expect("-!- alice joined #dev")
        terminal.wait_for("You have joined the room as alice")
        terminal.type("hello room")
        assert carol.expect("<alice>") == "[#dev] <alice> hello room"
        carol.send("hi room from carol")
        terminal.wait_for("carol: hi room from carol")
    finally:
        carol.close()
