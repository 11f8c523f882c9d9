"""Namespaces and element builders shared by every XMPP module.

Stanzas inside a stream are in the ``jabber:client`` namespace.  The stream layer strips that
namespace from what it parses, and the builders here never add it, so handlers always see and
make plain ``message`` / ``presence`` / ``iq`` / ``body`` tags, while payloads keep their own
namespace (``{urn:xmpp:ping}ping``).  Each namespaced element is built with its namespace as
the default (``xmlns='...'``), never with a generated prefix: some clients mishandle prefixes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from xml.sax.saxutils import quoteattr

from lxml import etree

NS_CLIENT = "jabber:client"
NS_STREAMS = "http://etherx.jabber.org/streams"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_ROSTER = "jabber:iq:roster"
NS_ROSTER_VER = "urn:xmpp:features:rosterver"
NS_PRE_APPROVAL = "urn:xmpp:features:pre-approval"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_PING = "urn:xmpp:ping"
NS_VERSION = "jabber:iq:version"
NS_REGISTER = "jabber:iq:register"
NS_REGISTER_FEATURE = "http://jabber.org/features/iq-register"
NS_DATA = "jabber:x:data"
NS_DELAY = "urn:xmpp:delay"
NS_STANZA_ID = "urn:xmpp:sid:0"
NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_MUC_ADMIN = "http://jabber.org/protocol/muc#admin"
NS_MUC_OWNER = "http://jabber.org/protocol/muc#owner"
NS_XML = "http://www.w3.org/XML/1998/namespace"
# Message replies (XEP-0461) and corrections (XEP-0308), mapped to IRC client tags.
NS_REPLY = "urn:xmpp:reply:0"
NS_CORRECT = "urn:xmpp:message-correct:0"

STANZA_KINDS = frozenset({"message", "presence", "iq"})

# Characters XML 1.0 cannot carry at all, not even escaped: most C0 controls (IRC's bold and
# colour codes among them), lone surrogates and U+FFFE/U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(text: str) -> str:
    """``text`` without the characters XML cannot carry (text from IRC often has some)."""
    return _NOT_XML.sub("", text)


# IRC formatting: colour codes with their numbers (mIRC and hex), and the toggles.
_IRC_FORMATTING = re.compile(
    "\x03(?:\\d{1,2}(?:,\\d{1,2})?)?|\x04(?:[0-9a-fA-F]{6}(?:,[0-9a-fA-F]{6})?)?"
    "|[\x02\x0f\x11\x16\x1d\x1e\x1f]"
)


def plain_text(text: str) -> str:
    """Message text from any protocol as XMPP shows it: IRC formatting codes (and their
    colour numbers) removed, rather than leaving ``04red`` behind."""
    return _IRC_FORMATTING.sub("", text)


def element(
    tag: str,
    attrib: Mapping[str, str | None] | None = None,
    *,
    ns: str | None = None,
    text: str | None = None,
    children: Iterable[etree._Element] = (),
) -> etree._Element:
    """A new element ``tag`` in namespace ``ns`` (declared as the default namespace).

    Attributes whose value is None are left out, so optional ones can be passed inline.
    Text and attribute values pass through :func:`xml_safe`.
    """
    if ns is None:
        el = etree.Element(tag)
    else:
        el = etree.Element(f"{{{ns}}}{tag}", nsmap={None: ns})
    if attrib:
        for key, value in attrib.items():
            if value is not None:
                el.set(key, xml_safe(value))
    if text is not None:
        el.text = xml_safe(text)
    for child in children:
        el.append(child)
    return el


def sub(
    parent: etree._Element,
    tag: str,
    attrib: Mapping[str, str | None] | None = None,
    *,
    ns: str | None = None,
    text: str | None = None,
) -> etree._Element:
    """Append a child; with ``ns`` None it takes the parent's namespace (as XML would)."""
    parent_ns = etree.QName(parent).namespace
    if ns is None:
        ns = parent_ns
    qname = tag if ns is None else f"{{{ns}}}{tag}"
    nsmap = None if ns == parent_ns or ns is None else {None: ns}
    child = etree.SubElement(parent, qname, nsmap=nsmap)
    for key, value in (attrib or {}).items():
        if value is not None:
            child.set(key, xml_safe(value))
    if text is not None:
        child.text = xml_safe(text)
    return child


def to_bytes(el: etree._Element) -> bytes:
    """UTF-8 serialization of one element, without an XML declaration or its tail."""
    return etree.tostring(el, encoding="utf-8", xml_declaration=False, with_tail=False)


def splice_to(data: bytes, to: str) -> bytes:
    """Add ``to='...'`` to a rendered top-level element (``<message ...``): the one part of
    a fanned-out stanza that differs per recipient."""
    space = data.index(b" ")
    return data[: space + 1] + b"to=" + quoteattr(to).encode("utf-8") + b" " + data[space + 1 :]


def kind_of(stanza: etree._Element) -> str:
    """``message``, ``presence``, ``iq`` (or another local name for non-stanza elements)."""
    return etree.QName(stanza).localname


def type_of(stanza: etree._Element) -> str:
    """The stanza type with the RFC 6121 defaults: message ``normal``, presence ``available``."""
    value = stanza.get("type")
    if value:
        return value
    kind = kind_of(stanza)
    if kind == "message":
        return "normal"
    if kind == "presence":
        return "available"
    return ""


def payload(stanza: etree._Element) -> etree._Element | None:
    """The first child in a namespace of its own (an IQ's query, a message's extension)."""
    for child in stanza:
        if isinstance(child.tag, str) and etree.QName(child).namespace is not None:
            return child
    return None


def namespaces_of(stanza: etree._Element) -> list[str]:
    """The namespaces of the stanza's extension children, in document order, once each."""
    seen: list[str] = []
    for child in stanza:
        if not isinstance(child.tag, str):
            continue
        ns = etree.QName(child).namespace
        if ns is not None and ns not in seen:
            seen.append(ns)
    return seen


def child_text(stanza: etree._Element, tag: str, ns: str | None = None) -> str | None:
    """Text of the first child ``tag`` (in ``ns``; None: a jabber:client child), or None."""
    child = stanza.find(tag if ns is None else f"{{{ns}}}{tag}")
    if child is None:
        return None
    return child.text or ""


def find(stanza: etree._Element, tag: str, ns: str | None = None) -> etree._Element | None:
    return stanza.find(tag if ns is None else f"{{{ns}}}{tag}")


def iq(type_: str, id_: str, *, to: str | None = None, from_: str | None = None) -> etree._Element:
    return element("iq", {"type": type_, "id": id_, "to": to, "from": from_})


def error_element(error_type: str, condition: str, text: str | None = None) -> etree._Element:
    """An RFC 6120 §8.3 ``<error>`` child: ``error_type`` is cancel, modify, auth, wait or
    continue; ``condition`` a defined condition such as ``service-unavailable``."""
    err = element("error", {"type": error_type})
    err.append(element(condition, ns=NS_STANZAS))
    if text:
        t = element("text", ns=NS_STANZAS, text=text)
        t.set(f"{{{NS_XML}}}lang", "en")
        err.append(t)
    return err


def error_reply(
    stanza: etree._Element, error_type: str, condition: str, text: str | None = None
) -> etree._Element:
    """The error reply to ``stanza``: same kind and id, from/to swapped, type ``error``.

    The original payload is not echoed back: RFC 6120 allows leaving it out, and echoing a
    large stanza would double its cost.
    """
    reply = element(
        kind_of(stanza),
        {
            "type": "error",
            "id": stanza.get("id"),
            "from": stanza.get("to"),
            "to": stanza.get("from"),
        },
    )
    reply.append(error_element(error_type, condition, text))
    return reply


# Default error type of each RFC 6120 §8.3.3 condition, so callers name only the condition.
ERROR_TYPES: dict[str, str] = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "forbidden": "auth",
    "gone": "cancel",
    "internal-server-error": "cancel",
    "item-not-found": "cancel",
    "jid-malformed": "modify",
    "not-acceptable": "modify",
    "not-allowed": "cancel",
    "not-authorized": "auth",
    "policy-violation": "modify",
    "recipient-unavailable": "wait",
    "redirect": "modify",
    "registration-required": "auth",
    "remote-server-not-found": "cancel",
    "remote-server-timeout": "wait",
    "resource-constraint": "wait",
    "service-unavailable": "cancel",
    "subscription-required": "auth",
    "undefined-condition": "cancel",
    "unexpected-request": "wait",
}
