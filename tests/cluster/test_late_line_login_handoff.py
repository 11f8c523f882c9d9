"""A line-chat client that logs in with ``/identify`` after choosing a nick, to an account
whose user is connected on another node, is handed off to that node and ends as the same
login ends on the user's node: its user quits (others see it go), it is shown leaving its
rooms, its nick changing and the user's rooms, then the login's answer, and it is a
connection of the user from then on.  Through two real nodes, a private Redis and a shared
PostgreSQL, in text and JSON modes over TCP and JSON over WebSocket, each transcript compared
line for line with the same steps on the user's node."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.cluster.test_accounts import PASSWORD, lease_of, shared
from tests.cluster.test_cluster import eventually, line, try_nick
from tests.cluster.test_irc_handoff import account_of
from tests.cluster.test_late_irc_login_handoff import Cast
from tests.support.postgres import PostgresServer
from tests.support.redis import RedisServer
from tests.support.server import LineClient, ServerProcess
from tests.web.conftest import WsClient, ws_url

pytestmark = pytest.mark.timeout(240)

Node = Callable[..., ServerProcess]

# The run's names (the account and its user, the third and fourth users, the guest's nick,
# the user's rooms, the guest's own room) and what they stand for in a transcript.
STAND_INS = {
    "": "USER",
    "c": "THIRD",
    "d": "FOURTH",
    "g": "GUEST",
    "g1": "GROOM",
    "r": "ROOM",
    "r2": "ROOM2",
}
# What differs between two runs in a JSON line: times and message ids.
VARYING = frozenset({"ts", "id", "time", "msgid"})
# A history line's time in text mode, wherever it stands in the line (after "[#room] " too).
CLOCK = re.compile(r"\[\d\d:\d\d(:\d\d)?\] ")


class Guest:
    """A line-chat client with a nick and no account: text or JSON Lines over TCP
    (``mode`` "text", "json"), or JSON over WebSocket ("ws")."""

    def __init__(self, node: ServerProcess, nick: str, mode: str) -> None:
        self.mode = mode
        self.ws: WsClient | None = None
        self.tcp: LineClient | None = None
        if mode == "ws":
            self.ws = WsClient(ws_url(node, "/line"))
            self.ws.expect(lambda m: '"prompt"' in m)
        else:
            self.tcp = LineClient(node.ports["line"])
            self.tcp.expect("*** Choose a nick:")
            if mode == "json":
                self.tcp.send("/format json")
                self.tcp.expect('"format"')
        self.command("nick", nick)
        self.expect('"nick"' if self.json else f"*** You are {nick}.")

    @property
    def json(self) -> bool:
        return self.mode != "text"

    @property
    def seen(self) -> list[str]:
        if self.ws is not None:
            return [str(m).rstrip("\r\n") for m in self.ws.seen]
        assert self.tcp is not None
        return self.tcp.seen

    def send(self, text: str) -> None:
        if self.ws is not None:
            self.ws.send(text)
        else:
            assert self.tcp is not None
            self.tcp.send(text)

    def command(self, name: str, *args: str, tag: str | None = None) -> None:
        """``/name args`` in text mode, its JSON form (with ``tag``) otherwise."""
        self.send(self.form(name, *args, tag=tag))

    def form(self, name: str, *args: str, tag: str | None = None) -> str:
        if not self.json:
            if name == "say":
                # A room named in text is #room.
                args = (f"#{args[0]}", *args[1:])
            return " ".join((f"/{name}", *args))
        fields: dict[str, Any] = {"cmd": name}
        keys = {
            "nick": ("nick",),
            "join": ("room",),
            "identify": ("nick", "password"),
            "say": ("room", "text"),
            "msg": ("to", "text"),
            "ping": (),
            "quit": ("reason",),
        }[name]
        fields.update(zip(keys, args, strict=True))
        if tag is not None:
            fields["tag"] = tag
        return json.dumps(fields)

    def expect(self, predicate: Any) -> str:
        if self.ws is not None:
            return str(self.ws.expect(predicate))
        assert self.tcp is not None
        return self.tcp.expect(predicate)

    def read_until_closed(self) -> None:
        if self.ws is not None:
            try:
                while True:
                    self.ws.recv()
            except Exception:
                return
        assert self.tcp is not None
        self.tcp.read_until_closed()


def members_text(client: LineClient, room: str) -> str:
    client.send(f"/who {room}")
    return client.expect(lambda t: f"members of #{room}" in t or "no such room" in t)


def join_after(client: LineClient, room: str, member: str | None) -> None:
    """``client`` joins ``room`` once its node knows ``member`` (its operator) there."""
    if member is not None:
        eventually(lambda: f"@{member}" in members_text(client, room).split(), 10, room)
    client.send(f"/join {room}")
    client.expect(f"*** now talking in #{room}")


def sync(client: LineClient | Guest, tag: str) -> None:
    """Read everything the server sent before the answer to a ping."""
    if isinstance(client, Guest) and client.json:
        client.command("ping", tag=tag)
        client.expect(lambda m: f'"{tag}"' in m)
        return
    client.send("/ping")
    client.expect("*** pong")


def logged_in_late(second: Guest, login: str, then: str, account: str) -> None:
    second.send(login + "\r\n" + then)
    second.expect('"identify"' if second.json else f"logged in as {account}")


class LineStory(Cast):
    """A user (``first``, node a) in two rooms; a guest on ``guest_node`` in a room of its own
    and one of the user's; the third user (node b) and the fourth (node a) in the guest's
    room, the third in the user's too.  The guest logs in to the account; they all talk."""

    def __init__(
        self, a: ServerProcess, b: ServerProcess, guest_node: ServerProcess, name: str, mode: str
    ) -> None:
        self.name, self.mode = name, mode
        self.closed: set[str] = set()
        account_of(a, name)
        self.first = LineClient(a.ports["line"])
        self.first.expect("*** Choose a nick:")
        self.first.send(f"/identify {name} {PASSWORD}")
        self.first.expect(f"*** You are {name}.")
        for room in ("r", "r2"):
            self.first.send(f"/join {name}{room}")
            self.first.expect(f"*** now talking in #{name}{room}")
        self.third = line(b, f"{name}c")
        self.fourth = line(a, f"{name}d")
        join_after(self.third, f"{name}r", name)
        join_after(self.third, f"{name}g1", None)
        join_after(self.fourth, f"{name}g1", f"{name}c")
        self.second = Guest(guest_node, f"{name}g", mode)
        for room in ("g1", "r"):
            self.second.command("join", f"{name}{room}")
            self.second.expect(
                f'"{name}{room}"' if self.second.json else f"now talking in #{name}{room}"
            )
        for client, room in ((self.first, "r"), (self.third, "g1"), (self.fourth, "g1")):
            client.expect(f"-!- {name}g joined #{name}{room}")
        self.third.expect(f"-!- {name}g joined #{name}r")
        # The guest's node knows the user (its rooms' members).
        eventually(
            lambda: f"@{name}" in members_text(self.third, f"{name}r2").split(),
            10,
            "node b knows the user",
        )
        self.settle("setup")
        self.marks = {who: len(c.seen) for who, c in self.clients().items()}

    def sync(self, client: Any, tag: str) -> None:
        sync(client, tag)

    def run(self) -> None:
        name, first, second, third = self.name, self.first, self.second, self.third
        # The login, and a line right behind it (run once the login is done).
        login = second.form("identify", name, PASSWORD, tag="t1")
        then = second.form("say", f"{name}r", "right after")
        self.exchange("login", lambda: logged_in_late(second, login, then, name), first, third)
        room = f"{name}r"
        said = ("say", room, "from the second")
        self.exchange("second-says", lambda: second.command(*said), first, third)
        self.exchange(
            "first-says", lambda: first.send(f"/say #{room} from the first"), second, third
        )
        self.exchange("third-whispers", lambda: third.send(f"/msg {name} psst"), first, second)
        whisper = ("msg", f"{name}c", "hello from the second")
        self.exchange("second-whispers", lambda: second.command(*whisper), third)
        second.command("quit", "bye")
        second.read_until_closed()
        self.closed.add("second")
        self.third.send(f"/say #{name}r after the quit")
        self.first.expect("after the quit")
        self.settle("second-quit")

    def transcript(self, who: str) -> list[str]:
        client = self.clients()[who]
        return [normalized(text, self.name) for text in client.seen[self.marks[who] :]]


def normalized(text: str, name: str) -> str:
    """A line without what differs between two runs: times, ids, the run's names."""
    if text.startswith("{"):
        obj = json.loads(text)
        text = json.dumps(_without_varying(obj), sort_keys=True)
    text = CLOCK.sub("[TIME] ", text)
    suffixes = "|".join(sorted((s for s in STAND_INS if s), key=len, reverse=True))
    return re.sub(rf"\b{name}({suffixes})?\b", lambda m: STAND_INS[m.group(1) or ""], text)


def _without_varying(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_varying(v) for k, v in value.items() if k not in VARYING}
    if isinstance(value, list):
        return [_without_varying(v) for v in value]
    return value


@pytest.mark.parametrize("mode", ["text", "json", "ws"])
def test_a_line_login_after_a_nick_is_handed_to_the_users_node_and_ends_as_it_does_there(
    make_node: Node, redis: RedisServer, postgres: PostgresServer, mode: str
) -> None:
    config = shared(postgres)
    protocols = ("line", "irc", "web")
    a = make_node("a", protocols=protocols, overrides=config)
    b = make_node("b", protocols=protocols, overrides=config)
    local = LineStory(a, b, a, "yl", mode)
    local.run()
    started = time.monotonic()
    handed = LineStory(a, b, b, "yh", mode)
    handed.run()
    print(f"{mode}: handed-off story in {time.monotonic() - started:.2f}s")
    for who in ("second", "first", "third", "fourth"):
        assert handed.transcript(who) == local.transcript(who), who
    second = "\n".join(handed.transcript("second"))
    if mode == "text":
        for said in (
            "*** you left #GROOM (logged in)",
            "*** you are now known as USER",
            "*** members of #ROOM2 (1): @USER",
            "*** you are now logged in as USER (with your other session)",
        ):
            assert said in second, second
    # Those in its rooms saw the guest quit, once, as on one node.
    for who in ("third", "fourth"):
        gone = [t for t in handed.transcript(who) if t.startswith("-!- GUEST quit")]
        assert gone == ["-!- GUEST quit (Logged in as USER)"], (who, handed.transcript(who))
    assert lease_of(redis, "yh") == "a"
    eventually(lambda: "You are" in try_nick(a, "yhg"), 10, "the guest's nick let go")
