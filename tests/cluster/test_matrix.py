"""The cross-protocol matrix's core scenarios with its users spread over two nodes.

Two nodes share one PostgreSQL (the accounts XMPP users log in to) and one Redis.  The cast
of :mod:`tests.matrix.test_events` (an actor and viewers of each protocol) is placed three
ways: every actor on node a and every viewer on node b, the reverse, and each protocol's
users on alternating nodes (so pairs on one node are covered too).  Each scenario checks,
with the matrix's own mapping table, that every viewer sees the event exactly once, in its
own protocol: room messages, actions and notices from each protocol, private messages
between every pair, joins, parts and quits, nick changes and topics.

What crosses nodes arrives a moment after the actor's round trip, so every step waits for
its events (the runner's ``wait``), and a join waits until both nodes have it, so that the
room's first member is its operator on both.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.matrix.clients import Peer, XmppPeer
from tests.matrix.conftest import ENFORCE_SECONDS, World
from tests.matrix.forms import Ev
from tests.matrix.runner import joined_test, refused, step
from tests.support.postgres import PostgresServer
from tests.support.redis import BINARY, MISSING_REASON, RedisServer
from tests.support.server import LineClient, ServerProcess

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

PROTOCOLS = ("irc", "line", "xmpp")
TEXT = "hello <world> & \"all\" 'of' you 🙂"
REASON = "rule 3: no <blink> & no 'spam' ✋"
TOPIC = "Release on Friday <b>&amp;</b> 🚀"
# Where each user is: (actors irc, line, xmpp), (viewers irc, line json, line text, xmpp).
LAYOUTS = {
    "a-to-b": ((0, 0, 0), (1, 1, 1, 1)),
    "b-to-a": ((1, 1, 1), (0, 0, 0, 0)),
    "alternating": ((0, 1, 0), (1, 0, 1, 0)),
}


class Cluster:
    """Two nodes, a World (the matrix's client factory) on each, and a probe on each: a
    line-chat user in no room that asks who is in one."""

    def __init__(self, nodes: list[ServerProcess]) -> None:
        self.nodes = nodes
        self.worlds = [World(node) for node in nodes]
        self.probes = [self._probe(node, f"probe{i}") for i, node in enumerate(nodes)]
        self._rooms = itertools.count(1)
        self._nicks = itertools.count(1)

    @staticmethod
    def _probe(node: ServerProcess, nick: str) -> LineClient:
        client = LineClient(node.ports["line"])
        client.expect("*** Choose a nick:")
        client.send(nick)
        client.expect(f"*** You are {nick}.")
        return client

    def room(self) -> str:
        return f"c{next(self._rooms)}"

    def nick(self, prefix: str) -> str:
        return f"{prefix}{next(self._nicks)}"

    def members(self, room: str) -> list[set[str]]:
        """Who is in ``room``, as each node sees it."""
        seen = []
        for probe in self.probes:
            probe.send(f"/who {room}")
            answer = probe.expect(lambda text: "members of" in text or "no such room" in text)
            names = answer.split(": ", 1)[1].split() if "members of" in answer else []
            seen.append({name.lstrip("@+") for name in names})
        return seen

    def settled(self, room: str, nicks: set[str]) -> None:
        """Until both nodes see exactly ``nicks`` in ``room``."""
        deadline = time.monotonic() + 10
        while (seen := self.members(room)) != [nicks, nicks]:
            assert time.monotonic() < deadline, f"#{room}: wanted {nicks} on both nodes: {seen}"
            time.sleep(0.05)

    def close(self) -> None:
        for world in self.worlds:
            world.close()
        for probe in self.probes:
            probe.close()


@pytest.fixture(scope="module")
def cluster(
    postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    if BINARY is None:
        pytest.skip(MISSING_REASON)
    redis = RedisServer().start()
    dsn = postgres.new_database()
    base: Path = tmp_path_factory.mktemp("cluster-matrix")
    nodes = []
    try:
        for name in ("a", "b"):
            node = ServerProcess(
                base / name,
                protocols=("line", "irc", "xmpp"),
                overrides={
                    "storage": {"backend": "postgresql", "dsn": dsn},
                    "cluster": {"redis": redis.url, "node": name, "lease": 3.0},
                    "irc": {"flood_exempt": ["127.0.0.1"]},
                    "line": {"flood_burst": 10000, "flood_rate": 10000.0},
                    "chat": {
                        "nick_enforcement": "strict",
                        "nick_enforce_timeout": ENFORCE_SECONDS,
                        "history_flush_interval": 0.2,
                        "login_failure_burst": 50,
                    },
                },
            )
            nodes.append(node.start())
        made = Cluster(nodes)
        try:
            yield made
        finally:
            made.close()
    finally:
        for node in nodes:
            node.kill()
        redis.destroy()


@dataclass
class Cast:
    cluster: Cluster
    actors: dict[str, Peer]
    viewers: list[Peer]

    def all(self) -> list[Peer]:
        return [*self.actors.values(), *self.viewers]


@pytest.fixture(scope="module", params=list(LAYOUTS))
def cast(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Cast]:
    actors_at, viewers_at = LAYOUTS[request.param]
    # Names of this layout's own: accounts stay registered in the shared database.
    tag = "abc"[list(LAYOUTS).index(request.param)]
    w = cluster.worlds
    made = Cast(
        cluster,
        actors={
            "irc": w[actors_at[0]].irc_pkg(f"airc{tag}"),
            "line": w[actors_at[1]].line(f"aline{tag}"),
            "xmpp": w[actors_at[2]].xmpp(f"axmpp{tag}"),
        },
        viewers=[
            w[viewers_at[0]].irc(f"virc{tag}", caps=("away-notify", "message-tags")),
            w[viewers_at[1]].line(f"vline{tag}"),
            w[viewers_at[2]].line(f"vtext{tag}", json_mode=False),
            w[viewers_at[3]].xmpp(f"vxmpp{tag}"),
        ],
    )
    try:
        yield made
    finally:
        for peer in made.all():
            try:
                peer.close()
            except Exception:
                pass


@pytest.fixture
def scene(cast: Cast) -> Iterator[Cast]:
    for peer in cast.all():
        peer.sync()
    yield cast


def enter(cluster: Cluster, room: str, *peers: Peer) -> None:
    """Each peer joins in turn, once both nodes have the ones before."""
    inside: set[str] = set()
    for peer in peers:
        peer.join(room)
        got = peer.expect(joined_test(peer, room))
        assert not refused(peer, got), f"{peer.label} could not join {room}: {got}"
        inside.add(peer.nick)
        cluster.settled(room, inside)
    for peer in peers:
        peer.sync()


def leave(cluster: Cluster, room: str, *peers: Peer) -> None:
    for peer in peers:
        peer.part(room, "")
    cluster.settled(room, set())
    for peer in peers:
        peer.sync()


def cross(*events: Ev) -> dict[str, Any]:
    return {"events": list(events), "wait": True}


def cells(*kinds: str) -> list[tuple[str, str]]:
    return [(k, p) for k in kinds for p in PROTOCOLS if (k, p) != ("notice", "xmpp")]


@pytest.mark.parametrize(("kind", "sender"), cells("message", "action", "notice"))
def test_room_messages(scene: Cast, kind: str, sender: str) -> None:
    cluster, actor, room = scene.cluster, scene.actors[sender], scene.cluster.room()
    enter(cluster, room, actor, *scene.viewers)
    send = {"message": actor.say, "action": actor.act, "notice": actor.notice}[kind]
    step(
        actor,
        lambda: send(room, TEXT),
        **cross(Ev(kind, actor.nick, room, TEXT)),
        viewers=scene.viewers,
    )
    leave(cluster, room, actor, *scene.viewers)


@pytest.mark.parametrize("sender", PROTOCOLS)
def test_private_messages(scene: Cast, sender: str) -> None:
    actor = scene.actors[sender]
    for viewer in scene.viewers:
        others = [v for v in scene.viewers if v is not viewer]
        for action in (False, True):
            kind = "privaction" if action else "privmsg"
            step(
                actor,
                lambda v=viewer, a=action: actor.msg(v.nick, TEXT, action=a),
                **cross(Ev(kind, actor.nick, text=TEXT)),
                viewers=[viewer],
                not_seen_by=others,
            )


@pytest.mark.parametrize("sender", PROTOCOLS)
def test_join(scene: Cast, sender: str) -> None:
    cluster, actor, room = scene.cluster, scene.actors[sender], scene.cluster.room()
    enter(cluster, room, *scene.viewers)
    step(
        actor,
        lambda: actor.join(room),
        **cross(Ev("join", actor.nick, room)),
        viewers=scene.viewers,
    )
    leave(cluster, room, actor, *scene.viewers)


@pytest.mark.parametrize("sender", PROTOCOLS)
def test_part_with_reason(scene: Cast, sender: str) -> None:
    cluster, actor, room = scene.cluster, scene.actors[sender], scene.cluster.room()
    enter(cluster, room, actor, *scene.viewers)
    step(
        actor,
        lambda: actor.part(room, REASON),
        **cross(Ev("part", actor.nick, room, REASON)),
        viewers=scene.viewers,
    )
    leave(cluster, room, *scene.viewers)


@pytest.mark.parametrize("sender", PROTOCOLS)
def test_quit_with_reason(scene: Cast, sender: str) -> None:
    cluster, room = scene.cluster, scene.cluster.room()
    # The quitter is on the node its protocol's actor is on.
    world = cluster.worlds[_actor_node(scene, sender)]
    quitter: Peer
    if sender == "irc":
        quitter = world.irc_pkg(cluster.nick("qirc"))
    elif sender == "line":
        quitter = world.line(cluster.nick("qline"))
    else:
        quitter = world.xmpp(cluster.nick("qxmpp"))
    enter(cluster, room, *scene.viewers, quitter)
    step(
        None,
        lambda: quitter.quit(REASON),
        **cross(Ev("quit", quitter.nick, room, f"Quit: {REASON}")),
        viewers=scene.viewers,
    )
    leave(cluster, room, *scene.viewers)


def _actor_node(scene: Cast, sender: str) -> int:
    for index, world in enumerate(scene.cluster.worlds):
        if scene.actors[sender] in world.peers:
            return index
    raise AssertionError(sender)


@pytest.mark.parametrize("sender", PROTOCOLS)
def test_nick_change(scene: Cast, sender: str) -> None:
    cluster, actor, room = scene.cluster, scene.actors[sender], scene.cluster.room()
    enter(cluster, room, actor, *scene.viewers)
    old = actor.nick
    new = f"{old}2"

    def rename(to: str) -> None:
        if isinstance(actor, XmppPeer):
            actor.rename_in(room, to)
        else:
            actor.rename(to)

    step(
        actor,
        lambda: rename(new),
        **cross(Ev("nick", old, room, new_nick=new)),
        viewers=scene.viewers,
    )
    step(
        actor,
        lambda: rename(old),
        **cross(Ev("nick", new, room, new_nick=old)),
        viewers=scene.viewers,
    )
    leave(cluster, room, actor, *scene.viewers)


@pytest.mark.parametrize("sender", PROTOCOLS)
def test_topic(scene: Cast, sender: str) -> None:
    cluster, actor, room = scene.cluster, scene.actors[sender], scene.cluster.room()
    enter(cluster, room, actor, *scene.viewers)
    step(
        actor,
        lambda: actor.topic(room, TOPIC),
        **cross(Ev("topic", actor.nick, room, TOPIC)),
        viewers=scene.viewers,
    )
    leave(cluster, room, actor, *scene.viewers)
