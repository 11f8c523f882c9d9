"""A client that logs in on one node to an account whose user is connected on another is
handed off: its socket stays on the node it reached, its line-chat connection runs on the
account's node, and both clients are one user, as two connections of one process are.
Through real nodes, a private Redis and a shared PostgreSQL: the clients' life together,
either node dying, JSON Lines over TCP and WebSocket, and Redis restarting empty."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from tests.cluster.test_accounts import PASSWORD, lease_of, register, shared
from tests.cluster.test_cluster import eventually, join, line, try_nick
from tests.hostile.clients import RawClient
from tests.ops.test_metrics import get, samples
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer
from tests.support.redis import RedisServer
from tests.support.server import LineClient, ServerProcess
from tests.web.conftest import WsClient, ws_url

pytestmark = pytest.mark.timeout(120)

Node = Callable[..., ServerProcess]
LINE = (("protocol", "line"),)


def relayed_login(node: ServerProcess, account: str) -> LineClient:
    """A line client on ``node`` that logs in to ``account`` before choosing a nick."""
    client = LineClient(node.ports["line"])
    client.expect("*** Choose a nick:")
    client.send(f"/identify {account} {PASSWORD}")
    client.expect(f"*** You are {account}.")
    return client


def figures(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return samples(get(f"http://127.0.0.1:{port}/metrics")[2])


def quits(client: LineClient, nick: str) -> list[str]:
    return [t for t in client.seen if t.startswith((f"-!- {nick} quit", f"-!- {nick} left"))]


def test_two_line_clients_of_one_account_on_two_nodes_are_one_user(
    make_node: Node, redis: RedisServer, postgres: PostgresServer
) -> None:
    ports = {"a": free_port(), "b": free_port()}
    # Line-chat users may send as fast as they like (one fills a reader's backlog below).
    config = {**shared(postgres), "line": {"flood_burst": 100_000, "flood_rate": 100_000.0}}
    nodes = {
        name: make_node(name, overrides={**config, "metrics": {"enabled": True, "port": port}})
        for name, port in ports.items()
    }
    a, b = nodes["a"], nodes["b"]
    alice = register(a, "alice")
    join(alice, "dev")
    bob = line(b, "bob")
    join(bob, "dev")

    # Her second client reaches node b: it is served by node a, as her second connection.
    phone = relayed_login(b, "alice")
    phone.expect("*** you are in #dev")
    assert lease_of(redis, "alice") == "a"
    assert figures(ports["a"])[("chatserver_connections", LINE)] == 2
    assert figures(ports["b"])[("chatserver_connections", LINE)] == 1
    served = (("node", "b"), ("side", "served"))
    piped = (("node", "a"), ("side", "piped"))
    assert figures(ports["a"])[("chatserver_relayed_connections", served)] == 1
    assert figures(ports["b"])[("chatserver_relayed_connections", piped)] == 1

    # Both get the room; what one says the other sees, as with two connections of one user.
    bob.send("hello both")
    assert alice.expect("hello both") == "[#dev] <bob> hello both"
    assert phone.expect("hello both") == "[#dev] <bob> hello both"
    phone.send("from the phone")
    assert bob.expect("from the phone") == "[#dev] <alice> from the phone"
    assert alice.expect("from the phone") == "[#dev] <alice> from the phone"
    alice.send("from the laptop")
    assert phone.expect("from the laptop") == "[#dev] <alice> from the laptop"
    bob.send("/msg alice psst")
    assert "psst" in phone.expect("psst")
    assert "psst" in alice.expect("psst")
    phone.send("/who dev")
    assert phone.expect("members of #dev") == "*** members of #dev (2): @alice bob"

    # The laptop quits: the phone stays, and nobody saw her leave.
    alice.send("/quit gone home")
    alice.read_until_closed()
    phone.send("still here")
    assert bob.expect("still here") == "[#dev] <alice> still here"
    assert not quits(bob, "alice"), bob.seen

    # The phone's socket closes on node b: her connection on node a goes, her last one.
    phone.close()
    bob.expect(lambda t: t.startswith("-!- alice quit"))
    eventually(
        lambda: figures(ports["a"]).get(("chatserver_connections", LINE)) == 0,
        10,
        "node a's relayed connection gone",
    )
    assert not figures(ports["a"]).get(("chatserver_relayed_connections", served))
    assert not figures(ports["b"]).get(("chatserver_relayed_connections", piped))

    # A relayed client that quits is closed by node a through node b; the other stays.
    alice = relayed_login(a, "alice")
    join(alice, "dev")
    bob.expect("-!- alice joined #dev")
    seen_before = len(bob.seen)
    phone = relayed_login(b, "alice")
    phone.expect("*** you are in #dev")
    phone.send("/quit bye from the phone")
    phone.read_until_closed()
    alice.send("laptop goes on")
    assert bob.expect("laptop goes on") == "[#dev] <alice> laptop goes on"
    assert not [t for t in bob.seen[seen_before:] if t.startswith("-!- alice")], bob.seen

    # A relayed client that never reads is dropped by node a for its output backlog, as
    # one of node a's own sockets would be (node b tells it when the socket is full).
    sloth = RawClient(b.ports["line"], source="127.0.0.1", rcvbuf=4096)
    sloth.expect("*** Choose a nick:")
    sloth.send_line(f"/identify alice {PASSWORD}")
    sloth.expect("*** you are in #dev")
    alice.send("/quit")
    alice.read_until_closed()
    text = "z" * 3000
    deadline = time.monotonic() + 30
    mark = len(bob.seen)

    def dropped() -> list[str]:
        return [t for t in bob.seen[mark:] if t.startswith("-!- alice quit")]

    while not dropped():
        assert time.monotonic() < deadline, "the reader that never reads was not dropped"
        bob.send("\r\n".join([text] * 50))
        try:
            bob.read_line(timeout=0.05)
        except TimeoutError:
            pass
    assert dropped() == ["-!- alice quit (Output backlog full)"], bob.seen[-5:]
    sloth.sock.close()


def test_a_relayed_client_is_closed_when_either_node_ends(
    make_node: Node, redis: RedisServer, postgres: PostgresServer
) -> None:
    lease = 2.0
    config = shared(postgres)
    metrics = free_port()
    a = make_node(
        "a", lease=lease, overrides={**config, "metrics": {"enabled": True, "port": metrics}}
    )
    b = make_node("b", lease=lease, overrides=config)
    c = make_node("c", lease=lease, overrides=config)
    register(a, "erin").close()
    erin = relayed_login(a, "erin")
    join(erin, "dev")
    watcher = line(a, "watcher")
    join(watcher, "dev")
    on_b = relayed_login(b, "erin")
    on_b.expect("*** you are in #dev")
    on_c = relayed_login(c, "erin")
    on_c.expect("*** you are in #dev")

    def served() -> float:
        return figures(metrics)[("chatserver_connections", LINE)]

    assert served() == 4

    # Node c stops: it tells the socket it relayed, as it tells its own; node a's
    # connection for it goes at once.
    c.stop()
    last = on_c.read_until_closed(timeout=10)
    assert last and last[-1] == "-!- Server closing connection: Server shutting down", last
    eventually(lambda: served() == 3, 5, "node a's connection for node c's socket gone")

    # Node b dies: node a's connection for it goes once node b counts as lost, and erin
    # stays (on a).
    b.kill()
    eventually(lambda: served() == 2, 4 * lease + 5, "node a's connection for node b gone")
    erin.send("b is gone")
    assert watcher.expect("b is gone") == "[#dev] <erin> b is gone"
    assert not quits(watcher, "erin"), watcher.seen

    # Node a dies: node c (started again) closes the socket it relayed, saying why.
    c.start()
    again = relayed_login(c, "erin")
    again.expect("*** you are in #dev")
    a.kill()
    last = again.read_until_closed(timeout=4 * lease + 5)
    assert last and last[-1] == "-!- Server closing connection: a lost", last


def test_json_clients_over_tcp_and_websocket_are_handed_off_and_end_if_redis_loses_its_data(
    make_node: Node, redis: RedisServer, postgres: PostgresServer
) -> None:
    config = shared(postgres)
    a = make_node("a", overrides=config)
    b = make_node("b", protocols=("line", "irc", "web"), overrides=config)
    alice = register(a, "alice")
    join(alice, "dev")

    # In JSON mode, with the start of the next command sent along with the login: node a
    # answers the login with its tag, then reads the rest of that command as it comes.
    client = LineClient(b.ports["line"])
    client.expect("*** Choose a nick:")
    client.send("/format json")
    client.expect('"format"')
    login = {"cmd": "identify", "nick": "alice", "password": PASSWORD, "tag": "t1"}
    client.sock.sendall(json.dumps(login).encode() + b'\r\n{"cmd": "ping", "ta')
    ok = json.loads(client.expect(lambda t: '"identify"' in t))
    assert ok["type"] == "ok" and ok["tag"] == "t1" and ok["nick"] == "alice", ok
    client.send(b'g": "p1"}\r\n')
    pong = json.loads(client.expect(lambda t: '"p1"' in t))
    assert pong["type"] == "ok" and pong["cmd"] == "ping", pong
    alice.send("to json")
    said = json.loads(client.expect(lambda t: "to json" in t))
    assert said["from"] == "alice" and said["room"] == "dev", said

    # Over WebSocket (JSON from the first message): each line still one message.
    ws = WsClient(ws_url(b, "/line"))
    ws.expect(lambda m: '"prompt"' in m)
    ws.send_obj({**login, "tag": "w1"})
    ok = json.loads(ws.expect(lambda m: '"identify"' in m))
    assert ok["type"] == "ok" and ok["tag"] == "w1", ok
    # The user's room was shown before the answer, as for a login on node a.
    assert [m for m in ws.seen if '"type":"room"' in m and '"dev"' in m], ws.seen
    ws.send("from the browser")
    assert alice.expect("from the browser") == "[#dev] <alice> from the browser"
    alice.send("to the browser")
    said = json.loads(ws.expect(lambda m: "to the browser" in m))
    assert said["from"] == "alice" and said["room"] == "dev", said
    ws.close()

    # Redis restarts empty: what a relayed client said meanwhile may be lost, so both nodes
    # end its relay (node b closes the socket); the client on node a goes on.
    redis.kill()
    redis.start()
    client.read_until_closed(timeout=20)
    eventually(lambda: "You are carl" in try_nick(a, "carl"), 15, "node a takes nicks again")
    bob = line(a, "bob")
    join(bob, "dev")
    alice.send("after the restart")
    assert bob.expect("after the restart") == "[#dev] <alice> after the restart"
