"""The IRC command table: each entry carries its rules, and one dispatcher enforces them.

Handlers register with :func:`command`.  The dispatcher, not the handlers, answers unknown
commands (421), missing parameters (461), commands before registration (451) and
operator-only commands (481), and charges each command what it costs the server: its
``cost`` in flood tokens before it runs (every command, registered or not, even one that
is refused), then ``per_delivery`` for each event the core delivered because of it (see
:mod:`protocols.costs`).  It looks the handler up *first* and only then calls it, so a
``KeyError`` raised inside a handler is reported as the bug it is, never as "unknown command".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatserver.core.errors import ChatError
from protocols.costs import charged
from protocols.irc import numerics as n

if TYPE_CHECKING:
    from protocols.irc.connection import IrcConnection
    from protocols.irc.message import IrcMessage

Handler = Callable[["IrcConnection", "IrcMessage"], "Deferred[Any] | None"]

log = Logger()


@dataclass(frozen=True)
class CommandSpec:
    """A command's handler, the rules the dispatcher checks before calling it, and what it
    costs the client's flood budget: ``cost`` tokens, and ``per_delivery`` more for each
    event the core delivered because of it."""

    name: str
    handler: Handler
    min_params: int = 0
    pre_registration: bool = False
    oper_only: bool = False
    cost: float = 1.0
    per_delivery: float = 0.0


COMMANDS: dict[str, CommandSpec] = {}


def command(
    name: str,
    *,
    min_params: int = 0,
    pre_registration: bool = False,
    oper_only: bool = False,
    cost: float = 1.0,
    per_delivery: float = 0.0,
) -> Callable[[Handler], Handler]:
    """Decorator: register ``handler(conn, msg)`` for ``name`` (upper case) in :data:`COMMANDS`."""

    def register(handler: Handler) -> Handler:
        key = name.upper()
        if key in COMMANDS and COMMANDS[key].handler is not handler:
            raise ValueError(f"IRC command {key} is registered twice")
        COMMANDS[key] = CommandSpec(
            key, handler, min_params, pre_registration, oper_only, cost, per_delivery
        )
        return handler

    return register


def cost_of(name: str) -> float:
    """What a command costs before it runs (an unknown one costs a token, like most)."""
    spec = COMMANDS.get(name)
    return 1.0 if spec is None else spec.cost


def dispatch(conn: IrcConnection, msg: IrcMessage) -> Deferred[Any] | None:
    """Check ``msg`` against its command's rules and run the handler.

    Returns the handler's Deferred when it returned an unfired one (the connection keeps the
    command's reply open until it fires); errors are answered here, never raised.
    """
    spec = COMMANDS.get(msg.command)
    if spec is None:
        conn.reply(n.ERR_UNKNOWNCOMMAND, msg.command, "Unknown command")
        return None
    if not conn.registered and not spec.pre_registration:
        conn.reply(n.ERR_NOTREGISTERED, "You have not registered")
        return None
    if spec.oper_only and not conn.is_oper:
        conn.reply(n.ERR_NOPRIVILEGES, "Permission Denied- You're not an IRC operator")
        return None
    if len(msg.params) < spec.min_params:
        conn.reply(n.ERR_NEEDMOREPARAMS, msg.command, "Not enough parameters")
        return None
    try:
        if spec.per_delivery:
            result = charged(
                conn.service, spec.per_delivery, conn.flood, lambda: spec.handler(conn, msg)
            )
        else:
            result = spec.handler(conn, msg)
    except ChatError as err:
        conn.reply_error(err, msg.command)
        return None
    except Exception:
        _report_bug(conn, msg, Failure())
        return None
    # Most handlers return None; isinstance on a Deferred goes through ABCMeta, which is slow.
    if result is not None and isinstance(result, Deferred):
        return result.addErrback(_deferred_failed, conn, msg)
    return None


def _deferred_failed(failure: Failure, conn: IrcConnection, msg: IrcMessage) -> None:
    if failure.check(ChatError):
        conn.reply_error(failure.value, msg.command)
        return None
    _report_bug(conn, msg, failure)
    return None


def _report_bug(conn: IrcConnection, msg: IrcMessage, failure: Failure) -> None:
    # Only the command name is logged: parameters may hold message text or passwords.
    log.failure("IRC command {command} failed", failure, command=msg.command)
    conn.reply(n.ERR_UNKNOWNERROR, msg.command, "Internal error while processing the command")
