"""Failures under load, counted: a node killed, Redis stopped or emptied, PostgreSQL stopped.

Every test runs real nodes on one private PostgreSQL (the store they share) and one private
Redis, with IRC users on each node saying ``<label>-<n>`` at a steady rate in one room (and,
for nodes killed in the middle of bursts, XMPP and line-chat users too).  Each prints its
counts (sent, acknowledged by the echo, delivered, stored) and checks that nothing
acknowledged is lost and that Redis names one node per nick.
"""

from __future__ import annotations

import base64
import re
import select
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from tests.cluster.load import (
    Counts,
    LineTalker,
    Refused,
    Speaker,
    Talker,
    XmppTalker,
    eventually,
    pump,
    talk,
)
from tests.support.postgres import BIN_DIR, MISSING_REASON, PostgresServer
from tests.support.redis import RedisServer
from tests.support.server import LineClient, ServerProcess

pytestmark = pytest.mark.timeout(120)

Node = Callable[..., ServerProcess]
PASSWORD = "chaos-secret-pw"
UNAVAILABLE = "database is unavailable"
ROOM = "load"


def pg_node(
    make_node: Node,
    name: str,
    dsn: str,
    *,
    protocols: tuple[str, ...] = ("line", "irc"),
    lease: float = 2.0,
    **chat: object,
) -> ServerProcess:
    return make_node(
        name,
        lease=lease,
        protocols=protocols,
        overrides={
            "storage": {"backend": "postgresql", "dsn": dsn},
            # Flood control off, or out of reach: the talkers send in bursts.
            "irc": {"flood_burst": 0},
            "line": {"flood_burst": 100_000, "flood_rate": 100_000.0},
            "xmpp": {"flood_burst": 100_000, "flood_rate": 100_000.0, "flood_max_queue": 100_000},
            "chat": dict(chat),
        },
    )


def stored_texts(dsn: str) -> set[str]:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            return {text for (text,) in conn.execute("SELECT text FROM history")}
    except psycopg.OperationalError:
        return set()


def wait_stored(dsn: str, wanted: set[str], timeout: float = 20.0) -> set[str]:
    deadline = time.monotonic() + timeout
    while True:
        stored = stored_texts(dsn)
        if wanted <= stored or time.monotonic() > deadline:
            return stored
        time.sleep(0.3)


def all_in_room(talkers: Iterable[Talker]) -> None:
    """Until every talker's node sees every talker in the room."""
    talkers = list(talkers)
    everyone = {t.nick for t in talkers}
    for talker in talkers:
        eventually(
            lambda t=talker: t.members() == everyone, 10, f"{everyone} on {talker.nick}'s node"
        )


def drain(talkers: Iterable[Talker]) -> None:
    """Until every live talker's node has answered all it was sent, and a moment more for
    what crosses nodes."""
    live = [t for t in talkers if t.alive]
    for talker in live:
        talker.sync()
    pump(live, 1.5)
    for talker in live:
        talker.sync()


def nick_owner(redis: RedisServer, nick: str) -> str:
    return redis.command("GET", f"chatserver:nick:{nick}")


def test_a_node_killed_under_load_loses_nothing_acknowledged_and_its_nicks_come_back(
    make_node: Node, redis: RedisServer, postgres: PostgresServer
) -> None:
    dsn = postgres.new_database()
    a = pg_node(make_node, "a", dsn)
    # Registered before the other node starts: each node reads the accounts at its start.
    a.create_account("ann", PASSWORD)
    b = pg_node(make_node, "b", dsn)
    ann = Talker(a.ports["irc"], "ann", password=PASSWORD)
    al = Talker(a.ports["irc"], "al")
    bea = Talker(b.ports["irc"], "bea")
    bo = Talker(b.ports["irc"], "bo")
    talkers = [ann, al, bea, bo]
    for talker in talkers:
        talker.join()
    all_in_room(talkers)
    assert [nick_owner(redis, n) for n in ("ann", "al", "bea", "bo")] == ["a", "a", "b", "b"]

    talk(lambda: talkers, 3.0)
    killed_at = time.monotonic()
    a.kill()
    pump(talkers, 0.2)
    assert not ann.alive and not al.alive

    # Within the lease the dead node still owns its nicks: nobody takes them, even its own
    # users coming back (their node may only be slow).
    for nick in ("ann", "al"):
        with pytest.raises(Refused, match=" 433 "):
            Talker(b.ports["irc"], nick)
        assert nick_owner(redis, nick) == "a"

    # Al takes his nick back through the other node once the lease has passed; the others
    # go on talking meanwhile.
    def al_back() -> bool:
        try:
            al.connect(b.ports["irc"])
        except Refused:
            return False
        return True

    deadline = time.monotonic() + 10
    while not al_back():
        assert time.monotonic() < deadline, "al could not take his nick back"
        talk(lambda: [bea, bo], 0.3)
    back_after = time.monotonic() - killed_at
    eventually(lambda: nick_owner(redis, "al") == "b", 5, "al's nick on b in Redis")
    # The registered nick is free of the dead node now, but still its account's: a
    # stranger is refused it, and Ann, logged in, takes it.
    with pytest.raises(Refused, match=" 433 "):
        Talker(b.ports["irc"], "ann")
    ann.connect(b.ports["irc"], PASSWORD)
    eventually(lambda: nick_owner(redis, "ann") == "b", 5, "ann's nick on b in Redis")
    for talker in (ann, al):
        talker.join()
    all_in_room(talkers)
    talk(lambda: talkers, 2.0)
    drain(talkers)

    sent = {text for t in talkers for text in t.sent}
    acknowledged = {text for t in talkers for text in t.acknowledged}
    stored = wait_stored(dsn, acknowledged)
    counts = Counts(sent=len(sent), acknowledged=len(acknowledged), stored=len(stored & sent))
    for receiver in (bea, bo):
        # The survivors: every acknowledged message of everyone else, once, in each
        # sender's order.
        for sender in talkers:
            if sender is receiver:
                continue
            got = receiver.heard.get(sender.label, [])
            counts.delivered += len(got)
            assert len(got) == len(set(got)), f"{receiver.nick} got repeats from {sender.nick}"
            assert got == sorted(got, key=lambda t: int(t.rsplit("-", 1)[1]))
            counts.lost += sorted(set(sender.acknowledged) - set(got))
    counts.lost += sorted(acknowledged - stored)
    print(f"node killed under load: {counts}; nick back after {back_after:.1f}s")
    assert not counts.lost, counts.lost
    # One owner per nick, the node each user is on now.
    for nick in ("ann", "al", "bea", "bo"):
        assert nick_owner(redis, nick) == "b"


def two_nodes_talking(
    make_node: Node, dsn: str, *, lease: float = 2.0, **chat: object
) -> tuple[ServerProcess, ServerProcess, list[Talker]]:
    """Nodes a and b, two talkers on each, all in the room."""
    a = pg_node(make_node, "a", dsn, lease=lease, **chat)
    b = pg_node(make_node, "b", dsn, lease=lease, **chat)
    talkers = [
        Talker(a.ports["irc"], "ann"),
        Talker(a.ports["irc"], "al"),
        Talker(b.ports["irc"], "bea"),
        Talker(b.ports["irc"], "bo"),
    ]
    for talker in talkers:
        talker.join()
    all_in_room(talkers)
    return a, b, talkers


def check_everything_arrived(talkers: list[Talker], dsn: str, what: str) -> Counts:
    """Every acknowledged message reached every other talker once, in its sender's order,
    and is stored; the counts printed."""
    sent = {text for t in talkers for text in t.sent}
    acknowledged = {text for t in talkers for text in t.acknowledged}
    refused = {text for t in talkers for text in t.refusals}
    stored = wait_stored(dsn, acknowledged)
    counts = Counts(
        sent=len(sent),
        acknowledged=len(acknowledged),
        refused=len(refused),
        stored=len(stored & sent),
    )
    for receiver in talkers:
        for sender in talkers:
            if sender is receiver:
                continue
            got = receiver.heard.get(sender.label, [])
            counts.delivered += len(got)
            assert len(got) == len(set(got)), f"{receiver.nick} got repeats from {sender.nick}"
            assert got == sorted(got, key=lambda t: int(t.rsplit("-", 1)[1])), (
                f"{receiver.nick} got {sender.nick}'s messages out of order"
            )
            counts.lost += sorted(set(sender.acknowledged) - set(got))
            # What was refused reached no one.
            assert not set(sender.refusals) & set(got)
    counts.lost += sorted(acknowledged - stored)
    assert not refused & stored
    print(f"{what}: {counts}")
    assert not counts.lost, counts.lost
    # Each message got one answer: its echo or a refusal.
    assert acknowledged | refused == sent and not acknowledged & refused, counts
    return counts


def check_nick_owners(redis: RedisServer, talkers: list[Talker], a: ServerProcess) -> None:
    """Redis names each nick's node, and either node refuses a nick in use."""
    for talker in talkers:
        node = "a" if talker.nick.startswith("a") else "b"
        eventually(
            lambda t=talker, n=node: nick_owner(redis, t.nick) == n,
            10,
            f"{talker.nick} owned by {node} in Redis",
        )
    for talker in talkers:
        with pytest.raises(Refused, match=" 433 "):
            Talker(a.ports["irc"], talker.nick)


# The outages' lengths: the default run's, and a longer one for `make test-cluster-long`.
OUTAGES = [10.0, pytest.param(60.0, marks=[pytest.mark.cluster_long, pytest.mark.timeout(300)])]


@pytest.mark.parametrize("outage", OUTAGES)
def test_redis_stopped_under_load_loses_nothing_acknowledged(
    make_node: Node, redis: RedisServer, postgres: PostgresServer, outage: float
) -> None:
    dsn = postgres.new_database()
    a, b, talkers = two_nodes_talking(make_node, dsn)
    talk(lambda: talkers, 2.0)
    redis.kill()
    stopped = time.monotonic()
    talk(lambda: talkers, 5.0)
    # Meanwhile no new nick is given, on either node, and it says why.
    for node in (a, b):
        with pytest.raises(Refused, match="Redis is unreachable"):
            Talker(node.ports["irc"], "newcomer")
    talk(lambda: talkers, outage - (time.monotonic() - stopped))
    # Restarted empty, as a Redis without persistence comes back.
    redis.start()
    talk(lambda: talkers, 3.0)
    drain(talkers)
    check_everything_arrived(talkers, dsn, f"Redis stopped {outage:g} s")
    check_nick_owners(redis, talkers, a)
    # And new users are let in again, and meet the others.
    newcomer = Talker(b.ports["irc"], "newcomer")
    newcomer.join()
    all_in_room([*talkers, newcomer])


def test_redis_losing_its_data_under_load_gets_the_nodes_state_again(
    make_node: Node, redis: RedisServer, postgres: PostgresServer
) -> None:
    dsn = postgres.new_database()
    # After each emptying, every node gives the others a lease to announce themselves
    # again: 3 s, so that a node the busy machine holds up for two is not counted lost.
    a, b, talkers = two_nodes_talking(make_node, dsn, lease=3.0)
    talk(lambda: talkers, 2.0)
    assert redis.command("FLUSHALL") == "+OK"
    talk(lambda: talkers, 4.0)
    drain(talkers)
    check_everything_arrived(talkers, dsn, "Redis emptied (FLUSHALL)")
    # The nodes announced themselves again: their names, their heartbeats, their nicks.
    eventually(
        lambda: (
            redis.command("SISMEMBER", "chatserver:nodes", "a") == ":1"
            and redis.command("SISMEMBER", "chatserver:nodes", "b") == ":1"
        ),
        10,
        "both nodes listed again",
    )
    check_nick_owners(redis, talkers, a)
    # Nobody left the room on any node on the way.
    for talker in talkers:
        left = [text for text in talker.client.seen if " QUIT " in text or " PART " in text]
        assert not left, (left, a.log()[-4000:], b.log()[-4000:])
    all_in_room(talkers)
    # Emptied again while nobody talks (nothing heard from the other node lately): nobody
    # is taken for gone either.
    pump(talkers, 1.0)
    assert redis.command("FLUSHALL") == "+OK"
    pump(talkers, 5.0)
    for talker in talkers:
        left = [text for text in talker.client.seen if " QUIT " in text or " PART " in text]
        assert not left, (left, a.log()[-4000:], b.log()[-4000:])
    check_nick_owners(redis, talkers, a)
    # A newcomer on either node meets everyone.
    for node, nick in ((a, "ava"), (b, "ben")):
        newcomer = Talker(node.ports["irc"], nick)
        newcomer.join()
        talkers.append(newcomer)
    all_in_room(talkers)


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of the test's own: it is stopped half-way."""
    if BIN_DIR is None:
        pytest.skip(MISSING_REASON)
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.mark.parametrize("outage", OUTAGES)
def test_postgresql_stopped_under_load_in_cluster_mode(
    make_node: Node, redis: RedisServer, own_postgres: PostgresServer, outage: float
) -> None:
    dsn = own_postgres.new_database()
    # 20 messages a second on each node pass this bound half-way through the outage.
    a, b, talkers = two_nodes_talking(make_node, dsn, history_unstored_limit=100)
    a.create_account("acct", PASSWORD)
    talk(lambda: talkers, 2.0)
    own_postgres.stop()
    stopped = time.monotonic()
    talk(lambda: talkers, 3.0)
    # Logins are refused on both nodes, saying why and that it is worth trying again.
    for node in (a, b):
        client = LineClient(node.ports["irc"])
        client.send("CAP REQ :sasl")
        client.send("NICK acct")
        client.send("USER acct 0 * :acct")
        client.expect(lambda text: " ACK " in text)
        client.send("AUTHENTICATE PLAIN")
        client.expect(lambda text: text.endswith("AUTHENTICATE +"))
        token = base64.b64encode(f"acct\0acct\0{PASSWORD}".encode()).decode()
        client.send(f"AUTHENTICATE {token}")
        answer = client.expect(lambda text: re.search(r" 90[3-7] ", text) is not None)
        assert " 904 " in answer and "try again" in answer, answer
        client.close()
    talk(lambda: talkers, outage - (time.monotonic() - stopped))
    own_postgres.start()
    talk(lambda: talkers, 3.0)
    drain(talkers)
    counts = check_everything_arrived(talkers, dsn, f"PostgreSQL stopped {outage:g} s (two nodes)")
    # The bound was reached on both nodes, and their senders were told why.
    for talker in talkers:
        assert talker.refusals, f"nothing of {talker.nick} refused: {counts}"
        assert all(UNAVAILABLE in why for why in talker.refusals.values())
    # Logins work again.
    Talker(b.ports["irc"], "acct", password=PASSWORD)


@pytest.mark.cluster_long
@pytest.mark.timeout(300)
def test_three_nodes_one_killed_under_a_minute_of_load(
    make_node: Node, redis: RedisServer, postgres: PostgresServer
) -> None:
    dsn = postgres.new_database()
    nodes = {name: pg_node(make_node, name, dsn) for name in "abc"}
    talkers = [Talker(nodes[n].ports["irc"], f"{n}{i}") for n in "abc" for i in (1, 2)]
    for talker in talkers:
        talker.join()
    all_in_room(talkers)
    talk(lambda: talkers, 20.0, rate=20.0)
    killed_at = time.monotonic()
    nodes["c"].kill()
    gone = [t for t in talkers if t.nick.startswith("c")]
    # Its users come back through the other two nodes once the lease has passed.
    for talker, node in zip(gone, "ab", strict=True):
        deadline = time.monotonic() + 15
        while True:
            try:
                talker.connect(nodes[node].ports["irc"])
                break
            except Refused:
                assert time.monotonic() < deadline, f"{talker.nick} could not come back"
                talk(lambda: [t for t in talkers if t not in gone], 0.3, rate=20.0)
        talker.join()
    print(f"nicks back {time.monotonic() - killed_at:.1f}s after the kill")
    talk(lambda: talkers, 40.0, rate=20.0)
    drain(talkers)

    stayed = [t for t in talkers if t not in gone]
    acknowledged = {text for t in talkers for text in t.acknowledged}
    stored = wait_stored(dsn, acknowledged)
    counts = Counts(
        sent=sum(len(t.sent) for t in talkers),
        acknowledged=len(acknowledged),
        stored=len(stored & acknowledged),
    )
    for receiver in stayed:
        for sender in talkers:
            if sender is not receiver:
                got = receiver.heard.get(sender.label, [])
                counts.delivered += len(got)
                assert len(got) == len(set(got))
                counts.lost += sorted(set(sender.acknowledged) - set(got))
    counts.lost += sorted(acknowledged - stored)
    print(f"three nodes, one killed under load: {counts}")
    assert not counts.lost, counts.lost[:20]
    for talker, node in (*((t, t.nick[0]) for t in stayed), *zip(gone, "ab", strict=True)):
        eventually(lambda t=talker, n=node: nick_owner(redis, t.nick) == n, 10, talker.nick)


# Nodes killed while their users talk: each round a new node whose two users send bursts,
# watched by a third user there, until it is killed in the middle of them.
KILL_ROUNDS = 3
BURST = 10
PROTOCOLS = ("line", "irc", "xmpp")
# Seconds of bursts before the node is watched for the moment to kill it (its answer to a
# message said since), and at most how long it is watched.
WARM_UP = 0.3
WATCHED_AT_MOST = 5.0
# Seconds between each sender's messages while the node is watched, and how many of those
# may be on their way at once.
PACE = 0.0002
MAX_IN_FLIGHT = 400


def speaker(kind: str, node: ServerProcess, nick: str) -> Speaker:
    """A user of ``node`` speaking ``kind``, each with its own acknowledgement: IRC's
    echo-message, the XMPP room's reflection, line chat's /echo on."""
    if kind == "irc":
        return Talker(node.ports["irc"], nick)
    if kind == "xmpp":
        return XmppTalker(node.ports["xmpp"], nick, PASSWORD)
    return LineTalker(node.ports["line"], nick)


def number(text: str) -> int:
    """The number of a message ``<label>-<n>``."""
    return int(text.rsplit("-", 1)[1])


@dataclass
class Landing:
    """Where a kill landed in what its node's senders said once it was watched: how many
    of those messages were sent, acknowledged, and taken by the node (its witness was shown
    them) but never acknowledged."""

    sent: int = 0
    acknowledged: int = 0
    unanswered: int = 0

    def __str__(self) -> str:
        return f"{self.acknowledged} acknowledged, {self.unanswered} taken but not, of {self.sent}"


class Round:
    """One node to kill: two senders of it, and a user of it who says nothing, the
    witness: its output is never held, so it is shown each message as soon as the node
    takes it, and what it was shown and the sender never saw acknowledged is what the node
    died with in hand."""

    def __init__(self, kind: str, node: ServerProcess, n: int) -> None:
        self.node = node
        self.senders = [speaker(kind, node, f"s{n}x{i}") for i in range(2)]
        self.witness = speaker(kind, node, f"s{n}w")
        self.talkers = [*self.senders, self.witness]

    def talk_until_killed(self, others: list[Speaker]) -> Landing:
        """The senders say BURST messages each every few milliseconds, without waiting
        for their acknowledgements, for WARM_UP; then two each every PACE, and the node is
        killed the instant it acknowledges one of those while others are on their way
        (a node that answered all it was sent is watched on).  What they were sent before
        it died is read, and where the kill landed returned."""
        senders, witness = self.senders, self.witness
        everyone = [*self.talkers, *others]
        warm = time.monotonic() + WARM_UP
        while time.monotonic() < warm:
            for sender in senders:
                sender.client.send(b"".join(sender.line() for _ in range(BURST)))
            pump(everyone, 0.005)
        since = {sender: len(sender.sent) for sender in senders}

        def progress() -> tuple[bool, int]:
            """Whether the node has answered a message said since, and how many of those
            it has not answered."""
            answered, waiting = False, 0
            for sender in senders:
                # Acknowledgements come in order: the latest says how far the node has got.
                last = number(next(reversed(sender.acknowledged))) if sender.acknowledged else -1
                answered |= last >= since[sender]
                waiting += len(sender.sent) - 1 - max(last, since[sender] - 1)
            return answered, waiting

        # Only the senders are read meanwhile, as soon as something comes, and only what
        # has come: the kill follows an acknowledgement within microseconds.
        sockets = {sender.client.sock: sender for sender in senders}
        give_up = time.monotonic() + WATCHED_AT_MOST
        next_say = 0.0
        while time.monotonic() < give_up:
            answered, waiting = progress()
            if answered and waiting:
                break
            now = time.monotonic()
            if now >= next_say:
                if waiting < MAX_IN_FLIGHT:
                    for sender in senders:
                        sender.client.send(sender.line() + sender.line())
                next_say = now + PACE
            ready, _, _ = select.select(list(sockets), [], [], max(next_say - now, 0))
            for sock in ready:
                sockets[sock].pump_ready()
        self.node.kill()
        pump(everyone, 0.5)
        landing = Landing()
        for sender in senders:
            said = sender.sent[since[sender] :]
            shown = set(witness.heard.get(sender.label, ()))
            landing.sent += len(said)
            landing.acknowledged += sum(text in sender.acknowledged for text in said)
            landing.unanswered += sum(
                text in shown and text not in sender.acknowledged for text in said
            )
        return landing


@pytest.mark.parametrize("kind", ["irc", "xmpp", "line"])
def test_every_message_acknowledged_before_its_node_is_killed_reaches_the_others_and_the_store(
    make_node: Node, redis: RedisServer, postgres: PostgresServer, kind: str
) -> None:
    """A sender's acknowledgement (its echo, the room's reflection) comes only once Redis
    has taken its message, so a message acknowledged in the instant before its node dies is
    in another node's hands, which delivers it to its members and stores it.  The
    receivers, on the node that lives: an IRC user, and one of the senders' protocol.  Each
    node is killed in the instant after it acknowledged one of its senders' messages, with
    more of theirs on their way."""
    dsn = postgres.new_database()
    b = pg_node(make_node, "b", dsn, protocols=PROTOCOLS)
    listeners = [Talker(b.ports["irc"], "bea")]
    if kind != "irc":
        listeners.append(speaker(kind, b, "bel"))
    for listener in listeners:
        listener.join()
    # The nodes to kill, started together (a start takes seconds on a busy machine), from
    # threads that live until they are killed: a node dies with the thread that started it.
    with ThreadPoolExecutor(KILL_ROUNDS) as starting:
        killed = list(
            starting.map(
                lambda n: pg_node(make_node, f"a{n}", dsn, protocols=PROTOCOLS), range(KILL_ROUNDS)
            )
        )
        rounds = [Round(kind, a, n) for n, a in enumerate(killed)]
        senders = [sender for r in rounds for sender in r.senders]
        talkers = [talker for r in rounds for talker in r.talkers]
        for talker in talkers:
            talker.join()
        everyone = {*(t.nick for t in listeners), *(t.nick for t in talkers)}
        for talker in (*listeners, *talkers):
            eventually(lambda t=talker: t.members() >= everyone, 10, f"{everyone} seen")
        landings = [
            r.talk_until_killed([*listeners, *talkers[3 * n + 3 :]]) for n, r in enumerate(rounds)
        ]

    acknowledged = {text for s in senders for text in s.acknowledged}

    def heard(listener: Speaker) -> set[str]:
        return {text for texts in listener.heard.values() for text in texts}

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if all(acknowledged <= heard(listener) for listener in listeners):
            break
        pump(listeners, 0.2)
    stored = wait_stored(dsn, acknowledged)
    missed = {text for listener in listeners for text in acknowledged - heard(listener)}
    counts = Counts(
        sent=sum(len(s.sent) for s in senders),
        acknowledged=len(acknowledged),
        delivered=sum(len(heard(listener) & acknowledged) for listener in listeners),
        stored=len(stored & acknowledged),
    )
    counts.lost = sorted(missed | (acknowledged - stored))
    lost_rounds = {text.split("x", 1)[0] for text in counts.lost}
    print(
        f"{KILL_ROUNDS} nodes killed while {kind} users talked: {counts};"
        f" rounds that lost: {lost_rounds}; of the messages said while each node was"
        f" watched: {'; '.join(str(landing) for landing in landings)}"
    )
    assert not counts.lost, counts.lost[:20]
    # Each node died in the middle of its senders' messages, not after it had answered
    # them all (then nothing acknowledged would have been at stake).
    assert all(0 < landing.acknowledged < landing.sent for landing in landings), landings
    # Every sender was acknowledged for something before its node died.
    assert all(s.acknowledged for s in senders)
