"""Moderation through muc#admin (XEP-0045 §8, §9): kick, ban, voice, operator status, lists.

Roles and affiliations become the core's operations: role ``none`` is a kick; ``participant``
and ``moderator`` are voice and operator status; affiliations ``admin``/``owner`` give
operator status; ``member`` gives voice, or to someone not in the room an invite exception
(the member list of a members-only room); ``outcast`` is a ban (by account when the user has
one, else by nick) followed by a kick; ``none`` takes status, bans and exceptions away.
"""

from __future__ import annotations

from typing import Any

from chatserver.core.errors import BadName, ChatError, NoSuchNick, NotOnRoom
from chatserver.core.events import ModeItem
from chatserver.core.names import (
    ACCOUNT_MASK_PREFIX,
    MUTE_MASK_PREFIX,
    casefold,
    normalize_mask,
    room_key,
)
from chatserver.core.views import RoomView
from protocols.costs import FANOUT
from protocols.xmpp.muc import ns
from protocols.xmpp.muc.build import Element, find
from protocols.xmpp.muc.occupants import affiliation, nick_at, parse_address, role
from protocols.xmpp.router import StanzaError, handler
from protocols.xmpp.stanzas import element, sub


def target_room(conn: Any, iq: Element) -> RoomView:
    """The room an admin or owner query is about; its sender must be one of its operators."""
    address = parse_address(iq.get("to"))
    if address is None or address.nick:
        raise StanzaError("bad-request", "address the room")
    try:
        room = conn.service.get_room(room_key(address.room))
    except BadName:
        raise StanzaError("jid-malformed", "not a valid room name") from None
    if room is None:
        raise StanzaError("item-not-found", "no such room")
    member = room.members.get(conn.user) if conn.user is not None else None
    if member is None or not member.op:
        raise StanzaError("forbidden", "only the room's moderators may do that")
    return room


def about_target(err: ChatError) -> Exception:
    """A refusal naming the user acted on means that user is not there: item-not-found."""
    if isinstance(err, NoSuchNick) or (isinstance(err, NotOnRoom) and err.nick):
        return StanzaError("item-not-found", err.reason)
    return err


@handler("iq", "set", ns.MUC_ADMIN, service="muc", per_delivery=FANOUT)
def on_admin_set(conn: Any, iq: Element) -> None:
    room = target_room(conn, iq)
    query = find(iq, ns.MUC_ADMIN, "query")
    items = list(query.iterfind(f"{{{ns.MUC_ADMIN}}}item")) if query is not None else []
    if not items:
        raise StanzaError("bad-request", "no item to change")
    for item in items:
        try:
            apply_item(conn, room, item)
        except ChatError as err:
            raise about_target(err) from None
    conn.iq_result(iq)


def apply_item(conn: Any, room: RoomView, item: Element) -> None:
    reason_el = find(item, ns.MUC_ADMIN, "reason")
    reason = (reason_el.text or "") if reason_el is not None else ""
    nick = item.get("nick") or nick_at(conn, item.get("jid"))
    if not nick:
        raise StanzaError("bad-request", "say whose role or affiliation to change")
    new_role, new_affiliation = item.get("role"), item.get("affiliation")
    if new_role is not None:
        change_role(conn, room, nick, new_role, reason)
    elif new_affiliation is not None:
        change_affiliation(conn, room, nick, new_affiliation, reason)
    else:
        raise StanzaError("bad-request", "give a role or an affiliation")


def _status_changes(
    room: RoomView, nick: str, op: bool | None, voice: bool | None
) -> list[ModeItem]:
    user = room.find_member(nick)
    if user is None:
        raise StanzaError("item-not-found", f"{nick} is not in the room")
    member = room.members[user]
    changes = []
    if op is not None and member.op != op:
        changes.append(ModeItem(op, "op", user.nick))
    if voice is not None and member.voice != voice:
        changes.append(ModeItem(voice, "voice", user.nick))
    return changes


def _set_modes(conn: Any, room: RoomView, changes: list[ModeItem]) -> None:
    if not changes:
        return
    _applied, errors = conn.service.set_mode(conn.core, room.name, changes)
    if errors:
        raise errors[0]


def change_role(conn: Any, room: RoomView, nick: str, new_role: str, reason: str) -> None:
    if new_role == "none":
        conn.service.kick(conn.core, room.name, nick, reason)
        return
    wanted = {
        "visitor": (False, False),
        # Only a moderated room tells participants from visitors by voice; elsewhere making
        # a moderator a participant takes operator status and nothing more.
        "participant": (False, True if "moderated" in room.flags else None),
        "moderator": (True, None),
    }.get(new_role)
    if wanted is None:
        raise StanzaError("bad-request", f"unknown role {new_role!r}")
    _set_modes(conn, room, _status_changes(room, nick, *wanted))


def user_mask(conn: Any, nick: str) -> str:
    """A ban or invite mask for a user: the account when there is one (a nick is easily
    changed), else the nick."""
    user = conn.service.find_user(nick)
    if user is not None and user.account is not None:
        return f"{ACCOUNT_MASK_PREFIX}{user.account}"
    return normalize_mask(nick)


def _masks_of(conn: Any, nick: str) -> set[str]:
    """Every mask form that names this user, folded, to find list entries to remove."""
    masks = {casefold(normalize_mask(nick)), casefold(ACCOUNT_MASK_PREFIX + nick)}
    user = conn.service.find_user(nick)
    if user is not None and user.account is not None:
        masks.add(casefold(ACCOUNT_MASK_PREFIX + user.account))
    return masks


def change_affiliation(conn: Any, room: RoomView, nick: str, new: str, reason: str) -> None:
    present = room.find_member(nick) is not None
    if new == "outcast":
        bans = [ModeItem(True, "ban", user_mask(conn, nick))]
        if conn.service.find_user(nick) is None:
            # Nobody is on that JID now: it names the account of that name (if it is one)
            # as well as the nick, and an outcast must stay out under both.
            bans.append(ModeItem(True, "ban", f"{ACCOUNT_MASK_PREFIX}{nick}"))
        _set_modes(conn, room, bans)
        if present:
            conn.service.kick(conn.core, room.name, nick, reason)
        return
    if new == "none":
        masks = _masks_of(conn, nick)
        changes = [ModeItem(False, "ban", b.mask) for b in room.bans if casefold(b.mask) in masks]
        changes += [ModeItem(False, "invite", m) for m in room.invites if casefold(m) in masks]
        if present:
            changes += _status_changes(room, nick, False, False)
        _set_modes(conn, room, changes)
        return
    if new == "member" and not present:
        # The member list of a members-only room is its invite exceptions: who may come in.
        _set_modes(conn, room, [ModeItem(True, "invite", user_mask(conn, nick))])
        return
    wanted = {"owner": (True, None), "admin": (True, None), "member": (False, True)}.get(new)
    if wanted is None:
        raise StanzaError("bad-request", f"unknown affiliation {new!r}")
    _set_modes(conn, room, _status_changes(room, nick, *wanted))


@handler("iq", "get", ns.MUC_ADMIN, service="muc")
def on_admin_get(conn: Any, iq: Element) -> None:
    room = target_room(conn, iq)
    query = find(iq, ns.MUC_ADMIN, "query")
    item = find(query, ns.MUC_ADMIN, "item") if query is not None else None
    if item is None:
        raise StanzaError("bad-request", "ask for a role or an affiliation")
    out = element("query", ns=ns.MUC_ADMIN)
    wanted_role, wanted_affiliation = item.get("role"), item.get("affiliation")
    listed: set[str] = set()
    for user, member in room.members.items():
        who = user.who()
        aff = affiliation(room, who, member)
        if (wanted_role is not None and role(room, member) == wanted_role) or (
            wanted_affiliation is not None and aff == wanted_affiliation
        ):
            attrs = {"affiliation": aff, "role": role(room, member), "nick": user.nick}
            sub(out, "item", {**attrs, "jid": conn.jid_of(who)})
            if who.account:
                listed.add(casefold(who.account))
    for account in stored_affiliates(room, wanted_affiliation):
        if casefold(account) not in listed:
            listed.add(casefold(account))
            jid = f"{account}@{conn.domain}"
            sub(out, "item", {"affiliation": wanted_affiliation, "jid": jid})
    # A mute ($m:) keeps its user in the room: not an outcast.
    outcasts = [b.mask for b in room.bans if not b.mask.startswith(MUTE_MASK_PREFIX)]
    masks = {"outcast": outcasts, "member": room.invites}
    for mask in masks.get(wanted_affiliation or "", []):
        masked = mask_jid(conn, mask)
        if masked is not None and casefold(masked.partition("@")[0]) not in listed:
            listed.add(casefold(masked.partition("@")[0]))
            sub(out, "item", {"affiliation": wanted_affiliation, "jid": masked})
    conn.iq_result(iq, out)


def stored_affiliates(room: RoomView, wanted: str | None) -> list[str]:
    """Accounts a registered room remembers with that affiliation, online or not."""
    if not room.registered or wanted is None:
        return []
    owner = casefold(room.owner or "")
    if wanted == "owner":
        return [room.owner] if room.owner else []
    if wanted == "admin":
        return sorted(a for a in room.reg_ops if a != owner)
    if wanted == "member":
        return sorted(a for a in room.reg_voices if a not in room.reg_ops)
    return []


def mask_jid(conn: Any, mask: str) -> str | None:
    """A ban or invite mask as a JID when it names an account or a nick; other masks (by host)
    have no JID form."""
    if mask.startswith(ACCOUNT_MASK_PREFIX):
        name = mask[len(ACCOUNT_MASK_PREFIX) :]
        return f"{name}@{conn.domain}" if "*" not in name and "?" not in name else None
    nick, sep, rest = mask.partition("!")
    if sep and rest == "*@*" and "*" not in nick and "?" not in nick:
        return f"{nick}@{conn.domain}"
    return None
