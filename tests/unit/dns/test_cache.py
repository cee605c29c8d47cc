"""DNSCache on a Clock: bounds and LRU order, TTLs, negative caching, failures, delegations."""

from __future__ import annotations

import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
from twisted.internet import task

from mailsuite.dns.cache import DNSCache, Delegation
from mailsuite.dns.resolution import Resolution

A, MX, TXT, CNAME = dns.rdatatype.A, dns.rdatatype.MX, dns.rdatatype.TXT, dns.rdatatype.CNAME


def name(text):
    return dns.name.from_text(text)


def rrset(owner, ttl, rdtype, *values):
    return dns.rrset.from_text(owner, ttl, "IN", rdtype, *values)


def positive(owner="a.example.", ttl=300, address="192.0.2.1"):
    return Resolution(answer=[rrset(owner, ttl, "A", address)])


def soa(ttl=3600, minimum=60, owner="example."):
    return rrset(owner, ttl, "SOA", f"ns.{owner} admin.{owner} 1 7200 900 1209600 {minimum}")


def negative(rcode=dns.rcode.NXDOMAIN, **soa_args):
    return Resolution(rcode=rcode, authority=[soa(**soa_args)])


def cache_on(clock, **kwargs):
    return DNSCache(clock, **kwargs)


def test_answer_is_kept_for_its_smallest_ttl():
    """An answer with TTLs 300 and 100 is served for 100 s, then forgotten."""
    clock = task.Clock()
    cache = cache_on(clock)
    resolution = Resolution(answer=[rrset("a.example.", 300, "CNAME", "b.example."),
                                    rrset("b.example.", 100, "A", "192.0.2.1")])
    cache.put(name("a.example"), A, 1, resolution)
    clock.advance(99)
    assert cache.get(name("a.example"), A) is not None
    clock.advance(1)
    assert cache.get(name("a.example"), A) is None


def test_answers_carry_their_remaining_ttl():
    """After 40 s a 300 s record comes out with TTL 260; the stored copy is not altered."""
    clock = task.Clock()
    cache = cache_on(clock)
    original = positive(ttl=300)
    cache.put(name("a.example"), A, 1, original)
    clock.advance(40.7)
    assert cache.get(name("a.example"), A).answer[0].ttl == 260
    assert original.answer[0].ttl == 300


def test_ttl_is_capped_at_one_day():
    """A record claiming a week is kept a day, and says at most a day."""
    clock = task.Clock()
    cache = cache_on(clock)
    cache.put(name("a.example"), A, 1, positive(ttl=7 * 86400))
    assert cache.get(name("a.example"), A).answer[0].ttl == 86400
    clock.advance(86400)
    assert cache.get(name("a.example"), A) is None


def test_keys_are_case_insensitive_and_per_type():
    """A.EXAMPLE finds what a.example stored; MX of the same name does not."""
    cache = cache_on(task.Clock())
    cache.put(name("a.example"), A, 1, positive())
    assert cache.get(name("A.EXAMPLE."), A) is not None
    assert cache.get(name("a.example"), MX) is None


def test_least_recently_used_entry_goes_first():
    """With room for two, touching 'a' before adding 'c' makes 'b' the one evicted."""
    cache = cache_on(task.Clock(), size=2)
    for owner in ("a", "b"):
        cache.put(name(f"{owner}.example"), A, 1, positive(f"{owner}.example."))
    assert cache.get(name("a.example"), A) is not None
    cache.put(name("c.example"), A, 1, positive("c.example."))
    assert len(cache) == 2
    assert cache.get(name("b.example"), A) is None
    assert cache.get(name("a.example"), A) is not None
    assert cache.get(name("c.example"), A) is not None


def test_size_bound_holds_for_many_names():
    """Ten thousand answers in a cache of 100 leave 100 entries, the newest ones."""
    cache = cache_on(task.Clock(), size=100)
    for i in range(10000):
        cache.put(name(f"h{i}.example"), A, 1, positive(f"h{i}.example."))
    assert len(cache) == 100
    assert cache.get(name("h9999.example"), A) is not None
    assert cache.get(name("h9899.example"), A) is None


def test_nxdomain_lasts_for_the_soa_minimum_and_covers_every_type():
    """NXDOMAIN with SOA TTL 3600 / MINIMUM 60 answers A, MX and TXT for 60 s."""
    clock = task.Clock()
    cache = cache_on(clock)
    cache.put(name("gone.example"), A, 1, negative(ttl=3600, minimum=60))
    for rdtype in (A, MX, TXT):
        found = cache.get(name("gone.example"), rdtype)
        assert found.rcode == dns.rcode.NXDOMAIN
        assert found.authority[0].rdtype == dns.rdatatype.SOA
    clock.advance(60)
    assert cache.get(name("gone.example"), MX) is None


def test_negative_ttl_is_the_soa_ttl_when_that_is_smaller():
    """SOA TTL 30 with MINIMUM 600: the negative answer lasts 30 s and its SOA says so."""
    clock = task.Clock()
    cache = cache_on(clock)
    cache.put(name("gone.example"), A, 1, negative(ttl=30, minimum=600))
    assert cache.get(name("gone.example"), A).authority[0].ttl == 30
    clock.advance(30)
    assert cache.get(name("gone.example"), A) is None


def test_negative_soa_ttl_counts_down_from_the_negative_ttl():
    """The SOA of a cached NXDOMAIN carries min(TTL, MINIMUM) minus the time spent."""
    clock = task.Clock()
    cache = cache_on(clock)
    cache.put(name("gone.example"), A, 1, negative(ttl=3600, minimum=300))
    clock.advance(100)
    assert cache.get(name("gone.example"), A).authority[0].ttl == 200


def test_nodata_is_cached_for_its_type_only():
    """NODATA for TXT is answered from the cache; A of that name is not affected."""
    clock = task.Clock()
    cache = cache_on(clock)
    cache.put(name("a.example"), TXT, 1, negative(rcode=dns.rcode.NOERROR, minimum=120))
    found = cache.get(name("a.example"), TXT)
    assert found.rcode == dns.rcode.NOERROR and found.answer == []
    assert cache.get(name("a.example"), A) is None
    clock.advance(120)
    assert cache.get(name("a.example"), TXT) is None


def test_negative_answer_without_soa_is_not_cached():
    """RFC 2308 §5: no SOA, no negative caching."""
    cache = cache_on(task.Clock())
    cache.put(name("gone.example"), A, 1, Resolution(rcode=dns.rcode.NXDOMAIN))
    cache.put(name("a.example"), TXT, 1, Resolution())
    assert len(cache) == 0


def test_negative_ttl_is_capped_at_three_hours():
    """A MINIMUM of a day is cut to three hours."""
    clock = task.Clock()
    cache = cache_on(clock)
    cache.put(name("gone.example"), A, 1, negative(ttl=86400, minimum=86400))
    clock.advance(3 * 3600 - 1)
    assert cache.get(name("gone.example"), A) is not None
    clock.advance(1)
    assert cache.get(name("gone.example"), A) is None


def test_nxdomain_at_the_end_of_a_cname_chain_marks_the_target():
    """alias → gone, gone NXDOMAIN: 'gone' is absent for all types, 'alias' only for A."""
    cache = cache_on(task.Clock())
    resolution = Resolution(rcode=dns.rcode.NXDOMAIN,
                            answer=[rrset("alias.example.", 300, "CNAME", "gone.example.")],
                            authority=[soa()])
    cache.put(name("alias.example"), A, 1, resolution)
    assert cache.get(name("gone.example"), MX).rcode == dns.rcode.NXDOMAIN
    assert cache.get(name("alias.example"), A).answer[0].rdtype == CNAME
    assert cache.get(name("alias.example"), MX) is None


def test_servfail_is_kept_thirty_seconds():
    """A failure is remembered for 30 s (RFC 2308 §7.1), without any records."""
    clock = task.Clock()
    cache = cache_on(clock)
    cache.put(name("down.example"), A, 1, Resolution(rcode=dns.rcode.SERVFAIL))
    assert cache.get(name("down.example"), A).rcode == dns.rcode.SERVFAIL
    clock.advance(30)
    assert cache.get(name("down.example"), A) is None


def test_servfail_caching_can_be_switched_off():
    """failure_ttl=0 keeps no failures."""
    cache = cache_on(task.Clock(), failure_ttl=0)
    cache.put(name("down.example"), A, 1, Resolution(rcode=dns.rcode.SERVFAIL))
    assert cache.get(name("down.example"), A) is None


def test_refused_is_not_cached():
    """Other error rcodes are not kept."""
    cache = cache_on(task.Clock())
    cache.put(name("x.example"), A, 1, Resolution(rcode=dns.rcode.REFUSED))
    assert len(cache) == 0


def test_cname_leaving_the_zone_is_cached_as_an_answer():
    """A CNAME whose target is elsewhere (no SOA) is kept for the CNAME's TTL."""
    clock = task.Clock()
    cache = cache_on(clock)
    cache.put(name("www.example"), A, 1,
              Resolution(answer=[rrset("www.example.", 50, "CNAME", "web.other.")]))
    assert cache.get(name("www.example"), A).answer[0].rdtype == CNAME
    clock.advance(50)
    assert cache.get(name("www.example"), A) is None


def test_expired_additional_records_are_left_off():
    """An additional record with a shorter TTL than the answer disappears when it runs out."""
    clock = task.Clock()
    cache = cache_on(clock)
    cache.put(name("example"), MX, 1, Resolution(
        answer=[rrset("example.", 300, "MX", "10 mail.example.")],
        additional=[rrset("mail.example.", 20, "A", "192.0.2.1")]))
    assert len(cache.get(name("example"), MX).additional) == 1
    clock.advance(20)
    found = cache.get(name("example"), MX)
    assert found.answer and found.additional == []


def test_local_flag_is_not_cached():
    """What comes out of the cache never claims to be authoritative."""
    cache = cache_on(task.Clock())
    cache.put(name("a.example"), A, 1, Resolution(answer=positive().answer, authoritative=True))
    assert cache.get(name("a.example"), A).authoritative is False


def test_delegations_expire_with_their_ttl_and_share_the_bound():
    """A delegation is found by its zone until its TTL ends, and counts against the size."""
    clock = task.Clock()
    cache = cache_on(clock, size=1)
    delegation = Delegation(name("example"), (name("ns.example"),),
                            {name("ns.example"): ("192.0.2.53",)}, ttl=600)
    cache.put_delegation(delegation)
    assert cache.get_delegation(name("example")) == delegation
    assert cache.get_delegation(name("sub.example")) is None
    clock.advance(600)
    assert cache.get_delegation(name("example")) is None
    cache.put_delegation(delegation)
    cache.put(name("a.example"), A, 1, positive())
    assert cache.get_delegation(name("example")) is None and len(cache) == 1
