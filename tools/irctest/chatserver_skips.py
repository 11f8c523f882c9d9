"""A pytest plugin for irctest runs against chatserver: the tests whose premise this server
does not share, skipped with the reason in the report (``make irctest`` loads it with
``-p chatserver_skips``).

Only a test that presumes something the server does not offer (a linked services server,
always-on accounts, TAGMSG in history) belongs here, never one that checks a behaviour the
server gets wrong; protocols/irc/README.md lists each one with its reason.
"""

from __future__ import annotations

from typing import Any

import pytest

NOT_APPLICABLE = {
    "irctest/server_tests/chathistory.py::ChathistoryTestCase::testChathistoryTagmsg": (
        "expects TAGMSG (client-only tags: typing notices, reactions) to be kept in history "
        "and replayed; this server relays TAGMSG and never stores it (CHATHISTORY replays "
        "messages and, with draft/event-playback, room events)"
    ),
    "irctest/server_tests/read_marker.py::ReadMarkerServiceTestCase::"
    "testReadMarkerPersistsAcrossReconnect": (
        "expects every registered account to be always-on without asking (a reconnecting "
        "client re-joined to its rooms by the server, then sent their read markers); here "
        "always-on is per account and opt-in (NickServ SET ALWAYS-ON), and the test does "
        "not opt in"
    ),
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
