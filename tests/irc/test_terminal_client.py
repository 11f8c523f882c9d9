"""A real terminal IRC client (WeeChat, headless) and a line-chat user in the same room.

WeeChat is driven through its FIFO pipe and read through its log file.  The test skips
when ``weechat-headless`` is missing, except in CI (``CI`` set), where ``.ci/run``
installs it and a missing client is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.server import LineClient, ServerProcess

WEECHAT = shutil.which("weechat-headless")
TIMEOUT = 20.0

if WEECHAT is None:
    if os.environ.get("CI"):
        raise RuntimeError("weechat-headless is not installed: .ci/run should have installed it")
    pytest.skip("weechat-headless is not installed", allow_module_level=True)


class WeeChat:
    """``weechat-headless`` with its own home directory, connected to server ``test``."""

    def __init__(self, home: Path, port: int, nick: str, room: str) -> None:
        self.home = home
        self.nick = nick
        startup = ";".join(
            [
                "/set logger.file.flush_delay 0",
                f"/server add test 127.0.0.1/{port} -notls -nicks={nick} -autojoin={room}",
                "/connect test",
            ]
        )
        assert WEECHAT is not None
        self.proc = subprocess.Popen(
            [WEECHAT, "--dir", str(home), "--run-command", startup],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _fifo(self) -> Path:
        found = wait_for(lambda: next(self.home.glob("weechat_fifo_*"), None), "the FIFO")
        assert isinstance(found, Path)
        return found

    def command(self, buffer: str, text: str) -> None:
        """Run ``text`` (a command or a message) in ``buffer`` (e.g. ``irc.test.#room``)."""
        with open(self._fifo(), "w") as fifo:
            fifo.write(f"{buffer} *{text}\n")

    def log(self, buffer: str) -> str:
        path = self.home / "logs" / f"{buffer}.weechatlog"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_for(probe: Callable[[], object], what: str, timeout: float = TIMEOUT) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


@pytest.fixture
def weechat_and_line(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> Iterator[tuple[WeeChat, LineClient, ServerProcess]]:
    server = make_server(protocols=("line", "irc"))
    line = LineClient(server.ports["line"], timeout=TIMEOUT)
    line.send("liner")
    line.expect("*** You are liner.")
    line.send("/join lobby")
    line.expect("*** now talking in #lobby")
    home = tmp_path / "weechat"
    home.mkdir()
    wee = WeeChat(home, server.ports["irc"], "weeuser", "#lobby")
    yield wee, line, server
    wee.close()
    line.close()


def test_weechat_and_line_chat_exchange_messages(
    weechat_and_line: tuple[WeeChat, LineClient, ServerProcess],
) -> None:
    wee, line, _server = weechat_and_line
    assert line.expect("joined #lobby") == "-!- weeuser joined #lobby"

    line.send("hello weechat, this is line chat")
    wait_for(
        lambda: "hello weechat, this is line chat" in wee.log("irc.test.#lobby"),
        "the line user's message in WeeChat's log",
    )
    assert "liner" in wee.log("irc.test.#lobby")

    wee.command("irc.test.#lobby", "hello line chat, this is weechat")
    assert line.expect("this is weechat") == "[#lobby] <weeuser> hello line chat, this is weechat"

    wee.command("irc.test.#lobby", "/me waves from the terminal")
    assert line.expect("waves") == "[#lobby] * weeuser waves from the terminal"

    wee.command("irc.server.test", "/quit see you")
    got = line.expect("quit")
    assert got.startswith("-!- weeuser quit (") and "see you" in got
