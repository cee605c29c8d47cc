"""
STARTTLS command injection (the CVE-2011-0411 class) on every listener that upgrades to
TLS: SMTP STARTTLS, POP3 STLS, IMAP STARTTLS and LDAP StartTLS.  Whatever arrives in
plaintext after the upgrade command — in its packet, however that packet was cut, behind
a step still waiting for the store, or as half a command — is dropped: it never runs inside
the TLS session and the credentials it carries never reach the checker.
"""

from __future__ import annotations

import base64

import pytest
from ldaptor.protocols import pureldap
from twisted.cred import portal as cred_portal

from mailsuite.ldap import codec
from tests.unit.imap import imap_fakes
from tests.unit.ldap import ldap_fakes
from tests.unit.pop3 import pop3_fakes
from tests.unit.smtp.test_smtp_support import Session as SMTPSession
from tests.unit.smtp.test_smtp_support import codes, transaction


class CountingPortal:
    """Wraps a Portal and counts login attempts."""

    def __init__(self, portal: cred_portal.Portal):
        self.portal = portal
        self.attempts = 0

    def login(self, *args, **kwargs):
        self.attempts += 1
        return self.portal.login(*args, **kwargs)


# --------------------------------------------------------------------------- the four listeners


class Listener:
    """What the tests ask of each listener; ``session`` is its unit-test fake session."""

    def tls_started(self) -> int:
        return len(self.session.transport.tls_started)


class MailListener(Listener):
    """POP3 and IMAP: a fake session whose portal is swapped for a counting one."""

    session_class = None
    plaintext = True

    def __init__(self):
        self.session = self.session_class(allow_plaintext_auth=self.plaintext)
        self.portal = CountingPortal(self.session.factory.portal)
        self.session.factory.portal = self.session.server.portal = self.portal
        self.session.output()

    def send(self, data: bytes) -> bytes:
        self.session.send(data)
        return self.session.transport.value()


class SMTP(Listener):
    upgrade = b"STARTTLS\r\n"
    injected = (b"AUTH PLAIN " + base64.b64encode(b"\0alice\0secret") + b"\r\n"
                b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@remote.example>\r\n")

    def __init__(self):
        self.session = SMTPSession(mode="submission", allow_plaintext_auth=True)
        self.portal = CountingPortal(self.session.factory.portal)
        self.session.factory.portal = self.portal
        self.session.ehlo()

    def send(self, data: bytes) -> bytes:
        self.session.protocol.dataReceived(data)
        return self.session.transport.value()

    def check_fresh(self) -> None:
        """After TLS: EHLO is needed again, and MAIL needs AUTH."""
        self.session.take()
        assert codes(self.session.send(b"MAIL FROM:<alice@example.test>\r\n")) == [503]
        self.session.ehlo()
        assert codes(self.session.send(b"MAIL FROM:<alice@example.test>\r\n")) == [530]
        assert self.session.target.deliveries == []


class POP3(MailListener):
    upgrade = b"STLS\r\n"
    injected = b"USER alice\r\nPASS alice-secret\r\nDELE 1\r\nQUIT\r\n"
    session_class = pop3_fakes.Session

    def check_fresh(self) -> None:
        assert self.session.command(b"PASS alice-secret") == b"-ERR USER first\r\n"
        assert self.session.command(b"STAT") == b"-ERR Command not valid in this state\r\n"


class IMAP(MailListener):
    upgrade = b"t STARTTLS\r\n"
    injected = b"l LOGIN alice alice-secret\r\ns SELECT INBOX\r\nx LOGIN {5}\r\n"
    session_class = imap_fakes.Session
    plaintext = False

    def check_fresh(self) -> None:
        # No half-read literal waits: the next line is a command of its own.
        assert self.session.command(b"n NOOP") == b"n OK Completed\r\n"
        assert self.session.command(b"s SELECT INBOX") == (
            b"s BAD Command not valid in this state\r\n")


class LDAP(Listener):
    upgrade = pureldap.LDAPMessage(pureldap.LDAPStartTLSRequest(), id=1).toWire()
    bind = pureldap.LDAPMessage(pureldap.LDAPBindRequest(
        dn=ldap_fakes.ALICE_DN.encode(), auth=b"alice-password"), id=2).toWire()
    injected = bind + bind[:5]  # and half of another message

    def __init__(self):
        self.session = ldap_fakes.Session(allow_plaintext_auth=True)
        self.directory_checks = 0
        check = self.session.directory.check_password

        def counting(*args):
            self.directory_checks += 1
            return check(*args)

        self.session.directory.check_password = counting

    @property
    def portal(self):
        return self

    @property
    def attempts(self) -> int:
        return self.directory_checks

    def send(self, data: bytes) -> bytes:
        self.session.server.dataReceived(data)
        return self.session.transport.value()

    def check_fresh(self) -> None:
        # Still anonymous, and the next message is read from its first byte.
        assert self.session.extended(codec.OID_WHO_AM_I).response == b""


LISTENERS = [SMTP, POP3, IMAP, LDAP]


@pytest.mark.parametrize("listener", LISTENERS, ids=lambda c: c.__name__)
def test_injection_in_the_upgrade_packet_is_dropped(listener):
    """Commands in the packet that carries the upgrade command never run."""
    side = listener()
    side.send(side.upgrade + side.injected)
    assert side.tls_started() == 1
    assert side.portal.attempts == 0
    side.check_fresh()


@pytest.mark.parametrize("listener", LISTENERS, ids=lambda c: c.__name__)
def test_injection_is_dropped_however_the_upgrade_command_is_cut(listener):
    """The upgrade command split anywhere, its tail arriving with the injected commands,
    still leaves nothing of them to run."""
    for cut in range(1, len(listener.upgrade)):
        side = listener()
        side.send(listener.upgrade[:cut])
        assert side.tls_started() == 0
        side.send(listener.upgrade[cut:] + listener.injected)
        assert side.tls_started() == 1, cut
        assert side.portal.attempts == 0, cut
        side.check_fresh()


def test_smtp_injection_behind_a_waiting_step_is_dropped():
    """STARTTLS pipelined behind a recipient check still in progress drops what follows it
    once it finally runs."""
    side = SMTP()
    side.session.factory.mode = "mx"
    side.session.target.hold_recipients = True
    side.send(transaction("alice@example.test") + SMTP.upgrade + SMTP.injected)
    assert side.tls_started() == 0
    side.session.target.held[0].callback(None)
    assert side.tls_started() == 1
    assert side.portal.attempts == 0
    assert codes(side.session.take()) == [250, 250, 220]
    assert codes(side.session.send(b"NOOP\r\n")) == [250]
    # The transaction begun in plaintext was dropped with the upgrade (RFC 3207 §4.2).
    assert codes(side.session.send(b"RCPT TO:<alice@example.test>\r\n")) == [503]


def test_imap_injected_literal_does_not_swallow_the_first_tls_command():
    """A literal announced by the injected plaintext is forgotten: the first command sent
    inside TLS is read as a command, not as that literal's bytes."""
    side = IMAP()
    side.send(b"t STARTTLS\r\nx LOGIN {25}\r\n")
    side.session.output()
    assert side.session.command(b"a LOGIN alice alice-secret").startswith(b"a OK")
