"""The MAM query parser: any form and RSM set either parses into bounds or is refused with
bad-request, never anything else."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from protocols.xmpp.mam import NS_MAM, NS_RSM, PAGE_DEFAULT, PAGE_MAX, parse_query
from protocols.xmpp.router import StanzaError
from protocols.xmpp.stanzas import NS_DATA, element, sub

FIELDS = ("FORM_TYPE", "with", "start", "end", "before-id", "after-id", "ids", "x")
REFUSALS = ("bad-request", "policy-violation")
TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30
)


def query(fields: dict[str, str], rsm: dict[str, str | None] | None) -> etree._Element:
    q = element("query", {"queryid": "q1"}, ns=NS_MAM)
    if fields:
        form = sub(q, "x", {"type": "submit"}, ns=NS_DATA)
        for var, value in fields.items():
            sub(sub(form, "field", {"var": var}), "value", text=value)
    if rsm is not None:
        s = sub(q, "set", ns=NS_RSM)
        for tag, value in rsm.items():
            sub(s, tag, text=value)
    return q


def test_a_plain_query_pages_forwards_by_the_default() -> None:
    parsed = parse_query(query({}, None))
    assert parsed.limit == PAGE_DEFAULT
    assert parsed.page_before is None and parsed.after_id is None


def test_filters_and_pages() -> None:
    parsed = parse_query(
        query(
            {"with": "bob@localhost", "start": "2020-01-01T00:00:00Z", "after-id": "a1"},
            {"max": "500", "before": None},
        )
    )
    assert parsed.with_jid == "bob@localhost"
    assert parsed.start == 1577836800.0
    assert parsed.after_id == "a1"
    assert parsed.limit == PAGE_MAX
    assert parsed.page_before == ""


@given(
    st.dictionaries(st.sampled_from(FIELDS), TEXT, max_size=4),
    st.none()
    | st.dictionaries(
        st.sampled_from(("max", "after", "before", "index")), st.none() | TEXT, max_size=3
    ),
)
def test_any_query_parses_or_is_a_bad_request(fields: dict[str, str], rsm: dict | None) -> None:
    try:
        parsed = parse_query(query(fields, rsm))
    except StanzaError as err:
        assert err.condition in REFUSALS
        return
    assert 0 <= parsed.limit <= PAGE_MAX
    for bound in (parsed.start, parsed.end):
        assert bound is None or isinstance(bound, float)
