"""HTTP File Upload (XEP-0363), the XMPP half: the upload service and its slot requests.

The service is a component address, ``upload.<domain>`` (``[upload] service``), listed in the
server's disco#items and describing itself in disco#info (identity ``store/file``, the
``max-file-size`` form).  A slot request gets a PUT and a GET URL from the web listener's
:class:`protocols.web.upload.UploadStore`, or the XEP's errors: ``not-acceptable`` with
``<file-too-large><max-file-size/></file-too-large>``, ``resource-constraint`` (type
``wait``) past the account's quota, ``not-allowed`` for a content type the server does not
take, ``bad-request`` for a malformed request.

The URL travels in the message the client then sends (its body, and ``jabber:x:oob``, which
is relayed with the rest of the stanza): IRC and line-chat users see it in the text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lxml import etree

from protocols.xmpp import stanzas
from protocols.xmpp.jid import try_parse
from protocols.xmpp.router import StanzaError, handler
from protocols.xmpp.stanzas import NS_DATA, NS_DISCO_INFO

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection
    from protocols.xmpp.factory import XmppFactory

NS_UPLOAD = "urn:xmpp:http:upload:0"
NAME = "HTTP File Upload"


def service_domain(factory: XmppFactory) -> str | None:
    """The upload service's address, or None when uploads are off."""
    store = factory.uploads
    if store is None:
        return None
    return (store.config.service or f"upload.{factory.domain}").lower()


def disco_info(factory: XmppFactory, query: etree._Element) -> None:
    """What the upload service says of itself (XEP-0363 §3)."""
    store = factory.uploads
    assert store is not None
    stanzas.sub(query, "identity", {"category": "store", "type": "file", "name": NAME})
    for feature in (NS_DISCO_INFO, NS_UPLOAD):
        stanzas.sub(query, "feature", {"var": feature})
    form = stanzas.sub(query, "x", {"type": "result"}, ns=NS_DATA)
    hidden = stanzas.sub(form, "field", {"var": "FORM_TYPE", "type": "hidden"})
    stanzas.sub(hidden, "value", text=NS_UPLOAD)
    size = stanzas.sub(form, "field", {"var": "max-file-size"})
    stanzas.sub(size, "value", text=str(store.config.max_file_size))


def _refusal(stanza: etree._Element, err: Any, max_size: int) -> etree._Element:
    kind = {
        "too-large": ("modify", "not-acceptable"),
        "quota": ("wait", "resource-constraint"),
        "type": ("cancel", "not-allowed"),
    }.get(err.why, ("modify", "bad-request"))
    reply = stanzas.error_reply(stanza, *kind, err.text)
    if err.why == "too-large":
        error = reply.find("error")
        assert error is not None
        too_large = stanzas.sub(error, "file-too-large", ns=NS_UPLOAD)
        stanzas.sub(too_large, "max-file-size", text=str(max_size))
    return reply


@handler("iq", "get", NS_UPLOAD)
def request_slot(conn: XmppConnection, stanza: etree._Element) -> None:
    from protocols.web.upload import SlotRefused

    domain = service_domain(conn.factory)
    to = try_parse(stanza.get("to"))
    if domain is None or to is None or to.local is not None or to.domain != domain:
        raise StanzaError("service-unavailable", "ask the upload service for slots")
    store = conn.factory.uploads
    request = stanzas.payload(stanza)
    assert request is not None and conn.account is not None
    if etree.QName(request).localname != "request":
        raise StanzaError("bad-request", "a slot is asked for with <request/>")
    filename = request.get("filename") or ""
    size_text = request.get("size") or ""
    if not (size_text.isascii() and size_text.isdigit()):
        raise StanzaError("bad-request", "size is the file's length in bytes")
    content_type = (request.get("content-type") or "application/octet-stream").strip()
    try:
        slot = store.request(conn.account, filename, int(size_text), content_type)
    except SlotRefused as err:
        conn.send(_refusal(stanza, err, store.config.max_file_size))
        return
    result = stanzas.element("slot", ns=NS_UPLOAD)
    stanzas.sub(result, "put", {"url": slot.put_url})
    stanzas.sub(result, "get", {"url": slot.get_url})
    conn.iq_result(stanza, result)
