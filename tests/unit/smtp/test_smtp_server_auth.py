"""Tests for STARTTLS, AUTH and submission mode in mailsuite.smtp.server."""

from twisted.trial.unittest import SynchronousTestCase

from mailsuite.smtp.server import SMTPLimits
from tests.unit.smtp.test_smtp_support import (
    TLS_CONTEXT,
    Session,
    b64,
    codes,
    final,
    transaction,
)


class StartTLSTests(SynchronousTestCase):
    def test_starttls_starts_tls_after_220(self):
        """STARTTLS answers 220 2.0.0, then starts TLS with the factory's context."""
        session = Session()
        session.ehlo()
        self.assertEqual(session.send(b"STARTTLS\r\n"), ["220 2.0.0 Ready to start TLS"])
        [(context, written)] = session.transport.tls_started
        self.assertIs(context, TLS_CONTEXT)
        self.assertEqual(written, len(b"220 2.0.0 Ready to start TLS\r\n"))

    def test_plaintext_after_starttls_is_discarded(self):
        """Commands in the same packet as STARTTLS are discarded, never executed (CVE-2011-0411)."""
        session = Session(allow_plaintext_auth=True)
        session.ehlo()
        injected = (b"STARTTLS\r\nEHLO evil.example\r\nMAIL FROM:<evil@x.example>\r\n"
                    b"RCPT TO:<alice@example.test>\r\nQUIT\r\n")
        self.assertEqual(codes(session.send(injected)), [220])
        self.assertFalse(session.closed)
        self.assertEqual(session.target.deliveries, [])
        # The discarded MAIL left no state behind: EHLO is needed again.
        self.assertEqual(codes(session.send(b"MAIL FROM:<a@b.example>\r\n")), [503])

    def test_session_reset_and_no_starttls_after_tls(self):
        """After STARTTLS, EHLO is required again and STARTTLS is no longer offered."""
        session = Session()
        session.ehlo()
        session.send(b"STARTTLS\r\n")
        lines = session.ehlo()
        self.assertFalse(any("STARTTLS" in line for line in lines))
        self.assertIn("250-AUTH PLAIN LOGIN", lines)
        self.assertEqual(codes(session.send(b"STARTTLS\r\n")), [503])

    def test_starttls_aborts_open_transaction(self):
        """A transaction begun before STARTTLS is aborted."""
        session = Session()
        session.ehlo()
        session.send(transaction("alice@example.test") + b"STARTTLS\r\n")
        self.assertTrue(session.target.deliveries[0].aborted)

    def test_starttls_without_context(self):
        """Without a TLS context STARTTLS gives 502 and TLS never starts."""
        session = Session(tls=None)
        session.ehlo()
        self.assertEqual(codes(session.send(b"STARTTLS\r\n")), [502])
        self.assertEqual(session.transport.tls_started, [])

    def test_starttls_with_argument(self):
        """STARTTLS takes no argument (RFC 3207 §4): 501."""
        session = Session()
        self.assertEqual(codes(session.send(b"STARTTLS now\r\n")), [501])
        self.assertEqual(session.transport.tls_started, [])

    def test_protocol_with_tls(self):
        """A transaction after STARTTLS is recorded as ESMTPS."""
        session = Session()
        session.ehlo()
        session.send(b"STARTTLS\r\n")
        session.ehlo()
        session.send(transaction("alice@example.test"))
        self.assertEqual(session.target.deliveries[0].envelope.protocol, "ESMTPS")


class AuthTests(SynchronousTestCase):
    def test_auth_refused_before_tls(self):
        """AUTH without TLS gives 538 5.7.11 and the credentials are not checked."""
        session = Session()
        session.ehlo()
        lines = session.send(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n")
        self.assertEqual(final(lines), ["538 5.7.11 Encryption required for requested authentication mechanism"])
        self.assertEqual(session.realm.logouts, 0)
        self.assertIsNone(session.protocol._avatar)

    def test_auth_plain_with_plaintext_allowed(self):
        """With allow_plaintext_auth, AUTH PLAIN succeeds before TLS: 235 2.7.0."""
        session = Session(allow_plaintext_auth=True)
        session.ehlo()
        lines = session.send(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n")
        self.assertEqual(lines, ["235 2.7.0 Authentication successful"])

    def test_auth_plain_after_tls(self):
        """After STARTTLS, AUTH PLAIN succeeds."""
        session = Session()
        session.ehlo()
        session.send(b"STARTTLS\r\n")
        session.ehlo()
        self.assertEqual(codes(session.send(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n")), [235])

    def test_auth_plain_with_challenge(self):
        """AUTH PLAIN without initial response gets '334 ' and then the response."""
        session = Session(implicit_tls=True)
        session.ehlo()
        self.assertEqual(session.send(b"AUTH PLAIN\r\n"), ["334 "])
        self.assertEqual(codes(session.send(b64(b"alice\0alice\0secret") + b"\r\n")), [235])

    def test_auth_login(self):
        """AUTH LOGIN asks for user name and password in base64 and succeeds."""
        session = Session(implicit_tls=True)
        session.ehlo()
        self.assertEqual(session.send(b"AUTH LOGIN\r\n"), ["334 VXNlcm5hbWU6"])
        self.assertEqual(session.send(b64(b"alice") + b"\r\n"), ["334 UGFzc3dvcmQ6"])
        self.assertEqual(codes(session.send(b64(b"secret") + b"\r\n")), [235])

    def test_auth_login_with_initial_response(self):
        """AUTH LOGIN with the user name as initial response asks only for the password."""
        session = Session(implicit_tls=True)
        session.ehlo()
        self.assertEqual(session.send(b"AUTH LOGIN " + b64(b"alice") + b"\r\n"), ["334 UGFzc3dvcmQ6"])
        self.assertEqual(codes(session.send(b64(b"secret") + b"\r\n")), [235])

    def test_auth_wrong_password(self):
        """A wrong password gives 535 5.7.8."""
        session = Session(implicit_tls=True)
        session.ehlo()
        lines = session.send(b"AUTH PLAIN " + b64(b"\0alice\0wrong") + b"\r\n")
        self.assertEqual(lines, ["535 5.7.8 Authentication credentials invalid"])

    def test_auth_failures_count_as_errors(self):
        """Repeated AUTH failures reach the error limit: 421 and close."""
        session = Session(implicit_tls=True, limits=SMTPLimits(max_errors=2))
        session.ehlo()
        bad = b"AUTH PLAIN " + b64(b"\0alice\0wrong") + b"\r\n"
        self.assertEqual(codes(session.send(bad + bad)), [535, 535, 421])
        self.assertTrue(session.closed)

    def test_auth_cancel(self):
        """'*' cancels the exchange with 501 5.0.0; the session goes on."""
        session = Session(implicit_tls=True)
        session.ehlo()
        session.send(b"AUTH LOGIN\r\n")
        self.assertEqual(session.send(b"*\r\nNOOP\r\n"), ["501 5.0.0 Authentication cancelled", "250 2.0.0 OK"])

    def test_auth_malformed_base64(self):
        """Malformed base64 gives 501 5.5.2 and keeps the connection."""
        session = Session(implicit_tls=True)
        session.ehlo()
        self.assertEqual(codes(session.send(b"AUTH PLAIN %%%notbase64\r\nNOOP\r\n")), [501, 250])
        session.send(b"AUTH PLAIN\r\n")
        self.assertEqual(final(session.send(b"@@@\r\n")), ["501 5.5.2 Malformed authentication data"])
        self.assertFalse(session.closed)

    def test_auth_malformed_plain_message(self):
        """A PLAIN message without two NULs gives 501 5.5.2."""
        session = Session(implicit_tls=True)
        session.ehlo()
        self.assertEqual(codes(session.send(b"AUTH PLAIN " + b64(b"alice secret") + b"\r\n")), [501])

    def test_auth_without_mechanism(self):
        """AUTH without a mechanism gives 501 and keeps the connection."""
        session = Session(implicit_tls=True)
        session.ehlo()
        self.assertEqual(codes(session.send(b"AUTH\r\nNOOP\r\n")), [501, 250])

    def test_auth_unknown_mechanism(self):
        """An unsupported mechanism gives 504 5.5.4."""
        session = Session(implicit_tls=True)
        session.ehlo()
        self.assertEqual(codes(session.send(b"AUTH CRAM-MD5\r\n")), [504])

    def test_auth_other_authzid_refused(self):
        """A PLAIN authzid naming someone else is refused with 535."""
        session = Session(implicit_tls=True)
        session.ehlo()
        lines = session.send(b"AUTH PLAIN " + b64(b"bob\0alice\0secret") + b"\r\n")
        self.assertEqual(codes(lines), [535])
        self.assertIsNone(session.protocol._avatar)

    def test_auth_twice(self):
        """AUTH after a successful AUTH gives 503."""
        session = Session(implicit_tls=True)
        session.login()
        self.assertEqual(codes(session.send(b"AUTH LOGIN\r\n")), [503])

    def test_auth_during_transaction(self):
        """AUTH inside a mail transaction gives 503 (RFC 4954 §4)."""
        session = Session(implicit_tls=True)
        session.ehlo()
        session.send(b"MAIL FROM:<a@b.example>\r\n")
        self.assertEqual(codes(session.send(b"AUTH LOGIN\r\n")), [503])

    def test_logout_on_disconnect(self):
        """The avatar's logout is called when the connection ends."""
        session = Session(implicit_tls=True)
        session.login()
        session.protocol.connectionLost(None)
        self.assertEqual(session.realm.logouts, 1)


class SubmissionTests(SynchronousTestCase):
    def test_mail_requires_auth(self):
        """In submission mode MAIL without AUTH gives 530 5.7.0."""
        session = Session(mode="submission", implicit_tls=True)
        session.ehlo()
        self.assertEqual(final(session.send(b"MAIL FROM:<alice@example.test>\r\n")),
                         ["530 5.7.0 Authentication required"])

    def test_own_address_accepted(self):
        """An authenticated user may send from any of their addresses, case-insensitively."""
        session = Session(mode="submission", implicit_tls=True)
        session.login()
        lines = session.send(transaction("x@remote.example", sender="liddell@example.TEST"))
        self.assertEqual(codes(lines), [250, 250])
        self.assertEqual(session.target.deliveries[0].envelope.authenticated_as, "alice")
        self.assertEqual(session.target.deliveries[0].envelope.protocol, "ESMTPSA")

    def test_foreign_sender_refused(self):
        """A sender address not belonging to the user gives 553 5.7.1."""
        session = Session(mode="submission", implicit_tls=True)
        session.login()
        lines = session.send(b"MAIL FROM:<ceo@example.test>\r\n")
        self.assertEqual(final(lines), ["553 5.7.1 Sender address not owned by user"])
        self.assertEqual(session.target.deliveries, [])

    def test_null_sender_refused(self):
        """The null sender is refused in submission."""
        session = Session(mode="submission", implicit_tls=True)
        session.login()
        self.assertEqual(codes(session.send(b"MAIL FROM:<>\r\n")), [553])

    def test_relay_denied_without_auth_in_mx_mode_even_for_local_sender(self):
        """Claiming a local sender does not open relaying."""
        session = Session()
        session.ehlo()
        lines = session.send(transaction("x@remote.example", sender="alice@example.test"))
        self.assertEqual(codes(lines), [250, 554])
