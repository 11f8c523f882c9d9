"""A terminal client (Profanity, Poezio, …) in a detached tmux session on a tmux server of
its own, for the real-client tests."""

from __future__ import annotations

import subprocess
import time
import uuid


class Terminal:
    def __init__(self, command: str, *, width: int, height: int, wait: float) -> None:
        self.socket = f"chatserver-test-{uuid.uuid4().hex[:8]}"
        self.wait = wait
        self.tmux("new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height), command)
        # tmux makes the pane's first process a session leader: everything the command
        # starts (runuser, then the client) is in that session, which is how close() finds it.
        self.session = int(self.tmux("display-message", "-p", "-t", "t", "#{pane_pid}"))

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        return done.stdout

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def type(self, line: str) -> None:
        """Type ``line`` and, once the client shows it, press Enter.

        Enter goes only after the text is on screen: a client that reads the text and Enter
        in one go takes them as a paste, and Poezio then drops the Enter at its end."""
        before = self.screen().count(line)
        self.tmux("send-keys", "-t", "t", "-l", line)
        deadline = time.monotonic() + self.wait
        while (screen := self.screen()).count(line) <= before:
            if time.monotonic() > deadline:
                raise AssertionError(f"{line!r} never appeared as typed on:\n{screen}")
            time.sleep(0.05)
        self.keys("Enter")

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def wait_for(self, text: str, timeout: float | None = None) -> str:
        deadline = time.monotonic() + (self.wait if timeout is None else timeout)
        while True:
            screen = self.screen()
            if text in screen:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never appeared on:\n{screen}")
            time.sleep(0.1)

    def close(self) -> None:
        # A client may outlive the hangup that kill-server sends (Poezio under runuser is not
        # even the pane's own process) and then spin on its lost terminal: end the session.
        subprocess.run(["pkill", "-KILL", "-s", str(self.session)], check=False)
        self.tmux("kill-server")
        deadline = time.monotonic() + 5
        while subprocess.run(["pgrep", "-s", str(self.session)], capture_output=True).stdout:
            assert time.monotonic() < deadline, "the terminal client still runs after the test"
            time.sleep(0.1)
