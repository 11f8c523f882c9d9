"""The control socket's commands: one handler per command, its parameters in the table.

A request is ``{"cmd": NAME, <param>: <value>, ...}``; the dispatcher (not the handler)
refuses an unknown command, a missing or unknown parameter and a value of the wrong type.
A handler returns the answer's fields (or a Deferred of them); a core error becomes
``{"ok": false, "error": <its text>}``.

Handlers act through the chat service and the account manager, the same calls the protocols
make, so that an operator's action has the same effect as an IRC operator's (and, in a
cluster, reaches every node the same way).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, inlineCallbacks

from chatserver.core.errors import ChatError

if TYPE_CHECKING:
    from chatserver.server.app import ChatServer

# How the console signs what it does (bans' "set by", kicks and kills in the logs).
CONSOLE = "console"

Handler = Callable[["ChatServer", Mapping[str, Any]], Any]


class CommandError(Exception):
    """A request the table refuses (unknown command, bad parameters)."""


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    kind: type = str
    required: bool = True
    # Left out of the server's log line (passwords).
    secret: bool = False


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    handler: Handler
    params: tuple[Param, ...]
    help: str
    # Changes something (logged at info); a query is logged at debug, so that a script that
    # polls ``who`` does not fill the log.
    acts: bool = True


COMMANDS: dict[str, Command] = {}


def command(
    name: str, help: str, *params: Param, acts: bool = True
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        COMMANDS[name] = Command(name, handler, params, help, acts)
        return handler

    return register


def parse(request: Mapping[str, Any]) -> tuple[Command, dict[str, Any]]:
    """The command a request names and its checked parameters; raises CommandError."""
    name = request.get("cmd")
    if not isinstance(name, str):
        raise CommandError('a request is a JSON object with "cmd": the command name')
    found = COMMANDS.get(name)
    if found is None:
        raise CommandError(f"unknown command {name!r}; known: {', '.join(sorted(COMMANDS))}")
    known = {p.name for p in found.params}
    extra = sorted(k for k in request if k != "cmd" and k not in known)
    if extra:
        raise CommandError(f"{name}: unknown parameter {', '.join(extra)}")
    args: dict[str, Any] = {}
    for param in found.params:
        value = request.get(param.name)
        if value is None:
            if param.required:
                raise CommandError(f"{name}: {param.name} is needed")
            continue
        if not isinstance(value, param.kind) or isinstance(value, bool):
            kind = _KIND_NAMES.get(param.kind, param.kind.__name__)
            raise CommandError(f"{name}: {param.name} must be a {kind}")
        args[param.name] = value
    return found, args


_KIND_NAMES = {str: "string", int: "number"}


def loggable(found: Command, args: Mapping[str, Any]) -> str:
    """The parameters as the server's log shows them (secrets left out)."""
    secret = {p.name for p in found.params if p.secret}
    return "".join(f" {k}={v!r}" for k, v in args.items() if k not in secret)


def _chat(server: ChatServer) -> Any:
    if server.chat is None:
        raise ChatError("the server is still starting")
    return server.chat


def _stamp(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- looking --------------------------------------------------------------------------------


@command(
    "who",
    "every connection: protocol, nick, account, address, cloak, rooms, since",
    Param("protocol", required=False),
    acts=False,
)
def who(server: ChatServer, args: Mapping[str, Any]) -> dict[str, Any]:
    chat = _chat(server)
    wanted = args.get("protocol")
    sessions = []
    for conn in sorted(chat.connections.values(), key=lambda c: c.id):
        if wanted is not None and conn.protocol != wanted:
            continue
        user = conn.user
        sessions.append(
            {
                "id": conn.id,
                "protocol": conn.protocol,
                "nick": user.nick if user is not None else None,
                "account": user.account if user is not None else conn.account,
                "address": conn.address,
                "cloak": user.host if user is not None else chat.cloak(conn.address),
                "rooms": sorted(user.rooms) if user is not None else [],
                "secure": conn.secure,
                "since": _stamp(conn.connected_at),
            }
        )
    return {"sessions": sessions}


@command("rooms", "every room: members, modes, topic, whether registered", acts=False)
def rooms(server: ChatServer, args: Mapping[str, Any]) -> dict[str, Any]:
    chat = _chat(server)
    found = []
    for room in sorted(chat.rooms.values(), key=lambda r: r.name):
        modes = [
            name if arg is None or name == "key" else f"{name}={arg}"
            for name, arg in room.mode_state()
        ]
        found.append(
            {
                "name": room.name,
                "members": len(room.members),
                "modes": modes,
                "topic": room.topic,
                "registered": room.registered,
            }
        )
    return {"rooms": found}


@command("klines", "the server bans in force", acts=False)
def klines(server: ChatServer, args: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "klines": [
            {
                "mask": ban.mask,
                "reason": ban.reason,
                "set_by": ban.set_by,
                "set_at": _stamp(ban.set_at),
            }
            for ban in _chat(server).server_bans
        ]
    }


# -- acting on users and rooms --------------------------------------------------------------


@command(
    "kick",
    "remove a user from a room",
    Param("room"),
    Param("nick"),
    Param("reason", required=False),
)
def kick(server: ChatServer, args: Mapping[str, Any]) -> dict[str, Any]:
    nick = _chat(server).kick_by_server(args["room"], args["nick"], args.get("reason", ""))
    return {"kicked": nick}


@command(
    "kill", "disconnect every connection of a user", Param("nick"), Param("reason", required=False)
)
def kill(server: ChatServer, args: Mapping[str, Any]) -> dict[str, Any]:
    chat = _chat(server)
    reason = args.get("reason") or "no reason given"
    nick = chat.kill_user(args["nick"], f"Killed by {chat.settings.server_name}: {reason}")
    return {"killed": nick}


@command(
    "kline",
    "ban a mask from the server; matching users are disconnected",
    Param("mask"),
    Param("reason", required=False),
)
def kline(server: ChatServer, args: Mapping[str, Any]) -> dict[str, Any]:
    ban, gone = _chat(server).ban(args["mask"], args.get("reason", ""), by=CONSOLE)
    return {"mask": ban.mask, "disconnected": gone}


@command("unkline", "lift a server ban set at run time", Param("mask"))
def unkline(server: ChatServer, args: Mapping[str, Any]) -> dict[str, Any]:
    ban = _chat(server).unban(args["mask"], by=CONSOLE)
    return {"mask": ban.mask}


@command("notice", "a server notice to everyone online", Param("text"))
def notice(server: ChatServer, args: Mapping[str, Any]) -> dict[str, Any]:
    text = args["text"].strip()
    if not text or any(ch in text for ch in "\r\n\x00"):
        raise ChatError("a notice is one line of text")
    return {"reached": _chat(server).notice_everyone(text)}


@command("purge", "delete a room's history (memory and database)", Param("room"))
def purge(server: ChatServer, args: Mapping[str, Any]) -> Deferred[dict[str, Any]]:
    d = _chat(server).purge_history(args["room"])
    return d.addCallback(lambda deleted: {"deleted": deleted})


@command("reload", "read the configuration file again and apply what can change live")
def reload(server: ChatServer, args: Mapping[str, Any]) -> dict[str, Any]:
    outcome = server.reload()
    if not outcome.applied:
        raise ChatError(
            "the configuration has problems; nothing changed: " + "; ".join(outcome.problems)
        )
    return {
        "changed": outcome.changed,
        "refused": [r.key for r in outcome.refused],
    }


# -- accounts (effects live: sessions of a changed account end) -------------------------


@command("account-list", "every account with its creation time", acts=False)
@inlineCallbacks
def account_list(server: ChatServer, args: Mapping[str, Any]):
    records = yield _chat(server).accounts.list()
    return {"accounts": [{"name": r.name, "created": _stamp(r.created_at)} for r in records]}


@command("account-create", "create an account", Param("name"), Param("password", secret=True))
@inlineCallbacks
def account_create(server: ChatServer, args: Mapping[str, Any]):
    record = yield _chat(server).create_account(args["name"], args["password"])
    return {"name": record.name}


@command(
    "account-passwd",
    "set an account's password; its sessions end",
    Param("name"),
    Param("password", secret=True),
)
@inlineCallbacks
def account_passwd(server: ChatServer, args: Mapping[str, Any]):
    yield _chat(server).set_account_password(args["name"], args["password"])
    return {"name": args["name"]}


@command("account-delete", "delete an account; its sessions end", Param("name"))
@inlineCallbacks
def account_delete(server: ChatServer, args: Mapping[str, Any]):
    existed = yield _chat(server).delete_account(args["name"])
    if not existed:
        raise ChatError(f"no such account: {args['name']}")
    return {"name": args["name"]}
