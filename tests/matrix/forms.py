"""The mapping table as code: how one chat event looks to a client of each protocol.

An :class:`Ev` says what happened, whatever protocol caused it.  :func:`wants` turns it
into what a given viewer must receive: a list of :class:`Want`, each a test over one item of
that viewer's protocol (an IRC line, a line-chat JSON record or text line, an XMPP stanza).
:func:`check` then asserts that each want is met exactly once, in order, within what the
viewer received.  The README's "How each protocol sees the others" is the same table in prose; keep the two
together.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.matrix.clients import (
    NS_CLIENT,
    NS_DELAY,
    NS_SID,
    IrcLine,
    IrcPeer,
    LinePeer,
    Peer,
    XmppPeer,
    address,
    child,
    child_text,
    muc_item,
    q,
    room_jid,
    status_codes,
)

# Mode names (the core's words, as line chat shows them) and their IRC letters.
IRC_LETTER = {
    "op": "o",
    "voice": "v",
    "moderated": "m",
    "invite_only": "i",
    "key": "k",
    "ban": "b",
}
# Modes whose change XMPP announces with status 104 (the room configuration changed).
CONFIG_MODES = {"moderated", "invite_only", "key"}

IRC_LINE_BYTES = 512


@dataclass(frozen=True)
class Ev:
    """One event, protocol-neutral.

    ``kind``: message, action, notice, privmsg, privaction, join, part, quit, nick, topic,
    kick, ban, mode, away, invite.  ``text`` is the message, reason, topic or away text
    (None for "back"); ``target`` the nick acted on; ``mode``/``arg``/``adding`` a mode change;
    ``role`` what XMPP shows of the target's new status after an op/voice change.
    """

    kind: str
    actor: str
    room: str | None = None
    text: str | None = None
    target: str | None = None
    mode: str | None = None
    arg: str | None = None
    adding: bool = True
    new_nick: str | None = None
    role: str | None = None
    affiliation: str | None = None
    # For a kick: whether the target is banned by then (XMPP shows 301 instead of 307).
    banned: bool = False


@dataclass
class Want:
    """One thing a viewer must get: ``test`` picks the items; exactly one must match, unless
    ``verify`` is given, which then judges the list of all the matching items."""

    desc: str
    test: Callable[[Any], bool]
    verify: Callable[[list[Any]], None] | None = field(default=None)


# -- text as each protocol carries it ---------------------------------------------------------

_DISPLAY_CONTROLS = re.compile(
    r"\x03(?:\d{1,2}(?:,\d{1,2})?)?|\x04(?:[0-9a-fA-F]{6}(?:,[0-9a-fA-F]{6})?)?"
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]"
)
_IRC_FORMATTING = re.compile(
    "\x03(?:\\d{1,2}(?:,\\d{1,2})?)?|\x04(?:[0-9a-fA-F]{6}(?:,[0-9a-fA-F]{6})?)?"
    "|[\x02\x0f\x11\x16\x1d\x1e\x1f]"
)
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def text_lines(text: str) -> list[str]:
    """The lines of a message (IRC and line chat carry one line per line)."""
    return text.replace("\r\n", "\n").split("\n")


def display(text: str) -> str:
    """What a terminal user (line chat, text mode) is shown: no controls, no IRC formatting."""
    return _DISPLAY_CONTROLS.sub("", text)


def xmpp_body(text: str) -> str:
    """What an XMPP body carries: no IRC formatting, nothing XML 1.0 cannot hold."""
    return _NOT_XML.sub("", _IRC_FORMATTING.sub("", text))


# -- IRC ------------------------------------------------------------------------------------------


def _irc(actor: str | None, command: str, params: Sequence[str], desc: str) -> Want:
    def test(m: IrcLine) -> bool:
        return (
            isinstance(m, IrcLine)
            and m.command == command
            and (actor is None or m.nick == actor)
            and list(m.params) == list(params)
        )

    return Want(desc, test)


def _irc_text(actor: str, command: str, target: str, text: str, action: bool) -> Want:
    """A message: one PRIVMSG/NOTICE per line of text, cut (or, past an IRC line, split) to
    fit 512 bytes."""
    wanted = [line for line in text_lines(text.replace("\x00", "")) if line]

    def test(m: IrcLine) -> bool:
        return (
            isinstance(m, IrcLine)
            and m.command == command
            and m.nick == actor
            and m.params[:1] == (target,)
        )

    def body(m: IrcLine) -> str:
        if action:
            assert m.last.startswith("\x01ACTION ") and m.last.endswith("\x01"), m.raw
            return m.last[len("\x01ACTION ") : -1]
        return m.last

    # What the sender's own line could hold (``COMMAND target text``): a line of text that
    # fits is relayed as one line, cut at a character boundary when the sender's mask makes
    # it too long; only longer text (from line chat or XMPP) is split into pieces.
    sent_budget = IRC_LINE_BYTES - 2 - len(f"{command} {target} ".encode())
    if action:
        sent_budget -= len("\x01ACTION \x01")

    def verify(lines: list[IrcLine]) -> None:
        for m in lines:
            without_tags = m.raw.split(" ", 1)[1] if m.raw.startswith("@") else m.raw
            size = len(without_tags.encode("utf-8")) + 2
            assert size <= IRC_LINE_BYTES, f"{size}-byte IRC line: {m.raw[:80]}…"
        got = [body(m) for m in lines]
        if all(len(w.encode()) < 400 for w in wanted):
            assert got == wanted, f"IRC lines {got!r}, wanted {wanted!r}"
            return
        assert all(got), "an empty piece"
        i = 0
        for w in wanted:
            if len(w.encode()) <= sent_budget:
                assert i < len(got) and w.startswith(got[i]), f"{got[i:]!r} is not {w!r} cut"
                i += 1
                continue
            # Longer than any IRC line: cut at character boundaries, the pieces are the line.
            start, joined = i, ""
            while joined != w:
                assert i < len(got) and w.startswith(joined + got[i]), "pieces do not add up"
                joined += got[i]
                i += 1
            assert i - start > 1, "a long line was not split"
        assert i == len(got), f"more IRC lines than lines of text: {got[i:]!r}"

    kind = "ACTION" if action else command
    return Want(f"{kind} {target} from {actor}: {text[:40]!r}", test, verify)


def irc_wants(ev: Ev, me: str) -> list[Want]:
    a, r = ev.actor, f"#{ev.room}"
    k = ev.kind
    if k in ("message", "action", "notice"):
        command = "NOTICE" if k == "notice" else "PRIVMSG"
        return [_irc_text(a, command, r, ev.text or "", k == "action")]
    if k in ("privmsg", "privaction"):
        return [_irc_text(a, "PRIVMSG", me, ev.text or "", k == "privaction")]
    if k == "join":
        return [_irc(a, "JOIN", [r], f"JOIN {r} from {a}")]
    if k == "part":
        return [_irc(a, "PART", [r, ev.text] if ev.text else [r], f"PART {r} from {a}")]
    if k == "quit":
        return [_irc(a, "QUIT", [ev.text or ""], f"QUIT from {a}")]
    if k == "nick":
        return [_irc(a, "NICK", [ev.new_nick or ""], f"NICK {a} -> {ev.new_nick}")]
    if k == "topic":
        return [_irc(a, "TOPIC", [r, ev.text or ""], f"TOPIC {r} from {a}")]
    if k == "kick":
        reason = ev.text or a
        return [_irc(a, "KICK", [r, ev.target or "", reason], f"KICK {r} {ev.target} by {a}")]
    if k == "mode":
        sign = "+" if ev.adding else "-"
        params = [r, sign + IRC_LETTER[ev.mode or ""]]
        if ev.arg is not None:
            params.append(ev.arg)
        return [_irc(a, "MODE", params, f"MODE {' '.join(params)} by {a}")]
    if k == "away":
        if a == me:
            # Set from another connection of the same user: the numeric AWAY would answer.
            numeric = "305" if ev.text is None else "306"
            return [
                Want(f"{numeric} for {me}", lambda m: m.command == numeric and m.params[0] == me)
            ]
        params = [ev.text] if ev.text is not None else []
        return [_irc(a, "AWAY", params, f"AWAY from {a}: {ev.text!r}")]
    if k == "invite":
        return [_irc(a, "INVITE", [ev.target or "", r], f"INVITE {ev.target} {r} from {a}")]
    raise ValueError(k)


# -- line chat ------------------------------------------------------------------------------------


def _json(desc: str, **fields: Any) -> Want:
    def test(o: Any) -> bool:
        return (
            isinstance(o, dict)
            and not o.get("history")
            and all(o.get(key) == value for key, value in fields.items())
        )

    return Want(desc, test)


def _line(text: str) -> Want:
    return Want(repr(text), lambda s: s == text)


def line_json_wants(ev: Ev, me: str) -> list[Want]:
    a, r, k = ev.actor, ev.room, ev.kind
    frm = {"from": a}
    if k in ("message", "action", "notice"):
        kind = "privmsg" if k == "message" else k
        return [
            _json(
                f"{k} in {r} from {a}",
                type="message",
                kind=kind,
                room=r,
                to=None,
                text=ev.text,
                **frm,
            )
        ]
    if k in ("privmsg", "privaction"):
        kind = "action" if k == "privaction" else "privmsg"
        return [
            _json(
                f"private {kind} from {a}",
                type="message",
                kind=kind,
                room=None,
                to=me,
                text=ev.text,
                **frm,
            )
        ]
    if k == "join":
        return [_json(f"join {r} by {a}", type="join", room=r, **frm)]
    if k == "part":
        return [_json(f"part {r} by {a}", type="part", room=r, reason=ev.text or "", **frm)]
    if k == "quit":
        return [_json(f"quit of {a}", type="quit", reason=ev.text or "", **frm)]
    if k == "nick":
        return [_json(f"nick {a} -> {ev.new_nick}", type="nick", nick=ev.new_nick, **frm)]
    if k == "topic":
        return [_json(f"topic of {r} by {a}", type="topic", room=r, text=ev.text, **frm)]
    if k == "kick":
        return [
            _json(
                f"kick of {ev.target} by {a}",
                type="kick",
                room=r,
                target=ev.target,
                reason=ev.text or "",
                **frm,
            )
        ]
    if k == "mode":
        arg = ev.arg if ev.arg is not None else None
        change = {"adding": ev.adding, "mode": ev.mode, "arg": arg}
        return [_json(f"mode {change} by {a}", type="mode", room=r, changes=[change], **frm)]
    if k == "away":
        return [_json(f"away of {a}: {ev.text!r}", type="away", text=ev.text, **frm)]
    if k == "invite":
        return [
            _json(f"invite of {ev.target} by {a}", type="invite", room=r, target=ev.target, **frm)
        ]
    raise ValueError(k)


def _reason(text: str | None) -> str:
    return f" ({display(text)})" if text else ""


def line_text_wants(ev: Ev, me: str) -> list[Want]:
    a, r, k = ev.actor, f"#{ev.room}", ev.kind
    if k in ("message", "action", "notice", "privmsg", "privaction"):
        if k == "message":
            head = f"[{r}] <{a}> "
        elif k == "action":
            head = f"[{r}] * {a} "
        elif k == "notice":
            head = f"[{r}] -{a}- "
        elif k == "privaction":
            head = f"* {a} "
        else:
            head = f"*{a}* "
        lines = [head + display(line) for line in text_lines(ev.text or "")]
        return [_line(line) for line in lines]
    if k == "join":
        if a == me:
            return [_line(f"*** you joined {r}")]
        return [_line(f"-!- {a} joined {r}")]
    if k == "part":
        if a == me:
            return [_line(f"*** you left {r}{_reason(ev.text)}")]
        return [_line(f"-!- {a} left {r}{_reason(ev.text)}")]
    if k == "quit":
        return [_line(f"-!- {a} quit{_reason(ev.text)}")]
    if k == "nick":
        if ev.new_nick == me:
            return [_line(f"*** you are now known as {ev.new_nick}")]
        return [_line(f"-!- {a} is now known as {ev.new_nick}")]
    if k == "topic":
        return [_line(f"-!- {a} changed the topic of {r} to: {display(ev.text or '')}")]
    if k == "kick":
        if ev.target == me:
            return [_line(f"*** {a} kicked you from {r}{_reason(ev.text)}")]
        return [_line(f"-!- {a} kicked {ev.target} from {r}{_reason(ev.text)}")]
    if k == "mode":
        sign = "+" if ev.adding else "-"
        change = f"{sign}{ev.mode}"
        if ev.arg is not None and (ev.adding or ev.mode not in ("key",)):
            change += f" {ev.arg}"
        return [_line(f"-!- {a} sets mode {change} on {r}")]
    if k == "away":
        if a == me:
            return [
                _line(
                    "*** you are back"
                    if ev.text is None
                    else f"*** you are away: {display(ev.text)}"
                )
            ]
        if ev.text is None:
            return [_line(f"-!- {a} is back")]
        return [_line(f"-!- {a} is away: {display(ev.text)}")]
    if k == "invite":
        if ev.target == me:
            return [_line(f"-!- {a} invites you to {r}")]
        return [_line(f"-!- {a} invited {ev.target} to {r}")]
    raise ValueError(k)


# -- XMPP -----------------------------------------------------------------------------------------


def _is(el: Any, kind: str) -> bool:
    return isinstance(el, ET.Element) and el.tag == q(NS_CLIENT, kind)


def _occupant(ev_room: str, nick: str) -> str:
    return f"{room_jid(ev_room)}/{nick}"


def _groupchat(room: str, nick: str, body: str, desc: str) -> Want:
    def test(el: Any) -> bool:
        return (
            _is(el, "message")
            and el.get("type") == "groupchat"
            and el.get("from") == _occupant(room, nick)
            and child(el, NS_DELAY, "delay") is None
            and child_text(el, NS_CLIENT, "body") is not None
        )

    def verify(found: list[ET.Element]) -> None:
        assert len(found) == 1, f"{len(found)} groupchat messages for {desc}"
        el = found[0]
        assert child_text(el, NS_CLIENT, "body") == body, (child_text(el, NS_CLIENT, "body"), body)
        sid = child(el, NS_SID, "stanza-id")
        assert sid is not None and sid.get("by") == room_jid(room) and sid.get("id"), (
            "no stanza-id from the room"
        )

    return Want(desc, test, verify)


def _presence(
    room: str,
    nick: str,
    desc: str,
    *,
    unavailable: bool = False,
    codes: frozenset[str] | set[str] = frozenset(),
    absent_codes: frozenset[str] | set[str] = frozenset(),
    role: str | None = None,
    affiliation: str | None = None,
    status: str | bool | None = False,
    show: str | bool | None = False,
    actor: str | None = None,
    reason: str | None = None,
    new_nick: str | None = None,
    jid: str | None = None,
) -> Want:
    """An occupant presence with these properties (False: not checked; None: absent)."""

    def test(el: Any) -> bool:
        if not _is(el, "presence") or el.get("from") != _occupant(room, nick):
            return False
        if (el.get("type") == "unavailable") != unavailable or el.get("type") == "error":
            return False
        item = muc_item(el)
        if item is None:
            return False
        found = status_codes(el)
        if not codes <= found or found & absent_codes:
            return False
        if role is not None and item.get("role") != role:
            return False
        if affiliation is not None and item.get("affiliation") != affiliation:
            return False
        if new_nick is not None and item.get("nick") != new_nick:
            return False
        if jid is not None and (item.get("jid") or "").split("/")[0] != jid:
            return False
        if status is not False and child_text(el, NS_CLIENT, "status") != status:
            return False
        if show is not False and child_text(el, NS_CLIENT, "show") != show:
            return False
        if actor is not None:
            actor_el = item.find(q("http://jabber.org/protocol/muc#user", "actor"))
            if actor_el is None or actor_el.get("nick") != actor:
                return False
        if reason is not None:
            reason_el = item.find(q("http://jabber.org/protocol/muc#user", "reason"))
            if (reason_el.text if reason_el is not None else "") != reason:
                return False
        return True

    return Want(desc, test)


def _self(codes: set[str], me: str, nick: str) -> set[str]:
    """An occupant's own presence carries status 110."""
    return codes | {"110"} if nick == me else codes


def xmpp_wants(ev: Ev, me: str) -> list[Want]:
    a, r, k = ev.actor, ev.room or "", ev.kind
    if k in ("message", "notice"):
        return [_groupchat(r, a, xmpp_body(ev.text or ""), f"groupchat {k} from {a}")]
    if k == "action":
        return [_groupchat(r, a, "/me " + xmpp_body(ev.text or ""), f"groupchat /me from {a}")]
    if k in ("privmsg", "privaction"):
        body = xmpp_body(ev.text or "")
        if k == "privaction":
            body = "/me " + body
        sender = address(a)

        def test(el: Any) -> bool:
            return (
                _is(el, "message")
                and el.get("type") == "chat"
                and el.get("from", "").split("/")[0] == sender
                and child_text(el, NS_CLIENT, "body") is not None
            )

        def verify(found: list[ET.Element]) -> None:
            bodies = [child_text(el, NS_CLIENT, "body") for el in found]
            assert bodies == [body], f"chat bodies {bodies!r}, wanted [{body!r}]"

        return [Want(f"chat from {sender}", test, verify)]
    if k == "join":
        return [
            _presence(r, a, f"presence of {a} joining", codes=_self(set(), me, a), jid=address(a))
        ]
    if k == "part":
        return [
            _presence(
                r,
                a,
                f"unavailable presence of {a} leaving",
                unavailable=True,
                role="none",
                status=xmpp_body(ev.text) if ev.text else None,
                absent_codes={"307", "301", "303"},
            )
        ]
    if k == "quit":
        return [
            _presence(
                r,
                a,
                f"unavailable presence of {a} quitting",
                unavailable=True,
                role="none",
                status=xmpp_body(ev.text) if ev.text else None,
                absent_codes={"307", "301", "303"},
            )
        ]
    if k == "nick":
        new = ev.new_nick or ""
        return [
            _presence(
                r,
                a,
                f"unavailable presence 303 of {a}",
                unavailable=True,
                codes=_self({"303"}, me, new),
                new_nick=new,
            ),
            _presence(r, new, f"presence of {new}", codes=_self(set(), me, new)),
        ]
    if k == "topic":

        def test(el: Any) -> bool:
            return (
                _is(el, "message")
                and el.get("type") == "groupchat"
                and el.get("from") == _occupant(r, a)
                and child_text(el, NS_CLIENT, "subject") == xmpp_body(ev.text or "")
            )

        return [Want(f"subject from {a}", test)]
    if k == "kick":
        target = ev.target or ""
        code = "301" if ev.banned else "307"
        return [
            _presence(
                r,
                target,
                f"unavailable presence {code} of {target}",
                unavailable=True,
                codes=_self({code}, me, target),
                role="none",
                affiliation="outcast" if ev.banned else None,
                actor=a,
                reason=xmpp_body(ev.text or ""),
            )
        ]
    if k == "mode":
        if ev.mode in ("op", "voice"):
            target = ev.target or ""
            return [
                _presence(
                    r,
                    target,
                    f"presence of {target} as {ev.role}",
                    codes=_self(set(), me, target),
                    role=ev.role,
                    affiliation=ev.affiliation,
                )
            ]
        if ev.mode in CONFIG_MODES:

            def test(el: Any) -> bool:
                return (
                    _is(el, "message")
                    and el.get("from") == room_jid(r)
                    and "104" in status_codes(el)
                )

            return [Want("status 104 (configuration changed)", test)]
        if ev.mode == "ban":
            # XEP-0045 tells occupants nothing of the outcast list; the kick that goes with a
            # ban shows it (status 301).
            return []
        raise ValueError(ev.mode)
    if k == "away":
        if ev.text is None:
            return [_presence(r, a, f"presence of {a} back", show=None, status=None)]
        return [_presence(r, a, f"presence of {a} away", show="away", status=xmpp_body(ev.text))]
    if k == "invite":
        if ev.target != me:
            return []

        def test(el: Any) -> bool:
            if not _is(el, "message") or el.get("from") != room_jid(r):
                return False
            x = el.find(q("http://jabber.org/protocol/muc#user", "x"))
            invite = (
                x.find(q("http://jabber.org/protocol/muc#user", "invite"))
                if x is not None
                else None
            )
            return invite is not None and invite.get("from", "").split("/")[0] == address(a)

        return [Want(f"mediated invitation to {r} from {a}", test)]
    raise ValueError(k)


# -- the runner's side ----------------------------------------------------------------------------


def wants(ev: Ev, viewer: Peer) -> list[Want]:
    me = viewer.nick
    if isinstance(viewer, IrcPeer):
        return irc_wants(ev, me)
    if isinstance(viewer, LinePeer):
        return line_json_wants(ev, me) if viewer.json else line_text_wants(ev, me)
    if isinstance(viewer, XmppPeer):
        return xmpp_wants(ev, me)
    raise TypeError(viewer)


def describe(item: Any) -> str:
    if isinstance(item, ET.Element):
        return ET.tostring(item, encoding="unicode")[:400]
    if isinstance(item, IrcLine):
        return item.raw[:300]
    return repr(item)[:300]


def check(viewer: Peer, items: list[Any], expected: list[Want]) -> None:
    """Each want met exactly once (or as its ``verify`` says), in order."""
    last = -1
    for want in expected:
        hits = [i for i, item in enumerate(items) if _passes(want, item)]
        context = "\n  ".join(describe(item) for item in items) or "(nothing)"
        if want.verify is not None:
            assert hits, f"{viewer.label} did not get {want.desc}; got:\n  {context}"
            try:
                want.verify([items[i] for i in hits])
            except AssertionError as err:
                raise AssertionError(
                    f"{viewer.label}, {want.desc}: {err}\ngot:\n  {context}"
                ) from None
        else:
            assert len(hits) == 1, (
                f"{viewer.label} got {want.desc} {len(hits)} times (wanted once); got:\n  {context}"
            )
        assert hits[0] > last, f"{viewer.label}: {want.desc} came out of order"
        last = hits[-1]


def check_none(viewer: Peer, items: list[Any], expected: list[Want]) -> None:
    """None of these arrived."""
    for want in expected:
        hits = [item for item in items if _passes(want, item)]
        assert not hits, f"{viewer.label} got {want.desc} but should not have: {describe(hits[0])}"


def _passes(want: Want, item: Any) -> bool:
    try:
        return bool(want.test(item))
    except (KeyError, TypeError, AttributeError, AssertionError):
        return False
