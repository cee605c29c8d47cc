"""
A session builder for the LDAP server tests: the embedded directory (in memory, seeded with
the demo LDIF), a transport that records startTLS, a clock, and helpers that send requests
built with ldaptor's classes and decode the responses.
"""

from __future__ import annotations

import os
import socket
import struct

from ldaptor import ldapfilter
from ldaptor.protocols import pureber, pureldap
from twisted.internet import task
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.testing import StringTransport

from mailsuite.directory.embedded import EmbeddedDirectory
from mailsuite.ldap import codec
from mailsuite.ldap.server import LDAPFactory, LDAPLimits

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BASE = "dc=example,dc=test"
ADMIN_DN = "cn=admin,dc=example,dc=test"
ADMIN_PASSWORD = "admin-password"
ALICE_DN = "uid=alice,ou=people,dc=example,dc=test"
BOB_DN = "uid=bob,ou=people,dc=example,dc=test"


def demo_directory() -> EmbeddedDirectory:
    with open(os.path.join(ROOT, "etc", "directory.ldif"), "rb") as f:
        seed = f.read()
    return EmbeddedDirectory(None, domains=["example.test"], base_dn=BASE, seed_ldif=seed,
                             password_scheme="SSHA")


class TLSContext:
    """Stands for the server's TLS context factory."""


class RecordingTransport(StringTransport):
    def __init__(self):
        super().__init__(hostAddress=IPv4Address("TCP", "127.0.0.1", 389),
                         peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.tls_started = []

    def startTLS(self, context):
        self.tls_started.append(context)


class PeerSocket:
    """Stands for a connected unix socket whose peer runs as ``uid``."""

    def __init__(self, uid):
        self.uid = uid

    def getsockopt(self, level, option, size):
        assert (level, option) == (socket.SOL_SOCKET, socket.SO_PEERCRED)
        return struct.pack("3i", 4321, self.uid, self.uid)


class UnixTransport(RecordingTransport):
    """A unix-socket connection from a process running as ``uid``."""

    def __init__(self, uid):
        super().__init__()
        self.hostAddr = UNIXAddress("/run/mailsuite/ldapi")
        self.peerAddr = UNIXAddress(None)
        self.socket = PeerSocket(uid)

    def getHandle(self):
        return self.socket


def decode_all(data: bytes) -> list:
    """Every LDAPMessage in ``data``."""
    out = []
    data = bytes(data)
    while data:
        size = codec.frame_length(data, max_size=1 << 30)
        message, _ = pureber.berDecodeObject(codec._DECODER, data[:size])
        out.append(message)
        data = data[size:]
    return out


class Session:
    """One server session on a fake transport."""

    def __init__(self, *, directory=None, tls=True, implicit_tls=False, anonymous_search=True,
                 limits=None, clock=None, allow_plaintext_auth=True, transport=None,
                 throttle=None):
        self.directory = directory if directory is not None else demo_directory()
        self.clock = clock if clock is not None else task.Clock()
        self.factory = LDAPFactory(
            hostname="mail.example.test", directory=self.directory,
            tls=TLSContext() if tls else None, implicit_tls=implicit_tls,
            admin_dn=ADMIN_DN, admin_password=ADMIN_PASSWORD,
            anonymous_search=anonymous_search, allow_plaintext_auth=allow_plaintext_auth,
            limits=limits or LDAPLimits(), clock=self.clock, throttle=throttle)
        self.server = self.factory.buildProtocol(None)
        self.transport = transport if transport is not None else RecordingTransport()
        self.server.makeConnection(self.transport)
        self._next_id = 1

    def raw(self, data: bytes) -> list:
        self.transport.clear()
        self.server.dataReceived(data)
        return decode_all(self.transport.value())

    def wire(self, op, controls=None) -> bytes:
        message = pureldap.LDAPMessage(op, controls=controls, id=self._next_id)
        self._next_id += 1
        return message.toWire()

    def send(self, op, controls=None) -> list:
        """Send one request; return the response messages."""
        return self.raw(self.wire(op, controls))

    def result(self, op, controls=None):
        """The single response op to a request."""
        messages = self.send(op, controls)
        assert len(messages) == 1, messages
        return messages[-1].value

    def bind(self, dn: str, password: str) -> int:
        return self.result(pureldap.LDAPBindRequest(dn=dn.encode(), auth=password.encode())).resultCode

    def sasl_bind(self, mechanism: bytes, credentials: bytes | None) -> int:
        op = pureldap.LDAPBindRequest(dn=b"", auth=(mechanism, credentials), sasl=True)
        return self.result(op).resultCode

    def who_am_i(self) -> bytes:
        return self.extended(codec.OID_WHO_AM_I).response

    def search(self, base=BASE, filter="(objectClass=*)", *, scope=2, attributes=(),
               size_limit=0, types_only=False, controls=None):
        """(entries as {dn: {attr: [values]}}, done message)."""
        op = pureldap.LDAPSearchRequest(
            baseObject=base.encode(), scope=scope, sizeLimit=size_limit,
            typesOnly=types_only, filter=ldapfilter.parseFilter(filter),
            attributes=[a.encode() for a in attributes])
        messages = self.send(op, controls)
        entries = {}
        for m in messages[:-1]:
            entries[m.value.objectName.decode()] = {
                a.decode(): [v for v in vs] for a, vs in m.value.attributes}
        return entries, messages[-1]

    def extended(self, name: bytes, value: bytes | None = None):
        return self.result(pureldap.LDAPExtendedRequest(requestName=name, requestValue=value))
