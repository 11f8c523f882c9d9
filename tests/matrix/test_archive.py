"""One archive for every device: private messages kept for registered accounts with the id
every protocol shows, delivered to an account that was away at its next login on any protocol,
and read back through IRC CHATHISTORY, line chat ``/history`` and XMPP MAM."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import pytest

from tests.matrix.clients import (
    DOMAIN,
    NS_CLIENT,
    NS_DATA,
    NS_DELAY,
    NS_SID,
    IrcLine,
    child,
    child_text,
    local,
    room_jid,
    token,
)
from tests.matrix.conftest import PASSWORD, World
from tests.support.server import ServerProcess

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

HISTORY_CAPS = ("batch", "message-tags", "server-time", "draft/chathistory")


def privmsgs(lines: list[IrcLine]) -> list[IrcLine]:
    return [m for m in lines if m.command == "PRIVMSG"]


def chathistory(peer, *args: str) -> list[IrcLine]:
    peer.send("CHATHISTORY " + " ".join(args))
    lines = []
    start = peer.expect(lambda m: m.command == "BATCH" and m.params[0].startswith("+"))
    ref = start.params[0][1:]
    while True:
        m = peer.expect(lambda m: True)
        if m.command == "BATCH" and m.params[0] == "-" + ref:
            return lines
        lines.append(m)


def test_irc_dm_to_an_away_account_arrives_at_login_and_is_in_both_archives(
    world: World,
) -> None:
    alice, bob = world.nick("arcA"), world.nick("arcB")
    world.register(alice)
    world.register(bob)
    a = world.irc(alice, caps=HISTORY_CAPS, sasl=(alice, PASSWORD))
    a.msg(bob, "are you there?")
    a.msg(bob, "second")
    a.sync()
    # Nobody has the nick, but the account keeps the messages: no 401 for the sender.
    assert not [m for m in a.sync() if m.command == "401"]

    b = world.irc(bob, caps=HISTORY_CAPS, sasl=(bob, PASSWORD))
    notice = b.expect(lambda m: m.command == "NOTICE" and "while you were away" in m.last)
    assert notice.last.startswith("2 private messages")
    got = [b.expect(lambda m: m.command == "PRIVMSG") for _ in range(2)]
    assert [m.last for m in got] == ["are you there?", "second"]
    assert all(m.tags.get("batch") for m in got)
    assert got[0].nick == alice
    ids = [m.tags["msgid"] for m in got]
    # The same ids in the sender's archive and in the recipient's.
    mine = privmsgs(chathistory(a, "LATEST", bob, "*", "10"))
    theirs = privmsgs(chathistory(b, "LATEST", alice, "*", "10"))
    assert [m.tags["msgid"] for m in mine] == ids
    assert [m.tags["msgid"] for m in theirs] == ids
    # Delivered once: a second login gets nothing more.
    b.close()
    b2 = world.irc(bob, caps=HISTORY_CAPS, sasl=(bob, PASSWORD))
    assert not [m for m in b2.sync() if m.command == "PRIVMSG"]

    # Live messages are archived too, and paging by msgid works both ways.
    for n in range(5):
        b2.msg(alice, f"live {n}")
    b2.sync()
    a.sync()
    latest = privmsgs(chathistory(a, "LATEST", bob, "*", "3"))
    assert [m.last for m in latest] == ["live 2", "live 3", "live 4"]
    older = privmsgs(chathistory(a, "BEFORE", bob, f"msgid={latest[0].tags['msgid']}", "3"))
    assert [m.last for m in older] == ["second", "live 0", "live 1"]
    newer = privmsgs(chathistory(a, "AFTER", bob, f"msgid={older[0].tags['msgid']}", "2"))
    assert [m.last for m in newer] == ["live 0", "live 1"]

    # TARGETS lists the private conversation beside rooms.
    room = world.room("arc")
    a.join(room)
    a.say(room, "in the room")
    a.sync()
    rows = chathistory(
        a, "TARGETS", "timestamp=2000-01-01T00:00:00Z", "timestamp=2100-01-01T00:00:00Z", "10"
    )
    names = [m.params[1] for m in rows if m.command == "CHATHISTORY"]
    assert bob.lower() in [n.lower() for n in names]
    assert f"#{room}" in names


def test_guests_get_nothing_kept_and_unknown_nicks_are_refused(world: World) -> None:
    guest, other = world.nick("arcG"), world.nick("arcH")
    g = world.irc(guest, caps=HISTORY_CAPS)
    h = world.irc(other, caps=HISTORY_CAPS)
    g.msg(other, "between guests")
    h.expect(lambda m: m.command == "PRIVMSG" and m.last == "between guests")
    assert privmsgs(chathistory(g, "LATEST", other, "*", "10")) == []
    assert privmsgs(chathistory(h, "LATEST", guest, "*", "10")) == []
    g.msg("nobodyhere", "hello?")
    err = g.expect(lambda m: m.command == "401")
    assert err.params[1] == "nobodyhere"


def test_line_chat_gets_a_while_you_were_away_block_and_reads_the_conversation(
    world: World,
) -> None:
    alice, bob = world.nick("arcL"), world.nick("arcM")
    world.register(alice)
    world.register(bob)
    a = world.irc(alice, caps=HISTORY_CAPS, sasl=(alice, PASSWORD))
    a.msg(bob, "from irc while you slept")
    a.msg(bob, "waves", action=True)
    a.sync()
    b = world.line(bob, password=PASSWORD)
    block = b.expect(lambda o: isinstance(o, dict) and o.get("type") == "offline")
    texts = [(m["kind"], m["text"], m["from"]) for m in block["messages"]]
    assert texts == [("privmsg", "from irc while you slept", alice), ("action", "waves", alice)]
    ids = [m["id"] for m in block["messages"]]
    b.cmd("history", nick=alice, count=10)
    reply = b.expect(lambda o: o.get("cmd") == "history")
    assert reply["type"] == "ok", reply
    assert [m["id"] for m in reply["messages"]] == ids
    # The sender reads the same ids from IRC.
    assert [m.tags["msgid"] for m in privmsgs(chathistory(a, "LATEST", bob, "*", "10"))] == ids
    # A message from line chat to an away account, read back by IRC at login.
    b.cmd("msg", to=alice + "x", text="nobody")
    err = b.expect(lambda o: o.get("cmd") == "msg")
    assert err["type"] == "error", err
    a.close()
    b.cmd("msg", to=alice, text="see you later")
    sent = b.expect(lambda o: o.get("cmd") == "msg")
    assert sent["type"] == "ok", sent
    a2 = world.irc(alice, caps=("server-time",), sasl=(alice, PASSWORD))
    got = a2.expect(lambda m: m.command == "PRIVMSG")
    assert got.last == "see you later" and got.nick == bob
    assert "time" in got.tags


def test_line_text_mode_history_of_a_conversation(world: World) -> None:
    alice, bob = world.nick("arcT"), world.nick("arcU")
    world.register(alice)
    world.register(bob)
    a = world.line(alice, password=PASSWORD)
    b = world.line(bob, password=PASSWORD)
    a.cmd("msg", to=bob, text="one")
    b.expect(lambda o: o.get("type") == "message" and o.get("text") == "one")
    a.sync()
    t = world.line(world.nick("arcV"), json_mode=False)
    t.line(f"/identify {alice} {PASSWORD}")
    t.expect(lambda s: isinstance(s, str) and "logged in" in s)
    t.line(f"/history {bob} 5")
    t.expect(lambda s: isinstance(s, str) and s.startswith(f"*** history with {bob} (1 messages)"))
    assert "one" in t.expect(lambda s: isinstance(s, str) and "one" in s)


# -- XMPP: offline messages, MAM on the account and on rooms -------------------------------------

NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_FORWARD = "urn:xmpp:forward:0"


def mam(peer, *, to: str | None = None, fields: dict[str, str] | None = None, rsm: str = ""):
    """Run one MAM query: ([(archive id, inner message)], fin element)."""
    qid = token()
    form = ""
    if fields:
        form = (
            f"<x xmlns='{NS_DATA}' type='submit'>"
            f"<field var='FORM_TYPE' type='hidden'><value>{NS_MAM}</value></field>"
            + "".join(f"<field var='{k}'><value>{v}</value></field>" for k, v in fields.items())
            + "</x>"
        )
        rsm_xml = f"<set xmlns='{NS_RSM}'>{rsm}</set>" if rsm else ""
    else:
        rsm_xml = f"<set xmlns='{NS_RSM}'>{rsm}</set>" if rsm else ""
    target = f" to='{to}'" if to else ""
    peer.raw(
        f"<iq type='set' id='{qid}'{target}><query xmlns='{NS_MAM}' queryid='{qid}'>{form}{rsm_xml}</query></iq>"
    )
    results = []
    while True:
        el = peer.expect(
            lambda e: (
                (local(e) == "iq" and e.get("id") == qid)
                or (child(e, NS_MAM, "result") is not None)
            )
        )
        if local(el) == "iq":
            assert el.get("type") == "result", ET.tostring(el)
            return results, child(el, NS_MAM, "fin")
        result = child(el, NS_MAM, "result")
        assert result.get("queryid") == qid
        forwarded = child(result, NS_FORWARD, "forwarded")
        inner = child(forwarded, NS_CLIENT, "message")
        assert child(forwarded, NS_DELAY, "delay") is not None
        results.append((result.get("id"), inner))


def bodies(results) -> list[str]:
    return [child_text(m, NS_CLIENT, "body") for _, m in results]


def test_dm_from_irc_to_an_offline_xmpp_user_arrives_at_login_with_the_same_id_in_both_archives(
    world: World,
) -> None:
    alice, bob = world.nick("arcX"), world.nick("arcY")
    world.register(alice)
    world.register(bob)
    a = world.irc(alice, caps=HISTORY_CAPS, sasl=(alice, PASSWORD))
    a.msg(bob, "for your phone")
    a.sync()
    b = world.xmpp(bob)
    got = b.expect(
        lambda e: local(e) == "message" and child_text(e, NS_CLIENT, "body") == "for your phone"
    )
    assert got.get("from") == f"{alice.lower()}@{DOMAIN}"
    assert child(got, NS_DELAY, "delay") is not None
    sid = child(got, NS_SID, "stanza-id")
    assert sid is not None and sid.get("by") == f"{bob.lower()}@{DOMAIN}"
    msgid = sid.get("id")
    irc_ids = [m.tags["msgid"] for m in privmsgs(chathistory(a, "LATEST", bob, "*", "10"))]
    assert irc_ids == [msgid]
    results, fin = mam(b, fields={"with": f"{alice.lower()}@{DOMAIN}"})
    assert [r for r, _ in results] == [msgid]
    assert fin.get("complete") == "true"
    # A live reply carries its archive id too, the same one IRC shows.
    b.raw(f"<message type='chat' to='{alice.lower()}@{DOMAIN}'><body>got it</body></message>")
    live = a.expect(lambda m: m.command == "PRIVMSG" and m.last == "got it")
    results, _ = mam(b, rsm="<max>1</max><before/>")
    assert results[0][0] == live.tags["msgid"]


def test_mam_pages_forwards_and_backwards_with_filters(world: World) -> None:
    alice, bob, carol = world.nick("arcP"), world.nick("arcQ"), world.nick("arcR")
    for name in (alice, bob, carol):
        world.register(name)
    b = world.xmpp(bob)
    a = world.irc(alice, sasl=(alice, PASSWORD))
    c = world.line(carol, password=PASSWORD)
    for n in range(7):
        a.msg(bob, f"a{n}")
    a.sync()
    c.cmd("msg", to=bob, text="from carol")
    c.expect(lambda o: o.get("cmd") == "msg")
    for n in range(7):
        b.expect(lambda e, n=n: child_text(e, NS_CLIENT, "body") == f"a{n}")
    b.expect(lambda e: child_text(e, NS_CLIENT, "body") == "from carol")
    with_alice = {"with": f"{alice.lower()}@{DOMAIN}"}
    page1, fin1 = mam(b, fields=with_alice, rsm="<max>3</max>")
    assert bodies(page1) == ["a0", "a1", "a2"]
    assert fin1.get("complete") is None
    last = child_text(child(fin1, NS_RSM, "set"), NS_RSM, "last")
    assert last == page1[-1][0]
    page2, _ = mam(b, fields=with_alice, rsm=f"<max>3</max><after>{last}</after>")
    assert bodies(page2) == ["a3", "a4", "a5"]
    page3, fin3 = mam(b, fields=with_alice, rsm=f"<max>3</max><after>{page2[-1][0]}</after>")
    assert bodies(page3) == ["a6"]
    assert fin3.get("complete") == "true"
    # The last page, then the one before it.
    tail, _ = mam(b, rsm="<max>2</max><before/>")
    assert bodies(tail) == ["a6", "from carol"]
    prev, _ = mam(b, rsm=f"<max>2</max><before>{tail[0][0]}</before>")
    assert bodies(prev) == ["a4", "a5"]
    # #extended: before-id / after-id in the form.
    ids = [r for r, _ in page1 + page2 + page3]
    middle, _ = mam(b, fields={**with_alice, "after-id": ids[1], "before-id": ids[5]})
    assert bodies(middle) == ["a2", "a3", "a4"]
    picked, fin = mam(b, fields={"ids": ids[4]})
    assert bodies(picked) == ["a4"] and fin.get("complete") == "true"
    # Another account's archive is not readable.
    qid = token()
    b.raw(f"<iq type='set' id='{qid}' to='{alice.lower()}@{DOMAIN}'><query xmlns='{NS_MAM}'/></iq>")
    err = b.expect(lambda e: local(e) == "iq" and e.get("id") == qid)
    assert err.get("type") == "error"


def test_room_mam_ids_equal_irc_msgids(world: World) -> None:
    room = world.room("arcmam")
    nick = world.nick("arcZ")
    world.register(nick)
    i = world.irc(world.nick("arcI"), caps=HISTORY_CAPS)
    x = world.xmpp(nick)
    i.join(room)
    i.sync()
    x.join(room)
    x.expect(lambda e: local(e) == "presence" and e.get("from", "").endswith("/" + nick))
    x.sync()
    for n in range(4):
        i.say(room, f"r{n}")
    i.sync()
    irc_ids = [m.tags["msgid"] for m in privmsgs(chathistory(i, "LATEST", f"#{room}", "*", "10"))]
    results, _ = mam(x, to=room_jid(room))
    assert [r for r, _ in results] == irc_ids
    assert bodies(results) == ["r0", "r1", "r2", "r3"]
    assert results[0][1].get("type") == "groupchat"
    page, _ = mam(x, to=room_jid(room), rsm=f"<max>2</max><after>{irc_ids[0]}</after>")
    assert [r for r, _ in page] == irc_ids[1:3]


# -- read markers --------------------------------------------------------------------------------


def test_a_read_marker_set_on_xmpp_clears_on_irc(world: World) -> None:
    alice, bob = world.nick("arcRa"), world.nick("arcRb")
    world.register(alice)
    world.register(bob)
    a = world.irc(alice, caps=HISTORY_CAPS, sasl=(alice, PASSWORD))
    x = world.xmpp(bob)
    # bob's laptop: IRC with read markers (asking for another nick: bob's is in use until
    # SASL puts the connection in bob's user).
    laptop = world.irc(bob + "l", caps=(*HISTORY_CAPS, "draft/read-marker"), sasl=(bob, PASSWORD))
    assert laptop.nick == bob
    laptop.send(f"MARKREAD {alice}")
    assert laptop.expect(lambda m: m.command == "MARKREAD").params == (alice, "*")
    a.msg(bob, "read me on your phone")
    seen = laptop.expect(lambda m: m.command == "PRIVMSG" and m.last == "read me on your phone")
    got = x.expect(lambda e: child_text(e, NS_CLIENT, "body") == "read me on your phone")
    # The phone shows it and says so (XEP-0333): the laptop's marker moves to that message.
    x.raw(
        f"<message type='chat' to='{alice.lower()}@{DOMAIN}'>"
        f"<displayed xmlns='urn:xmpp:chat-markers:0' id='{got.get('id')}'/></message>"
    )
    moved = laptop.expect(lambda m: m.command == "MARKREAD")
    assert moved.params == (alice, f"timestamp={seen.tags['time']}")
    laptop.send(f"MARKREAD {alice}")
    again = laptop.expect(lambda m: m.command == "MARKREAD")
    assert again.params == moved.params
    # A marker never moves back; a bad one is refused.
    laptop.send(f"MARKREAD {alice} timestamp=2001-01-01T00:00:00.000Z")
    assert laptop.expect(lambda m: m.command == "MARKREAD").params == moved.params
    laptop.send(f"MARKREAD {alice} yesterday")
    fail = laptop.expect(lambda m: m.command == "FAIL")
    assert fail.params[:2] == ("MARKREAD", "INVALID_PARAMS")


def test_markread_after_join_and_for_rooms(world: World) -> None:
    alice = world.nick("arcJ")
    world.register(alice)
    room = world.room("arcmr")
    a = world.irc(alice, caps=(*HISTORY_CAPS, "draft/read-marker"), sasl=(alice, PASSWORD))
    a.join(room)
    first = a.expect(lambda m: m.command == "MARKREAD")
    assert first.params == (f"#{room}", "*")
    a.send(f"MARKREAD #{room} timestamp=2030-01-01T00:00:00.000Z")
    assert a.expect(lambda m: m.command == "MARKREAD").params == (
        f"#{room}",
        "timestamp=2030-01-01T00:00:00.000Z",
    )
    a.part(room)
    a.join(room)
    again = a.expect(lambda m: m.command == "MARKREAD")
    assert again.params == (f"#{room}", "timestamp=2030-01-01T00:00:00.000Z")


# -- XMPP to XMPP: stanza-ids on live messages, the stanza kept whole ---------------------------

NS_CARBONS = "urn:xmpp:carbons:2"
NS_OMEMO = "eu.siacs.conversations.axolotl"
OMEMO = (
    f"<encrypted xmlns='{NS_OMEMO}'><header sid='4242'><key rid='77'>a2V5</key>"
    "<iv>aXY=</iv></header><payload>c2VjcmV0</payload></encrypted>"
)


def enable_carbons(peer) -> None:
    qid = token()
    peer.raw(f"<iq type='set' id='{qid}'><enable xmlns='{NS_CARBONS}'/></iq>")
    assert peer.expect(lambda e: local(e) == "iq" and e.get("id") == qid).get("type") == "result"


def omemo_of(el) -> ET.Element | None:
    return child(el, NS_OMEMO, "encrypted")


def test_live_xmpp_messages_carry_the_archive_id_and_mam_replays_the_stanza_whole(
    world: World,
) -> None:
    alice, bob = world.nick("arcOa"), world.nick("arcOb")
    phone = world.xmpp(alice, resource="phone")
    laptop = world.xmpp(alice, resource="laptop")
    enable_carbons(laptop)
    b = world.xmpp(bob)
    i = world.irc(alice + "i", caps=HISTORY_CAPS, sasl=(alice, PASSWORD))
    bob_jid, alice_jid = f"{bob.lower()}@{DOMAIN}", f"{alice.lower()}@{DOMAIN}"
    phone.raw(
        f"<message type='chat' id='omemo-1' to='{bob_jid}'><body>I sent you an OMEMO"
        f" encrypted message</body>{OMEMO}</message>"
    )
    got = b.expect(lambda e: local(e) == "message" and e.get("id") == "omemo-1")
    sid = child(got, NS_SID, "stanza-id")
    assert sid is not None and sid.get("by") == bob_jid
    msgid = sid.get("id")
    assert omemo_of(got) is not None
    # The sender's other resource: a sent carbon whose message carries the id in the
    # sender's archive, the same id.
    carbon = laptop.expect(lambda e: child(e, NS_CARBONS, "sent") is not None)
    inner = child(
        child(child(carbon, NS_CARBONS, "sent"), NS_FORWARD, "forwarded"), NS_CLIENT, "message"
    )
    own = child(inner, NS_SID, "stanza-id")
    assert own is not None and own.get("by") == alice_jid and own.get("id") == msgid
    # IRC shows the same id as msgid, with the text only.
    echo = i.expect(lambda m: m.command == "PRIVMSG" and "OMEMO" in m.last)
    assert echo.tags["msgid"] == msgid
    # MAM gives back the stanza as the sender wrote it, encrypted payload and all.
    results, _ = mam(b, fields={"with": alice_jid})
    assert [r for r, _ in results] == [msgid]
    kept = results[0][1]
    assert kept.get("id") == "omemo-1"
    enc = omemo_of(kept)
    assert enc is not None and enc.findtext(f"{{{NS_OMEMO}}}payload") == "c2VjcmV0"
    assert child(child(enc, NS_OMEMO, "header"), NS_OMEMO, "key").text == "a2V5"
    mine, _ = mam(phone, fields={"with": bob_jid})
    assert [r for r, _ in mine] == [msgid] and omemo_of(mine[0][1]) is not None
    # A message from IRC is replayed as text: no stanza of its own to give back.
    i.msg(bob, "plain from irc")
    b.expect(lambda e: child_text(e, NS_CLIENT, "body") == "plain from irc")
    results, _ = mam(b, fields={"with": alice_jid})
    assert bodies(results)[-1] == "plain from irc" and omemo_of(results[-1][1]) is None


def test_an_omemo_message_kept_offline_arrives_whole_with_its_archive_id(world: World) -> None:
    alice, bob = world.nick("arcOc"), world.nick("arcOd")
    world.register(bob)
    a = world.xmpp(alice)
    bob_jid = f"{bob.lower()}@{DOMAIN}"
    a.raw(
        f"<message type='chat' id='omemo-off' to='{bob_jid}'><body>encrypted</body>"
        f"{OMEMO}</message>"
    )
    a.sync()
    b = world.xmpp(bob)
    got = b.expect(lambda e: local(e) == "message" and e.get("id") == "omemo-off")
    assert omemo_of(got) is not None
    assert child(got, NS_DELAY, "delay") is not None
    sid = child(got, NS_SID, "stanza-id")
    assert sid is not None and sid.get("by") == bob_jid
    results, _ = mam(b, fields={"with": f"{alice.lower()}@{DOMAIN}"})
    assert [r for r, _ in results] == [sid.get("id")]
    assert omemo_of(results[0][1]) is not None


# -- MAM preferences ----------------------------------------------------------------------------


def prefs_iq(peer, kind: str, body: str = ""):
    qid = token()
    inner = body or f"<prefs xmlns='{NS_MAM}'/>"
    peer.raw(f"<iq type='{kind}' id='{qid}'>{inner}</iq>")
    return peer.expect(lambda e: local(e) == "iq" and e.get("id") == qid)


def jids(prefs, name: str) -> list[str]:
    return [j.text for j in child(prefs, NS_MAM, name)]


def test_mam_preferences_are_kept_and_decide_what_the_archive_keeps(world: World) -> None:
    alice, bob, carol = world.nick("arcPa"), world.nick("arcPb"), world.nick("arcPc")
    world.register(alice)
    b = world.xmpp(bob)
    a = world.irc(alice, caps=HISTORY_CAPS, sasl=(alice, PASSWORD))
    c = world.line(carol)
    alice_jid = f"{alice.lower()}@{DOMAIN}"
    got = child(prefs_iq(b, "get"), NS_MAM, "prefs")
    assert got.get("default") == "always" and jids(got, "always") == jids(got, "never") == []
    # Keep everything but alice's messages.
    answer = prefs_iq(
        b,
        "set",
        f"<prefs xmlns='{NS_MAM}' default='always'><always/>"
        f"<never><jid>{alice_jid}</jid></never></prefs>",
    )
    stored = child(answer, NS_MAM, "prefs")
    assert stored.get("default") == "always" and jids(stored, "never") == [alice_jid]
    assert jids(child(prefs_iq(b, "get"), NS_MAM, "prefs"), "never") == [alice_jid]
    a.msg(bob, "not for the archive")
    live = b.expect(lambda e: child_text(e, NS_CLIENT, "body") == "not for the archive")
    assert child(live, NS_SID, "stanza-id") is None
    c.msg(bob, "from a guest")
    kept = b.expect(lambda e: child_text(e, NS_CLIENT, "body") == "from a guest")
    assert child(kept, NS_SID, "stanza-id") is not None
    results, _ = mam(b)
    assert bodies(results) == ["from a guest"]
    # Alice's own archive keeps it: her preferences are hers.
    assert [m.last for m in privmsgs(chathistory(a, "LATEST", bob, "*", "10"))] == [
        "not for the archive"
    ]
    # Keep nothing but alice's: a guest's message is no longer kept.
    prefs_iq(
        b,
        "set",
        f"<prefs xmlns='{NS_MAM}' default='never'><always><jid>{alice_jid}</jid></always>"
        "<never/></prefs>",
    )
    c.msg(bob, "guest again")
    a.msg(bob, "alice again")
    b.expect(lambda e: child_text(e, NS_CLIENT, "body") == "alice again")
    results, _ = mam(b)
    assert bodies(results) == ["from a guest", "alice again"]
    # A default that is none of the three is refused, and nothing changes.
    refused = prefs_iq(b, "set", f"<prefs xmlns='{NS_MAM}' default='sometimes'/>")
    assert refused.get("type") == "error"
    assert child(prefs_iq(b, "get"), NS_MAM, "prefs").get("default") == "never"


NS_ROSTER = "jabber:iq:roster"


def roster_iq(peer, item: str) -> None:
    qid = token()
    peer.raw(f"<iq type='set' id='{qid}'><query xmlns='{NS_ROSTER}'>{item}</query></iq>")
    answer = peer.expect(lambda e: local(e) == "iq" and e.get("id") == qid)
    assert answer.get("type") == "result", answer


def test_mam_roster_preference_keeps_contacts_always_list_and_survives_a_restart(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    server = ServerProcess(
        tmp_path_factory.mktemp("mam-roster"),
        protocols=("line", "irc", "xmpp"),
        overrides={"chat": {"history_flush_interval": 0.2, "login_failure_burst": 50}},
    )
    server.start()
    world = World(server)
    try:
        bob, alice, dave, carol = "rosterb", "rostera", "rosterd", "rosterc"
        for name in (alice, dave):
            world.register(name)
        b = world.xmpp(bob)
        # Alice is a contact (no subscription: any roster entry counts, as in Prosody);
        # carol, a guest, is on the always list; dave is neither.
        roster_iq(b, f"<item jid='{alice}@{DOMAIN}'/>")
        answer = prefs_iq(
            b,
            "set",
            f"<prefs xmlns='{NS_MAM}' default='roster'>"
            f"<always><jid>~{carol}@{DOMAIN}</jid></always><never/></prefs>",
        )
        assert child(answer, NS_MAM, "prefs").get("default") == "roster"
        assert child(prefs_iq(b, "get"), NS_MAM, "prefs").get("default") == "roster"
        a = world.irc(alice, caps=HISTORY_CAPS, sasl=(alice, PASSWORD))
        d = world.line(dave, password=PASSWORD)
        c = world.line(carol)

        def send_all(suffix: str) -> None:
            a.msg(bob, f"contact {suffix}")
            d.msg(bob, f"stranger {suffix}")
            c.msg(bob, f"always {suffix}")
            # Three senders on three connections: in any order.
            waiting = {f"{who} {suffix}" for who in ("contact", "stranger", "always")}
            while waiting:
                got = b.expect(lambda e: child_text(e, NS_CLIENT, "body") in waiting)
                waiting.discard(child_text(got, NS_CLIENT, "body"))

        send_all("1")
        results, _ = mam(b)
        assert sorted(bodies(results)) == ["always 1", "contact 1"]
        # Across a restart: the preference and the roster are read again.
        b.close()
        world.close()
        world.peers.clear()
        server.restart()
        b = world.xmpp(bob)
        a = world.irc(alice, caps=HISTORY_CAPS, sasl=(alice, PASSWORD))
        d = world.line(dave, password=PASSWORD)
        c = world.line(carol)
        send_all("2")
        # A contact added now counts from now on; one removed no longer does.
        roster_iq(b, f"<item jid='{dave}@{DOMAIN}'/>")
        roster_iq(b, f"<item jid='{alice}@{DOMAIN}' subscription='remove'/>")
        send_all("3")
        results, _ = mam(b)
        assert sorted(bodies(results)) == sorted(
            ["always 1", "contact 1", "always 2", "contact 2", "always 3", "stranger 3"]
        )
    finally:
        world.close()
        server.kill()


# -- Message Displayed Synchronization (XEP-0490) ------------------------------------------------

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_MDS = "urn:xmpp:mds:displayed:0"


def mds_items(peer) -> dict[str, str]:
    """The account's displayed-markers node: {conversation JID: stanza-id}."""
    qid = token()
    peer.raw(
        f"<iq type='get' id='{qid}'><pubsub xmlns='{NS_PUBSUB}'><items node='{NS_MDS}'/></pubsub></iq>"
    )
    answer = peer.expect(lambda e: local(e) == "iq" and e.get("id") == qid)
    if answer.get("type") != "result":
        return {}
    items = child(child(answer, NS_PUBSUB, "pubsub"), NS_PUBSUB, "items")
    return {
        item.get("id"): child(child(item, NS_MDS, "displayed"), NS_SID, "stanza-id").get("id")
        for item in items
    }


def publish_displayed(peer, conversation: str, msgid: str, by: str) -> None:
    qid = token()
    peer.raw(
        f"<iq type='set' id='{qid}'><pubsub xmlns='{NS_PUBSUB}'><publish node='{NS_MDS}'>"
        f"<item id='{conversation}'><displayed xmlns='{NS_MDS}'>"
        f"<stanza-id xmlns='{NS_SID}' id='{msgid}' by='{by}'/></displayed></item></publish>"
        f"<publish-options><x xmlns='{NS_DATA}' type='submit'>"
        "<field var='FORM_TYPE' type='hidden'>"
        "<value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
        "<field var='pubsub#persist_items'><value>true</value></field>"
        "<field var='pubsub#max_items'><value>max</value></field>"
        "<field var='pubsub#access_model'><value>whitelist</value></field>"
        "</x></publish-options></pubsub></iq>"
    )
    assert peer.expect(lambda e: local(e) == "iq" and e.get("id") == qid).get("type") == "result"


def test_read_positions_are_the_mds_node_both_ways(world: World) -> None:
    alice, bob = world.nick("arcMa"), world.nick("arcMb")
    room = world.room("arcmds")
    world.register(alice)
    x = world.xmpp(bob)
    laptop = world.irc(bob + "l", caps=(*HISTORY_CAPS, "draft/read-marker"), sasl=(bob, PASSWORD))
    a = world.irc(alice, caps=HISTORY_CAPS, sasl=(alice, PASSWORD))
    alice_jid, bob_jid = f"{alice.lower()}@{DOMAIN}", f"{bob.lower()}@{DOMAIN}"
    a.msg(bob, "first")
    a.msg(bob, "second")
    first = laptop.expect(lambda m: m.command == "PRIVMSG" and m.last == "first")
    second = laptop.expect(lambda m: m.command == "PRIVMSG" and m.last == "second")
    # Read on the laptop (IRC): the node names the message read, for XMPP clients.
    laptop.send(f"MARKREAD {alice} timestamp={first.tags['time']}")
    laptop.expect(lambda m: m.command == "MARKREAD")
    for _ in range(50):
        if mds_items(x).get(alice_jid) == first.tags["msgid"]:
            break
        time.sleep(0.1)
    assert mds_items(x)[alice_jid] == first.tags["msgid"]
    # Read on the phone (XMPP publishes to the node): the laptop's marker moves.
    publish_displayed(x, alice_jid, second.tags["msgid"], bob_jid)
    moved = laptop.expect(lambda m: m.command == "MARKREAD")
    assert moved.params == (alice, f"timestamp={second.tags['time']}")
    # Rooms too: the item is the room's JID, the id the room's stanza-id.
    laptop.join(room)
    a.join(room)
    a.say(room, "in the room")
    said = laptop.expect(lambda m: m.command == "PRIVMSG" and m.last == "in the room")
    laptop.sync()
    publish_displayed(x, room_jid(room), said.tags["msgid"], room_jid(room))
    moved = laptop.expect(
        lambda m: m.command == "MARKREAD" and m.params[0] == f"#{room}" and m.params[1] != "*"
    )
    assert moved.params[1] == f"timestamp={said.tags['time']}"
    # A marker that names no message here changes nothing.
    publish_displayed(x, alice_jid, "no-such-id", bob_jid)
    laptop.send(f"MARKREAD {alice}")
    assert laptop.expect(lambda m: m.command == "MARKREAD").params[1] == (
        f"timestamp={second.tags['time']}"
    )


NS_PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event"


def test_a_marker_published_by_one_resource_reaches_the_others_and_irc(world: World) -> None:
    alice, bob = world.nick("arcNa"), world.nick("arcNb")
    world.register(alice)
    phone = world.xmpp(bob, resource="phone")
    # The tablet asks for the node's notifications (XEP-0115 +notify), as XEP-0490 clients do.
    tablet = world.xmpp(bob, resource="tablet")
    tablet.do(tablet.xmpp.plugin["xep_0030"].add_feature, f"{NS_MDS}+notify")
    tablet.wait(tablet.xmpp.plugin["xep_0115"].update_caps)
    # The server asks what the new capabilities are, and slixmpp answers.
    tablet.expect(
        lambda e: (
            local(e) == "iq"
            and child(e, "http://jabber.org/protocol/disco#info", "query") is not None
        )
    )
    tablet.sync()
    laptop = world.irc(bob + "l", caps=(*HISTORY_CAPS, "draft/read-marker"), sasl=(bob, PASSWORD))
    a = world.irc(alice, caps=HISTORY_CAPS, sasl=(alice, PASSWORD))
    alice_jid, bob_jid = f"{alice.lower()}@{DOMAIN}", f"{bob.lower()}@{DOMAIN}"
    a.msg(bob, "read me on the phone")
    said = laptop.expect(lambda m: m.command == "PRIVMSG" and m.last == "read me on the phone")
    laptop.sync()
    tablet.sync()
    publish_displayed(phone, alice_jid, said.tags["msgid"], bob_jid)

    def displayed_event(el: object) -> bool:
        event = child(el, NS_PUBSUB_EVENT, "event")  # type: ignore[arg-type]
        items = child(event, NS_PUBSUB_EVENT, "items") if event is not None else None
        return items is not None and items.get("node") == NS_MDS

    got = tablet.expect(displayed_event)
    assert got.get("from") == bob_jid
    item = child(
        child(child(got, NS_PUBSUB_EVENT, "event"), NS_PUBSUB_EVENT, "items"),
        NS_PUBSUB_EVENT,
        "item",
    )
    assert item.get("id") == alice_jid
    sid = child(child(item, NS_MDS, "displayed"), NS_SID, "stanza-id")
    assert (sid.get("id"), sid.get("by")) == (said.tags["msgid"], bob_jid)
    moved = laptop.expect(lambda m: m.command == "MARKREAD")
    assert moved.params == (alice, f"timestamp={said.tags['time']}")
