"""
A throwaway OpenLDAP server (slapd) for integration tests: its own slapd.conf, mdb database
and schemas in a temporary folder, listening on a free loopback port, loaded with slapadd.
With ``tls=True`` it also gets a test CA and a server certificate and listens on ldaps://
as well, with StartTLS on the plain port.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time

SCHEMA_DIR = "/etc/ldap/schema"
MODULE_DIR = "/usr/lib/ldap"

# The inetLocalMailRecipient class of draft-lachman-laser-ldap-mail-routing, for systems
# whose misc.schema lacks it.
MAIL_ROUTING_SCHEMA = """\
attributetype ( 2.16.840.1.113730.3.1.13 NAME 'mailLocalAddress'
    EQUALITY caseIgnoreIA5Match SUBSTR caseIgnoreIA5SubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.26{256} )
attributetype ( 2.16.840.1.113730.3.1.18 NAME 'mailHost'
    EQUALITY caseIgnoreIA5Match
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.26{256} SINGLE-VALUE )
attributetype ( 2.16.840.1.113730.3.1.47 NAME 'mailRoutingAddress'
    EQUALITY caseIgnoreIA5Match SUBSTR caseIgnoreIA5SubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.26{256} SINGLE-VALUE )
objectclass ( 2.16.840.1.113730.3.2.147 NAME 'inetLocalMailRecipient'
    SUP top AUXILIARY MAY ( mailLocalAddress $ mailHost $ mailRoutingAddress ) )
"""


#: The base entry and the people branch every test directory starts with.
BASE_LDIF = """\
dn: dc=example,dc=test
objectClass: top
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=people,dc=example,dc=test
objectClass: organizationalUnit
ou: people

"""


def start_or_skip(folder: str, ldif: str, **options) -> "Slapd":
    """A started Slapd, or a pytest skip when this machine's slapd cannot run."""
    import pytest

    server = Slapd(folder, **options)
    try:
        server.start(ldif)
    except Exception as e:  # a broken slapd installation: nothing to test against
        server.stop()
        pytest.skip(f"slapd could not be started: {e}")
    return server


def slapd_binary() -> str | None:
    """The path of slapd and slapadd's folder if both are installed with their schemas."""
    for name in ("slapd", "slapadd"):
        if shutil.which(name) is None and not os.access(f"/usr/sbin/{name}", os.X_OK):
            return None
    if not os.path.exists(os.path.join(SCHEMA_DIR, "inetorgperson.schema")):
        return None
    return shutil.which("slapd") or "/usr/sbin/slapd"


def ssha(password: str, salt: bytes = b"mailsuit") -> str:
    """A ``{SSHA}`` userPassword value for ``password``."""
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _name(common_name: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def write_test_pki(folder: str, *, names: tuple[str, ...] = ("localhost", "127.0.0.1")
                   ) -> tuple[str, str, str]:
    """
    A fresh CA and a server certificate for ``names`` (DNS names or IP addresses) signed by
    it, as PEM files in ``folder``: (ca_path, certificate_path, key_path).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("mailsuite test CA")
    ca = (x509.CertificateBuilder()
          .subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))

    alternative_names = []
    for name in names:
        try:
            alternative_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternative_names.append(x509.DNSName(name))
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0])).issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256()))

    paths = tuple(os.path.join(folder, n) for n in ("ca.pem", "server.pem", "server.key"))
    pem = serialization.Encoding.PEM
    with open(paths[0], "wb") as f:
        f.write(ca.public_bytes(pem))
    with open(paths[1], "wb") as f:
        f.write(certificate.public_bytes(pem))
    with open(paths[2], "wb") as f:
        f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(paths[2], 0o600)
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Slapd:
    """
    One slapd process.  ``start(ldif)`` loads ``ldif`` (text, entries below ``suffix``)
    and starts listening; ``url`` is where; ``stop()`` ends it.  With ``tls=True`` the
    server certificate (for ``tls_names``) is signed by a fresh CA at ``ca_path``, StartTLS
    works on ``url`` and ``ldaps_url`` is an ldaps:// listener.
    """

    def __init__(self, folder: str, *, suffix: str = "dc=example,dc=test",
                 root_dn: str = "cn=admin,dc=example,dc=test",
                 root_password: str = "admin-secret", tls: bool = False,
                 tls_names: tuple[str, ...] = ("localhost", "127.0.0.1")):
        self.folder = folder
        self.tls = tls
        self.tls_names = tls_names
        self.ca_path = self.certificate_path = self.key_path = ""
        self.ldaps_port = 0
        self.suffix = suffix
        self.root_dn = root_dn
        self.root_password = root_password
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.config_path = os.path.join(folder, "slapd.conf")
        self.log_path = os.path.join(folder, "slapd.log")

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    def _schemas(self) -> list[str]:
        names = ["core", "cosine", "inetorgperson", "nis"]
        paths = [os.path.join(SCHEMA_DIR, f"{n}.schema") for n in names]
        misc = os.path.join(SCHEMA_DIR, "misc.schema")
        if os.path.exists(misc) and "inetLocalMailRecipient" in open(misc).read():
            paths.append(misc)
        else:
            own = os.path.join(self.folder, "mailrouting.schema")
            with open(own, "w") as f:
                f.write(MAIL_ROUTING_SCHEMA)
            paths.append(own)
        return paths

    def _write_config(self) -> None:
        database = os.path.join(self.folder, "db")
        os.makedirs(database, exist_ok=True)
        lines = [f"include {path}" for path in self._schemas()]
        lines += [
            f"pidfile {os.path.join(self.folder, 'slapd.pid')}",
            f"argsfile {os.path.join(self.folder, 'slapd.args')}",
        ]
        if self.tls:
            lines += [
                f"TLSCACertificateFile {self.ca_path}",
                f"TLSCertificateFile {self.certificate_path}",
                f"TLSCertificateKeyFile {self.key_path}",
            ]
        if os.path.isdir(MODULE_DIR):
            lines += [f"modulepath {MODULE_DIR}", "moduleload back_mdb"]
        lines += [
            "database mdb",
            "maxsize 104857600",
            f'suffix "{self.suffix}"',
            f'rootdn "{self.root_dn}"',
            f"rootpw {ssha(self.root_password)}",
            f"directory {database}",
            "index objectClass,mail,uid,mailLocalAddress eq",
            "access to attrs=userPassword by anonymous auth by self write by * none",
            "access to * by * read",
        ]
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, ldif: str, timeout: float = 20.0) -> "Slapd":
        os.makedirs(self.folder, exist_ok=True)
        if self.tls:
            self.ca_path, self.certificate_path, self.key_path = write_test_pki(
                self.folder, names=self.tls_names)
        self._write_config()
        ldif_path = os.path.join(self.folder, "data.ldif")
        with open(ldif_path, "w") as f:
            f.write(ldif)
        subprocess.run(["slapadd", "-f", self.config_path, "-l", ldif_path],
                       check=True, capture_output=True, timeout=60)
        self.port = free_port()
        urls = [f"{self.url}/"]
        if self.tls:
            self.ldaps_port = free_port()
            urls.append(f"{self.ldaps_url}/")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                ["slapd", "-f", self.config_path, "-h", " ".join(urls), "-d", "0"],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"slapd exited with {self.process.returncode}: {self.log()}")
            try:
                for port in (self.port, self.ldaps_port):
                    if port:
                        socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"slapd did not start within {timeout} s: {self.log()}")

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-3000:]
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
