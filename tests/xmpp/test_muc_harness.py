"""A minimal XMPP connection for multi-user chat protocol tests, and checks of the harness.

``Occupant`` offers what room handlers use of an XMPP connection (the attributes and methods
documented on ``XmppConnection``) over a real ChatService on a fake clock, and routes its
stanzas through the real router, so the tests exercise the real handlers and renderers
without a stream.  Other protocols' users are plain recording clients.
"""

from __future__ import annotations

from typing import Any

from lxml import etree
from zope.interface import implementer

from chatserver.core.events import (
    AccountChange,
    Away,
    Invite,
    Join,
    Kick,
    Message,
    ModeChange,
    NickChange,
    Part,
    Quit,
    Redaction,
    TagMessage,
    Topic,
)
from chatserver.core.interfaces import IChatClient
from chatserver.core.names import casefold
from chatserver.core.service import ChatService
from protocols.xmpp import render as xmpp_render
from protocols.xmpp import router, stanzas
from protocols.xmpp.jid import parse_jid
from protocols.xmpp.muc.render import render_room_event
from tests.core.fakes import FakeClient

DOMAIN = "localhost"
MUC = "conference.localhost"
NS_USER = "http://jabber.org/protocol/muc#user"
NS_MUC = "http://jabber.org/protocol/muc"

ROOM_EVENTS = (Join, Part, Kick, Topic, ModeChange, Invite, NickChange, Quit, Away, AccountChange)


@implementer(IChatClient)
class Occupant:
    protocol = "xmpp"
    address = "127.0.0.1"
    secure = True
    lang = "en"
    echoes_own_messages = True
    echo_at_turn_end = False

    def __init__(
        self, service: ChatService, nick: str, resource: str = "res", account: str | None = None
    ) -> None:
        self.service = service
        self.domain = DOMAIN
        self.muc_domain = MUC
        self.config = None
        self.extra: dict[str, Any] = {}
        self.out: list[bytes] = []
        self.events: list[Any] = []
        # Flood tokens charged past each stanza's own (what its fan-out cost).
        self.flood = self
        self.charged = 0.0
        self.core = service.connect(self)
        if account is not None:
            service.login(self.core, account)
        service.claim_nick(self.core, nick)
        self.resource = resource
        self.bare_jid = f"{casefold(account or nick)}@{DOMAIN}"
        self.jid = f"{self.bare_jid}/{resource}"

    # -- what handlers use ----------------------------------------------------------------

    @property
    def user(self) -> Any:
        return self.core.user

    def send(self, data: Any) -> None:
        self.out.append(data if isinstance(data, bytes) else stanzas.to_bytes(data))

    def send_error(
        self, stanza: Any, error_type: str, condition: str, text: str | None = None
    ) -> None:
        if stanza.get("type") != "error":
            self.send(stanzas.error_reply(stanza, error_type, condition, text))

    def iq_result(self, stanza: Any, payload: Any = None) -> None:
        reply = stanzas.iq("result", stanza.get("id") or "", to=stanza.get("from"))
        if stanza.get("to"):
            reply.set("from", stanza.get("to"))
        if payload is not None:
            reply.append(payload)
        self.send(reply)

    def charge(self, cost: float) -> None:
        """The flood queue's ``charge`` (the occupant is its own flood queue)."""
        self.charged += cost

    def jid_of(self, who: Any) -> str:
        return f"{casefold(who.nick)}@{DOMAIN}"

    def occupant_jid(self, room: str, nick: str) -> str:
        return f"{room}@{MUC}/{nick}"

    # -- IChatClient ----------------------------------------------------------------------

    def deliver(self, event: Any) -> None:
        self.events.append(event)
        if isinstance(event, ROOM_EVENTS) or (isinstance(event, Message) and event.room):
            render_room_event(self, event)
        elif isinstance(event, TagMessage | Redaction) and event.room:
            # Tags and redactions have renderers of their own (protocols.xmpp.tags, .retract).
            xmpp_render.deliver(self, event)

    def deliver_batch(self, batch: Any) -> None:
        for event in batch.messages:
            self.deliver(event)

    def disconnect(self, reason: str) -> None:
        self.events.append(("disconnect", reason))

    # -- test helpers ---------------------------------------------------------------------

    def feed(self, xml: str) -> None:
        """A stanza from the client, as the stream layer hands it on (``from`` stamped)."""
        el = etree.fromstring(xml)
        el.set("from", self.jid)
        if el.get("to"):
            el.set("to", str(parse_jid(el.get("to"))))
        router.dispatch(self, el)

    def take(self) -> list[etree._Element]:
        """Everything sent since the last call, parsed."""
        out, self.out = self.out, []
        return [etree.fromstring(data) for data in out]

    def join(self, room: str, nick: str | None = None, extra: str = "") -> list[etree._Element]:
        self.feed(
            f"<presence to='{room}@{MUC}/{nick or self.user.nick}'>"
            f"<x xmlns='{NS_MUC}'>{extra}</x></presence>"
        )
        return self.take()


def other(service: ChatService, nick: str, protocol: str = "irc") -> tuple[FakeClient, Any]:
    client = FakeClient(protocol=protocol)
    conn = service.connect(client)
    service.claim_nick(conn, nick)
    return client, conn


# -- reading stanzas ----------------------------------------------------------------------


def codes(el: etree._Element) -> set[str]:
    return {s.get("code") for s in el.iterfind(f"{{{NS_USER}}}x/{{{NS_USER}}}status")}


def item(el: etree._Element) -> etree._Element:
    found = el.find(f"{{{NS_USER}}}x/{{{NS_USER}}}item")
    assert found is not None, etree.tostring(el)
    return found


def error_condition(el: etree._Element) -> str:
    assert el.get("type") == "error", etree.tostring(el)
    error = el.find("error")
    assert error is not None
    return etree.QName(error[0]).localname


def kinds(els: list[etree._Element]) -> list[str]:
    return [el.tag for el in els]


def test_occupant_joins_through_the_real_router() -> None:
    from tests.support.memstore import make_service

    service = make_service()
    alice = Occupant(service, "alice")
    out = alice.join("dev")
    assert out[-2].tag == "presence" and "110" in codes(out[-2])
    assert all(el.get("to") == alice.jid for el in out)
