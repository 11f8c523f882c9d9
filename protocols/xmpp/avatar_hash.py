"""Avatar hashes in presence (XEP-0153): ``<x xmlns='vcard-temp:x:update'><photo/></x>``.

Every available presence of an account's client (broadcast, directed, and to rooms) carries
the hash of the account's avatar, as Prosody's ``mod_vcard_legacy`` adds it: the SHA-1 of the
vCard's photo (XEP-0054), or else the id of the latest XEP-0084 avatar metadata item (which is
that same SHA-1 by XEP-0084 §4.2).  An empty ``<photo/>`` says the account has no avatar.  A
client that put its own ``<photo>`` in keeps it (XEP-0153 §4.3 leaves the choice to it); one
that sent an empty ``<x/>`` ("not ready") gets the server's hash filled in.

The hash is read from the account's loaded personal data (:class:`protocols.xmpp.pep.PepData`,
loaded when a resource binds), remembered by the item it came from, so a presence costs a
dictionary lookup unless the avatar changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from lxml import etree

from chatserver.core.names import casefold
from chatserver.core.records import PepItem
from protocols.xmpp import stanzas
from protocols.xmpp.vcard import KIND, NODE, NS_VCARD_UPDATE, photo_hash

if TYPE_CHECKING:
    from protocols.xmpp.factory import XmppFactory

AVATAR_METADATA = "urn:xmpp:avatar:metadata"
# casefolded account -> (the item the hash was made from, the hash).
_hashes: dict[str, tuple[PepItem, str]] = {}
_HASHES_MAX = 10000


def loaded(factory: XmppFactory, account: str) -> bool:
    """Whether the account's personal data is in memory (the hash can be read at once)."""
    return casefold(account) in factory.pep.cache


def current(factory: XmppFactory, account: str) -> str:
    """The account's avatar hash ("" for none, or while its data is not loaded)."""
    data = factory.pep.cache.get(casefold(account))
    if not data:
        return ""
    vcard = data.get((KIND, NODE))
    if vcard is not None and vcard.items:
        found = _hash_of(account, vcard.items[-1], _vcard_photo)
        if found:
            return found
    metadata = data.get(("pep", AVATAR_METADATA))
    if metadata is not None and metadata.items:
        item = metadata.items[-1]
        # An empty metadata element (XEP-0084 §4.2: avatar disabled) has no hash.
        return _hash_of(account, item, lambda i: i.id if "<info" in i.payload else "")
    return ""


def _vcard_photo(item: PepItem) -> str:
    try:
        return photo_hash(etree.fromstring(item.payload))
    except etree.XMLSyntaxError:
        return ""


def _hash_of(account: str, item: PepItem, make: Callable[[PepItem], str]) -> str:
    key = casefold(account)
    hit = _hashes.get(key)
    if hit is not None and hit[0] is item:
        return hit[1]
    if len(_hashes) >= _HASHES_MAX:
        _hashes.clear()
    value = make(item)
    _hashes[key] = (item, value)
    return value


def inject(factory: XmppFactory, account: str, presence: etree._Element) -> None:
    """Add (or complete) the avatar hash in an available presence of ``account``'s client."""
    if presence.get("type") is not None or not loaded(factory, account):
        # Not loaded yet (a room joined in the first moments of a session): better no word
        # than an empty <photo/>, which would say "no avatar".
        return
    x = presence.find(f"{{{NS_VCARD_UPDATE}}}x")
    if x is None:
        x = stanzas.sub(presence, "x", ns=NS_VCARD_UPDATE)
    elif x.find(f"{{{NS_VCARD_UPDATE}}}photo") is not None:
        return
    stanzas.sub(x, "photo", text=current(factory, account) or None)
