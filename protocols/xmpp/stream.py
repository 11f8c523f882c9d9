"""The XML stream layer: incremental parsing with RFC 6120 §11 restrictions and size limits.

:class:`StreamParser` turns bytes, cut at any boundary, into stream events: the opening
``<stream:stream>`` tag, each complete top-level element (a stanza, or a stream-level element
such as ``<starttls/>``), and the closing tag.  Everything a handler later sees has passed
here, so the limits live here and nowhere else:

* no DOCTYPE, comment, processing instruction or entity reference (``restricted-xml``);
* malformed XML, invalid UTF-8 (``not-well-formed``);
* a top-level element over ``stanza_bytes``, nested deeper than ``depth`` or made of more
  than ``elements`` elements (``policy-violation``): each element costs a few Python calls,
  so 256 KiB of ``<b/>`` would otherwise cost the reactor 150 ms;
* an element with more than ``attributes`` attributes (namespace declarations included) or
  more than ``attribute_bytes`` of attribute values (``policy-violation``), refused before
  its element is built: lxml sets attributes one at a time, each after a search of those
  already set, so 24,000 attributes in one start tag cost seconds, where libxml2 itself
  reads them in a few milliseconds;
* text between stanzas (``bad-format``): only whitespace keep-alives belong there, and at
  most ``stanza_bytes`` of them in a row, so input that is neither a stanza nor a pause
  cannot stream in for ever without a limit seeing it.

libxml2 runs as a push parser with a Python target, so the DOCTYPE is refused at its first
byte, before any entity declaration is read: entity expansion attacks (billion laughs,
quadratic blow-up, external entities) never get a chance to expand anything.
Stanzas are detached from the stream root as soon as they are complete, so a long stream
holds only the stanza in progress.  Each stream restart (after STARTTLS and SASL) gets a
fresh parser: :meth:`StreamParser.reset`.

A libxml2 push parser holds about 10 KiB of buffers and state, most of an idle connection's
memory, so a stream that rests between stanzas can give it back (:meth:`StreamParser.park`);
its next input gets a new parser, fed a copy of the stream header first so that the
namespaces the client declared there are in scope again.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import quoteattr

from lxml import etree

from protocols.xmpp.stanzas import NS_CLIENT

# Input is fed to libxml2 in slices of at most this size, and the size limit is checked
# between slices, so a stanza can overrun its limit by at most one slice before it is caught.
SLICE_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Limits:
    """What one stream may send (the ``[xmpp]`` configuration keys of the same names)."""

    stanza_bytes: int = 256 * 1024
    depth: int = 32
    elements: int = 4096
    # Per element: attributes with namespace declarations, and the bytes of their values.
    # A JID is at most 3071 bytes, and the widest elements XMPP defines carry a dozen
    # attributes (a Jingle ICE candidate).
    attributes: int = 64
    attribute_bytes: int = 16384

    @property
    def tag_bytes(self) -> int:
        """The longest tag the attribute limits allow (with names, quotes and spaces)."""
        return self.attribute_bytes + 256 * self.attributes


DEFAULT_LIMITS = Limits()

# What, in the bytes that broke the parser, shows the client tried a restricted construct
# rather than plain malformed XML: a markup declaration other than CDATA, or a PI.
# (The XML declaration that may open a stream is not one.)
_RESTRICTED_MARKUP = re.compile(rb"<(?:\?(?!xml[\s?])|!(?!\[CDATA\[))")
# Bytes that no XML 1.0 document may contain (in UTF-8 they only ever stand for these
# control characters).  libxml2's push parser waits for more input on some of them (NUL)
# instead of failing, so they are refused before it sees them.
_NEVER_XML = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")
# How much recent input is kept to tell a restricted construct from plain bad XML.
RECENT_BYTES = 256
# The input so far ends with a complete tag and whitespace at most: once that tag has taken
# the parser back to stream level, libxml2 holds nothing that a new parser would miss.
# (Neither text nor an attribute value may contain "<", so a match starts at the last one.)
_AT_REST = re.compile(
    rb"<(?:/[^<>'\"\s]+\s*|[^<>'\"/\s]+(?:\s+[^<>'\"=\s]+\s*=\s*(?:'[^'<]*'|\"[^\"<]*\"))*\s*/?)>\s*\Z"
)
# What XML calls whitespace (str.isspace would take more).
_XML_SPACE = " \t\r\n"
# libxml2 error codes that mean "an entity reference", by name.
_ENTITY_ERRORS = frozenset(
    getattr(etree.ErrorTypes, name) for name in dir(etree.ErrorTypes) if "ENTITY" in name
)


class StreamError(Exception):
    """The stream must end with this RFC 6120 §4.9.3 ``condition``."""

    def __init__(self, condition: str, text: str | None = None) -> None:
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The client's ``<stream:stream ...>`` tag: its qualified tag, attributes and namespaces."""

    tag: str
    attrib: dict[str, str]
    nsmap: dict[str | None, str]


@dataclass(frozen=True, slots=True)
class TopElement:
    """One complete child of the stream element (a stanza or a stream-level element)."""

    element: etree._Element


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """The client's ``</stream:stream>``."""


StreamEvent = StreamOpened | TopElement | StreamClosed


class _Refused(Exception):
    """Raised in the target: the stream ends with ``error``."""

    def __init__(self, error: StreamError) -> None:
        super().__init__(str(error))
        self.error = error


def _restricted(text: str) -> _Refused:
    return _Refused(StreamError("restricted-xml", text))


def _policy(text: str) -> _Refused:
    return _Refused(StreamError("policy-violation", text))


class _Target:
    """The parser target: builds stanzas with a TreeBuilder and refuses restricted XML."""

    def __init__(self, limits: Limits) -> None:
        self.clear(limits)

    def clear(self, limits: Limits) -> None:
        """Ready for a new stream (also a parser's target taken again from the pool)."""
        self.builder = etree.TreeBuilder()
        self.limits = limits
        # Elements so far in the top-level element being built.
        self.elements = 0
        self.depth = 0
        self.events: list[StreamEvent] = []
        # Namespaces declared on the element about to start.  lxml reports them to
        # ``start_ns`` in every version; the ``nsmap`` argument of ``start`` is empty in some
        # (6.2) unless the target has ``start_ns``, so they are taken from here alone.
        self.declared: dict[str | None, str] = {}
        # Whitespace since the last stanza (or the stream header).
        self.spaces = 0
        # Set when libxml2 reports something at stream level (a stanza ended, the stream
        # opened, whitespace between stanzas): the size count starts again from there.
        self.quiet = False
        # Set when libxml2 reports anything at all.
        self.heard = False

    def start_ns(self, prefix: str | None, uri: str) -> None:
        declared = self.declared
        if len(declared) >= self.limits.attributes:
            # Before lxml gathers the rest: it would search its list for each one.
            raise self._too_many_attributes()
        # libxml2 names the default namespace '' where lxml wants None.
        declared[prefix or None] = uri

    def end_ns(self, prefix: str | None) -> None:
        pass

    def start(self, tag: str, attrib: Any, nsmap: Any = None) -> Any:
        self.heard = True
        self.depth += 1
        namespaces, self.declared = self.declared, {}
        if attrib or namespaces:
            self._check_attributes(attrib, namespaces)
            attrib = _literal_ampersands(attrib)
        if self.depth == 1:
            # Built before the event: a name lxml refuses (an unbound or doubled prefix, as
            # in "a:b:stream") must fail the stream as not-well-formed before anything
            # acts on the header.
            element = self.builder.start(tag, attrib, namespaces)
            self.quiet = True
            self.spaces = 0
            self.events.append(StreamOpened(tag, dict(attrib), namespaces))
            return element
        limits = self.limits
        if self.depth - 1 > limits.depth:
            raise _policy("elements are nested too deeply")
        if self.depth == 2:
            self.elements = 0
        self.elements += 1
        if self.elements > limits.elements:
            raise _policy(f"a stanza may hold at most {limits.elements} elements")
        return self.builder.start(tag, attrib, namespaces)

    def _check_attributes(self, attrib: Any, namespaces: dict[str | None, str]) -> None:
        limits = self.limits
        if len(attrib) + len(namespaces) > limits.attributes:
            raise self._too_many_attributes()
        values = [*attrib.values(), *namespaces.values()]
        size = sum(map(len, values))
        # A character is one to four bytes: count the bytes only when that can matter.
        if size * 4 > limits.attribute_bytes and (
            size > limits.attribute_bytes
            or sum(len(value.encode()) for value in values) > limits.attribute_bytes
        ):
            raise _policy(
                f"the attribute values of one element may hold at most"
                f" {limits.attribute_bytes} bytes"
            )

    def _too_many_attributes(self) -> _Refused:
        return _policy(f"an element may carry at most {self.limits.attributes} attributes")

    def end(self, tag: str) -> Any:
        self.heard = True
        self.depth -= 1
        el = self.builder.end(tag)
        if self.depth == 1:
            self.quiet = True
            self.spaces = 0
            parent = el.getparent()
            if parent is not None:
                parent.remove(el)
            _strip_client_namespace(el)
            self.events.append(TopElement(el))
        elif self.depth == 0:
            self.events.append(StreamClosed())
        return el

    def data(self, text: str) -> None:
        self.heard = True
        if self.depth > 1:
            self.builder.data(text)
            return
        # Between stanzas: whitespace keep-alives, dropped rather than kept as the root's
        # text, and counted, so that a stream cannot send them without end.
        if text.strip(_XML_SPACE):
            raise _Refused(StreamError("bad-format", "text is not allowed between stanzas"))
        self.spaces += len(text)
        if self.spaces > self.limits.stanza_bytes:
            raise _policy(
                f"whitespace between stanzas is limited to {self.limits.stanza_bytes} bytes"
            )
        self.quiet = True

    def comment(self, text: str) -> None:
        raise _restricted("comments are not allowed")

    def pi(self, target: str, data: str | None = None) -> None:
        raise _restricted("processing instructions are not allowed")

    def doctype(self, *args: Any) -> None:
        raise _restricted("a DOCTYPE is not allowed")

    def close(self) -> None:
        return None


def _literal_ampersands(attrib: Any) -> Any:
    """Attribute values as the client wrote them.  libxml2, told not to substitute
    entities, reports each ``&`` of an attribute value (written ``&amp;``) as ``&#38;``, and
    only those: turned back, a relayed stanza keeps ``a=1&b=2`` rather than growing an
    escape at each hop."""
    if not any("&" in value for value in attrib.values()):
        return attrib
    return {key: value.replace("&#38;", "&") for key, value in attrib.items()}


def _strip_client_namespace(el: etree._Element) -> None:
    """Take stanzas out of ``jabber:client`` (see :mod:`protocols.xmpp.stanzas`)."""
    prefix = "{" + NS_CLIENT + "}"
    for node in el.iter():
        tag = node.tag
        if isinstance(tag, str) and tag.startswith(prefix):
            node.tag = tag[len(prefix) :]
    etree.cleanup_namespaces(el)


@functools.lru_cache(maxsize=64)
def _replay_header(tag: str, namespaces: tuple[tuple[str | None, str], ...]) -> bytes:
    """A start tag that declares what the client's stream header declared (clients send the
    same few headers, so the copies are shared)."""
    qname = etree.QName(tag)
    name = qname.localname
    for prefix, uri in namespaces:
        if uri == qname.namespace:
            name = f"{prefix}:{name}" if prefix else name
            break
    declarations = "".join(
        f" xmlns:{prefix}={quoteattr(uri)}" if prefix else f" xmlns={quoteattr(uri)}"
        for prefix, uri in namespaces
        if prefix != "xml"
    )
    return f"<{name}{declarations}>".encode()


class _ParserPool:
    """libxml2 parsers that streams gave back, for the next streams to take.

    An lxml parser with a target and its own parser context refer to each other, so a parser
    that is simply dropped keeps its libxml2 memory (about 10 KiB) until Python's cyclic
    collector runs, and that counts objects, not bytes: a server whose streams come and go
    (and park) would hold more and more of it.  A parser given back is closed, which resets
    it for a new document, and is never garbage; only past ``limit`` idle ones is one dropped.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.idle: list[tuple[etree.XMLParser, _Target]] = []

    def take(self, limits: Limits) -> tuple[etree.XMLParser, _Target]:
        if self.idle:
            parser, target = self.idle.pop()
            target.clear(limits)
            return parser, target
        target = _Target(limits)
        parser = etree.XMLParser(
            target=target,
            encoding="utf-8",
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            huge_tree=False,
            remove_comments=False,
            remove_pis=False,
        )
        return parser, target

    def give_back(self, parser: etree.XMLParser, target: _Target) -> None:
        self.discard(parser, target)
        if len(self.idle) < self.limit:
            self.idle.append((parser, target))

    @staticmethod
    def discard(parser: etree.XMLParser, target: _Target) -> None:
        """Reset ``parser``: its libxml2 buffers and the target's tree go at once."""
        try:
            # Ends the document (an open stream is an error here), which resets the parser.
            parser.close()
        except Exception:
            # An unfinished stream always fails to close; the parser is reset all the same.
            pass
        target.clear(target.limits)


# Shared by every stream of the process: the parsers are interchangeable.
_PARSERS = _ParserPool(limit=256)


class StreamParser:
    """Bytes in, :data:`StreamEvent` out; raises :class:`StreamError` on bad input."""

    # Slots: one of these lives as long as its connection.
    __slots__ = (
        "_generation",
        "_header",
        "_held",
        "_held_bytes",
        "_parser",
        "_pending",
        "_recent",
        "_target",
        "failed",
        "limits",
    )

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.failed: StreamError | None = None
        self._generation = 0
        self._target: _Target | None = None
        self._parser: etree.XMLParser | None = None
        self.reset()

    def reset(self) -> None:
        """Start a new stream (after STARTTLS or SASL): a fresh parser, nothing carried over.

        The parser itself is taken when the new stream's first bytes arrive."""
        self.release()
        # What the new parser is fed first once the stream has opened (see :meth:`park`).
        self._header: bytes | None = None
        self._pending = 0
        self._held_bytes = 0
        self._recent = b""
        self._generation += 1
        self.failed = None

    def release(self) -> None:
        """Give the parser back (the stream restarts, rests or is over)."""
        parser = self._parser
        if parser is not None:
            assert self._target is not None
            if self.failed is None:
                _PARSERS.give_back(parser, self._target)
            else:
                # A parser that refused its input is not trusted with another stream; but
                # it is closed, so that the input it held (up to a stanza's worth) goes now,
                # not when the cyclic collector gets round to it.
                _PARSERS.discard(parser, self._target)
        self._target = None
        self._parser = None
        # The input since libxml2 last reported anything: what it holds (see _check_held).
        self._held: list[bytes] | None = None
        self._held_bytes = 0

    @property
    def depth(self) -> int:
        """Open elements: 0 before the stream header, 1 between stanzas."""
        if self._target is None:
            return 0 if self._header is None else 1
        return self._target.depth

    @property
    def parked(self) -> bool:
        """No libxml2 parser is held (before any input, or after :meth:`park`)."""
        return self._parser is None

    def park(self) -> bool:
        """Give the parser back if the stream rests between stanzas; False if it cannot
        (a stanza or the stream header is half received, or the stream has failed)."""
        target = self._target
        if target is None:
            return True
        if self.failed is not None or self._header is None or target.depth != 1 or self._pending:
            return False
        rest = _AT_REST.search(self._recent)
        if rest is None:
            return False
        self.release()
        # Only the tag the stream rests after is worth keeping: it is what a later
        # park checks if no more than whitespace arrives meanwhile (so that keep-alives
        # alone, however many, still let the parser go after each).
        self._recent = rest.group().rstrip()
        return True

    def _start(self) -> _Target:
        parser, target = _PARSERS.take(self.limits)
        if self._header is not None:
            # The client has seen its header answered already: this one only sets the scene.
            parser.feed(self._header)
            target.events.clear()
        self._target, self._parser = target, parser
        return target

    def feed(self, data: bytes) -> Iterator[StreamEvent]:
        """Parse ``data`` and yield the events it completes, in order.

        Raises :class:`StreamError` once the input is refused (events before the error are
        yielded first).  If the consumer calls :meth:`reset` while iterating, the rest of
        ``data`` is dropped: a client may not pipeline past a stream restart (this is what
        keeps plaintext injected after ``<starttls/>`` out of the encrypted stream).
        """
        if self.failed is not None:
            raise self.failed
        generation = self._generation
        bad = _NEVER_XML.search(data)
        if bad is not None:
            data = data[: bad.start()]
        view = memoryview(data)
        for offset in range(0, len(view), SLICE_BYTES):
            chunk = bytes(view[offset : offset + SLICE_BYTES])
            target = self._target if self._target is not None else self._start()
            target.quiet = target.heard = False
            error: StreamError | None = None
            try:
                assert self._parser is not None
                self._parser.feed(chunk)
            except _Refused as err:
                error = err.error
            except etree.XMLSyntaxError as err:
                error = self._classify(err, chunk)
            except Exception as err:  # lxml may raise others (ValueError) for odd input
                error = StreamError("not-well-formed", type(err).__name__)
            events, target.events = target.events, []
            for event in events:
                if isinstance(event, StreamOpened):
                    self._header = _replay_header(event.tag, tuple(event.nsmap.items()))
                yield event
                if self._generation != generation:
                    return
            if error is not None:
                self.failed = error
                raise error
            if target.quiet and target.depth <= 1:
                self._pending = 0
            elif self._pending or not chunk.isspace():
                # A whitespace keep-alive at rest stays at rest: libxml2 holds a few hundred
                # such bytes at most before it reports them, and then the count starts again.
                self._pending += len(chunk)
                limit = self.limits.stanza_bytes
                if self._pending > limit:
                    self.failed = StreamError(
                        "policy-violation", f"stanzas are limited to {limit} bytes"
                    )
                    raise self.failed
            if target.heard:
                # Whatever libxml2 holds now began in this chunk.
                self._held = [chunk]
                self._held_bytes = len(chunk)
            elif self._held_bytes >= 0:
                self._check_held(chunk)
            self._recent = (self._recent + chunk)[-RECENT_BYTES:]
        if bad is not None:
            self.failed = StreamError("not-well-formed", "control characters are not XML")
            raise self.failed

    def _check_held(self, chunk: bytes) -> None:
        """libxml2 took ``chunk`` and reported nothing: it holds a construct that has not
        ended.  It reads a start tag only once the whole tag is there (quotes and all), so
        the length of the silence is the length of the tag so far; a tag longer than the
        attribute limits allow is refused before libxml2 reads it and lxml builds its
        attributes (24,000 of them leave the allocator megabytes it keeps).  A CDATA
        section is held whole too, and is bounded by the stanza size only."""
        held = self._held
        if held is None:
            held = self._held = []
        held.append(chunk)
        self._held_bytes += len(chunk)
        limit = self.limits.tag_bytes
        if self._held_bytes <= limit:
            return
        data = b"".join(held)
        cdata = data.rfind(b"<![CDATA[")
        # -1: no more counting until libxml2 reports something again.
        self._held, self._held_bytes = None, -1
        if cdata >= 0 and data.find(b"]]>", cdata) < 0:
            return
        if _RESTRICTED_MARKUP.search(data):
            self.failed = StreamError("restricted-xml", "markup declarations are not allowed")
        else:
            self.failed = StreamError("policy-violation", f"a tag may be at most {limit} bytes")
        raise self.failed

    def _classify(self, err: etree.XMLSyntaxError, chunk: bytes) -> StreamError:
        if getattr(err, "code", None) in _ENTITY_ERRORS:
            return StreamError("restricted-xml", "entity references are not allowed")
        if getattr(err, "code", None) == etree.ErrorTypes.ERR_RESERVED_XML_NAME:
            return StreamError("restricted-xml", "an XML declaration is only allowed first")
        if _RESTRICTED_MARKUP.search(self._recent + chunk):
            return StreamError("restricted-xml", "markup declarations are not allowed")
        return StreamError("not-well-formed", None)
