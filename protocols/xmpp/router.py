"""Where each stanza goes: one table of handlers keyed by (kind, type, child namespace).

Handlers are small functions registered with :func:`handler`; importing a module registers
its handlers (the factory imports every module of the package, and the ``muc`` package when
present).  :func:`dispatch` is the one place that decides, for a stanza from a bound client:

* addressed to the room service (``conference.<domain>``, ``room@conference.<domain>[/nick]``):
  the ``"muc"`` handlers;
* an IQ to another connected resource (``nick@domain/resource``): forwarded to it as is;
* anything else (the domain, a bare user JID, no ``to``): the ``"server"`` handlers.

Lookup order within a service: ``(kind, type, ns)``, then ``(kind, type, None)``, then
``(kind, None, ns)``, then ``(kind, None, None)``.  For an IQ ``ns`` is its payload's
namespace; for messages and presences each extension child's namespace is tried in order.
Types take the RFC 6121 defaults: a message without a type is ``normal``, a presence without
one ``available``.  An IQ get or set that nobody handles gets ``service-unavailable``; other
unhandled stanzas are ignored (RFC 6120 §8.4).

A handler may raise :class:`StanzaError` (or a core ``ChatError``, mapped by the caller)
to answer with an error; for an IQ it must otherwise answer itself (``conn.iq_result``).
It may return a Deferred; a failure of it is answered the same way.

Each entry also says what its stanzas cost the client's flood budget past their one token:
``per_delivery`` tokens for each event the core delivered while the handler ran (a room
join, nick change or kick reaches every occupant; see :mod:`protocols.costs`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lxml import etree
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatserver.core.errors import ChatError
from protocols.costs import charged
from protocols.xmpp import stanzas
from protocols.xmpp.errors import chat_error_condition
from protocols.xmpp.jid import try_parse

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection

log = Logger()

Handler = Callable[["XmppConnection", etree._Element], "Deferred[Any] | None"]
Key = tuple[str, str | None, str | None]


@dataclass(frozen=True, slots=True)
class Route:
    """One entry of the table: the handler and what its stanzas cost past their token."""

    handler: Handler
    per_delivery: float = 0.0


SERVICES = ("server", "muc")
_TABLES: dict[str, dict[Key, Route]] = {name: {} for name in SERVICES}


class StanzaError(Exception):
    """Raised by a handler to answer the stanza with an RFC 6120 §8.3 error.

    ``error_type`` defaults to the condition's usual type (``stanzas.ERROR_TYPES``);
    ``app`` is an application-specific condition, ``(namespace, tag)``, added to the error
    (such as PubSub's ``precondition-not-met``).
    """

    def __init__(
        self,
        condition: str,
        text: str | None = None,
        error_type: str | None = None,
        app: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(text or condition)
        self.condition = condition
        self.text = text
        self.error_type = error_type or stanzas.ERROR_TYPES.get(condition, "cancel")
        self.app = app


def handler(
    kind: str,
    type_: str | None,
    namespace: str | None,
    *,
    service: str = "server",
    per_delivery: float = 0.0,
) -> Callable[[Handler], Handler]:
    """Register the decorated function for ``(kind, type_, namespace)`` in ``service``.

    ``kind`` is ``message``, ``presence`` or ``iq``; ``type_`` None matches any type and
    ``namespace`` None any payload.  ``service`` is ``"server"`` (the domain and user JIDs)
    or ``"muc"`` (the room service and room JIDs).  Registering a key twice is an error:
    two modules must not silently fight over a stanza.
    """
    if service not in _TABLES:
        raise ValueError(f"unknown service {service!r}")
    key: Key = (kind, type_, namespace)

    def register(func: Handler) -> Handler:
        existing = _TABLES[service].get(key)
        if existing is not None and existing.handler is not func:
            if getattr(existing.handler, "__qualname__", None) != getattr(
                func, "__qualname__", None
            ):
                raise ValueError(f"{service} handler for {key} registered twice")
        _TABLES[service][key] = Route(func, per_delivery)
        return func

    return register


def lookup(service: str, kind: str, type_: str, namespaces: list[str]) -> Route | None:
    """The handler for a stanza (see the module docstring for the order), or None."""
    table = _TABLES[service]
    for ns in namespaces:
        found = table.get((kind, type_, ns))
        if found is not None:
            return found
    found = table.get((kind, type_, None))
    if found is not None:
        return found
    for ns in namespaces:
        found = table.get((kind, None, ns))
        if found is not None:
            return found
    return table.get((kind, None, None))


def registered(service: str = "server") -> dict[Key, Handler]:
    """One service's handlers by key (for disco features and tests)."""
    return {key: route.handler for key, route in _TABLES[service].items()}


def service_for(conn: XmppConnection, to: str | None) -> str:
    """``"muc"`` for the room service and its rooms, else ``"server"``."""
    if not to:
        return "server"
    jid = try_parse(to)
    if jid is not None and jid.domain == conn.muc_domain:
        return "muc"
    return "server"


def dispatch(conn: XmppConnection, stanza: etree._Element) -> None:
    """Route one stanza from a bound client (its ``from`` already stamped)."""
    kind = stanzas.kind_of(stanza)
    type_ = stanzas.type_of(stanza)
    to = stanza.get("to")
    if kind == "iq" and type_ in ("get", "set") and len(stanza) != 1:
        conn.send_error(stanza, "modify", "bad-request", "an IQ get or set has one payload")
        return
    if kind == "iq" and _forward_iq(conn, stanza, to):
        return
    service = service_for(conn, to)
    if kind == "iq":
        namespaces = [ns for ns in stanzas.namespaces_of(stanza)[:1]]
    else:
        namespaces = stanzas.namespaces_of(stanza)
    route = lookup(service, kind, type_, namespaces)
    if route is None:
        if kind == "iq" and type_ in ("get", "set"):
            conn.send_error(stanza, "cancel", "service-unavailable")
        return
    call(conn, route.handler, stanza, route.per_delivery)


def call(
    conn: XmppConnection, func: Handler, stanza: etree._Element, per_delivery: float = 0.0
) -> None:
    """Run a handler, turning raised errors and failed Deferreds into stanza errors."""
    try:
        if per_delivery:
            result = charged(conn.service, per_delivery, conn.flood, lambda: func(conn, stanza))
        else:
            result = func(conn, stanza)
    except Exception as err:
        _answer_error(conn, stanza, err)
        return
    if isinstance(result, Deferred):
        result.addErrback(lambda f: _answer_error(conn, stanza, f.value))


def _answer_error(conn: XmppConnection, stanza: etree._Element, err: BaseException) -> None:
    if stanza.get("type") == "error":
        # Never answer an error with an error (RFC 6120 §8.1): two servers could loop forever.
        return
    if isinstance(err, StanzaError):
        if err.app is None:
            conn.send_error(stanza, err.error_type, err.condition, err.text)
            return
        reply = stanzas.error_reply(stanza, err.error_type, err.condition, err.text)
        error = reply.find("error")
        if error is not None:
            ns, tag = err.app
            stanzas.sub(error, tag, ns=ns)
        conn.send(reply)
        return
    if isinstance(err, ChatError):
        condition = chat_error_condition(err)
        conn.send_error(stanza, stanzas.ERROR_TYPES[condition], condition, err.reason)
        return
    log.failure(
        "handling {kind} from {jid}", Failure(err), kind=stanzas.kind_of(stanza), jid=conn.jid
    )
    conn.send_error(stanza, "cancel", "internal-server-error")


def _forward_iq(conn: XmppConnection, stanza: etree._Element, to: str | None) -> bool:
    """An IQ to another user's full JID goes to that resource unchanged (RFC 6120 §10.5.4)."""
    jid = try_parse(to)
    if jid is None or jid.resource is None or jid.local is None or jid.domain != conn.domain:
        return False
    target = conn.factory.session(jid.bare, jid.resource)
    if target is None:
        if stanzas.type_of(stanza) in ("get", "set"):
            conn.send_error(stanza, "cancel", "service-unavailable")
        return True
    target.send(stanza)
    return True
