"""
CachingResolver over a fake network (a table of servers) and a Clock: forwarding, iteration
from the root, bailiwick checks, caching of answers and referrals, limits and coalescing.
"""

from __future__ import annotations

import ipaddress

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest
from twisted.internet import defer, task

from mailsuite.dns.resolution import Resolution
from mailsuite.dns.resolver import MAX_CNAME_LINKS, MAX_QUERIES, CachingResolver, classify_reply
from mailsuite.dns.transport import EDNS_PAYLOAD, QueryTimeout

A, AAAA, MX, NS, CNAME, TXT = (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.MX,
                               dns.rdatatype.NS, dns.rdatatype.CNAME, dns.rdatatype.TXT)


# --------------------------------------------------------------------------- fakes


class FakeNetwork:
    """
    Servers as handlers: ``servers[(address, port)] = handler(query, tcp) -> Message | None``
    (None: the server stays silent, so the query times out).  Every query is logged.
    """

    def __init__(self, clock):
        self.clock = clock
        self.servers = {}
        self.queries = []
        self.delay = 0.0
        self.unroutable = set()

    def query(self, server, message, *, tcp=False, timeout):
        question = message.question[0]
        self.queries.append(Query(server, question.name.to_text(), question.rdtype, tcp,
                                  message))
        handler = self.servers.get(server)
        reply = handler(message, tcp) if handler else None
        d = defer.Deferred()
        if reply is None:
            self.clock.callLater(timeout, d.errback, QueryTimeout(f"{server} is silent"))
        elif self.delay:
            self.clock.callLater(self.delay, d.callback, reply)
        else:
            d.callback(reply)
        return d

    def reachable(self, address):
        return ipaddress.ip_address(address).version not in self.unroutable

    def asked(self, address):
        """The (name, type) questions sent to ``address``."""
        return [(q.name, q.rdtype) for q in self.queries if q.server[0] == address]


class Query:
    def __init__(self, server, name, rdtype, tcp, message):
        self.server, self.name, self.rdtype, self.tcp, self.message = (
            server, name, rdtype, tcp, message)


def authoritative(origin: str, text: str):
    """A handler answering like an authoritative server for the zone in ``text``."""
    zone = dns.zone.from_text(text, origin=origin, relativize=False, check_origin=False)
    apex = zone.origin

    def rrset(name, rdtype):
        rdataset = zone.get_rdataset(name, rdtype)
        return None if rdataset is None else dns.rrset.from_rdata_list(
            name, rdataset.ttl, list(rdataset))

    def handle(query, tcp):
        question = query.question[0]
        name, rdtype = question.name, question.rdtype
        reply = dns.message.make_response(query)
        if not name.is_subdomain(apex):
            reply.set_rcode(dns.rcode.REFUSED)
            return reply
        for depth in range(len(apex) + 1, len(name) + 1):
            cut = name.split(depth)[1]
            ns = rrset(cut, NS)
            if ns is not None:
                reply.authority.append(ns)
                for rdata in ns:
                    for family in (A, AAAA):
                        glue = rrset(rdata.target, family)
                        if glue is not None:
                            reply.additional.append(glue)
                return reply
        reply.flags |= dns.flags.AA
        seen = set()
        while name not in seen:
            seen.add(name)
            node = zone.get_node(name)
            if node is None:
                reply.set_rcode(dns.rcode.NXDOMAIN)
                break
            found = rrset(name, rdtype)
            if found is not None:
                reply.answer.append(found)
                return reply
            cname = rrset(name, CNAME)
            if cname is None:
                break
            reply.answer.append(cname)
            name = cname[0].target
            if not name.is_subdomain(apex):
                return reply
        reply.authority.append(rrset(apex, dns.rdatatype.SOA))
        return reply

    return handle


def forwarder(records: dict, *, rcode=dns.rcode.NOERROR):
    """A recursive server answering from {(name, type): [rrset text, ...]}."""

    def handle(query, tcp):
        question = query.question[0]
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.RA
        reply.set_rcode(rcode)
        for text in records.get((question.name.to_text(), question.rdtype), ()):
            reply.answer.append(dns.rrset.from_text(*text.split(maxsplit=4)))
        return reply

    return handle


def fired(d):
    out = []
    d.addBoth(out.append)
    return out


def addresses(resolution):
    return sorted(rdata.address for rrset in resolution.answer
                  if rrset.rdtype in (A, AAAA) for rdata in rrset)


# --------------------------------------------------------------------------- zones

ROOT_HINTS = """\
.                 3600000 NS  root.hint.
root.hint.        3600000 A   192.0.2.1
"""

ROOT = """\
$TTL 86400
@            SOA root.hint. admin.root.hint. 1 1800 900 604800 86400
@            NS  root.hint.
test.        NS  ns.nic.test.
ns.nic.test. A   192.0.2.10
other.       NS  ns.nic.other.
ns.nic.other. A  192.0.2.11
"""

TLD_TEST = """\
$TTL 3600
@                SOA ns.nic.test. admin.nic.test. 1 1800 900 604800 900
@                NS  ns.nic.test.
ns.nic           A   192.0.2.10
example          NS  ns1.example.test.
ns1.example      A   192.0.2.20
six              NS  ns.six.test.
ns.six           AAAA 2001:db8::30
noglue           NS  ns2.hosting.other.
evil             NS  ns.evil.test.
ns.evil          A   192.0.2.66
loop             NS  ns.loop.test.
"""

TLD_OTHER = """\
$TTL 3600
@                SOA ns.nic.other. admin.nic.other. 1 1800 900 604800 900
@                NS  ns.nic.other.
ns.nic           A   192.0.2.11
hosting          NS  ns.hosting.other.
ns.hosting       A   192.0.2.40
"""

EXAMPLE = """\
$TTL 300
@     SOA ns1 admin 1 1800 900 604800 120
@     NS  ns1
ns1   A   192.0.2.20
@     MX  10 mail
mail  A   192.0.2.25
mail  AAAA 2001:db8::25
www   CNAME web.hosting.other.
alias CNAME mail
"""

HOSTING = """\
$TTL 600
@     SOA ns admin 1 1800 900 604800 600
@     NS  ns
ns    A   192.0.2.40
ns2   A   192.0.2.41
web   A   192.0.2.80
"""

SIX = """\
$TTL 300
@     SOA ns admin 1 1800 900 604800 300
@     NS  ns
ns    AAAA 2001:db8::30
mail  A   192.0.2.60
"""

NOGLUE = """\
$TTL 300
@     SOA ns2.hosting.other. admin 1 1800 900 604800 300
@     NS  ns2.hosting.other.
mx    A   192.0.2.90
"""

EVIL = """\
$TTL 300
@     SOA ns admin 1 1800 900 604800 300
@     NS  ns
ns    A   192.0.2.66
www   A   192.0.2.67
"""

@pytest.fixture
def clock():
    return task.Clock()


@pytest.fixture
def network(clock):
    net = FakeNetwork(clock)
    for address, origin, text in (
            ("192.0.2.1", ".", ROOT), ("192.0.2.10", "test.", TLD_TEST),
            ("192.0.2.11", "other.", TLD_OTHER), ("192.0.2.20", "example.test.", EXAMPLE),
            ("192.0.2.40", "hosting.other.", HOSTING), ("2001:db8::30", "six.test.", SIX),
            ("192.0.2.41", "noglue.test.", NOGLUE), ("192.0.2.66", "evil.test.", EVIL)):
        net.servers[(address, 53)] = authoritative(origin, text)
    return net


@pytest.fixture
def hints(tmp_path):
    path = tmp_path / "named.root"
    path.write_text(ROOT_HINTS)
    return str(path)


@pytest.fixture
def iterative(clock, network, hints):
    return CachingResolver(clock, root_hints=hints, network=network, timeout=2.0)


def resolve(resolver, name, rdtype, clock=None, advance=0.0):
    out = fired(resolver.resolve(name, rdtype))
    if clock is not None and advance:
        clock.advance(advance)
    assert len(out) == 1, "the resolution did not finish"
    assert isinstance(out[0], Resolution), out[0]
    return out[0]


# --------------------------------------------------------------------------- forwarding


def test_forwarding_sends_recursive_edns_queries_with_random_ids(clock):
    """Forwarded queries have RD set, EDNS0 with a 1232-byte payload and differing IDs."""
    net = FakeNetwork(clock)
    net.servers[("10.0.0.1", 53)] = forwarder({
        ("a.example.", A): ["a.example. 300 IN A 192.0.2.1"],
        ("b.example.", A): ["b.example. 300 IN A 192.0.2.2"],
        ("c.example.", A): ["c.example. 300 IN A 192.0.2.3"],
    })
    resolver = CachingResolver(clock, upstream=[("10.0.0.1", 53)], network=net)
    for name in ("a.example", "b.example", "c.example"):
        result = resolve(resolver, name, A)
        assert result.rcode == dns.rcode.NOERROR and len(addresses(result)) == 1
    messages = [q.message for q in net.queries]
    assert all(m.flags & dns.flags.RD for m in messages)
    assert all(m.edns == 0 and m.payload == EDNS_PAYLOAD for m in messages)
    assert len({m.id for m in messages}) == 3


def test_forwarding_fails_over_to_the_second_upstream_after_a_timeout(clock):
    """A silent first forwarder is abandoned after the timeout; the second one answers."""
    net = FakeNetwork(clock)
    net.servers[("10.0.0.2", 5353)] = forwarder({("mx.example.", MX): [
        "mx.example. 300 IN MX 10 mail.mx.example."]})
    resolver = CachingResolver(clock, upstream=[("10.0.0.1", 53), ("10.0.0.2", 5353)],
                               network=net, timeout=3.0)
    out = fired(resolver.resolve("mx.example", MX))
    assert out == []
    clock.advance(3.0)
    assert out[0].rcode == dns.rcode.NOERROR
    assert out[0].answer[0][0].exchange == dns.name.from_text("mail.mx.example")
    assert [q.server for q in net.queries] == [("10.0.0.1", 53), ("10.0.0.2", 5353)]


@pytest.mark.parametrize("rcode", [dns.rcode.SERVFAIL, dns.rcode.REFUSED])
def test_forwarding_moves_on_after_servfail_or_refused(clock, rcode):
    """SERVFAIL or REFUSED from one forwarder makes the next one be asked at once."""
    net = FakeNetwork(clock)
    net.servers[("10.0.0.1", 53)] = forwarder({}, rcode=rcode)
    net.servers[("10.0.0.2", 53)] = forwarder({("x.example.", A): [
        "x.example. 300 IN A 192.0.2.9"]})
    resolver = CachingResolver(clock, upstream=[("10.0.0.1", 53), ("10.0.0.2", 53)],
                               network=net)
    assert addresses(resolve(resolver, "x.example", A)) == ["192.0.2.9"]


def test_all_forwarders_silent_is_servfail_not_an_error(clock):
    """When every forwarder times out the Deferred fires with a SERVFAIL Resolution."""
    net = FakeNetwork(clock)
    resolver = CachingResolver(clock, upstream=[("10.0.0.1", 53), ("10.0.0.2", 53)],
                               network=net, timeout=5.0)
    out = fired(resolver.resolve("x.example", A))
    clock.advance(5.0)
    assert out == []
    clock.advance(5.0)
    assert out[0].rcode == dns.rcode.SERVFAIL


def test_forwarded_nxdomain_comes_back_as_a_resolution(clock):
    """NXDOMAIN is an answer (rcode and SOA), not an error."""
    net = FakeNetwork(clock)

    def handler(query, tcp):
        reply = dns.message.make_response(query)
        reply.set_rcode(dns.rcode.NXDOMAIN)
        reply.authority.append(dns.rrset.from_text(
            "example.", 300, "IN", "SOA", "ns.example. admin.example. 1 2 3 4 60"))
        return reply

    net.servers[("10.0.0.1", 53)] = handler
    resolver = CachingResolver(clock, upstream=[("10.0.0.1", 53)], network=net)
    result = resolve(resolver, "missing.example", A)
    assert result.rcode == dns.rcode.NXDOMAIN
    assert result.authority[0].rdtype == dns.rdatatype.SOA


def test_a_forwarder_that_timed_out_is_asked_last_for_a_while(clock):
    """After a timeout the dead forwarder goes to the end of the list for later questions."""
    net = FakeNetwork(clock)
    net.servers[("10.0.0.2", 53)] = forwarder({
        ("a.example.", A): ["a.example. 300 IN A 192.0.2.1"],
        ("b.example.", A): ["b.example. 300 IN A 192.0.2.2"]})
    resolver = CachingResolver(clock, upstream=[("10.0.0.1", 53), ("10.0.0.2", 53)],
                               network=net, timeout=2.0)
    resolve(resolver, "a.example", A, clock, advance=2.0)
    del net.queries[:]
    resolve(resolver, "b.example", A)
    assert [q.server[0] for q in net.queries] == ["10.0.0.2"]


def test_a_forwarder_must_be_an_ip_address(clock):
    """A host name as forwarder is refused at construction with a readable error."""
    with pytest.raises(ValueError, match="IP address"):
        CachingResolver(clock, upstream=[("dns.example", 53)], network=FakeNetwork(clock))


def test_truncated_reply_is_asked_again_over_tcp(clock):
    """A TC=1 reply from the network makes the resolver repeat the question over TCP."""
    net = FakeNetwork(clock)
    full = forwarder({("big.example.", TXT): ['big.example. 300 IN TXT "' + "x" * 200 + '"']})

    def handler(query, tcp):
        if tcp:
            return full(query, tcp)
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.TC
        return reply

    net.servers[("10.0.0.1", 53)] = handler
    resolver = CachingResolver(clock, upstream=[("10.0.0.1", 53)], network=net)
    result = resolve(resolver, "big.example", TXT)
    assert result.answer and result.answer[0].rdtype == TXT
    assert [q.tcp for q in net.queries] == [False, True]


# --------------------------------------------------------------------------- local authority


class FakeAuthority:
    """Answers for names under local.test; None elsewhere."""

    def __init__(self):
        self.asked = []

    def answer(self, qname, rdtype):
        self.asked.append((qname.to_text(), rdtype))
        if not qname.is_subdomain(dns.name.from_text("local.test")):
            return None
        if qname == dns.name.from_text("mail.local.test") and rdtype == A:
            return Resolution(answer=[dns.rrset.from_text(qname, 3600, "IN", "A", "192.0.2.7")],
                              authoritative=True)
        if qname == dns.name.from_text("out.local.test") and rdtype == A:
            return Resolution(answer=[dns.rrset.from_text(qname, 3600, "IN", "CNAME",
                                                          "a.example.")], authoritative=True)
        return Resolution(rcode=dns.rcode.NXDOMAIN, authoritative=True, authority=[
            dns.rrset.from_text("local.test.", 3600, "IN", "SOA", "ns admin 1 2 3 4 300")])


def test_local_names_are_answered_by_the_authority_and_never_sent_out(clock):
    """Names of a local zone come from the authority; nothing goes to the network."""
    net = FakeNetwork(clock)
    resolver = CachingResolver(clock, authority=FakeAuthority(), upstream=[("10.0.0.1", 53)],
                               network=net)
    found = resolve(resolver, "mail.local.test", A)
    missing = resolve(resolver, "nobody.local.test", A)
    assert addresses(found) == ["192.0.2.7"] and found.authoritative
    assert missing.rcode == dns.rcode.NXDOMAIN and missing.authoritative
    assert net.queries == []
    assert len(resolver.cache) == 0


def test_local_cname_to_an_outside_name_is_followed(clock):
    """A local CNAME pointing outside the local zones is followed through the upstream."""
    net = FakeNetwork(clock)
    net.servers[("10.0.0.1", 53)] = forwarder({("a.example.", A): [
        "a.example. 300 IN A 192.0.2.1"]})
    resolver = CachingResolver(clock, authority=FakeAuthority(), upstream=[("10.0.0.1", 53)],
                               network=net)
    result = resolve(resolver, "out.local.test", A)
    assert [r.rdtype for r in result.answer] == [CNAME, A]
    assert not result.authoritative


# --------------------------------------------------------------------------- iteration


def test_iteration_follows_root_tld_and_authoritative_servers(iterative, network):
    """An MX question walks root → test. → example.test. with non-recursive queries."""
    result = resolve(iterative, "example.test", MX)
    assert result.rcode == dns.rcode.NOERROR
    assert result.answer[0][0].exchange == dns.name.from_text("mail.example.test")
    assert [q.server[0] for q in network.queries] == ["192.0.2.1", "192.0.2.10", "192.0.2.20"]
    assert not any(q.message.flags & dns.flags.RD for q in network.queries)


def test_iteration_uses_ipv6_only_glue(iterative, network):
    """A zone whose only name server has AAAA glue is reached over IPv6."""
    result = resolve(iterative, "mail.six.test", A)
    assert addresses(result) == ["192.0.2.60"]
    assert network.asked("2001:db8::30") == [("mail.six.test.", A)]


def test_ipv4_glue_is_tried_before_ipv6(clock, network, hints):
    """With both families of glue, the IPv4 address is asked first."""
    zone_text = TLD_TEST + "ns.six A 192.0.2.31\n"
    network.servers[("192.0.2.10", 53)] = authoritative("test.", zone_text)
    network.servers[("192.0.2.31", 53)] = authoritative("six.test.", SIX)
    resolver = CachingResolver(clock, root_hints=hints, network=network)
    assert addresses(resolve(resolver, "mail.six.test", A)) == ["192.0.2.60"]
    assert network.asked("192.0.2.31") and not network.asked("2001:db8::30")


def test_unroutable_family_is_skipped(clock, network, hints):
    """When the host has no IPv6 route, IPv6 glue is left aside while IPv4 exists."""
    zone_text = TLD_TEST + "ns.six A 192.0.2.31\n"
    network.servers[("192.0.2.10", 53)] = authoritative("test.", zone_text)
    network.servers[("192.0.2.31", 53)] = lambda query, tcp: None
    network.unroutable = {6}
    resolver = CachingResolver(clock, root_hints=hints, network=network, timeout=1.0)
    result = resolve(resolver, "mail.six.test", A, clock, advance=1.0)
    assert result.rcode == dns.rcode.SERVFAIL
    assert not network.asked("2001:db8::30")


def test_name_server_without_glue_is_looked_up_first(iterative, network):
    """noglue.test's server is named in other.; its address is resolved, then it is asked."""
    result = resolve(iterative, "mx.noglue.test", A)
    assert addresses(result) == ["192.0.2.90"]
    assert ("ns2.hosting.other.", A) in network.asked("192.0.2.40")
    assert network.asked("192.0.2.41") == [("mx.noglue.test.", A)]


def test_cname_into_another_zone_is_followed_from_that_zone(iterative, network):
    """www.example.test → web.hosting.other: the target is asked of hosting.other's server."""
    result = resolve(iterative, "www.example.test", A)
    assert [r.rdtype for r in result.answer] == [CNAME, A]
    assert addresses(result) == ["192.0.2.80"]
    assert network.asked("192.0.2.40") == [("web.hosting.other.", A)]


def test_cname_inside_one_zone_is_taken_from_one_reply(iterative, network):
    """alias.example.test → mail.example.test comes back in one reply from example.test."""
    result = resolve(iterative, "alias.example.test", A)
    assert [r.rdtype for r in result.answer] == [CNAME, A]
    assert network.asked("192.0.2.20") == [("alias.example.test.", A)]


def test_iterative_nxdomain_and_nodata_carry_the_zone_soa(iterative):
    """A missing name is NXDOMAIN and a missing type NODATA, both with example.test's SOA."""
    missing = resolve(iterative, "nothing.example.test", A)
    nodata = resolve(iterative, "mail.example.test", TXT)
    assert missing.rcode == dns.rcode.NXDOMAIN
    assert nodata.rcode == dns.rcode.NOERROR and nodata.answer == []
    for result in (missing, nodata):
        assert result.authority[0].name == dns.name.from_text("example.test")


def test_referrals_are_cached_so_the_root_is_not_asked_again(iterative, network):
    """After one lookup in example.test the next starts at example.test's own server."""
    resolve(iterative, "example.test", MX)
    del network.queries[:]
    resolve(iterative, "mail.example.test", AAAA)
    assert [q.server[0] for q in network.queries] == ["192.0.2.20"]
    del network.queries[:]
    resolve(iterative, "mail.six.test", A)
    assert network.queries[0].server[0] == "192.0.2.10"


def test_out_of_bailiwick_records_do_not_enter_the_cache(iterative, network):
    """
    evil.test's server answers www.evil.test with a CNAME to www.example.test plus a forged
    address for it, a delegation of example.test to itself and glue; none of that is
    believed: the CNAME target is resolved from example.test's real server.
    """

    def poisoning(query, tcp):
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.AA
        reply.answer.append(dns.rrset.from_text("www.evil.test.", 300, "IN", "CNAME",
                                                "www.example.test."))
        reply.answer.append(dns.rrset.from_text("www.example.test.", 86400, "IN", "A",
                                                "203.0.113.66"))
        reply.authority.append(dns.rrset.from_text("example.test.", 86400, "IN", "NS",
                                                   "ns1.example.test."))
        reply.additional.append(dns.rrset.from_text("ns1.example.test.", 86400, "IN", "A",
                                                    "192.0.2.66"))
        return reply

    network.servers[("192.0.2.66", 53)] = poisoning
    result = resolve(iterative, "www.evil.test", A)
    assert [r.rdtype for r in result.answer] == [CNAME, CNAME, A]
    assert addresses(result) == ["192.0.2.80"]
    assert ("www.example.test.", A) in network.asked("192.0.2.20")
    delegation = iterative.cache.get_delegation(dns.name.from_text("example.test"))
    assert delegation.addresses == {dns.name.from_text("ns1.example.test"): ("192.0.2.20",)}
    for name in ("www.evil.test", "www.example.test"):
        cached = iterative.cache.get(dns.name.from_text(name), A)
        assert [r.rdtype for r in cached.answer] == [CNAME]


def test_referral_outside_the_zone_asked_is_not_followed(iterative, network):
    """evil.test's server referring a question of its own to example.test is not believed."""

    def referring(query, tcp):
        reply = dns.message.make_response(query)
        reply.authority.append(dns.rrset.from_text("example.test.", 86400, "IN", "NS",
                                                   "ns.evil.test."))
        return reply

    network.servers[("192.0.2.66", 53)] = referring
    assert resolve(iterative, "sub.evil.test", A).rcode == dns.rcode.SERVFAIL
    assert iterative.cache.get_delegation(dns.name.from_text("example.test")) is None
    assert network.asked("192.0.2.66") == [("sub.evil.test.", A)]


def test_lame_server_naming_its_own_zone_is_asked_once(clock, network, hints):
    """A reply with no answer and only the zone's own NS set is lame, not a referral."""

    def lame(query, tcp):
        reply = dns.message.make_response(query)
        reply.authority.append(dns.rrset.from_text("example.test.", 3600, "IN", "NS",
                                                   "ns1.example.test."))
        return reply

    network.servers[("192.0.2.20", 53)] = lame
    resolver = CachingResolver(clock, root_hints=hints, network=network)
    assert resolve(resolver, "mail.example.test", A).rcode == dns.rcode.SERVFAIL
    assert len(network.asked("192.0.2.20")) == 1
    delegation = resolver.cache.get_delegation(dns.name.from_text("example.test"))
    assert delegation.addresses == {dns.name.from_text("ns1.example.test"): ("192.0.2.20",)}


def test_glue_outside_the_parent_zone_is_ignored(clock, network, hints):
    """A test. referral carrying glue for a name in other. does not use that address."""
    tld = TLD_TEST.replace("noglue           NS  ns2.hosting.other.",
                           "noglue           NS  ns2.hosting.other.\n"
                           "ns2.hosting.other. A 203.0.113.99")
    network.servers[("192.0.2.10", 53)] = authoritative("test.", tld)
    resolver = CachingResolver(clock, root_hints=hints, network=network)
    assert addresses(resolve(resolver, "mx.noglue.test", A)) == ["192.0.2.90"]
    assert not network.asked("203.0.113.99")


def test_upward_referral_is_treated_as_a_lame_server(clock, network, hints):
    """A server that refers back up to the root is not followed; the answer is SERVFAIL."""

    def upward(query, tcp):
        reply = dns.message.make_response(query)
        reply.authority.append(dns.rrset.from_text(".", 86400, "IN", "NS", "root.hint."))
        return reply

    network.servers[("192.0.2.20", 53)] = upward
    resolver = CachingResolver(clock, root_hints=hints, network=network)
    assert resolve(resolver, "mail.example.test", A).rcode == dns.rcode.SERVFAIL
    assert len(network.asked("192.0.2.1")) == 1


def test_unreachable_name_server_loop_ends_in_servfail(iterative, network):
    """loop.test's server is named inside loop.test without glue: SERVFAIL, bounded work."""
    result = resolve(iterative, "www.loop.test", A)
    assert result.rcode == dns.rcode.SERVFAIL
    assert len(network.queries) < MAX_QUERIES


def test_cname_chain_longer_than_the_limit_is_servfail(clock):
    """A chain of more than MAX_CNAME_LINKS CNAMEs is abandoned with SERVFAIL."""
    records = {(f"c{i}.example.", A): [f"c{i}.example. 300 IN CNAME c{i + 1}.example."]
               for i in range(MAX_CNAME_LINKS + 2)}
    net = FakeNetwork(clock)
    net.servers[("10.0.0.1", 53)] = forwarder(records)
    resolver = CachingResolver(clock, upstream=[("10.0.0.1", 53)], network=net)
    assert resolve(resolver, "c0.example", A).rcode == dns.rcode.SERVFAIL
    assert len(net.queries) == MAX_CNAME_LINKS + 1


def test_cname_loop_is_servfail(clock):
    """a → b → a is detected and answered SERVFAIL."""
    net = FakeNetwork(clock)
    net.servers[("10.0.0.1", 53)] = forwarder({
        ("a.example.", A): ["a.example. 300 IN CNAME b.example."],
        ("b.example.", A): ["b.example. 300 IN CNAME a.example."]})
    resolver = CachingResolver(clock, upstream=[("10.0.0.1", 53)], network=net)
    assert resolve(resolver, "a.example", A).rcode == dns.rcode.SERVFAIL


def test_silent_zone_servers_give_servfail_after_the_timeout(clock, network, hints):
    """When example.test's only server is silent, the answer is SERVFAIL after the timeout."""
    network.servers[("192.0.2.20", 53)] = lambda query, tcp: None
    resolver = CachingResolver(clock, root_hints=hints, network=network, timeout=2.0)
    out = fired(resolver.resolve("mail.example.test", A))
    clock.advance(1.9)
    assert out == []
    clock.advance(0.1)
    assert out[0].rcode == dns.rcode.SERVFAIL


def test_total_time_is_bounded(clock, hints):
    """Many silent servers cannot keep one resolution going past its time limit."""
    net = FakeNetwork(clock)
    hints_text = "".join(f".  3600000 NS r{i}.hint.\nr{i}.hint. 3600000 A 192.0.2.{i + 100}\n"
                         for i in range(13))
    path = hints.replace("named.root", "many.root")
    with open(path, "w") as f:
        f.write(hints_text)
    resolver = CachingResolver(clock, root_hints=path, network=net, timeout=5.0)
    out = fired(resolver.resolve("www.example.test", A))
    clock.pump([5.0] * 7)
    assert out and out[0].rcode == dns.rcode.SERVFAIL
    assert len(net.queries) <= 7


# --------------------------------------------------------------------------- cache use


def test_answers_come_from_the_cache_with_decreasing_ttl(iterative, network, clock):
    """A repeated question is answered without queries, with the TTL that is left."""
    first = resolve(iterative, "mail.example.test", A)
    count = len(network.queries)
    clock.advance(100)
    again = resolve(iterative, "mail.example.test", A)
    assert len(network.queries) == count
    assert first.answer[0].ttl == 300 and again.answer[0].ttl == 200


def test_cached_nxdomain_answers_every_type_of_the_name(iterative, network):
    """After NXDOMAIN for a name's A record, its MX is NXDOMAIN too without asking."""
    resolve(iterative, "gone.example.test", A)
    count = len(network.queries)
    result = resolve(iterative, "gone.example.test", MX)
    assert result.rcode == dns.rcode.NXDOMAIN and len(network.queries) == count


def test_servfail_is_cached_briefly(clock, network, hints):
    """A SERVFAIL is remembered for 30 s, then the servers are asked again."""
    network.servers[("192.0.2.20", 53)] = lambda query, tcp: None
    resolver = CachingResolver(clock, root_hints=hints, network=network, timeout=1.0)
    resolve(resolver, "mail.example.test", A, clock, advance=1.0)
    count = len(network.queries)
    assert resolve(resolver, "mail.example.test", A).rcode == dns.rcode.SERVFAIL
    assert len(network.queries) == count
    clock.advance(30)
    network.servers[("192.0.2.20", 53)] = authoritative("example.test.", EXAMPLE)
    assert addresses(resolve(resolver, "mail.example.test", A)) == ["192.0.2.25"]


def test_concurrent_identical_questions_share_one_query(clock):
    """Three simultaneous lookups of one name send one query and all get the answer."""
    net = FakeNetwork(clock)
    net.delay = 0.5
    net.servers[("10.0.0.1", 53)] = forwarder({("a.example.", A): [
        "a.example. 300 IN A 192.0.2.1"]})
    resolver = CachingResolver(clock, upstream=[("10.0.0.1", 53)], network=net)
    outs = [fired(resolver.resolve(name, A)) for name in ("a.example", "A.EXAMPLE.", "a.example")]
    assert all(out == [] for out in outs)
    clock.advance(0.5)
    assert len(net.queries) == 1
    assert all(addresses(out[0]) == ["192.0.2.1"] for out in outs)


# --------------------------------------------------------------------------- classify_reply


def _reply(question="www.example.test.", rdtype=A):
    return dns.message.make_response(dns.message.make_query(question, rdtype))


def test_classify_drops_answer_records_outside_the_zone():
    """Only the answer records inside the asked zone count; others make the reply lame."""
    reply = _reply()
    reply.answer.append(dns.rrset.from_text("www.example.test.", 300, "IN", "A", "192.0.2.1"))
    assert classify_reply(reply, dns.name.from_text("other.test"),
                          dns.name.from_text("www.example.test"), A) is None


def test_classify_referral_keeps_only_glue_of_the_delegation_inside_the_zone():
    """Glue for names not in the NS set, or outside the zone asked, is left out."""
    reply = _reply()
    reply.authority.append(dns.rrset.from_text("example.test.", 3600, "IN", "NS",
                                               "ns1.example.test.", "ns.elsewhere."))
    reply.additional.append(dns.rrset.from_text("ns1.example.test.", 600, "IN", "A", "192.0.2.1"))
    reply.additional.append(dns.rrset.from_text("ns.elsewhere.", 600, "IN", "A", "192.0.2.2"))
    reply.additional.append(dns.rrset.from_text("other.test.", 600, "IN", "A", "192.0.2.3"))
    delegation = classify_reply(reply, dns.name.from_text("test"),
                                dns.name.from_text("www.example.test"), A)
    assert delegation.zone == dns.name.from_text("example.test")
    assert delegation.addresses == {dns.name.from_text("ns1.example.test"): ("192.0.2.1",)}
    assert delegation.ttl == 600


def test_classify_error_rcode_is_unusable():
    """REFUSED from a server means: try another."""
    reply = _reply()
    reply.set_rcode(dns.rcode.REFUSED)
    assert classify_reply(reply, dns.name.root, dns.name.from_text("www.example.test"), A) is None
