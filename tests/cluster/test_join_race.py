"""A user joins a room on one node while a message is said in it on another, again and again.

Whichever comes first, the room's member list and the message's delivery agree: the joiner
gets the message exactly when its own node had the join before the message, once, and after
its own JOIN; and when the sender's node had the join first (it showed the sender the JOIN
before its echo), the joiner gets it always.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.support.server import LineClient, ServerProcess

pytestmark = pytest.mark.timeout(120)

Node = Callable[..., ServerProcess]
ROUNDS = 60
ROOM = "#race"


def irc(server: ServerProcess, nick: str) -> LineClient:
    client = LineClient(server.ports["irc"])
    client.send("CAP REQ :echo-message")
    client.send(f"NICK {nick}")
    client.send(f"USER {nick} 0 * :{nick}")
    client.expect(" ACK ")
    client.send("CAP END")
    client.expect(lambda text: f" 001 {nick} " in text)
    return client


def until(client: LineClient, test: Callable[[str], bool], seen: list[str]) -> None:
    """Read into ``seen`` until a line passes ``test``."""
    while True:
        text = client.read_line(10)
        seen.append(text)
        if test(text):
            return


def index(lines: list[str], test: Callable[[str], bool]) -> int | None:
    return next((i for i, text in enumerate(lines) if test(text)), None)


@pytest.mark.parametrize("witness", [False, True], ids=["joiner-alone", "member-there"])
def test_a_join_racing_a_message_never_half_happens(make_node: Node, witness: bool) -> None:
    # No flood control: the sender says two messages a round.
    quick = {"irc": {"flood_burst": 0}}
    a = make_node("a", protocols=("irc",), overrides=quick)
    b = make_node("b", protocols=("irc",), overrides=quick)
    sender = irc(a, "sender")
    sender.send(f"JOIN {ROOM}")
    sender.expect(" 366 sender ")
    joiner = irc(b, "joiner")
    # With a member on the joiner's node, the room's messages go there whatever the sender's
    # node knows of the join; without one, only once it knows.
    watcher = irc(b, "watcher") if witness else None
    if watcher is not None:
        watcher.send(f"JOIN {ROOM}")
        watcher.expect(" 366 watcher ")
        sender.expect(lambda text: text.startswith(":watcher!") and " JOIN " in text)

    orders = {"join first on the sender's node": 0, "message first": 0, "joiner got it": 0}
    for n in range(ROUNDS):
        race(n, sender, joiner, watcher, orders)
    print(f"join racing a message, {ROUNDS} rounds: {orders}")


def race(
    n: int,
    sender: LineClient,
    joiner: LineClient,
    watcher: LineClient | None,
    orders: dict[str, int],
) -> None:
    """One round: the joiner joins as the sender speaks; then check what each saw."""
    text = f"race-{n}"
    # Both at once, one a little before the other by turns, so that each order occurs.
    lead = (n % 5 - 2) * 0.002
    first, second = (
        (lambda: joiner.send(f"JOIN {ROOM}"), lambda: sender.send(f"PRIVMSG {ROOM} :{text}"))
        if lead >= 0
        else (
            lambda: sender.send(f"PRIVMSG {ROOM} :{text}"),
            lambda: joiner.send(f"JOIN {ROOM}"),
        )
    )
    first()
    time.sleep(abs(lead))
    second()

    sender_saw: list[str] = []
    is_join = lambda line: line.startswith(":joiner!") and " JOIN " in line  # noqa: E731
    is_echo = lambda line: line.startswith(":sender!") and line.endswith(f":{text}")  # noqa: E731
    until(sender, is_join, sender_saw)
    if index(sender_saw, is_echo) is None:
        until(sender, is_echo, sender_saw)
    # Said after the sender's node has the join: it reaches the joiner, and after what
    # the sender said before (one sender's messages keep their order).
    sender.send(f"PRIVMSG {ROOM} :after-{n}")
    joiner_saw: list[str] = []
    until(joiner, lambda line: line.endswith(f":after-{n}"), joiner_saw)
    watcher_saw: list[str] = []
    if watcher is not None:
        until(watcher, lambda line: line.endswith(f":after-{n}"), watcher_saw)

    got = [i for i, line in enumerate(joiner_saw) if line.endswith(f"PRIVMSG {ROOM} :{text}")]
    own_join = index(joiner_saw, is_join)
    assert own_join is not None, joiner_saw
    assert len(got) <= 1, f"round {n}: the joiner got the message twice: {joiner_saw}"
    if got:
        orders["joiner got it"] += 1
        assert got[0] > own_join, f"round {n}: the message came before the JOIN: {joiner_saw}"
    join_at, echo_at = index(sender_saw, is_join), index(sender_saw, is_echo)
    assert join_at is not None and echo_at is not None
    if join_at < echo_at:
        orders["join first on the sender's node"] += 1
        assert got, f"round {n}: the sender's node had the join first: {sender_saw}"
    else:
        orders["message first"] += 1
    if watcher is not None:
        # The joiner's node: the member there saw the join and the message in its order,
        # and the joiner got the message exactly when the join came first there.
        w_join = index(watcher_saw, is_join)
        w_msg = index(watcher_saw, lambda line: line.endswith(f"PRIVMSG {ROOM} :{text}"))
        assert w_join is not None and w_msg is not None, watcher_saw
        assert bool(got) == (w_join < w_msg), (
            f"round {n}: the joiner's node had the join "
            f"{'before' if w_join < w_msg else 'after'} the message, yet the joiner"
            f" {'got' if got else 'did not get'} it: {joiner_saw}"
        )
    else:
        # Nobody else on the joiner's node: the message went there only if the sender's
        # node knew of the join.
        assert bool(got) == (join_at < echo_at), (sender_saw, joiner_saw)

    # Both nodes agree on the member list.
    for client, nick in ((sender, "sender"), (joiner, "joiner")):
        client.send(f"NAMES {ROOM}")
        names = client.expect(f" 353 {nick} ")
        members = {name.lstrip("@+") for name in names.rsplit(" :", 1)[1].split()}
        assert members == {"sender", "joiner"} | ({"watcher"} if watcher else set())
    joiner.send(f"PART {ROOM}")
    joiner.expect(lambda line: line.startswith(":joiner!") and " PART " in line)
    sender.expect(lambda line: line.startswith(":joiner!") and " PART " in line)
    if watcher is not None:
        watcher.expect(lambda line: line.startswith(":joiner!") and " PART " in line)
