"""The one timer of a connection: its deadline (to register, to log in), the probe sent
after a silence, the wait for the probe's answer, and (where the protocol wants it) a short
"gone quiet" moment to give buffers back.

Input only records its time (:meth:`IdleTimer.touch`): a busy connection re-arms nothing,
and the timer, when it fires, works out what is due from the times it holds.  What each
event means on the wire is the owner's (:class:`IdleOwner`): an IRC PING, a line-chat
question, an XMPP ping; a close with the protocol's words.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from protocols.transport.timers import Timer, timers_for


class IdleOwner(Protocol):
    """What the timer asks of its connection (durations are read at each use, so that a
    reloaded configuration applies)."""

    def idle_after(self) -> float:
        """Seconds of silence before a probe."""
        ...

    def answer_within(self) -> float:
        """Seconds a probe may go unanswered."""
        ...

    def send_probe(self) -> None:
        """Ask the client whether it is there."""
        ...

    def no_answer(self, silent: float) -> None:
        """The probe went unanswered (``silent``: seconds since the last input): close."""
        ...

    def deadline_passed(self) -> None:
        """The deadline came first: close."""
        ...


class IdleTimer:
    """One connection's timer; :meth:`start` it once the connection is up."""

    __slots__ = (
        "_call",
        "_on_quiet",
        "_owner",
        "_stopped",
        "_timers",
        "clock",
        "deadline",
        "last_input",
        "probe_sent",
        "quiet_after",
        "quiet_due",
    )

    def __init__(
        self,
        clock: Any,
        owner: IdleOwner,
        *,
        quiet_after: float | None = None,
        on_quiet: Callable[[], None] | None = None,
    ) -> None:
        self.clock = clock
        # The clock's shared timers: a connection's own reactor call would cost a burst of
        # connections a Python heap of them (see protocols.transport.timers).
        self._timers = timers_for(clock)
        self._owner = owner
        self._call: Timer | None = None
        self._stopped = False
        self._on_quiet = on_quiet
        # When the owner must be done by (None: no deadline).
        self.deadline: float | None = None
        self.last_input = 0.0
        # When the probe went (None: none is waiting for an answer).
        self.probe_sent: float | None = None
        # Seconds of silence after input before ``on_quiet`` is called, and whether input
        # came since it was.
        self.quiet_after = quiet_after
        self.quiet_due = False

    def start(self, deadline: float | None = None) -> None:
        """Start timing (again, after :meth:`stop`, for a connection that lives on);
        ``deadline``: seconds from now the owner must be done by."""
        self.stop()
        self._stopped = False
        self.probe_sent = None
        now = self.clock.seconds()
        self.deadline = now + deadline if deadline is not None else None
        self.last_input = now
        self._arm(now)

    def touch(self, now: float) -> None:
        """Input came: it answers any probe, and the silence starts again."""
        self.last_input = now
        self.probe_sent = None
        if self.quiet_after is None:
            return
        self.quiet_due = True
        call = self._call
        if call is None:
            if not self._stopped:
                self._arm(now)
        elif call.when > now + self.quiet_after:
            call.cancel()
            self._arm(now)

    def stop(self) -> None:
        """For good: the connection is closing."""
        self._stopped = True
        call, self._call = self._call, None
        if call is not None:
            call.cancel()

    def forget(self) -> None:
        """Stop for good and let go of the owner (the connection is gone): no cycle through
        the owner is left for the garbage collector."""
        self.stop()
        self._owner = _GONE
        self._on_quiet = None

    def _next_due(self) -> float:
        if self.probe_sent is not None:
            due = self.probe_sent + self._owner.answer_within()
        else:
            due = self.last_input + self._owner.idle_after()
            if self.quiet_due and self.quiet_after is not None:
                due = min(due, self.last_input + self.quiet_after)
        if self.deadline is not None:
            due = min(due, self.deadline)
        return due

    def _arm(self, now: float) -> None:
        self._call = self._timers.call_later(self._next_due() - now, self._fire)

    def _fire(self) -> None:
        self._call = None
        now = self.clock.seconds()
        owner = self._owner
        if self._stopped:
            return
        if self.deadline is not None and now >= self.deadline:
            self.deadline = None
            owner.deadline_passed()
            if self._stopped:
                return
        if self.probe_sent is not None:
            if now >= self.probe_sent + owner.answer_within():
                owner.no_answer(now - self.last_input)
                return
        elif now >= self.last_input + owner.idle_after():
            self.probe_sent = now
            owner.send_probe()
            if self._stopped:
                return
        quiet = self.quiet_after
        if self.quiet_due and quiet is not None and now >= self.last_input + quiet:
            self.quiet_due = False
            if self._on_quiet is not None:
                self._on_quiet()
        if self._call is None and not self._stopped:
            self._arm(now)


class _Gone:
    """The owner of a forgotten timer: nothing is due to it."""

    def idle_after(self) -> float:
        return float("inf")

    def answer_within(self) -> float:
        return float("inf")

    def send_probe(self) -> None:
        pass

    def no_answer(self, silent: float) -> None:
        pass

    def deadline_passed(self) -> None:
        pass


_GONE = _Gone()
