"""The byte-level reading behind client state indication, checked against lxml's reading of
the same stanzas, for stanzas hypothesis makes up."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from protocols.xmpp import csi, stanzas

_TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x00"), max_size=30
)
_CONN = SimpleNamespace(account="alice", user=SimpleNamespace(nick="alice"))


@st.composite
def _stanza(draw: st.DrawFn) -> etree._Element:
    kind = draw(st.sampled_from(["message", "presence", "iq"]))
    types = {
        "message": [None, "chat", "normal", "groupchat", "headline", "error"],
        "presence": [None, "unavailable", "error", "subscribe", "subscribed", "probe"],
        "iq": ["get", "set", "result", "error"],
    }[kind]
    attrs = {"from": draw(st.sampled_from(["bob@localhost", "dev@conference.localhost/x"]))}
    type_ = draw(st.sampled_from(types))
    if type_ is not None:
        attrs["type"] = type_
    el = stanzas.element(kind, attrs)
    if kind == "message":
        if draw(st.booleans()):
            body = draw(_TEXT)
            if draw(st.booleans()):
                body += draw(st.sampled_from(["alice", "ALICE:", "Alice"]))
            stanzas.sub(el, "body", text=body)
        if draw(st.booleans()):
            stanzas.sub(el, "composing", ns="http://jabber.org/protocol/chatstates")
        if draw(st.integers(0, 9)) == 0:
            stanzas.sub(el, "subject", text=draw(_TEXT))
    elif kind == "presence" and draw(st.booleans()):
        stanzas.sub(el, "show", text="away")
        stanzas.sub(el, "status", text=draw(_TEXT))
    return el


def _reference(el: etree._Element) -> bool:
    """mod_csi_simple's rules, read from the element."""
    kind, type_ = el.tag, el.get("type")
    if kind == "presence":
        return type_ not in (None, "unavailable", "error")
    if kind == "iq":
        return True
    if type_ == "headline":
        return False
    if type_ == "error" or el.find("subject") is not None:
        return True
    body = el.find("body")
    if body is None:
        return False
    if type_ != "groupchat":
        return True
    return "alice" in (body.text or "").lower()


@given(_stanza())
def test_urgent_reads_bytes_as_lxml_reads_the_element(el: etree._Element) -> None:
    assert csi.urgent(_CONN, stanzas.to_bytes(el)) == _reference(el)  # type: ignore[arg-type]


@given(st.lists(st.tuples(st.sampled_from(["p", "m"]), st.integers(0, 3)), max_size=40))
def test_held_keeps_the_last_presence_of_each_address_and_every_message(
    items: list[tuple[str, int]],
) -> None:
    held = csi.Held()
    made = []
    for n, (what, who) in enumerate(items):
        if what == "p":
            data = f"<presence from='u{who}@localhost' id='{n}'/>".encode()
        else:
            data = f"<message from='u{who}@localhost' id='{n}'><body>x</body></message>".encode()
        held.add(data)
        made.append((what, who, data))
    last_presence = {who: data for what, who, data in made if what == "p"}
    expected = [data for what, who, data in made if what == "m" or last_presence[who] is data]
    assert held.live == len(expected)
    assert held.take() == expected
    assert held.live == 0 and held.take() == []
