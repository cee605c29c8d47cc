"""
TLS for every listener: the configured certificate, or a self-signed one generated in
data_dir on first start so that STARTTLS is always offered.
"""

from __future__ import annotations

import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLContextFactory
from zope.interface import implementer

#: TLS 1.2 suites with forward secrecy (ECDHE/DHE) and AEAD ciphers only; TLS 1.3 suites
#: are all of that kind already.
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS:!SHA1"


class TLSError(Exception):
    """The certificate or key cannot be used; the message is one readable line."""


def self_signed_paths(data_dir: str) -> tuple[str, str]:
    folder = os.path.join(data_dir, "tls")
    return os.path.join(folder, "selfsigned.crt"), os.path.join(folder, "selfsigned.key")


def ensure_self_signed(data_dir: str, hostname: str) -> tuple[str, str]:
    """
    Return (certificate, key) paths of the self-signed certificate below data_dir, creating
    it if missing.  The key file is written with mode 0600 and both files are written to a
    temporary name first, so a crash never leaves half a certificate.
    """
    cert_path, key_path = self_signed_paths(data_dir)
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    os.makedirs(os.path.dirname(cert_path), mode=0o700, exist_ok=True)
    _write_atomically(key_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()), mode=0o600)
    _write_atomically(cert_path, certificate.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return cert_path, key_path


def _write_atomically(path: str, data: bytes, *, mode: int) -> None:
    temporary = path + ".tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def load_context_factory(certificate: str, private_key: str) -> ssl.CertificateOptions:
    """
    A server context factory: TLS 1.2 or newer, forward-secret AEAD ciphers only, the chain
    from the certificate file.
    """
    try:
        with open(certificate, "rb") as f:
            chain_pem = f.read()
        with open(private_key, "rb") as f:
            key_pem = f.read()
        key = serialization.load_pem_private_key(key_pem, password=None)
        chain = x509.load_pem_x509_certificates(chain_pem)
        if not chain:
            raise TLSError(f"{certificate}: no certificate found")
        leaf, *intermediates = chain
        options = ssl.CertificateOptions(
            privateKey=key,
            certificate=leaf,
            extraCertChain=intermediates,
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
            acceptableCiphers=ssl.AcceptableCiphers.fromOpenSSLCipherString(CIPHERS),
        )
        options.getContext()  # fails now, not at the first handshake, if key and cert differ
        return options
    except OSError as e:
        raise TLSError(f"{e.filename}: {e.strerror}") from None
    except (SSL.Error, ValueError, TypeError) as e:
        raise TLSError(f"{certificate} / {private_key}: unusable certificate or key ({e})") from None


@implementer(IOpenSSLContextFactory)
class ReloadableTLS:
    """
    The context factory every listener shares.  Each new connection (and each STARTTLS)
    asks for the current context, so ``reload()`` puts a renewed certificate into use at
    once while established sessions keep theirs.
    """

    def __init__(self, certificate: str, private_key: str):
        self.certificate = certificate
        self.private_key = private_key
        self._options = load_context_factory(certificate, private_key)

    def getContext(self):
        return self._options.getContext()

    def reload(self, certificate: str | None = None, private_key: str | None = None) -> None:
        """Load the files again (or new ones); TLSError leaves the current ones in use."""
        certificate = certificate or self.certificate
        private_key = private_key or self.private_key
        self._options = load_context_factory(certificate, private_key)
        self.certificate, self.private_key = certificate, private_key
