"""
The suite with an external OpenLDAP server as its directory: a real slapd started for the
tests, a real `twistd mailsuite` pointed at it, real SMTP and POP3 clients.
"""

import poplib
import smtplib

import pytest

from mailsuite.testing.server import RunningSuite
from mailsuite.testing.slapd import BASE_LDIF, slapd_binary, ssha, start_or_skip
from tests.integration.mailflow import pop3_count

pytestmark = pytest.mark.skipif(slapd_binary() is None,
                                reason="slapd is not installed (apt-get install slapd ldap-utils)")

LDIF = BASE_LDIF + f"""\
dn: uid=carol,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: carol
cn: Carol Example
sn: Example
mail: carol@example.test
mailLocalAddress: sales@example.test
userPassword: {ssha("carol-secret")}

dn: uid=dave,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
uid: dave
cn: Dave Example
sn: Example
mail: dave@example.test
userPassword: {ssha("dave-secret")}

"""


@pytest.fixture(scope="module")
def slapd(tmp_path_factory):
    server = start_or_skip(str(tmp_path_factory.mktemp("slapd")), LDIF)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ldap_suite(slapd, tmp_path_factory):
    suite = RunningSuite(
        str(tmp_path_factory.mktemp("suite")),
        extra={"directory": {"backend": "ldap", "url": slapd.url, "seed_ldif": "",
                             "bind_dn": slapd.root_dn, "bind_password": slapd.root_password}},
    )
    suite.start()
    yield suite
    suite.stop()


def _send(suite, recipient):
    with smtplib.SMTP("127.0.0.1", suite.port("smtp"), timeout=20) as client:
        client.ehlo("client.example.org")
        return client.sendmail("someone@example.org", [recipient],
                               b"Subject: hello\r\n\r\nfrom outside\r\n")


def test_smtp_accepts_mail_for_a_user_in_slapd(ldap_suite):
    """RCPT TO an account that exists only in slapd is accepted and delivered."""
    assert _send(ldap_suite, "dave@example.test") == {}
    assert pop3_count(ldap_suite, "dave@example.test", "dave-secret") >= 1


def test_smtp_refuses_unknown_user_with_550_511(ldap_suite):
    """An address slapd does not know gets 550 5.1.1."""
    with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
        _send(ldap_suite, "nobody@example.test")
    code, text = caught.value.recipients["nobody@example.test"]
    assert code == 550 and text.startswith(b"5.1.1")


def test_pop3_login_with_the_slapd_password(ldap_suite):
    """POP3 USER/PASS succeeds with the password stored in slapd."""
    assert pop3_count(ldap_suite, "carol", "carol-secret") >= 0


def test_pop3_login_with_a_wrong_password_fails(ldap_suite):
    """POP3 PASS with a wrong password is refused."""
    with pytest.raises(poplib.error_proto):
        pop3_count(ldap_suite, "carol", "wrong-secret")


def test_pop3_login_with_the_stored_hash_fails(ldap_suite):
    """The stored {SSHA} string given as the password does not log in."""
    with pytest.raises(poplib.error_proto):
        pop3_count(ldap_suite, "carol", ssha("carol-secret"))


def test_alias_in_mail_local_address_delivers(ldap_suite):
    """Mail to a mailLocalAddress lands in the owning account's mailbox."""
    before = pop3_count(ldap_suite, "carol@example.test", "carol-secret")
    assert _send(ldap_suite, "sales@example.test") == {}
    assert pop3_count(ldap_suite, "carol@example.test", "carol-secret") == before + 1


@pytest.mark.parametrize("login", ["*)(uid=*", "*", "carol)(|(uid=*", "car*"])
def test_filter_injection_in_login_name_is_refused(ldap_suite, login):
    """A login name carrying LDAP filter syntax matches nobody, whatever the password."""
    with pytest.raises(poplib.error_proto):
        pop3_count(ldap_suite, login, "carol-secret")
