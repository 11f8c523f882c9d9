"""Nothing acknowledged is lost: SIGKILL under chat load, and a SIGTERM restart.

"Acknowledged" means a message another client has received.  The promise after a crash
(SIGKILL, or any death of the process that leaves the machine up): every message acknowledged
more than ``[chat] history_flush_interval`` (plus a margin for the write itself) before the
crash is in the database, and so are accounts and registered rooms (topic, modes, operators,
bans), which are written as soon as they change.  After a SIGTERM nothing acknowledged is lost.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from tests.ops.helpers import PASSWORD, OpsServer, chat, join, query, sync
from tests.support.server import LineClient

pytestmark = pytest.mark.timeout(60)

# Flood control must not drop the load; the load itself is modest (~4 x 50 lines/s).
LOAD_LIMITS = {"flood_burst": 1000, "flood_rate": 1000.0}
TALKERS = 4
PACE = 0.02
# Time for a flush to reach the disk once it starts, on a loaded CI machine.
MARGIN = 1.0

_LINE = re.compile(r"^\[#load\] <(t\d)> (m-t\d-\d+)$")


class Load:
    """Talkers saying numbered lines in #load, and a listener noting when each arrived."""

    def __init__(self, port: int) -> None:
        self.listener = chat(port, "listener")
        join(self.listener, "load")
        self.talkers = []
        for i in range(TALKERS):
            talker = chat(port, f"t{i}")
            join(talker, "load")
            self.talkers.append(talker)
        sync(self.listener)
        self.acked: dict[str, float] = {}
        self.stop = threading.Event()
        self.told_shutdown = threading.Event()
        self.threads = [
            threading.Thread(target=self._talk, args=(i,), daemon=True) for i in range(TALKERS)
        ]
        self.threads.append(threading.Thread(target=self._listen, daemon=True))

    def start(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def _talk(self, i: int) -> None:
        talker = self.talkers[i]
        seq = 0
        while not self.stop.is_set():
            try:
                talker.send(f"m-t{i}-{seq}")
            except OSError:
                return
            seq += 1
            time.sleep(PACE)

    def _listen(self) -> None:
        while True:
            try:
                line = self.listener.read_line(10)
            except (OSError, TimeoutError):
                return
            match = _LINE.match(line)
            if match:
                self.acked[match.group(2)] = time.monotonic()
            elif "Server shutting down" in line:
                self.told_shutdown.set()

    def join_threads(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)


def stored_texts(db: Path, target: str) -> set[str]:
    rows = query(db, "SELECT text FROM history WHERE target = ?", target)
    return {r[0].decode() if isinstance(r[0], bytes) else r[0] for r in rows}


def make_durable_state(port: int) -> None:
    """Accounts, and a registered room with a topic, modes, an operator and a ban."""
    alice = chat(port, "alice")
    alice.send("/register " + PASSWORD)
    alice.expect("*** alice is now registered")
    bob = chat(port, "bob")
    bob.send("/register " + PASSWORD)
    bob.expect("*** bob is now registered")
    join(alice, "vault")
    join(bob, "vault")
    alice.send("/register-room")
    alice.expect("*** #vault is now registered")
    alice.send("/topic Kept through a crash")
    bob.expect("-!- alice changed the topic of #vault to: Kept through a crash")
    alice.send("/mode +moderated +limit 40")
    bob.expect("-!- alice sets mode +moderated +limit 40 on #vault")
    alice.send("/ban mallory")
    bob.expect("-!- alice sets mode +ban mallory!*@* on #vault")
    alice.send("/op bob")
    bob.expect("-!- alice sets mode +op bob on #vault")
    alice.send("said in the vault")
    bob.expect("[#vault] <alice> said in the vault")
    alice.close()
    bob.close()


def check_durable_state(port: int) -> None:
    bob = LineClient(port)
    bob.expect("*** Choose a nick:")
    bob.send(f"/identify bob {PASSWORD}")
    bob.expect("*** you are logged in as bob")
    bob.send("/join vault")
    assert bob.expect("*** topic of #vault") == (
        "*** topic of #vault: Kept through a crash (set by alice)"
    )
    # An operator again, by account, in a room that now has only them.
    assert bob.expect("*** members of #vault") == "*** members of #vault (1): @bob"
    bob.expect("] <alice> said in the vault")
    bob.expect("*** now talking in #vault")
    bob.send("/mode")
    assert bob.expect("*** modes of #vault") == (
        "*** modes of #vault: +moderated +no_external +topic_lock +limit 40"
    )
    bob.send("/ban")
    bob.expect("*** bans of #vault (1):")
    assert bob.read_line().startswith("***   mallory!*@* (by alice,")
    bob.close()
    alice = LineClient(port)
    alice.expect("*** Choose a nick:")
    alice.send(f"/identify alice {PASSWORD}")
    alice.expect("*** you are logged in as alice")
    alice.close()


@pytest.mark.parametrize("interval", [1.0, 0.0], ids=["flush-1s", "flush-sync"])
def test_sigkill_under_load_keeps_everything_acknowledged(tmp_path: Path, interval: float) -> None:
    server = OpsServer(
        tmp_path,
        overrides={"chat": {"history_flush_interval": interval}, "line": LOAD_LIMITS},
    ).start()
    port = server.ports["line"]
    make_durable_state(port)
    load = Load(port).start()
    # Long enough for several flushes, then kill while the talkers are still talking.
    time.sleep(3.0)
    server.sigkill()
    killed_at = time.monotonic()
    load.join_threads()

    deadline = killed_at - interval - MARGIN
    must_have = {text for text, at in load.acked.items() if at <= deadline}
    assert len(must_have) > 50, f"too little load to mean anything: {len(load.acked)} acked"
    assert query(server.db_path, "PRAGMA integrity_check") == [("ok",)]
    stored = stored_texts(server.db_path, "load")
    missing = sorted(must_have - stored)
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {missing[:5]}"

    server.start()
    check_durable_state(port)
    # The restarted server replays what was stored.
    late = chat(port, "late")
    join(late, "load")
    late.send("/history #load 5")
    late.expect("*** history of #load (5 messages):")
    assert query(server.db_path, "PRAGMA integrity_check") == [("ok",)]
    server.stop()


def test_sigterm_tells_users_and_loses_nothing(tmp_path: Path) -> None:
    server = OpsServer(
        tmp_path,
        # A long flush interval: only the shutdown's own flush can save the last messages.
        overrides={"chat": {"history_flush_interval": 30.0}, "line": LOAD_LIMITS},
    ).start()
    port = server.ports["line"]
    make_durable_state(port)
    load = Load(port).start()
    time.sleep(1.0)
    assert server.stop() == 0
    load.join_threads()

    assert load.told_shutdown.is_set(), load.listener.seen[-5:]
    assert len(load.acked) > 50
    stored = stored_texts(server.db_path, "load")
    missing = sorted(set(load.acked) - stored)
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {missing[:5]}"
    assert query(server.db_path, "PRAGMA integrity_check") == [("ok",)]
    assert "Traceback" not in server.log()

    server.start()
    check_durable_state(port)
    server.stop()
