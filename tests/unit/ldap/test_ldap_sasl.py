"""SASL binds (RFC 4513 §5.2.1): PLAIN (RFC 4616) and EXTERNAL on unix-socket connections."""

import os

import pytest
from ldaptor.protocols import pureldap
from twisted.trial.unittest import SynchronousTestCase

from mailsuite.ldap import codec, sasl

from .ldap_fakes import (
    ADMIN_DN, ADMIN_PASSWORD, ALICE_DN, BOB_DN, RecordingTransport, Session, UnixTransport,
    decode_all,
)

OTHER_UID = 4242 if os.getuid() != 4242 else 4243


def plain(authcid: str, password: str, authzid: str = "") -> bytes:
    return f"{authzid}\0{authcid}\0{password}".encode()


def tls_session(**kwargs) -> Session:
    return Session(allow_plaintext_auth=False, implicit_tls=True, **kwargs)


class PlainTests(SynchronousTestCase):
    def test_uid_mail_and_dn_log_in(self):
        """The PLAIN authcid may be a uid, a mail address or a DN; WhoAmI then names the DN."""
        for login in ("alice", "alice@example.test", ALICE_DN, "dn:" + ALICE_DN, "u:alice"):
            session = tls_session()
            self.assertEqual(session.sasl_bind(b"PLAIN", plain(login, "alice-password")),
                             codec.SUCCESS, login)
            self.assertEqual(session.who_am_i(), b"dn:" + ALICE_DN.encode(), login)

    def test_admin_dn_logs_in_as_admin(self):
        """PLAIN with the admin DN and password binds as the admin, as a simple bind does."""
        session = tls_session()
        self.assertEqual(session.sasl_bind(b"PLAIN", plain(ADMIN_DN, ADMIN_PASSWORD)),
                         codec.SUCCESS)
        self.assertTrue(session.server.who.admin)

    def test_unknown_user_and_wrong_password_fail_alike(self):
        """An unknown authcid and a wrong password get the same code and text."""
        answers = []
        for login, password in (("alice", "wrong"), ("nobody", "alice-password"),
                                ("nobody@example.test", "x"), ("uid=nobody,dc=x", "x")):
            session = tls_session()
            op = pureldap.LDAPBindRequest(dn=b"", auth=(b"PLAIN", plain(login, password)),
                                          sasl=True)
            response = session.result(op)
            answers.append((response.resultCode, response.errorMessage))
            self.assertEqual(session.who_am_i(), b"")
        self.assertEqual(set(answers), {(codec.INVALID_CREDENTIALS, b"invalid credentials")})

    def test_refused_without_tls(self):
        """Like a simple bind, PLAIN in clear gets confidentialityRequired (RFC 4513 §6.3.1)."""
        session = Session(allow_plaintext_auth=False)
        self.assertEqual(session.sasl_bind(b"PLAIN", plain("alice", "alice-password")),
                         codec.CONFIDENTIALITY_REQUIRED)
        self.assertEqual(session.who_am_i(), b"")

    def test_allowed_after_starttls(self):
        """After StartTLS, PLAIN succeeds."""
        session = Session(allow_plaintext_auth=False)
        session.send(pureldap.LDAPStartTLSRequest())
        self.assertEqual(session.sasl_bind(b"PLAIN", plain("alice", "alice-password")),
                         codec.SUCCESS)

    def test_allowed_in_clear_when_configured(self):
        """With allow_plaintext_auth, PLAIN works without TLS, as simple binds do."""
        session = Session(allow_plaintext_auth=True)
        self.assertEqual(session.sasl_bind(b"PLAIN", plain("bob", "bob-password")),
                         codec.SUCCESS)
        self.assertEqual(session.who_am_i(), b"dn:" + BOB_DN.encode())

    def test_authzid_naming_the_user_is_accepted(self):
        """An authzid equal to the authcid, or naming the same user (u:, dn:), is accepted."""
        for authzid in ("alice", "u:alice", "u:ALICE", "dn:" + ALICE_DN.upper()):
            session = tls_session()
            self.assertEqual(
                session.sasl_bind(b"PLAIN", plain("alice", "alice-password", authzid)),
                codec.SUCCESS, authzid)

    def test_authzid_naming_someone_else_is_refused(self):
        """Asking to act as another user is refused and leaves the session anonymous."""
        for authzid in ("u:bob", "dn:" + BOB_DN, "bob", "dn:" + ADMIN_DN):
            session = tls_session()
            self.assertEqual(
                session.sasl_bind(b"PLAIN", plain("alice", "alice-password", authzid)),
                codec.INSUFFICIENT_ACCESS_RIGHTS, authzid)
            self.assertEqual(session.who_am_i(), b"")

    def test_malformed_message_is_invalid_credentials(self):
        """A PLAIN message without three fields fails like a wrong password."""
        session = tls_session()
        for message in (b"alice\0alice-password", b"\0alice\0pw\0x", b"\0\0pw"):
            self.assertEqual(session.sasl_bind(b"PLAIN", message), codec.INVALID_CREDENTIALS)

    def test_missing_initial_response_gets_an_empty_challenge(self):
        """PLAIN without credentials gets saslBindInProgress with an empty challenge; the
        credentials sent next complete the bind (RFC 4422 §5)."""
        session = tls_session()
        session.transport.clear()
        session.server.dataReceived(session.wire(
            pureldap.LDAPBindRequest(dn=b"", auth=(b"PLAIN", None), sasl=True)))
        frame = session.transport.value()
        [message] = decode_all(frame)
        self.assertEqual(message.value.resultCode, codec.SASL_BIND_IN_PROGRESS)
        self.assertTrue(frame.endswith(b"\x87\x00"))
        self.assertEqual(session.sasl_bind(b"PLAIN", plain("alice", "alice-password")),
                         codec.SUCCESS)

    def test_failed_sasl_bind_drops_earlier_identity(self):
        """After a failed PLAIN bind the session is anonymous again (RFC 4511 §4.2.1)."""
        session = tls_session()
        session.sasl_bind(b"PLAIN", plain("alice", "alice-password"))
        session.sasl_bind(b"PLAIN", plain("alice", "wrong"))
        self.assertEqual(session.who_am_i(), b"")

    def test_bind_with_a_control_decoded_by_ldaptor_works(self):
        """A SASL bind carrying a control (decoded by ldaptor, not fastber) binds the same."""
        session = tls_session()
        op = pureldap.LDAPBindRequest(dn=b"", auth=(b"PLAIN", plain("alice", "alice-password")),
                                      sasl=True)
        response = session.result(op, controls=[(b"1.3.6.1.4.1.42.2.27.8.5.1", False, None)])
        self.assertEqual(response.resultCode, codec.SUCCESS)
        self.assertEqual(session.who_am_i(), b"dn:" + ALICE_DN.encode())


class ExternalTests(SynchronousTestCase):
    def test_root_peer_binds_as_admin(self):
        """On a unix socket, a peer running as root binds as the admin DN."""
        session = Session(allow_plaintext_auth=False, transport=UnixTransport(0))
        self.assertEqual(session.sasl_bind(b"EXTERNAL", None), codec.SUCCESS)
        self.assertEqual(session.who_am_i(), b"dn:" + ADMIN_DN.encode())
        self.assertTrue(session.server.who.admin)

    def test_server_user_binds_as_admin(self):
        """A peer running as the server's own user binds as the admin DN too."""
        session = Session(transport=UnixTransport(os.getuid()))
        self.assertEqual(session.sasl_bind(b"EXTERNAL", b""), codec.SUCCESS)
        self.assertEqual(session.who_am_i(), b"dn:" + ADMIN_DN.encode())

    def test_other_user_is_refused(self):
        """Any other peer uid gets invalidCredentials and stays anonymous."""
        session = Session(transport=UnixTransport(OTHER_UID))
        self.assertEqual(session.sasl_bind(b"EXTERNAL", None), codec.INVALID_CREDENTIALS)
        self.assertEqual(session.who_am_i(), b"")

    def test_tcp_connection_has_no_external_credentials(self):
        """Over TCP, EXTERNAL gets inappropriateAuthentication (no credentials outside LDAP)."""
        session = Session(implicit_tls=True)
        self.assertEqual(session.sasl_bind(b"EXTERNAL", None),
                         codec.INAPPROPRIATE_AUTHENTICATION)

    def test_authzid_must_name_the_admin(self):
        """An EXTERNAL authzid naming the admin DN is accepted; naming another is refused."""
        session = Session(transport=UnixTransport(0))
        self.assertEqual(session.sasl_bind(b"EXTERNAL", b"dn:" + ADMIN_DN.upper().encode()),
                         codec.SUCCESS)
        self.assertEqual(session.sasl_bind(b"EXTERNAL", b"dn:" + ALICE_DN.encode()),
                         codec.INSUFFICIENT_ACCESS_RIGHTS)
        self.assertEqual(session.who_am_i(), b"")

    def test_unix_socket_counts_as_confidential(self):
        """Passwords over a unix socket never leave the machine: a simple bind needs no TLS."""
        session = Session(allow_plaintext_auth=False, transport=UnixTransport(OTHER_UID))
        self.assertEqual(session.bind(ALICE_DN, "alice-password"), codec.SUCCESS)


class PeerTests(SynchronousTestCase):
    def test_peer_uid_of_unix_socket(self):
        """peer_uid reads SO_PEERCRED of a unix-socket connection."""
        self.assertEqual(sasl.peer_uid(UnixTransport(1234)), 1234)

    def test_no_peer_uid_over_tcp(self):
        """A TCP connection has no peer uid."""
        self.assertIsNone(sasl.peer_uid(RecordingTransport()))


@pytest.mark.parametrize("message, expected", [
    (b"\0alice\0pw", sasl.PlainCredentials("", "alice", "pw")),
    (b"u:bob\0alice\0p\xc3\xa4ss", sasl.PlainCredentials("u:bob", "alice", "päss")),
])
def test_parse_plain(message, expected):
    """RFC 4616 §2 messages parse into authzid, authcid and password."""
    assert sasl.parse_plain(message) == expected


@pytest.mark.parametrize("message", [
    None, b"", b"alice\0pw", b"\0alice\0pw\0", b"\0\0pw", b"\0alice\0", b"\0\xff\0pw",
])
def test_parse_plain_refuses_malformed(message):
    """Missing fields, extra NULs, empty authcid or password and bad UTF-8 are refused."""
    with pytest.raises(sasl.SASLError):
        sasl.parse_plain(message)
