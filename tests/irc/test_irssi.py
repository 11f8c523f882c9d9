"""irssi, the README's first IRC client, connecting over TLS with the README's own command.

irssi runs in a detached tmux session of its own.  The test skips when irssi or tmux is
missing, except in CI (``CI`` set), where ``.ci/run`` installs them and a missing client is a
failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.server import LineClient, ServerProcess

IRSSI = shutil.which("irssi")
TMUX = shutil.which("tmux")
WAIT = 20.0
README = Path(__file__).resolve().parents[2] / "README.md"

if IRSSI is None or TMUX is None:
    if os.environ.get("CI"):
        raise RuntimeError("irssi or tmux is not installed: .ci/run should have installed them")
    pytest.skip("irssi or tmux is not installed", allow_module_level=True)

pytestmark = pytest.mark.timeout(60)


class Irssi:
    """irssi in a detached tmux session on a tmux server of its own."""

    def __init__(self, home: Path, nick: str) -> None:
        self.socket = f"chatserver-irssi-{uuid.uuid4().hex[:8]}"
        home.mkdir(parents=True, exist_ok=True)
        self.tmux(
            "new-session", "-d", "-s", "t", "-x", "200", "-y", "50",
            f"TERM=xterm-256color {IRSSI} --home={home} -n {nick}",
        )  # fmt: skip

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            [str(TMUX), "-L", self.socket, *args], capture_output=True, text=True, timeout=10
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


def readme_tls_command() -> str:
    """The irssi TLS command as the README gives it (host and port to be replaced)."""
    found = re.search(r"irssi: .*\(TLS: `(/connect [^`]+)`\)", README.read_text())
    assert found, "the README no longer shows how irssi connects over TLS"
    return found[1]


def test_irssi_connects_over_tls_as_the_readme_says(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = make_server(protocols=("line", "irc"))
    command = readme_tls_command()
    assert command == "/connect -tls -notls_verify localhost 6697"
    command = command.replace("localhost 6697", f"127.0.0.1 {server.ports['irc_tls']}")
    watcher = LineClient(server.ports["line"])
    watcher.expect("*** Choose a nick:")
    watcher.send("watcher")
    watcher.send("/join dev")
    watcher.expect("*** now talking in #dev")
    irssi = Irssi(tmp_path / "irssi", "irssiuser")
    try:
        irssi.type(command)
        irssi.wait_for("Welcome to")
        irssi.type("/join #dev")
        watcher.expect("-!- irssiuser joined #dev")
        irssi.type("hello over tls")
        assert watcher.expect("hello over tls") == "[#dev] <irssiuser> hello over tls"
    finally:
        irssi.close()
