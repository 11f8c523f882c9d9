"""The service tree in-process, on a memory reactor: order of start and stop, listeners."""

from __future__ import annotations

import io
import json
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import (
    Logger,
    LogLevel,
    LogPublisher,
    formatEventAsClassicLogText,
    textFileLogObserver,
)
from zope.interface import implementer

import chatserver.server.app as app
import chatserver.server.logs as logs
from chatserver.config import PROTOCOL_SECTIONS, BindPoint, load_config
from chatserver.core.interfaces import IChatClient
from tests.app.helpers import line_only_config, write_toml


class FakeStore:
    """Just enough of a store for the service to start and stop; records the calls."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def open(self, *, check: bool = False) -> defer.Deferred[None]:
        self.calls.append("store.open")
        return defer.succeed(None)

    def close(self) -> defer.Deferred[None]:
        self.calls.append("store.close")
        return defer.succeed(None)

    def load_rooms(self) -> defer.Deferred[list[Any]]:
        return defer.succeed([])

    def account_keys(self) -> defer.Deferred[list[str]]:
        return defer.succeed([])

    def latest(self, target: str, limit: int) -> defer.Deferred[list[Any]]:
        return defer.succeed([])

    def load_server_bans(self) -> defer.Deferred[list[Any]]:
        return defer.succeed([])

    def load_blocks(self) -> defer.Deferred[list[Any]]:
        return defer.succeed([])

    def append(self, messages: Any) -> defer.Deferred[None]:
        self.calls.append("store.append")
        return defer.succeed(None)


@implementer(IChatClient)
class FakeClient:
    protocol = "line"
    address = "127.0.0.1"
    secure = True
    echoes_own_messages = True
    echo_at_turn_end = False

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.service: Any = None
        self.conn: Any = None

    def deliver(self, event: object) -> None:
        pass

    def deliver_batch(self, batch: Any) -> None:
        pass

    def disconnect(self, reason: str) -> None:
        self.calls.append(f"told: {reason}")
        self.service.quit(self.conn)


class BusyReactor(MemoryReactorClock):
    def __init__(self, busy_port: int) -> None:
        super().__init__()
        self.busy_port = busy_port

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        if port == self.busy_port:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        return super().listenTCP(port, factory, backlog, interface)


def echo_factory() -> Factory:
    return Factory.forProtocol(Protocol)


def make_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reactor: Any, calls: list[str], **sections: Any
) -> app.ChatServer:
    monkeypatch.setattr(app, "open_store", lambda config, reactor: FakeStore(calls))
    config = load_config(
        str(line_only_config(tmp_path / "c.toml", 4000, **sections)),
        data_dir_override=str(tmp_path / "data"),
    )

    def build_line(ctx: app.ProtocolContext) -> list[app.Listener]:
        assert ctx.reactor is reactor and ctx.config is config
        calls.append("build line")
        return app.listeners_for("line", ctx.config.line, echo_factory())

    return app.ChatServer(config, reactor=reactor, protocols={"line": build_line})


def test_the_table_names_protocol_sections() -> None:
    assert "line" in app.PROTOCOLS
    assert set(app.PROTOCOLS) <= set(PROTOCOL_SECTIONS)
    assert all(callable(build) for build in app.PROTOCOLS.values())


def test_start_opens_the_store_before_listening(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    reactor = MemoryReactorClock()
    server = make_server(
        tmp_path, monkeypatch, reactor, calls, line={"listen": ["127.0.0.1", "::1"]}
    )
    server.startService()
    ready: list[object] = []
    server.when_ready().addCallback(ready.append)
    assert ready == [None]
    assert calls == ["store.open", "build line"]
    assert [(port, backlog, interface) for port, _f, backlog, interface in reactor.tcpServers] == [
        (4000, app.LISTEN_BACKLOG, "127.0.0.1"),
        (4000, app.LISTEN_BACKLOG, "::1"),
    ]
    assert server.chat is not None and server.accounts is not None
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    assert server.exit_status == 0


def test_stop_tells_users_then_closes_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    reactor = MemoryReactorClock()
    server = make_server(tmp_path, monkeypatch, reactor, calls)
    server.startService()
    assert server.chat is not None
    client = FakeClient(calls)
    client.service = server.chat
    client.conn = server.chat.connect(client)
    stopped: list[object] = []
    server.stopService().addCallback(stopped.append)
    assert stopped == [None]
    assert calls[calls.index("build line") + 1 :] == ["told: Server shutting down", "store.close"]
    assert not server.running
    assert all(not child.running for child in server)


def test_stop_waits_a_little_for_goodbyes_to_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    reactor = MemoryReactorClock()
    server = make_server(tmp_path, monkeypatch, reactor, calls)
    server.startService()
    assert server.chat is not None
    client = FakeClient(calls)
    client.service = server.chat
    client.disconnect = lambda reason: calls.append(f"told: {reason}")  # type: ignore[method-assign]
    client.conn = server.chat.connect(client)
    stopped: list[object] = []
    server.stopService().addCallback(stopped.append)
    assert stopped == [] and "store.close" not in calls
    reactor.advance(0.5)
    server.chat.quit(client.conn)
    reactor.advance(0.05)
    assert stopped == [None] and calls[-1] == "store.close"


def test_stop_gives_up_on_connections_that_never_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    reactor = MemoryReactorClock()
    server = make_server(tmp_path, monkeypatch, reactor, calls)
    server.startService()
    assert server.chat is not None
    client = FakeClient(calls)
    client.disconnect = lambda reason: None  # type: ignore[method-assign]
    server.chat.connect(client)
    stopped: list[object] = []
    server.stopService().addCallback(stopped.append)
    reactor.pump([0.1] * int(app.SHUTDOWN_GRACE * 10 + 2))
    assert stopped == [None] and calls[-1] == "store.close"


def test_a_port_in_use_fails_the_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    reactor = BusyReactor(4000)
    server = make_server(tmp_path, monkeypatch, reactor, calls)
    reactor.running = True
    server.startService()
    failures: list[Any] = []
    server.when_ready().addErrback(failures.append)
    assert server.exit_status == 1
    assert failures and failures[0].check(app.StartupError)
    assert reactor.hasStopped
    stopped: list[object] = []
    server.stopService().addCallback(stopped.append)
    assert stopped == [None] and calls[-1] == "store.close"


def test_disabled_protocols_are_not_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    reactor = MemoryReactorClock()
    server = make_server(tmp_path, monkeypatch, reactor, calls, line={"enabled": False})
    server.startService()
    assert "build line" not in calls
    assert reactor.tcpServers == []


def test_listeners_for_uses_the_tls_factory_on_tls_points(tmp_path: Path) -> None:
    config = load_config(
        str(write_toml(tmp_path / "c.toml", {"server": {"listen": ["127.0.0.1"]}}))
    )
    plain, tls = echo_factory(), echo_factory()
    listeners = app.listeners_for("irc", config.irc, plain, tls)
    assert [(li.protocol, li.point.port, li.point.tls, li.factory) for li in listeners] == [
        ("irc", 6667, False, plain),
        ("irc", 6697, True, tls),
    ]
    assert [li.factory for li in app.listeners_for("irc", config.irc, plain)] == [plain, plain]


def test_endpoints_by_address_family_and_tls() -> None:
    options: list[str] = []

    def tls_options() -> Any:
        options.append("asked")
        return object()

    reactor = MemoryReactorClock()
    v4 = app.endpoint_for(reactor, BindPoint("127.0.0.1", 1, False, "port"), tls_options)
    v6 = app.endpoint_for(reactor, BindPoint("::1", 2, False, "port"), tls_options)
    assert isinstance(v4, TCP4ServerEndpoint) and isinstance(v6, TCP6ServerEndpoint)
    assert options == []
    tls = app.endpoint_for(reactor, BindPoint("::", 3, True, "tls_port"), tls_options)
    assert isinstance(tls, SSL4ServerEndpoint)
    assert options == ["asked"]
    tls.listen(echo_factory())
    assert [
        (port, backlog, interface) for port, _f, _c, backlog, interface in reactor.sslServers
    ] == [(3, app.LISTEN_BACKLOG, "::")]


# -- logging -----------------------------------------------------------------------------------


def emit(observer: Any, level: LogLevel, fmt: str, **fields: Any) -> None:
    publisher = LogPublisher(observer)
    Logger(namespace="test.ns", observer=publisher).emit(level, fmt, **fields)


def test_json_log_lines() -> None:
    stream = io.StringIO()
    observer = logs.log_observer("json", "info", stream)
    emit(
        observer,
        LogLevel.info,
        "listening protocol={protocol} address={address}",
        protocol="line",
        address="127.0.0.1:1",
    )
    emit(observer, LogLevel.debug, "too detailed")
    emit(observer, LogLevel.error, "with an object {thing!r}", thing=object())
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["message"] == "listening protocol=line address=127.0.0.1:1"
    assert (first["level"], first["namespace"], first["protocol"]) == ("info", "test.ns", "line")
    assert first["time"].endswith("+00:00")
    second = json.loads(lines[1])
    assert second["level"] == "error" and "thing" not in second
    assert second["message"].startswith("with an object <object object")


def test_text_log_lines_have_timestamps_and_levels_filter() -> None:
    stream = io.StringIO()
    observer = logs.log_observer("text", "warn", stream)
    emit(observer, LogLevel.info, "hidden")
    emit(observer, LogLevel.warn, "shown {n}", n=1)
    (line,) = stream.getvalue().splitlines()
    assert line.endswith("[test.ns#warn] shown 1")
    assert line[:4].isdigit() and "T" in line.split()[0]
    with pytest.raises(ValueError):
        logs.log_observer("xml", "info", stream)


def test_text_log_lines_are_twisteds_own_format() -> None:
    ours, theirs = io.StringIO(), io.StringIO()
    observer = logs.log_observer("text", "info", ours)
    reference = textFileLogObserver(theirs)
    events = [
        {"log_time": 1_800_000_000.25, "log_level": LogLevel.info, "log_namespace": "a.b"},
        {"log_time": 1_800_000_000.75, "log_level": LogLevel.warn, "log_namespace": "a"},
        {"log_time": 1_800_000_001.5, "log_level": LogLevel.error, "log_namespace": "c"},
    ]
    for n, event in enumerate(events):
        event.update(log_format="line {n}\nwith more", n=n)
        observer(dict(event))
        reference(dict(event))
    assert ours.getvalue() == theirs.getvalue()
    assert ours.getvalue().count("[a.b#info] line 0") == 1
    # Below the level, or with no namespace or level, nothing is written (as Twisted's filter).
    for dropped in (
        {"log_time": 1.0, "log_level": LogLevel.debug, "log_namespace": "a", "log_format": "x"},
        {"log_time": 1.0, "log_level": LogLevel.info, "log_format": "x"},
        {"log_time": 1.0, "log_namespace": "a", "log_format": "x"},
    ):
        observer(dropped)
    assert ours.getvalue() == theirs.getvalue()


class _CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_info_lines_of_one_reactor_turn_leave_in_one_write_in_order() -> None:
    reactor = MemoryReactorClock()
    stream = _CountingStream()
    observer = logs.log_observer("text", "info", stream, reactor)
    # Before the reactor runs (start-up), each line is written at once.
    emit(observer, LogLevel.info, "starting")
    assert stream.writes == 1
    reactor.running = True
    emit(observer, LogLevel.info, "one {n}", n=1)
    emit(observer, LogLevel.info, "two")
    assert stream.writes == 1
    reactor.advance(0)  # the end of the turn
    assert stream.writes == 2
    # A warning leaves at once, after what waited, so that the lines stay in order.
    emit(observer, LogLevel.info, "three")
    emit(observer, LogLevel.warn, "four")
    assert stream.writes == 4
    reactor.advance(0)
    assert stream.writes == 4
    # A line of another thread is written at once; one of the reactor's waiting at shutdown
    # is written by the shutdown.
    emit(observer, LogLevel.info, "five")
    other = threading.Thread(target=emit, args=(observer, LogLevel.info, "six"))
    other.start()
    other.join()
    reactor.running = False
    for trigger, args, kwargs in reactor.triggers["after"]["shutdown"]:
        trigger(*args, **kwargs)
    emit(observer, LogLevel.info, "seven")
    texts = [line.rsplit("] ", 1)[1] for line in stream.getvalue().splitlines()]
    assert texts == ["starting", "one 1", "two", "three", "four", "six", "five", "seven"]


# Format strings as handlers write them, and the awkward ones: a missing field, a call,
# conversions, attributes and items, literal braces, specs, line breaks, broken braces.
_FORMATS = st.one_of(
    st.sampled_from(
        [
            "{protocol} connection {id} from {address} is {nick}",
            "missing {nope}",
            "a call {f()}",
            "{x!r} and {x!s} and {y[0]} and {z.real}",
            "{{literal}} {x:>8}",
            "two\nlines {x}",
            "broken {x",
            "broken }",
            "{0}",
            "",
        ]
    ),
    st.text(alphabet="{}xyz!r:.[]0()\n ", max_size=24),
)


@given(
    fmt=_FORMATS,
    x=st.text(max_size=8),
    level=st.sampled_from([LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical]),
    namespace=st.sampled_from(["a.b", "", None]),
    system=st.sampled_from([None, "sys"]),
)
def test_text_log_line_is_twisteds_for_any_format(
    fmt: str, x: str, level: LogLevel, namespace: str | None, system: str | None
) -> None:
    line = logs._TextLine()
    event: dict[str, Any] = {
        "log_format": fmt,
        "log_level": level,
        "log_time": 1_800_000_000.5,
        "x": x,
        "y": [x],
        "z": 2,
        "f": lambda: "called",
        "protocol": "irc",
        "id": 1,
        "address": "127.0.0.1",
        "nick": "n",
    }
    if namespace is not None:
        event["log_namespace"] = namespace
    if system is not None:
        event["log_system"] = system
    expected = formatEventAsClassicLogText(dict(event), formatTime=line._time)
    assert line(dict(event)) == expected
