"""How the core's room status reads as XEP-0045 roles and affiliations, and room addresses.

The core knows operators and voiced members; XEP-0045 knows roles (for this visit) and
affiliations (lasting).  Operators are moderators; in an unregistered room every operator
has the owner's powers (the room configuration form), so they show as owners there.  In a
registered room the registering account is the owner and the other operators are admins.
Voiced members with an account are members.  In a moderated room, the unvoiced are visitors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chatserver.core.events import Who
from chatserver.core.names import casefold
from chatserver.core.views import MemberView, RoomView
from protocols.xmpp.jid import GUEST_MARK, local_user


@dataclass(frozen=True, slots=True)
class RoomAddress:
    """``room@service/nick`` split: ``room`` is the local part as sent (not yet checked)."""

    room: str
    nick: str | None


def parse_address(jid: str | None) -> RoomAddress | None:
    """Split a room or occupant JID; None for the room service itself (no local part)."""
    if not jid:
        return None
    bare, _, resource = jid.partition("/")
    local, at, _domain = bare.partition("@")
    if not at or not local:
        return None
    return RoomAddress(local, resource or None)


def local_part(jid: str | None) -> str | None:
    """The node of ``name@domain[/resource]`` (an account, or ``~nick`` for a guest)."""
    address = parse_address(jid)
    return address.room if address is not None else None


def nick_at(conn: Any, jid: str | None) -> str | None:
    """The nick of the user a JID of this server names: the one logged in to the account,
    or the guest on ``~nick``; when no one is online there, the name itself."""
    local = local_part(jid)
    if local is None:
        return None
    user = local_user(conn.service, local)
    if user is not None:
        return str(user.nick)
    return local.removeprefix(GUEST_MARK) or None


def role(room: RoomView, member: MemberView | None) -> str:
    if member is None:
        return "none"
    if member.op:
        return "moderator"
    if member.voice or "moderated" not in room.flags:
        return "participant"
    return "visitor"


def affiliation(room: RoomView, who: Who, member: MemberView | None) -> str:
    account = casefold(who.account) if who.account else None
    if account is not None and room.owner is not None and account == casefold(room.owner):
        return "owner"
    if member is not None and member.op:
        return "admin" if room.registered else "owner"
    if account is None:
        return "none"
    if account in room.reg_ops:
        return "admin"
    if account in room.reg_voices or (member is not None and member.voice):
        return "member"
    return "none"


def banned(room: RoomView, who: Who) -> bool:
    return room.is_banned(who) and not room.is_invite_excepted(who)


def occupant_id(conn: Any, room: str, who: Who) -> str:
    """XEP-0421: the same opaque id for the same identity in a room, whatever its nick or
    connection (its account, or for a guest its nick), different in every room."""
    identity = f"account:{casefold(who.account)}" if who.account else f"nick:{casefold(who.nick)}"
    # The server's keyed hash; the prefix keeps these ids apart from address cloaks.
    return conn.service.cloak(f"occupant:{room}/{identity}")
