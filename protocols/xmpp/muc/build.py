"""The render-once, splice-``to`` path for fan-out, and small helpers on top of
:mod:`protocols.xmpp.stanzas` (data forms, timestamps, reading client stanzas).

A stanza sent to many occupants differs only in its ``to``.  It is serialized once without
one; :func:`send_spliced` writes ``<kind``, `` to="…"`` and the cached rest for each
recipient, so a delivery costs one bytes join, not an lxml serialization.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from lxml.etree import _Element as Element

from protocols.xmpp.muc import ns
from protocols.xmpp.stanzas import sub, to_bytes

_ESCAPE = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})
_OPENERS = {"message": b"<message", "presence": b"<presence", "iq": b"<iq"}
_to_cache: dict[str, bytes] = {}


def tail(el: Element) -> bytes:
    """The serialization of a ``to``-less stanza after its ``<kind``, ready for splicing."""
    return to_bytes(el)[len(el.tag) + 1 :]


def to_attr(jid: str) -> bytes:
    """`` to="jid"`` escaped, cached: the same recipients come back for every message."""
    value = _to_cache.get(jid)
    if value is None:
        if len(_to_cache) > 10000:
            _to_cache.clear()
        value = _to_cache[jid] = b' to="' + jid.translate(_ESCAPE).encode() + b'"'
    return value


def send_spliced(conn: Any, kind: str, rest: bytes) -> None:
    conn.send(b"".join((_OPENERS[kind], to_attr(conn.jid), rest)))


def send_to(conn: Any, el: Element) -> None:
    """A one-off stanza for this connection, through the same splice as fan-out."""
    conn.send(b"".join((_OPENERS[el.tag], to_attr(conn.jid), tail(el))))


def cached_tail(event: Any, key: tuple[Any, ...], build: Callable[[], Element]) -> bytes:
    """The tail for ``key`` from the event's render cache, building it on first use."""
    cache = event.rendered
    full_key = ("xmpp", *key)
    data = cache.get(full_key)
    if data is None:
        data = cache[full_key] = tail(build())
    return data


def stamp(ts: float) -> str:
    """An XEP-0082 UTC timestamp with milliseconds."""
    whole = int(ts)
    millis = round((ts - whole) * 1000)
    if millis >= 1000:
        whole, millis = whole + 1, millis - 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def find(el: Element, namespace: str, tag: str) -> Element | None:
    return el.find(f"{{{namespace}}}{tag}")


def data_form(parent: Element, form_type: str, type_: str = "result") -> Element:
    form = sub(parent, "x", {"type": type_}, ns=ns.DATA)
    hidden = sub(form, "field", {"var": "FORM_TYPE", "type": "hidden"})
    sub(hidden, "value", text=form_type)
    return form


def form_field(
    form: Element,
    var: str,
    value: str | None,
    *,
    type_: str | None = None,
    label: str | None = None,
    options: list[str] | None = None,
) -> Element:
    field = sub(form, "field", {"var": var, "type": type_, "label": label})
    if value is not None:
        sub(field, "value", text=value)
    for option in options or ():
        sub(sub(field, "option", {"label": option}), "value", text=option)
    return field


def form_values(form: Element) -> dict[str, list[str]]:
    """The fields of a submitted data form: var -> values."""
    out: dict[str, list[str]] = {}
    for field in form.iterfind(f"{{{ns.DATA}}}field"):
        var = field.get("var")
        if var:
            out[var] = [v.text or "" for v in field.iterfind(f"{{{ns.DATA}}}value")]
    return out
