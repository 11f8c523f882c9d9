"""The server's log output: timestamped text or one JSON object per line, filtered by level."""

from __future__ import annotations

import datetime
import json
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogLevel,
    PredicateResult,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
)
from zope.interface import implementer


def log_observer(fmt: str, level: str, stream: IO[str]) -> ILogObserver:
    """An observer writing to ``stream``: timestamped text, or one JSON object per line.

    Nothing logged by the server carries a password or a message body, so neither format
    needs scrubbing.
    """
    if fmt == "json":
        observer: ILogObserver = FileLogObserver(stream, json_line)
    elif fmt == "text":
        observer = FileLogObserver(stream, _TextLine())
    else:
        raise ValueError(f"unknown log format {fmt!r}")
    filtered = FilteringLogObserver(observer, [_LevelAtLeast(LogLevel.levelWithName(level))])
    return _QuietTwisted(filtered)


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
    """Passes events on, with Twisted's chatter turned down to debug.

    Old-style events (``twisted.python.log.msg``: "… starting on 2323", "(TCP Port 2323
    Closed)") arrive in the namespace ``log_legacy``; they are Twisted's, so they are named
    ``twisted``, and only their errors keep their level.
    """

    __slots__ = ("observer",)

    def __init__(self, observer: ILogObserver) -> None:
        self.observer = observer

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "log_legacy":
            event = dict(event, log_namespace="twisted")
            if not event.get("isError"):
                event["log_level"] = LogLevel.debug
        elif event.get("log_format") in _CHATTER:
            event = dict(event, log_level=LogLevel.debug)
        self.observer(event)


@implementer(ILogFilterPredicate)
class _LevelAtLeast:
    """Passes events of ``minimum`` or above: what Twisted's LogLevelFilterPredicate does
    with one level for every namespace, without looking the namespace up for each event
    (a connection's debug lines cost a busy server that much for nothing)."""

    def __init__(self, minimum: LogLevel) -> None:
        self.levels = frozenset(lv for lv in LogLevel.iterconstants() if lv >= minimum)

    def __call__(self, event: dict[str, Any]) -> Any:
        if event.get("log_level") in self.levels and event.get("log_namespace"):
            return PredicateResult.maybe
        return PredicateResult.no


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
