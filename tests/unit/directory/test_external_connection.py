"""LDAPConnection over ldaptor's client and a fake transport: wire requests and results."""

from ldaptor.protocols import pureldap
from ldaptor.protocols.ldap.ldapclient import LDAPClient
from twisted.internet import task
from twisted.internet.testing import StringTransport

from mailsuite.directory.external import (
    START_TLS_OID,
    ConnectionFailed,
    LDAPConnection,
    parse_filter,
)


def connected():
    client, transport, clock = LDAPClient(), StringTransport(), task.Clock()
    client.makeConnection(transport)
    return LDAPConnection(client, reactor=clock, timeout=5), client, transport, clock


def reply(client, op):
    """Answer the one request in flight (ldaptor numbers messages process-wide)."""
    (message_id,) = client.onwire
    client.dataReceived(pureldap.LDAPMessage(op, id=message_id).toWire())


def fired(d):
    out = []
    d.addBoth(out.append)
    return out


def test_search_collects_entries_until_done():
    """Entries up to SearchResultDone come back as (dn, lower-case attributes)."""
    connection, client, transport, _ = connected()
    out = fired(connection.search("dc=t", parse_filter("(uid=a)"), ["uid"]))
    reply(client, pureldap.LDAPSearchResultEntry(
        objectName=b"uid=a,dc=t", attributes=[(b"UID", [b"a"])]))
    reply(client, pureldap.LDAPSearchResultDone(resultCode=0))
    assert out == [[("uid=a,dc=t", {"uid": ["a"]})]]


def test_bind_invalid_credentials_is_false():
    """resultCode 49 (invalidCredentials) makes bind() fire False."""
    connection, client, transport, _ = connected()
    out = fired(connection.bind("uid=a,dc=t", "pw"))
    reply(client, pureldap.LDAPBindResponse(resultCode=49))
    assert out == [False]


def test_request_without_answer_times_out_as_connection_failure():
    """A server that never answers fails the request with ConnectionFailed after the timeout."""
    connection, client, transport, clock = connected()
    out = fired(connection.bind("uid=a,dc=t", "pw"))
    clock.advance(6)
    assert out[0].check(ConnectionFailed)
    assert transport.disconnecting


def test_starttls_sends_the_extended_operation_and_upgrades():
    """start_tls sends the RFC 4511 §4.14 request and starts TLS once the server agrees."""
    connection, client, transport, _ = connected()
    started = []
    transport.startTLS = started.append
    out = fired(connection.start_tls("verified-options"))
    assert START_TLS_OID in transport.value()
    reply(client, pureldap.LDAPExtendedResponse(resultCode=0, responseName=START_TLS_OID))
    assert out == [None] and started == ["verified-options"]
