"""Text that no protocol can carry is refused where it comes in, and nothing a client sends
can break a room for the others (the real server, real sockets, every protocol in one room).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.hostile.clients import (
    MUC_DOMAIN,
    IrcUser,
    LineUser,
    XmppClient,
    close_all,
    irc_command,
    keep,
    local,
    xmpp_user,
)
from tests.support.server import ServerProcess

ROOM = "edges"


def strict_json(line: str) -> Any:
    """``line`` parsed as RFC 8259 JSON: no NaN or Infinity, no lone surrogate."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} is not JSON: {line!r}")

    obj = json.loads(line, parse_constant=refuse)
    line.encode("utf-8")  # a lone surrogate would not encode
    return obj


class JsonUser(LineUser):
    """A line-chat user in JSON mode."""

    def __init__(self, port: int, nick: str, source: str) -> None:
        super().__init__(port, nick, source=source)
        self.send_line("/format json")
        self.expect(lambda line: line.startswith("{"))

    def command(self, obj: dict[str, Any] | str) -> dict[str, Any]:
        """Send one command; its answer (ok or error), checked to be strict JSON."""
        raw = obj if isinstance(obj, str) else json.dumps(obj)
        self.send_line(raw)
        line = self.expect(lambda line: '"type":"ok"' in line or '"type":"error"' in line)
        return strict_json(line)

    def alive(self) -> None:
        answer = self.command({"cmd": "ping", "tag": "alive"})
        assert answer["type"] == "ok" and answer["tag"] == "alive", answer


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    server = ServerProcess(
        tmp_path_factory.mktemp("edges"),
        protocols=("line", "irc", "xmpp"),
        # Many refusals in a row from one client: this is not about flood control.
        overrides={
            "line": {"flood_burst": 10_000, "flood_rate": 10_000.0, "max_line_bytes": 16384}
        },
    ).start()
    sender = keep(JsonUser(server.ports["line"], "jsender", "127.40.0.1"))
    sender.command({"cmd": "join", "room": ROOM})
    text_user = keep(LineUser(server.ports["line"], "tuser", source="127.40.0.2"))
    text_user.join(ROOM)
    irc = keep(IrcUser(server.ports["irc"], "iuser", source="127.40.0.3"))
    irc.join(f"#{ROOM}")
    xmpp = keep(
        xmpp_user(
            server.ports["xmpp"], "xuser", "xmpp-password", source="127.40.0.4", register=True
        )
    )
    xmpp.join_room(ROOM, "xuser")
    yield {"server": server, "sender": sender, "text": text_user, "irc": irc, "xmpp": xmpp}
    for client in (sender, text_user, irc, xmpp):
        client.close()
    close_all()
    server.stop()


def everyone_hears(world: dict[str, Any], text: str) -> None:
    """``text`` said by the JSON sender reaches the text-mode, IRC and XMPP members."""
    answer = world["sender"].command({"cmd": "say", "room": ROOM, "text": text})
    assert answer["type"] == "ok", answer
    world["text"].expect(lambda line: line.endswith(f"<jsender> {text}"))
    world["irc"].expect(lambda line: irc_command(line) == ("PRIVMSG", [f"#{ROOM}", text]))
    world["xmpp"].expect(
        lambda el: local(el) == "message" and el.findtext("{jabber:client}body") == text
    )


BAD = {"surrogate": "\ud800", "low surrogate": "ab\udfffcd", "nul": "a\u0000b"}
COMMANDS = {
    "say": {"cmd": "say", "room": ROOM},
    "me": {"cmd": "me", "room": ROOM},
    "notice": {"cmd": "notice", "to": "iuser"},
    "msg": {"cmd": "msg", "to": "iuser"},
    "topic": {"cmd": "topic", "room": ROOM},
    "away": {"cmd": "away"},
}


@pytest.mark.parametrize("bad", list(BAD))
@pytest.mark.parametrize("cmd", list(COMMANDS))
def test_text_that_no_protocol_carries_is_refused(
    world: dict[str, Any], cmd: str, bad: str
) -> None:
    sender = world["sender"]
    answer = sender.command({**COMMANDS[cmd], "text": f"x{BAD[bad]}y", "tag": 7})
    assert answer["type"] == "error" and answer["error"] == "bad_text", answer
    assert answer["cmd"] == cmd and answer["tag"] == 7
    assert "field 'text'" in answer["message"]
    sender.alive()


def test_the_room_works_for_everyone_after_refusals(world: dict[str, Any]) -> None:
    sender = world["sender"]
    sender.command({"cmd": "topic", "room": ROOM, "text": "\ud800"})
    everyone_hears(world, "still here \U0001f600")
    # The topic was never set: a new IRC member joins as usual.
    late = IrcUser(world["server"].ports["irc"], "late", source="127.40.0.5")
    late.send_line(f"JOIN #{ROOM}")
    replies = []
    while not replies or replies[-1][0] != "366":
        replies.append(irc_command(late.read_line()))
    assert "400" not in [r[0] for r in replies]
    late.close()


def test_a_surrogate_pair_is_one_character(world: dict[str, Any]) -> None:
    # "\ud83d\ude00" in JSON is the escape of one character (U+1F600), not two halves.
    sender = world["sender"]
    answer = sender.command('{"cmd": "say", "room": "' + ROOM + '", "text": "pair \\ud83d\\ude00"}')
    assert answer["type"] == "ok", answer
    world["irc"].expect(lambda line: line.endswith("pair \U0001f600"))


@pytest.mark.parametrize(
    "tag, code",
    [
        ('"\\ud800"', "bad_text"),
        ('{"\\udc00": 1}', "bad_text"),
        ('["ok", ["\\u0000"]]', "bad_text"),
        ("[" * 1000 + "]" * 1000, "bad_json"),
        ("[" * 9 + "]" * 9, "bad_json"),
        ("1e999", "bad_json"),
        ("-1e999", "bad_json"),
        ("NaN", "bad_json"),
        ("Infinity", "bad_json"),
        ("-Infinity", "bad_json"),
    ],
)
def test_a_tag_that_cannot_be_echoed_is_refused(world: dict[str, Any], tag: str, code: str) -> None:
    sender = world["sender"]
    answer = sender.command('{"cmd": "ping", "tag": ' + tag + "}")
    assert answer["type"] == "error" and answer["error"] == code, answer
    assert "tag" not in answer
    sender.alive()


def test_json_nested_past_the_parser_is_refused(world: dict[str, Any]) -> None:
    sender = world["sender"]
    answer = sender.command('{"cmd": "ping", "x": ' + "[" * 5000 + "]" * 5000 + "}")
    assert answer["type"] == "error" and answer["error"] == "bad_json", answer
    sender.alive()


def test_tags_that_are_fine_come_back(world: dict[str, Any]) -> None:
    sender = world["sender"]
    for tag in (1, 1.5e300, "t\U0001f600", [1, {"a": None}], "[" * 8, [[[[[[[[]]]]]]]]):
        answer = sender.command({"cmd": "ping", "tag": tag})
        assert answer["type"] == "ok" and answer["tag"] == tag, answer


@pytest.mark.parametrize("char", ["&#xD800;", "&#0;", "&#xFFFE;", "\x01"])
def test_xmpp_text_outside_xml_closes_only_that_stream(world: dict[str, Any], char: str) -> None:
    """XML's own character rule is stricter than the core's: its parser is XMPP's edge, and
    a stanza outside it is a stream error (RFC 6120 §4.9.3.13) that no one else notices."""
    c = XmppClient(world["server"].ports["xmpp"], source="127.40.0.6")
    c.send(f"<message to='{ROOM}@{MUC_DOMAIN}' type='groupchat'><body>x{char}y</body></message>")
    assert c.until_closed() in ("not-well-formed", "invalid-xml", "bad-format")
    everyone_hears(world, f"after {char!r}")
