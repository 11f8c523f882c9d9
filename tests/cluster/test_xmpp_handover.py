"""An always-on XMPP account handed over between two real nodes (private Redis and
PostgreSQL): its client leaves node a, another client of the account logs in on node b and
finds what a return finds on one node (its rooms through autojoin bookmarks, each shown
once; what it missed, once; private messages sent meanwhile; its roster), and nobody in its
rooms, on either node or protocol, sees it leave.  A stream-management session waiting to
be resumed on node a is a live connection: the account stays there until it lapses."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.cluster.test_accounts import (
    PASSWORD,
    PROTOCOLS,
    Ticker,
    is_away,
    late_sasl,
    lease_of,
    read_until,
    register,
    sasl_line,
    sasl_outcome,
    shared,
)
from tests.cluster.test_cluster import eventually, irc
from tests.hostile.clients import MUC_DOMAIN, XmppClient, local
from tests.support.postgres import PostgresServer
from tests.support.redis import RedisServer
from tests.support.server import LineClient, ServerProcess

pytestmark = pytest.mark.timeout(180)

Node = Callable[..., ServerProcess]

NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_MAM = "urn:xmpp:mam:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_ROSTER = "jabber:iq:roster"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_BOOKMARKS = "urn:xmpp:bookmarks:1"
NS_SM = "urn:xmpp:sm:3"
NS_DELAY = "urn:xmpp:delay"
ROOM = f"dev@{MUC_DOMAIN}"


def xmpp_login(node: ServerProcess, account: str, resource: str) -> XmppClient:
    client = XmppClient(node.ports["xmpp"], source="127.0.0.1", timeout=10.0)
    client.login(account, PASSWORD, resource)
    return client


def iq(client: XmppClient, kind: str, payload: str, to: str | None = None) -> Any:
    iq_id = client.next_id()
    target = f" to='{to}'" if to else ""
    client.send(f"<iq type='{kind}' id='{iq_id}'{target}>{payload}</iq>")
    answer = client.expect(lambda el: local(el) == "iq" and el.get("id") == iq_id)
    assert answer.get("type") == "result", answer.get("type")
    return answer


def body(el: Any) -> str | None:
    return el.findtext("{jabber:client}body")


def pumped(client: XmppClient) -> bool:
    """Reads what the server sent so far (through ``client.on_element``)."""
    client.ping()
    return True


def own_room_presence(el: Any, nick: str) -> bool:
    return (
        local(el) == "presence"
        and (el.get("from") or "").lower() == f"{ROOM}/{nick}".lower()
        and el.get("type") != "unavailable"
    )


def room_archive(client: XmppClient) -> list[str]:
    """Every body in the room's archive, oldest first (pages followed to the end)."""
    bodies: list[str] = []
    after = ""
    while True:
        query_id = client.next_id()
        page = f"<set xmlns='http://jabber.org/protocol/rsm'><max>100</max>{after}</set>"
        client.send(
            f"<iq type='set' id='{query_id}' to='{ROOM}'>"
            f"<query xmlns='{NS_MAM}' queryid='{query_id}'>{page}</query></iq>"
        )
        while True:
            el = client.expect(
                lambda e, q=query_id: (
                    (local(e) == "iq" and e.get("id") == q)
                    or (local(e) == "message" and e.find(f"{{{NS_MAM}}}result") is not None)
                )
            )
            if local(el) == "iq":
                break
            result = el.find(f"{{{NS_MAM}}}result")
            if result.get("queryid") != query_id:
                continue
            text = result.findtext(
                f"{{{NS_FORWARD}}}forwarded/{{jabber:client}}message/{{jabber:client}}body"
            )
            if text is not None:
                bodies.append(text)
        assert el.get("type") == "result", el.get("type")
        fin = el.find(f"{{{NS_MAM}}}fin")
        if fin is None or fin.get("complete") == "true":
            return bodies
        last = fin.findtext(
            "{http://jabber.org/protocol/rsm}set/{http://jabber.org/protocol/rsm}last"
        )
        after = f"<after>{last}</after>"


def left_lines(client: LineClient, nick: str) -> list[str]:
    return [
        t for t in client.seen if t.startswith(f":{nick}!") and (" QUIT " in t or " PART " in t)
    ]


def test_an_always_on_xmpp_user_is_handed_over_with_its_rooms_missed_messages_and_roster(
    make_node: Node, redis: RedisServer, postgres: PostgresServer
) -> None:
    config = shared(postgres)
    a = make_node("a", protocols=PROTOCOLS, overrides=config)
    b = make_node("b", protocols=PROTOCOLS, overrides=config)
    register(a, "xena", always_on=True).close()
    register(b, "yuri").close()
    register(a, "walt").close()

    # xena on node a: in #dev, with yuri in her roster.
    xena = xmpp_login(a, "xena", "laptop")
    iq(xena, "set", f"<query xmlns='{NS_ROSTER}'><item jid='yuri@localhost' name='Yuri'/></query>")
    xena.send("<presence/>")
    xena.join_room("dev", "xena")
    # Members on both nodes: IRC and XMPP on each (walt on a, yuri on b).
    watch_a, watch_b, ticker_client = irc(a, "wa"), irc(b, "wb"), irc(a, "ticker")
    for client, nick in ((watch_a, "wa"), (watch_b, "wb"), (ticker_client, "ticker")):
        client.send("JOIN #dev")
        client.expect(f" 366 {nick} #dev ")
    yuri = xmpp_login(b, "yuri", "desk")
    yuri.send("<presence/>")
    yuri.join_room("dev", "yuri")
    walt = xmpp_login(a, "walt", "desk")
    walt.send("<presence/>")
    walt.join_room("dev", "walt")
    seen_by_xmpp: list[Any] = []
    for member in (yuri, walt):
        member.on_element = lambda el: seen_by_xmpp.append(el) or False

    xena.close()
    for watcher in (watch_a, watch_b):
        eventually(lambda w=watcher: is_away(w, "xena"), 10, "xena kept away")
    assert lease_of(redis, "xena") == "a"
    watch_a.send("PRIVMSG #dev :said on a while xena was away")
    watch_b.send("PRIVMSG #dev :said on b while xena was away")
    yuri.send("<message type='chat' to='xena@localhost'><body>psst from b</body></message>")
    watch_a.send("PRIVMSG xena :psst from a")
    watch_a.expect("said on b while")
    watch_b.expect("said on a while")
    yuri.ping()

    # Another client of hers logs in on node b while the room is busy; it reads its
    # bookmarks and joins their autojoin rooms itself, as Conversations or Gajim do.
    ticker = Ticker(ticker_client, "dev")
    ticker.start()
    time.sleep(0.3)
    started = time.monotonic()
    phone = xmpp_login(b, "xena", "phone")
    took = time.monotonic() - started
    live: list[Any] = []
    got = iq(
        phone,
        "get",
        f"<pubsub xmlns='{NS_PUBSUB}'><items node='{NS_BOOKMARKS}'/></pubsub>",
    )
    items = got.findall(f".//{{{NS_PUBSUB}}}item")
    assert [item.get("id") for item in items] == [ROOM], [item.get("id") for item in items]
    conference = items[0].find(f"{{{NS_BOOKMARKS}}}conference")
    assert conference is not None and conference.get("autojoin") in ("true", "1")
    roster = iq(phone, "get", f"<query xmlns='{NS_ROSTER}'/>")
    assert [i.get("jid") for i in roster.iter(f"{{{NS_ROSTER}}}item")] == ["yuri@localhost"]
    phone.on_element = lambda el: live.append(el) or False
    phone.send("<presence/>")
    phone.send(
        f"<presence to='{ROOM}/xena'><x xmlns='{NS_MUC}'><history maxstanzas='0'/></x></presence>"
    )
    try:
        eventually(
            lambda: pumped(phone) and any(own_room_presence(el, "xena") for el in live),
            10,
            "room joined",
        )
    except AssertionError:
        from lxml import etree

        raise AssertionError([etree.tostring(e)[:300] for e in live]) from None
    time.sleep(0.5)
    ticker.done.set()
    ticker.join()
    ticker_client.send("PRIVMSG #dev :the end")
    eventually(
        lambda: pumped(phone) and any(body(el) == "the end" for el in live), 10, "the end, live"
    )
    # Past the wait for clients that read no bookmarks: the server did not show it the room
    # a second time.
    time.sleep(2.5)
    phone.ping()
    phone.on_element = None

    assert sum(own_room_presence(el, "xena") for el in live) == 1, live
    # The private messages sent while she was kept on a: each once.
    chats = [body(el) for el in live if local(el) == "message" and el.get("type") == "chat"]
    assert sorted(c for c in chats if c) == ["psst from a", "psst from b"], chats
    # What was said live since she joined: each once, in order.
    said = [body(el) for el in live if local(el) == "message" and el.get("type") == "groupchat"]
    said = [s for s in said if s]
    assert len(said) == len(set(said)), said
    # What she missed, and what was said during the handover: in the archive once each.
    archive = room_archive(phone)
    assert archive.count("said on a while xena was away") == 1, archive
    assert archive.count("said on b while xena was away") == 1, archive
    ticks = [int(t.split()[1]) for t in archive if t.startswith("tick ")]
    assert ticks == list(range(ticker.sent)), (ticker.sent, archive)
    print(
        f"login on b with the handover took {took * 1000:.0f} ms; {ticker.sent} messages"
        " said during the handover, each archived once"
    )

    # Nobody saw her leave: no QUIT or PART on IRC on either node, no unavailable presence
    # in the room over XMPP on either node; she is a member everywhere, homed on b.
    for watcher, nick in ((watch_a, "wa"), (watch_b, "wb")):
        read_until(watcher, "the end")
        assert not left_lines(watcher, "xena"), watcher.seen
        watcher.send("NAMES #dev")
        names = watcher.expect(f" 353 {nick} ").rsplit(":", 1)[1].split()
        assert "xena" in [n.lstrip("@+") for n in names], names
    yuri.ping()
    walt.ping()
    gone = [
        el
        for el in seen_by_xmpp
        if local(el) == "presence"
        and (el.get("from") or "").lower() == f"{ROOM}/xena"
        and el.get("type") == "unavailable"
    ]
    assert not gone, gone
    assert lease_of(redis, "xena") == "b"
    # She talks from b to both nodes.
    phone.send(f"<message type='groupchat' to='{ROOM}'><body>back, on b</body></message>")
    assert watch_a.expect("back, on b").startswith(":xena!")
    assert watch_b.expect("back, on b").startswith(":xena!")

    # And back to node a, with a client that reads no bookmarks: the server shows it the
    # room, once, with what it missed there.
    phone.close()
    for watcher in (watch_a, watch_b):
        eventually(lambda w=watcher: is_away(w, "xena"), 10, "xena kept away on b")
    watch_b.send("PRIVMSG #dev :said while xena was kept on b")
    watch_a.send("PRIVMSG xena :psst from a again")
    yuri.send("<message type='chat' to='xena@localhost'><body>psst from b again</body></message>")
    watch_a.expect("said while xena was kept on b")
    yuri.ping()
    plain = xmpp_login(a, "xena", "plain")
    plain.send("<presence/>")
    shown: list[Any] = []
    plain.on_element = lambda el: shown.append(el) or False
    eventually(
        lambda: pumped(plain) and any(own_room_presence(el, "xena") for el in shown),
        10,
        "room shown",
    )
    time.sleep(1.0)
    plain.ping()
    assert sum(own_room_presence(el, "xena") for el in shown) == 1, shown
    said = [body(el) for el in shown if local(el) == "message" and el.get("type") == "groupchat"]
    assert said.count("said while xena was kept on b") == 1, said
    chats = [body(el) for el in shown if local(el) == "message" and el.get("type") == "chat"]
    assert sorted(c for c in chats if c) == ["psst from a again", "psst from b again"], chats
    assert lease_of(redis, "xena") == "a"
    ticker_client.send("PRIVMSG #dev :the very end")
    for watcher in (watch_a, watch_b):
        read_until(watcher, "the very end")
        assert not left_lines(watcher, "xena"), watcher.seen
    yuri.ping()
    walt.ping()
    assert not [
        el
        for el in seen_by_xmpp
        if local(el) == "presence"
        and (el.get("from") or "").lower() == f"{ROOM}/xena"
        and el.get("type") == "unavailable"
    ]
    assert len(seen_by_xmpp) > 20, "the XMPP members saw the room"
    for client in (plain, yuri, walt, watch_a, watch_b, ticker_client):
        client.close()


def sm_session(node: ServerProcess, account: str, resource: str) -> tuple[XmppClient, str]:
    """A bound session with resumable stream management; (client, resumption id)."""
    client = xmpp_login(node, account, resource)
    client.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
    enabled = client.expect(lambda el: local(el) in ("enabled", "failed"))
    assert local(enabled) == "enabled" and enabled.get("id"), enabled
    return client, enabled.get("id")


def test_a_resumable_xmpp_session_keeps_the_account_on_its_node_until_it_lapses(
    make_node: Node, redis: RedisServer, postgres: PostgresServer
) -> None:
    resume = 4.0
    config = shared(postgres)
    a = make_node(
        "a", protocols=PROTOCOLS, overrides={**config, "xmpp": {"resume_timeout": resume}}
    )
    b = make_node("b", protocols=PROTOCOLS, overrides=config)
    register(a, "zoe", always_on=True).close()
    zoe, previd = sm_session(a, "zoe", "laptop")
    zoe.send("<presence/>")
    zoe.join_room("dev", "zoe")
    watch_b = irc(b, "wb")
    watch_b.send("JOIN #dev")
    watch_b.expect(" 366 wb #dev ")

    # Its connection drops: the session waits on node a to be resumed.
    zoe.close()
    time.sleep(0.5)
    watch_b.send("PRIVMSG zoe :while the session slept")
    watch_b.send("PRIVMSG #dev :in the room while it slept")
    # An XMPP login on node b meanwhile is handed off to node a, which keeps the account,
    # as with a connection.
    other = XmppClient(b.ports["xmpp"], source="127.0.0.1")
    assert local(other.auth_plain("zoe", PASSWORD)) == "success"
    other.close()
    # So is IRC's after registration.
    irc_try = late_sasl(b, "zoeb")
    irc_try.send(sasl_line("zoe"))
    text = sasl_outcome(irc_try)
    assert " 903 zoe " in text, text
    irc_try.close()
    assert lease_of(redis, "zoe") == "a"

    # The session is still resumable on node a, with what it was sent meanwhile.
    again = XmppClient(a.ports["xmpp"], source="127.0.0.1", timeout=10.0)
    assert local(again.auth_plain("zoe", PASSWORD)) == "success"
    again.open()
    again.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>")
    resumed = again.expect(lambda el: local(el) in ("resumed", "failed"))
    assert local(resumed) == "resumed", resumed
    again.expect(lambda el: local(el) == "message" and body(el) == "while the session slept")
    again.close()

    # Once the session lapses, the account's always-on user is kept without connections:
    # the next login on node b takes it over, as any always-on return.
    time.sleep(resume + 1.0)
    eventually(lambda: is_away(watch_b, "zoe"), 10, "zoe kept away")
    phone = xmpp_login(b, "zoe", "phone")
    assert lease_of(redis, "zoe") == "b"
    got: list[Any] = []
    phone.on_element = lambda el: got.append(el) or False
    phone.send("<presence/>")
    phone.send(
        f"<presence to='{ROOM}/zoe'><x xmlns='{NS_MUC}'><history maxstanzas='0'/></x></presence>"
    )
    phone.expect(lambda el: own_room_presence(el, "zoe"))
    assert "in the room while it slept" in room_archive(phone)
    # What the lapsed session never acknowledged reaches the new node's login, once.
    phone.ping()
    slept = [el for el in got if local(el) == "message" and body(el) == "while the session slept"]
    assert len(slept) == 1, got
    assert slept[0].find(f"{{{NS_DELAY}}}delay") is not None
    assert not left_lines(watch_b, "zoe"), watch_b.seen
    for client in (phone, watch_b):
        client.close()


def test_a_private_message_from_another_node_waits_for_an_always_on_user_kept_without_connections(
    make_node: Node, redis: RedisServer, postgres: PostgresServer
) -> None:
    config = shared(postgres)
    a = make_node("a", protocols=PROTOCOLS, overrides=config)
    b = make_node("b", protocols=PROTOCOLS, overrides=config)
    register(a, "kim", always_on=True).close()
    watch_b = irc(b, "wb")
    eventually(lambda: is_away(watch_b, "kim"), 10, "kim kept away on a")
    watch_b.send("PRIVMSG kim :sent from b while kim was away")
    watch_b.send("WHOIS kim")
    watch_b.expect(" 318 ")
    # Her next login, on her own node: the message is there, once.
    kim = xmpp_login(a, "kim", "desk")
    kim.send("<presence/>")
    el = kim.expect(lambda e: local(e) == "message" and body(e) is not None)
    assert body(el) == "sent from b while kim was away", body(el)
    assert el.find(f"{{{NS_DELAY}}}delay") is not None
    kim.ping()
    assert not [e for e in kim.pending if local(e) == "message" and body(e)]
    assert lease_of(redis, "kim") == "a"
    for client in (kim, watch_b):
        client.close()
