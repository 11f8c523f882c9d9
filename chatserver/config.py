"""The configuration file: one TOML file, one frozen dataclass per section.

Every key has its default in exactly one place: the field defaults below, or for ``[chat]`` the
field defaults of :class:`chatserver.core.settings.CoreSettings`.  The file is checked whole:
an unknown section or key, a wrong type or a bad value is reported with the file, the section,
the key and the reason, and every problem found is reported at once, so an operator fixes the
file in one pass instead of one restart per mistake.

Relative paths (``data_dir``, ``[storage] path``, ``[tls]`` files) are taken from the working
directory of the process.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import os
import re
import tomllib
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatserver.cluster.address import parse_url as parse_redis_url
from chatserver.core.bans import ServerBan, normalize_ban_mask
from chatserver.core.errors import BadName
from chatserver.core.names import is_valid_nick
from chatserver.core.settings import CoreSettings
from chatserver.passwords import is_valid_hash

DEFAULTS_SOURCE = "<defaults>"


class ConfigError(Exception):
    """The configuration cannot be used.  ``problems`` holds one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


# -- checks ------------------------------------------------------------------------------------


class _Invalid(Exception):
    """A value failed its check: ``expected`` says what was wanted."""

    def __init__(self, expected: str, value: object, suffix: str = "") -> None:
        super().__init__(expected)
        self.expected = expected
        self.value = value
        # Narrows the key when one element of a list is wrong, e.g. "[2]".
        self.suffix = suffix


Check = Callable[[object], Any]


def _show(value: object) -> str:
    """``value`` as it would be written in TOML, shortened for an error message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = json.dumps(value if len(value) <= 60 else value[:57] + "...", ensure_ascii=False)
        return text
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        shown = "[" + ", ".join(_show(v) for v in value[:5]) + (", ...]" if len(value) > 5 else "]")
        return shown
    if isinstance(value, dict):
        return "a table"
    return str(value)


@dataclass(frozen=True, slots=True)
class _Int:
    low: int
    high: int | None = None

    @property
    def expected(self) -> str:
        if self.high is None:
            return f"expected an integer of at least {self.low}"
        return f"expected an integer from {self.low} to {self.high}"

    def __call__(self, value: object) -> int:
        # bool is an int in Python but `true` is not a number in the file.
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(self.expected, value)
        if value < self.low or (self.high is not None and value > self.high):
            raise _Invalid(self.expected, value)
        return value


@dataclass(frozen=True, slots=True)
class _Number:
    low: float
    high: float | None = None
    # True when ``low`` itself is refused (a rate or a period of 0 means nothing sensible).
    above: bool = False

    @property
    def expected(self) -> str:
        low = f"{self.low:g}"
        if self.high is not None:
            return f"expected a number from {low} to {self.high:g}"
        return (
            f"expected a number greater than {low}"
            if self.above
            else f"expected a number of at least {low}"
        )

    def __call__(self, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(self.expected, value)
        number = float(value)
        if not math.isfinite(number):
            raise _Invalid(self.expected, value)
        if number < self.low or (self.above and number == self.low):
            raise _Invalid(self.expected, value)
        if self.high is not None and number > self.high:
            raise _Invalid(self.expected, value)
        return number


@dataclass(frozen=True, slots=True)
class _Bool:
    def __call__(self, value: object) -> bool:
        if not isinstance(value, bool):
            raise _Invalid("expected true or false", value)
        return value


@dataclass(frozen=True, slots=True)
class _Text:
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    # What a matching value looks like, for the message when ``pattern`` refuses one.
    what: str = "a string"
    test: Callable[[str], bool] | None = None

    def __call__(self, value: object) -> str:
        if self.choices:
            if value not in self.choices:
                options = ", ".join(json.dumps(c) for c in self.choices)
                raise _Invalid(f"expected one of {options}", value)
            return str(value)
        if not isinstance(value, str):
            raise _Invalid(f"expected {self.what}", value)
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise _Invalid(f"expected {self.what}", value)
        if self.test is not None and not self.test(value):
            raise _Invalid(f"expected {self.what}", value)
        return value


# A DNS name such as a server name or XMPP domain: letters, digits, '-' and '.', no spaces.
_HOSTNAME = r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """One entry of a ``listen`` list: an IP address to bind and, optionally, its own port."""

    host: str
    port: int | None = None

    @property
    def ipv6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        if self.port is None:
            return self.host
        return format_address(self.host, self.port)


def format_address(host: str, port: int) -> str:
    """``host:port``, with IPv6 hosts in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


LISTEN_FORMS = 'an address like "0.0.0.0", "127.0.0.1:2323", "::" or "[::1]:2323"'


def parse_listen(text: str) -> ListenAddress:
    """Parse ``addr``, ``addr:port``, ``[v6addr]`` or ``[v6addr]:port`` (addresses are IP literals).

    Raises ValueError when ``text`` is none of those.
    """
    host: str
    port_text: str | None = None
    if text.startswith("["):
        match = re.fullmatch(r"\[([^\]]+)\](?::([0-9]+))?", text)
        if match is None:
            raise ValueError(text)
        host, port_text = match.group(1), match.group(2)
        if ":" not in host:
            raise ValueError(text)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        # No colon: an IPv4 address; several: a bare IPv6 address, which cannot carry a port.
        host = text
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(text) from None
    port = None
    if port_text is not None:
        if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
            raise ValueError(text)
        port = int(port_text)
    return ListenAddress(str(address), port)


@dataclass(frozen=True, slots=True)
class _Listen:
    # Protocol sections may leave ``listen`` empty to use ``[server] listen``.
    allow_empty: bool

    def __call__(self, value: object) -> tuple[ListenAddress, ...]:
        expected = f"expected a list, each entry {LISTEN_FORMS}"
        if not isinstance(value, list) or (not value and not self.allow_empty):
            raise _Invalid(expected, value)
        parsed = []
        for index, item in enumerate(value):
            try:
                if not isinstance(item, str):
                    raise ValueError(item)
                parsed.append(parse_listen(item))
            except ValueError:
                raise _Invalid(f"expected {LISTEN_FORMS}", item, f"[{index}]") from None
        return tuple(parsed)


@dataclass(frozen=True, slots=True)
class _Networks:
    """A list of IP addresses or CIDR networks, such as ["127.0.0.1", "10.0.0.0/8"]."""

    def __call__(self, value: object) -> tuple[str, ...]:
        expected = 'expected a list of addresses or networks like "10.0.0.0/8"'
        if not isinstance(value, list):
            raise _Invalid(expected, value)
        for index, item in enumerate(value):
            try:
                if not isinstance(item, str):
                    raise ValueError(item)
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise _Invalid(
                    'expected an address or network like "10.0.0.0/8"', item, f"[{index}]"
                ) from None
        return tuple(value)


@dataclass(frozen=True, slots=True)
class _Texts:
    """A list of strings, each passing ``item``."""

    item: _Text

    def __call__(self, value: object) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise _Invalid(f"expected a list, each entry {self.item.what}", value)
        for index, entry in enumerate(value):
            try:
                self.item(entry)
            except _Invalid as bad:
                raise _Invalid(bad.expected, entry, f"[{index}]") from None
        return tuple(value)


def _key(default: Any, check: Check) -> Any:
    """A section field: its default and the check its value from the file must pass."""
    return field(default=default, metadata={"check": check})


_PORT = _Int(1, 65535)
# 0 turns the listener off.
_OPTIONAL_PORT = _Int(0, 65535)
_PATH = _Text(what="a path")
_LOG_LEVELS = ("debug", "info", "warn", "error", "critical")


# -- sections ----------------------------------------------------------------------------------

_CORE_DEFAULTS = {f.name: f.default for f in dataclasses.fields(CoreSettings)}


@dataclass(frozen=True, slots=True)
class ServerConfig:
    # The core's server_name: the one default lives in CoreSettings.
    name: str = _key(
        _CORE_DEFAULTS["server_name"],
        _Text(pattern=_HOSTNAME, what="a host name such as chat.example.org"),
    )
    # IRC's NETWORK token, which may not contain spaces.
    network: str = _key(
        "chatserver",
        _Text(pattern=r"[A-Za-z0-9._-]{1,64}", what="a name of letters, digits, '.', '_' and '-'"),
    )
    description: str = _key("IRC, XMPP and line chat in the same rooms", _Text())
    data_dir: str = _key("var", _Text(pattern=r".+", what="a directory path"))
    listen: tuple[ListenAddress, ...] = _key(
        (ListenAddress("0.0.0.0"),), _Listen(allow_empty=False)
    )
    log_format: str = _key("text", _Text(choices=("text", "json")))
    log_level: str = _key("info", _Text(choices=_LOG_LEVELS))
    # Seconds between looks at the memory the C allocator holds free (given back to the
    # system after a burst, see chatserver.server.memory); 0 turns it off.
    memory_trim_interval: float = _key(60.0, _Number(0, 3600))


@dataclass(frozen=True, slots=True)
class StorageConfig:
    backend: str = _key("sqlite", _Text(choices=("sqlite", "postgresql")))
    # Empty: chatserver.db in data_dir.  Used by the sqlite backend only.
    path: str = _key("", _PATH)
    # postgresql://user:password@host:port/database; required by the postgresql backend.
    dsn: str = _key(
        "",
        _Text(
            pattern=r"((postgresql|postgres)://\S*)?",
            what="a postgresql://user@host:port/database URL",
        ),
    )


def _redis_url(value: str) -> bool:
    if not value:
        return True
    try:
        parse_redis_url(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    # redis://host:port/db, or unix:///path/to/redis.sock?db=N for a Redis on this machine:
    # several processes share users and rooms through it.  Empty: one process on its own
    # (the default).
    redis: str = _key(
        "",
        _Text(
            test=_redis_url,
            what="a redis://host:port/db or unix:///path/to/redis.sock?db=N URL",
        ),
    )
    # This process's name in the cluster, unique per process; required with redis.
    node: str = _key(
        "", _Text(pattern=r"[A-Za-z0-9._-]{0,64}", what="a node name ([A-Za-z0-9._-])")
    )
    # Seconds a node's nicks stay its own after its last heartbeat (a third of this apart).
    lease: float = _key(10.0, _Number(1, 600))
    # Before every Redis key, so that several clusters may share one Redis.
    prefix: str = _key("chatserver", _Text(pattern=r"[A-Za-z0-9._:-]{1,64}", what="a key prefix"))
    # Send the lines a room message was rendered to for this node's members with it, and
    # give other nodes' to this node's members of the same rendering as they are: for nodes
    # of one version and configuration.  Off on every node while nodes of different
    # versions run together (an upgrade): each node then sends messages one by one, as
    # versions before did, and renders every message itself.
    share_rendered: bool = _key(True, _Bool())
    # Seconds between a node's publishes to Redis, at least: what its users say meanwhile
    # waits and goes in the next one.  The first after a quieter spell goes at once.  0:
    # every reactor turn publishes its own (lowest latency, most CPU at a moderate load).
    publish_interval: float = _key(0.002, _Number(0, 1))
    # Bytes of entries each node's stream in Redis keeps, about: how far back a node that
    # lost Redis for a while can catch up (one that missed more asks every node for its
    # state).  Busy nodes' entries are tens of kB each: without a bound in bytes they would
    # fill Redis's memory.
    stream_bytes: int = _key(128 << 20, _Int(1 << 16, 1 << 40))


@dataclass(frozen=True, slots=True)
class TlsConfig:
    # Both empty: a self-signed pair (tls.crt, tls.key) is made in data_dir on first start.
    certificate: str = _key("", _PATH)
    key: str = _key("", _PATH)
    # Seconds a client has to finish the TLS handshake on a TLS port before it is dropped.
    handshake_timeout: float = _key(30.0, _Number(1, 3600))


@dataclass(frozen=True, slots=True)
class LineConfig:
    enabled: bool = _key(True, _Bool())
    port: int = _key(2323, _PORT)
    # TLS on its own port (2324 is the usual choice); 0 turns it off.
    tls_port: int = _key(0, _OPTIONAL_PORT)
    # Empty in the file: [server] listen.
    listen: tuple[ListenAddress, ...] = _key((), _Listen(allow_empty=True))
    max_line_bytes: int = _key(4096, _Int(64, 1 << 20))
    # Token bucket: `flood_burst` lines at once, refilled at `flood_rate` lines per second.
    flood_burst: int = _key(20, _Int(1))
    flood_rate: float = _key(5.0, _Number(0, above=True))
    # Lines past an empty bucket are dropped with a warning; one warning more closes the connection.
    flood_max_warnings: int = _key(3, _Int(0))
    # Seconds of silence before a probe line, then seconds more before the connection is closed.
    idle_timeout: float = _key(300.0, _Number(1))
    ping_timeout: float = _key(60.0, _Number(1))
    motd: str = _key("", _Text())
    # Refuse plaintext connections from other machines (loopback may always connect).
    require_tls: bool = _key(False, _Bool())
    # Accept passwords (/identify, /register, /oper...) on a plaintext connection from another
    # machine; off by default, since anyone on the path could read them.
    plaintext_passwords: bool = _key(False, _Bool())


@dataclass(frozen=True, slots=True)
class IrcConfig:
    enabled: bool = _key(True, _Bool())
    port: int = _key(6667, _PORT)
    tls_port: int = _key(6697, _OPTIONAL_PORT)
    listen: tuple[ListenAddress, ...] = _key((), _Listen(allow_empty=True))
    # Without tags; 512 is the RFC 1459 limit that every client expects.
    max_line_bytes: int = _key(512, _Int(512, 65536))
    # A text file shown as the message of the day; empty: no MOTD (numeric 422).
    motd_file: str = _key("", _PATH)
    # Seconds a new connection has to finish NICK/USER (and CAP END).
    registration_timeout: float = _key(60.0, _Number(1))
    # Seconds of silence before the server sends PING, then seconds more before it gives up.
    ping_interval: float = _key(120.0, _Number(1))
    ping_timeout: float = _key(60.0, _Number(1))
    # Flood control, a penalty budget per connection: `flood_burst` tokens refilled at
    # `flood_rate` per second; each command costs its penalty (most cost 1).  Commands past
    # the budget wait; more than `flood_max_queue` waiting lines close the connection
    # ("Excess Flood").  `flood_burst = 0` turns flood control off.
    flood_burst: int = _key(10, _Int(0, 10_000))
    flood_rate: float = _key(2.0, _Number(0, above=True))
    flood_max_queue: int = _key(64, _Int(1, 100_000))
    # Addresses or networks (CIDR) exempt from flood control: trusted bots and bridges.
    flood_exempt: tuple[str, ...] = _key((), _Networks())
    # Output a client may leave unread (bytes past the socket buffer) before it is closed.
    sendq_bytes: int = _key(1 << 20, _Int(64 * 1024, 1 << 30))
    # Accept passwords (SASL PLAIN, NickServ IDENTIFY/REGISTER, REGISTER, OPER) on a plaintext
    # connection from another machine; off by default, since anyone on the path could read
    # them.  SASL SCRAM-SHA-256 never sends the password and is always offered.
    plaintext_passwords: bool = _key(False, _Bool())
    # draft/account-registration: REGISTER before NICK/USER/CAP END are done (the nick sent
    # with NICK is the account; a nick someone is using cannot be registered that way).
    registration_before_connect: bool = _key(False, _Bool())
    # A server password every IRC client must send with PASS before registering (a private
    # server); a hash made by `chatserver hash-password`, like operators' passwords.  Empty:
    # no password.
    password: str = _key(
        "",
        _Text(
            test=lambda v: not v or is_valid_hash(v),
            what="a hash made by `chatserver hash-password` (scrypt$...)",
        ),
    )


@dataclass(frozen=True, slots=True)
class XmppConfig:
    enabled: bool = _key(True, _Bool())
    port: int = _key(5222, _PORT)
    # Direct TLS (XEP-0368); 0 turns it off and leaves STARTTLS on `port`.
    tls_port: int = _key(5223, _OPTIONAL_PORT)
    listen: tuple[ListenAddress, ...] = _key((), _Listen(allow_empty=True))
    domain: str = _key(
        "localhost", _Text(pattern=_HOSTNAME, what="a domain name such as example.org")
    )
    # Empty: conference.<domain>.
    muc_service: str = _key(
        "", _Text(pattern=f"(?:{_HOSTNAME})?", what="a domain name such as conference.example.org")
    )
    require_tls: bool = _key(True, _Bool())
    # Loopback clients (a local bridge, tests) may skip TLS unless this is true.
    require_tls_on_loopback: bool = _key(False, _Bool())
    # In-band registration (XEP-0077): "" follows [chat] registration; "open", "closed" or
    # "invite".
    registration: str = _key("", _Text(choices=("", "open", "closed", "invite")))
    # Contacts one account may keep in its roster.
    max_roster_items: int = _key(1000, _Int(1, 100_000))
    # One top-level element (stanza) may be this big; deeper nesting than max_depth is refused.
    max_stanza_bytes: int = _key(262144, _Int(4096, 16 << 20))
    max_depth: int = _key(32, _Int(4, 256))
    # Elements in one stanza: each costs the parser a few Python calls.
    max_stanza_elements: int = _key(4096, _Int(16, 1 << 20))
    # Attributes of one element (namespace declarations included) and the bytes of their
    # values: each attribute costs the parser more than the one before.
    max_attributes: int = _key(64, _Int(8, 4096))
    max_attribute_bytes: int = _key(16384, _Int(4096, 16 << 20))
    # Seconds of silence before the server pings a client, then seconds more before it gives up.
    idle_timeout: float = _key(300.0, _Number(1))
    ping_timeout: float = _key(60.0, _Number(1))
    # Seconds a client has from connecting to a bound resource (STARTTLS, SASL, bind).
    negotiation_timeout: float = _key(60.0, _Number(1))
    # Flood control for a logged-in client: `flood_burst` stanzas at once, then `flood_rate`
    # per second; stanzas past the budget wait their turn, and more than `flood_max_queue`
    # waiting end the stream with policy-violation.
    flood_burst: int = _key(50, _Int(1, 100_000))
    flood_rate: float = _key(10.0, _Number(0, above=True))
    flood_max_queue: int = _key(200, _Int(1, 100_000))
    # Stream management (XEP-0198): seconds a session whose connection dropped stays in its
    # rooms, receiving, for its client to resume it (0: no resumption, acks only).
    resume_timeout: float = _key(300.0, _Number(0, 86400))
    # Stanzas sent and not yet acknowledged that one stream may have; past it the stream
    # ends with policy-violation (and a detached session ends).
    max_unacked: int = _key(1000, _Int(10, 100_000))
    # Client state indication (XEP-0352): non-urgent stanzas held for an inactive client;
    # past this many, they are all sent.
    csi_max_held: int = _key(256, _Int(1, 100_000))
    # Personal data one account may keep (PEP items, private XML storage, vCard): this many
    # items of this many bytes in all; past it a publication is refused with not-allowed.
    pep_max_items: int = _key(1000, _Int(1, 1_000_000))
    pep_max_bytes: int = _key(1 << 20, _Int(4096, 1 << 30))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    # Prometheus metrics at /metrics and a health check at /health, over HTTP.
    enabled: bool = _key(False, _Bool())
    # One IP address; the endpoint has no authentication, so loopback unless a firewall or a
    # private network guards it.
    listen: str = _key("127.0.0.1", _Text(test=_is_ip, what='an IP address such as "127.0.0.1"'))
    port: int = _key(9464, _PORT)
    # Seconds between event-loop lag samples.
    lag_interval: float = _key(0.5, _Number(0.01, 60))


@dataclass(frozen=True, slots=True)
class WebConfig:
    # The HTTP listener: WebSocket for IRC (/irc), XMPP (/xmpp-websocket) and line chat
    # (/line), XMPP's host-meta, and the web client at /.
    enabled: bool = _key(True, _Bool())
    port: int = _key(8080, _PORT)
    # HTTPS and WSS with the server's certificate; 0 turns it off.
    tls_port: int = _key(8443, _OPTIONAL_PORT)
    listen: tuple[ListenAddress, ...] = _key((), _Listen(allow_empty=True))
    # Origins (like "https://chat.example.org") whose pages may open a WebSocket; empty: the
    # server's own page only; "*": any page.
    allowed_origins: tuple[str, ...] = _key(
        (),
        _Texts(_Text(pattern=r"\*|https?://[^/\s]+", what='an origin like "https://example.org"')),
    )
    # Reverse proxies whose X-Forwarded-For / Forwarded header names the client's address.
    trusted_proxies: tuple[str, ...] = _key((), _Networks())
    # The largest WebSocket message a client may send, in bytes.
    max_message_bytes: int = _key(65536, _Int(1024, 16 << 20))
    # Seconds a client has to send an HTTP request's headers (the WebSocket upgrade included),
    # and seconds an HTTP connection may stay silent before it is closed.
    header_timeout: float = _key(10.0, _Number(1, 3600))
    idle_timeout: float = _key(60.0, _Number(1, 3600))
    # Rooms the web client joins on login.
    default_rooms: tuple[str, ...] = _key(
        ("lobby",), _Texts(_Text(pattern=r"[a-z0-9._-]{1,50}", what="a room name such as lobby"))
    )
    # The web client's files (Converse.js's dist directory); empty: web/node_modules/converse.js/dist
    # in the source tree, where `make` installs it.
    client_dir: str = _key("", _PATH)


@dataclass(frozen=True, slots=True)
class UploadConfig:
    # HTTP File Upload (XEP-0363) for XMPP clients: slots from an XMPP service, files PUT to
    # and served by the web listener, kept in the data directory's "uploads".
    enabled: bool = _key(True, _Bool())
    # The upload service's XMPP address; empty: upload.<[xmpp] domain>.
    service: str = _key("", _Text(pattern=f"|{_HOSTNAME}", what="a domain name"))
    # The largest file, in bytes.
    max_file_size: int = _key(10 << 20, _Int(1, 1 << 40))
    # Bytes an account may keep stored at once (its files until they expire).
    quota: int = _key(100 << 20, _Int(1, 1 << 50))
    # Seconds a file is kept; 0 keeps files forever.
    expire_after: float = _key(7 * 86400.0, _Number(0))
    # Seconds a slot's PUT URL stays usable (once only).
    slot_timeout: float = _key(300.0, _Number(1, 86400))
    # Content types that may be uploaded ("image/*" for a family); empty: any.
    allowed_types: tuple[str, ...] = _key(
        (), _Texts(_Text(pattern=r"[\w.+-]+/(\*|[\w.+-]+)", what='a type like "image/*"'))
    )
    # Where clients reach the web listener, such as "https://chat.example.org" (behind a proxy);
    # empty: https://<[xmpp] domain>:<[web] tls_port>, or the plain port with plain_http.
    base_url: str = _key("", _Text(pattern=r"|https?://[^\s/?#]+(/[^\s?#]*)?", what="a URL"))
    # Hand out http:// URLs on [web] port instead of https:// ones (a test or a trusted network).
    plain_http: bool = _key(False, _Bool())


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    # Days that room and private history is kept; 0 keeps it forever.  Expiry runs hourly in
    # small batches off the reactor thread.
    retention: float = _key(0.0, _Number(0, 100_000))


# [chat] keys are CoreSettings fields; server_name comes from [server] name instead.
_CHAT_FROM_SERVER = {"server_name", "history_retention"}
_CHAT_CHECKS: dict[str, Check] = {
    "history_in_memory": _Int(0, 100_000),
    "history_flush_interval": _Number(0, 3600),
    "history_unstored_limit": _Int(1, 10_000_000),
    "nick_enforcement": _Text(choices=("strict", "timeout")),
    "nick_enforce_timeout": _Number(0),
    "guest_prefix": _Text(test=is_valid_nick, what="the start of a nick, such as Guest"),
    "registration": _Text(choices=("open", "closed", "invite")),
    "min_password_length": _Int(1, 1024),
    "max_rooms_per_user": _Int(1),
    # 0: no limit.
    "max_connections_per_address": _Int(0),
    "address_limit_exempt": _Networks(),
    "registration_burst": _Int(1),
    "registration_period": _Number(0, above=True),
    "login_failure_burst": _Int(1),
    "login_failure_period": _Number(0, above=True),
    # RFC 7677 asks for at least 4096 rounds.
    "scram_iterations": _Int(4096, 10_000_000),
    "topic_max": _Int(1, 4096),
    "kick_reason_max": _Int(1, 4096),
    "away_max": _Int(1, 4096),
    "realname_max": _Int(1, 4096),
    "cloak_secret": _Text(),
    "join_history_lines": _Int(0, 10_000),
    "always_on_checkpoint": _Number(0, above=True),
}
_CHECK_BY_TYPE: dict[Any, Check] = {
    int: _Int(0),
    float: _Number(0),
    str: _Text(),
    bool: _Bool(),
}


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    """One ``[[operators]]`` entry: ``OPER <name> <password>`` makes a server operator."""

    name: str
    # A hash made by `chatserver hash-password` (chatserver.passwords), never the password.
    password: str


@dataclass(frozen=True, slots=True)
class WebircConfig:
    """One ``[[webirc]]`` entry: an IRC web gateway (The Lounge, Kiwi IRC's webircgateway)
    that may say, with ``WEBIRC``, which address each of its users connects from."""

    name: str
    # A hash made by `chatserver hash-password`.
    password: str
    # The gateway's own addresses or networks: WEBIRC from anywhere else is refused.
    hosts: tuple[str, ...]


# The top-level array of tables that lists IRC web gateways.
WEBIRC_KEY = "webirc"


# The top-level array of tables that lists operators (not a section: there may be several).
OPERATORS_KEY = "operators"


def _load_operators(value: object, problems: _Problems) -> tuple[OperatorConfig, ...]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        problems.add(None, OPERATORS_KEY, "expected [[operators]] tables with name and password")
        return ()
    operators: list[OperatorConfig] = []
    seen: set[str] = set()
    for index, table in enumerate(value):
        where = f"{OPERATORS_KEY}[{index}]"
        for key in table:
            if key not in ("name", "password"):
                problems.add(
                    None, f"{where} {key}", "unknown key" + _suggest(key, ("name", "password"))
                )
        name, password = table.get("name"), table.get("password")
        if not isinstance(name, str) or not name or " " in name:
            problems.add(
                None, f"{where} name", f"expected a name without spaces, got {_show(name)}"
            )
            continue
        if name in seen:
            problems.add(None, f"{where} name", f"{_show(name)} is listed twice")
        if not isinstance(password, str) or not is_valid_hash(password):
            problems.add(
                None,
                f"{where} password",
                "expected a hash made by `chatserver hash-password` (scrypt$...)",
            )
            continue
        seen.add(name)
        operators.append(OperatorConfig(name, password))
    return tuple(operators)


def _load_webirc(value: object, problems: _Problems) -> tuple[WebircConfig, ...]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        problems.add(None, WEBIRC_KEY, "expected [[webirc]] tables with name, password and hosts")
        return ()
    gateways: list[WebircConfig] = []
    keys = ("name", "password", "hosts")
    for index, table in enumerate(value):
        where = f"{WEBIRC_KEY}[{index}]"
        for key in table:
            if key not in keys:
                problems.add(None, f"{where} {key}", "unknown key" + _suggest(key, keys))
        name, password = table.get("name"), table.get("password")
        if not isinstance(name, str) or not name or " " in name:
            problems.add(
                None, f"{where} name", f"expected a name without spaces, got {_show(name)}"
            )
            continue
        if not isinstance(password, str) or not is_valid_hash(password):
            problems.add(
                None,
                f"{where} password",
                "expected a hash made by `chatserver hash-password` (scrypt$...)",
            )
            continue
        try:
            hosts = _Networks()(table.get("hosts"))
        except _Invalid as bad:
            problems.add(
                None, f"{where} hosts{bad.suffix}", f"{bad.expected}, got {_show(bad.value)}"
            )
            continue
        if not hosts:
            problems.add(None, f"{where} hosts", "expected at least one address or network")
            continue
        gateways.append(WebircConfig(name, password, hosts))
    return tuple(gateways)


# The top-level array of tables that lists server-wide bans: `mask` or `account`, and `reason`.
BANS_KEY = "bans"


def _load_bans(value: object, problems: _Problems) -> tuple[ServerBan, ...]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        problems.add(None, BANS_KEY, "expected [[bans]] tables with mask or account, and reason")
        return ()
    bans: dict[str, ServerBan] = {}
    for index, table in enumerate(value):
        where = f"{BANS_KEY}[{index}]"
        for key in table:
            if key not in ("mask", "account", "reason"):
                problems.add(
                    None,
                    f"{where} {key}",
                    "unknown key" + _suggest(key, ("mask", "account", "reason")),
                )
        mask, account, reason = table.get("mask"), table.get("account"), table.get("reason", "")
        if (mask is None) == (account is None):
            problems.add(None, where, "expected either mask or account (one of them)")
            continue
        key, raw = ("mask", mask) if mask is not None else ("account", account)
        if not isinstance(raw, str):
            problems.add(None, f"{where} {key}", f"expected a string, got {_show(raw)}")
            continue
        if not isinstance(reason, str):
            problems.add(None, f"{where} reason", f"expected a string, got {_show(reason)}")
            continue
        try:
            normalized = normalize_ban_mask(raw if key == "mask" else "$a:" + raw)
        except BadName as err:
            problems.add(None, f"{where} {key}", f"{err.reason}, got {_show(raw)}")
            continue
        bans[normalized] = ServerBan(normalized, reason, "config")
    return tuple(bans.values())


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig
    chat: CoreSettings
    storage: StorageConfig
    tls: TlsConfig
    line: LineConfig
    irc: IrcConfig
    xmpp: XmppConfig
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    web: WebConfig = field(default_factory=WebConfig)
    upload: UploadConfig = field(default_factory=UploadConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    operators: tuple[OperatorConfig, ...] = ()
    webirc: tuple[WebircConfig, ...] = ()
    bans: tuple[ServerBan, ...] = ()
    # Where the values came from (a path or "<defaults>"); not part of what the config *is*.
    source: str = field(default=DEFAULTS_SOURCE, compare=False)

    @property
    def data_dir(self) -> Path:
        return Path(self.server.data_dir)

    def data_path(self, name: str) -> Path:
        """A file in the data directory."""
        return Path(self.server.data_dir) / name


# Section name -> the class of the section (the names are also Config's attributes).
SECTIONS: dict[str, type] = {
    "server": ServerConfig,
    "chat": CoreSettings,
    "storage": StorageConfig,
    "tls": TlsConfig,
    "line": LineConfig,
    "irc": IrcConfig,
    "xmpp": XmppConfig,
    "metrics": MetricsConfig,
    "web": WebConfig,
    "upload": UploadConfig,
    "history": HistoryConfig,
    "cluster": ClusterConfig,
}
# The sections that describe a listening protocol (enabled, port, listen...).
PROTOCOL_SECTIONS = ("line", "irc", "xmpp", "web")


def _schema(section: str) -> dict[str, tuple[Any, Check]]:
    """key -> (default, check) for one section."""
    cls = SECTIONS[section]
    if cls is CoreSettings:
        hints = typing.get_type_hints(CoreSettings)
        return {
            f.name: (f.default, _chat_check(f.name, hints[f.name]))
            for f in dataclasses.fields(CoreSettings)
            if f.name not in _CHAT_FROM_SERVER
        }
    return {f.name: (f.default, f.metadata["check"]) for f in dataclasses.fields(cls)}


def _chat_check(name: str, kind: Any) -> Check:
    check = _CHAT_CHECKS.get(name) or _CHECK_BY_TYPE.get(kind)
    if check is None:
        raise TypeError(
            f"CoreSettings.{name} ({kind}) needs a check in chatserver.config._CHAT_CHECKS"
        )
    return check


def config_keys() -> dict[str, dict[str, Any]]:
    """Every section and key with its default, as the file spells them."""
    return {section: {k: d for k, (d, _check) in _schema(section).items()} for section in SECTIONS}


# -- where a listener binds --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BindPoint:
    """One socket a protocol listens on."""

    host: str
    port: int
    tls: bool
    # The key that put it there ("port", "tls_port" or "listen"), for messages.
    key: str

    def __str__(self) -> str:
        return format_address(self.host, self.port)


def bind_points(section: Any) -> tuple[BindPoint, ...]:
    """The sockets a protocol section asks for: each listen address on ``port`` (or its own
    port, when the entry names one), and each listen host on ``tls_port`` when that is set."""
    points: dict[tuple[str, int], BindPoint] = {}
    for entry in section.listen:
        key = "listen" if entry.port is not None else "port"
        port = entry.port if entry.port is not None else section.port
        points.setdefault((entry.host, port), BindPoint(entry.host, port, False, key))
    tls_port = getattr(section, "tls_port", 0)
    if tls_port:
        for entry in section.listen:
            points.setdefault(
                (entry.host, tls_port), BindPoint(entry.host, tls_port, True, "tls_port")
            )
    return tuple(points.values())


def _overlaps(a: BindPoint, b: BindPoint) -> bool:
    if a.port != b.port:
        return False
    ia, ib = ipaddress.ip_address(a.host), ipaddress.ip_address(b.host)
    if ia == ib:
        return True
    if ia.version == ib.version:
        return ia.is_unspecified or ib.is_unspecified
    # Linux binds "::" dual-stack by default, so it also takes every IPv4 address on that port.
    return (ia.version == 6 and ia.is_unspecified) or (ib.version == 6 and ib.is_unspecified)


# -- loading -----------------------------------------------------------------------------------


class _Problems:
    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[str] = []

    def add(self, section: str | None, key: str | None, reason: str) -> None:
        where = [self.source]
        if section is not None:
            where.append(f"[{section}]" + (f" {key}" if key else ""))
        elif key is not None:
            where.append(key)
        self.lines.append(": ".join(where) + ": " + reason)


# Keys people will look for in the wrong place.
_MOVED = {("chat", "server_name"): " (the server name is [server] name)"}


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _load_section(section: str, table: Mapping[str, Any], problems: _Problems) -> dict[str, Any]:
    """The checked values of one section; a bad value keeps its default so the rest is checked."""
    schema = _schema(section)
    values = {key: default for key, (default, _check) in schema.items()}
    for key, raw in table.items():
        if key not in schema:
            hint = _MOVED.get((section, key)) or _suggest(key, schema)
            problems.add(section, key, "unknown key" + hint)
            continue
        check = schema[key][1]
        try:
            values[key] = check(raw)
        except _Invalid as bad:
            problems.add(section, key + bad.suffix, f"{bad.expected}, got {_show(bad.value)}")
    return values


def _read(path: str, problems: _Problems) -> dict[str, Any]:
    try:
        with open(path, "rb") as fp:
            return tomllib.load(fp)
    except OSError as err:
        problems.add(None, None, f"cannot read the file: {err.strerror or err}")
    except UnicodeDecodeError:
        problems.add(None, None, "the file is not UTF-8 text")
    except tomllib.TOMLDecodeError as err:
        problems.add(None, None, f"not valid TOML: {err}")
    return {}


def load_config(
    path: str | os.PathLike[str] | None, *, data_dir_override: str | None = None
) -> Config:
    """Read and check the configuration file (``None``: every default).

    ``data_dir_override`` (the ``--data-dir`` option) replaces ``[server] data_dir``.
    Raises :class:`ConfigError` naming the file, section, key and reason of every problem.
    """
    source = DEFAULTS_SOURCE if path is None else os.fspath(path)
    problems = _Problems(source)
    data = {} if path is None else _read(source, problems)

    raw: dict[str, dict[str, Any]] = {}
    for section, table in data.items():
        if section in (OPERATORS_KEY, BANS_KEY, WEBIRC_KEY):
            continue
        if section not in SECTIONS:
            if isinstance(table, dict):
                problems.add(section, None, "unknown section" + _suggest(section, SECTIONS))
            else:
                problems.add(None, section, "keys belong in a section such as [server]")
            continue
        if not isinstance(table, dict):
            problems.add(section, None, f"expected a table, got {_show(table)}")
            continue
    # In the file's order, so the problems read top to bottom.
    for section in sorted(
        SECTIONS, key=lambda name: list(data).index(name) if name in data else len(data)
    ):
        table = data.get(section, {})
        raw[section] = _load_section(section, table if isinstance(table, dict) else {}, problems)

    server = raw["server"]
    if data_dir_override is not None:
        if not data_dir_override:
            problems.lines.append("--data-dir: expected a directory path, got an empty string")
        else:
            server["data_dir"] = data_dir_override
    data_dir = Path(server["data_dir"])

    storage = raw["storage"]
    if not storage["path"]:
        storage["path"] = str(data_dir / "chatserver.db")
    given = data.get("storage")
    # A dsn given but refused has its own problem already.
    if (
        storage["backend"] == "postgresql"
        and not storage["dsn"]
        and not (isinstance(given, dict) and given.get("dsn"))
    ):
        problems.add("storage", "dsn", 'must be set when backend is "postgresql"')

    cluster = raw["cluster"]
    if cluster["redis"] and not cluster["node"]:
        problems.add("cluster", "node", "must be set when redis is set (unique per process)")
    if cluster["redis"] and not raw["chat"]["cloak_secret"]:
        # A node without one makes up its own: one address would then have a cloak per
        # node, and a ban on a cloak would hold on one node only (the balancer sends a
        # banned user's next connection to any node).
        problems.add(
            "chat",
            "cloak_secret",
            "must be set in cluster mode, the same on every node (a user's cloak must be"
            " one across the cluster, or a ban on it holds on one node only)",
        )

    for section in PROTOCOL_SECTIONS:
        if not raw[section]["listen"]:
            raw[section]["listen"] = server["listen"]

    xmpp = raw["xmpp"]
    if not xmpp["muc_service"]:
        xmpp["muc_service"] = f"conference.{xmpp['domain']}"
    elif xmpp["muc_service"].lower() == xmpp["domain"].lower():
        problems.add(
            "xmpp",
            "muc_service",
            "must differ from domain (rooms and users are both addressed by it)",
        )

    tls = raw["tls"]
    if bool(tls["certificate"]) != bool(tls["key"]):
        missing, given = ("key", "certificate") if tls["certificate"] else ("certificate", "key")
        problems.add("tls", missing, f"must be set when {given} is set (or leave both empty)")
    else:
        for key in ("certificate", "key"):
            if tls[key] and not os.path.isfile(tls[key]):
                problems.add("tls", key, f"no such file: {_show(tls[key])}")

    config = Config(
        server=ServerConfig(**server),
        chat=CoreSettings(
            server_name=server["name"],
            history_retention=raw["history"]["retention"],
            **raw["chat"],
        ),
        storage=StorageConfig(**storage),
        tls=TlsConfig(**tls),
        line=LineConfig(**raw["line"]),
        irc=IrcConfig(**raw["irc"]),
        xmpp=XmppConfig(**xmpp),
        metrics=MetricsConfig(**raw["metrics"]),
        web=WebConfig(**raw["web"]),
        upload=UploadConfig(**raw["upload"]),
        history=HistoryConfig(**raw["history"]),
        cluster=ClusterConfig(**cluster),
        operators=_load_operators(data.get(OPERATORS_KEY, []), problems),
        webirc=_load_webirc(data.get(WEBIRC_KEY, []), problems),
        bans=_load_bans(data.get(BANS_KEY, []), problems),
        source=source,
    )
    _check_bind_conflicts(config, problems)
    if problems.lines:
        raise ConfigError(problems.lines)
    return config


def _check_bind_conflicts(config: Config, problems: _Problems) -> None:
    seen: list[tuple[str, BindPoint]] = []
    for section in PROTOCOL_SECTIONS:
        proto = getattr(config, section)
        if not proto.enabled:
            continue
        for point in bind_points(proto):
            for other_section, other in seen:
                if _overlaps(point, other):
                    problems.add(
                        section,
                        point.key,
                        f"{point} is also used by [{other_section}] {other.key} ({other})",
                    )
                    break
            seen.append((section, point))
    if config.metrics.enabled:
        metrics = BindPoint(config.metrics.listen, config.metrics.port, False, "port")
        for other_section, other in seen:
            if _overlaps(metrics, other):
                problems.add(
                    "metrics",
                    "port",
                    f"{metrics} is also used by [{other_section}] {other.key} ({other})",
                )
                break
