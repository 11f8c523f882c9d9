"""draft/channel-rename: a room operator renames a room, and every protocol follows.

IRC clients with the capability get ``RENAME``; the others part the old channel and join the
new one (with its topic and names).  XMPP occupants see the old room destroyed with the new
one as its alternate venue (XEP-0045 §10.9), then the new room's presences.  Line chat users
get a notice and talk in the new room.  Modes, registration and history follow the room, and
the old name is free again.
"""

from __future__ import annotations

import pytest

from tests.matrix.clients import (
    MUC,
    NS_CLIENT,
    NS_MUC_USER,
    IrcLine,
    child_text,
    local,
    q,
    room_jid,
    status_codes,
)
from tests.matrix.conftest import World

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

RENAME = "draft/channel-rename"
HISTORY = ["message-tags", "batch", "server-time", "draft/chathistory"]


def commands(lines: list[IrcLine]) -> list[str]:
    return [m.command for m in lines]


def test_a_rename_reaches_every_protocol_and_history_follows(world: World) -> None:
    old, new = world.room("rn"), world.room("rnnew")
    op = world.irc(world.nick("rno"), caps=[RENAME, *HISTORY])
    legacy = world.irc(world.nick("rnl"))
    line = world.line(world.nick("rnc"))
    xmpp = world.xmpp(world.nick("rnx"))
    op.join(old)
    op.sync()
    op.send(f"TOPIC #{old} :kept topic")
    op.send(f"MODE #{old} +k sesame")
    op.sync()
    legacy.join(old, "sesame")
    line.join(old, "sesame")
    xmpp.join(old, "sesame")
    for peer in (legacy, line, xmpp):
        peer.sync()
    op.say(old, "said before the rename")
    for peer in (op, legacy, line, xmpp):
        peer.sync()

    op.send(f"RENAME #{old} #{new} :tidying up")
    got = op.sync()
    renamed = [m for m in got if m.command == "RENAME"]
    assert [m.params for m in renamed] == [(f"#{old}", f"#{new}", "tidying up")]

    legacy_got = legacy.sync()
    assert commands(legacy_got)[:2] == ["PART", "JOIN"]
    part, join = legacy_got[0], legacy_got[1]
    assert part.nick == legacy.nick and part.params[0] == f"#{old}"
    assert join.nick == legacy.nick and join.params[0] == f"#{new}"
    topic = next(m for m in legacy_got if m.command == "332")
    assert topic.params[1:] == (f"#{new}", "kept topic")
    names = next(m for m in legacy_got if m.command == "353")
    assert f"@{op.nick}" in names.last.split()

    records = [r for r in line.sync() if isinstance(r, dict) and r.get("type") == "rename"]
    assert [(r["old"], r["room"], r["reason"]) for r in records] == [(old, new, "tidying up")]

    stanzas = xmpp.sync()
    destroyed = [
        el
        for el in stanzas
        if local(el) == "presence"
        and el.get("type") == "unavailable"
        and el.get("from", "").startswith(f"{old}@{MUC}/")
    ]
    assert len(destroyed) == 1
    destroy = destroyed[0].find(f"{q(NS_MUC_USER, 'x')}/{q(NS_MUC_USER, 'destroy')}")
    assert destroy is not None and destroy.get("jid") == room_jid(new)
    assert child_text(destroy, NS_MUC_USER, "reason") == "tidying up"
    own = [
        el
        for el in stanzas
        if local(el) == "presence"
        and el.get("from") == f"{room_jid(new)}/{xmpp.nick}"
        and "110" in status_codes(el)
    ]
    assert len(own) == 1

    # Everyone talks in the new room, whatever protocol.
    line.say(new, "from line, in the new room")
    line.sync()
    for peer in (op, legacy):
        said = [m for m in peer.sync() if m.command == "PRIVMSG"]
        assert [(m.params[0], m.last) for m in said] == [(f"#{new}", "from line, in the new room")]
    bodies = [
        child_text(el, NS_CLIENT, "body")
        for el in xmpp.sync()
        if local(el) == "message" and el.get("from", "").startswith(room_jid(new))
    ]
    assert bodies == ["from line, in the new room"]

    # Modes and history came along; the old name is free.
    op.send(f"MODE #{new}")
    assert "k" in next(m for m in op.sync() if m.command == "324").params[2]
    op.send(f"CHATHISTORY LATEST #{new} * 10")
    history = [m.last for m in op.sync() if m.command == "PRIVMSG"]
    assert history == ["said before the rename", "from line, in the new room"]
    newcomer = world.irc(world.nick("rnn"))
    newcomer.join(old)
    joined = newcomer.sync()
    assert any(m.command == "JOIN" and m.params[0] == f"#{old}" for m in joined)
    assert any(m.command == "353" and f"@{newcomer.nick}" in m.last.split() for m in joined)


def test_only_operators_rename_and_the_new_name_must_be_free(world: World) -> None:
    a, b = world.room("rf"), world.room("rftaken")
    op = world.irc(world.nick("rfo"), caps=[RENAME])
    other = world.irc(world.nick("rfu"), caps=[RENAME])
    op.join(a)
    op.join(b)
    op.sync()
    other.join(a)
    other.sync()
    op.sync()
    other.send(f"RENAME #{a} #{world.room('rfx')} :mine now")
    assert [m.command for m in other.sync()] == ["482"]
    op.send(f"RENAME #{a} #{b} :clash")
    fail = [m for m in op.sync() if m.command == "FAIL"]
    assert [m.params[:4] for m in fail] == [("RENAME", "CHANNEL_NAME_IN_USE", f"#{a}", f"#{b}")]
    op.send(f"RENAME #{a} #bad,name :bad")
    fail = [m for m in op.sync() if m.command == "FAIL"]
    assert [m.params[:2] for m in fail] == [("RENAME", "CANNOT_RENAME")]
    op.send(f"RENAME #{world.room('rfnone')} #{world.room('rfy')}")
    assert [m.command for m in op.sync()] == ["403"]
    # Nothing moved: both still talk in #a.
    other.say(a, "still here")
    other.sync()
    assert [m.last for m in op.sync() if m.command == "PRIVMSG"] == ["still here"]


def test_a_rooms_metadata_follows_it_to_its_new_name(world: World) -> None:
    old, new = world.room("rm"), world.room("rmnew")
    op = world.irc(world.nick("rmo"), caps=[RENAME, "draft/metadata-2"])
    op.join(old)
    op.sync()
    op.send(f"METADATA #{old} SET url :https://example.org/room")
    op.sync()
    op.send(f"RENAME #{old} #{new} :moving")
    op.sync()
    op.send(f"METADATA #{new} GET url")
    assert [m.last for m in op.sync() if m.command == "761"] == ["https://example.org/room"]
    # The old name is free for a new room, which has none of the renamed room's metadata.
    op.join(old)
    op.sync()
    op.send(f"METADATA #{old} GET url")
    assert [m.command for m in op.sync() if m.command in ("761", "766")] == ["766"]
