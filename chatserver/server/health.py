"""The health check: ``GET /health`` answers 200 ``ok`` while the server can serve.

"Can serve" means: the start finished, every configured listener is listening, the database
answers a query within :data:`STORE_TIMEOUT` seconds, and writes to it succeed (after a write
failed, each check tries a write that changes nothing, so the server turns healthy again as
soon as the disk or the file is fixed).  Anything else is 503 with the reason, so
that a container runtime or a load balancer takes the server out of rotation, and a person
reading the answer knows where to look.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from chatserver.core.errors import StorageUnavailable

if TYPE_CHECKING:
    from chatserver.server.app import ChatServer

# A store that takes longer than this to read one pragma is stuck (another process holds a
# write lock, the disk hangs): unhealthy.
STORE_TIMEOUT = 3.0


def _detail(err: Exception) -> str:
    """The database's own words for a failure (the store wraps them for users)."""
    return str(err.error if isinstance(err, StorageUnavailable) and err.error else err)


async def check(server: ChatServer) -> tuple[bool, str]:
    """(healthy, one line saying why)."""
    if not server.ready:
        return False, "starting" if server.exit_status == 0 else "the start failed"
    for listener, port in server.ports:
        if not getattr(port, "connected", True):
            return False, f"not listening: {listener.protocol} {listener.point}"
    store = server.store
    if store is None:
        return False, "no store"
    d = defer.maybeDeferred(store.schema_version)
    d.addTimeout(STORE_TIMEOUT, server.reactor)
    try:
        await d
    except defer.TimeoutError:
        return False, f"the database did not answer within {STORE_TIMEOUT:g} seconds"
    except Exception as err:
        return False, f"the database failed: {_detail(err)}"
    if getattr(store, "write_failure", None) is not None:
        probe = defer.maybeDeferred(store.probe_write)
        probe.addTimeout(STORE_TIMEOUT, server.reactor)
        try:
            await probe
        except defer.TimeoutError:
            return False, f"a database write did not finish within {STORE_TIMEOUT:g} seconds"
        except Exception as err:
            return False, f"database writes fail: {_detail(err)}"
    return True, "ok"


class HealthResource(Resource):
    isLeaf = True

    def __init__(self, server: ChatServer) -> None:
        super().__init__()
        # Not ``self.server``: twisted.web sets that attribute on resources it serves.
        self.chat_server = server

    def render_GET(self, request: Request) -> Any:
        def answer(result: tuple[bool, str]) -> None:
            healthy, why = result
            request.setResponseCode(200 if healthy else 503)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            request.setHeader(b"Cache-Control", b"no-store")
            request.write(why.encode() + b"\n")
            request.finish()

        def failed(failure: Failure) -> None:
            answer((False, f"the check failed: {failure.getErrorMessage()}"))

        finished: list[Any] = []
        # The client may hang up before the store answers: then nothing is written.
        request.notifyFinish().addBoth(finished.append)

        def reply(result: tuple[bool, str]) -> None:
            if not finished:
                answer(result)

        d = defer.ensureDeferred(check(self.chat_server))
        d.addCallbacks(reply, lambda f: None if finished else failed(f))
        return NOT_DONE_YET
