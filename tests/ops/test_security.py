"""TLS for line chat, require_tls, passwords over plaintext, cloaks, operators, server bans."""

from __future__ import annotations

import re
import socket
import ssl
import time
from pathlib import Path

import pytest

from chatserver.server.tls import make_self_signed
from tests.ops.helpers import (
    OPER_PASSWORD,
    PASSWORD,
    OpsServer,
    TlsLineClient,
    chat,
    free_port,
    join,
    non_loopback_address,
    operators_toml,
    sync,
    wait_port,
)
from tests.support.server import LineClient

pytestmark = pytest.mark.timeout(60)


def tls_server(tmp_path: Path, **overrides: dict[str, object]) -> OpsServer:
    """A line-only server with a TLS port: ``server.ports["line_tls"]``."""
    tls_port = free_port()
    line = {"tls_port": tls_port, **overrides.pop("line", {})}
    server = OpsServer(tmp_path, overrides={"line": line, **overrides}).start()
    server.ports["line_tls"] = tls_port
    wait_port(tls_port)
    return server


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
    return data


# -- TLS -----------------------------------------------------------------------------------


def test_line_chat_over_tls_with_modern_versions_only(tmp_path: Path) -> None:
    server = tls_server(tmp_path)
    secure = TlsLineClient(server.ports["line_tls"])
    assert secure.sock.version() in ("TLSv1.2", "TLSv1.3")
    secure.expect("*** Choose a nick:")
    secure.send("alice")
    secure.expect("*** You are alice.")
    join(secure, "dev")
    plain = chat(server.ports["line"], "bob")
    join(plain, "dev")
    plain.send("over plaintext")
    secure.expect("[#dev] <bob> over plaintext")

    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_connection(("127.0.0.1", server.ports["line_tls"]), timeout=5) as raw:
        with pytest.raises(ssl.SSLError):
            old.wrap_socket(raw, server_hostname="localhost")
    twelve = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    twelve.check_hostname = False
    twelve.verify_mode = ssl.CERT_NONE
    twelve.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", server.ports["line_tls"]), timeout=5) as raw:
        with twelve.wrap_socket(raw, server_hostname="localhost") as sock:
            assert sock.version() == "TLSv1.2"
    # TLS clients are closed first: the server waits a little for each goodbye to be read.
    for client in (secure, plain):
        client.close()
    server.stop()


def test_certificate_reloads_on_sighup_without_dropping_connections(tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    first_cert, first_key = make_self_signed(["first.example"])
    cert.write_bytes(first_cert)
    key.write_bytes(first_key)
    server = tls_server(tmp_path / "s", tls={"certificate": str(cert), "key": str(key)})
    tls_port = server.ports["line_tls"]
    before = TlsLineClient(tls_port)
    before.expect("*** Choose a nick:")
    before.send("alice")
    before.expect("*** You are alice.")
    join(before, "dev")

    second_cert, second_key = make_self_signed(["second.example"])
    key.write_bytes(second_key)
    cert.write_bytes(second_cert)
    mark = len(server.log())
    server.sighup()
    server.wait_log("reload: TLS certificate and key loaded", start=mark)

    after = TlsLineClient(tls_port)
    assert after.certificate == ssl.PEM_cert_to_DER_cert(second_cert.decode())
    assert before.certificate == ssl.PEM_cert_to_DER_cert(first_cert.decode())
    after.expect("*** Choose a nick:")
    after.send("bob")
    after.expect("*** You are bob.")
    join(after, "dev")
    # The connection made before the reload goes on with its session.
    after.send("hello across the reload")
    before.expect("[#dev] <bob> hello across the reload")

    # A broken pair is refused with a log line, and the loaded one stays in use.
    key.write_bytes(first_key)
    mark = len(server.log())
    server.sighup()
    line = server.wait_log("reload: TLS certificate not changed", start=mark)
    assert "does not belong to the certificate" in line
    again = TlsLineClient(tls_port)
    assert again.certificate == ssl.PEM_cert_to_DER_cert(second_cert.decode())
    for client in (before, after, again):
        client.close()
    server.stop()


def test_require_tls_and_passwords_from_other_machines(tmp_path: Path) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no address but loopback")
    server = tls_server(tmp_path, server={"listen": ["127.0.0.1", address]})
    tls_port = server.ports["line_tls"]
    port = server.ports["line"]

    # Passwords over plaintext from another machine are refused, loopback is trusted.
    remote = chat(port, "remote", host=address)
    remote.send("/register " + PASSWORD)
    assert remote.expect("!!!") == (
        "!!! error: passwords are not accepted over plaintext from another machine:"
        f" connect with TLS to port {tls_port}"
    )
    local = chat(port, "local")
    local.send("/register " + PASSWORD)
    local.expect("*** local is now registered")
    secure = TlsLineClient(tls_port, host=address)
    secure.expect("*** Choose a nick:")
    secure.send(f"/identify local {PASSWORD}")
    secure.expect("*** you are logged in as local")

    # require_tls: plaintext from another machine is refused at once; loopback still works.
    for client in (remote, local, secure):
        client.close()
    server.stop()
    text = server.config_path.read_text().replace("[line]\n", "[line]\nrequire_tls = true\n", 1)
    server.config_path.write_text(text)
    server.start()
    wait_port(tls_port)
    refused = LineClient(port, host=address)
    lines = []
    try:
        while True:
            lines.append(refused.read_line())
    except ConnectionError:
        pass
    assert lines == [
        "!!! error: plaintext connections from other machines are not accepted:"
        f" connect with TLS to port {tls_port}"
    ]
    chat(port, "stillok")
    over_tls = TlsLineClient(tls_port, host=address)
    over_tls.expect("*** Choose a nick:")
    over_tls.close()
    server.stop()


# -- cloaks and operators ------------------------------------------------------------------


def test_addresses_are_shown_to_operators_only(tmp_path: Path) -> None:
    server = OpsServer(tmp_path, extra=operators_toml()).start()
    port = server.ports["line"]
    alice = chat(port, "alice")
    bob = chat(port, "bob")
    bob.send("/whois alice")
    whois = []
    while not (line := bob.read_line()).startswith("*** end of whois"):
        whois.append(line)
    assert re.fullmatch(r"\*\*\* alice is alice!alice@[0-9a-f]{10}\.cloak.*", whois[0])
    assert not any("127.0.0.1" in line for line in whois)

    bob.send("/oper admin wrong-password")
    assert bob.expect("!!!") == "!!! error: wrong operator name or password"
    bob.send("/oper nobody " + OPER_PASSWORD)
    assert bob.expect("!!!") == "!!! error: wrong operator name or password"
    bob.send("/kline alice")
    assert bob.expect("!!!") == "!!! error: only server operators may do that (/oper first)"
    bob.send("/oper admin " + OPER_PASSWORD)
    bob.expect("*** you are now a server operator")
    bob.send("/whois alice")
    assert bob.expect("is connected from") == "*** alice is connected from 127.0.0.1 (line)"
    alice.send("/whois bob")
    assert alice.expect("*** bob is a server operator")
    alice.expect("*** end of whois bob")
    assert not any("127.0.0.1" in line for line in alice.seen)
    assert "failed /oper as admin from 127.0.0.1" in server.log()
    assert OPER_PASSWORD not in server.log()
    server.stop()


def test_server_bans_apply_at_once_on_every_protocol_and_persist(tmp_path: Path) -> None:
    server = OpsServer(
        tmp_path,
        protocols=("line", "irc", "xmpp"),
        extra=operators_toml(),
    ).start()
    port = server.ports["line"]
    admin = chat(port, "admin")
    admin.send("/oper admin " + OPER_PASSWORD)
    admin.expect("*** you are now a server operator")
    mallory = chat(port, "mallory")
    join(mallory, "dev")

    admin.send("/kline mallory spamming")
    assert admin.expect("*** server ban on") == "*** server ban on mallory!*@*: spamming"
    assert admin.expect("*** disconnected:") == "*** disconnected: mallory"
    assert (
        mallory.expect("Server closing connection")
        == "-!- Server closing connection: You are banned from this server: spamming"
    )
    # The nick is refused on every protocol.
    again = LineClient(port)
    again.expect("*** Choose a nick:")
    again.send("mallory")
    again.expect("-!- Server closing connection: You are banned from this server: spamming")
    with socket.create_connection(("127.0.0.1", server.ports["irc"]), timeout=5) as irc:
        irc.sendall(b"NICK mallory\r\nUSER m 0 * :M\r\n")
        answer = read_until_closed(irc)
    assert b"ERROR" in answer and b"banned from this server: spamming" in answer

    # A host ban (here: loopback, so everyone new) refuses connections before anything else.
    admin.send("/kline 127.0.0.0/8 closed for maintenance")
    admin.expect("*** server ban on *!*@127.0.0.0/8")
    refused = LineClient(port)
    assert refused.read_line() == (
        "!!! error: You are banned from this server: closed for maintenance"
    )
    with socket.create_connection(("127.0.0.1", server.ports["irc"]), timeout=5) as irc:
        assert b"banned from this server" in read_until_closed(irc)
    with socket.create_connection(("127.0.0.1", server.ports["xmpp"]), timeout=5) as xmpp:
        xmpp.sendall(
            b"<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client'"
            b" xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
        )
        answer = read_until_closed(xmpp)
    assert b"policy-violation" in answer and b"banned from this server" in answer
    admin.send("/unkline 127.0.0.0/8")
    admin.expect("*** lifted the server ban on *!*@127.0.0.0/8")

    admin.send("/klines")
    admin.expect("*** server bans (1):")
    assert admin.read_line().startswith("***   mallory!*@* (by admin, ")
    server.stop()
    server.start()
    back = LineClient(port)
    back.expect("*** Choose a nick:")
    back.send("mallory")
    back.expect("-!- Server closing connection: You are banned from this server: spamming")
    server.stop()


def test_one_address_has_one_cloak_and_a_cloak_ban_holds_on_every_protocol(
    tmp_path: Path,
) -> None:
    server = OpsServer(tmp_path, protocols=("line", "irc", "xmpp"), extra=operators_toml()).start()
    port = server.ports["line"]
    admin = chat(port, "admin")
    admin.send("/oper admin " + OPER_PASSWORD)
    admin.expect("*** you are now a server operator")
    lina = chat(port, "lina")
    lina.send("/whois lina")
    mask = lina.expect("*** lina is lina!").split()[3]
    cloak = mask.rpartition("@")[2]
    assert re.fullmatch(r"[0-9a-f]{10}\.cloak", cloak), cloak
    with socket.create_connection(("127.0.0.1", server.ports["irc"]), timeout=5) as irc:
        irc.sendall(b"NICK ian\r\nUSER ian 0 * :Ian\r\n")
        welcome = b""
        while b" 001 " not in welcome:
            welcome += irc.recv(4096)
    # The same address over IRC: the same cloak.
    assert f"ian!ian@{cloak}".encode() in welcome

    # Banned by its cloak from line chat, the address is out on every protocol.
    admin.send(f"/kline *!*@{cloak} switching protocols will not help")
    admin.expect(f"*** server ban on *!*@{cloak}")
    lina.expect("-!- Server closing connection: You are banned from this server")
    with socket.create_connection(("127.0.0.1", server.ports["irc"]), timeout=5) as irc:
        irc.sendall(b"NICK ivy\r\nUSER ivy 0 * :Ivy\r\n")
        assert b"switching protocols will not help" in read_until_closed(irc)
    with socket.create_connection(("127.0.0.1", server.ports["xmpp"]), timeout=5) as xmpp:
        xmpp.sendall(
            b"<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client'"
            b" xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
        )
        answer = read_until_closed(xmpp)
    assert b"policy-violation" in answer and b"switching protocols will not help" in answer
    server.stop()


def test_config_bans_by_account(tmp_path: Path) -> None:
    server = OpsServer(tmp_path, extra='[[bans]]\naccount = "mallory"\nreason = "abuse"\n').start()
    port = server.ports["line"]
    # The account exists (made before the ban would matter); logging in to it is refused.
    mallory = chat(port, "mallory")
    mallory.send("/register " + PASSWORD)
    assert mallory.expect("-!- Server closing connection") == (
        "-!- Server closing connection: You are banned from this server: abuse"
    )
    other = chat(port, "other")
    other.send(f"/identify mallory {PASSWORD}")
    other.expect("-!- Server closing connection: You are banned from this server: abuse")
    fine = chat(port, "fine")
    sync(fine)
    server.stop()
