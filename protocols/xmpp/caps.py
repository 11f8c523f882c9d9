"""Entity capabilities (XEP-0115): what each client supports, from the ``<c/>`` of its presence.

A client's presence names its capabilities by a hash (``ver``).  The first time a ``ver`` is
seen the server asks that client for its disco#info at ``node#ver``, checks the answer
against the hash and remembers it by ``ver``, so every later client with the same software
costs nothing.  An answer that does not match its hash is used for that connection alone.
PEP (:mod:`protocols.xmpp.pep`) reads the result: ``node+notify`` features choose who gets
which events.  The server's own ``ver`` (:func:`server_ver`) is advertised in stream
features.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from typing import TYPE_CHECKING

from lxml import etree

from protocols.xmpp import stanzas
from protocols.xmpp.router import handler
from protocols.xmpp.stanzas import NS_DATA, NS_DISCO_INFO

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection
    from protocols.xmpp.factory import XmppFactory

NS_CAPS = "http://jabber.org/protocol/caps"
SERVER_NODE = "https://chatserver.invalid/caps"
HASHES = {"sha-1": hashlib.sha1}
# Distinct ``ver`` values remembered; past this the table starts afresh (a client sending a
# new ver in every presence must not grow it without bound).
CACHE_MAX = 2000
# Queries outstanding at once per connection: answers to more are not waited for.
PENDING_MAX = 4

# conn.extra keys: the features of the client, and the ``ver`` they came from.
FEATURES = "caps.features"
VER = "caps.ver"
_ids = itertools.count(1)


def features(conn: XmppConnection) -> frozenset[str]:
    """The client's features as its capabilities say (empty until known)."""
    if conn._extra is None:
        return frozenset()
    return conn._extra.get(FEATURES, frozenset())


def verification_string(info: etree._Element) -> str:
    """The XEP-0115 §5.1 string hashed into ``ver``, from a disco#info query."""
    identities = sorted(
        "/".join(
            (
                el.get("category") or "",
                el.get("type") or "",
                el.get(f"{{{stanzas.NS_XML}}}lang") or "",
                el.get("name") or "",
            )
        )
        for el in info.findall(f"{{{NS_DISCO_INFO}}}identity")
    )
    feats = sorted(el.get("var") or "" for el in info.findall(f"{{{NS_DISCO_INFO}}}feature"))
    text = "".join(f"{s}<" for s in identities) + "".join(f"{s}<" for s in feats)
    forms = []
    for form in info.findall(f"{{{NS_DATA}}}x"):
        fields: dict[str, list[str]] = {}
        for field in form.findall(f"{{{NS_DATA}}}field"):
            var = field.get("var") or ""
            fields[var] = sorted(v.text or "" for v in field.findall(f"{{{NS_DATA}}}value"))
        form_type = fields.pop("FORM_TYPE", [""])
        part = "".join(f"{v}<" for v in form_type)
        for var in sorted(fields):
            part += f"{var}<" + "".join(f"{v}<" for v in fields[var])
        forms.append((form_type, part))
    text += "".join(part for _, part in sorted(forms))
    return text


def ver_of(info: etree._Element, hash_name: str = "sha-1") -> str:
    digest = HASHES[hash_name](verification_string(info).encode("utf-8")).digest()
    return base64.b64encode(digest).decode("ascii")


def server_info(factory: XmppFactory) -> etree._Element:
    """The disco#info the server answers for itself (for its own ``ver``)."""
    from protocols.xmpp import disco

    query = stanzas.element("query", ns=NS_DISCO_INFO)
    disco.server_identity_and_features(factory, query)
    return query


# The server's own ``ver`` by the features it is made of: every stream after login
# advertises it, and a disco#info built and hashed for each was a large part of what a new
# session costs the reactor.  A reload that opens or closes registration changes the
# features, so the key, so the ``ver``.
_server_vers: dict[tuple[str, ...], str] = {}


def server_ver(factory: XmppFactory) -> str:
    from protocols.xmpp import disco

    key = disco.server_features(factory)
    ver = _server_vers.get(key)
    if ver is None:
        ver = _server_vers[key] = ver_of(server_info(factory))
    return ver


def stream_feature(factory: XmppFactory) -> etree._Element:
    """The server's capabilities in stream features (XEP-0115 §6.3)."""
    return stanzas.element(
        "c", {"hash": "sha-1", "node": SERVER_NODE, "ver": server_ver(factory)}, ns=NS_CAPS
    )


def received(conn: XmppConnection, presence: etree._Element) -> None:
    """An available presence from the client: learn its capabilities from its ``<c/>``."""
    c = presence.find(f"{{{NS_CAPS}}}c")
    if c is None:
        return
    ver, node, hash_name = c.get("ver"), c.get("node"), c.get("hash")
    if not ver or not node or hash_name not in HASHES:
        # No hash: legacy caps (before 1.4) name no feature set we could check.
        return
    extra = conn.extra
    if extra.get(VER) == ver:
        return
    factory = conn.factory
    known = factory.caps.get(ver)
    if known is not None:
        _learned(conn, ver, known)
        return
    pending = extra.setdefault("caps.pending", {})
    if len(pending) >= PENDING_MAX or any(v == ver for v, _ in pending.values()):
        return
    qid = f"caps{next(_ids)}"
    pending[qid] = (ver, hash_name)
    query = stanzas.iq("get", qid, to=conn.jid, from_=conn.domain)
    stanzas.sub(query, "query", {"node": f"{node}#{ver}"}, ns=NS_DISCO_INFO)
    conn.send(query)


def _learned(conn: XmppConnection, ver: str, feats: frozenset[str]) -> None:
    from protocols.xmpp import pep

    before = features(conn)
    conn.extra[VER] = ver
    conn.extra[FEATURES] = feats
    new = frozenset(f[: -len("+notify")] for f in feats - before if f.endswith("+notify"))
    pep.last_items(conn, new)


def _answer(conn: XmppConnection, stanza: etree._Element, ok: bool) -> None:
    pending = conn.extra.get("caps.pending")
    qid = stanza.get("id") or ""
    if not pending or qid not in pending or stanza.get("to") not in (None, conn.domain):
        return
    ver, hash_name = pending.pop(qid)
    if not ok:
        return
    info = stanza.find(f"{{{NS_DISCO_INFO}}}query")
    if info is None:
        return
    feats = frozenset(el.get("var") or "" for el in info.findall(f"{{{NS_DISCO_INFO}}}feature"))
    if ver_of(info, hash_name) == ver:
        cache = conn.factory.caps
        if len(cache) >= CACHE_MAX:
            cache.clear()
        cache[ver] = feats
    _learned(conn, ver, feats)


@handler("iq", "result", NS_DISCO_INFO)
def info_result(conn: XmppConnection, stanza: etree._Element) -> None:
    _answer(conn, stanza, True)


@handler("iq", "error", None)
def iq_error(conn: XmppConnection, stanza: etree._Element) -> None:
    """A client could not answer a capabilities query: its ``ver`` stays unknown."""
    _answer(conn, stanza, False)
