"""Authoritative answers (mailsuite.dns.authority.Authority)."""

import dns.rcode
import dns.rdatatype
import pytest

from mailsuite.dns.authority import MAX_CNAME_CHAIN, Authority
from mailsuite.dns.zones import SOA_MINIMUM, build_zones

from .dns_fakes import HOSTNAME, authority, name, texts, write

A, AAAA, MX, NS, SOA, SRV, TXT, CNAME, DS, ANY = (
    dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.MX, dns.rdatatype.NS,
    dns.rdatatype.SOA, dns.rdatatype.SRV, dns.rdatatype.TXT, dns.rdatatype.CNAME,
    dns.rdatatype.DS, dns.rdatatype.ANY)

APEX_NS = f"example.test. 3600 IN NS {HOSTNAME}."
HOST_A = f"{HOSTNAME}. 3600 IN A 192.0.2.10"
HOST_AAAA = f"{HOSTNAME}. 3600 IN AAAA 2001:db8::10"


@pytest.fixture
def auth(tmp_path):
    return authority(tmp_path)


def ask(auth, qname, rdtype):
    return auth.answer(name(qname), rdtype)


def test_name_outside_every_zone_is_none(auth):
    """A name in no zone here gets None (the server then recurses or refuses)."""
    assert ask(auth, "example.org", A) is None
    assert ask(auth, "test", SOA) is None


@pytest.mark.parametrize("qname, rdtype, expected", [
    ("example.test", MX, [f"example.test. 3600 IN MX 10 {HOSTNAME}."]),
    ("example.test", NS, [APEX_NS]),
    ("example.test", TXT, ['example.test. 3600 IN TXT "v=spf1 mx -all"']),
    (HOSTNAME, A, [HOST_A]),
    (HOSTNAME, AAAA, [HOST_AAAA]),
    ("_dmarc.example.test", TXT, [
        '_dmarc.example.test. 3600 IN TXT "v=DMARC1; p=quarantine; '
        'rua=mailto:postmaster@example.test"']),
    ("_imap._tcp.example.test", SRV,
     [f"_imap._tcp.example.test. 3600 IN SRV 0 1 10143 {HOSTNAME}."]),
    ("_pop3._tcp.example.test", SRV, ["_pop3._tcp.example.test. 3600 IN SRV 0 0 0 ."]),
    ("autodiscover.example.test", CNAME, [f"autodiscover.example.test. 3600 IN CNAME {HOSTNAME}."]),
])
def test_positive_answers_are_authoritative(auth, qname, rdtype, expected):
    """Each generated record kind is answered with AA and NOERROR."""
    result = ask(auth, qname, rdtype)
    assert result.rcode == dns.rcode.NOERROR and result.authoritative
    assert texts(result.answer) == expected


def test_soa_answer(auth):
    """The SOA itself is answered with its full TTL."""
    result = ask(auth, "example.test", SOA)
    [soa] = result.answer
    assert soa.ttl == 3600 and soa[0].mname == name(HOSTNAME)


def test_positive_answer_has_zone_ns_in_authority(auth):
    """A positive answer lists the zone's NS in the authority section."""
    assert texts(ask(auth, HOSTNAME, A).authority) == [APEX_NS]


def test_ns_answer_does_not_repeat_itself_in_authority(auth):
    """The NS RRset asked for is not repeated in the authority section."""
    assert ask(auth, "example.test", NS).authority == []


@pytest.mark.parametrize("qname, rdtype", [
    ("example.test", MX), ("_submission._tcp.example.test", SRV), ("example.test", NS)])
def test_targets_get_addresses_in_additional(auth, qname, rdtype):
    """MX, SRV and NS targets inside our zones get their A and AAAA as additional data."""
    assert texts(ask(auth, qname, rdtype).additional) == [HOST_A, HOST_AAAA]


def test_nxdomain_has_soa_with_negative_ttl(auth):
    """RFC 2308: NXDOMAIN, AA, and the SOA with TTL min(SOA TTL, minimum)."""
    result = ask(auth, "nobody.example.test", A)
    assert result.rcode == dns.rcode.NXDOMAIN and result.authoritative
    assert result.answer == []
    [soa] = result.authority
    assert soa.rdtype == SOA and soa.ttl == min(3600, SOA_MINIMUM)


def test_nodata_has_soa(auth):
    """A name with other types only: NOERROR, empty answer, SOA in authority, AA."""
    result = ask(auth, "_dmarc.example.test", A)
    assert result.rcode == dns.rcode.NOERROR and result.authoritative
    assert result.answer == [] and [r.rdtype for r in result.authority] == [SOA]


def test_empty_non_terminal_is_nodata(auth):
    """A name with only descendants (e.g. _tcp.example.test) exists: NODATA, not NXDOMAIN."""
    result = ask(auth, "_tcp.example.test", A)
    assert result.rcode == dns.rcode.NOERROR and result.answer == []
    assert [r.rdtype for r in result.authority] == [SOA]
    deep = ask(auth, "b.c.extra.test", TXT)
    assert deep.rcode == dns.rcode.NOERROR and deep.answer == []


def test_cname_is_followed_inside_the_zone(auth):
    """An A question at a CNAME gets the CNAME and the target's A."""
    result = ask(auth, "autoconfig.example.test", A)
    assert result.rcode == dns.rcode.NOERROR and result.authoritative
    assert [r.to_text() for r in result.answer] == [
        f"autoconfig.example.test. 3600 IN CNAME {HOSTNAME}.", HOST_A]


def test_cname_is_followed_into_another_local_zone(auth):
    """A CNAME in one of our zones pointing into another of our zones is followed."""
    result = ask(auth, "out.extra.test", A)
    assert [r.to_text() for r in result.answer] == [
        f"out.extra.test. 300 IN CNAME {HOSTNAME}.", HOST_A]


def test_cname_to_missing_name_gives_nxdomain(auth):
    """RFC 6604: the rcode is that of the last name of the chain, with its zone's SOA."""
    result = ask(auth, "gone.extra.test", A)
    assert result.rcode == dns.rcode.NXDOMAIN
    assert texts(result.answer) == ["gone.extra.test. 300 IN CNAME missing.extra.test."]
    assert [r.rdtype for r in result.authority] == [SOA]


def test_cname_loop_stops(auth):
    """A CNAME loop ends after each name was seen once."""
    result = ask(auth, "loop1.extra.test", A)
    assert result.rcode == dns.rcode.NOERROR and len(result.answer) == 2


def test_long_cname_chain_is_cut(tmp_path):
    """A chain longer than MAX_CNAME_CHAIN is answered up to that many links."""
    lines = [f"c{i} CNAME c{i + 1}" for i in range(MAX_CNAME_CHAIN + 5)]
    path = write(tmp_path, "chain.zone",
                 "$ORIGIN example.test.\n$TTL 60\n" + "\n".join(lines) + "\n")
    auth = Authority(build_zones(domains=["example.test"], hostname=HOSTNAME, zone_files=[path]))
    result = auth.answer(name("c0.example.test"), A)
    assert len(result.answer) == MAX_CNAME_CHAIN + 1


def test_cname_to_outside_name_stops_there(tmp_path):
    """A CNAME to a name outside our zones is answered alone, for the client to follow."""
    path = write(tmp_path, "o.zone", "$ORIGIN example.test.\next 60 CNAME www.example.org.\n")
    auth = Authority(build_zones(domains=["example.test"], hostname=HOSTNAME, zone_files=[path]))
    result = auth.answer(name("ext.example.test"), A)
    assert result.rcode == dns.rcode.NOERROR and result.authoritative
    assert texts(result.answer) == ["ext.example.test. 60 IN CNAME www.example.org."]


def test_delegation_gives_referral(auth):
    """A name below NS records inside a zone gets a referral: no AA, NS and glue."""
    result = ask(auth, "host.sub.extra.test", A)
    assert not result.authoritative and result.rcode == dns.rcode.NOERROR
    assert result.answer == []
    assert texts(result.authority) == ["sub.extra.test. 300 IN NS ns.sub.extra.test."]
    assert texts(result.additional) == ["ns.sub.extra.test. 300 IN A 192.0.2.50"]


def test_ds_at_delegation_is_answered_by_parent(auth):
    """DS at the delegation point is parent-side data: an authoritative NODATA here."""
    result = ask(auth, "sub.extra.test", DS)
    assert result.authoritative and result.answer == []
    assert [r.rdtype for r in result.authority] == [SOA]


def test_wildcard_synthesises_the_asked_name(auth):
    """RFC 4592: *.wild matches x.wild; the answer is owned by the asked name."""
    result = ask(auth, "x.wild.extra.test", A)
    assert texts(result.answer) == ["x.wild.extra.test. 300 IN A 192.0.2.9"]
    nodata = ask(auth, "x.wild.extra.test", MX)
    assert nodata.rcode == dns.rcode.NOERROR and nodata.answer == []


def test_wildcard_does_not_cover_other_branches(auth):
    """A name not under the wildcard's parent stays NXDOMAIN."""
    assert ask(auth, "x.other.extra.test", A).rcode == dns.rcode.NXDOMAIN


def test_any_returns_every_rrset(auth):
    """ANY at the apex returns all RRsets there (documented choice over RFC 8482)."""
    result = ask(auth, "example.test", ANY)
    assert sorted(r.rdtype for r in result.answer) == sorted([NS, MX, TXT, SOA])


def test_longest_match_zone_is_chosen(tmp_path):
    """With zones for example.test and lab.example.test, names below lab use the latter."""
    path = write(tmp_path, "lab.zone", "$ORIGIN lab.example.test.\n$TTL 60\n"
                 "@ SOA ns hm 1 2 3 4 5\n@ NS ns\nns A 192.0.2.60\n")
    auth = Authority(build_zones(domains=["example.test"], hostname=HOSTNAME, zone_files=[path]))
    assert auth.zone_origin(name("x.lab.example.test")) == name("lab.example.test")
    result = auth.answer(name("x.lab.example.test"), A)
    assert result.rcode == dns.rcode.NXDOMAIN
    assert result.authority[0].name == name("lab.example.test")


def test_names_are_case_insensitive(auth):
    """Upper-case questions find the same data."""
    assert texts(ask(auth, "MAIL.Example.TEST", A).answer) == [HOST_A]


def test_replace_swaps_zones(auth):
    """After replace(), only the new zones are served and the generation grows."""
    before = auth.generation
    auth.replace(build_zones(domains=["other.test"], hostname=HOSTNAME))
    assert auth.generation == before + 1
    assert ask(auth, "example.test", MX) is None
    assert ask(auth, "other.test", MX).authoritative
