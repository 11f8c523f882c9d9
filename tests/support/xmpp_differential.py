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

from tests.support.raw_xmpp import RawXmppClient

PASSWORD = "correct horse battery"
CLIENT_ID_PREFIX = "c-"
NS_SID = "urn:xmpp:sid:0"
NS_DELAY = "urn:xmpp:delay"

# A stanza child dropped before comparing, with the reason (each is explained in
# protocols/xmpp/README.md, "Differences from Prosody").
Ignore = Callable[[etree._Element, etree._Element], bool]


def archive_stanza_id(parent: etree._Element, child: etree._Element) -> bool:
    """A user archive's ``<stanza-id by='user@domain'/>`` (Prosody's mod_mam stamps one on
    each message it stores for a user; chatserver's one-to-one archive is not part of these
    scripts)."""
    return child.tag == f"{{{NS_SID}}}stanza-id" and (child.get("by") or "").endswith("@localhost")


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

    def __init__(self, port: int, ignore: Iterable[Ignore] = ()) -> None:
        self.port = port
        self.clients: dict[str, RawXmppClient] = {}
        self.transcript: dict[str, list[list[str]]] = {}
        self.ignore = tuple(ignore)

    def login(self, name: str, user: str, resource: str, *, presence: bool = True) -> None:
        client = RawXmppClient(self.port, user, PASSWORD, resource=resource, presence=presence)
        self.clients[name] = client
        self.transcript[name] = []

    def send(self, name: str, xml: str) -> None:
        self.clients[name].send(xml)

    def drain(self) -> None:
        """Forget what arrived so far (login chatter that the script does not compare)."""
        for client in self.clients.values():
            client.collect()

    def settle(self, quiet: float = 0.4) -> None:
        for name, client in self.clients.items():
            got = client.collect(quiet)
            self.transcript[name].append(sorted(self._normal(el) for el in got))

    def _normal(self, el: etree._Element) -> str:
        for child in list(el.iter()):
            parent = child.getparent()
            if parent is not None and any(rule(parent, child) for rule in self.ignore):
                parent.remove(child)
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
