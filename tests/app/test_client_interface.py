"""Every protocol's connection is a whole IChatClient: the core calls what the interface
names without looking it up first (no ``getattr`` with a default on the delivery path)."""

from __future__ import annotations

import pytest
from zope.interface.verify import verifyClass

from chatserver.core.interfaces import IChatClient
from protocols.irc.connection import IrcConnection
from protocols.line.connection import LineConnection
from protocols.xmpp.connection import XmppConnection


@pytest.mark.parametrize("cls", [IrcConnection, LineConnection, XmppConnection])
def test_connection_classes_provide_the_whole_interface(cls: type) -> None:
    assert verifyClass(IChatClient, cls)
    for name in ("protocol", "echoes_own_messages", "echo_at_turn_end"):
        assert hasattr(cls, name), f"{cls.__name__} lacks {name}"
