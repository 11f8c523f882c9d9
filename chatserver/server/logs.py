"""The server's log output: timestamped text or one JSON object per line, filtered by level."""

from __future__ import annotations

import datetime
import json
import threading
from collections.abc import Callable
from typing import IO, Any

from twisted.logger import (
    ILogObserver,
    LogLevel,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
)
from zope.interface import implementer


def log_observer(fmt: str, level: str, stream: IO[str], reactor: Any = None) -> ILogObserver:
    """An observer writing to ``stream``: timestamped text, or one JSON object per line.

    With ``reactor``, the info and debug lines of one reactor turn leave together at its
    end (see :class:`_TurnWriter`).  Nothing logged by the server carries a password or a
    message body, so neither format needs scrubbing.
    """
    if fmt == "json":
        writer = _TurnWriter(stream, json_line)
    elif fmt == "text":
        writer = _TurnWriter(stream, _TextLine())
    else:
        raise ValueError(f"unknown log format {fmt!r}")
    if reactor is not None:
        writer.write_per_turn(reactor)
    return _QuietTwisted(writer, LogLevel.levelWithName(level))


# Lines that may wait for the end of the reactor's turn; warnings and errors leave at once.
_MAY_WAIT = frozenset({LogLevel.debug, LogLevel.info})


@implementer(ILogObserver)
class _TurnWriter:
    """Twisted's FileLogObserver (a line formatted, written and flushed), except that the
    info and debug lines made on the reactor thread while it runs are written together, in
    one write at the end of the turn.

    A burst of new connections logs two lines for each user, and a write system call per
    line cost as much as making the line.  Warnings and errors, lines of other threads and
    lines while the reactor is not running are written at once (after what waits, on the
    reactor thread, so that its lines stay in order); what waits is written when the
    reactor has shut down.
    """

    __slots__ = ("format_event", "pending", "reactor", "stream", "thread")

    def __init__(self, stream: IO[str], format_event: Callable[[dict[str, Any]], str | None]):
        self.stream = stream
        self.format_event = format_event
        self.reactor: Any = None
        self.thread: int | None = None
        self.pending: list[str] = []

    def write_per_turn(self, reactor: Any) -> None:
        """Gather lines per turn of ``reactor``, which runs in the calling thread."""
        self.reactor = reactor
        self.thread = threading.get_ident()
        reactor.addSystemEventTrigger("after", "shutdown", self.flush)

    def __call__(self, event: dict[str, Any]) -> None:
        text = self.format_event(event)
        if not text:
            return
        reactor = self.reactor
        here = self.thread == threading.get_ident()
        if here and reactor.running and event.get("log_level") in _MAY_WAIT:
            if not self.pending:
                reactor.callLater(0, self.flush)
            self.pending.append(text)
            return
        if here and self.pending:
            self.flush()
        self.stream.write(text)
        self.stream.flush()

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        if pending:
            self.stream.write("".join(pending))
            self.stream.flush()


# What Twisted says about its own machinery, at info, on every start and stop: listeners'
# factories starting and stopping (with object addresses) and the reactor's last words.  The
# server's own lines say what matters (listening …, stopped), so these are debug.
_CHATTER = frozenset(
    {
        "Starting factory {factory!r}",
        "Stopping factory {factory!r}",
        "Main loop terminated.",
    }
)


@implementer(ILogObserver)
class _QuietTwisted:
    """Passes events of ``minimum`` or above on, with Twisted's chatter turned down to debug.

    Old-style events (``twisted.python.log.msg``: "… starting on 2323", "(TCP Port 2323
    Closed)") arrive in the namespace ``log_legacy``; they are Twisted's, so they are named
    ``twisted``, and only their errors keep their level.

    The level is checked here, with one set lookup, rather than by Twisted's
    FilteringLogObserver and its predicates: every connection logs a line when it
    registers and one when it ends, so a burst of connections pays this per line.
    """

    __slots__ = ("levels", "observer")

    def __init__(self, observer: ILogObserver, minimum: LogLevel) -> None:
        self.observer = observer
        self.levels = frozenset(lv for lv in LogLevel.iterconstants() if lv >= minimum)

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "log_legacy":
            event = dict(event, log_namespace="twisted")
            if not event.get("isError"):
                event["log_level"] = LogLevel.debug
        elif event.get("log_format") in _CHATTER:
            event = dict(event, log_level=LogLevel.debug)
        if event.get("log_level") in self.levels and event.get("log_namespace"):
            self.observer(event)


class _TextLine:
    """Twisted's classic text line, ``<time> [<namespace>#<level>] <message>``, with the
    timestamp (whole seconds) made once a second rather than once a line."""

    __slots__ = ("second", "stamp")

    def __init__(self) -> None:
        self.second = -1
        self.stamp = "-"

    def _time(self, when: float | None) -> str:
        if when is None:
            return "-"
        second = int(when)
        if second != self.second:
            self.second, self.stamp = second, formatTime(second)
        return self.stamp

    def __call__(self, event: dict[str, Any]) -> str | None:
        fmt = event.get("log_format")
        level = event.get("log_level")
        if (
            type(fmt) is str
            and level is not None
            and "()" not in fmt
            and "log_failure" not in event
            and "log_system" not in event
        ):
            # The common line (no call in the format, no traceback): what Twisted's
            # formatter gives, made by str.format_map, about a tenth of its cost.
            try:
                text = fmt.format_map(event)
            except Exception:
                pass  # Twisted's formatter says what went wrong
            else:
                if not text:
                    return None  # as Twisted: an empty message is no line
                namespace = event.get("log_namespace", "-")
                line = f"{self._time(event.get('log_time'))} [{namespace}#{level.name}] {text}"
                return line.replace("\n", "\n\t") + "\n"
        return formatEventAsClassicLogText(event, formatTime=self._time)


# Keys of old-style (twisted.python.log) events that the JSON line already says another way.
_LEGACY_KEYS = frozenset({"message", "time", "system", "isError", "format", "why", "failure"})


def json_line(event: dict[str, Any]) -> str:
    """One event as a flat JSON object: time, level, namespace, message, then its own fields.

    Flat and small rather than Twisted's own JSON (which nests type markers) because log
    shippers index top-level keys.
    """
    level = event.get("log_level")
    record: dict[str, Any] = {
        "time": datetime.datetime.fromtimestamp(event.get("log_time", 0.0), datetime.UTC).isoformat(
            timespec="milliseconds"
        ),
        "level": level.name if level is not None else "info",
        "namespace": event.get("log_namespace", "-"),
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in _LEGACY_KEYS or key in record:
            continue
        if value is None or isinstance(value, str | int | float | bool):
            record[key] = value
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    return json.dumps(record, ensure_ascii=False) + "\n"
