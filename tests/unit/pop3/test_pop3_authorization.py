"""The POP3 server in the AUTHORIZATION state: greeting, CAPA, STLS, USER/PASS, AUTH PLAIN."""

import base64

from twisted.trial.unittest import SynchronousTestCase

from mailsuite.interfaces import StoreUnavailable
from mailsuite.pop3.server import State

from .pop3_fakes import HOSTNAME, TLSContext, Session, deliver


def plain(authzid: str, authcid: str, password: str) -> bytes:
    return base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode())


def capabilities(session: Session) -> list[bytes]:
    reply = session.command(b"CAPA")
    lines = reply.split(b"\r\n")
    assert lines[0].startswith(b"+OK") and lines[-2:] == [b".", b""]
    return lines[1:-2]


class GreetingTests(SynchronousTestCase):
    def test_greeting_names_the_host(self):
        """The server greets with +OK, its host name and "POP3 ready"."""
        session = Session()
        self.assertEqual(session.output(), f"+OK {HOSTNAME} POP3 ready\r\n".encode())

    def test_commands_are_case_insensitive(self):
        """"capa" is CAPA."""
        session = Session()
        self.assertTrue(session.command(b"capa").startswith(b"+OK"))


class CapaTests(SynchronousTestCase):
    def test_capa_before_tls_offers_stls_and_no_login(self):
        """Before TLS (plaintext refused) CAPA lists STLS but neither USER nor SASL."""
        caps = capabilities(Session())
        self.assertIn(b"STLS", caps)
        self.assertNotIn(b"USER", caps)
        self.assertFalse(any(c.startswith(b"SASL") for c in caps))
        for cap in (b"TOP", b"UIDL", b"RESP-CODES", b"PIPELINING", b"AUTH-RESP-CODE"):
            self.assertIn(cap, caps)
        self.assertIn(b"IMPLEMENTATION mailsuite", caps)

    def test_capa_after_stls_offers_login_and_no_stls(self):
        """After STLS, CAPA lists USER and SASL PLAIN and no longer STLS."""
        session = Session()
        session.command(b"STLS")
        caps = capabilities(session)
        self.assertIn(b"USER", caps)
        self.assertIn(b"SASL PLAIN", caps)
        self.assertNotIn(b"STLS", caps)

    def test_capa_with_plaintext_allowed_offers_login(self):
        """allow_plaintext_auth lists USER and SASL PLAIN before TLS."""
        caps = capabilities(Session(allow_plaintext_auth=True))
        self.assertIn(b"USER", caps)
        self.assertIn(b"SASL PLAIN", caps)

    def test_capa_without_tls_context_omits_stls(self):
        """With no TLS context, STLS is not offered."""
        self.assertNotIn(b"STLS", capabilities(Session(tls=None)))

    def test_capa_on_implicit_tls_offers_login_and_no_stls(self):
        """On an implicit-TLS listener login is offered and STLS is not."""
        caps = capabilities(Session(implicit_tls=True))
        self.assertIn(b"USER", caps)
        self.assertNotIn(b"STLS", caps)

    def test_capa_after_login_omits_login_mechanisms(self):
        """In TRANSACTION, CAPA lists neither USER, SASL nor STLS."""
        session = Session(allow_plaintext_auth=True)
        session.login()
        caps = capabilities(session)
        self.assertNotIn(b"USER", caps)
        self.assertNotIn(b"STLS", caps)
        self.assertFalse(any(c.startswith(b"SASL") for c in caps))
        self.assertIn(b"UIDL", caps)


class StlsTests(SynchronousTestCase):
    def test_stls_starts_tls_after_the_ok(self):
        """STLS answers +OK, then starts TLS with the configured context."""
        context = TLSContext()
        session = Session(tls=context)
        session.output()
        session.send(b"STLS\r\n")
        self.assertEqual(session.transport.value(), b"+OK Begin TLS negotiation\r\n")
        self.assertEqual(session.transport.tls_started, [(context, len(session.transport.value()))])

    def test_stls_discards_plaintext_sent_with_it(self):
        """Commands in the same packet after STLS are dropped, not run inside TLS."""
        session = Session(allow_plaintext_auth=True)
        session.output()
        session.send(b"STLS\r\nUSER alice\r\nPASS alice-secret\r\n")
        self.assertEqual(session.output(), b"+OK Begin TLS negotiation\r\n")
        self.assertEqual(session.server.state, State.AUTHORIZATION)
        self.assertEqual(session.command(b"PASS alice-secret"), b"-ERR USER first\r\n")

    def test_stls_twice_is_refused(self):
        """STLS inside TLS gets -ERR and no second handshake."""
        session = Session()
        session.command(b"STLS")
        self.assertTrue(session.command(b"STLS").startswith(b"-ERR"))
        self.assertEqual(len(session.transport.tls_started), 1)

    def test_stls_on_implicit_tls_is_refused(self):
        """An implicit-TLS session does not accept STLS."""
        session = Session(implicit_tls=True)
        self.assertTrue(session.command(b"STLS").startswith(b"-ERR"))
        self.assertEqual(session.transport.tls_started, [])

    def test_stls_without_context_is_refused(self):
        """With no TLS context STLS gets -ERR."""
        session = Session(tls=None)
        self.assertTrue(session.command(b"STLS").startswith(b"-ERR"))

    def test_stls_after_login_is_refused(self):
        """STLS is an AUTHORIZATION command only (RFC 2595 §4)."""
        session = Session(allow_plaintext_auth=True)
        session.login()
        self.assertTrue(session.command(b"STLS").startswith(b"-ERR"))
        self.assertEqual(session.transport.tls_started, [])


class PlaintextPolicyTests(SynchronousTestCase):
    def test_user_before_tls_is_refused(self):
        """USER before TLS gets -ERR [AUTH] TLS required."""
        session = Session()
        self.assertEqual(session.command(b"USER alice"), b"-ERR [AUTH] TLS required\r\n")

    def test_auth_before_tls_is_refused(self):
        """AUTH PLAIN before TLS is refused and does not log in."""
        session = Session()
        reply = session.command(b"AUTH PLAIN " + plain("", "alice", "alice-secret"))
        self.assertEqual(reply, b"-ERR [AUTH] TLS required\r\n")
        self.assertEqual(session.server.state, State.AUTHORIZATION)

    def test_plaintext_login_allowed_by_option(self):
        """With allow_plaintext_auth, USER/PASS works without TLS."""
        session = Session(allow_plaintext_auth=True)
        reply = session.login()
        self.assertEqual(reply, b"+OK Send your password\r\n+OK Logged in, 0 messages\r\n")
        self.assertEqual(session.server.state, State.TRANSACTION)

    def test_login_allowed_after_stls(self):
        """After STLS, USER/PASS works."""
        session = Session()
        session.command(b"STLS")
        self.assertTrue(session.login().endswith(b"+OK Logged in, 0 messages\r\n"))


class UserPassTests(SynchronousTestCase):
    def setUp(self):
        self.session = Session(implicit_tls=True)

    def test_user_pass_success_counts_messages(self):
        """A right password logs in and reports the INBOX message count."""
        deliver(self.session.store, "alice", b"a\r\n", b"b\r\n")
        self.assertTrue(self.session.login().endswith(b"+OK Logged in, 2 messages\r\n"))

    def test_login_by_mail_address(self):
        """The primary address works as login name."""
        reply = self.session.login(b"alice@example.test")
        self.assertTrue(reply.endswith(b"+OK Logged in, 0 messages\r\n"))

    def test_password_with_spaces(self):
        """PASS takes the whole rest of the line as password."""
        self.assertTrue(self.session.login(b"bob", b"bob secret").endswith(b"+OK Logged in, 0 messages\r\n"))

    def test_wrong_password_fails(self):
        """A wrong password gets -ERR [AUTH] Authentication failed."""
        reply = self.session.login(b"alice", b"nope")
        self.assertTrue(reply.endswith(b"-ERR [AUTH] Authentication failed\r\n"))
        self.assertEqual(self.session.server.state, State.AUTHORIZATION)

    def test_unknown_user_fails_like_wrong_password(self):
        """An unknown user gets the same answers as a wrong password."""
        self.assertEqual(self.session.login(b"mallory", b"nope"), self.session.login(b"alice", b"nope"))

    def test_pass_without_user_fails(self):
        """PASS before USER gets -ERR."""
        self.assertEqual(self.session.command(b"PASS alice-secret"), b"-ERR USER first\r\n")

    def test_user_is_forgotten_after_failed_pass(self):
        """After a failed PASS, another PASS needs a new USER."""
        self.session.login(b"alice", b"nope")
        self.assertEqual(self.session.command(b"PASS alice-secret"), b"-ERR USER first\r\n")

    def test_directory_failure_is_temporary(self):
        """When the directory cannot answer, login gets -ERR [SYS/TEMP]."""
        self.session.directory.unavailable = True
        reply = self.session.login()
        self.assertTrue(reply.endswith(b"-ERR [SYS/TEMP] Try again later\r\n"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_store_failure_at_login_is_temporary(self):
        """When INBOX cannot be opened, login gets -ERR [SYS/TEMP] and stays in AUTHORIZATION."""
        self.session.store.fail["messages"] = StoreUnavailable("disk")
        reply = self.session.login()
        self.assertTrue(reply.endswith(b"-ERR [SYS/TEMP] Mailbox unavailable, try again later\r\n"))
        self.assertEqual(self.session.server.state, State.AUTHORIZATION)
        self.assertEqual(len(self.flushLoggedErrors(StoreUnavailable)), 1)

    def test_transaction_commands_refused_before_login(self):
        """STAT before login gets -ERR."""
        self.assertEqual(self.session.command(b"STAT"), b"-ERR Command not valid in this state\r\n")


class AuthPlainTests(SynchronousTestCase):
    def setUp(self):
        self.session = Session(implicit_tls=True)

    def test_initial_response_success(self):
        """AUTH PLAIN with an initial response logs in."""
        reply = self.session.command(b"AUTH PLAIN " + plain("", "alice", "alice-secret"))
        self.assertEqual(reply, b"+OK Logged in, 0 messages\r\n")
        self.assertEqual(self.session.server.state, State.TRANSACTION)

    def test_continuation_success(self):
        """AUTH PLAIN without initial response sends "+ " and takes the next line."""
        self.assertEqual(self.session.command(b"AUTH PLAIN"), b"+ \r\n")
        reply = self.session.command(plain("alice", "alice", "alice-secret"))
        self.assertEqual(reply, b"+OK Logged in, 0 messages\r\n")

    def test_mechanism_is_case_insensitive(self):
        """"auth plain" works too."""
        self.assertEqual(self.session.command(b"auth plain"), b"+ \r\n")

    def test_wrong_password_fails(self):
        """A wrong PLAIN password gets -ERR [AUTH] Authentication failed."""
        reply = self.session.command(b"AUTH PLAIN " + plain("", "alice", "bad"))
        self.assertEqual(reply, b"-ERR [AUTH] Authentication failed\r\n")
        self.assertEqual(self.session.server.state, State.AUTHORIZATION)

    def test_other_authzid_is_refused(self):
        """Authorizing as another user is refused."""
        reply = self.session.command(b"AUTH PLAIN " + plain("bob", "alice", "alice-secret"))
        self.assertEqual(reply, b"-ERR [AUTH] Authentication failed\r\n")

    def test_malformed_base64_keeps_connection(self):
        """Malformed base64 gets -ERR; the session goes on."""
        self.assertEqual(self.session.command(b"AUTH PLAIN !!!notbase64"), b"-ERR Malformed SASL response\r\n")
        self.assertFalse(self.session.transport.disconnecting)
        self.assertTrue(self.session.command(b"NOOP").startswith(b"-ERR"))
        self.assertTrue(self.session.command(b"CAPA").startswith(b"+OK"))

    def test_malformed_plain_message(self):
        """Base64 of something that is not authzid NUL authcid NUL password gets -ERR."""
        reply = self.session.command(b"AUTH PLAIN " + base64.b64encode(b"alice"))
        self.assertEqual(reply, b"-ERR Malformed SASL response\r\n")

    def test_cancel(self):
        """"*" as the continuation cancels the exchange with -ERR."""
        self.session.command(b"AUTH PLAIN")
        self.assertEqual(self.session.command(b"*"), b"-ERR Authentication cancelled\r\n")
        self.assertTrue(self.session.command(b"CAPA").startswith(b"+OK"))

    def test_unsupported_mechanism(self):
        """AUTH with a mechanism other than PLAIN gets -ERR."""
        self.assertEqual(self.session.command(b"AUTH CRAM-MD5"), b"-ERR Unsupported mechanism\r\n")

    def test_auth_without_mechanism_lists_mechanisms(self):
        """Bare AUTH lists the SASL mechanisms."""
        self.assertEqual(self.session.command(b"AUTH"), b"+OK Supported mechanisms\r\nPLAIN\r\n.\r\n")
