"""A real OMEMO conversation through the server: two Profanity clients (built with OMEMO),
driven in tmux, publish their device lists and bundles over PEP, exchange encrypted messages
both ways and each decrypts the other's.

Skipped when profanity or tmux is missing, unless CI is set (CI installs both: .ci/run).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess
from tests.support.terminal import Terminal
from tests.xmpp.test_profanity import PASSWORD

pytestmark = pytest.mark.timeout(120)

WAIT = 20.0


def start_profanity(server: ServerProcess, home: Path, name: str) -> Terminal:
    accounts = home / "data" / "profanity" / "accounts"
    accounts.parent.mkdir(parents=True)
    (home / "config" / "profanity").mkdir(parents=True)
    accounts.write_text(
        f"[{name}@localhost]\n"
        "enabled=true\n"
        f"jid={name}@localhost\n"
        "server=127.0.0.1\n"
        f"port={server.ports['xmpp']}\n"
        "resource=profanity\n"
        f"password={PASSWORD}\n"
        "tls.policy=trust\n"
    )
    accounts.chmod(0o600)
    terminal = Terminal(
        f"env HOME={home} XDG_DATA_HOME={home / 'data'} XDG_CONFIG_HOME={home / 'config'}"
        f" TERM=xterm-256color profanity -l DEBUG -a {name}@localhost",
        width=200,
        height=50,
        wait=WAIT,
    )
    terminal.wait_for("[TLS] [online]")
    return terminal


@pytest.fixture
def pair(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> Iterator[tuple[ServerProcess, Terminal, Terminal]]:
    server = make_server(protocols=("xmpp",))
    server.create_account("alice", PASSWORD)
    server.create_account("bob", PASSWORD)
    terminals: list[Terminal] = []
    try:
        for name in ("alice", "bob"):
            terminals.append(start_profanity(server, tmp_path / name, name))
        yield server, terminals[0], terminals[1]
    finally:
        for terminal in terminals:
            terminal.close()


def wait_log(home: Path, text: str, count: int = 1, timeout: float = WAIT) -> None:
    """Wait until the client's debug log has ``text`` ``count`` times."""
    log = home / "data" / "profanity" / "logs" / "profanity.log"
    deadline = time.monotonic() + timeout
    while log.read_text().count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} never logged {count} times in {log}"
        time.sleep(0.2)


def received_xml(home: Path) -> list[str]:
    """What the client's log shows it received (profanity -l DEBUG logs every stanza)."""
    log = home / "data" / "profanity" / "logs" / "profanity.log"
    return [
        line.partition("RECV: ")[2] for line in log.read_text().splitlines() if "RECV: " in line
    ]


def test_omemo_messages_both_ways(
    pair: tuple[ServerProcess, Terminal, Terminal], tmp_path: Path
) -> None:
    _server, alice, bob = pair
    for terminal in (alice, bob):
        # Trust every device at first sight: the test has no second channel to compare
        # fingerprints on.
        terminal.type("/omemo trustmode blind")
        terminal.type("/omemo gen")
    for terminal in (alice, bob):
        # (sic: profanity's spelling)
        terminal.wait_for("OMEMO crytographic materials generated", 60)
    # Each publishes its device list and bundle over PEP; starting a session reads the
    # other's from the server.
    handled = "omemo_start_device_session_handle_bundle: {}@localhost"
    alice.type("/omemo start bob@localhost")
    alice.wait_for("[OMEMO]")
    # A session with bob's device is built from his bundle before anything is encrypted.
    wait_log(tmp_path / "alice", handled.format("bob"))
    alice.type("secret from alice")
    bob.wait_for("<< chat message: alice@localhost")
    bob.type("/win 2")
    bob.wait_for("secret from alice")
    before = (tmp_path / "bob" / "data" / "profanity" / "logs" / "profanity.log").read_text()
    bob.type("/omemo start alice@localhost")
    wait_log(tmp_path / "bob", handled.format("alice"), before.count(handled.format("alice")) + 1)
    bob.type("secret reply from bob")
    alice.type("/win 2")
    alice.wait_for("secret reply from bob")

    # What crossed the server was ciphertext, relayed whole: the words are on the screens
    # only because each client decrypted them.
    for home, words in (
        (tmp_path / "bob", "secret from alice"),
        (tmp_path / "alice", "secret reply from bob"),
    ):
        stanzas = received_xml(home)
        assert any(
            "<message" in x and '<encrypted xmlns="eu.siacs.conversations.axolotl"' in x
            for x in stanzas
        ), stanzas
        assert not any(words in x for x in stanzas)
