"""The HTTP listener's resources: WebSocket endpoints for each protocol, and the web client.

=====================  ==================================================================
``/irc``               IRC over WebSocket (IRCv3: ``text.ircv3.net``, ``binary.ircv3.net``)
``/line``              line chat over WebSocket, in JSON mode from the first message
``/xmpp-websocket``    XMPP over WebSocket (RFC 7395, subprotocol ``xmpp``)
``/.well-known/...``   ``host-meta`` and ``host-meta.json``: where the XMPP WebSocket is (XEP-0156)
``/upload/...``        HTTP File Upload (XEP-0363): PUT to a slot, GET a file (:mod:`upload`)
``/``                  the web client (Converse.js), or how to install it
=====================  ==================================================================

Every endpoint makes its connections with the protocol's own factory, the one its TCP
listener uses, so a WebSocket client is in the same tables, under the same limits, as any
other.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.static import File

from protocols.web.policy import WebPolicy
from protocols.web.upload import LimitedRequest, UploadResource, UploadStore
from protocols.web.websocket import Subprotocol, WebSocketEndpoint
from protocols.web.xmpp import XmppFraming

IRC_SUBPROTOCOLS = (Subprotocol("text.ircv3.net"), Subprotocol("binary.ircv3.net", binary=True))
# Line chat has no registered subprotocol name: a client may offer this one, or none.
LINE_SUBPROTOCOLS = (Subprotocol("json.line.chatserver"),)
XMPP_SUBPROTOCOLS = (Subprotocol("xmpp", framing=XmppFraming),)
WEBSOCKET_REL = "urn:xmpp:alt-connections:websocket"

# Where `make` installs the web client, in a source checkout.
DEFAULT_CLIENT_DIR = (
    Path(__file__).resolve().parents[2] / "web" / "node_modules" / "converse.js" / "dist"
)


def _json_mode(conn: Any) -> None:
    # A WebSocket line client is a program or a page: it speaks JSON Lines from the start.
    conn.mode = "json"


class WebChannel(HTTPChannel):
    """An HTTP/1.1 connection that must send each request's headers within a deadline.

    The idle timeout alone would let a client that sends a byte now and then (slowloris)
    hold a connection for ever; a WebSocket upgrade hands the socket on before the deadline
    could matter.
    """

    site: WebSite
    _header_call: Any = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm()

    def _arm(self) -> None:
        self._header_call = self.callLater(self.site.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        call, self._header_call = self._header_call, None
        if call is not None and call.active():
            call.cancel()

    def allHeadersReceived(self) -> None:
        self._disarm()
        super().allHeadersReceived()

    def requestDone(self, request: Any) -> None:
        super().requestDone(request)
        transport: Any = self.transport
        if transport is not None and transport.connected and not self._header_call:
            # Kept alive: the next request has a deadline of its own.
            self._arm()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._disarm()
        super().connectionLost(reason)

    def _too_slow(self) -> None:
        self._header_call = None
        transport: Any = self.transport
        if transport is not None and transport.connected:
            transport.abortConnection()


class WebSite(Site):
    """The listener's site; ``reload_config`` applies a new ``[web]`` section live."""

    noisy = False
    # HTTP/1.1 only: WebSocket upgrades are HTTP/1.1, and so are static files here.
    # (HTTPFactory types this as its HTTP/2-capable wrapper, which a plain channel stands in for.)
    protocol = WebChannel  # type: ignore[assignment]

    def __init__(self, root: Resource, make_policy: Callable[[Any], WebPolicy], config: Any):
        super().__init__(root, timeout=config.web.idle_timeout)
        self._make_policy = make_policy
        self.policy = make_policy(config)
        self.header_timeout = config.web.header_timeout

    def log(self, request: http.Request) -> None:
        # Connections are logged by the protocols; a line per page load would add nothing.
        pass

    uploads: UploadStore | None = None

    def reload_config(self, config: Any) -> None:
        self.policy = self._make_policy(config)
        self.header_timeout = config.web.header_timeout
        if self.uploads is not None:
            self.uploads.apply(config)


def build_site(
    config: Any,
    *,
    factories: dict[str, Any],
    clock: Any,
    uploads: UploadStore | None = None,
) -> WebSite:
    """The site for ``config`` (the whole server config); ``factories`` maps a protocol's
    name to its TCP listener's factory (a protocol that is off has no endpoint); ``uploads``
    the HTTP File Upload store, if uploads are on."""
    site: WebSite | None = None

    def policy() -> WebPolicy:
        assert site is not None
        return site.policy

    def make_policy(cfg: Any) -> WebPolicy:
        web = cfg.web
        names = {cfg.server.name, cfg.xmpp.domain, "localhost"}
        names.update(entry.host for entry in web.listen)
        return WebPolicy(
            allowed_origins=web.allowed_origins,
            trusted_proxies=web.trusted_proxies,
            own_names=names,
            ports={p for p in (web.port, web.tls_port) if p},
            max_message_bytes=web.max_message_bytes,
            clock=clock,
        )

    root = Resource()
    irc = factories.get("irc")
    if irc is not None:
        root.putChild(
            b"irc",
            WebSocketEndpoint(
                policy, IRC_SUBPROTOCOLS, irc.buildProtocol, require_subprotocol=False
            ),
        )
    line = factories.get("line")
    if line is not None:
        root.putChild(
            b"line",
            WebSocketEndpoint(
                policy,
                LINE_SUBPROTOCOLS,
                line.buildProtocol,
                require_subprotocol=False,
                prepare=_json_mode,
            ),
        )
    xmpp = factories.get("xmpp")
    if xmpp is not None:
        root.putChild(
            b"xmpp-websocket", WebSocketEndpoint(policy, XMPP_SUBPROTOCOLS, xmpp.buildProtocol)
        )
        well_known = Resource()
        well_known.putChild(b"host-meta", HostMeta(policy, json_form=False))
        well_known.putChild(b"host-meta.json", HostMeta(policy, json_form=True))
        root.putChild(b".well-known", well_known)
    client_dir = Path(config.web.client_dir) if config.web.client_dir else DEFAULT_CLIENT_DIR
    root.putChild(b"", ClientPage(config, client_dir, factories))
    if client_dir.is_dir():
        root.putChild(b"dist", File(str(client_dir)))
    if uploads is not None:
        root.putChild(b"upload", UploadResource(uploads))
    site = WebSite(root, make_policy, config)
    if uploads is not None:
        site.uploads = uploads
        store = uploads

        class Limited(LimitedRequest):
            # Uploads are the one kind of request with a body.
            limit = staticmethod(lambda: store.config.max_file_size)

        site.requestFactory = Limited
    return site


class HostMeta(Resource):
    """XEP-0156: where this host's XMPP WebSocket endpoint is, as XRD or JSON."""

    isLeaf = True

    def __init__(self, policy: Callable[[], WebPolicy], *, json_form: bool) -> None:
        super().__init__()
        self.policy = policy
        self.json_form = json_form

    def render_GET(self, request: Request) -> bytes:
        host = (request.getHeader("host") or "localhost").strip()
        scheme = "wss" if self.policy().client_secure(request) else "ws"
        href = f"{scheme}://{host}/xmpp-websocket"
        # Web clients on other sites look this up before they connect.
        request.setHeader(b"access-control-allow-origin", b"*")
        if self.json_form:
            import json

            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"links": [{"rel": WEBSOCKET_REL, "href": href}]}).encode()
        request.setHeader(b"content-type", b"application/xrd+xml; charset=utf-8")
        return (
            "<?xml version='1.0' encoding='utf-8'?>\n"
            "<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n"
            f"  <Link rel='{WEBSOCKET_REL}' href={quoteattr(href)}/>\n"
            "</XRD>\n"
        ).encode()


class ClientPage(Resource):
    """``/``: the web client configured for this server, or how to install it."""

    isLeaf = True

    def __init__(self, config: Any, client_dir: Path, factories: dict[str, Any]) -> None:
        super().__init__()
        self.config = config
        self.client_dir = client_dir
        self.factories = factories

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        return self.page().encode("utf-8")

    def rooms_text(self) -> str:
        rooms = self.config.web.default_rooms
        if not rooms:
            return "This page joins no room by itself."
        listed = ", ".join(f"<b>{html.escape(r)}</b> (#{html.escape(r)} on IRC)" for r in rooms)
        return (
            f"This page joins {listed} when you log in. IRC, XMPP and telnet users are in the "
            "same rooms: everyone sees what you write."
        )

    def page(self) -> str:
        has_client = (self.client_dir / "converse.min.js").is_file() and "xmpp" in self.factories
        if has_client:
            return self._client_page()
        return self._install_page()

    def _install_page(self) -> str:
        name = html.escape(self.config.server.name)
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{name}</title></head>
<body>
<h1>{name}</h1>
<p>{self.rooms_text()}</p>
<p>The web client (Converse.js) is not installed on this server. To install it, run
<code>make web</code> (or <code>make run</code>) in the server's source directory on a machine
with <code>npm</code>, or set <code>[web] client_dir</code> to a Converse.js <code>dist</code>
directory, then reload this page.</p>
<p>Meanwhile, connect with any IRC client (port {self.config.irc.port}), XMPP client
(domain {html.escape(self.config.xmpp.domain)}) or over telnet (port {self.config.line.port}).</p>
</body></html>
"""

    def _client_page(self) -> str:
        import json

        config = self.config
        domain = config.xmpp.domain
        muc = config.xmpp.muc_service
        rooms = [f"{room}@{muc}" for room in config.web.default_rooms]
        settings = {
            "assets_path": "/dist/",
            "allow_registration": True,
            "registration_domain": domain,
            "locked_domain": domain,
            "muc_domain": muc,
            "auto_join_rooms": rooms,
            "view_mode": "fullscreen",
            "discover_connection_methods": False,
            # The room nick is the account's name: one name everywhere.
            "muc_nickname_from_jid": True,
            "show_controlbox_by_default": True,
            "play_sounds": False,
            "allow_message_retraction": "all",
        }
        name = html.escape(config.server.name)
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{name}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/dist/converse.min.css">
<script type="module" src="/dist/converse.min.js"></script>
<style>
/* The banner stands in the page's flow above Converse; Converse's full-screen layout fills
   the window from its bottom edge, so it is told how much height the banner leaves it. */
:root {{ --banner-height: 28px; }}
body {{ margin: 0; }}
#about {{ box-sizing: border-box; height: var(--banner-height); padding: 0 8px;
  font: 14px/28px sans-serif; background: #eef; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }}
converse-root.converse-fullscreen {{ height: calc(100vh - var(--banner-height)); }}
.conversejs {{ --fullpage-chat-height: calc(var(--vh, 1vh) * 100 - var(--banner-height)); }}
</style>
</head><body>
<div id="about">{self.rooms_text()}</div>
<script type="module">
var settings = {json.dumps(settings)};
settings.websocket_url = (location.protocol === "https:" ? "wss://" : "ws://") +
  location.host + "/xmpp-websocket";
converse.initialize(settings);
</script>
</body></html>
"""
