"""The same scripted XMPP session against two servers, and what each client received.

A script drives :class:`Session`: it logs raw clients in, sends stanzas (byte for byte the same
to both servers), and calls :meth:`Session.settle` after each step, which records what every
client received in that step, normalised:

* values only a server chooses are replaced by ``*``: ids the server made up (client ids all
  start with ``c-`` and are kept: relaying them is the point), ``stanza-id`` ids, timestamps,
  the random part of a resource the server assigned;
* the order of stanzas within one step is not compared where no order is defined (each step's
  stanzas are sorted), nor the order of attributes, nor whitespace between elements.

The transcript is a dict: client name -> steps -> canonical stanza strings, so two runs
compare with ``==`` and pytest shows the difference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from lxml import etree

from tests.support.raw_xmpp import RawXmppClient, collect_all, round_trip

PASSWORD = "correct horse battery"
CLIENT_ID_PREFIX = "c-"
NS_SID = "urn:xmpp:sid:0"
NS_DELAY = "urn:xmpp:delay"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

# A rule applied to each received stanza before it is compared: it takes out (or evens out) a
# difference that protocols/xmpp/README.md ("Differences from Prosody") explains.
Rule = Callable[[etree._Element], None]


def _drop(el: etree._Element, tag: str, when: Callable[[etree._Element], bool]) -> None:
    for child in list(el.iter(tag)):
        parent = child.getparent()
        if parent is not None and when(child):
            parent.remove(child)


def archive_stanza_id(el: etree._Element) -> None:
    """A user archive's ``<stanza-id by='user@domain'/>``: both servers stamp one on each
    message they keep for a user, with ids of their own."""
    _drop(el, f"{{{NS_SID}}}stanza-id", lambda c: (c.get("by") or "").endswith("@localhost"))


def error_text(el: etree._Element) -> None:
    """The text of a stanza error: chatserver says in words what went wrong, Prosody mostly
    gives the condition alone."""
    if el.get("type") == "error":
        _drop(el, f"{{{NS_STANZAS}}}text", lambda c: True)


def vcard_empty_name(el: etree._Element) -> None:
    """An empty ``<N/>`` in a vCard read back: Prosody's vcard_legacy rebuilds the vCard from
    its vCard4 form, which always has the name's parts; chatserver returns the vCard as set."""
    _drop(
        el,
        "{vcard-temp}N",
        lambda c: not any((part.text or "").strip() for part in c.iter()),
    )


def pep_presence_access(el: etree._Element) -> None:
    """Items of a node with the ``presence`` access model asked for by a non-subscriber:
    chatserver answers as XEP-0060 §6.5.3 says (``not-authorized`` with
    ``presence-subscription-required``), Prosody 0.12 with ``forbidden``."""
    error = el.find("error")
    required = "{http://jabber.org/protocol/pubsub#errors}presence-subscription-required"
    if error is None or error.find(required) is None:
        return
    for child in list(error):
        if child.tag in (required, f"{{{NS_STANZAS}}}not-authorized"):
            error.remove(child)
    etree.SubElement(error, f"{{{NS_STANZAS}}}forbidden")


def body_less_stanza_id(el: etree._Element) -> None:
    """The room's stanza-id on a groupchat message without a body: Prosody archives
    reactions and markers; chatserver's room history keeps messages with text only."""
    if el.tag == "message" and el.get("type") == "groupchat" and el.find("body") is None:
        _drop(el, f"{{{NS_SID}}}stanza-id", lambda c: True)


def occupant_presence(el: etree._Element) -> None:
    """Room presences: chatserver builds them from the user's state (the user may be on IRC),
    so they carry no ``xml:lang`` and no ``id`` of the client's presence, and the item's JID
    is the user's bare JID (a room holds users, not resources)."""
    if el.tag != "presence" or el.find(f"{{{NS_MUC_USER}}}x") is None:
        return
    el.attrib.pop(XML_LANG, None)
    if el.get("id", "").startswith(CLIENT_ID_PREFIX + "join-") and not _is_self(el):
        del el.attrib["id"]
    for item in el.iter(f"{{{NS_MUC_USER}}}item"):
        jid = item.get("jid")
        if jid is not None:
            item.set("jid", jid.partition("/")[0])


def room_logged(el: etree._Element) -> None:
    """Status 170 (the room is logged): chatserver keeps every room's history and says so;
    Prosody's rooms archive without announcing it."""
    _drop(el, f"{{{NS_MUC_USER}}}status", lambda c: c.get("code") == "170")


def _is_self(el: etree._Element) -> bool:
    return any(s.get("code") == "110" for s in el.iter(f"{{{NS_MUC_USER}}}status"))


def canonical(el: etree._Element, top: bool = True) -> str:
    """One line of text that two equivalent elements share."""
    attrs = []
    for key, value in sorted(el.attrib.items()):
        local = etree.QName(key).localname
        if local == "stamp":
            value = "*"
        elif local == "id" and (not top or not value.startswith(CLIENT_ID_PREFIX)):
            value = "*"
        attrs.append(f" {key}={value!r}")
    ns = etree.QName(el).namespace
    name = etree.QName(el).localname if ns is None else f"{{{ns}}}{etree.QName(el).localname}"
    text = (el.text or "").strip()
    children = sorted(canonical(child, top=False) for child in el if isinstance(child.tag, str))
    inner = (text and repr(text)) + "".join(children)
    return f"<{name}{''.join(attrs)}>{inner}</>"


class Session:
    """One server's run of a script."""

    def __init__(self, port: int, rules: Iterable[Rule] = ()) -> None:
        self.port = port
        self.clients: dict[str, RawXmppClient] = {}
        self.transcript: dict[str, list[list[str]]] = {}
        self.rules = tuple(rules)

    def login(self, name: str, user: str, resource: str, *, presence: bool = True) -> None:
        client = RawXmppClient(self.port, user, PASSWORD, resource=resource, presence=presence)
        self.clients[name] = client
        self.transcript[name] = []

    def send(self, name: str, xml: str) -> None:
        self.clients[name].send(xml)

    def drain(self) -> None:
        """Forget what arrived so far (login chatter that the script does not compare)."""
        round_trip(self.port)
        collect_all(list(self.clients.values()))

    def settle(self, quiet: float = 0.4, *, ordered: bool = False) -> None:
        """Record the step: once the server has read what the clients sent (a round trip of
        its own, which waits as long as a busy machine keeps the server from reading), what
        every client receives until none receives more for ``quiet`` seconds.  Sorted, as
        two servers may order stanzas of different senders differently; ``ordered``: as it
        arrived, for a step whose order a script checks."""
        round_trip(self.port)
        got = collect_all(list(self.clients.values()), quiet)
        for name, elements in zip(self.clients, got, strict=True):
            lines = [self._normal(el) for el in elements]
            self.transcript[name].append(lines if ordered else sorted(lines))

    def _normal(self, el: etree._Element) -> str:
        for rule in self.rules:
            rule(el)
        return canonical(el)

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


def diff(ours: dict[str, list[list[str]]], theirs: dict[str, list[list[str]]]) -> list[str]:
    """Readable differences: per client and step, what only one server sent."""
    out = []
    for name in sorted(set(ours) | set(theirs)):
        a, b = ours.get(name, []), theirs.get(name, [])
        for step in range(max(len(a), len(b))):
            sa = a[step] if step < len(a) else []
            sb = b[step] if step < len(b) else []
            for line in sa:
                if line not in sb:
                    out.append(f"{name} step {step}: only chatserver: {line}")
            for line in sb:
                if line not in sa:
                    out.append(f"{name} step {step}: only prosody:    {line}")
    return out


def assert_same(ours: dict[str, list[list[str]]], theirs: dict[str, list[list[str]]]) -> None:
    differences = diff(ours, theirs)
    assert not differences, "\n".join(differences)
