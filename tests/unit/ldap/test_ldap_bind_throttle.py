"""Failed LDAP binds go through the suite's login throttle like IMAP, POP3 and SMTP logins."""

from ldaptor.protocols import pureldap
from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from mailsuite.ldap import codec
from mailsuite.throttle import AuthThrottle

from .ldap_fakes import ALICE_DN, Session


class BindThrottleTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.throttle = AuthThrottle(self.clock, threshold=2, threshold_per_client=100,
                                     window=900.0, first_delay=4.0, max_delay=30.0,
                                     max_entries=1000)
        self.session = Session(clock=self.clock, throttle=self.throttle)

    def bind_later(self, dn, password):
        """Send a bind; the BindResponse code once it was sent, else None."""
        messages = self.session.send(pureldap.LDAPBindRequest(dn=dn.encode(),
                                                              auth=password.encode()))
        return messages[-1].value.resultCode if messages else None

    def test_repeated_failures_make_the_next_bind_wait_even_with_the_right_password(self):
        self.assertEqual(self.bind_later(ALICE_DN, "wrong"), codec.INVALID_CREDENTIALS)
        self.assertEqual(self.bind_later(ALICE_DN, "wrong"), codec.INVALID_CREDENTIALS)
        self.session.transport.clear()
        self.session.server.dataReceived(self.session.wire(
            pureldap.LDAPBindRequest(dn=ALICE_DN.encode(), auth=b"alice-password")))
        self.assertEqual(self.session.transport.value(), b"")  # held back by the delay
        self.clock.advance(4.0)
        self.assertIn(b"\x0a\x01\x00", self.session.transport.value())  # resultCode success

    def test_an_unknown_dn_is_counted_and_delayed_like_a_wrong_password(self):
        unknown = "uid=nobody,ou=people,dc=example,dc=test"
        for _ in range(2):
            self.assertEqual(self.bind_later(unknown, "x"), codec.INVALID_CREDENTIALS)
        self.assertIsNone(self.bind_later(unknown, "x"))
        self.clock.advance(4.0)
        self.assertIn(b"\x0a\x01\x31", self.session.transport.value())  # invalidCredentials
