"""Processes as the kernel lists them: a server's children, and whether a process is gone."""

from __future__ import annotations

import os
import resource
from pathlib import Path


def children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: the fields follow the last ')'.
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not ended (a zombie counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def age(pid: int) -> float:
    """Seconds since ``pid`` started (its start time in ``/proc/<pid>/stat``)."""
    started = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - started / os.sysconf("SC_CLK_TCK")


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def history_writers(server_pid: int) -> list[int]:
    """The SQLite history writer processes the server ``server_pid`` started."""
    return [pid for pid in children(server_pid) if "chatserver.storage.writer" in cmdline(pid)]


def set_file_size_limit(pid: int, soft: int) -> None:
    """RLIMIT_FSIZE of ``pid`` and of its children (the history writer), soft part: a
    "full disk" for all of the server's processes that write the database."""
    for each in (pid, *children(pid)):
        hard = resource.prlimit(each, resource.RLIMIT_FSIZE)[1]
        resource.prlimit(each, resource.RLIMIT_FSIZE, (soft, hard))


__all__ = ["age", "alive", "children", "cmdline", "history_writers", "set_file_size_limit"]
