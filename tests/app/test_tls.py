from __future__ import annotations

import datetime
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from OpenSSL import SSL

from chatserver.config import load_config
from chatserver.server.tls import (
    CERT_FILE,
    KEY_FILE,
    TlsError,
    ensure_self_signed,
    load_options,
    make_self_signed,
    self_signed_names,
    server_tls_options,
)
from tests.app.helpers import write_toml


def handshake(server_ctx: SSL.Context, cafile: Path, hostname: str) -> str:
    """A TLS handshake in memory between ``server_ctx`` and a verifying client; its version."""
    client_ctx = ssl.create_default_context(cafile=str(cafile))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(incoming, outgoing, server_hostname=hostname)
    server = SSL.Connection(server_ctx, None)
    server.set_accept_state()
    client_done = server_done = False
    for _ in range(20):
        if not client_done:
            try:
                client.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
        if outgoing.pending:
            server.bio_write(outgoing.read())
        if not server_done:
            try:
                server.do_handshake()
                server_done = True
            except SSL.WantReadError:
                pass
        try:
            incoming.write(server.bio_read(65536))
        except SSL.WantReadError:
            pass
        if client_done and server_done:
            version = client.version()
            assert version is not None
            return version
    raise AssertionError("the handshake did not finish")


def test_self_signed_pair_is_made(tmp_path: Path) -> None:
    cert_path, key_path, made = ensure_self_signed(
        tmp_path / "data", ["chat.example.org", "localhost"]
    )
    assert made
    assert (cert_path, key_path) == (tmp_path / "data" / CERT_FILE, tmp_path / "data" / KEY_FILE)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert not stat.S_IMODE(cert_path.stat().st_mode) & 0o022

    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert cert.public_key() == key.public_key()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["chat.example.org", "localhost"]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_before_utc <= now
    assert cert.not_valid_after_utc - now > datetime.timedelta(days=3649)
    assert cert.not_valid_after_utc - now < datetime.timedelta(days=3652)
    # No temporary files left beside them.
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [CERT_FILE, KEY_FILE]


def test_existing_pair_is_reused(tmp_path: Path) -> None:
    ensure_self_signed(tmp_path, ["a.example"])
    before = (tmp_path / CERT_FILE).read_bytes(), (tmp_path / KEY_FILE).read_bytes()
    _cert, _key, made = ensure_self_signed(tmp_path, ["other.example"])
    assert not made
    assert ((tmp_path / CERT_FILE).read_bytes(), (tmp_path / KEY_FILE).read_bytes()) == before


def test_force_and_half_pairs_make_a_new_one(tmp_path: Path) -> None:
    ensure_self_signed(tmp_path, ["a.example"])
    first = (tmp_path / KEY_FILE).read_bytes()
    assert ensure_self_signed(tmp_path, ["a.example"], force=True)[2]
    second = (tmp_path / KEY_FILE).read_bytes()
    assert second != first
    (tmp_path / CERT_FILE).unlink()
    assert ensure_self_signed(tmp_path, ["a.example"])[2]
    assert (tmp_path / KEY_FILE).read_bytes() != second
    load_options(tmp_path / CERT_FILE, tmp_path / KEY_FILE)


def test_names_come_from_the_config(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path / "c.toml",
        {"server": {"name": "Chat.Example.org"}, "xmpp": {"domain": "example.org"}},
    )
    assert self_signed_names(load_config(str(path))) == [
        "chat.example.org",
        "example.org",
        "localhost",
    ]
    assert self_signed_names(load_config(None)) == ["chatserver.local", "localhost"]


def test_options_require_tls_1_2_and_no_compression(tmp_path: Path) -> None:
    cert, key, _ = ensure_self_signed(tmp_path, ["localhost"])
    ctx = load_options(cert, key).getContext()
    # set_options(0) changes nothing and returns the options in force.
    options = ctx.set_options(0)
    for flag in (
        SSL.OP_NO_SSLv3,
        SSL.OP_NO_TLSv1,
        SSL.OP_NO_TLSv1_1,
        SSL.OP_NO_COMPRESSION,
    ):
        assert options & flag, flag
    assert not options & SSL.OP_NO_TLSv1_2


def test_a_client_can_verify_the_self_signed_certificate(tmp_path: Path) -> None:
    config = load_config(None, data_dir_override=str(tmp_path / "data"))
    options = server_tls_options(config)
    cert = tmp_path / "data" / CERT_FILE
    assert handshake(options.getContext(), cert, "localhost") in ("TLSv1.2", "TLSv1.3")
    assert handshake(options.getContext(), cert, "chatserver.local") in ("TLSv1.2", "TLSv1.3")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(options.getContext(), cert, "wrong.example")


def test_second_start_reuses_the_certificate(tmp_path: Path) -> None:
    config = load_config(None, data_dir_override=str(tmp_path))
    server_tls_options(config)
    first = (tmp_path / CERT_FILE).read_bytes()
    server_tls_options(config)
    assert (tmp_path / CERT_FILE).read_bytes() == first


def test_configured_files_are_used_as_they_are(tmp_path: Path) -> None:
    cert_pem, key_pem = make_self_signed(["chat.example.org"])
    (tmp_path / "site.crt").write_bytes(cert_pem)
    (tmp_path / "site.key").write_bytes(key_pem)
    path = write_toml(
        tmp_path / "c.toml",
        {"tls": {"certificate": str(tmp_path / "site.crt"), "key": str(tmp_path / "site.key")}},
    )
    config = load_config(str(path), data_dir_override=str(tmp_path / "data"))
    options = server_tls_options(config)
    assert not (tmp_path / "data").exists()
    assert handshake(options.getContext(), tmp_path / "site.crt", "chat.example.org")


def test_chain_after_the_leaf_is_accepted(tmp_path: Path) -> None:
    leaf, key = make_self_signed(["leaf.example"])
    other, _ = make_self_signed(["intermediate.example"])
    (tmp_path / "chain.crt").write_bytes(leaf + other)
    (tmp_path / "leaf.key").write_bytes(key)
    options = load_options(tmp_path / "chain.crt", tmp_path / "leaf.key")
    assert len(options.extraCertChain) == 1


def test_a_key_of_another_certificate_is_refused(tmp_path: Path) -> None:
    cert, _ = make_self_signed(["a.example"])
    _, key = make_self_signed(["b.example"])
    (tmp_path / "a.crt").write_bytes(cert)
    (tmp_path / "b.key").write_bytes(key)
    with pytest.raises(TlsError, match="does not belong to the certificate"):
        load_options(tmp_path / "a.crt", tmp_path / "b.key")


def test_unusable_files_are_refused(tmp_path: Path) -> None:
    cert, key = make_self_signed(["a.example"])
    (tmp_path / "good.crt").write_bytes(cert)
    (tmp_path / "good.key").write_bytes(key)
    (tmp_path / "junk").write_bytes(b"not pem\n")
    private = serialization.load_pem_private_key(key, password=None)
    encrypted = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    (tmp_path / "encrypted.key").write_bytes(encrypted)
    with pytest.raises(TlsError, match="no PEM certificate"):
        load_options(tmp_path / "junk", tmp_path / "good.key")
    with pytest.raises(TlsError, match="no usable PEM private key"):
        load_options(tmp_path / "good.crt", tmp_path / "junk")
    with pytest.raises(TlsError, match="encrypted"):
        load_options(tmp_path / "good.crt", tmp_path / "encrypted.key")
    with pytest.raises(TlsError, match="No such file"):
        load_options(tmp_path / "missing.crt", tmp_path / "good.key")
