"""A pytest plugin for irctest runs against chatserver: the tests whose premise this server
does not share, skipped with the reason in the report (``make irctest`` loads it with
``-p chatserver_skips``).

Only a test that presumes something outside the protocol belongs here, never one that
checks a behaviour the server gets wrong; protocols/irc/README.md lists each one.
"""

from __future__ import annotations

from typing import Any

import pytest

NOT_APPLICABLE = {
    "irctest/server_tests/links.py::ServicesLinksTestCase::testLinksWithServices": (
        "expects the services to be linked as a second server; NickServ and ChanServ are "
        "built into this server (as in Ergo), so LINKS lists one server"
    ),
}


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    for item in items:
        reason = NOT_APPLICABLE.get(item.nodeid)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))
