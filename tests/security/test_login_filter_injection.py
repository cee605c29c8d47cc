"""
LDAP filter injection in login names: a login such as ``*)(uid=*`` or ``*`` never
authenticates, even with a real account's password, on SMTP AUTH, POP3, IMAP or LDAP bind;
it costs one password check (nobody's accounts are walked); and for an external directory it
stays one escaped assertion value inside the configured filter.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from ldaptor.protocols import pureldap

from mailsuite.directory import embedded
from mailsuite.directory.external import (
    DEFAULT_GROUP_FILTER,
    DEFAULT_USER_FILTER,
    parse_filter,
    render_filter,
)
from mailsuite.ldap import codec
from tests.fuzz.harness import Connection
from tests.unit.ldap.ldap_fakes import BASE, decode_all

INJECTIONS = ["*", "*)(uid=*", "alice)(|(uid=*", "alice*", "a*e", "*@example.test",
              "(uid=alice)", "alice)(objectClass=*", "*))(|(uid=*", "alice\\2a",
              "uid=alice,ou=people," + BASE, "alice@example.test)(mail=*", "\\*", "alice\\"]
PASSWORD = "alice-password"  # alice's real password


@pytest.fixture
def checks(monkeypatch):
    """How many stored password values each login attempt was checked against."""
    seen = []
    real = embedded.verify_password

    def counting(stored, password):
        seen.append(stored)
        return real(stored, password)

    monkeypatch.setattr(embedded, "verify_password", counting)
    return seen


def plain(login: str) -> bytes:
    return base64.b64encode(f"\0{login}\0{PASSWORD}".encode())


def smtp(suite, login):
    conn = Connection(suite.smtp("submission"))
    conn.send(b"EHLO client.example\r\n")
    return conn.send(b"AUTH PLAIN " + plain(login) + b"\r\n").startswith(b"235")


def pop3(suite, login):
    conn = Connection(suite.pop3())
    return conn.send(f"USER {login}\r\nPASS {PASSWORD}\r\n".encode()).endswith(
        b"+OK Logged in, 0 messages\r\n")


def imap(suite, login):
    conn = Connection(suite.imap())
    quoted = login.replace("\\", "\\\\").replace('"', '\\"')
    return b"a OK" in conn.send(f'a LOGIN "{quoted}" "{PASSWORD}"\r\n'.encode())


def ldap(suite, login):
    conn = Connection(suite.ldap())
    dn = login if "=" in login else f"uid={login},ou=people,{BASE}"
    [response] = decode_all(conn.send(pureldap.LDAPMessage(pureldap.LDAPBindRequest(
        dn=dn.encode(), auth=PASSWORD.encode()), id=1).toWire()))
    return response.value.resultCode == codec.SUCCESS


CASES = [pytest.param(attempt, login, id=f"{attempt.__name__}-{login}")
         for attempt in (smtp, pop3, imap, ldap) for login in INJECTIONS
         # alice's own DN is the right bind DN for her, not an injection.
         if not (attempt is ldap and login.startswith("uid=alice,"))]


@pytest.mark.parametrize("attempt,login", CASES)
def test_injected_login_never_authenticates(suite, checks, attempt, login):
    """With alice's own password, an injected login is refused and costs a single password
    check, as an unknown name does."""
    assert attempt(suite, login) is False
    assert len(checks) <= 1


def test_the_real_login_works(suite):
    """The same attempts with alice's real name succeed, so the refusals above are not an
    accident of the test."""
    assert smtp(suite, "alice@example.test") and pop3(suite, "alice@example.test")
    assert imap(suite, "alice@example.test") and ldap(suite, "alice")


def _assertions(node):
    """(attribute, value) of every leaf of an ldaptor filter, in order."""
    children = getattr(node, "data", None)
    if isinstance(node, (pureldap.LDAPFilter_and, pureldap.LDAPFilter_or)):
        return [leaf for child in children for leaf in _assertions(child)]
    if isinstance(node, pureldap.LDAPFilter_equalityMatch):
        return [(node.attributeDesc.value, node.assertionValue.value)]
    return [(type(node).__name__, None)]


@settings(max_examples=300, deadline=None)
@given(login=st.one_of(st.sampled_from(INJECTIONS), st.text(max_size=30),
                       st.text("*()\\\0=|&!a", max_size=12)))
@pytest.mark.parametrize("template", [DEFAULT_USER_FILTER, DEFAULT_GROUP_FILTER])
def test_external_directory_filter_keeps_its_shape(template, login):
    """For any login, the external directory's filter has exactly the template's terms, and
    every term built from the login is an equality match on the login itself."""
    assume(login.strip())  # an empty login is refused before any filter is built
    shape = _assertions(parse_filter(render_filter(template, "x")))
    actual = _assertions(parse_filter(render_filter(template, login)))
    assert [attribute for attribute, _ in actual] == [attribute for attribute, _ in shape]
    for (attribute, value), (_, template_value) in zip(actual, shape):
        if template_value == "x":
            # ldaptor's filter parser may respell white space; nothing else changes.
            assert value.split() == login.split()
