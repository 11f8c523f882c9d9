"""HAProxy, configured as deploy/haproxy.cfg says, in front of two nodes: users connect to
one address for each protocol, land on either node, and meet across them."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator

import pytest

from tests.cluster.load import Talker, eventually
from tests.matrix.clients import XmppPeer, local
from tests.support.haproxy import BINARY, MISSING_REASON, HAProxy, affordable_maxconn
from tests.support.haproxy import haproxy_config as make_config
from tests.support.postgres import PostgresServer
from tests.support.redis import RedisServer
from tests.support.server import LineClient, ServerProcess, free_port

pytestmark = pytest.mark.timeout(90)

Node = Callable[..., ServerProcess]
PROTOCOLS = ("line", "irc", "xmpp")


@pytest.fixture
def balanced(
    make_node: Node, postgres: PostgresServer
) -> Iterator[tuple[dict[str, int], list[ServerProcess]]]:
    """Two nodes on one PostgreSQL behind HAProxy: (the balancer's port per protocol, nodes)."""
    if BINARY is None:
        pytest.skip(MISSING_REASON)
    dsn = postgres.new_database()
    nodes = [
        make_node(
            name,
            protocols=PROTOCOLS,
            overrides={
                "storage": {"backend": "postgresql", "dsn": dsn},
                # Everyone comes from the balancer's address (deploy/haproxy.cfg says so).
                "chat": {"max_connections_per_address": 0},
            },
        )
        for name in ("a", "b")
    ]
    fronts = {proto: free_port() for proto in PROTOCOLS}
    config = make_config(
        fronts,
        {
            proto: [(n, node.ports[proto]) for n, node in zip("ab", nodes, strict=True)]
            for proto in PROTOCOLS
        },
        maxconn=affordable_maxconn(),
    )
    proxy = HAProxy(config, list(fronts.values())).start()
    try:
        yield fronts, nodes
    finally:
        proxy.destroy()


def line_user(port: int, nick: str) -> LineClient:
    client = LineClient(port)
    client.expect("*** Choose a nick:")
    client.send(nick)
    client.expect(f"*** You are {nick}.")
    return client


def test_users_behind_haproxy_land_on_both_nodes_and_meet(
    balanced: tuple[dict[str, int], list[ServerProcess]], redis: RedisServer
) -> None:
    fronts, _nodes = balanced
    # Connections stay open, so "leastconn" sends each to the node with fewer.
    talkers = [Talker(fronts["irc"], nick, room="front") for nick in ("ira", "ivo", "ida", "ike")]
    lines = [line_user(fronts["line"], nick) for nick in ("lea", "leo")]
    xmpp = XmppPeer(fronts["xmpp"], "xena", "xena-secret-1", register=True)

    def owner(nick: str) -> str:
        return redis.command("GET", f"chatserver:nick:{nick}")

    eventually(lambda: all(owner(t.nick) in "ab" and owner(t.nick) for t in talkers), 10, "owners")
    places = {t.nick: owner(t.nick) for t in talkers}
    assert set(places.values()) == {"a", "b"}, f"the balancer used one node only: {places}"

    for talker in talkers:
        talker.join()
    for client in lines:
        client.send("/join front")
        client.expect("*** now talking in #front")
    xmpp.join("front")
    xmpp.expect(lambda el: local(el) == "presence" and el.get("from", "").endswith("/xena"))

    # Everyone in one room, as each node sees it.
    everyone = {t.nick for t in talkers} | {"lea", "leo", "xena"}

    def whole(talker: Talker) -> bool:
        talker.client.send("NAMES #front")
        names = talker.client.expect(f" 353 {talker.nick} ")
        found = {n.lstrip("@+") for n in names.rsplit(" :", 1)[1].split()}
        return found == everyone

    for talker in talkers:
        eventually(lambda t=talker: whole(t), 10, f"everyone on {talker.nick}'s node")

    # A message from each protocol reaches everyone, whichever node they are on.
    for talker in talkers:
        talker.say()
    lines[0].send("from line")
    xmpp.say("front", "from xmpp")
    deadline = time.monotonic() + 10
    want = {f"{t.label}-0" for t in talkers}
    for talker in talkers:
        while not (
            want - {f"{talker.label}-0"} <= {x for got in talker.heard.values() for x in got}
            and any(text.endswith(":from line") for text in talker.client.seen)
            and any(text.endswith(":from xmpp") for text in talker.client.seen)
        ):
            assert time.monotonic() < deadline, talker.client.seen[-20:]
            talker.pump()
            time.sleep(0.01)
    for client in lines:
        wanted = {*want, "from xmpp"}
        while wanted:
            wanted.discard(client.read_line().rsplit("> ", 1)[-1])

    def muc_body(el: ET.Element) -> str | None:
        body = el.find("{jabber:client}body")
        return body.text if local(el) == "message" and body is not None else None

    remaining = {*want, "from line"}
    while remaining:
        got = xmpp.expect(lambda el: muc_body(el) in remaining)
        remaining.discard(muc_body(got) or "")

    # A private message between users on different nodes.
    on_a = next(t for t in talkers if places[t.nick] == "a")
    on_b = next(t for t in talkers if places[t.nick] == "b")
    on_a.client.send(f"PRIVMSG {on_b.nick} :across the balancer")
    on_b.client.expect(f"PRIVMSG {on_b.nick} :across the balancer")
    xmpp.close()
