"""The server's log output: timestamped text or one JSON object per line, filtered by level."""

from __future__ import annotations

import datetime
import json
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    PredicateResult,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
)


def log_observer(fmt: str, level: str, stream: IO[str]) -> ILogObserver:
    """An observer writing to ``stream``: timestamped text, or one JSON object per line.

    Nothing logged by the server carries a password or a message body, so neither format
    needs scrubbing.
    """
    if fmt == "json":
        observer: ILogObserver = FileLogObserver(stream, _json_line)
    elif fmt == "text":
        observer = FileLogObserver(stream, _TextLine())
    else:
        raise ValueError(f"unknown log format {fmt!r}")
    return FilteringLogObserver(observer, [_LevelAtLeast(LogLevel.levelWithName(level))])


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


def _json_line(event: dict[str, Any]) -> str:
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
