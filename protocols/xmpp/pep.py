"""Personal eventing (PEP, XEP-0163) on the part of PubSub (XEP-0060) that clients use.

Every account is a PubSub service at its bare JID.  Its owner publishes (creating the node on
first use, configured by ``publish-options``), retracts, reconfigures and deletes; who may
read a node's items is its access model: ``open`` (any user of the server), ``presence``
(the owner's presence subscribers, the default) or ``whitelist`` (the owner alone).
Notifications follow XEP-0163's filtered notifications: a resource gets a node's events when
its entity capabilities (:mod:`protocols.xmpp.caps`) list ``node+notify`` and the node's
owner is itself or a contact whose presence it receives; the last item of each such node is
sent when those capabilities become known (after initial presence).

OMEMO device lists and bundles, bookmarks (XEP-0402), avatars (XEP-0084), nicknames
(XEP-0172) and displayed markers (XEP-0490) are all plain nodes here; XEP-0048's
``storage:bookmarks`` node is made from XEP-0402's (:mod:`protocols.xmpp.bookmarks`).  :class:`PepData` also keeps private XML storage (XEP-0049) and vCards
(XEP-0054), which are nodes of other kinds that only their own modules read.

Each account may keep ``[xmpp] pep_max_items`` items of ``pep_max_bytes`` bytes in all;
a publication past that is refused with ``not-allowed`` (a configured cap is policy: waiting
does not lift it, see :data:`protocols.xmpp.roster.FULL_CONDITION`).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from lxml import etree
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from chatserver.core.names import casefold
from chatserver.core.records import PepItem, PepNode, RosterItem
from protocols.xmpp import bookmarks, stanzas
from protocols.xmpp.jid import try_parse
from protocols.xmpp.router import StanzaError, handler
from protocols.xmpp.stanzas import NS_DATA

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection
    from protocols.xmpp.factory import XmppFactory

log = Logger()

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_PUBSUB_OWNER = "http://jabber.org/protocol/pubsub#owner"
NS_MDS = "urn:xmpp:mds:displayed:0"
NS_PUBSUB_ERRORS = "http://jabber.org/protocol/pubsub#errors"
NS_PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
NS_NODE_CONFIG = "http://jabber.org/protocol/pubsub#node_config"

ACCESS_MODELS = ("open", "presence", "whitelist")
# What an account's bare JID advertises (XEP-0163 §6; clients look for publish-options).
FEATURES = (
    NS_PUBSUB,
    *(
        f"{NS_PUBSUB}#{name}"
        for name in (
            "access-open",
            "access-presence",
            "access-whitelist",
            "auto-create",
            "auto-subscribe",
            "config-node",
            "delete-nodes",
            "filtered-notifications",
            "last-published",
            "persistent-items",
            "publish",
            "publish-options",
            "retract-items",
            "retrieve-items",
        )
    ),
)

NODE_MAX = 1024
ITEM_ID_MAX = 1024
_event_ids = itertools.count(1)

Key = tuple[str, str]  # (kind, node)


class PepData:
    """Loaded personal data by account: ``{casefold(account): {(kind, node): PepNode}}``.

    The store stays the source of truth (every change is written through); accounts are
    forgotten when their last session ends, as rosters are.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self.cache: dict[str, dict[Key, PepNode]] = {}
        self._loading: dict[str, list[Deferred[dict[Key, PepNode]]]] = {}

    def get(self, account: str) -> Deferred[dict[Key, PepNode]]:
        key = casefold(account)
        if key in self.cache:
            return succeed(self.cache[key])
        d: Deferred[dict[Key, PepNode]] = Deferred()
        waiting = self._loading.get(key)
        if waiting is not None:
            waiting.append(d)
            return d
        waiting = self._loading[key] = [d]

        def loaded(nodes: list[PepNode]) -> None:
            self._loading.pop(key, None)
            data = self.cache.setdefault(key, {(n.kind, n.node): n for n in nodes})
            for each in waiting:
                each.callback(data)

        def failed(f: Any) -> None:
            self._loading.pop(key, None)
            for each in waiting:
                each.errback(f)

        self.store.get_pep(account).addCallbacks(loaded, failed)
        return d

    def put(self, account: str, node: PepNode) -> Deferred[None]:
        self.cache.setdefault(casefold(account), {})[(node.kind, node.node)] = node
        if not node.persist_items:
            node = dataclasses.replace(node, items=())
        return self.store.save_pep_node(account, node)

    def delete(self, account: str, kind: str, node: str) -> Deferred[Any]:
        self.cache.get(casefold(account), {}).pop((kind, node), None)
        return self.store.delete_pep_node(account, kind, node)

    def forget(self, account: str) -> None:
        self.cache.pop(casefold(account), None)


# -- limits ---------------------------------------------------------------------------------


def check_limits(
    factory: XmppFactory, data: dict[Key, PepNode], replaced: Key, node: PepNode
) -> None:
    """Raise ``not-allowed`` when storing ``node`` in place of ``replaced`` would take the
    account past ``[xmpp] pep_max_items`` / ``pep_max_bytes``."""
    config = factory.config
    items = len(node.items) if node.persist_items else 0
    size = sum(len(i.payload) for i in node.items) if node.persist_items else 0
    for key, other in data.items():
        if key == replaced or not other.persist_items:
            continue
        items += len(other.items)
        size += sum(len(i.payload) for i in other.items)
    if items > config.pep_max_items:
        raise StanzaError(
            "not-allowed", f"your personal data is full (limit {config.pep_max_items} items)"
        )
    if size > config.pep_max_bytes:
        raise StanzaError(
            "not-allowed", f"your personal data is full (limit {config.pep_max_bytes} bytes)"
        )


def with_item(node: PepNode, item: PepItem, limit: int) -> PepNode:
    """``node`` with ``item`` published (replacing one of the same id) and its oldest items
    dropped past the node's ``max_items`` (0: ``limit``)."""
    keep = node.max_items or limit
    items = [i for i in node.items if i.id != item.id] + [item]
    return dataclasses.replace(node, items=tuple(items[-keep:]))


# -- access and notification ----------------------------------------------------------------


def _subscribers(roster: dict[str, RosterItem]) -> Iterable[str]:
    return (item.jid for item in roster.values() if item.subscription in ("from", "both"))


def may_read(factory: XmppFactory, owner: str, viewer: str, node: PepNode) -> Deferred[bool]:
    """Whether the account with bare JID ``viewer`` may read ``node`` of ``owner``."""
    if casefold(owner) == casefold(viewer) or node.access_model == "open":
        return succeed(True)
    if node.access_model != "presence":
        return succeed(False)
    local = owner.partition("@")[0]
    return factory.rosters.get(local).addCallback(
        lambda roster: casefold(viewer) in {casefold(j) for j in _subscribers(roster)}
    )


def wants(conn: XmppConnection, node: str) -> bool:
    """The resource's capabilities ask for ``node``'s notifications."""
    from protocols.xmpp import caps

    return f"{node}+notify" in caps.features(conn)


def event_message(owner: str, items: etree._Element) -> etree._Element:
    msg = stanzas.element(
        "message", {"from": owner, "type": "headline", "id": f"pep{next(_event_ids)}"}
    )
    event = stanzas.sub(msg, "event", ns=NS_PUBSUB_EVENT)
    event.append(items)
    return msg


def items_element(ns: str, node: str, items: Iterable[PepItem]) -> etree._Element:
    el = stanzas.element("items", {"node": node}, ns=ns)
    for item in items:
        item_el = stanzas.sub(el, "item", {"id": item.id})
        item_el.append(etree.fromstring(item.payload))
    return el


def _send_all(conns: Iterable[XmppConnection], el: etree._Element) -> None:
    data: bytes | None = None
    for conn in conns:
        if data is None:
            data = stanzas.to_bytes(el)
        conn.send(stanzas.splice_to(data, conn.jid or ""))


def notify_owner(
    factory: XmppFactory, owner: str, node: str, items: etree._Element
) -> etree._Element:
    """Send an event to the resources of ``owner`` (a bare JID) whose capabilities ask for
    ``node``; the event message, for others."""
    msg = event_message(owner, items)
    _send_all([c for c in factory.available(owner) if wants(c, node)], msg)
    return msg


def notify(
    factory: XmppFactory, owner_conn: XmppConnection, node: PepNode, items: etree._Element
) -> Deferred[Any]:
    """Send an event to the owner's resources and, unless the node is the owner's alone, to
    its presence subscribers' resources, each when its capabilities ask for the node."""
    owner = owner_conn.bare_jid or ""
    msg = notify_owner(factory, owner, node.node, items)
    if node.access_model == "whitelist":
        return succeed(None)
    assert owner_conn.account is not None

    def send(roster: dict[str, RosterItem]) -> None:
        for jid in _subscribers(roster):
            _send_all([c for c in factory.available(jid) if wants(c, node.node)], msg)

    return factory.rosters.get(owner_conn.account).addCallback(send)


def last_items(conn: XmppConnection, nodes: frozenset[str]) -> Deferred[Any] | None:
    """Send ``conn`` the last item of each node in ``nodes`` (node names it newly asks to be
    notified of) of its own account and of each contact whose presence it receives."""
    if not nodes or not conn.available or conn.account is None:
        return None
    factory = conn.factory
    viewer = conn.bare_jid or ""
    account = conn.account

    def owners(roster: dict[str, RosterItem]) -> Deferred[Any]:
        jids = [viewer] + [
            item.jid for item in roster.values() if item.subscription in ("to", "both")
        ]
        pending = [_last_of(conn, jid, nodes) for jid in jids]
        return pending[-1] if pending else succeed(None)

    return factory.rosters.get(account).addCallback(owners)


def _last_of(conn: XmppConnection, owner: str, nodes: frozenset[str]) -> Deferred[Any]:
    factory = conn.factory
    local = owner.partition("@")[0]

    def send(data: dict[Key, PepNode]) -> None:
        if bookmarks.NS_LEGACY in nodes and casefold(owner) == casefold(conn.bare_jid or ""):
            # XEP-0048 over PEP has no node of its own here: it is made from XEP-0402's.
            msg = event_message(owner, bookmarks.legacy_item(data.get(bookmarks.KEY)))
            msg.set("to", conn.jid or "")
            conn.send(msg)
        for (kind, name), node in list(data.items()):
            if kind != "pep" or name not in nodes or not node.items:
                continue
            last = node.items[-1]

            def allowed(ok: bool, node: PepNode = node, last: PepItem = last) -> None:
                if ok and conn.jid is not None:
                    msg = event_message(owner, items_element(NS_PUBSUB_EVENT, node.node, [last]))
                    msg.set("to", conn.jid)
                    conn.send(msg)

            may_read(factory, owner, conn.bare_jid or "", node).addCallback(allowed)

    return factory.pep.get(local).addCallback(send)


# -- the IQ handlers ------------------------------------------------------------------------


def _owner(conn: XmppConnection, stanza: etree._Element) -> str:
    """The bare JID of the service addressed (the sender's own when ``to`` is absent)."""
    to = try_parse(stanza.get("to"))
    if to is None:
        return conn.bare_jid or ""
    if to.local is None:
        # The server itself hosts no PubSub nodes, only its accounts do.
        raise StanzaError("service-unavailable")
    return to.bare


def _only_child(el: etree._Element) -> etree._Element:
    children = [c for c in el if isinstance(c.tag, str)]
    if len(children) != 1:
        raise StanzaError("bad-request", "one action per request")
    return children[0]


def _node_name(el: etree._Element) -> str:
    name = el.get("node") or ""
    if not name:
        raise _pubsub_error("modify", "not-acceptable", "nodeid-required")
    if len(name) > NODE_MAX:
        raise StanzaError("not-acceptable", "node name too long")
    return name


def _pubsub_error(
    error_type: str, condition: str, pubsub: str, text: str | None = None
) -> StanzaError:
    """A stanza error with a PubSub condition child (XEP-0060 §7-8)."""
    return StanzaError(condition, text, error_type, app=(NS_PUBSUB_ERRORS, pubsub))


def _account_of(owner: str) -> str:
    return owner.partition("@")[0]


@handler("iq", "get", NS_PUBSUB)
def get(conn: XmppConnection, stanza: etree._Element) -> Deferred[Any]:
    owner = _owner(conn, stanza)
    query = stanzas.payload(stanza)
    assert query is not None
    action = _only_child(query)
    if etree.QName(action).localname != "items":
        raise StanzaError("feature-not-implemented", "only items are retrieved here")
    name = _node_name(action)
    own = casefold(owner) == casefold(conn.bare_jid or "")
    if own and name in (bookmarks.NS_BOOKMARKS, bookmarks.NS_LEGACY):
        # A client that reads its bookmarks joins their autojoin rooms itself.
        from protocols.xmpp import autojoin

        autojoin.read(conn)
    if name == bookmarks.NS_LEGACY and own:
        return bookmarks.read_legacy_pep(conn, stanza)
    wanted = [i.get("id") for i in action.findall(f"{{{NS_PUBSUB}}}item") if i.get("id")]
    max_items = action.get("max_items")
    if max_items is not None and (
        not (max_items.isascii() and max_items.isdigit()) or int(max_items) < 1
    ):
        raise StanzaError("bad-request", "max_items is a positive number")

    def found(data: dict[Key, PepNode]) -> Deferred[Any]:
        node = data.get(("pep", name))
        if node is None:
            if casefold(owner) != casefold(conn.bare_jid or ""):
                raise StanzaError("item-not-found", "no such node")
            # The owner's own node that does not exist yet reads as empty: clients (Profanity)
            # publish their first OMEMO device list only once they have read the current one.
            node = PepNode(node=name)

        def allowed(ok: bool) -> None:
            if not ok:
                raise _pubsub_error(
                    "auth",
                    "not-authorized",
                    "presence-subscription-required"
                    if node.access_model == "presence"
                    else "closed-node",
                )
            items = list(node.items)
            if wanted:
                items = [i for i in items if i.id in wanted]
            elif max_items is not None:
                items = items[-int(max_items) :]
            # Newest first, as XEP-0060 §6.5.7 shows and Prosody answers.
            result = stanzas.element("pubsub", ns=NS_PUBSUB)
            result.append(items_element(NS_PUBSUB, name, reversed(items)))
            conn.iq_result(stanza, result)

        return may_read(conn.factory, owner, conn.bare_jid or "", node).addCallback(allowed)

    return conn.factory.pep.get(_account_of(owner)).addCallback(found)


def _own(conn: XmppConnection, stanza: etree._Element) -> str:
    owner = _owner(conn, stanza)
    if casefold(owner) != casefold(conn.bare_jid or ""):
        raise StanzaError("forbidden", "only the owner changes its nodes")
    assert conn.account is not None
    return conn.account


def _form_values(form: etree._Element | None, form_type: str) -> dict[str, str]:
    """The fields of a submitted data form (the first value of each), checked for its type."""
    if form is None:
        return {}
    values: dict[str, str] = {}
    for field in form.findall(f"{{{NS_DATA}}}field"):
        var = field.get("var")
        if var:
            values[var] = field.findtext(f"{{{NS_DATA}}}value") or ""
    declared = values.pop("FORM_TYPE", form_type)
    if declared != form_type:
        raise StanzaError("bad-request", f"the form's FORM_TYPE is not {form_type}")
    return values


def _options(values: dict[str, str], limit: int) -> dict[str, Any]:
    """Node settings from form values (unknown fields are ignored: clients send more than
    this server keeps, such as ``pubsub#send_last_published_item``)."""
    out: dict[str, Any] = {}
    access = values.get("pubsub#access_model")
    if access is not None:
        if access not in ACCESS_MODELS:
            raise StanzaError("not-acceptable", f"access model {access!r} is not supported")
        out["access_model"] = access
    persist = values.get("pubsub#persist_items")
    if persist is not None:
        if persist not in ("0", "1", "true", "false"):
            raise StanzaError("bad-request", "persist_items is a boolean")
        out["persist_items"] = persist in ("1", "true")
    max_items = values.get("pubsub#max_items")
    if max_items is not None:
        if max_items == "max":
            out["max_items"] = 0
        elif max_items.isascii() and max_items.isdigit() and int(max_items) >= 1:
            out["max_items"] = min(int(max_items), limit)
        else:
            raise StanzaError("bad-request", "max_items is a positive number or 'max'")
    return out


@handler("iq", "set", NS_PUBSUB)
def set_(conn: XmppConnection, stanza: etree._Element) -> Deferred[Any]:
    account = _own(conn, stanza)
    query = stanzas.payload(stanza)
    assert query is not None
    actions = [c for c in query if isinstance(c.tag, str)]
    if not actions:
        raise StanzaError("bad-request", "no action")
    action = actions[0]
    verb = etree.QName(action).localname
    if verb == "publish":
        rest = actions[1:]
        options_el = rest[0] if rest else None
        if options_el is not None and (
            etree.QName(options_el).localname != "publish-options" or len(rest) > 1
        ):
            raise StanzaError("bad-request", "publish takes only publish-options")
        return _publish(conn, stanza, account, action, options_el)
    if len(actions) != 1:
        raise StanzaError("bad-request", "one action per request")
    if verb == "retract":
        return _retract(conn, stanza, account, action)
    raise StanzaError("feature-not-implemented", f"{verb} is not supported on PEP nodes")


def _publish(
    conn: XmppConnection,
    stanza: etree._Element,
    account: str,
    action: etree._Element,
    options_el: etree._Element | None,
) -> Deferred[Any]:
    factory = conn.factory
    name = _node_name(action)
    item_els = [c for c in action if isinstance(c.tag, str)]
    if len(item_els) > 1:
        raise StanzaError("bad-request", "one item per publication")
    item_el = item_els[0] if item_els else None
    payloads = [c for c in item_el if isinstance(c.tag, str)] if item_el is not None else []
    if len(payloads) != 1:
        raise _pubsub_error("modify", "bad-request", "invalid-payload", "an item has one payload")
    if name == bookmarks.NS_LEGACY:
        # XEP-0048 over PEP: kept as XEP-0402's bookmarks (its item id and options are moot).
        return bookmarks.store_legacy(conn, stanza, payloads[0])
    item_id = (item_el.get("id") if item_el is not None else None) or uuid.uuid4().hex
    if len(item_id) > ITEM_ID_MAX:
        raise StanzaError("not-acceptable", "item id too long")
    form = options_el.find(f"{{{NS_DATA}}}x") if options_el is not None else None
    options = _options(_form_values(form, NS_PUBLISH_OPTIONS), factory.config.pep_max_items)
    payload = copy.deepcopy(payloads[0])
    payload.tail = None
    item = PepItem(item_id, stanzas.to_bytes(payload).decode("utf-8"), factory.clock.seconds())

    def publish(data: dict[Key, PepNode]) -> Deferred[Any]:
        node = data.get(("pep", name))
        if node is None:
            node = PepNode(node=name, **options)
        elif any(getattr(node, key) != value for key, value in options.items()):
            raise _pubsub_error(
                "cancel",
                "conflict",
                "precondition-not-met",
                "the node's configuration differs from the publish-options",
            )
        node = with_item(node, item, factory.config.pep_max_items)
        check_limits(factory, data, ("pep", name), node)
        d = factory.pep.put(account, node)

        def saved(_: Any) -> None:
            result = stanzas.element("pubsub", ns=NS_PUBSUB)
            published = stanzas.sub(result, "publish", {"node": name})
            stanzas.sub(published, "item", {"id": item_id})
            conn.iq_result(stanza, result)
            event = items_element(NS_PUBSUB_EVENT, name, [item])
            # Who published (XEP-0060 §7.1.2.3), as Prosody says it of an owner's publication.
            event[0].set("publisher", conn.bare_jid or "")
            notify(factory, conn, node, event)
            if name == bookmarks.NS_BOOKMARKS:
                bookmarks.changed(factory, conn.bare_jid or "", node)
            elif name == NS_MDS:
                # A displayed marker moves the account's read position on every protocol.
                from protocols.xmpp import mds

                mds.published(conn, item_id, payload)
            # A nickname or an avatar link is metadata other protocols show.
            from protocols.xmpp import metadata

            metadata.published(conn, node, payload)

        return d.addCallback(saved)

    return factory.pep.get(account).addCallback(publish)


def _retract(
    conn: XmppConnection, stanza: etree._Element, account: str, action: etree._Element
) -> Deferred[Any]:
    factory = conn.factory
    name = _node_name(action)
    ids = [i.get("id") or "" for i in action.findall(f"{{{NS_PUBSUB}}}item")]
    if len(ids) != 1 or not ids[0]:
        raise _pubsub_error("modify", "bad-request", "item-required")
    item_id = ids[0]
    tell = action.get("notify") in ("1", "true")

    def retract(data: dict[Key, PepNode]) -> Deferred[Any]:
        node = data.get(("pep", name))
        if node is None:
            raise StanzaError("item-not-found", "no such node")
        if all(i.id != item_id for i in node.items):
            raise StanzaError("item-not-found", "no such item")
        node = dataclasses.replace(node, items=tuple(i for i in node.items if i.id != item_id))

        def saved(_: Any) -> None:
            conn.iq_result(stanza)
            if tell:
                items = stanzas.element("items", {"node": name}, ns=NS_PUBSUB_EVENT)
                stanzas.sub(items, "retract", {"id": item_id})
                notify(factory, conn, node, items)
            if name == bookmarks.NS_BOOKMARKS:
                bookmarks.changed(factory, conn.bare_jid or "", node)

        return factory.pep.put(account, node).addCallback(saved)

    return factory.pep.get(account).addCallback(retract)


# -- owner use cases: configure, delete -----------------------------------------------------


def _config_form(node: PepNode, form_type: str = "form") -> etree._Element:
    form = stanzas.element("x", {"type": form_type}, ns=NS_DATA)
    fields = (
        ("FORM_TYPE", "hidden", NS_NODE_CONFIG),
        ("pubsub#access_model", "list-single", node.access_model),
        ("pubsub#persist_items", "boolean", "1" if node.persist_items else "0"),
        ("pubsub#max_items", "text-single", str(node.max_items) if node.max_items else "max"),
    )
    for var, type_, value in fields:
        field = stanzas.sub(form, "field", {"var": var, "type": type_})
        if var == "pubsub#access_model":
            for model in ACCESS_MODELS:
                option = stanzas.sub(field, "option")
                stanzas.sub(option, "value", text=model)
        stanzas.sub(field, "value", text=value)
    return form


@handler("iq", "get", NS_PUBSUB_OWNER)
def owner_get(conn: XmppConnection, stanza: etree._Element) -> Deferred[Any]:
    account = _own(conn, stanza)
    query = stanzas.payload(stanza)
    assert query is not None
    action = _only_child(query)
    if etree.QName(action).localname != "configure":
        raise StanzaError("feature-not-implemented")
    name = _node_name(action)

    def found(data: dict[Key, PepNode]) -> None:
        node = data.get(("pep", name))
        if node is None:
            raise StanzaError("item-not-found", "no such node")
        result = stanzas.element("pubsub", ns=NS_PUBSUB_OWNER)
        configure = stanzas.sub(result, "configure", {"node": name})
        configure.append(_config_form(node))
        conn.iq_result(stanza, result)

    return conn.factory.pep.get(account).addCallback(found)


@handler("iq", "set", NS_PUBSUB_OWNER)
def owner_set(conn: XmppConnection, stanza: etree._Element) -> Deferred[Any]:
    factory = conn.factory
    account = _own(conn, stanza)
    query = stanzas.payload(stanza)
    assert query is not None
    action = _only_child(query)
    verb = etree.QName(action).localname
    name = _node_name(action)
    if verb == "configure":
        form = action.find(f"{{{NS_DATA}}}x")
        if form is not None and form.get("type") == "cancel":
            conn.iq_result(stanza)
            return succeed(None)
        options = _options(_form_values(form, NS_NODE_CONFIG), factory.config.pep_max_items)

        def configure(data: dict[Key, PepNode]) -> Deferred[Any]:
            node = data.get(("pep", name))
            if node is None:
                raise StanzaError("item-not-found", "no such node")
            node = dataclasses.replace(node, **options)
            keep = node.max_items or factory.config.pep_max_items
            node = dataclasses.replace(node, items=node.items[-keep:])
            check_limits(factory, data, ("pep", name), node)
            return factory.pep.put(account, node).addCallback(lambda _: conn.iq_result(stanza))

        return factory.pep.get(account).addCallback(configure)
    if verb == "delete":

        def delete(data: dict[Key, PepNode]) -> Deferred[Any]:
            node = data.get(("pep", name))
            if node is None:
                raise StanzaError("item-not-found", "no such node")

            def deleted(_: Any) -> None:
                conn.iq_result(stanza)
                event = stanzas.element("delete", {"node": name}, ns=NS_PUBSUB_EVENT)
                notify(factory, conn, node, event)

            return factory.pep.delete(account, "pep", name).addCallback(deleted)

        return factory.pep.get(account).addCallback(delete)
    raise StanzaError("feature-not-implemented", f"{verb} is not supported on PEP nodes")
