"""The IMAP session: greeting, capabilities, STARTTLS, login, limits and timers."""

import base64

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from mailsuite.imap.server import IMAPLimits
from mailsuite.testing.memstore import MemoryMailStore
from tests.unit.imap.imap_fakes import Session, TLSContext, lines


def plain(user: bytes, password: bytes) -> bytes:
    return base64.b64encode(b"\0" + user + b"\0" + password)


class GreetingTests(SynchronousTestCase):
    def test_greeting_lists_capabilities(self):
        """The greeting is an untagged OK carrying the CAPABILITY code."""
        greeting = Session().output()
        self.assertTrue(greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 "))
        self.assertIn(b" STARTTLS", greeting)

    def test_capability_command_answers_untagged_then_ok(self):
        """CAPABILITY gives one untagged CAPABILITY response, then the tagged OK."""
        s = Session()
        out = lines(s.command(b"c1 CAPABILITY"))
        self.assertTrue(out[0].startswith(b"* CAPABILITY IMAP4rev1 "))
        self.assertEqual(out[1], b"c1 OK Completed")

    def test_appendlimit_is_advertised(self):
        """RFC 7889: APPENDLIMIT shows the literal limit."""
        s = Session(limits=IMAPLimits(max_literal_size=1234))
        self.assertIn(b"APPENDLIMIT=1234", s.command(b"c CAPABILITY"))

    def test_logout_says_bye_and_closes(self):
        """LOGOUT sends BYE, the tagged OK and closes the connection."""
        s = Session()
        out = s.command(b"z LOGOUT")
        self.assertEqual(lines(out), [b"* BYE Logging out", b"z OK Logged out"])
        self.assertTrue(s.transport.disconnecting)


class PlaintextTests(SynchronousTestCase):
    def test_logindisabled_before_tls(self):
        """RFC 3501 §6.2.3: without TLS, LOGINDISABLED is advertised and AUTH=PLAIN is not."""
        s = Session(allow_plaintext_auth=False)
        caps = s.command(b"c CAPABILITY")
        self.assertIn(b"LOGINDISABLED", caps)
        self.assertNotIn(b"AUTH=PLAIN", caps)

    def test_login_refused_before_tls(self):
        """LOGIN before STARTTLS is refused with [PRIVACYREQUIRED] and does not log in."""
        s = Session(allow_plaintext_auth=False)
        self.assertEqual(s.login(), b"L1 NO [PRIVACYREQUIRED] Use STARTTLS first\r\n")
        self.assertIn(b"BAD", s.command(b"x SELECT INBOX"))

    def test_starttls_discards_input_sent_with_it(self):
        """CVE-2011-0411 class: a command pipelined after STARTTLS is never run."""
        s = Session(allow_plaintext_auth=False)
        s.output()
        s.send(b"t1 STARTTLS\r\nL1 LOGIN alice alice-secret\r\n")
        out = s.output()
        self.assertEqual(out, b"t1 OK Begin TLS negotiation now\r\n")
        self.assertEqual(len(s.transport.tls_started), 1)
        self.assertIsInstance(s.transport.tls_started[0][0], TLSContext)
        self.assertEqual(s.transport.tls_started[0][1], len(out))
        self.assertEqual(s.command(b"n NOOP"), b"n OK Completed\r\n")

    def test_login_allowed_after_starttls(self):
        """After STARTTLS, LOGIN works and STARTTLS is no longer offered."""
        s = Session(allow_plaintext_auth=False)
        s.command(b"t1 STARTTLS")
        self.assertIn(b"L1 OK", s.login())
        self.assertNotIn(b"STARTTLS", s.command(b"c CAPABILITY"))

    def test_implicit_tls_offers_no_starttls(self):
        """On imaps, login works at once and STARTTLS is refused."""
        s = Session(implicit_tls=True, allow_plaintext_auth=False)
        self.assertIn(b"BAD", s.command(b"t STARTTLS"))
        self.assertIn(b"L1 OK", s.login())


class LoginTests(SynchronousTestCase):
    def test_wrong_password_fails(self):
        """A wrong password gives NO [AUTHENTICATIONFAILED]."""
        s = Session()
        self.assertEqual(s.login(password=b"nope"),
                         b"L1 NO [AUTHENTICATIONFAILED] Authentication failed\r\n")

    def test_login_reports_new_capabilities(self):
        """The tagged OK of LOGIN carries the post-login CAPABILITY code."""
        self.assertTrue(Session().login().startswith(b"L1 OK [CAPABILITY IMAP4rev1 "))

    def test_authenticate_plain_with_initial_response(self):
        """RFC 4959: AUTHENTICATE PLAIN with SASL-IR logs in in one round trip."""
        s = Session()
        out = s.command(b"a AUTHENTICATE PLAIN " + plain(b"bob", b"bob secret"))
        self.assertTrue(out.startswith(b"a OK"))

    def test_authenticate_plain_with_continuation(self):
        """Without an initial response the server sends "+ " and reads the next line."""
        s = Session()
        self.assertEqual(s.command(b"a AUTHENTICATE PLAIN"), b"+ \r\n")
        self.assertTrue(s.command(plain(b"alice", b"alice-secret")).startswith(b"a OK"))

    def test_authenticate_cancelled(self):
        """RFC 3501 §6.2.2: "*" cancels the exchange with BAD."""
        s = Session()
        s.command(b"a AUTHENTICATE PLAIN")
        self.assertEqual(s.command(b"*"), b"a BAD Authentication cancelled\r\n")

    def test_authenticate_malformed_response(self):
        """A response that is not base64 gives BAD, not a crash."""
        s = Session()
        self.assertIn(b"a BAD", s.command(b"a AUTHENTICATE PLAIN !!!"))

    def test_commands_need_login(self):
        """SELECT before login is BAD."""
        self.assertEqual(Session().command(b"s SELECT INBOX"),
                         b"s BAD Command not valid in this state\r\n")

    def test_second_login_is_refused(self):
        """LOGIN in the authenticated state is BAD."""
        s = Session()
        s.login()
        self.assertIn(b"L1 BAD", s.login())


class ExtensionTests(SynchronousTestCase):
    def test_enable_utf8_accept(self):
        """RFC 5161: ENABLE lists what it enabled; unknown names are ignored."""
        s = Session()
        s.login()
        self.assertEqual(lines(s.command(b"e ENABLE UTF8=ACCEPT X-UNKNOWN")),
                         [b"* ENABLED UTF8=ACCEPT", b"e OK Completed"])
        self.assertTrue(s.server.utf8)

    def test_id_answers_with_server_id(self):
        """RFC 2971: ID is answered with the server's own ID response."""
        s = Session()
        self.assertEqual(lines(s.command(b'i ID ("name" "test")')),
                         [b'* ID ("name" "mailsuite")', b"i OK Completed"])

    def test_namespace(self):
        """RFC 2342: one personal namespace with "/" as separator."""
        s = Session()
        s.login()
        self.assertIn(b'* NAMESPACE (("" "/")) NIL NIL', s.command(b"n NAMESPACE"))


class RobustnessTests(SynchronousTestCase):
    def test_negative_literal_search_is_bad_at_once(self):
        """FINDINGS: "SEARCH {-100}" is answered with BAD immediately (no hang)."""
        s = Session()
        s.login()
        s.select()
        self.assertEqual(s.command(b"A1 SEARCH {-100}")[:6], b"A1 BAD")

    def test_unknown_command_is_bad(self):
        """An unknown command gives a tagged BAD."""
        self.assertEqual(Session().command(b"x1 FROB"), b"x1 BAD Unknown command\r\n")

    def test_literal_over_limit_is_toobig(self):
        """A synchronising literal over the limit is refused with NO [TOOBIG], no "+"."""
        s = Session(limits=IMAPLimits(max_literal_size=100))
        s.login()
        out = s.command(b"a APPEND INBOX {101}")
        self.assertEqual(out, b"a NO [TOOBIG] Literal too big\r\n")
        self.assertEqual(s.command(b"n NOOP"), b"n OK Completed\r\n")

    def test_non_synchronising_literal_over_limit_ends_session(self):
        """RFC 7888 §4: a LITERAL+ over the limit is refused and the session closed."""
        s = Session(limits=IMAPLimits(max_literal_size=100))
        s.login()
        out = s.command(b"a APPEND INBOX {101+}")
        self.assertIn(b"a NO [TOOBIG]", out)
        self.assertIn(b"* BYE", out)
        self.assertTrue(s.transport.disconnecting)

    def test_overlong_line_is_bad_and_session_continues(self):
        """A line over the limit gets BAD and the next command still works."""
        s = Session(limits=IMAPLimits(max_line_length=50))
        s.output()
        s.send(b"a1 NOOP " + b"x" * 200 + b"\r\nb NOOP\r\n")
        self.assertEqual(lines(s.output()), [b"a1 BAD Line too long", b"b OK Completed"])

    def test_too_many_errors_close_the_session(self):
        """After max_errors BAD responses the server says BYE and closes."""
        s = Session(limits=IMAPLimits(max_errors=3))
        s.output()
        s.send(b"a FROB\r\nb FROB\r\nc FROB\r\nd NOOP\r\n")
        out = s.output()
        self.assertIn(b"* BYE Too many errors", out)
        self.assertNotIn(b"d OK", out)
        self.assertTrue(s.transport.disconnecting)

    def test_autologout_after_idle_timeout(self):
        """RFC 3501 §5.4: an idle session is closed after the timeout, not before."""
        s = Session(limits=IMAPLimits(idle_timeout=1800.0))
        s.output()
        s.clock.advance(1799)
        self.assertFalse(s.transport.disconnecting)
        s.clock.advance(2)
        self.assertIn(b"* BYE Autologout", s.output())
        self.assertTrue(s.transport.disconnecting)

    def test_pipelined_commands_answer_in_order(self):
        """Commands sent together are answered one after another, in order."""
        s = Session()
        s.output()
        s.send(b"a LOGIN alice alice-secret\r\nb SELECT INBOX\r\nc NOOP\r\n")
        tagged = [line.split(b" ")[0] for line in lines(s.output())
                  if not line.startswith(b"*")]
        self.assertEqual(tagged, [b"a", b"b", b"c"])

    def test_disconnect_unsubscribes_from_the_change_feed(self):
        """After the connection is lost the session no longer listens to the store."""
        s = Session()
        s.login()
        self.assertEqual(len(s.store._feed._listeners), 1)
        s.lose()
        self.assertEqual(s.store._feed._listeners, [])


class HeldStore:
    """A MemoryMailStore whose answers wait until release()."""

    def __init__(self):
        self.inner = MemoryMailStore()
        self.held = []
        self.hold = False

    def __getattr__(self, name):
        method = getattr(self.inner, name)
        if name == "subscribe":
            return method

        def call(*args):
            answer = method(*args)
            if not self.hold:
                return answer
            waiting = defer.Deferred()
            self.held.append((waiting, answer))
            return waiting

        return call

    def release(self):
        while self.held:
            waiting, answer = self.held.pop(0)
            answer.chainDeferred(waiting)


class OrderingTests(SynchronousTestCase):
    def test_commands_wait_for_slow_store_and_answer_in_order(self):
        """While the store is slow, later commands wait; tagged replies stay in order."""
        store = HeldStore()
        s = Session(store=store)
        s.login()
        store.hold = True
        s.output()
        s.send(b"a SELECT INBOX\r\nb NOOP\r\n")
        self.assertEqual(s.output(), b"")
        store.release()
        store.release()
        tagged = [line[:4] for line in lines(s.output()) if not line.startswith(b"*")]
        self.assertEqual(tagged, [b"a OK", b"b OK"])
