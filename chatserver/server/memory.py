"""Give the memory a burst freed back to the system.

After a burst of connections ends (a flood, a restart of a bridge with thousands of users)
the server's own objects are gone, but the C allocator (glibc's malloc) keeps the pages they
used on its free lists: the resident size stays at the burst's peak.  Measured after three
floods of 1,000 connections per protocol: 61 MiB resident before, 89 MiB after, of which
12 MiB were free malloc memory; ``malloc_trim`` gave 10 MiB of it back in 1 to 9 ms.  (Python's
own allocator keeps its partly used 1 MiB arenas, which no call can return.)

:class:`MemoryTrimmer` looks every ``interval`` seconds at how much free memory malloc holds
(``mallinfo2``, a walk of its free lists, well under a millisecond) and calls
``malloc_trim(0)`` when that is :data:`TRIM_THRESHOLD` or more, the process has grown by as
much since the last trim, and the server is idle (it used less than half a core since the
last look): so after each burst, and neither while one is at its height nor again and again
while a steady load reuses what it frees.  Where the C library has no ``malloc_trim``
(musl), it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger(namespace="chatserver.memory")

# Free malloc memory worth a trim: a few MiB, so that the steady churn of a busy server (which
# reuses what it frees) never triggers one, and the end of a burst does.
TRIM_THRESHOLD = 4 * 1024 * 1024
# Past this share of one core since the last look, the server is busy: the trim waits.
BUSY_CPU_SHARE = 0.5
_PAGE = os.sysconf("SC_PAGE_SIZE")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


class _Malloc:
    """glibc's malloc_trim and mallinfo2, or None when this C library has them not."""

    def __init__(self) -> None:
        self.trim: Any = None
        self.info: Any = None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            trim = libc.malloc_trim
            info = libc.mallinfo2
        except (OSError, AttributeError):
            return
        trim.argtypes = [ctypes.c_size_t]
        trim.restype = ctypes.c_int
        info.argtypes = []
        info.restype = _MallInfo2
        self.trim, self.info = trim, info

    def free_bytes(self) -> int:
        return int(self.info().fordblks)


def resident_bytes() -> int:
    with open("/proc/self/statm") as fp:
        return int(fp.read().split()[1]) * _PAGE


class MemoryTrimmer:
    """Calls ``malloc_trim`` every ``interval`` seconds when malloc holds enough free memory."""

    def __init__(self, interval: float, *, clock: Any, threshold: int = TRIM_THRESHOLD) -> None:
        self.interval = interval
        self.threshold = threshold
        self.malloc = _Malloc()
        self.trims = 0
        self._resident_after_trim = 0
        self._last = (clock.seconds(), time.process_time())
        self._loop: LoopingCall | None = None
        self._clock = clock

    @property
    def available(self) -> bool:
        return self.malloc.trim is not None

    def start(self) -> None:
        if self.interval <= 0 or not self.available:
            return
        self._loop = LoopingCall(self.check)
        self._loop.clock = self._clock
        self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def check(self) -> bool:
        """Trim if worth it and the server is not busy; whether it trimmed."""
        now, cpu = self._clock.seconds(), time.process_time()
        last_now, last_cpu = self._last
        self._last = (now, cpu)
        if now > last_now and (cpu - last_cpu) / (now - last_now) > BUSY_CPU_SHARE:
            # A burst still under way: what it frees now it may take again next second.
            return False
        free = self.malloc.free_bytes()
        if free < self.threshold:
            return False
        # Trimmed memory stays on malloc's free lists (only its pages go back): a trim is
        # worth it again only once the process has grown back since the last one.
        before = resident_bytes()
        if before - self._resident_after_trim < self.threshold:
            return False
        started = time.perf_counter()
        self.malloc.trim(0)
        took = time.perf_counter() - started
        after = resident_bytes()
        self._resident_after_trim = after
        self.trims += 1
        log.debug(
            "malloc_trim: {free_mib:.1f} MiB free in malloc, resident {before_mib:.1f} ->"
            " {after_mib:.1f} MiB in {ms:.1f} ms",
            free_mib=free / 2**20,
            before_mib=before / 2**20,
            after_mib=after / 2**20,
            ms=took * 1000,
        )
        return True
