"""XMPP over WebSocket (RFC 7395): a stream whose every message is one whole element.

The XMPP connection under it is the TCP one, unchanged: this framing turns the client's
``<open/>`` and ``<close/>`` into the stream header and footer its parser expects, and cuts
what it writes into one message per top-level element:

* the stream header becomes ``<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' .../>``
  and ``</stream:stream>`` becomes ``<close .../>``;
* ``stream:features`` and ``stream:error`` declare the ``stream`` prefix themselves, and
  stanzas declare ``jabber:client``, since no stream element around them does;
* a whitespace keep-alive is not XML a message may carry: it becomes a WebSocket ping.

Only the server's own output is cut, never the client's: it has no comments, processing
instructions or CDATA, and escapes ``<`` and ``>`` in text and attributes, so its tags are
found by a scan for ``<...>``.
"""

from __future__ import annotations

import re

from lxml import etree

from protocols.xmpp.stanzas import NS_CLIENT, NS_STREAMS

NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"

_TAG = re.compile(rb"<(/?)([^\s/>]+)[^>]*?(/?)>")
_ATTRIBUTE = re.compile(rb"""\s([\w:.-]+)=(?:'([^']*)'|"([^"]*)")""")
_FRAMING_TAG = re.compile(rb"\A\s*<(open|close)[\s/>]")
_DECLARATION = re.compile(rb"\A\s*<\?xml[^>]*\?>")
# The parser the client's <open/> is read with: one small element, nothing to resolve.
_OPEN_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
)
# Stream-header attributes carried from <open/> to the header the connection reads.
_OPEN_ATTRIBUTES = ("to", "from", "version", "{http://www.w3.org/XML/1998/namespace}lang")


def _attr(name: str, value: str) -> str:
    from xml.sax.saxutils import quoteattr

    return f" {name}={quoteattr(value)}"


class XmppFraming:
    """Messages to stream bytes and back, for one XMPP-over-WebSocket connection."""

    __slots__ = ()

    # -- what the client sent -------------------------------------------------------------

    def inbound(self, message: bytes) -> bytes:
        match = _FRAMING_TAG.match(message)
        if match is None:
            # A stanza (or SASL, bind...): the stream parser checks it like any other.
            return message
        try:
            element = etree.fromstring(message, _OPEN_PARSER)
        except etree.XMLSyntaxError:
            # The stream parser reports it: not-well-formed.
            return message
        if element.tag == f"{{{NS_FRAMING}}}close":
            return b"</stream:stream>"
        if element.tag != f"{{{NS_FRAMING}}}open":
            return message
        attributes = "".join(
            _attr("xml:lang" if name.startswith("{") else name, element.get(name, ""))
            for name in _OPEN_ATTRIBUTES
            if element.get(name) is not None
        )
        header = f"<stream:stream xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAMS}'{attributes}>"
        return header.encode("utf-8")

    # -- what the server writes ------------------------------------------------------------

    def outbound(self, data: bytes) -> list[bytes]:
        data = _DECLARATION.sub(b"", data, count=1)
        messages: list[bytes] = []
        depth = 0
        start = 0
        for tag in _TAG.finditer(data):
            closing, name, empty = tag.group(1), tag.group(2), tag.group(3)
            if name == b"stream:stream":
                if closing:
                    messages.append(f"<close xmlns='{NS_FRAMING}'/>".encode())
                else:
                    messages.append(_open_from_header(tag.group(0)))
                start = tag.end()
                continue
            if closing:
                depth -= 1
            elif not empty:
                depth += 1
            if depth == 0:
                messages.append(_declare(data[start : tag.end()].strip()))
                start = tag.end()
        return messages


def _open_from_header(header: bytes) -> bytes:
    attributes = [
        (name, single if single is not None else double)
        for name, single, double in (
            (m.group(1).decode(), m.group(2), m.group(3)) for m in _ATTRIBUTE.finditer(header)
        )
        if not name.startswith("xmlns")
    ]
    text = "".join(f" {name}='{value.decode()}'" for name, value in attributes)
    return f"<open xmlns='{NS_FRAMING}'{text}/>".encode()


def _declare(element: bytes) -> bytes:
    """An element that stood inside the stream, with the namespace it inherited there."""
    end = _TAG.match(element)
    if end is None:
        return element
    head = element[: end.end()]
    name = end.group(2)
    if name.startswith(b"stream:"):
        if b"xmlns:stream=" in head:
            return element
        insert = f" xmlns:stream='{NS_STREAMS}'".encode()
    elif b"xmlns=" in head:
        return element
    else:
        insert = f" xmlns='{NS_CLIENT}'".encode()
    at = 1 + len(name)
    return element[:at] + insert + element[at:]
