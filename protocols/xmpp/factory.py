"""The XMPP listener: builds connections and keeps the table of bound sessions.

One factory serves both the STARTTLS port and the direct-TLS port (a connection tells which
from its transport), so every session of the server is in one table: resources of an account,
presence broadcast and IQ forwarding all look here.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from chatserver.core.events import AccountChange as CoreAccountChange
from chatserver.core.events import Away as CoreAway
from chatserver.core.events import KeptRooms
from chatserver.core.events import Presence as CorePresence
from chatserver.core.names import casefold
from chatserver.core.service import ChatService
from protocols.xmpp import handoff, sm
from protocols.xmpp.connection import XmppConnection
from protocols.xmpp.jid import address_of, guest_jid, user_jid
from protocols.xmpp.pep import PepData
from protocols.xmpp.pep_store import IPepStore, MemoryPepStore
from protocols.xmpp.roster import Rosters
from protocols.xmpp.roster_store import IRosterStore, MemoryRosterStore
from protocols.xmpp.stream import Limits

# Modules whose import registers handlers in the router table.
HANDLER_MODULES = (
    "bind",
    "carbons",
    "roster",
    "presence",
    "im",
    "disco",
    "ping",
    "version",
    "register",
    "caps",
    "pep",
    "private",
    "vcard",
    "blocking",
    "upload",
    "retract",
)

_loaded = False


_log = Logger()


def load_handlers() -> None:
    """Import every handler module of the package, and the ``muc`` package when present."""
    global _loaded
    if _loaded:
        return
    for name in HANDLER_MODULES:
        importlib.import_module(f"protocols.xmpp.{name}")
    try:
        muc = importlib.import_module("protocols.xmpp.muc")
    except ModuleNotFoundError as err:
        if err.name not in ("protocols.xmpp.muc",):
            raise
    else:
        for info in pkgutil.walk_packages(muc.__path__, "protocols.xmpp.muc."):
            importlib.import_module(info.name)
    _loaded = True


class XmppFactory(Factory):
    """``tls_options`` is a callable giving the server's CertificateOptions (for STARTTLS), or
    None to offer no STARTTLS.  ``clock`` defaults to the reactor; ``roster_store`` and
    ``pep_store`` (the server's store, given by the wiring) to ones in memory."""

    protocol = XmppConnection
    # One log line per start of each listener is noise next to the app's own "listening".
    noisy = False

    def __init__(
        self,
        service: ChatService,
        config: Any,
        *,
        tls_options: Callable[[], Any] | None = None,
        clock: Any = None,
        roster_store: IRosterStore | None = None,
        pep_store: IPepStore | None = None,
    ) -> None:
        load_handlers()
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        self.service = service
        self.config = config
        self.domain: str = config.domain.lower()
        self.tls_options = tls_options
        self.clock = clock
        if roster_store is None:
            roster_store = MemoryRosterStore()
        self.roster_store = roster_store
        self.rosters = Rosters(roster_store)
        if pep_store is None:
            pep_store = MemoryPepStore()
        self.pep_store = pep_store
        self.pep = PepData(pep_store)
        # HTTP File Upload's store (protocols.web.upload.UploadStore), set by the wiring when
        # the web listener serves uploads; None: no upload service.
        self.uploads: Any = None
        # Entity capabilities (XEP-0115) checked against their hash: ver -> features.
        self.caps: dict[str, frozenset[str]] = {}
        # casefolded bare JID -> resource -> connection, in binding order.
        self.sessions: dict[str, dict[str, XmppConnection]] = {}
        # Stream management: resumable sessions, counters, where unacknowledged stanzas go.
        self.sm = sm.Registry()
        self._stream_limits: tuple[Any, Limits] | None = None
        # Folded account -> the autojoin bookmarks change being written (see autojoin).
        self.bookmark_writes: dict[str, Deferred[Any]] = {}
        service.observe(self._observe)
        self._keep_archive_contacts()
        # Cluster mode: streams whose account lives here, handed off by the other nodes.
        handoff.register(self)

    def _keep_archive_contacts(self) -> None:
        """Accounts whose archive keeps their contacts' messages (MAM ``roster``): the core
        is given their rosters now and each change after."""
        from protocols.xmpp import mam

        self.rosters.watchers.append(lambda *change: mam.roster_changed(self, *change))
        for account in self.service.archive_roster_accounts():
            d = mam.give_contacts(self, account).addCallback(self._roster_given, account)
            d.addErrback(self._roster_failed, account)

    def _roster_given(self, _: Any, account: str) -> None:
        # Loaded only for this: not kept for an account that no XMPP client is using.
        if not self.resources(user_jid(account, self.domain)):
            self.rosters.forget(account)

    def _roster_failed(self, failure: Any, account: str) -> None:
        _log.failure("roster of {a}", failure, a=account)

    def collect_metrics(self) -> Iterator[Metric]:
        """Stream management and client state figures, read at scrape time."""
        registry = self.sm
        for name, doc, value in (
            ("enabled", "Streams that enabled stream management (XEP-0198).", registry.enabled),
            ("resumed", "Sessions resumed on a new connection.", registry.resumed),
            (
                "resume_failed",
                "Refused resumptions (unknown, expired, bad count).",
                registry.resume_failed,
            ),
        ):
            yield CounterMetricFamily(f"chatserver_xmpp_sm_{name}", doc, value=value)
        unacked = CounterMetricFamily(
            "chatserver_xmpp_sm_unacked",
            "Unacknowledged stanzas of ended sessions: kept for the account's next login,"
            " returned to their senders, or dropped (room messages, presences, chat states).",
            labels=["outcome"],
        )
        unacked.add_metric(["kept"], registry.kept)
        unacked.add_metric(["bounced"], registry.bounced)
        unacked.add_metric(["dropped"], registry.dropped)
        yield unacked
        yield GaugeMetricFamily(
            "chatserver_xmpp_sm_detached",
            "Sessions waiting to be resumed.",
            value=registry.detached(),
        )
        yield GaugeMetricFamily(
            "chatserver_xmpp_sm_queued",
            "Stanzas sent to resumable sessions and not yet acknowledged.",
            value=registry.queued(),
        )
        yield GaugeMetricFamily(
            "chatserver_xmpp_csi_inactive",
            "Sessions whose client said it is inactive (XEP-0352).",
            value=sum(
                1
                for resources in self.sessions.values()
                for conn in resources.values()
                if conn.inactive
            ),
        )

    def _observe(self, event: Any) -> None:
        """Nicks going online, offline and away, for roster contacts on other protocols."""
        if isinstance(event, CorePresence):
            if not self.rosters.cache:
                # No roster loaded, so no subscriber online (see presence.core_presence):
                # a user of another protocol coming or going costs not even its address.
                return
            from protocols.xmpp import presence

            presence.core_presence(self, address_of(event.who, self.domain), event.online)
        elif isinstance(event, CoreAccountChange):
            from protocols.xmpp import presence

            # An address belongs to its account: logging in or out moves the user from one
            # address (a guest's, or the account's) to another.
            who = event.who
            if event.previous is not None:
                old = user_jid(event.previous, self.domain)
            else:
                old = guest_jid(who.nick, self.domain)
            presence.core_presence(self, old, False)
            presence.core_presence(self, address_of(who, self.domain), True)
        elif isinstance(event, CoreAway):
            from protocols.xmpp import presence

            presence.contact_away(self, event.who)
        elif isinstance(event, KeptRooms):
            from protocols.xmpp import autojoin

            autojoin.rooms_changed(self, event)

    @property
    def stream_limits(self) -> Limits:
        """The stream layer's limits, from the configuration (which a reload replaces);
        shared by every stream opened under one configuration."""
        config = self.config
        cached = self._stream_limits
        if cached is None or cached[0] is not config:
            limits = Limits(
                stanza_bytes=config.max_stanza_bytes,
                depth=config.max_depth,
                elements=config.max_stanza_elements,
                attributes=config.max_attributes,
                attribute_bytes=config.max_attribute_bytes,
            )
            cached = self._stream_limits = (config, limits)
        return cached[1]

    def buildProtocol(self, addr: Any) -> XmppConnection:
        conn = XmppConnection(self)
        conn.factory = self
        return conn

    def registration_open(self) -> bool:
        mode = self.config.registration or self.service.settings.registration
        return mode in ("open", "invite")

    # -- sessions -----------------------------------------------------------------------------

    def add_session(self, conn: XmppConnection) -> None:
        assert conn.bare_jid is not None and conn.resource is not None
        self.sessions.setdefault(casefold(conn.bare_jid), {})[conn.resource] = conn

    def remove_session(self, conn: XmppConnection) -> None:
        if conn.bare_jid is None or conn.resource is None:
            return
        key = casefold(conn.bare_jid)
        resources = self.sessions.get(key)
        if resources is not None and resources.get(conn.resource) is conn:
            del resources[conn.resource]
            if not resources:
                del self.sessions[key]
                if conn.account is not None:
                    self.rosters.forget(conn.account)
                    self.pep.forget(conn.account)

    def session(self, bare_jid: str, resource: str) -> XmppConnection | None:
        """The connection bound to ``bare_jid/resource``, or None."""
        return self.sessions.get(casefold(bare_jid), {}).get(resource)

    def resources(self, bare_jid: str) -> list[XmppConnection]:
        """Every bound connection of an account, oldest first."""
        return list(self.sessions.get(casefold(bare_jid), {}).values())

    def available(self, bare_jid: str) -> Iterator[XmppConnection]:
        """The bound connections of an account that have sent initial presence."""
        for conn in self.resources(bare_jid):
            if conn.available:
                yield conn
