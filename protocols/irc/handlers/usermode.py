"""User modes: ``MODE <own nick> [+iwB-o]`` (221 to query; +o only by OPER, only removable here).

MODE is one command; the channel handler hands nick targets to :func:`user_mode`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatserver.core.events import ModeItem
from protocols.irc import numerics as n
from protocols.irc.modes import USER_MODES, user_mode_string

if TYPE_CHECKING:
    from protocols.irc.connection import IrcConnection
    from protocols.irc.message import IrcMessage


def user_mode(conn: IrcConnection, msg: IrcMessage) -> None:
    user = conn.user
    assert user is not None and conn.core is not None
    target = msg.params[0]
    other = conn.service.find_user(target)
    if other is None:
        conn.reply(n.ERR_NOSUCHNICK, target, "No such nick/channel")
        return
    if other is not user:
        conn.reply(n.ERR_USERSDONTMATCH, "Can't change mode for other users")
        return
    if len(msg.params) < 2:
        conn.reply(n.RPL_UMODEIS, user_mode_string(user.modes))
        return
    items: list[ModeItem] = []
    unknown = False
    adding = True
    for letter in msg.params[1]:
        if letter in "+-":
            adding = letter == "+"
            continue
        name = USER_MODES.get(letter)
        if name is None:
            unknown = True
            continue
        if name == "oper" and adding:
            continue  # only OPER grants it
        items.append(ModeItem(adding, name))
    if unknown:
        conn.reply(n.ERR_UMODEUNKNOWNFLAG, "Unknown MODE flag")
    if items:
        # The change comes back as a UserModeChange event: the MODE line to the user.
        conn.service.set_user_modes(conn.core, items)
