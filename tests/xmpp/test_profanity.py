"""End to end with a real terminal XMPP client: profanity, driven in tmux, logs in over
STARTTLS, chats with a line-chat user, joins a room and talks there.

Skipped when profanity or tmux is missing, unless CI is set (CI installs both: .ci/run).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.server import LineClient, ServerProcess
from tests.support.terminal import Terminal

pytestmark = pytest.mark.timeout(60)

PASSWORD = "correct horse"
WAIT = 8.0

if not (shutil.which("profanity") and shutil.which("tmux")) and not os.environ.get("CI"):
    pytest.skip("profanity and tmux are not installed", allow_module_level=True)


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
        f"env HOME={home} XDG_DATA_HOME={home / 'data'} XDG_CONFIG_HOME={home / 'config'}"
        " TERM=xterm-256color profanity -a alice@localhost",
        width=200,
        height=50,
        wait=WAIT,
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
