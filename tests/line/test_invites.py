"""Registration by invitation in line chat: the operator commands (text and JSON) and what
/register answers, over StringTransport on a real ChatService with a fake clock."""

from __future__ import annotations

from chatserver.config import OperatorConfig
from tests.line.harness import START, World
from tests.ops.helpers import OPER_HASH, OPER_PASSWORD

PASSWORD = "correct-horse"
NOT_INVITED = "!!! error: registration on this server is by invitation; ask an operator"


def world(registration: str = "invite") -> World:
    w = World(registration=registration)
    w.factory.operators = (OperatorConfig("admin", OPER_HASH),)
    return w


def operator(w: World) -> object:
    admin = w.user("admin")
    admin.send(f"/oper admin {OPER_PASSWORD}")
    assert admin.lines()[-1] == "*** you are now a server operator"
    return admin


def test_invite_register_once_and_refusals_in_text() -> None:
    w = world()
    admin = operator(w)
    eve = w.user("eve")
    eve.send(f"/register {PASSWORD}")
    assert eve.lines() == [NOT_INVITED]

    admin.send("/invite-account Bob")
    assert admin.lines() == ["*** Bob may be registered once, until 2023-11-21 22:13 UTC"]
    admin.send("/invite-account carol 0.5")
    assert admin.lines() == ["*** carol may be registered once, until 2023-11-15 10:13 UTC"]
    admin.send("/account-invites")
    assert admin.lines() == [
        "*** registration invitations (2):",
        "***   Bob until 2023-11-21 22:13 UTC (by admin)",
        "***   carol until 2023-11-15 10:13 UTC (by admin)",
    ]

    bob = w.user("bob")
    bob.send(f"/register {PASSWORD}")
    assert bob.lines() == ["*** you are now logged in as bob", "*** bob is now registered"]
    bob.send("/quit")
    # The invitation is gone with its use: no one else can take the nick to register it.
    w.clock.advance(1)
    again = w.connect()
    again.take()
    again.send("Bob")
    assert again.lines()[0].startswith("!!! error: Bob is a registered nick")

    admin.send("/uninvite-account CAROL")
    assert admin.lines() == ["*** withdrew the invitation to register CAROL"]
    admin.send("/uninvite-account carol")
    assert admin.lines() == ["!!! error: carol has no invitation to register"]
    admin.send("/account-invites")
    assert admin.lines() == ["*** registration invitations (0):"]
    carol = w.user("carol")
    carol.send(f"/register {PASSWORD}")
    assert carol.lines() == [NOT_INVITED]


def test_invitation_commands_are_for_server_operators_only() -> None:
    w = world()
    eve = w.user("eve")
    for command in ("/invite-account eve", "/uninvite-account eve", "/account-invites"):
        eve.send(command)
        assert eve.lines() == ["!!! error: only server operators may do that (/oper first)"]
    assert w.store.invites == {}


def test_argument_errors() -> None:
    w = world()
    admin = operator(w)
    admin.send("/invite-account")
    assert admin.lines() == [
        "!!! error: /invite-account needs name",
        "!!! usage: /invite-account <name> [days]",
    ]
    admin.send("/invite-account frank soon")
    assert admin.lines() == [
        "!!! error: days must be a number, such as 7 or 0.5",
        "!!! usage: /invite-account <name> [days]",
    ]
    admin.send("/invite-account frank 0")
    assert admin.lines() == ["!!! error: an invitation lasts more than 0 and at most 3650 days"]
    admin.send("/invite-account 9lives")
    (line,) = admin.lines()
    assert line.startswith("!!! error: ") and "not starting with a digit" in line
    assert w.store.invites == {}


def test_inviting_a_registered_name_is_refused() -> None:
    w = world("open")
    grace = w.user("grace")
    grace.send(f"/register {PASSWORD}")
    grace.take()
    admin = operator(w)
    admin.send("/invite-account Grace")
    assert admin.lines() == ["!!! error: grace is already registered"]
    assert w.store.invites == {}


def test_json_forms() -> None:
    w = world()
    admin = operator(w)
    admin.send("/format json")
    admin.take()
    admin.send('{"cmd": "invite-account", "name": "bob", "days": 7, "tag": 1}')
    assert admin.objs() == [
        {
            "type": "ok",
            "cmd": "invite-account",
            "name": "bob",
            "expires_at": START + 7 * 86400,
            "registration": "invite",
            "tag": 1,
        }
    ]
    admin.send('{"cmd": "account-invites"}')
    assert admin.objs() == [
        {
            "type": "ok",
            "cmd": "account-invites",
            "invites": [
                {
                    "name": "bob",
                    "invited_by": "admin",
                    "created_at": START,
                    "expires_at": START + 7 * 86400,
                }
            ],
            "registration": "invite",
        }
    ]
    eve = w.user("eve")
    eve.send("/format json")
    eve.take()
    eve.send(f'{{"cmd": "register", "password": "{PASSWORD}"}}')
    assert eve.one(type="error") == {
        "type": "error",
        "cmd": "register",
        "error": "closed",
        "message": "registration on this server is by invitation; ask an operator",
    }
    admin.send('{"cmd": "uninvite-account", "name": "bob"}')
    assert admin.one(type="ok") == {"type": "ok", "cmd": "uninvite-account", "name": "bob"}
    admin.send('{"cmd": "uninvite-account", "name": "bob"}')
    assert admin.one(type="error")["error"] == "failed"
    eve.send('{"cmd": "account-invites"}')
    assert eve.one(type="error")["error"] == "not_permitted"


def test_an_operator_is_told_when_the_mode_makes_invitations_moot() -> None:
    for mode, note in (
        ("open", "anyone may register any free nick anyway"),
        ("closed", 'the invitation counts once it is "invite"'),
    ):
        w = world(mode)
        admin = operator(w)
        admin.send("/invite-account bob")
        lines = admin.lines()
        assert lines[0] == "*** bob may be registered once, until 2023-11-21 22:13 UTC"
        assert lines[1] == f"*** note: registration is {mode} on this server: {note}"
