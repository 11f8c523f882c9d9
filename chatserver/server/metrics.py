"""Prometheus metrics, and the HTTP listener that serves them with the health check.

Most figures are read when Prometheus scrapes, from counters the chat service keeps anyway
(plain integer adds on the hot path, see ``ChatService.messages_by_protocol`` and friends), by
:class:`ChatCollector`.  Two are sampled: storage latency (each store operation reports its
time) and event-loop lag (:class:`LagMonitor`).  The registry is the server's own, not the
``prometheus_client`` global one, so that several servers in one process (tests) never share
figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from chatserver.cluster.remote import REMOTE_PROTOCOL
from chatserver.core.delivery import RUN_PATHS
from chatserver.server.health import HealthResource

if TYPE_CHECKING:
    from chatserver.server.app import ChatServer

# Store operations take from well under a millisecond (a cached read) to seconds (a backup).
STORAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
# The reactor should answer well within a few milliseconds; anything near a second is an outage.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ChatCollector:
    """Reads the chat service's state and counters at scrape time."""

    def __init__(self, server: ChatServer) -> None:
        self.server = server

    def describe(self) -> list[Metric]:
        # Without this the registry would call collect() at registration, before the start.
        return []

    def collect(self) -> Iterator[Metric]:
        chat = self.server.chat
        if chat is None:
            return
        protocols = self.server.enabled_protocols()

        def by_protocol(counts: dict[str, int]) -> dict[str, int]:
            # Every enabled protocol has a series, at 0 until something happens.  In cluster
            # mode the stand-ins of other nodes' users are counted by their own nodes: each
            # node's figures are its own, to be summed over the nodes.
            own = {key: value for key, value in counts.items() if key != REMOTE_PROTOCOL}
            return {**dict.fromkeys(protocols, 0), **own}

        connections: dict[str, int] = {}
        for conn in chat.connections.values():
            connections[conn.protocol] = connections.get(conn.protocol, 0) + 1
        yield _gauge(
            "chatserver_connections",
            "Open client connections.",
            ["protocol"],
            by_protocol(connections),
        )
        yield GaugeMetricFamily(
            "chatserver_users",
            "Users online (nicks); in cluster mode, of the whole cluster (every node holds"
            " every user).",
            value=len(chat.users),
        )
        registered = sum(1 for room in chat.rooms.values() if room.registered)
        rooms = GaugeMetricFamily(
            "chatserver_rooms", "Rooms in memory (with members, or registered).", labels=["kind"]
        )
        rooms.add_metric(["registered"], registered)
        rooms.add_metric(["unregistered"], len(chat.rooms) - registered)
        yield rooms
        yield _counter(
            "chatserver_messages_received",
            "Messages (room and private) sent by clients, by the sender's protocol.",
            ["protocol"],
            by_protocol(chat.messages_by_protocol),
        )
        yield _counter(
            "chatserver_deliveries",
            "Events handed to client connections, by the receiver's protocol.",
            ["protocol"],
            by_protocol(chat.deliveries_by_protocol),
        )
        yield _counter(
            "chatserver_logins",
            "Successful logins to an account (password, SASL), by protocol.",
            ["protocol"],
            by_protocol(chat.logins_by_protocol),
        )
        yield _counter(
            "chatserver_login_failures",
            "Failed password, SASL and operator checks, by protocol.",
            ["protocol"],
            by_protocol(chat.accounts.failures_by_protocol),
        )
        drops = CounterMetricFamily(
            "chatserver_disconnects",
            "Connections closed by the server for flooding or for not reading their output.",
            labels=["protocol", "reason"],
        )
        for protocol in protocols:
            for reason in ("flood", "slow_reader"):
                drops.add_metric([protocol, reason], chat.drops.get((protocol, reason), 0))
        for (protocol, reason), count in chat.drops.items():
            if protocol not in protocols:
                drops.add_metric([protocol, reason], count)
        yield drops
        yield GaugeMetricFamily(
            "chatserver_history_pending",
            "History messages said but not yet written to the database.",
            value=chat.history_pending(),
        )
        yield GaugeMetricFamily(
            "chatserver_server_bans", "Server-wide bans in force.", value=len(chat.server_bans)
        )
        yield GaugeMetricFamily(
            "chatserver_start_time_seconds",
            "When the server started (Unix time).",
            value=chat.started_at,
        )
        relay_counts = getattr(chat.cluster, "relay_counts", None)
        if relay_counts is not None:
            # Cluster mode: clients handed off between nodes (chatserver.cluster.relay).
            relayed = GaugeMetricFamily(
                "chatserver_relayed_connections",
                "Clients handed off between cluster nodes: served here with their socket on"
                " another node (side served), or with their socket here served by another"
                " node (side piped), by that other node.",
                labels=["side", "node"],
            )
            for (side, node), count in sorted(relay_counts().items()):
                relayed.add_metric([side, node], count)
            yield relayed
        cpu_seconds = getattr(chat.cluster, "cpu_seconds", None)
        if cpu_seconds is not None:
            yield _counter(
                "chatserver_cluster_cpu_seconds",
                "CPU seconds of the node's own cluster work, by part: making and sending the"
                " entries it publishes (publish), its commands connection's replies and what"
                " they run (commands), reading and applying the other nodes' entries"
                " (stream).  What one process does as well, and socket writes, are not in it.",
                ["part"],
                cpu_seconds(),
            )
        if chat.cluster is not None:
            runs = CounterMetricFamily(
                "chatserver_cluster_run_messages",
                "Room messages of other nodes' users, by how they reached this node's members:"
                " as the lines their node rendered (path shipped), as lines rendered here"
                " (rendered), or as events made here for members of protocols without shared"
                " lines (events); a message counts once on each path it took.",
                labels=["path"],
            )
            for path in RUN_PATHS:
                runs.add_metric([path], chat.run_paths[path])
            yield runs
        # A protocol's own figures, where its factory keeps some.
        for _, factory in self.server.factories():
            collect = getattr(factory, "collect_metrics", None)
            if collect is not None:
                yield from collect()


def _gauge(name: str, doc: str, labels: list[str], values: dict[str, int]) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _counter(
    name: str, doc: str, labels: list[str], values: dict[str, int] | dict[str, float]
) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


class LagMonitor:
    """Samples how late the reactor runs a call scheduled ``interval`` seconds ahead.

    A busy or blocked reactor runs every timer late by the same amount, and every client waits
    that long for every line: this is the number to watch for "the server feels slow".
    """

    def __init__(self, clock: Any, interval: float, observe: Callable[[float], None]) -> None:
        self.clock = clock
        self.interval = interval
        self.observe = observe
        self.last = 0.0
        self._expected = 0.0
        self._call: Any = None

    def start(self) -> None:
        self._expected = time.monotonic() + self.interval
        self._call = self.clock.callLater(self.interval, self._tick)

    def _tick(self) -> None:
        now = time.monotonic()
        self.last = max(0.0, now - self._expected)
        self.observe(self.last)
        self._expected = now + self.interval
        self._call = self.clock.callLater(self.interval, self._tick)

    def stop(self) -> None:
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()


class Metrics:
    """The server's registry: the collector, process figures, storage latency and lag."""

    def __init__(self, server: ChatServer) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(ChatCollector(server))
        # RSS, open file descriptors, CPU seconds: process_* as every exporter names them.
        ProcessCollector(registry=self.registry)
        self.storage_seconds = Histogram(
            "chatserver_storage_seconds",
            "Time of each database operation, waiting in the queue included.",
            ["operation"],
            buckets=STORAGE_BUCKETS,
            registry=self.registry,
        )
        self.lag_seconds = Histogram(
            "chatserver_event_loop_lag_seconds",
            "How late the event loop runs a timer.",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.lag = LagMonitor(
            server.reactor, server.config.metrics.lag_interval, self.lag_seconds.observe
        )

    def observe_storage(self, operation: str, seconds: float) -> None:
        self.storage_seconds.labels(operation).observe(seconds)

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition in the format the scraper asks for (``Accept``), and its type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


class MetricsResource(Resource):
    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        accept = request.getHeader(b"accept")
        body, content_type = self.metrics.render(accept.decode("latin-1") if accept else "")
        request.setHeader(b"Content-Type", content_type.encode())
        return body


class _Index(Resource):
    """``/``: says where to look, so a person pointing a browser at the port is not lost."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"chatserver: /metrics (Prometheus), /health\n"


def make_site(server: ChatServer, metrics: Metrics) -> Site:
    root = Resource()
    root.putChild(b"", _Index())
    root.putChild(b"metrics", MetricsResource(metrics))
    root.putChild(b"health", HealthResource(server))
    site = Site(root)
    # One access-log line per scrape (every few seconds) would drown the server's own log.
    site.log = lambda request: None  # type: ignore[method-assign]
    site.noisy = False
    return site
