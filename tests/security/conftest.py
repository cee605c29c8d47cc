"""
The suite's real pieces wired for attack tests: the embedded directory seeded with the demo
LDIF (alice, bob, the staff group), the real Portal, a memory store, the delivery Router
with a queue that records what it is given, and the SMTP, POP3, IMAP and LDAP factories on
top, driven over fake transports.
"""

from __future__ import annotations

import pytest
from twisted.internet import defer, task

from mailsuite.auth import make_portal
from mailsuite.imap.server import IMAPFactory
from mailsuite.ldap.server import LDAPFactory
from mailsuite.pop3.server import POP3Factory
from mailsuite.smtp.delivery import Router
from mailsuite.smtp.server import SMTPFactory
from mailsuite.testing.memstore import MemoryMailStore
from tests.fuzz.harness import Connection
from tests.unit.ldap.ldap_fakes import ADMIN_DN, ADMIN_PASSWORD, demo_directory

HOSTNAME = "mail.example.test"


class RecordingQueue:
    """Stands for the outbound queue: records each enqueue and answers with an id."""

    def __init__(self):
        self.entries: list[tuple[object, list[str], bytes]] = []

    def enqueue(self, envelope, recipients, data, params=None):
        self.entries.append((envelope, list(recipients), data))
        return defer.succeed(f"Q{len(self.entries)}")


class Suite:
    """The real directory, portal, store and router, and a factory per protocol."""

    def __init__(self, directory=None):
        self.clock = task.Clock()
        self.directory = directory if directory is not None else demo_directory()
        self.store = MemoryMailStore()
        self.portal = make_portal(self.directory, self.store)
        self.queue = RecordingQueue()
        self.router = Router(directory=self.directory, store=self.store, queue=self.queue)
        self.tls = object()

    def smtp(self, mode: str = "mx", **options) -> SMTPFactory:
        return SMTPFactory(hostname=HOSTNAME, local_domains=self.directory.local_domains,
                           target=self.router, portal=self.portal, tls=self.tls, mode=mode,
                           allow_plaintext_auth=True, clock=self.clock, **options)

    def pop3(self, **options) -> POP3Factory:
        return POP3Factory(hostname=HOSTNAME, portal=self.portal, tls=self.tls,
                           allow_plaintext_auth=True, clock=self.clock, **options)

    def imap(self, **options) -> IMAPFactory:
        return IMAPFactory(hostname=HOSTNAME, portal=self.portal, tls=self.tls,
                           allow_plaintext_auth=True, clock=self.clock, **options)

    def ldap(self, **options) -> LDAPFactory:
        options.setdefault("allow_plaintext_auth", True)
        return LDAPFactory(hostname=HOSTNAME, directory=self.directory, tls=self.tls,
                           admin_dn=ADMIN_DN, admin_password=ADMIN_PASSWORD, clock=self.clock,
                           **options)

    def connect(self, factory) -> Connection:
        return Connection(factory)


@pytest.fixture
def suite() -> Suite:
    return Suite()
