"""``make run``, the README's first command, on a fresh data directory: it starts the server,
and the web port serves the chat page at ``/`` (the Converse.js page when the web client is
installed, else the page that says how to get it), then stops on SIGTERM.

The command is the real one (make, the Makefile's ``run`` target, the installed
``chatserver``); only the ports (``CHATSERVER_CONFIG``: free loopback ports, so that it does not
collide with anything else on the machine) and the data directory (``DATA_DIR``) are the test's.
"""

from __future__ import annotations

import os
import shutil
import signal
import urllib.request
from pathlib import Path

import pytest

from protocols.web.site import DEFAULT_CLIENT_DIR
from tests.app.helpers import REPO, Process, clean_env, free_port, listening_pattern, write_toml

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed"),
    pytest.mark.skipif(
        not (REPO / ".venv" / ".stamp-run").exists(),
        reason="the checkout's .venv is not installed (make run would install it first)",
    ),
]

# The first start makes the database and a self-signed certificate: slower than a restart.
START_TIMEOUT = 60.0


def _get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.status, answer.headers.get("content-type", ""), answer.read()


def test_make_run_serves_the_chat_page_on_a_fresh_data_directory(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("line", "irc", "irc_tls", "xmpp", "xmpp_tls")}
    web, web_tls = free_port(), free_port()
    config = write_toml(
        tmp_path / "chatserver.toml",
        {
            "server": {"listen": ["127.0.0.1"]},
            "line": {"port": ports["line"]},
            "irc": {"port": ports["irc"], "tls_port": ports["irc_tls"]},
            "xmpp": {"port": ports["xmpp"], "tls_port": ports["xmpp_tls"]},
            "web": {"port": web, "tls_port": web_tls},
        },
    )
    data = tmp_path / "fresh-data"
    assert not data.exists()
    env = clean_env(CHATSERVER_CONFIG=str(config))
    # make's children (the server) share its new session, so that the whole group is
    # signalled at the end, as a terminal's Ctrl-C would.
    make = Process(
        ["make", "--no-print-directory", "run", f"DATA_DIR={data}"],
        cwd=REPO,
        env=env,
        preexec_fn=os.setsid,
    )
    try:
        make.wait_for(listening_pattern("web", "127.0.0.1", web), timeout=START_TIMEOUT)
        make.wait_for(r"ready server=", timeout=START_TIMEOUT)
        status, content_type, page = _get(f"http://127.0.0.1:{web}/")
        assert status == 200
        assert content_type.startswith("text/html")
        text = page.decode()
        # Either way the page says which rooms it joins and that other protocols are there.
        assert "IRC, XMPP and telnet users are in the same rooms" in text
        if (DEFAULT_CLIENT_DIR / "converse.min.js").is_file():
            assert '<script type="module" src="/dist/converse.min.js">' in text
            status, content_type, script = _get(f"http://127.0.0.1:{web}/dist/converse.min.js")
            assert status == 200 and "javascript" in content_type and len(script) > 100_000
        else:
            assert "The web client (Converse.js) is not installed" in text
            assert "make web" in text
        # The fresh directory now holds the new database and the made certificate.
        assert (data / "chatserver.db").is_file()
        assert (data / "tls.crt").is_file()
    finally:
        if make.proc.poll() is None:
            os.killpg(make.proc.pid, signal.SIGTERM)
        make.wait(timeout=30)
    output = make.output()
    assert "received SIGTERM, shutting down" in output, output
    assert "Traceback" not in output, output
