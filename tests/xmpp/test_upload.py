"""HTTP File Upload (XEP-0363) through the real server: slixmpp's xep_0363 finds the service,
asks for a slot and PUTs the file over HTTP; the file comes back by GET; the XEP's errors;
the rules of the PUT URL; an IRC user sees the link in the message."""

from __future__ import annotations

import http.client
import io
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.server import LineClient, ServerProcess
from tests.support.xmpp_client import DOMAIN, SlixmppClient

pytestmark = pytest.mark.timeout(60)

PASSWORD = "correct horse"
NS_UPLOAD = "urn:xmpp:http:upload:0"
SERVICE = f"upload.{DOMAIN}"
MAX_FILE = 4096
QUOTA = 10000


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    server = make_server(
        protocols=("irc", "xmpp", "web"),
        overrides={
            "upload": {
                "plain_http": True,
                "max_file_size": MAX_FILE,
                "quota": QUOTA,
                "slot_timeout": 2.0,
                "allowed_types": ["text/plain", "image/*"],
            }
        },
    )
    for name in ("alice", "bob"):
        server.create_account(name, PASSWORD)
    return server


@pytest.fixture
def connect(server: ServerProcess) -> Iterator[Callable[[str], SlixmppClient]]:
    made: list[SlixmppClient] = []

    def make(name: str) -> SlixmppClient:
        client = SlixmppClient(
            server.ports["xmpp"],
            f"{name}@{DOMAIN}/up",
            PASSWORD,
            plugins=("xep_0030", "xep_0045", "xep_0066", "xep_0363"),
            events=("message", "groupchat_message"),
        )
        made.append(client)
        assert client.logged_in
        client.do(client.xmpp.send_presence)
        return client

    yield make
    for client in made:
        client.close()


def _request(method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        conn.request(method, parts.path, body=body or None, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _slot(client: SlixmppClient, name: str, size: int, content_type: str) -> tuple[str, str]:
    iq = client.wait(client.xmpp.plugin["xep_0363"].request_slot, SERVICE, name, size, content_type)
    slot = iq["http_upload_slot"]
    return slot["put"]["url"], slot["get"]["url"]


def _iq_error(client: SlixmppClient, name: str, size: int, content_type: str) -> Any:
    from slixmpp.exceptions import IqError

    with pytest.raises(IqError) as caught:
        _slot(client, name, size, content_type)
    return caught.value.iq


def test_upload_with_slixmpp_and_get_it_back(connect) -> None:
    alice = connect("alice")
    data = b"hello from a file\n" * 10
    url = alice.wait(
        alice.xmpp.plugin["xep_0363"].upload_file,
        "notes.txt",
        input_file=io.BytesIO(data),
        content_type="text/plain",
    )
    assert url.startswith("http://localhost:") and url.endswith("/notes.txt")
    # The service was found through the server's disco#items.
    assert alice.do(lambda: str(alice.xmpp.plugin["xep_0363"].upload_service)) == SERVICE
    status, headers, body = _request("GET", url.replace("localhost", "127.0.0.1"))
    assert status == 200 and body == data
    assert headers["Content-Type"] == "text/plain"
    # Never run as a page of this site.
    assert "sandbox" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    # Anyone may fetch it (the link is shared), but no other name or id finds it.
    assert _request("GET", url.replace("localhost", "127.0.0.1") + "x")[0] == 404


def test_disco_describes_the_service(connect) -> None:
    alice = connect("alice")
    items = alice.wait(alice.xmpp.plugin["xep_0030"].get_items, DOMAIN)
    assert SERVICE in [item[0] for item in items["disco_items"]["items"]]
    info = alice.wait(alice.xmpp.plugin["xep_0030"].get_info, SERVICE)
    assert ("store", "file") in [i[:2] for i in info["disco_info"]["identities"]]
    assert NS_UPLOAD in info["disco_info"]["features"]
    (form,) = info["disco_info"].iterables
    assert form["values"]["max-file-size"] == str(MAX_FILE)


def test_errors_as_the_xep_says(connect) -> None:
    alice = connect("alice")
    # Too large: not-acceptable, with the limit.
    iq = _iq_error(alice, "big.txt", MAX_FILE + 1, "text/plain")
    assert iq["error"]["condition"] == "not-acceptable" and iq["error"]["type"] == "modify"
    too_large = iq.xml.find(f".//{{{NS_UPLOAD}}}file-too-large/{{{NS_UPLOAD}}}max-file-size")
    assert too_large is not None and too_large.text == str(MAX_FILE)
    # A type the server does not take: not-allowed.
    iq = _iq_error(alice, "run.sh", 10, "application/x-sh")
    assert iq["error"]["condition"] == "not-allowed" and iq["error"]["type"] == "cancel"
    # Not a plain file name: bad-request.
    iq = _iq_error(alice, "../etc/passwd", 10, "text/plain")
    assert iq["error"]["condition"] == "bad-request"
    # The quota counts slots handed out: the third of these is past it.
    _slot(alice, "a.png", MAX_FILE, "image/png")
    _slot(alice, "b.png", MAX_FILE, "image/png")
    iq = _iq_error(alice, "c.png", MAX_FILE, "image/png")
    assert iq["error"]["condition"] == "resource-constraint" and iq["error"]["type"] == "wait"
    # Another account has its own quota.
    bob = connect("bob")
    _slot(bob, "c.png", MAX_FILE, "image/png")


def test_the_put_url_is_single_use_short_lived_and_checked(server: ServerProcess, connect) -> None:
    alice = connect("alice")
    data = b"0123456789"
    put, get = _slot(alice, "ten.txt", len(data), "text/plain")
    put, get = put.replace("localhost", "127.0.0.1"), get.replace("localhost", "127.0.0.1")
    # Not there before it is uploaded.
    assert _request("GET", get)[0] == 404
    # The type and the size must be the slot's.
    headers = {"Content-Type": "image/png"}
    assert _request("PUT", put, data, headers)[0] == 400
    assert _request("PUT", put, data[:5], {"Content-Type": "text/plain"})[0] == 400
    # A body past the size limit is refused before it is stored.
    assert _request("PUT", put, b"x" * (MAX_FILE + 1), {"Content-Type": "text/plain"})[0] == 413
    # A refused PUT may be tried again; a stored one not.
    assert _request("PUT", put, data, {"Content-Type": "text/plain"})[0] == 201
    assert _request("PUT", put, data, {"Content-Type": "text/plain"})[0] == 403
    assert _request("GET", get)[2] == data
    # Another token, or another file's path with this token, is refused.
    assert (
        _request("PUT", put.replace("/put/", "/put/x"), data, {"Content-Type": "text/plain"})[0]
        == 403
    )
    # A slot lasts slot_timeout seconds.
    late, _ = _slot(alice, "late.txt", len(data), "text/plain")
    time.sleep(2.3)
    late = late.replace("localhost", "127.0.0.1")
    assert _request("PUT", late, data, {"Content-Type": "text/plain"})[0] == 403
    # The stored file is in the data directory, and still served after a restart.
    stored = list((server.data_dir / "uploads").glob("*/ten.txt"))
    assert len(stored) == 1 and stored[0].read_bytes() == data
    server.restart()
    assert _request("GET", get)[2] == data


def test_an_irc_user_sees_the_link(server: ServerProcess, connect) -> None:
    alice = connect("alice")
    bob = connect("bob")
    irc = LineClient(server.ports["irc"])
    irc.send("NICK dave")
    irc.send("USER dave 0 * :dave")
    irc.expect(" 001 dave ")
    irc.send("JOIN #photos")
    irc.expect("366")
    room = f"photos@conference.{DOMAIN}"
    for client, nick in ((alice, "alice"), (bob, "bob")):
        client.wait(client.muc.join_muc_wait, room, nick, maxstanzas=0)
    url = alice.wait(
        alice.xmpp.plugin["xep_0363"].upload_file,
        "cat.png",
        input_file=io.BytesIO(b"\x89PNG not really"),
        content_type="image/png",
    )

    def send() -> None:
        msg = alice.xmpp.make_message(room, mbody=url, mtype="groupchat")
        msg["oob"]["url"] = url
        msg.send()

    alice.do(send)
    line = irc.expect(url)
    assert line.split(" PRIVMSG #photos :")[1] == url
    # XMPP occupants get the stanza whole, the out-of-band data with it.
    got = bob.expect_event("groupchat_message", lambda m: m["body"] == url)
    assert got["oob"]["url"] == url
    irc.close()


def test_https_by_default_and_files_expire(make_server: Callable[..., ServerProcess]) -> None:
    """Without plain_http the URLs are on the web listener's HTTPS port; a file is gone
    expire_after seconds after its upload, and its space counts no more."""
    import ssl

    server = make_server(
        protocols=("xmpp", "web"),
        overrides={"upload": {"expire_after": 5.0, "quota": 30, "max_file_size": 20}},
    )
    server.create_account("alice", PASSWORD)
    alice = SlixmppClient(
        server.ports["xmpp"], f"alice@{DOMAIN}/up", PASSWORD, plugins=("xep_0363",)
    )
    try:
        data = b"twenty bytes of data"
        put, get = _slot(alice, "a.txt", len(data), "text/plain")
        assert put.startswith(f"https://localhost:{server.ports['web_tls']}/upload/put/")
        assert get.startswith(f"https://localhost:{server.ports['web_tls']}/upload/")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE

        def https(method: str, url: str, body: bytes = b"") -> tuple[int, bytes]:
            parts = urlsplit(url)
            conn = http.client.HTTPSConnection("127.0.0.1", parts.port, timeout=5, context=context)
            try:
                conn.request(
                    method, parts.path, body=body or None, headers={"Content-Type": "text/plain"}
                )
                response = conn.getresponse()
                return response.status, response.read()
            finally:
                conn.close()

        assert https("PUT", put, data)[0] == 201
        uploaded = time.monotonic()
        assert https("GET", get) == (200, data)
        # The quota (30 bytes) holds this file: another 20 do not fit yet.
        iq = _iq_error(alice, "b.txt", 20, "text/plain")
        assert iq["error"]["condition"] == "resource-constraint"
        time.sleep(max(0.0, uploaded + 5.3 - time.monotonic()))
        assert https("GET", get)[0] == 404
        _slot(alice, "b.txt", 20, "text/plain")
        assert not list((server.data_dir / "uploads").glob("*/a.txt"))
    finally:
        alice.close()
