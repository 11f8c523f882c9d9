"""Line-chat commands: one table from command name to handler, usage, help and parameters.

The dispatcher, not the handlers, answers unknown commands, commands used before a nick is
chosen, missing arguments and surplus words, always with the usage line.  A handler gets the
connection and a dict of named arguments (from the words of a text command, or the fields of
a JSON command) and returns a :class:`Reply`, or a Deferred that fires with one; a core
error raised (or errbacked) is turned into an error reply by the dispatcher.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatserver.core.accounts import INVITE_DAYS, RegistrationInvite
from chatserver.core.bans import ServerBan
from chatserver.core.errors import (
    AccountError,
    AlreadyOnRoom,
    BadName,
    Banned,
    CannotSend,
    ChatError,
    JoinRefused,
    LimitExceeded,
    NickInUse,
    NoSuchNick,
    NoSuchRoom,
    NotOnRoom,
    NotPermitted,
    UnknownMode,
)
from chatserver.core.events import Message, ModeItem
from chatserver.core.names import casefold, is_valid_room, room_key
from chatserver.core.rooms import Member, Room
from chatserver.core.users import User
from chatserver.passwords import hash_password, verify_password, verify_password_in_thread
from protocols.line.modes import ModeSyntaxError, format_changes, parse_changes
from protocols.line.render import INFO, clean, clock_time, history_text, message_json

if TYPE_CHECKING:
    from protocols.line.connection import LineConnection

log = Logger()

HISTORY_DEFAULT = 20
HISTORY_MAX = 200

# -- replies and errors --------------------------------------------------------------------


@dataclass
class Reply:
    """What a command answers: text lines (text mode) and the fields of the ``ok`` object (JSON).

    ``errors`` are partial failures (one room of several in a join) reported before it;
    ``error``, when set, is reported instead of it (every part failed).  ``then`` runs after
    the reply is written (``/quit`` closes the connection there).
    """

    lines: list[str] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    errors: list[tuple[Exception, dict[str, Any]]] = field(default_factory=list)
    error: Exception | None = None
    then: Callable[[], None] | None = None


class CommandError(Exception):
    """A refusal by the line protocol itself (bad arguments, no current room, …)."""

    def __init__(self, code: str, message: str, *, usage: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.usage = usage


def _room(name: str) -> str:
    return f"#{name}"


_ACCOUNT_HINTS = {
    AccountError.NO_ACCOUNT: " (/register <password> registers your current nick)",
    AccountError.NOT_LOGGED_IN: " (/identify <password> logs you in)",
}

_JOIN_HINTS = {
    JoinRefused.BAD_KEY: " (/join {room} <key>)",
    JoinRefused.INVITE_ONLY: " (a room operator can /invite you)",
    JoinRefused.REGISTERED_ONLY: " (/register or /identify first)",
}


def describe(err: Exception) -> tuple[str, str, dict[str, Any]]:
    """(error code, message, extra JSON fields) for an error a command ran into."""
    if isinstance(err, CommandError):
        return err.code, err.message, {}
    if isinstance(err, NickInUse):
        return "nick_in_use", f"{err.nick} is already in use; choose another nick", {}
    if isinstance(err, BadName):
        return "bad_name", err.reason, {}
    if isinstance(err, NoSuchNick):
        return "no_such_nick", f"no such nick: {err.nick}", {}
    if isinstance(err, NoSuchRoom):
        return "no_such_room", f"no such room: {_room(err.room)}", {"room": err.room}
    if isinstance(err, NotOnRoom):
        if err.nick:
            message = f"{err.nick} is not in {_room(err.room)}"
        else:
            message = f"you are not in {_room(err.room)} (/join {err.room} first)"
        return "not_on_room", message, {"room": err.room}
    if isinstance(err, AlreadyOnRoom):
        return "already_on_room", f"{err.nick} is already in {_room(err.room)}", {"room": err.room}
    if isinstance(err, NotPermitted):
        extra = {"room": err.room} if err.room else {}
        return "not_permitted", err.reason, extra
    if isinstance(err, CannotSend):
        return "cannot_send", f"cannot send to {_room(err.room)}: {err.reason}", {"room": err.room}
    if isinstance(err, JoinRefused):
        hint = _JOIN_HINTS.get(err.why, "").format(room=err.room)
        message = f"cannot join {_room(err.room)}: {err.reason}{hint}"
        return "join_refused", message, {"room": err.room, "why": err.why}
    if isinstance(err, UnknownMode):
        return "unknown_mode", f"unknown mode: {err.mode} (/help mode lists them)", {}
    if isinstance(err, AccountError):
        return err.code, err.reason + _ACCOUNT_HINTS.get(err.code, ""), {}
    if isinstance(err, Banned):
        return "banned", err.reason, {}
    if isinstance(err, LimitExceeded):
        return "limit_exceeded", err.reason, {}
    if isinstance(err, ChatError):
        return "failed", err.reason, {}
    return "internal", "internal error; the server log has the details", {}


# -- the table -----------------------------------------------------------------------------

WORD = "word"
REST = "rest"
# An optional room written with '#' before the other arguments: `/topic #dev new topic`.
ROOM = "room"


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    kind: str = WORD
    required: bool = False


Args = dict[str, str]
Handler = Callable[["LineConnection", Args], "Reply | Deferred | None"]
TextParser = Callable[["LineConnection", str], Args]


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    handler: Handler
    usage: str
    help: str
    params: tuple[Param, ...] = ()
    json: str = ""
    before_nick: bool = False
    parse: TextParser | None = None
    hidden: bool = False
    # Carries a password: refused on a plaintext connection from another machine.
    password: bool = False

    @property
    def min_args(self) -> int:
        return sum(1 for p in self.params if p.required)

    @property
    def usage_line(self) -> str:
        return f"/{self.name}" + (f" {self.usage}" if self.usage else "")


COMMANDS: dict[str, Command] = {}
ALIASES: dict[str, str] = {}


def command(
    name: str,
    usage: str,
    help: str,
    *params: Param,
    json: str = "",
    before_nick: bool = False,
    parse: TextParser | None = None,
    aliases: tuple[str, ...] = (),
    hidden: bool = False,
    password: bool = False,
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        COMMANDS[name] = Command(
            name, handler, usage, help, params, json, before_nick, parse, hidden, password
        )
        for alias in aliases:
            ALIASES[alias] = name
        return handler

    return register


def lookup(name: str) -> Command | None:
    name = name.lower()
    return COMMANDS.get(ALIASES.get(name, name))


# -- parsing -------------------------------------------------------------------------------

_WORD_RE = re.compile(r"(\S+)\s*(.*)\Z", re.DOTALL)


def split_word(text: str) -> tuple[str, str]:
    match = _WORD_RE.match(text.lstrip())
    if match is None:
        return "", ""
    return match.group(1), match.group(2)


def parse_words(params: tuple[Param, ...], text: str) -> Args:
    """Bind the words of ``text`` to ``params`` in order; a REST param takes what is left."""
    args: Args = {}
    rest = text.strip()
    for param in params:
        if not rest:
            break
        if param.kind == REST:
            args[param.name] = rest
            rest = ""
            break
        word, remainder = split_word(rest)
        if param.kind == ROOM and not word.startswith("#"):
            continue
        args[param.name] = word
        rest = remainder
    if rest:
        raise CommandError("bad_argument", f"too many arguments: {rest!r}", usage=True)
    return args


def json_args(obj: dict[str, Any]) -> Args:
    args: Args = {}
    for key, value in obj.items():
        if key in ("cmd", "tag"):
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise CommandError("bad_argument", f"field {key!r} must be a string", usage=True)
        args[key] = str(value)
    return args


# -- dispatch ------------------------------------------------------------------------------


def handle_line(c: LineConnection, text: str) -> None:
    """One line of input (already decoded): a JSON command, a /command, a nick or chat text."""
    stripped = text.strip()
    if not stripped:
        return
    if c.mode == "json" and stripped.startswith("{"):
        handle_json(c, stripped)
        return
    if stripped.startswith("/") and not stripped.startswith("//"):
        name, rest = split_word(stripped[1:])
        handle_text_command(c, name, rest)
        return
    if stripped.startswith("//"):
        # `//text` says `/text`: the way to start a message with a slash.
        text = text.lstrip()[1:]
    if c.user is None:
        run(c, COMMANDS["nick"], {"nick": stripped}, None)
    else:
        run(c, COMMANDS["say"], {"text": text}, None)


def handle_text_command(c: LineConnection, name: str, rest: str) -> None:
    cmd = lookup(name)
    if cmd is None:
        c.send_error(
            "unknown_command", f"unknown command: /{name} (/help lists the commands)", cmd=name
        )
        return
    try:
        args = cmd.parse(c, rest) if cmd.parse is not None else parse_words(cmd.params, rest)
    except CommandError as err:
        _fail(c, cmd, err, None)
        return
    run(c, cmd, args, None)


def handle_json(c: LineConnection, text: str) -> None:
    try:
        obj = json.loads(text)
    except ValueError as err:
        c.send_error("bad_json", f"not a JSON object: {err}")
        return
    if not isinstance(obj, dict):
        c.send_error("bad_json", 'a JSON command is an object such as {"cmd": "help"}')
        return
    tag = obj.get("tag")
    name = obj.get("cmd")
    if not isinstance(name, str):
        c.send_error(
            "bad_json", 'a JSON command needs "cmd", e.g. {"cmd": "join", "room": "dev"}', tag=tag
        )
        return
    cmd = lookup(name)
    if cmd is None:
        c.send_error(
            "unknown_command",
            f'unknown command: {name} ({{"cmd": "help"}} lists the commands)',
            cmd=name,
            tag=tag,
        )
        return
    try:
        args = json_args(obj)
    except CommandError as err:
        _fail(c, cmd, err, tag)
        return
    run(c, cmd, args, tag)


def run(c: LineConnection, cmd: Command, args: Args, tag: Any) -> None:
    if c.user is None and not cmd.before_nick:
        c.send_error("no_nick", "choose a nick first", cmd=cmd.name, tag=tag)
        return
    if cmd.password and not c.may_send_passwords():
        c.send_error(
            "tls_required",
            c.tls_advice("passwords are not accepted over plaintext from another machine"),
            cmd=cmd.name,
            tag=tag,
        )
        return
    for param in cmd.params:
        if param.required and not args.get(param.name):
            err = CommandError("missing_argument", f"/{cmd.name} needs {param.name}", usage=True)
            _fail(c, cmd, err, tag)
            return
    try:
        result = cmd.handler(c, args)
    except Exception as err:
        _fail(c, cmd, err, tag)
        return
    # Most handlers return None; isinstance on a Deferred goes through ABCMeta, which is slow.
    if result is not None and isinstance(result, Deferred):
        result.addCallbacks(
            lambda reply: _finish(c, cmd, reply, tag),
            lambda failure: _failed(c, cmd, failure, tag),
        )
        result.addErrback(lambda f: log.failure("answering /{cmd}", f, cmd=cmd.name))
    else:
        _finish(c, cmd, result, tag)


def _finish(c: LineConnection, cmd: Command, reply: Reply | None, tag: Any) -> None:
    if reply is None:
        reply = Reply()
    for err, extra in reply.errors:
        code, message, more = describe(err)
        c.send_error(code, message, cmd=cmd.name, tag=tag, extra={**more, **extra})
    if reply.error is not None:
        _fail(c, cmd, reply.error, tag)
    else:
        c.send_reply(cmd.name, reply.lines, reply.fields, tag)
    if reply.then is not None:
        reply.then()


def _failed(c: LineConnection, cmd: Command, failure: Failure, tag: Any) -> None:
    err = failure.value
    assert err is not None
    _fail(c, cmd, err, tag, failure)


def _fail(
    c: LineConnection, cmd: Command, err: BaseException, tag: Any, failure: Failure | None = None
) -> None:
    if not isinstance(err, ChatError | CommandError):
        # Never the arguments: they may hold a password.
        log.failure("line command /{cmd} failed", failure or Failure(err), cmd=cmd.name)
    code, message, extra = describe(err)  # type: ignore[arg-type]
    usage = cmd.usage_line if isinstance(err, CommandError) and err.usage else None
    c.send_error(code, message, cmd=cmd.name, usage=usage, tag=tag, extra=extra)


# -- helpers for handlers ------------------------------------------------------------------


def bare_room(name: str) -> str:
    return name[1:] if name.startswith("#") else name


def room_of(c: LineConnection, args: Args) -> str:
    """The room a command names, or the current room."""
    name = args.get("room")
    if name:
        return room_key(bare_room(name))
    current = c.current_room
    if current is None:
        raise CommandError("no_room", "you are not in a room: /join one, or name one (e.g. #dev)")
    return current


def visible_room(c: LineConnection, name: str) -> Room:
    """A room this user may see (secret rooms only to their members)."""
    room = c.service.get_room(name)
    if room is None or ("secret" in room.flags and c.user not in room.members):
        raise NoSuchRoom(room_key(name))
    return room


def member_list(room: Room) -> list[tuple[str, User, Member]]:
    """(nick with @ or +, user, status) of every member: operators, voiced, then the rest."""
    ranked = sorted(
        room.members.items(),
        key=lambda item: (0 if item[1].op else 1 if item[1].voice else 2, item[0].key),
    )
    return [(("@" if m.op else "+" if m.voice else "") + user.nick, user, m) for user, m in ranked]


def members_json(room: Room) -> list[dict[str, Any]]:
    return [
        {
            "nick": user.nick,
            "op": member.op,
            "voice": member.voice,
            "account": user.account,
            "away": user.away,
        }
        for _shown, user, member in member_list(room)
    ]


def members_text(room: Room) -> str:
    names = " ".join(shown for shown, _user, _member in member_list(room))
    return f"{INFO}members of {_room(room.name)} ({len(room.members)}): {names}"


def topic_text(room: Room) -> str:
    if not room.topic:
        return f"{INFO}{_room(room.name)} has no topic"
    by = room.topic_by.split("!", 1)[0]
    return f"{INFO}topic of {_room(room.name)}: {clean(room.topic)} (set by {by})"


def room_json(room: Room, *, show_key: bool) -> dict[str, Any]:
    return {
        "room": room.name,
        "topic": room.topic,
        "topic_by": room.topic_by.split("!", 1)[0] or None,
        "topic_at": room.topic_at or None,
        "modes": sorted(room.flags),
        "key": room.key if show_key else (None if room.key is None else "*"),
        "limit": room.limit,
        "registered": room.registered,
        "members": members_json(room),
    }


def _deliver_message(c: LineConnection, to: str, text: str, kind: Any) -> Reply:
    """Send to ``#room`` or ``room``, or to a nick (a bare name is a nick if one is online)."""
    if to.startswith("#"):
        msg = c.service.say(c.session, text=text, room=room_key(to[1:]), kind=kind)
    elif (
        c.service.find_user(to) is not None
        or not is_valid_room(to)
        or (c.service.get_room(to) is None)
    ):
        msg = c.service.say(c.session, text=text, nick=to, kind=kind)
    else:
        msg = c.service.say(c.session, text=text, room=room_key(to), kind=kind)
    return _sent(msg)


def _sent(msg: Message) -> Reply:
    fields: dict[str, Any] = {"id": msg.id}
    if msg.room is not None:
        fields["room"] = msg.room
    else:
        fields["to"] = msg.target
    return Reply(fields=fields)


def _apply_modes(c: LineConnection, room: str, items: list[ModeItem]) -> Reply:
    applied, errors = c.service.set_mode(c.session, room, items)
    if not applied and errors:
        return Reply(errors=[(err, {}) for err in errors[:-1]], error=errors[-1])
    reply = Reply(
        fields={
            "room": room,
            "applied": [{"adding": i.adding, "mode": i.mode, "arg": i.arg} for i in applied],
        },
        errors=[(err, {}) for err in errors],
    )
    if not applied:
        reply.lines.append(f"{INFO}no change to the modes of {_room(room)}")
    return reply


def _account_reply(lines: list[str], **fields: Any) -> Callable[[Any], Reply]:
    return lambda _result: Reply(list(lines), dict(fields))


# -- connecting and identity ---------------------------------------------------------------


@command(
    "nick",
    "<nick>",
    "Choose your nick, or change it. Before you have one, a line with just the nick works too.",
    Param("nick", required=True),
    json='{"cmd": "nick", "nick": "alice"}',
    before_nick=True,
)
def do_nick(c: LineConnection, a: Args) -> Reply:
    nick = a["nick"]
    if c.user is None:
        user = c.service.claim_nick(c.session, nick)
        c.welcome(user)
        return Reply(fields={"nick": user.nick, "account": user.account})
    user = c.user
    if nick == user.nick:
        return Reply([f"{INFO}you are already {nick}"], {"nick": nick})
    c.service.rename(c.session, nick)
    return Reply(fields={"nick": user.nick})


def _parse_identify(c: LineConnection, text: str) -> Args:
    words = text.split()
    if len(words) > 2:
        raise CommandError("bad_argument", "too many arguments", usage=True)
    if len(words) == 2:
        return {"nick": words[0], "password": words[1]}
    return {"password": words[0]} if words else {}


@command(
    "identify",
    "[nick] <password>",
    "Log in to a registered nick (your current nick if none is given). Works before you have"
    " a nick too: you then get the account's nick, and join its other sessions if it is"
    " online elsewhere.",
    Param("password", required=True),
    json='{"cmd": "identify", "nick": "alice", "password": "secret"}',
    before_nick=True,
    parse=_parse_identify,
    aliases=("login",),
    password=True,
)
def do_identify(c: LineConnection, a: Args) -> Deferred:
    account = a.get("nick") or a.get("account")
    before = c.user
    already = (
        before is not None
        and before.account is not None
        and casefold(before.account) == casefold(account or before.nick)
    )

    def done(user: Any) -> Reply:
        if c.conn is None:
            # Closed while the password was being checked.
            return Reply()
        if c.user is None:
            # Logged in before choosing a nick: the account's nick is the nick.
            nick = c.session.account or account or ""
            try:
                user = c.service.claim_nick(c.session, nick)
            except NickInUse:
                # Someone not logged in to the account holds its nick: the owner takes it
                # back (they are renamed to a guest nick), as an XMPP login does.
                c.service.release_nick(nick, nick)
                user = c.service.claim_nick(c.session, nick)
            c.welcome(user)
            return Reply(fields={"nick": user.nick, "account": user.account})
        user = c.user
        lines = []
        if already:
            lines.append(f"{INFO}you are already logged in as {user.account}")
        elif user is not before:
            lines.append(f"{INFO}you are now logged in as {user.account} (with your other session)")
        return Reply(lines, {"nick": user.nick, "account": user.account})

    if c.user is None and not account:
        raise CommandError(
            "missing_argument",
            "before you have a nick, say which: /identify <nick> <password>",
            usage=True,
        )
    return c.service.identify(c.session, a["password"], account).addCallback(done)


@command(
    "register",
    "<password> [email]",
    "Register your current nick as an account (and log in to it). When registration on the"
    " server is by invitation, only a nick that an operator has invited can be registered.",
    Param("password", required=True),
    Param("email"),
    json='{"cmd": "register", "password": "secret"}',
    password=True,
)
def do_register(c: LineConnection, a: Args) -> Deferred:
    d = c.service.register(c.session, a["password"], a.get("email"))
    return d.addCallback(
        lambda record: Reply([f"{INFO}{record.name} is now registered"], {"account": record.name})
    )


@command(
    "password",
    "<old password> <new password>",
    "Change the password of the account you are logged in to.",
    Param("old", required=True),
    Param("new", required=True),
    json='{"cmd": "password", "old": "secret", "new": "better secret"}',
    password=True,
)
def do_password(c: LineConnection, a: Args) -> Deferred:
    d = c.service.change_password(c.session, a["old"], a["new"])
    return d.addCallback(_account_reply([f"{INFO}password changed"]))


@command(
    "logout",
    "",
    "Log out of your account (you keep your nick; a registered nick must be identified to).",
    json='{"cmd": "logout"}',
)
def do_logout(c: LineConnection, a: Args) -> Reply:
    c.service.logout(c.session)
    return Reply()


@command(
    "drop",
    "<password>",
    "Delete the account you are logged in to: every session of it ends, this one once told."
    " Its nick becomes free for anyone.",
    Param("password", required=True),
    json='{"cmd": "drop", "password": "secret"}',
    password=True,
)
def do_drop(c: LineConnection, a: Args) -> Deferred:
    account = c.user.account if c.user else None
    d = c.service.drop(c.session, a["password"])
    return d.addCallback(_account_reply([f"{INFO}account {account} dropped"], account=account))


@command(
    "away",
    "[message]",
    "Mark yourself away with a message; without one, mark yourself back.",
    Param("text", REST),
    json='{"cmd": "away", "text": "lunch"}',
)
def do_away(c: LineConnection, a: Args) -> Reply:
    c.service.set_away(c.session, a.get("text") or None)
    return Reply(fields={"away": a.get("text") or None})


# -- rooms ---------------------------------------------------------------------------------


@command(
    "join",
    "<room>[,<room>...] [key[,key...]]",
    "Join rooms (created if they do not exist: you are then their operator). The last one"
    " joined becomes your current room, where plain lines go. Joining a room you are in"
    " makes it current.",
    Param("room", required=True),
    Param("key"),
    json='{"cmd": "join", "room": "dev"}',
    aliases=("j",),
)
def do_join(c: LineConnection, a: Args) -> Reply:
    names = [n for n in a["room"].split(",") if n]
    keys = a.get("key", "").split(",")
    reply = Reply()
    joined: list[str] = []
    last: Exception | None = None
    previous = c.current_room
    for i, name in enumerate(names):
        key = keys[i] if i < len(keys) and keys[i] else None
        try:
            room = c.service.join(c.session, bare_room(name), key)
        except ChatError as err:
            reply.errors.append((err, {"room": bare_room(name)}))
            last = err
            continue
        joined.append(room.name)
    if not joined:
        assert last is not None
        reply.errors.pop()
        reply.error = last
        return reply
    c.current_room = joined[-1]
    if previous != c.current_room:
        reply.lines.append(f"{INFO}now talking in {_room(c.current_room)}")
    reply.fields.update(room=c.current_room, rooms=joined)
    return reply


def _parse_part(c: LineConnection, text: str) -> Args:
    word, rest = split_word(text)
    user = c.user
    if word.startswith("#") or (
        user is not None and is_valid_room(word) and casefold(word) in user.rooms
    ):
        args = {"room": word}
        if rest:
            args["reason"] = rest
        return args
    return {"reason": text.strip()} if text.strip() else {}


@command(
    "part",
    "[room] [reason]",
    "Leave a room (the current one unless the first word is a #room or a room you are in).",
    Param("room", ROOM),
    Param("reason", REST),
    json='{"cmd": "part", "room": "dev", "reason": "bye"}',
    parse=_parse_part,
    aliases=("leave",),
)
def do_part(c: LineConnection, a: Args) -> Reply:
    room = room_of(c, a)
    c.service.part(c.session, room, a.get("reason", ""))
    return Reply(fields={"room": room})


@command(
    "rooms",
    "",
    "List the rooms with their member counts and topics.",
    json='{"cmd": "rooms"}',
    aliases=("list",),
)
def do_rooms(c: LineConnection, a: Args) -> Reply:
    rooms = [
        room
        for room in sorted(c.service.rooms.values(), key=lambda r: r.name)
        if "secret" not in room.flags or c.user in room.members
    ]
    if not rooms:
        return Reply([f"{INFO}no rooms yet: /join one to create it"], {"rooms": []})
    lines = [f"{INFO}{len(rooms)} room{'s' if len(rooms) != 1 else ''}:"]
    data = []
    for room in rooms:
        count = len(room.members)
        line = f"{INFO}  {_room(room.name)} ({count} member{'s' if count != 1 else ''})"
        if room.topic:
            line += f": {clean(room.topic)}"
        lines.append(line)
        data.append({"room": room.name, "members": count, "topic": room.topic})
    return Reply(lines, {"rooms": data})


@command(
    "who",
    "[room]",
    "List the members of a room (the current one by default): @ operator, + voiced.",
    Param("room"),
    json='{"cmd": "who", "room": "dev"}',
    aliases=("names",),
)
def do_who(c: LineConnection, a: Args) -> Reply:
    room = visible_room(c, room_of(c, a))
    return Reply([members_text(room)], {"room": room.name, "members": members_json(room)})


@command(
    "whois",
    "<nick>",
    "Show who a user is: account, rooms, away message, idle time.",
    Param("nick", required=True),
    json='{"cmd": "whois", "nick": "bob"}',
)
def do_whois(c: LineConnection, a: Args) -> Reply:
    user = c.service.find_user(a["nick"])
    if user is None:
        raise NoSuchNick(a["nick"])
    who = user.who()
    now = c.clock.seconds()
    rooms = []
    for room in user.rooms.values():
        if "secret" in room.flags and c.user not in room.members:
            continue
        member = room.members.get(user)
        prefix = "@" if member and member.op else "+" if member and member.voice else ""
        rooms.append((prefix, room.name))
    idle = max(0, int(now - user.last_active))
    lines = [
        f"{INFO}{who.nick} is {who.mask}" + (f" ({clean(who.realname)})" if who.realname else "")
    ]
    if who.account:
        lines.append(f"{INFO}{who.nick} is logged in as {who.account}")
    if rooms:
        lines.append(f"{INFO}{who.nick} is in " + " ".join(p + _room(r) for p, r in rooms))
    if who.away:
        lines.append(f"{INFO}{who.nick} is away: {clean(who.away)}")
    lines.append(f"{INFO}{who.nick} has been idle {_duration(idle)}")
    # Addresses are for operators only: everyone else sees the cloak in the mask.
    viewer = c.user
    addresses = []
    if viewer is not None and "oper" in viewer.modes:
        addresses = [
            {"protocol": conn.protocol, "address": conn.address} for conn in user.connections
        ]
        shown = ", ".join(f"{item['address']} ({item['protocol']})" for item in addresses)
        lines.append(f"{INFO}{who.nick} is connected from {shown}")
    if "oper" in user.modes:
        lines.append(f"{INFO}{who.nick} is a server operator")
    lines.append(f"{INFO}end of whois {who.nick}")
    fields = {
        "nick": who.nick,
        "mask": who.mask,
        "realname": who.realname,
        "account": who.account,
        "away": who.away,
        "rooms": [{"room": r, "status": p} for p, r in rooms],
        "idle": idle,
        "bot": who.bot,
    }
    fields["oper"] = "oper" in user.modes
    if addresses:
        fields["addresses"] = addresses
    return Reply(lines, fields)


def _duration(seconds: int) -> str:
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


@command(
    "topic",
    "[#room] [text]",
    "Show the topic of the current room, or set it (a single - clears it).",
    Param("room", ROOM),
    Param("text", REST),
    json='{"cmd": "topic", "room": "dev", "text": "release on Friday"}',
)
def do_topic(c: LineConnection, a: Args) -> Reply:
    name = room_of(c, a)
    if "text" not in a:
        room = visible_room(c, name)
        return Reply(
            [topic_text(room)],
            {
                "room": room.name,
                "topic": room.topic,
                "topic_by": room.topic_by.split("!", 1)[0] or None,
                "topic_at": room.topic_at or None,
            },
        )
    text = a["text"]
    if text.strip() == "-":
        text = ""
    c.service.set_topic(c.session, name, text)
    return Reply(fields={"room": name, "topic": text})


@command(
    "register-room",
    "[#room]",
    "Register the current room to your account: its topic, modes, bans and operators then"
    " survive restarts. You must be logged in and its operator.",
    Param("room", ROOM),
    json='{"cmd": "register-room", "room": "dev"}',
    aliases=("registerroom",),
)
def do_register_room(c: LineConnection, a: Args) -> Deferred:
    name = room_of(c, a)
    d = c.service.register_room(c.session, name)
    return d.addCallback(
        _account_reply(
            [f"{INFO}{_room(name)} is now registered: its topic, modes and operators are kept"],
            room=name,
        )
    )


@command(
    "history",
    "[#room] [count]",
    f"Show the last messages of a room (default {HISTORY_DEFAULT}, at most {HISTORY_MAX}).",
    Param("room", ROOM),
    Param("count"),
    json='{"cmd": "history", "room": "dev", "count": 50}',
)
def do_history(c: LineConnection, a: Args) -> Deferred:
    name = room_of(c, a)
    count_text = a.get("count", str(HISTORY_DEFAULT))
    if not count_text.isdigit() or not 1 <= int(count_text) <= HISTORY_MAX:
        raise CommandError(
            "bad_argument", f"count must be a number from 1 to {HISTORY_MAX}", usage=True
        )
    room = visible_room(c, name)
    if c.user not in room.members:
        raise NotOnRoom(room.name)

    def show(messages: list[Message]) -> Reply:
        now = c.clock.seconds()
        lines = [f"{INFO}history of {_room(room.name)} ({len(messages)} messages):"]
        lines.extend(history_text(m, now) for m in messages)
        lines.append(f"{INFO}end of history of {_room(room.name)}")
        data = [{**message_json(m), "history": True} for m in messages]
        return Reply(lines, {"room": room.name, "messages": data})

    return c.service.history_latest(room.name, int(count_text)).addCallback(show)


# -- talking -------------------------------------------------------------------------------


@command(
    "say",
    "[#room] <text>",
    "Say something in the current room (what a plain line does), or in another room you are"
    " in. Start a line with // to say something that starts with /.",
    Param("room", ROOM),
    Param("text", REST, required=True),
    json='{"cmd": "say", "room": "dev", "text": "hello"}',
)
def do_say(c: LineConnection, a: Args) -> Reply:
    room = room_of(c, a)
    return _sent(c.service.say(c.session, text=a["text"], room=room))


@command(
    "msg",
    "<nick|#room> <text>",
    "Send a private message to a user (or a message to a room). A bare name is a nick when"
    " someone has it, else a room.",
    Param("to", required=True),
    Param("text", REST, required=True),
    json='{"cmd": "msg", "to": "bob", "text": "hi"}',
    aliases=("m", "query", "privmsg"),
)
def do_msg(c: LineConnection, a: Args) -> Reply:
    return _deliver_message(c, a["to"], a["text"], "privmsg")


@command(
    "me",
    "[#room] <action>",
    "Describe an action in the current room: /me waves shows * alice waves.",
    Param("room", ROOM),
    Param("text", REST, required=True),
    json='{"cmd": "me", "room": "dev", "text": "waves"} (or "to": "bob" for a private one)',
    aliases=("action",),
)
def do_me(c: LineConnection, a: Args) -> Reply:
    if a.get("to"):
        return _deliver_message(c, a["to"], a["text"], "action")
    room = room_of(c, a)
    return _sent(c.service.say(c.session, text=a["text"], room=room, kind="action"))


@command(
    "notice",
    "<nick|#room> <text>",
    "Send a notice: like a message, but bots never answer notices.",
    Param("to", required=True),
    Param("text", REST, required=True),
    json='{"cmd": "notice", "to": "bob", "text": "build finished"}',
)
def do_notice(c: LineConnection, a: Args) -> Reply:
    return _deliver_message(c, a["to"], a["text"], "notice")


# -- moderation ----------------------------------------------------------------------------


@command(
    "kick",
    "[#room] <nick> [reason]",
    "Remove a user from the current room (operators only).",
    Param("room", ROOM),
    Param("nick", required=True),
    Param("reason", REST),
    json='{"cmd": "kick", "room": "dev", "nick": "bob", "reason": "spam"}',
)
def do_kick(c: LineConnection, a: Args) -> Reply:
    room = room_of(c, a)
    c.service.kick(c.session, room, a["nick"], a.get("reason", ""))
    return Reply(fields={"room": room, "nick": a["nick"]})


@command(
    "ban",
    "[#room] [nick|mask]",
    "Ban a nick (nick!*@*), a mask (nick!ident@host, * and ? match) or an account"
    " ($a:name) from the current room; without one, list the bans.",
    Param("room", ROOM),
    Param("mask"),
    json='{"cmd": "ban", "room": "dev", "mask": "bob"}',
)
def do_ban(c: LineConnection, a: Args) -> Reply:
    name = room_of(c, a)
    if a.get("mask"):
        return _apply_modes(c, name, [ModeItem(True, "ban", a["mask"])])
    room = visible_room(c, name)
    bans = [{"mask": b.mask, "set_by": b.set_by, "set_at": b.set_at} for b in room.bans]
    if not bans:
        return Reply([f"{INFO}no bans in {_room(room.name)}"], {"room": room.name, "bans": []})
    lines = [f"{INFO}bans of {_room(room.name)} ({len(bans)}):"]
    now = c.clock.seconds()
    lines.extend(
        f"{INFO}  {b.mask} (by {b.set_by.split('!', 1)[0]}, {clock_time(b.set_at, now)})"
        for b in room.bans
    )
    return Reply(lines, {"room": room.name, "bans": bans})


@command(
    "unban",
    "[#room] <mask>",
    "Lift a ban (as /ban lists it, or the nick it was set on).",
    Param("room", ROOM),
    Param("mask", required=True),
    json='{"cmd": "unban", "room": "dev", "mask": "bob!*@*"}',
)
def do_unban(c: LineConnection, a: Args) -> Reply:
    return _apply_modes(c, room_of(c, a), [ModeItem(False, "ban", a["mask"])])


@command(
    "invite",
    "<nick> [room]",
    "Invite a user to a room (the current one by default); they may then join it past"
    " invite-only, a key or a limit.",
    Param("nick", required=True),
    Param("room"),
    json='{"cmd": "invite", "nick": "bob", "room": "dev"}',
)
def do_invite(c: LineConnection, a: Args) -> Reply:
    room = room_of(c, a)
    target = c.service.invite(c.session, a["nick"], room)
    return Reply(fields={"room": room, "nick": target.nick})


def _status_command(mode: str, adding: bool) -> Handler:
    def handler(c: LineConnection, a: Args) -> Reply:
        room = room_of(c, a)
        nicks = [n for n in re.split(r"[\s,]+", a["nick"]) if n]
        return _apply_modes(c, room, [ModeItem(adding, mode, n) for n in nicks])

    return handler


for _name, _mode, _adding, _what in (
    ("op", "op", True, "Make users operators of the current room"),
    ("deop", "op", False, "Take operator status away"),
    ("voice", "voice", True, "Let users speak in a moderated room"),
    ("devoice", "voice", False, "Take voice away"),
):
    command(
        _name,
        "[#room] <nick>[ <nick>...]",
        f"{_what} (operators only).",
        Param("room", ROOM),
        Param("nick", REST, required=True),
        json=f'{{"cmd": "{_name}", "room": "dev", "nick": "bob"}}',
    )(_status_command(_mode, _adding))


def _parse_mode(c: LineConnection, text: str) -> Args:
    word, rest = split_word(text)
    if not word:
        return {}
    if word.startswith(("+", "-")):
        return {"changes": text.strip()}
    args = {"room": word}
    if rest:
        args["changes"] = rest
    return args


MODE_HELP = (
    "Show the modes of a room, or change them (operators only). Write modes as words or"
    " letters: +moderated/+m (only voiced members speak), +invite_only/+i, +topic_lock/+t"
    " (only operators set the topic), +no_external/+n (only members send), +secret/+s"
    " (hidden from /rooms), +registered_only/+r, +key/+k <key>, +limit/+l <count>,"
    " +ban/+b <mask>, +invite/+I <mask> (may join past invite-only), +op/+o <nick>,"
    " +voice/+v <nick>. Several at once: /mode dev +mt-s or /mode dev +moderated -secret."
)


@command(
    "mode",
    "[room] [+/-modes [args]]",
    MODE_HELP,
    Param("room"),
    Param("changes", REST),
    json='{"cmd": "mode", "room": "dev", "changes": "+moderated +key secret"}',
    parse=_parse_mode,
)
def do_mode(c: LineConnection, a: Args) -> Reply:
    name = room_of(c, a)
    changes = a.get("changes", "").split()
    if changes:
        try:
            items = parse_changes(changes)
        except ModeSyntaxError as err:
            raise CommandError("bad_argument", str(err), usage=True) from None
        return _apply_modes(c, name, items)
    room = visible_room(c, name)
    member = c.user in room.members
    state = [
        ModeItem(True, mode, arg if (mode != "key" or member) else None)
        for mode, arg in room.mode_state()
    ]
    shown = format_changes(state) or "none"
    fields = room_json(room, show_key=member)
    del fields["members"]
    return Reply([f"{INFO}modes of {_room(room.name)}: {shown}"], fields)


# -- server operators ----------------------------------------------------------------------


@functools.cache
def _dummy_hash() -> str:
    # Checked when the operator name is unknown, so that a wrong name costs as long as a
    # wrong password and does not tell which names exist.  Made on first use, not at import.
    return hash_password("not an operator password")


def _check_oper_password(password: str, stored: str | None) -> bool:
    """Slow (scrypt): run in a thread.  ``stored`` None: an unknown name, which never matches."""
    ok = verify_password(password, stored if stored is not None else _dummy_hash())
    return ok and stored is not None


@command(
    "oper",
    "<name> <password>",
    "Become a server operator (operators are listed, with hashed passwords, in the server's"
    " configuration). Operators see users' addresses in /whois and manage server bans.",
    Param("name", required=True),
    Param("password", required=True),
    json='{"cmd": "oper", "name": "admin", "password": "secret"}',
    password=True,
)
def do_oper(c: LineConnection, a: Args) -> Deferred:
    accounts = c.service.accounts
    if accounts.throttled(None, c.address):
        raise AccountError(
            AccountError.THROTTLED, "too many failed attempts; wait a while before trying again"
        )
    entry = next((op for op in c.factory.operators if op.name == a["name"]), None)
    stored = entry.password if entry is not None else None
    d: Deferred = verify_password_in_thread(
        accounts.run_in_thread, _check_oper_password, a["password"], stored
    )

    def checked(ok: bool) -> Reply:
        if entry is None or not ok:
            accounts.record_failure(None, c.address, c.protocol)
            log.info(
                "line: failed /oper as {name} from {address}", name=a["name"], address=c.address
            )
            raise NotPermitted("wrong operator name or password")
        if c.conn is None or c.user is None:
            return Reply()
        c.service.grant_oper(c.session)
        log.info("line: {nick} is now an operator (as {name})", nick=c.user.nick, name=entry.name)
        return Reply([f"{INFO}you are now a server operator"], {"oper": True})

    return d.addCallback(checked)


def _require_oper(c: LineConnection) -> None:
    if c.user is None or "oper" not in c.user.modes:
        raise NotPermitted("only server operators may do that (/oper first)")


def _ban_json(ban: ServerBan) -> dict[str, Any]:
    return {
        "mask": ban.mask,
        "reason": ban.reason,
        "set_by": ban.set_by,
        "set_at": ban.set_at or None,
        "config": ban.from_config,
    }


@command(
    "kline",
    "<mask> [reason]",
    "Ban from the whole server, on every protocol (operators only): nick!ident@host with *"
    " and ? (the host is the real address, or a network such as 203.0.113.0/24), a bare"
    " address, or $a:account. Matching users are disconnected. Kept across restarts.",
    Param("mask", required=True),
    Param("reason", REST),
    json='{"cmd": "kline", "mask": "*!*@203.0.113.7", "reason": "spam"}',
)
def do_kline(c: LineConnection, a: Args) -> Reply:
    _require_oper(c)
    ban, gone = c.service.add_server_ban(c.session, a["mask"], a.get("reason", ""))
    lines = [f"{INFO}server ban on {ban.mask}" + (f": {clean(ban.reason)}" if ban.reason else "")]
    if gone:
        lines.append(f"{INFO}disconnected: {' '.join(gone)}")
    return Reply(lines, {**_ban_json(ban), "disconnected": gone})


@command(
    "unkline",
    "<mask>",
    "Lift a server ban set with /kline (operators only; bans from the configuration file"
    " are lifted there).",
    Param("mask", required=True),
    json='{"cmd": "unkline", "mask": "*!*@203.0.113.7"}',
)
def do_unkline(c: LineConnection, a: Args) -> Reply:
    _require_oper(c)
    ban = c.service.remove_server_ban(c.session, a["mask"])
    return Reply([f"{INFO}lifted the server ban on {ban.mask}"], _ban_json(ban))


@command(
    "klines",
    "",
    "List the server bans (operators only).",
    json='{"cmd": "klines"}',
)
def do_klines(c: LineConnection, a: Args) -> Reply:
    _require_oper(c)
    bans = c.service.server_bans
    lines = [f"{INFO}server bans ({len(bans)}):"]
    now = c.clock.seconds()
    for ban in bans:
        origin = "config" if ban.from_config else f"by {ban.set_by}, {clock_time(ban.set_at, now)}"
        reason = f": {clean(ban.reason)}" if ban.reason else ""
        lines.append(f"{INFO}  {ban.mask} ({origin}){reason}")
    return Reply(lines, {"bans": [_ban_json(ban) for ban in bans]})


def _utc(ts: float) -> str:
    # Always with the date: an expiry is days ahead, where clock_time would show a bare time.
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def _invite_json(invite: RegistrationInvite) -> dict[str, Any]:
    return {
        "name": invite.name,
        "invited_by": invite.invited_by or None,
        "created_at": invite.created_at,
        "expires_at": invite.expires_at,
    }


_MODE_NOTES = {
    "open": "registration is open on this server: anyone may register any free nick anyway",
    "closed": 'registration is closed on this server: the invitation counts once it is "invite"',
}


@command(
    "invite-account",
    "<name> [days]",
    "Let <name> be registered once, by whoever asks first, with the registration of any"
    f" protocol, within [days] ({INVITE_DAYS:g} by default), while registration is by"
    " invitation (server operators only). Inviting a name again renews its invitation.",
    Param("name", required=True),
    Param("days"),
    json='{"cmd": "invite-account", "name": "bob", "days": 7}',
)
def do_invite_account(c: LineConnection, a: Args) -> Deferred:
    _require_oper(c)
    name = a["name"]
    days = INVITE_DAYS
    if "days" in a:
        try:
            days = float(a["days"])
        except ValueError:
            raise CommandError(
                "bad_argument", "days must be a number, such as 7 or 0.5", usage=True
            ) from None
    mode = c.service.settings.registration

    def invited(expires_at: float) -> Reply:
        lines = [f"{INFO}{name} may be registered once, until {_utc(expires_at)}"]
        if mode in _MODE_NOTES:
            lines.append(f"{INFO}note: {_MODE_NOTES[mode]}")
        return Reply(lines, {"name": name, "expires_at": expires_at, "registration": mode})

    return c.service.invite_registration(c.session, name, days).addCallback(invited)


@command(
    "uninvite-account",
    "<name>",
    "Withdraw the invitation to register <name> (server operators only).",
    Param("name", required=True),
    json='{"cmd": "uninvite-account", "name": "bob"}',
)
def do_uninvite_account(c: LineConnection, a: Args) -> Deferred:
    _require_oper(c)
    name = a["name"]

    def withdrawn(existed: bool) -> Reply:
        if not existed:
            raise ChatError(f"{name} has no invitation to register")
        return Reply([f"{INFO}withdrew the invitation to register {name}"], {"name": name})

    return c.service.uninvite_registration(c.session, name).addCallback(withdrawn)


@command(
    "account-invites",
    "",
    "List the names invited to be registered, with their expiry (server operators only).",
    json='{"cmd": "account-invites"}',
)
def do_account_invites(c: LineConnection, a: Args) -> Deferred:
    _require_oper(c)

    def listed(invites: list[RegistrationInvite]) -> Reply:
        lines = [f"{INFO}registration invitations ({len(invites)}):"]
        for invite in invites:
            by = f"by {invite.invited_by}" if invite.invited_by else "from the command line"
            lines.append(f"{INFO}  {invite.name} until {_utc(invite.expires_at)} ({by})")
        return Reply(
            lines,
            {
                "invites": [_invite_json(invite) for invite in invites],
                "registration": c.service.settings.registration,
            },
        )

    return c.service.registration_invites(c.session).addCallback(listed)


# -- the connection ------------------------------------------------------------------------


@command(
    "format",
    "json|text",
    "Switch this connection between text lines and JSON Lines (one JSON object per line;"
    " commands may then also be JSON objects).",
    Param("format", required=True),
    json='{"cmd": "format", "format": "text"}',
    before_nick=True,
)
def do_format(c: LineConnection, a: Args) -> Reply:
    mode = a["format"].lower()
    if mode not in ("json", "text"):
        raise CommandError("bad_argument", "the format is json or text", usage=True)
    c.mode = mode
    return Reply([f"{INFO}output format: {mode}"], {"format": mode})


@command(
    "help",
    "[command]",
    "List the commands, or explain one.",
    Param("command"),
    json='{"cmd": "help", "command": "join"}',
    before_nick=True,
    aliases=("?", "commands"),
)
def do_help(c: LineConnection, a: Args) -> Reply:
    name = a.get("command")
    if name:
        cmd = lookup(name.lstrip("/"))
        if cmd is None:
            raise CommandError(
                "unknown_command", f"unknown command: /{name.lstrip('/')} (/help lists them)"
            )
        lines = [f"{INFO}usage: {cmd.usage_line}", f"{INFO}{cmd.help}"]
        if cmd.json:
            lines.append(f"{INFO}as JSON: {cmd.json}")
        return Reply(lines, {"commands": [_help_json(cmd)]})
    shown = [cmd for cmd in COMMANDS.values() if not cmd.hidden]
    lines = [f"{INFO}commands (/help <command> explains one):"]
    lines.extend(f"{INFO}  {cmd.usage_line}" for cmd in shown)
    lines.append(f"{INFO}plain lines go to your current room; // starts a line that begins with /")
    return Reply(lines, {"commands": [_help_json(cmd) for cmd in shown]})


def _help_json(cmd: Command) -> dict[str, Any]:
    return {"name": cmd.name, "usage": cmd.usage_line, "help": cmd.help, "json": cmd.json}


@command(
    "ping",
    "",
    "Check that the server is there (it answers pong). Any line answers the server's ping.",
    json='{"cmd": "ping"}',
    before_nick=True,
    aliases=("pong",),
)
def do_ping(c: LineConnection, a: Args) -> Reply:
    return Reply([f"{INFO}pong"])


@command(
    "quit",
    "[reason]",
    "Leave the server; the reason is shown to the people in your rooms.",
    Param("reason", REST),
    json='{"cmd": "quit", "reason": "bye"}',
    before_nick=True,
    aliases=("exit", "bye"),
)
def do_quit(c: LineConnection, a: Args) -> Reply:
    text = a.get("reason")
    # Marked as the user's own words, as IRC marks them, so that no one can quit with what
    # looks like the server's reason ("Excess flood", "Ping timeout", a kill).
    reason = f"Quit: {text}" if text else "Quit"
    return Reply([f"{INFO}bye"], {"reason": reason}, then=lambda: c.quit(reason))
