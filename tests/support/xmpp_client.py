"""slixmpp, a real XMPP client library, driven from blocking test code against the real server.

slixmpp runs on an asyncio loop in a thread of its own; each call below waits for its result.
"""

from __future__ import annotations

import asyncio
import queue
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

DOMAIN = "localhost"
WAIT = 5.0


class SlixmppClient:
    """A slixmpp client connected to ``127.0.0.1:port`` as ``jid`` (a full JID).

    ``plugins`` are registered before connecting; the payloads of the slixmpp ``events``
    named are queued for :meth:`expect_event`; ``setup`` is called with the ClientXMPP
    before it connects (to add handlers or filters of its own).  ``sasl_mech`` picks one
    mechanism; ``direct_tls`` connects to a direct-TLS port instead of using STARTTLS.

    The constructor returns once the session has started or has failed: ``logged_in`` is
    False when SASL failed or the stream ended before the session (the events queued tell
    why, e.g. ``stream_error``).
    """

    def __init__(
        self,
        port: int,
        jid: str,
        password: str,
        *,
        plugins: Iterable[str] = (),
        events: Iterable[str] = (),
        sasl_mech: str | None = None,
        direct_tls: bool = False,
        setup: Callable[[Any], None] | None = None,
    ) -> None:
        import slixmpp

        self.full_jid = jid
        self.jid = jid.partition("/")[0]
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start() -> tuple[Any, bool]:
            options = {"sasl_mech": sasl_mech} if sasl_mech else {}
            xmpp = slixmpp.ClientXMPP(jid, password, **options)
            xmpp.loop = self.loop
            self.xmpp = xmpp
            for plugin in plugins:
                xmpp.register_plugin(plugin)
            xmpp.enable_direct_tls = direct_tls
            xmpp.enable_starttls = not direct_tls
            # The server's certificate is self-signed on first start.
            xmpp.ssl_context.check_hostname = False
            xmpp.ssl_context.verify_mode = ssl.CERT_NONE
            for event in events:
                xmpp.add_event_handler(event, lambda got, e=event: self.events.put((e, got)))
            if setup is not None:
                setup(xmpp)
            done: asyncio.Future[bool] = self.loop.create_future()

            def finish(ok: bool) -> None:
                if not done.done():
                    done.set_result(ok)

            xmpp.add_event_handler("session_start", lambda _: finish(True))
            xmpp.add_event_handler("failed_all_auth", lambda _: finish(False))
            xmpp.add_event_handler("disconnected", lambda _: finish(False))
            xmpp.connect("127.0.0.1", port)
            return xmpp, await asyncio.wait_for(done, WAIT)

        try:
            self.xmpp, self.logged_in = self.call(start(), timeout=WAIT + 1)
        except BaseException:
            self.close()
            raise

    # -- calls on the loop's thread ---------------------------------------------------------

    def call(self, coro: Any, timeout: float = WAIT) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def do(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a plain slixmpp call on its loop's thread."""

        async def run() -> Any:
            return func(*args, **kwargs)

        return self.call(run())

    def wait(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a slixmpp call that returns an awaitable, and wait for its result."""

        async def run() -> Any:
            return await func(*args, **kwargs)

        return self.call(run())

    @property
    def muc(self) -> Any:
        return self.xmpp.plugin["xep_0045"]

    # -- waiting ----------------------------------------------------------------------------

    def expect_event(self, kind: str, test: Callable[[Any], bool]) -> Any:
        """The next queued payload of event ``kind`` that passes ``test`` (others are
        dropped)."""
        deadline = time.monotonic() + WAIT
        while True:
            try:
                got, payload = self.events.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"{self.jid}: no {kind} matched") from None
            if got == kind and test(payload):
                return payload

    def wait_for(self, test: Callable[[], bool]) -> None:
        """Wait until ``test`` (run on the loop's thread) is true."""
        deadline = time.monotonic() + WAIT
        while not self.do(test):
            assert time.monotonic() < deadline, "condition not reached"
            time.sleep(0.05)

    def close(self) -> None:
        if not self.loop.is_running():
            return

        async def stop() -> None:
            xmpp = getattr(self, "xmpp", None)
            if xmpp is not None:
                try:
                    await asyncio.wait_for(xmpp.disconnect(wait=1), 2)
                except Exception:
                    pass
            # COMPAT: slixmpp cancels its tasks in XMLStream.__del__, which fails once the
            # garbage collector has closed the loop first; cancel them while the loop runs.
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.call(stop(), timeout=4)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(3)
            if not self.thread.is_alive():
                self.loop.close()
