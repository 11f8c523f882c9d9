"""Line-chat commands of server operators: /oper, server bans, registration invitations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatserver.auth.operators import OperatorRefused, check_operator
from chatserver.core.errors import ChatError, NotPermitted
from chatserver.core.views import INVITE_DAYS, RegistrationInvite
from protocols.line.commands import REST, Args, CommandError, Param, Reply, command
from protocols.line.render import INFO, ban_json, clean, clock_time, invite_json, utc

if TYPE_CHECKING:
    from protocols.line.connection import LineConnection

log = Logger()


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
    d = check_operator(
        c.service,
        c.factory.operators,
        a["name"],
        a["password"],
        address=c.address,
        protocol=c.protocol,
    )

    def granted(entry: Any) -> Reply:
        if c.conn is None or c.user is None:
            return Reply()
        c.service.grant_oper(c.session)
        log.info("line: {nick} is now an operator (as {name})", nick=c.user.nick, name=entry.name)
        return Reply([f"{INFO}you are now a server operator"], {"oper": True})

    def refused(failure: Failure) -> Reply:
        failure.trap(OperatorRefused)
        log.info("line: failed /oper as {name} from {address}", name=a["name"], address=c.address)
        raise NotPermitted("wrong operator name or password")

    return d.addCallbacks(granted, refused)


def _require_oper(c: LineConnection) -> None:
    if c.user is None or "oper" not in c.user.modes:
        raise NotPermitted("only server operators may do that (/oper first)")


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
    return Reply(lines, {**ban_json(ban), "disconnected": gone})


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
    return Reply([f"{INFO}lifted the server ban on {ban.mask}"], ban_json(ban))


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
    return Reply(lines, {"bans": [ban_json(ban) for ban in bans]})


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
        lines = [f"{INFO}{name} may be registered once, until {utc(expires_at)}"]
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
            lines.append(f"{INFO}  {invite.name} until {utc(invite.expires_at)} ({by})")
        return Reply(
            lines,
            {
                "invites": [invite_json(invite) for invite in invites],
                "registration": c.service.settings.registration,
            },
        )

    return c.service.registration_invites(c.session).addCallback(listed)
