"""TLS peers that leave the server to end things: sessions the server closes whose peer never
answers the close, and two TLS slowloris variants (application data a byte at a time, never
a whole line or stanza; a TLS record that never finishes arriving, so the protocol never
sees a byte).  The server lets go of every one of them within a bound, whatever the peer
does, and keeps serving others meanwhile."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

from protocols.transport.close import CLOSE_TIMEOUT
from tests.hostile.clients import ATTACKER
from tests.transport.tlsclient import SilentTlsPeer

# Sessions of each kind.
PEERS = 4
# A TLS 1.2 application-data record header announcing 16 KiB, for the record that never ends.
RECORD_HEADER = bytes.fromhex("1703034000")


def _gone(sock: socket.socket) -> bool:
    """Whether the server has closed (FIN or reset), reading and dropping what came."""
    sock.setblocking(False)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def assert_tls_peers_let_go(
    port: int,
    *,
    login: Callable[[SilentTlsPeer, int], None],
    end: bytes,
    first: bytes,
    bound: float,
    pid: int,
) -> int:
    """``PEERS`` sessions that ``login`` and send ``end`` (the server ends the session) and
    never answer the close; ``PEERS`` that trickle ``first`` a byte at a time through TLS;
    ``PEERS`` that trickle a TLS record.  All of them closed by the server within ``bound``
    seconds (the close's own bound for the first kind); the server's descriptors back to what
    they were.  Returns the number of cases."""

    def fds() -> int:
        return len(list(Path(f"/proc/{pid}/fd").iterdir()))

    before = fds()
    closers = []
    for i in range(PEERS):
        peer = SilentTlsPeer(port, source=ATTACKER)
        login(peer, i)
        closers.append(peer)
    tricklers = [SilentTlsPeer(port, source=ATTACKER) for _ in range(PEERS)]
    records = []
    for _ in range(PEERS):
        peer = SilentTlsPeer(port, source=ATTACKER)
        peer.sock.sendall(RECORD_HEADER[:1])
        records.append(peer)
    start = time.monotonic()
    for peer in closers:
        peer.send(end)
    open_ = {id(p): p for p in [*closers, *tricklers, *records]}
    kind = {id(p): "closer" for p in closers} | {id(p): "trickle" for p in tricklers}
    kind |= {id(p): "record" for p in records}
    step = 0
    while open_:
        elapsed = time.monotonic() - start
        assert elapsed < bound, (
            f"still open after {elapsed:.1f} s: {sorted(kind[k] for k in open_)}"
        )
        for key, peer in list(open_.items()):
            if _gone(peer.sock):
                if kind[key] == "closer":
                    assert time.monotonic() - start < CLOSE_TIMEOUT + 2.0, (
                        "a session the server ended stayed open past the close bound"
                    )
                peer.close()
                del open_[key]
                continue
            try:
                if kind[key] == "trickle":
                    peer.send(first[step % len(first) : step % len(first) + 1])
                elif kind[key] == "record":
                    # The rest of the header, then the body, a byte at a time.
                    peer.sock.sendall(RECORD_HEADER[1 + step : 2 + step] or b"\0")
            except OSError:
                peer.close()
                del open_[key]
        step += 1
        time.sleep(0.3)
    deadline = time.monotonic() + 3.0
    while fds() > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fds() <= before, f"descriptors: {before} before, {fds()} after"
    return 3 * PEERS
