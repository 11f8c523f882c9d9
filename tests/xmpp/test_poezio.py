"""End to end with Poezio, a real terminal XMPP client (slixmpp inside), driven in tmux: it
logs in over STARTTLS, joins a room an IRC user is in, and the two talk.

Poezio refuses to run as root, so as root (CI) it runs as ``nobody`` with a home of its
own.  Skipped when poezio or tmux is missing, unless CI is set (CI installs both: .ci/run).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.server import LineClient, ServerProcess
from tests.support.terminal import Terminal

pytestmark = pytest.mark.timeout(90)

PASSWORD = "correct horse"
WAIT = 15.0
ROOM = "tea"

if not (shutil.which("poezio") and shutil.which("tmux")) and not os.environ.get("CI"):
    pytest.skip("poezio and tmux are not installed", allow_module_level=True)


def irc_user(server: ServerProcess, nick: str) -> LineClient:
    client = LineClient(server.ports["irc"], timeout=WAIT)
    client.send(f"NICK {nick}")
    client.send(f"USER {nick} 0 * :{nick}")
    client.expect(f" 001 {nick} ")
    return client


@pytest.fixture
def poezio(make_server: Callable[..., ServerProcess]) -> Iterator[tuple[ServerProcess, Terminal]]:
    server = make_server(protocols=("irc", "xmpp"))
    server.create_account("alice", PASSWORD)
    # Outside pytest's directory, which only root may enter.
    home = Path(tempfile.mkdtemp(prefix="chatserver-poezio-"))
    # The server's self-signed certificate is the authority Poezio checks it against (for
    # the name "localhost", the XMPP domain), so STARTTLS is verified, not skipped.
    shutil.copy(server.data_dir / "tls.crt", home / "server.crt")
    config = home / "poezio.cfg"
    config.write_text(
        "[Poezio]\n"
        "jid = alice@localhost/poezio\n"
        f"password = {PASSWORD}\n"
        "custom_host = 127.0.0.1\n"
        f"custom_port = {server.ports['xmpp']}\n"
        f"ca_cert_path = {home / 'server.crt'}\n"
        f"rooms = {ROOM}@conference.localhost/alice\n"
    )
    env = (
        f"env HOME={home} XDG_CONFIG_HOME={home / 'config'} XDG_DATA_HOME={home / 'data'}"
        f" XDG_CACHE_HOME={home / 'cache'} LANG=C.UTF-8 TERM=xterm-256color"
    )
    prefix = ""
    if os.geteuid() == 0:
        shutil.chown(home, "nobody")
        for path in home.iterdir():
            shutil.chown(path, "nobody")
        prefix = "runuser -u nobody -- "
    terminal = Terminal(f"{prefix}{env} poezio -f {config}", width=160, height=40, wait=WAIT)
    try:
        yield server, terminal
    finally:
        terminal.close()
        shutil.rmtree(home, ignore_errors=True)


def test_poezio_joins_a_room_and_talks_with_an_irc_user(
    poezio: tuple[ServerProcess, Terminal],
) -> None:
    server, terminal = poezio
    dave = irc_user(server, "dave")
    try:
        dave.send(f"JOIN #{ROOM}")
        # Poezio logs in and joins the room from its configuration.
        dave.expect(":alice!alice@", timeout=WAIT)
        assert "xmpp connection" in server.log() and " is alice" in server.log()
        # Alt-1: the room's tab.
        terminal.keys("M-1")
        screen = terminal.wait_for("You (alice) joined the room")
        # The occupant list (narrow: "~dav") shows the IRC user, a guest.
        assert "~dav" in screen
        dave.send(f"PRIVMSG #{ROOM} :hello from irc")
        terminal.wait_for("dave> hello from irc")
        terminal.type("hello from poezio")
        line = dave.expect("hello from poezio")
        assert line.startswith(":alice!") and f"PRIVMSG #{ROOM} :hello from poezio" in line
    finally:
        dave.close()
