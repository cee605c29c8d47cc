"""SuiteResolver: the twisted.names IResolver view of the caching resolver."""

from __future__ import annotations

import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from twisted.internet import defer, task
from twisted.internet.interfaces import IResolver
from twisted.names import dns as tdns, error
from twisted.names.error import (
    AuthoritativeDomainError,
    DNSNameError,
    DNSNotImplementedError,
    DNSServerError,
    DomainError,
)
from zope.interface.verify import verifyObject

from mailsuite.dns.client import SuiteResolver
from mailsuite.dns.resolution import Resolution
from mailsuite.dns.resolver import CachingResolver
from mailsuite.dns.transport import QueryTimeout


def rrset(owner, rdtype, *values, ttl=300):
    return dns.rrset.from_text(owner, ttl, "IN", rdtype, *values)


SOA = rrset("example.test.", "SOA", "ns.example.test. admin.example.test. 7 3600 600 86400 60")


class TableResolver:
    """A stand-in CachingResolver answering from {(name, rdtype): Resolution}."""

    def __init__(self, table):
        self.table = table
        self.asked = []

    def resolve(self, name, rdtype, rdclass=dns.rdataclass.IN):
        self.asked.append((name.to_text(), rdtype, rdclass))
        return defer.succeed(self.table.get((name.to_text(), rdtype),
                                            Resolution(rcode=dns.rcode.NXDOMAIN,
                                                       authority=[SOA])))


def result_of(d):
    out = []
    d.addBoth(out.append)
    assert len(out) == 1
    return out[0]


def answers_for(owner, rdtype, *values, **kwargs):
    resolver = SuiteResolver(TableResolver({
        (owner, dns.rdatatype.from_text(rdtype)):
            Resolution(answer=[rrset(owner, rdtype, *values, **kwargs)])}))
    return resolver


def test_provides_iresolver():
    """SuiteResolver is a complete twisted.names IResolver."""
    assert verifyObject(IResolver, SuiteResolver(TableResolver({})))


def test_mx_records_convert_with_preference_exchange_and_ttl():
    """lookupMailExchange gives Record_MX entries with preference, host and the TTL."""
    resolver = answers_for("example.test.", "MX", "10 mx1.example.test.", "20 mx2.example.test.",
                           ttl=123)
    answers, authority, additional = result_of(resolver.lookupMailExchange("example.test"))
    found = sorted((a.payload.preference, a.payload.name.name, a.ttl) for a in answers)
    assert found == [(10, b"mx1.example.test", 123), (20, b"mx2.example.test", 123)]
    assert all(a.type == tdns.MX and a.name.name == b"example.test" for a in answers)
    assert authority == [] and additional == []


def test_a_and_aaaa_records_convert_to_addresses():
    """lookupAddress and lookupIPV6Address give the addresses as twisted records."""
    v4 = answers_for("h.example.test.", "A", "192.0.2.1")
    v6 = answers_for("h.example.test.", "AAAA", "2001:db8::1")
    (a,), _, _ = result_of(v4.lookupAddress("h.example.test"))
    (aaaa,), _, _ = result_of(v6.lookupIPV6Address("h.example.test"))
    assert a.payload.dottedQuad() == "192.0.2.1"
    assert aaaa.payload == tdns.Record_AAAA("2001:db8::1", ttl=300)


def test_txt_keeps_its_strings_and_their_spaces():
    """A TXT record of two strings, with spaces, comes out as those two strings."""
    resolver = answers_for("example.test.", "TXT", '"v=spf1 mx -all" "second part"')
    (txt,), _, _ = result_of(resolver.lookupText("example.test"))
    assert txt.payload.data == [b"v=spf1 mx -all", b"second part"]


def test_srv_cname_ptr_ns_and_soa_convert():
    """SRV, CNAME, PTR, NS and SOA each come out as their twisted Record class."""
    cases = [
        ("_imaps._tcp.example.test.", "SRV", "0 1 993 mail.example.test.", "lookupService",
         lambda p: (p.priority, p.weight, p.port, p.target.name) ==
         (0, 1, 993, b"mail.example.test")),
        ("www.example.test.", "CNAME", "web.example.test.", "lookupCanonicalName",
         lambda p: p.name.name == b"web.example.test"),
        ("1.2.0.192.in-addr.arpa.", "PTR", "mail.example.test.", "lookupPointer",
         lambda p: p.name.name == b"mail.example.test"),
        ("example.test.", "NS", "ns.example.test.", "lookupNameservers",
         lambda p: p.name.name == b"ns.example.test"),
        ("example.test.", "SOA", "ns.example.test. admin.example.test. 7 3600 600 86400 60",
         "lookupAuthority", lambda p: (p.serial, p.minimum, p.mname.name) ==
         (7, 60, b"ns.example.test")),
    ]
    for owner, rdtype, value, method, check in cases:
        resolver = answers_for(owner, rdtype, value)
        (record,), _, _ = result_of(getattr(resolver, method)(owner))
        assert record.type == tdns.REV_TYPES[rdtype] and check(record.payload), rdtype


def test_question_reaches_the_resolver_as_name_type_and_class():
    """lookupText("Example.Test") asks (example.test., TXT, IN)."""
    table = TableResolver({})
    result_of(SuiteResolver(table).lookupText("Example.Test")).trap(DomainError)
    assert table.asked == [("Example.Test.", dns.rdatatype.TXT, dns.rdataclass.IN)]


def test_nxdomain_is_a_dns_name_error():
    """NXDOMAIN from outside fails with DNSNameError, which is a DomainError."""
    failure = result_of(SuiteResolver(TableResolver({})).lookupAddress("gone.example"))
    assert failure.check(DNSNameError) and failure.check(DomainError)


def test_local_nxdomain_is_an_authoritative_domain_error():
    """NXDOMAIN from a local zone fails with AuthoritativeDomainError."""
    table = TableResolver({("nobody.example.test.", dns.rdatatype.A): Resolution(
        rcode=dns.rcode.NXDOMAIN, authority=[SOA], authoritative=True)})
    failure = result_of(SuiteResolver(table).lookupAddress("nobody.example.test"))
    assert failure.check(AuthoritativeDomainError)


def test_servfail_is_a_dns_server_error():
    """SERVFAIL fails with DNSServerError."""
    table = TableResolver({("down.example.", dns.rdatatype.MX): Resolution(
        rcode=dns.rcode.SERVFAIL)})
    failure = result_of(SuiteResolver(table).lookupMailExchange("down.example"))
    assert failure.check(DNSServerError)


def test_nodata_is_empty_answers_with_the_soa():
    """NODATA is ([], [SOA], [])."""
    table = TableResolver({("example.test.", dns.rdatatype.TXT): Resolution(authority=[SOA])})
    answers, authority, additional = result_of(SuiteResolver(table).lookupText("example.test"))
    assert answers == [] and additional == []
    assert [r.type for r in authority] == [tdns.SOA]


def test_zone_transfer_is_not_a_lookup():
    """lookupZone (AXFR) is refused with DNSNotImplementedError, nothing is asked."""
    table = TableResolver({})
    failure = result_of(SuiteResolver(table).lookupZone("example.test"))
    assert failure.check(DNSNotImplementedError) and table.asked == []


def test_get_host_by_name_prefers_ipv4_then_falls_back_to_ipv6():
    """getHostByName gives the A address, or the AAAA one when there is no A record."""
    both = TableResolver({
        ("h.example.", dns.rdatatype.A): Resolution(answer=[rrset("h.example.", "A",
                                                                  "192.0.2.5")]),
        ("h.example.", dns.rdatatype.AAAA): Resolution(answer=[rrset("h.example.", "AAAA",
                                                                     "2001:db8::5")]),
        ("six.example.", dns.rdatatype.A): Resolution(authority=[SOA]),
        ("six.example.", dns.rdatatype.AAAA): Resolution(answer=[rrset("six.example.", "AAAA",
                                                                       "2001:db8::6")]),
    })
    resolver = SuiteResolver(both)
    assert result_of(resolver.getHostByName("h.example")) == "192.0.2.5"
    assert result_of(resolver.getHostByName("six.example")) == "2001:db8::6"
    assert all(rdtype != dns.rdatatype.ANY for _, rdtype, _ in both.asked)


def test_get_host_by_name_without_address_is_a_name_error():
    """A name with neither A nor AAAA fails getHostByName with DNSNameError."""
    table = TableResolver({(n, t): Resolution(authority=[SOA]) for n, t in (
        ("x.example.", dns.rdatatype.A), ("x.example.", dns.rdatatype.AAAA))})
    assert result_of(SuiteResolver(table).getHostByName("x.example")).check(DNSNameError)


class SilentNetwork:
    def __init__(self, clock):
        self.clock = clock

    def query(self, server, message, *, tcp=False, timeout):
        d = defer.Deferred()
        self.clock.callLater(timeout, d.errback, QueryTimeout("silent"))
        return d


def test_timeout_through_the_caching_resolver_is_a_dns_server_error():
    """With every forwarder silent, lookupAddress fails with DNSServerError after the timeout."""
    clock = task.Clock()
    caching = CachingResolver(clock, upstream=[("10.0.0.1", 53)], timeout=4.0,
                              network=SilentNetwork(clock))
    out = []
    SuiteResolver(caching).lookupAddress("example.org").addBoth(out.append)
    assert out == []
    clock.advance(4.0)
    assert out[0].check(DNSServerError)


@pytest.mark.parametrize("rcode, exception", [
    (dns.rcode.REFUSED, error.DNSQueryRefusedError),
    (dns.rcode.FORMERR, error.DNSFormatError),
])
def test_other_error_rcodes_map_to_their_twisted_errors(rcode, exception):
    """REFUSED and FORMERR become the matching twisted.names errors."""
    table = TableResolver({("x.example.", dns.rdatatype.A): Resolution(rcode=rcode)})
    assert result_of(SuiteResolver(table).lookupAddress("x.example")).check(exception)
