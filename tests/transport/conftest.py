"""One real server for the transport tests: IRC, XMPP and line chat, each with a TLS port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess, free_port

# Short, so that the tests of the registration deadline do not wait long.
REGISTRATION_TIMEOUT = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    line_tls = free_port()
    proc = ServerProcess(
        Path(tmp_path_factory.mktemp("transport")),
        protocols=("line", "irc", "xmpp"),
        overrides={
            "line": {"tls_port": line_tls},
            "irc": {"registration_timeout": REGISTRATION_TIMEOUT, "sendq_bytes": 64 << 20},
            "xmpp": {"domain": "localhost"},
        },
    )
    proc.ports["line_tls"] = line_tls
    proc.start()
    yield proc
    proc.kill()
