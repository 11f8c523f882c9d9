"""Fixtures for the differential tests: chatserver and Prosody, each started once per module
with the same accounts, and :func:`run` to play one script against both.

The tests skip (with the reason) only when Prosody is not installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.support import prosody
from tests.support.server import ServerProcess
from tests.support.xmpp_differential import PASSWORD, Rule, Session

ACCOUNTS = ("alice", "bob", "carol")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[prosody.ProsodyProcess]:
    if not prosody.available():
        pytest.skip("prosody is not installed (Debian package prosody)")
    server = prosody.ProsodyProcess(tmp_path_factory.mktemp("prosody"))
    for name in ACCOUNTS:
        server.create_account(name, PASSWORD)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("chatserver"), protocols=("xmpp",))
    server.start()
    for name in ACCOUNTS:
        server.create_account(name, PASSWORD)
    yield server
    server.kill()


Script = Callable[[Session], None]


@pytest.fixture
def run(
    reference: prosody.ProsodyProcess, ours: ServerProcess
) -> Callable[..., tuple[dict[str, Any], dict[str, Any]]]:
    """``run(script, rules=...)``: the transcripts (chatserver's, Prosody's) of one script,
    each stanza passed through ``rules`` (see tests.support.xmpp_differential)."""

    def one(port: int, script: Script, rules: tuple[Rule, ...]) -> dict[str, Any]:
        session = Session(port, rules)
        try:
            script(session)
        finally:
            session.close()
        return session.transcript

    def play(script: Script, rules: tuple[Rule, ...] = ()) -> tuple[Any, Any]:
        # Both servers at once: most of a script's time is the quiet wait after each step,
        # and the two sessions share nothing (their own sockets, clients and transcripts).
        with ThreadPoolExecutor(2) as pool:
            mine = pool.submit(one, ours.ports["xmpp"], script, rules)
            prosody = pool.submit(one, reference.port, script, rules)
            return mine.result(), prosody.result()

    return play
