"""
LDAP anonymous reads and writes: a client that never bound, bound anonymously, bound without
a password or failed a bind can change nothing (add, modify, delete, rename, password
modify) and reads only the white pages: no userPassword, no hidden attribute through a
filter or a compare, nothing at all when anonymous search is off.
"""

from __future__ import annotations

import pytest
from ldaptor.protocols import pureber, pureldap

from mailsuite.ldap import codec
from mailsuite.ldap.acl import WHITE_PAGES
from tests.fuzz.harness import Connection
from tests.unit.ldap.ldap_fakes import ALICE_DN, BASE, decode_all

OPERATIONAL = {"entrydn", "hassubordinates", "subschemasubentry", "structuralobjectclass",
               "entryuuid", "createtimestamp", "modifytimestamp"}


def send(conn: Connection, op, ident: int = 5) -> list:
    return decode_all(conn.send(pureldap.LDAPMessage(op, id=ident).toWire()))


def result(conn: Connection, op) -> int:
    [message] = send(conn, op)
    return message.value.resultCode


def bind_as(conn: Connection, how: str) -> None:
    """Leave the session anonymous in one of the ways a client can."""
    if how == "never bound":
        return
    dn, password = {"anonymous bind": (b"", b""), "no password": (ALICE_DN.encode(), b""),
                    "failed bind": (ALICE_DN.encode(), b"wrong")}[how]
    result(conn, pureldap.LDAPBindRequest(dn=dn, auth=password))


def attribute(name: str, value: bytes):
    return (pureber.BEROctetString(name), pureber.BERSet([pureber.BEROctetString(value)]))


WAYS = ["never bound", "anonymous bind", "no password", "failed bind"]
WRITES = [
    pureldap.LDAPAddRequest(entry=f"uid=mallory,ou=people,{BASE}".encode(), attributes=[
        attribute("objectClass", b"inetOrgPerson"), attribute("uid", b"mallory"),
        attribute("cn", b"M"), attribute("sn", b"M")]),
    pureldap.LDAPModifyRequest(object=ALICE_DN.encode(), modification=[
        pureber.BERSequence([pureber.BEREnumerated(2), pureber.BERSequence([
            pureber.BEROctetString(b"userPassword"),
            pureber.BERSet([pureber.BEROctetString(b"owned")])])])]),
    pureldap.LDAPDelRequest(entry=ALICE_DN.encode()),
    pureldap.LDAPModifyDNRequest(entry=ALICE_DN.encode(), newrdn=b"uid=mallory", deleteoldrdn=1),
]


@pytest.mark.parametrize("how", WAYS)
@pytest.mark.parametrize("write", WRITES, ids=lambda op: type(op).__name__)
def test_anonymous_writes_are_refused(suite, how, write):
    """Add, modify, delete and rename get insufficientAccessRights; alice's entry and
    password are untouched."""
    conn = Connection(suite.ldap())
    bind_as(conn, how)
    assert result(conn, write) == codec.INSUFFICIENT_ACCESS_RIGHTS
    assert suite.directory.get(ALICE_DN) is not None
    assert suite.directory.get(f"uid=mallory,ou=people,{BASE}") is None
    assert suite.directory.check_password("alice", "alice-password") is not None


@pytest.mark.parametrize("how", WAYS)
def test_anonymous_password_modify_is_refused(suite, how):
    """Password Modify for alice without being alice or the admin changes nothing."""
    conn = Connection(suite.ldap())
    bind_as(conn, how)
    value = pureber.BERSequence([pureber.BEROctetString(ALICE_DN.encode(), tag=0x80),
                                 pureber.BEROctetString(b"owned", tag=0x82)]).toWire()
    code = result(conn, pureldap.LDAPExtendedRequest(requestName=codec.OID_PASSWORD_MODIFY,
                                                    requestValue=value))
    assert code == codec.INSUFFICIENT_ACCESS_RIGHTS
    assert suite.directory.check_password("alice", "owned") is None


@pytest.mark.parametrize("how", WAYS)
def test_anonymous_reads_only_the_white_pages(suite, how):
    """Asking for everything ("*", "+", userPassword by name) returns only white-pages and
    operational attributes, never a password."""
    conn = Connection(suite.ldap())
    bind_as(conn, how)
    messages = send(conn, pureldap.LDAPSearchRequest(
        baseObject=BASE.encode(), scope=2, filter=pureldap.LDAPFilter_present("objectClass"),
        attributes=[b"*", b"+", b"userPassword", b"uid", b"mailRoutingAddress"]))
    entries = [m.value for m in messages[:-1]]
    assert entries and messages[-1].value.resultCode == codec.SUCCESS
    for entry in entries:
        names = {name.decode().lower() for name, _ in entry.attributes}
        assert names <= WHITE_PAGES | OPERATIONAL, (entry.objectName, names - WHITE_PAGES)


@pytest.mark.parametrize("attribute,value", [("userPassword", b"alice-password"),
                                             ("uid", b"alice"), ("uid", b"a*")])
def test_hidden_attributes_are_no_oracle(suite, attribute, value):
    """A filter or a compare on an attribute anonymous may not read gives the same answer
    for a right and a wrong value."""
    conn = Connection(suite.ldap())

    def search(assertion: bytes):
        if assertion.endswith(b"*"):
            f = pureldap.LDAPFilter_substrings(type=attribute, substrings=[
                pureldap.LDAPFilter_substrings_initial(assertion[:-1])])
        else:
            f = pureldap.LDAPFilter_equalityMatch(
                attributeDesc=pureldap.LDAPAttributeDescription(attribute),
                assertionValue=pureldap.LDAPAssertionValue(assertion))
        return [m.value.objectName if isinstance(m.value, pureldap.LDAPSearchResultEntry)
                else m.value.resultCode for m in send(conn, pureldap.LDAPSearchRequest(
                    baseObject=BASE.encode(), scope=2, filter=f, attributes=[b"cn"]))]

    def compare(assertion: bytes):
        ava = pureldap.LDAPAttributeValueAssertion(pureber.BEROctetString(attribute),
                                                   pureber.BEROctetString(assertion))
        return result(conn, pureldap.LDAPCompareRequest(entry=ALICE_DN.encode(), ava=ava))

    assert search(value) == search(b"certainly-wrong") == [codec.SUCCESS]
    assert compare(value) == compare(b"certainly-wrong") == codec.INSUFFICIENT_ACCESS_RIGHTS


def test_nothing_is_readable_when_anonymous_search_is_off(suite):
    """With anonymous_search off, every anonymous search is refused and returns no entry."""
    conn = Connection(suite.ldap(anonymous_search=False))
    messages = send(conn, pureldap.LDAPSearchRequest(
        baseObject=BASE.encode(), scope=2, filter=pureldap.LDAPFilter_present("objectClass")))
    assert len(messages) == 1
    assert messages[0].value.resultCode != codec.SUCCESS
