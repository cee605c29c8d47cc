"""Tests for mailsuite.smtp.client: the STARTTLS decision per TLSPolicy, and AUTH."""

import base64
import shutil
import tempfile

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import error, ssl
from twisted.internet._sslverify import ClientTLSOptions
from twisted.trial.unittest import SynchronousTestCase

from mailsuite.smtp.client import TLSPolicy
from mailsuite.tls import ensure_self_signed
from tests.unit.smtp.test_client_support import (
    EHLO_PIPELINING,
    EHLO_PLAIN,
    HELO,
    Remote,
    codes,
    ehlo_reply,
    message,
)

EHLO_TLS = EHLO_PIPELINING + ["STARTTLS"]
EHLO_AUTH = ["mx.example.net", "PIPELINING", "AUTH PLAIN LOGIN"]


def after_starttls(remote: Remote, ehlo=EHLO_PIPELINING) -> Remote:
    """Answer STARTTLS with 220 and the EHLO that follows the handshake."""
    assert remote.sent() == ["STARTTLS"]
    remote.reply(b"220 2.0.0 Ready to start TLS\r\n")
    assert remote.sent() == [f"EHLO {HELO}"]
    return remote.reply(ehlo_reply(ehlo))


class PolicyNoneTests(SynchronousTestCase):
    def test_none_never_starts_tls(self):
        """TLSPolicy.NONE goes straight to MAIL even when STARTTLS is offered."""
        remote = Remote([message("a@example.net")], tls=TLSPolicy.NONE).greet(EHLO_TLS)
        self.assertEqual(remote.sent()[0], "MAIL FROM:<alice@example.test> SIZE=25")
        self.assertEqual(remote.transport.tls_started, [])


class OpportunisticTests(SynchronousTestCase):
    def test_starttls_used_when_offered(self):
        """OPPORTUNISTIC sends STARTTLS, starts TLS without verification, then EHLO again."""
        remote = Remote([message("a@example.net")], tls=TLSPolicy.OPPORTUNISTIC).greet(EHLO_TLS)
        self.assertEqual(remote.sent(), ["STARTTLS"])
        remote.reply(b"220 2.0.0 Ready to start TLS\r\n")
        [(options, written_before)] = remote.transport.tls_started
        self.assertIsInstance(options, ssl.CertificateOptions)
        self.assertFalse(options.verify)
        self.assertEqual(remote.transport.value()[written_before:], f"EHLO {HELO}\r\n".encode())
        remote.sent()
        remote.reply(ehlo_reply(EHLO_PIPELINING))
        remote.sent()
        remote.reply(b"250 OK\r\n250 OK\r\n354 Go\r\n")
        remote.pump()
        remote.reply(b"250 OK\r\n")
        result = remote.finish()
        self.assertTrue(result.tls)
        self.assertEqual(codes(result), [[(250, "data")]])

    def test_plaintext_when_not_offered(self):
        """OPPORTUNISTIC without STARTTLS announced carries on unencrypted."""
        remote = Remote([message("a@example.net")], tls=TLSPolicy.OPPORTUNISTIC).greet(EHLO_PIPELINING)
        self.assertEqual(remote.sent()[0], "MAIL FROM:<alice@example.test> SIZE=25")
        self.assertEqual(remote.transport.tls_started, [])

    def test_plaintext_when_starttls_refused(self):
        """OPPORTUNISTIC: a 454 to STARTTLS leaves the session unencrypted but going."""
        remote = Remote([message("a@example.net")], tls=TLSPolicy.OPPORTUNISTIC).greet(EHLO_TLS)
        remote.sent()
        remote.reply(b"454 4.7.0 TLS not available\r\n")
        self.assertEqual(remote.sent()[0], "MAIL FROM:<alice@example.test> SIZE=25")
        self.assertEqual(remote.transport.tls_started, [])

    def test_handshake_failure_is_temporary(self):
        """A connection lost during the handshake is a temporary failure, stage "starttls"."""
        remote = Remote([message("a@example.net"), message("b@example.net")],
                        tls=TLSPolicy.OPPORTUNISTIC).greet(EHLO_TLS)
        remote.sent()
        remote.reply(b"220 Ready\r\n")
        remote.drop(error.ConnectionLost("handshake failure"))
        result = remote.result
        self.assertEqual(codes(result), [[(0, "starttls")], [(0, "starttls")]])
        r = result.results[0][0]
        self.assertTrue(r.temporary)
        self.assertIn("TLS handshake failed", r.text)
        self.assertFalse(result.tls)

    def test_extensions_from_before_tls_are_forgotten(self):
        """RFC 3207 §4.2: only the EHLO after TLS counts; PIPELINING before it does not."""
        remote = Remote([message("a@example.net")], tls=TLSPolicy.OPPORTUNISTIC).greet(EHLO_TLS)
        after_starttls(remote, ehlo=EHLO_PLAIN)
        self.assertEqual(remote.sent(), ["MAIL FROM:<alice@example.test>"])

    def test_replies_sent_with_the_220_end_the_session(self):
        """A reply injected after the 220 to STARTTLS is a protocol error, never read as TLS data."""
        remote = Remote([message("a@example.net")], tls=TLSPolicy.OPPORTUNISTIC).greet(EHLO_TLS)
        remote.sent()
        remote.reply(b"220 Ready\r\n250-evil\r\n250 AUTH PLAIN\r\n")
        self.assertEqual(remote.transport.tls_started, [])
        self.assertTrue(remote.transport.disconnected)
        [[r]] = remote.result.results
        self.assertEqual((r.code, r.enhanced, r.stage), (0, "4.5.0", "starttls"))

    def test_partial_reply_before_handshake_is_discarded(self):
        """Bytes of an unfinished reply after the 220 are dropped, not joined to TLS replies."""
        remote = Remote([message("a@example.net")], tls=TLSPolicy.OPPORTUNISTIC).greet(EHLO_TLS)
        remote.sent()
        remote.reply(b"220 Ready\r\n250-inj")
        self.assertEqual(len(remote.transport.tls_started), 1)
        remote.sent()
        remote.reply(ehlo_reply(EHLO_PLAIN))
        self.assertEqual(remote.sent(), ["MAIL FROM:<alice@example.test>"])


class VerifyTests(SynchronousTestCase):
    def test_starttls_required(self):
        """VERIFY with no STARTTLS offered: temporary "TLS required" for all, then QUIT."""
        remote = Remote([message("a@example.net")], tls=TLSPolicy.VERIFY).greet(EHLO_PIPELINING)
        result = remote.finish()
        [[r]] = result.results
        self.assertEqual((r.code, r.enhanced, r.stage), (0, "4.7.4", "starttls"))
        self.assertIn("TLS required", r.text)
        self.assertTrue(r.temporary)

    def test_starttls_refused_is_temporary(self):
        """VERIFY: a refused STARTTLS does not fall back to plaintext."""
        remote = Remote([message("a@example.net")], tls=TLSPolicy.VERIFY).greet(EHLO_TLS)
        remote.sent()
        remote.reply(b"554 5.7.0 No TLS for you\r\n")
        [[r]] = remote.finish().results
        self.assertEqual((r.code, r.stage), (0, "starttls"))
        self.assertIn("554 5.7.0 No TLS for you", r.text)

    def test_verifying_options_check_the_tls_hostname(self):
        """VERIFY starts TLS with service-identity options for tls_hostname."""
        remote = Remote([message("a@example.net")], tls=TLSPolicy.VERIFY,
                        tls_hostname="mx.example.net").greet(EHLO_TLS)
        after_starttls(remote)
        [(options, _)] = remote.transport.tls_started
        self.assertIsInstance(options, ClientTLSOptions)
        self.assertEqual(options._hostnameASCII, "mx.example.net")

    def test_verifying_options_default_to_the_host(self):
        """Without tls_hostname the name checked is the host connected to."""
        remote = Remote([message("a@example.net")], tls=TLSPolicy.VERIFY).greet(EHLO_TLS)
        after_starttls(remote)
        [(options, _)] = remote.transport.tls_started
        self.assertEqual(options._hostnameASCII, "192.0.2.25")

    def test_ca_file_is_the_trust_root(self):
        """A readable ca_file is accepted and used for the handshake."""
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        certificate, _key = ensure_self_signed(folder, "mx.example.net")
        remote = Remote([message("a@example.net")], tls=TLSPolicy.VERIFY, ca_file=certificate,
                        tls_hostname="mx.example.net").greet(EHLO_TLS)
        after_starttls(remote)
        self.assertEqual(len(remote.transport.tls_started), 1)

    def test_unreadable_ca_file_is_a_temporary_failure(self):
        """A missing ca_file fails every recipient temporarily without connecting."""
        remote = Remote([message("a@example.net")], tls=TLSPolicy.VERIFY, ca_file="/nonexistent/ca.pem")
        self.assertEqual(remote.reactor.tcpClients, [])
        [[r]] = remote.result.results
        self.assertEqual((r.code, r.stage), (0, "starttls"))
        self.assertIn("/nonexistent/ca.pem", r.text)

    def test_verification_failure_is_temporary(self):
        """A certificate the client rejects ends the connection: temporary, stage "starttls"."""
        remote = Remote([message("a@example.net")], tls=TLSPolicy.VERIFY).greet(EHLO_TLS)
        remote.sent()
        remote.reply(b"220 Ready\r\n")
        remote.drop(SSL.Error([("SSL routines", "", "certificate verify failed")]))
        [[r]] = remote.result.results
        self.assertEqual((r.code, r.enhanced, r.stage), (0, "4.7.5", "starttls"))
        self.assertEqual(r.text, "TLS handshake failed: certificate verify failed")

    def test_name_mismatch_is_temporary(self):
        """A certificate for another name: temporary, and the text says so."""
        remote = Remote([message("a@example.net")], tls=TLSPolicy.VERIFY).greet(EHLO_TLS)
        remote.sent()
        remote.reply(b"220 Ready\r\n")
        remote.drop(VerificationError(errors=[]))
        [[r]] = remote.result.results
        self.assertEqual((r.code, r.stage), (0, "starttls"))
        self.assertIn("does not match the expected host name", r.text)


def plain_token(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


class AuthTests(SynchronousTestCase):
    def test_no_credentials_over_plaintext_to_a_remote_host(self):
        """AUTH is never sent unencrypted to a non-loopback peer: temporary failure, QUIT."""
        remote = Remote([message("a@example.net")], auth=("relay", "secret")).greet(EHLO_AUTH)
        result = remote.finish()
        [[r]] = result.results
        self.assertEqual((r.code, r.stage), (0, "auth"))
        self.assertIn("not encrypted", r.text)
        self.assertNotIn(b"AUTH", remote.transport.value())

    def test_plain_over_loopback(self):
        """To a loopback address AUTH PLAIN goes without TLS, as an initial response."""
        remote = Remote([message("a@example.net")], peer="127.0.0.1", auth=("relay", "sécret")).greet(EHLO_AUTH)
        self.assertEqual(remote.sent(), [f"AUTH PLAIN {plain_token('relay', 'sécret')}"])
        remote.reply(b"235 2.7.0 Authentication successful\r\n")
        self.assertEqual(remote.sent()[0], "MAIL FROM:<alice@example.test>")

    def test_plain_after_starttls(self):
        """After STARTTLS, AUTH is sent to any host, with the mechanisms of the new EHLO."""
        remote = Remote([message("a@example.net")], tls=TLSPolicy.OPPORTUNISTIC,
                        auth=("relay", "secret")).greet(EHLO_TLS)
        after_starttls(remote, ehlo=EHLO_AUTH)
        self.assertEqual(remote.sent(), [f"AUTH PLAIN {plain_token('relay', 'secret')}"])

    def test_login_when_plain_is_not_offered(self):
        """AUTH LOGIN answers the user name and password challenges in turn."""
        remote = Remote([message("a@example.net")], peer="127.0.0.1",
                        auth=("relay", "secret")).greet(["mx", "AUTH LOGIN"])
        self.assertEqual(remote.sent(), ["AUTH LOGIN"])
        remote.reply(b"334 VXNlcm5hbWU6\r\n")
        self.assertEqual(remote.sent(), [base64.b64encode(b"relay").decode()])
        remote.reply(b"334 UGFzc3dvcmQ6\r\n")
        self.assertEqual(remote.sent(), [base64.b64encode(b"secret").decode()])
        remote.reply(b"235 2.7.0 OK\r\n")
        self.assertEqual(remote.sent(), ["MAIL FROM:<alice@example.test>"])

    def test_bad_credentials_are_permanent_for_all(self):
        """535 to AUTH is the permanent result of every recipient of every message."""
        remote = Remote([message("a@example.net"), message("b@example.net")], peer="127.0.0.1",
                        auth=("relay", "wrong")).greet(EHLO_AUTH)
        remote.sent()
        remote.reply(b"535 5.7.8 Authentication credentials invalid\r\n")
        result = remote.finish()
        self.assertEqual(codes(result), [[(535, "auth")], [(535, "auth")]])
        self.assertTrue(result.results[1][0].permanent)

    def test_temporary_auth_failure(self):
        """454 to AUTH is temporary for all."""
        remote = Remote([message("a@example.net")], peer="127.0.0.1", auth=("u", "p")).greet(EHLO_AUTH)
        remote.sent()
        remote.reply(b"454 4.7.0 Temporary authentication failure\r\n")
        [[r]] = remote.finish().results
        self.assertTrue(r.temporary)
        self.assertEqual(r.stage, "auth")

    def test_no_usable_mechanism(self):
        """A server offering neither PLAIN nor LOGIN (or no AUTH) is a temporary failure."""
        remote = Remote([message("a@example.net")], peer="127.0.0.1",
                        auth=("u", "p")).greet(["mx", "AUTH CRAM-MD5"])
        [[r]] = remote.finish().results
        self.assertEqual((r.code, r.stage), (0, "auth"))
        self.assertIn("PLAIN, LOGIN", r.text)

    def test_unexpected_challenge_after_plain_is_a_protocol_error(self):
        """A 334 after AUTH PLAIN with its initial response ends the connection."""
        remote = Remote([message("a@example.net")], peer="127.0.0.1", auth=("u", "p")).greet(EHLO_AUTH)
        remote.sent()
        remote.reply(b"334 \r\n")
        [[r]] = remote.result.results
        self.assertEqual((r.code, r.enhanced), (0, "4.5.0"))
        self.assertTrue(remote.transport.disconnected)
