"""
The external LDAP directory over TLS: a real slapd with a test CA and a server certificate,
a real `twistd mailsuite` reaching it by ldaps:// or StartTLS, and a real POP3 client whose
login needs a bind to slapd.
"""

import poplib
import time

import pytest

from mailsuite.testing.server import RunningSuite
from mailsuite.testing.slapd import BASE_LDIF, slapd_binary, ssha, start_or_skip
from tests.integration.mailflow import pop3_count

pytestmark = pytest.mark.skipif(slapd_binary() is None,
                                reason="slapd is not installed (apt-get install slapd ldap-utils)")

LDIF = BASE_LDIF + f"""\
dn: uid=erin,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
uid: erin
cn: Erin Example
sn: Example
mail: erin@example.test
userPassword: {ssha("erin-secret")}

"""


def _start_slapd(folder, **options):
    return start_or_skip(str(folder), LDIF, tls=True, **options)


@pytest.fixture(scope="module")
def slapd(tmp_path_factory):
    server = _start_slapd(tmp_path_factory.mktemp("slapd-tls"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def wrong_name_slapd(tmp_path_factory):
    server = _start_slapd(tmp_path_factory.mktemp("slapd-wrong-name"),
                          tls_names=("ldap.elsewhere.test",))
    yield server
    server.stop()


@pytest.fixture
def start_suite(tmp_path):
    suites = []

    def start(server, **directory):
        settings = {"backend": "ldap", "seed_ldif": "", "bind_dn": server.root_dn,
                    "bind_password": server.root_password}
        settings.update(directory)
        suite = RunningSuite(str(tmp_path / f"suite{len(suites)}"),
                             extra={"directory": settings})
        suites.append(suite)
        return suite.start()

    yield start
    for suite in suites:
        suite.stop()


def _log_mentioning(suite, words, timeout=5.0):
    """The suite's log once it holds all ``words`` (the log is written asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        text = suite.log()
        if all(w in text for w in words) or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def test_ldaps_with_the_test_ca_lets_a_slapd_user_log_in(slapd, start_suite):
    """Over ldaps:// trusting the test CA, POP3 login with the slapd password succeeds."""
    suite = start_suite(slapd, url=slapd.ldaps_url, ca_file=slapd.ca_path)
    assert pop3_count(suite, "erin", "erin-secret") >= 0


def test_ldaps_with_the_test_ca_still_refuses_a_wrong_password(slapd, start_suite):
    """Over a verified ldaps:// connection a wrong password is still refused."""
    suite = start_suite(slapd, url=slapd.ldaps_url, ca_file=slapd.ca_path)
    with pytest.raises(poplib.error_proto):
        pop3_count(suite, "erin", "wrong-secret")


def test_starttls_with_the_test_ca_lets_a_slapd_user_log_in(slapd, start_suite):
    """With starttls = true on ldap:// trusting the test CA, POP3 login succeeds."""
    suite = start_suite(slapd, url=slapd.url, starttls=True, ca_file=slapd.ca_path)
    assert pop3_count(suite, "erin@example.test", "erin-secret") >= 0


def test_ldaps_without_the_ca_refuses_login_and_logs_why(slapd, start_suite):
    """Trusting only the system CAs, the test certificate is refused: no login, a logged reason."""
    suite = start_suite(slapd, url=slapd.ldaps_url)
    with pytest.raises(poplib.error_proto):
        pop3_count(suite, "erin", "erin-secret")
    log = _log_mentioning(suite, ["certificate verify failed"])
    assert "certificate verify failed" in log, log


def test_untrusted_certificate_is_logged_as_directory_unavailable(slapd, start_suite):
    """A TLS verification failure is logged by the directory, not as a POP3 crash."""
    suite = start_suite(slapd, url=slapd.ldaps_url)
    with pytest.raises(poplib.error_proto):
        pop3_count(suite, "erin", "erin-secret")
    log = _log_mentioning(suite, ["LDAP directory unavailable"])
    assert "LDAP directory unavailable" in log and "#critical]" not in log, log


def test_starttls_without_the_ca_refuses_login(slapd, start_suite):
    """StartTLS trusting only the system CAs never binds to the untrusted server."""
    suite = start_suite(slapd, url=slapd.url, starttls=True)
    with pytest.raises(poplib.error_proto):
        pop3_count(suite, "erin", "erin-secret")


def test_ldaps_certificate_for_another_host_name_is_refused(wrong_name_slapd, start_suite):
    """A certificate from the trusted CA but for another host name does not let anyone in."""
    suite = start_suite(wrong_name_slapd, url=wrong_name_slapd.ldaps_url,
                        ca_file=wrong_name_slapd.ca_path)
    with pytest.raises(poplib.error_proto):
        pop3_count(suite, "erin", "erin-secret")
    log = _log_mentioning(suite, ["Mismatch"])
    assert "IPAddressMismatch" in log, log


def test_tls_verify_false_accepts_the_untrusted_certificate(slapd, start_suite):
    """tls_verify = false skips the checks, so ldaps:// without the CA still logs in."""
    suite = start_suite(slapd, url=slapd.ldaps_url, tls_verify=False)
    assert pop3_count(suite, "erin", "erin-secret") >= 0
