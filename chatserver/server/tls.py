"""TLS for the listeners: the operator's certificate, or a self-signed pair made on first start.

A self-signed pair lets ``make run`` offer TLS ports with no setup; clients must be told to
accept it.  Production servers point ``[tls] certificate`` and ``key`` at real files.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLContextFactory, IOpenSSLServerConnectionCreator
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion
from zope.interface import implementer

from chatserver.config import Config

CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
VALID_FOR = datetime.timedelta(days=3650)

# TLS 1.2 suites: forward secrecy (ECDHE) and authenticated encryption (AES-GCM,
# ChaCha20-Poly1305) only, so no RSA key exchange and no CBC.  TLS 1.3 has its own suites,
# all of that kind, which OpenSSL sets apart from this list.
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)


class TlsError(Exception):
    """The certificate or key cannot be used; the message names the file."""


def self_signed_names(config: Config) -> list[str]:
    """DNS names for a self-signed certificate: the server name, the XMPP domain, localhost."""
    names: list[str] = []
    for name in (config.server.name, config.xmpp.domain, "localhost"):
        if name.lower() not in names:
            names.append(name.lower())
    return names


def make_self_signed(
    names: Iterable[str], *, now: datetime.datetime | None = None
) -> tuple[bytes, bytes]:
    """A new RSA-2048 key and a certificate for ``names``; returns (certificate PEM, key PEM)."""
    names = list(names)
    if not names:
        raise ValueError("a certificate needs at least one name")
    now = now or datetime.datetime.now(datetime.UTC)
    # RSA rather than EC: every client of all three protocols, however old, can use it.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    # Clients that connect by loopback address (tests, health checks) can still verify it.
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        # An hour of slack for clients whose clocks run a little behind.
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=True,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    # A crash half-way must not leave a truncated key that the next start would try to use.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as fp:
            fp.write(data)
            fp.flush()
            os.fsync(fp.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def ensure_self_signed(
    directory: Path, names: Iterable[str], *, force: bool = False
) -> tuple[Path, Path, bool]:
    """Make ``tls.crt`` and ``tls.key`` in ``directory`` unless both are there already.

    Returns (certificate path, key path, whether they were made now).
    """
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    if not force and cert_path.is_file() and key_path.is_file():
        return cert_path, key_path, False
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_pem, key_pem = make_self_signed(names)
    # The key first: a certificate without its key is useless, the other way round is remade.
    _write_atomically(key_path, key_pem, 0o600)
    _write_atomically(cert_path, cert_pem, 0o644)
    return cert_path, key_path, True


def load_options(cert_path: Path, key_path: Path) -> CertificateOptions:
    """Server TLS options from a PEM certificate file (leaf first, then any chain) and key file."""
    try:
        cert_data = cert_path.read_bytes()
        key_data = key_path.read_bytes()
    except OSError as err:
        raise TlsError(f"{err.filename}: {err.strerror}") from None
    try:
        chain = x509.load_pem_x509_certificates(cert_data)
    except ValueError:
        raise TlsError(f"{cert_path}: no PEM certificate in the file") from None
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        raise TlsError(f"{key_path}: the key is encrypted; give an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise TlsError(f"{key_path}: no usable PEM private key in the file") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if chain[0].public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise TlsError(f"{key_path}: the key does not belong to the certificate in {cert_path}")
    try:
        options = _certificate_options(key, chain)
    except (SSL.Error, ValueError, TypeError) as err:
        raise TlsError(f"{cert_path}: cannot be used for TLS: {err}") from None
    return options


def _certificate_options(key: object, chain: list[x509.Certificate]) -> CertificateOptions:
    try:
        # pyOpenSSL 24.3 and later take cryptography's objects and deprecate their own.
        options = _build_options(key, chain[0], chain[1:])
    except TypeError:
        options = _build_options(
            crypto.PKey.from_cryptography_key(key),  # type: ignore[arg-type]
            crypto.X509.from_cryptography(chain[0]),
            [crypto.X509.from_cryptography(c) for c in chain[1:]],
        )
    return options


def _build_options(key: object, cert: object, extra: list[Any]) -> CertificateOptions:
    options = CertificateOptions(
        privateKey=key,  # type: ignore[arg-type]
        certificate=cert,  # type: ignore[arg-type]
        extraCertChain=extra,
        raiseMinimumTo=TLSVersion.TLSv1_2,
        acceptableCiphers=AcceptableCiphers.fromOpenSSLCipherString(TLS12_CIPHERS),
        # CertificateOptions always sets OP_NO_COMPRESSION (CRIME): nothing to add for that.
    )
    # Build the context now so that a bad pair stops the start instead of failing the first client.
    options.getContext()
    return options


def server_tls_options(config: Config) -> CertificateOptions:
    """The configured certificate and key, or the self-signed pair in the data directory."""
    if config.tls.certificate:
        return load_options(Path(config.tls.certificate), Path(config.tls.key))
    cert_path, key_path, _made = ensure_self_signed(config.data_dir, self_signed_names(config))
    return load_options(cert_path, key_path)


@implementer(IOpenSSLServerConnectionCreator, IOpenSSLContextFactory)
class ReloadableTls:
    """The server's TLS options as TLS listeners see them: replaceable while they listen.

    A listener asks for a context once per new connection, so after :meth:`reload` new
    connections get the new certificate while open ones keep theirs (a TLS session cannot
    change its certificate; nothing is dropped).  ``load`` makes the options (see
    :func:`server_tls_options`); it runs on first use and on each reload.
    """

    def __init__(
        self,
        load: Callable[[], CertificateOptions],
        *,
        handshake_timeout: Callable[[], float] | None = None,
        clock: Any = None,
    ) -> None:
        self._load = load
        self._options: CertificateOptions | None = None
        # Read at each connection, so that a reload applies to the next one.
        self._handshake_timeout = handshake_timeout
        self._clock = clock

    @property
    def loaded(self) -> bool:
        return self._options is not None

    def options(self) -> CertificateOptions:
        """The current options (loaded on the first call; raises TlsError)."""
        if self._options is None:
            self._options = self._load()
        return self._options

    def reload(self) -> CertificateOptions:
        """Load the files again; on TlsError the current options stay in use."""
        self._options = self._load()
        return self._options

    # IOpenSSLContextFactory, for code that asks for a context.
    def getContext(self) -> SSL.Context:
        return self.options().getContext()

    # IOpenSSLServerConnectionCreator: what a TLS listener calls for each new connection.
    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        connection = SSL.Connection(self.getContext(), None)
        if self._handshake_timeout is not None:
            # A client that stalls in the handshake never reaches the protocol's own timeouts
            # in a way that closes it: closing politely waits for a handshake that never ends.
            clock = self._clock
            if clock is None:
                from twisted.internet import reactor as clock
            clock.callLater(self._handshake_timeout(), _expire, tlsProtocol, connection)
        return connection


def _expire(tls_protocol: Any, connection: SSL.Connection) -> None:
    """Abort a TLS connection whose handshake has not finished (the peer's Finished message,
    the last of the handshake, is still missing)."""
    transport = getattr(tls_protocol, "transport", None)
    if transport is None or not getattr(transport, "connected", False):
        return
    if connection.get_peer_finished() is None:
        tls_protocol.abortConnection()
