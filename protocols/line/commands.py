"""Line-chat commands: one table from command name to handler, usage, help and parameters.

The dispatcher, not the handlers, answers unknown commands, commands used before a nick is
chosen, missing arguments and surplus words, always with the usage line.  A handler gets the
connection and a dict of named arguments (from the words of a text command, or the fields of
a JSON command) and returns a :class:`Reply`, or a Deferred that fires with one; a core
error raised (or errbacked) is turned into an error reply by the dispatcher.

The handlers live in :mod:`protocols.line.handlers`, one module per group of commands; they
register here with :func:`command`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatserver.core.errors import (
    AccountError,
    ChatError,
)
from chatserver.core.names import room_key
from chatserver.core.views import RoomView
from protocols.costs import charged
from protocols.line.errors import describe_chat_error
from protocols.line.handoff import hand_off
from protocols.line.jsonin import JsonRefused, decode_command

if TYPE_CHECKING:
    from protocols.line.connection import LineConnection

log = Logger()

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


def describe(err: Exception) -> tuple[str, str, dict[str, Any]]:
    """(error code, message, extra JSON fields) for an error a command ran into."""
    if isinstance(err, CommandError):
        return err.code, err.message, {}
    if isinstance(err, ChatError):
        return describe_chat_error(err)
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
    # Flood tokens for each event the core delivered while it ran, past the line's own
    # token (see protocols.costs).
    per_delivery: float = 0.0

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
    per_delivery: float = 0.0,
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        COMMANDS[name] = Command(
            name,
            handler,
            usage,
            help,
            params,
            json,
            before_nick,
            parse,
            hidden,
            password,
            per_delivery,
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
        obj = decode_command(text)
    except JsonRefused as err:
        c.send_error(err.code, err.message, cmd=err.cmd, tag=err.tag)
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
        if cmd.per_delivery:
            result = charged(c.service, cmd.per_delivery, c.flood, lambda: cmd.handler(c, args))
        else:
            result = cmd.handler(c, args)
    except Exception as err:
        _fail(c, cmd, err, tag)
        return
    # Most handlers return None; isinstance on a Deferred goes through ABCMeta, which is slow.
    if result is not None and isinstance(result, Deferred):
        # The lines after it wait until it is answered (or handed off with the client).
        c.hold_input()
        answer_later(c, cmd, result, tag).addBoth(lambda _: c.release_input())
    else:
        _finish(c, cmd, result, tag)


def answer_later(c: LineConnection, cmd: Command, result: Deferred, tag: Any) -> Deferred:
    """Answer ``cmd`` when ``result`` fires (a Reply, or the failure)."""
    result.addCallbacks(
        lambda reply: _finish(c, cmd, reply, tag),
        lambda failure: _failed(c, cmd, failure, tag),
    )
    return result.addErrback(lambda f: log.failure("answering /{cmd}", f, cmd=cmd.name))


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
    if isinstance(err, AccountError) and err.node is not None and hand_off(c, err, cmd.name, tag):
        # Cluster mode: the account's user is on another node, which serves this client
        # from now on, and answers the login.
        return
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


def visible_room(c: LineConnection, name: str) -> RoomView:
    """A room this user may see (the core's rule for secret rooms), else NoSuchRoom."""
    return c.service.visible_room(c.user, name)


def account_reply(lines: list[str], **fields: Any) -> Callable[[Any], Reply]:
    return lambda _result: Reply(list(lines), dict(fields))
