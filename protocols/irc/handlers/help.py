"""HELP and HELPOP: what each command of the table does, in 704/705/706 (Modern IRC).

``HELP`` alone lists the commands; ``HELP <command>`` shows its usage and what it does;
a subject that is not a command gets 524.  Only commands that are in the table are listed,
so the help never offers what the server cannot do.
"""

from __future__ import annotations

from typing import Any

from protocols.irc import numerics as n
from protocols.irc.commands import COMMANDS, command

# Usage, then what it does (one line each; long lines are fine, the reply is fitted).
HELP_TEXT: dict[str, tuple[str, ...]] = {
    "ADMIN": ("ADMIN [server]", "Who runs this server."),
    "AUTHENTICATE": (
        "AUTHENTICATE <mechanism|data>",
        "SASL login (PLAIN, SCRAM-SHA-256) after CAP REQ sasl.",
    ),
    "AWAY": ("AWAY [message]", "Mark yourself away with a message; without one, back again."),
    "CAP": ("CAP LS|LIST|REQ|END [302|capabilities]", "Negotiate IRCv3 capabilities."),
    "CHANSERV": (
        "CHANSERV <command> [arguments]",
        "Talk to ChanServ (registered rooms): CHANSERV HELP lists its commands.",
    ),
    "CHATHISTORY": (
        "CHATHISTORY LATEST|BEFORE|AFTER|AROUND <target> <selector> <limit>",
        "CHATHISTORY BETWEEN <target> <selector> <selector> <limit>",
        "CHATHISTORY TARGETS <timestamp> <timestamp> <limit>",
        "Messages of a room you are in, or of your private conversation with a nick (kept for"
        " accounts); a selector is msgid=<id> or timestamp=<time>.",
    ),
    "CS": ("CS <command> [arguments]", "Short for CHANSERV."),
    "INFO": ("INFO [server]", "About this server's software."),
    "INVITE": ("INVITE <nick> <#room>", "Invite someone to a room (past +i)."),
    "ISON": ("ISON <nick> [nick…]", "Which of these nicks are online."),
    "JOIN": ("JOIN <#room>[,#room…] [key[,key…]]", "Join rooms; JOIN 0 leaves them all."),
    "KICK": ("KICK <#room> <nick>[,nick…] [reason]", "Remove someone from a room (operators)."),
    "KILL": ("KILL <nick> [reason]", "Disconnect a user (server operators)."),
    "KLINE": (
        "KLINE <mask> [:reason]",
        "Ban matching users from the server on every protocol (server operators).",
    ),
    "LINKS": ("LINKS [[server] mask]", "The servers of the network: this one."),
    "LIST": ("LIST [#room,…|filters]", "The rooms you can see, with their users and topics."),
    "LUSERS": ("LUSERS", "How many users, operators, unknown connections and rooms."),
    "MARKREAD": (
        "MARKREAD <target> [timestamp=<time>]",
        "Your read position in a room or a private conversation, shared with your other"
        " devices; with a timestamp, move it forward.",
    ),
    "METADATA": (
        "METADATA <target|*> GET|LIST|SET|CLEAR|SUB|UNSUB|SUBS|SYNC [key…] [value]",
        "Read and set metadata of users and rooms (draft/metadata-2): display-name, avatar…",
    ),
    "MODE": (
        "MODE <#room> [+|-modes [arguments]]",
        "MODE <nick> [+|-modes]",
        "Show or change room modes (o v b I i k l m n t s R) or your own (i w B).",
    ),
    "MONITOR": ("MONITOR +|-|C|L|S [nick,…]", "Be told when nicks come online or go offline."),
    "MOTD": ("MOTD [server]", "The message of the day."),
    "NAMES": ("NAMES [#room,…]", "Who is in a room."),
    "NICK": ("NICK <nick>", "Choose or change your nick."),
    "NICKSERV": (
        "NICKSERV <command> [arguments]",
        "Talk to NickServ (accounts): NICKSERV HELP lists its commands.",
    ),
    "NOTICE": ("NOTICE <target>[,target…] <text>", "A message that must not be answered."),
    "NS": ("NS <command> [arguments]", "Short for NICKSERV."),
    "OPER": ("OPER <name> <password>", "Become a server operator."),
    "PART": ("PART <#room>[,#room…] [reason]", "Leave rooms."),
    "PASS": (
        "PASS <password>",
        "The server password, before NICK and USER, when the server has one.",
    ),
    "PING": ("PING <token>", "The server answers PONG with the token."),
    "PONG": ("PONG <token>", "The answer to the server's PING."),
    "PRIVMSG": ("PRIVMSG <target>[,target…] <text>", "Send a message to rooms or nicks."),
    "QUIT": ("QUIT [reason]", "Leave the server."),
    "REDACT": (
        "REDACT <target> <msgid> [reason]",
        "Remove a message: your own, or any in a room you operate (draft/message-redaction).",
    ),
    "REGISTER": (
        "REGISTER <account|*> <email|*> <password>",
        "Register your nick as an account (draft/account-registration).",
    ),
    "SETNAME": ("SETNAME <realname>", "Change your real name."),
    "STATS": ("STATS <letter>", "STATS k lists the server bans (server operators)."),
    "TAGMSG": ("TAGMSG <target>", "Send only message tags (typing, reactions)."),
    "TIME": ("TIME [server]", "The server's time."),
    "TOPIC": ("TOPIC <#room> [topic]", "Show or set a room's topic."),
    "UNKLINE": ("UNKLINE <mask>", "Lift a server ban set at run time (server operators)."),
    "USER": ("USER <username> 0 * <realname>", "Your username and real name, when connecting."),
    "USERHOST": ("USERHOST <nick> [nick…]", "The user@host of nicks."),
    "VERIFY": ("VERIFY <account> <code>", "Accounts here need no verification."),
    "VERSION": ("VERSION [server]", "The server's software and ISUPPORT tokens."),
    "WALLOPS": ("WALLOPS <text>", "A message to every +w user (server operators)."),
    "WEBIRC": (
        "WEBIRC <password> <gateway> <hostname> <ip>",
        "A web gateway names its user's address, before NICK and USER ([[webirc]]).",
    ),
    "WHO": ("WHO <mask|#room> [%fields]", "Users matching a mask, or in a room (WHOX)."),
    "WHOIS": ("WHOIS <nick>", "About a user."),
    "WHOWAS": ("WHOWAS <nick>", "About a user who has left."),
}
HELP_TEXT["HELP"] = ("HELP [command]", "This help; HELPOP is the same.")
HELP_TEXT["HELPOP"] = HELP_TEXT["HELP"]


def _index() -> tuple[str, ...]:
    """The commands of the table, several to a line."""
    names = sorted(COMMANDS)
    lines = [
        "Commands (HELP <command> for more):",
        *(" ".join(names[i : i + 10]) for i in range(0, len(names), 10)),
    ]
    return tuple(lines)


@command("HELP")
def help_(conn: Any, msg: Any) -> None:
    subject = msg.params[0].upper() if msg.params and msg.params[0] else ""
    if subject:
        text = HELP_TEXT.get(subject) if subject in COMMANDS else None
        if text is None:
            conn.reply(n.ERR_HELPNOTFOUND, msg.params[0], "No help available on this topic")
            return
    else:
        subject, text = "*", _index()
    conn.reply(n.RPL_HELPSTART, subject, text[0])
    for line in text[1:]:
        conn.reply(n.RPL_HELPTXT, subject, line)
    conn.reply(n.RPL_ENDOFHELP, subject, "End of /HELP")


command("HELPOP")(help_)
