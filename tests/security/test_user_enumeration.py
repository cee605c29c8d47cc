"""
User enumeration: nothing a client can observe tells an existing account from a missing one.
VRFY and EXPN answer the same for every name; a login with an unknown name fails exactly as
one with a wrong password, on SMTP AUTH, POP3, IMAP and LDAP bind, and costs the same
password verification; a recipient refusal reads the same before and after AUTH.
"""

from __future__ import annotations

import base64

import pytest
from ldaptor.protocols import pureldap

from mailsuite.directory import embedded
from mailsuite.directory.embedded import EmbeddedDirectory
from mailsuite.directory.passwords import scheme_of
from tests.fuzz.harness import Connection
from tests.unit.ldap.ldap_fakes import BASE, ROOT, decode_all

UNKNOWN = "nobody@example.test"
KNOWN = "alice@example.test"


@pytest.fixture
def verifications(monkeypatch):
    """The scheme of every stored value a password was checked against, in order."""
    seen = []
    real = embedded.verify_password

    def recording(stored, password):
        seen.append(scheme_of(stored))
        return real(stored, password)

    monkeypatch.setattr(embedded, "verify_password", recording)
    return seen


def plain(login: str, password: str) -> bytes:
    return base64.b64encode(f"\0{login}\0{password}".encode())


def smtp_auth(suite, login):
    conn = Connection(suite.smtp("submission"))
    conn.send(b"EHLO client.example\r\n")
    return conn.send(b"AUTH PLAIN " + plain(login, "wrong-password") + b"\r\n")


def pop3_user_pass(suite, login):
    conn = Connection(suite.pop3())
    return conn.send(f"USER {login}\r\nPASS wrong-password\r\n".encode())


def pop3_sasl(suite, login):
    conn = Connection(suite.pop3())
    return conn.send(b"AUTH PLAIN " + plain(login, "wrong-password") + b"\r\n")


def imap_login(suite, login):
    conn = Connection(suite.imap())
    return conn.send(f'a LOGIN "{login}" "wrong-password"\r\n'.encode())


def imap_authenticate(suite, login):
    conn = Connection(suite.imap())
    return conn.send(b"a AUTHENTICATE PLAIN " + plain(login, "wrong-password") + b"\r\n")


def ldap_bind(suite, login):
    conn = Connection(suite.ldap())
    dn = f"uid={login.split('@')[0]},ou=people,{BASE}"
    [response] = decode_all(conn.send(pureldap.LDAPMessage(pureldap.LDAPBindRequest(
        dn=dn.encode(), auth=b"wrong-password"), id=1).toWire()))
    return response.value.resultCode, response.value.errorMessage


LOGINS = [smtp_auth, pop3_user_pass, pop3_sasl, imap_login, imap_authenticate, ldap_bind]


@pytest.mark.parametrize("attempt", LOGINS, ids=lambda f: f.__name__)
def test_unknown_user_fails_like_a_wrong_password(suite, verifications, attempt):
    """The reply to an unknown login equals the reply to a wrong password, and each costs
    one password verification."""
    known = attempt(suite, KNOWN)
    known_work = list(verifications)
    verifications.clear()
    unknown = attempt(suite, UNKNOWN)
    assert unknown == known
    assert len(verifications) == len(known_work) == 1


@pytest.mark.parametrize("name", ["alice", KNOWN, "staff@example.test", "postmaster",
                                  "nobody", UNKNOWN, "*", "root"])
def test_vrfy_and_expn_say_nothing_about_a_name(suite, name):
    """VRFY gives 252 and EXPN 502 whatever the name, as for a name that does not exist."""
    conn = Connection(suite.smtp("mx"))
    conn.send(b"EHLO client.example\r\n")
    assert conn.send(f"VRFY {name}\r\n".encode()) == conn.send(b"VRFY nobody-at-all\r\n")
    assert conn.send(f"EXPN {name}\r\n".encode()) == conn.send(b"EXPN nobody-at-all\r\n")


def test_unknown_recipient_reply_is_the_same_before_and_after_auth(suite):
    """An unknown local recipient gets the same refusal from an anonymous MX client and from
    an authenticated user."""
    anonymous = Connection(suite.smtp("mx"))
    anonymous.send(b"EHLO client.example\r\nMAIL FROM:<someone@remote.example>\r\n")
    before = anonymous.send(f"RCPT TO:<{UNKNOWN}>\r\n".encode())
    user = Connection(suite.smtp("submission"))
    user.send(b"EHLO client.example\r\n")
    assert user.send(b"AUTH PLAIN " + plain(KNOWN, "alice-password") + b"\r\n")[:3] == b"235"
    user.send(f"MAIL FROM:<{KNOWN}>\r\n".encode())
    after = user.send(f"RCPT TO:<{UNKNOWN}>\r\n".encode())
    assert before == after == b"550 5.1.1 User unknown\r\n"


def test_recipient_harvesting_is_cut_off(suite):
    """Refused recipients count as errors: probing addresses one after the other ends the
    session after max_errors refusals (RFC 5321 §4.3.2 allows closing on too many errors)."""
    conn = Connection(suite.smtp("mx"))
    conn.send(b"EHLO client.example\r\nMAIL FROM:<someone@remote.example>\r\n")
    for n in range(50):
        conn.send(f"RCPT TO:<guess{n}@example.test>\r\n".encode())
        if conn.closed:
            break
    assert conn.closed


def directory_with(scheme: str) -> EmbeddedDirectory:
    with open(f"{ROOT}/etc/directory.ldif", "rb") as f:
        seed = f.read()
    return EmbeddedDirectory(None, domains=["example.test"], base_dn=BASE, seed_ldif=seed,
                             password_scheme=scheme)


def unknown_costs_like_known(scheme: str, verifications) -> None:
    directory = directory_with(scheme)
    assert directory.check_password("alice", "wrong-password") is None
    known = list(verifications)
    verifications.clear()
    assert directory.check_password("nobody", "wrong-password") is None
    assert verifications == known == [scheme]


def test_unknown_login_costs_what_a_wrong_password_costs(verifications):
    """With the default scheme, an unknown login is checked against a hash of the same kind
    as a real account's, so it takes as long as a wrong password."""
    unknown_costs_like_known("SSHA512", verifications)


@pytest.mark.parametrize("scheme", ["SSHA", "ARGON2"])
def test_unknown_login_costs_what_a_wrong_password_costs_with_other_schemes(scheme,
                                                                            verifications):
    """With any configured scheme, an unknown login is checked against a hash of that scheme."""
    unknown_costs_like_known(scheme, verifications)


def test_ldap_filter_on_hidden_attributes_reveals_nothing(suite):
    """An anonymous search on an attribute outside the white pages (uid) matches nothing,
    for names that exist and names that do not."""
    conn = Connection(suite.ldap())
    answers = []
    for name in (b"alice", b"nobody", b"a*"):
        assertion = (pureldap.LDAPFilter_substrings(type="uid", substrings=[
            pureldap.LDAPFilter_substrings_initial(name[:-1])]) if name.endswith(b"*") else
            pureldap.LDAPFilter_equalityMatch(
                attributeDesc=pureldap.LDAPAttributeDescription("uid"),
                assertionValue=pureldap.LDAPAssertionValue(name)))
        messages = decode_all(conn.send(pureldap.LDAPMessage(pureldap.LDAPSearchRequest(
            baseObject=BASE.encode(), scope=2, filter=assertion, attributes=[b"cn"]),
            id=2).toWire()))
        answers.append([type(m.value).__name__ for m in messages])
    assert answers == [["LDAPSearchResultDone"]] * 3
