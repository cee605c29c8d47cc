"""
The resolver's cache: answers, negative answers, failures and delegations, bounded in size.

Every entry counts against ``size``; when the cache is full the least recently used entry goes
first.  Time comes from an injected clock (IReactorTime.seconds), and an answer taken from the
cache carries the TTLs it has left.

- Answers are kept for the smallest TTL of their answer section, at most ``max_ttl``.
- NXDOMAIN and NODATA are kept (RFC 2308 §5) for min(SOA TTL, SOA MINIMUM) of the SOA in the
  authority section, at most ``max_negative_ttl``; without an SOA they are not kept.  An
  NXDOMAIN also marks its name (the end of the CNAME chain) as absent for every type
  (RFC 2308 §5: "the name does not exist").
- SERVFAIL is kept for ``failure_ttl`` seconds (RFC 2308 §7.1 allows up to five minutes): a
  domain whose servers are down is not asked again by every SPF, DNSBL or MX lookup that comes
  in the meantime, and the outbound queue retries far less often than that anyway.  0 turns
  this off.
- Delegations (the NS names of a zone and the glue addresses the parent gave) are kept for the
  smallest TTL of the NS set and its glue, so resolution starts at the closest known zone
  instead of the root.  They are never handed out as answers (RFC 2181 §5.4.1).
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass

import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from mailsuite.dns.resolution import Resolution

MAX_TTL = 86400
MAX_NEGATIVE_TTL = 3 * 3600
FAILURE_TTL = 30


@dataclass(frozen=True)
class Delegation:
    """A zone's name servers and whatever addresses are known for them (IPv4 first)."""

    zone: dns.name.Name
    nameservers: tuple[dns.name.Name, ...]
    addresses: dict[dns.name.Name, tuple[str, ...]]
    ttl: int = 0


@dataclass
class _Entry:
    value: object
    stored: float
    ttl: int


def answer_ttl(resolution: Resolution) -> int:
    """The smallest TTL in ``resolution``'s answer section (0 when it is empty)."""
    return min((rrset.ttl for rrset in resolution.answer), default=0)


def negative_ttl(resolution: Resolution) -> int | None:
    """RFC 2308 §5: min(SOA TTL, SOA MINIMUM) of the authority SOA; None without one."""
    for rrset in resolution.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return min(rrset.ttl, rrset[0].minimum)
    return None


def chain_end(name: dns.name.Name, answer: list[dns.rrset.RRset]) -> dns.name.Name:
    """The name that ``name``'s CNAME chain in ``answer`` ends at (``name`` itself if none)."""
    seen = {name}
    while True:
        cname = next((r for r in answer if r.name == name and r.rdtype == dns.rdatatype.CNAME
                      and len(r)), None)
        if cname is None or cname[0].target in seen:
            return name
        name = cname[0].target
        seen.add(name)


class DNSCache:
    """See the module docstring.  ``clock`` provides ``seconds()``."""

    def __init__(self, clock, *, size: int = 10000, max_ttl: int = MAX_TTL,
                 max_negative_ttl: int = MAX_NEGATIVE_TTL, failure_ttl: int = FAILURE_TTL):
        if size < 1:
            raise ValueError(f"cache size must be at least 1, got {size}")
        self.clock = clock
        self.size = size
        self.max_ttl = max_ttl
        self.max_negative_ttl = max_negative_ttl
        self.failure_ttl = failure_ttl
        self._entries: collections.OrderedDict[tuple, _Entry] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    # ----------------------------------------------------------------- answers

    def get(self, name: dns.name.Name, rdtype: int,
            rdclass: int = dns.rdataclass.IN) -> Resolution | None:
        """The cached answer to (name, rdtype, rdclass) with its remaining TTLs, or None."""
        found = self._lookup(("answer", name, rdtype, rdclass))
        if found is None:
            found = self._lookup(("nxdomain", name, rdclass))
        if found is None:
            return None
        entry, elapsed = found
        return _aged(entry.value, entry.ttl, self.max_ttl, elapsed)

    def put(self, name: dns.name.Name, rdtype: int, rdclass: int,
            resolution: Resolution) -> None:
        """Keep ``resolution`` as the answer to (name, rdtype, rdclass) if policy allows."""
        rcode = resolution.rcode
        negative = negative_ttl(resolution)
        if rcode == dns.rcode.SERVFAIL:
            ttl = self.failure_ttl
            resolution = Resolution(rcode=rcode)
        elif rcode == dns.rcode.NOERROR and resolution.answer and (
                negative is None or _has_data(name, rdtype, resolution)):
            # Data, or a CNAME chain that leaves this server's zone (no SOA: not NODATA).
            ttl = min(answer_ttl(resolution), self.max_ttl)
        elif rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            if negative is None:
                return
            ttl = min(negative, self.max_negative_ttl)
            if resolution.answer:
                ttl = min(ttl, answer_ttl(resolution))
        else:
            return
        if ttl <= 0:
            return
        resolution = dataclasses.replace(resolution, authoritative=False)
        self._store(("answer", name, rdtype, rdclass), resolution, ttl)
        if rcode == dns.rcode.NXDOMAIN:
            absent = chain_end(name, resolution.answer)
            soa = [r for r in resolution.authority if r.rdtype == dns.rdatatype.SOA]
            self._store(("nxdomain", absent, rdclass),
                        Resolution(rcode=dns.rcode.NXDOMAIN, authority=soa), ttl)

    # ----------------------------------------------------------------- delegations

    def get_delegation(self, zone: dns.name.Name,
                       rdclass: int = dns.rdataclass.IN) -> Delegation | None:
        """The cached delegation of exactly ``zone``, or None."""
        found = self._lookup(("zone", zone, rdclass))
        return None if found is None else found[0].value

    def put_delegation(self, delegation: Delegation, rdclass: int = dns.rdataclass.IN) -> None:
        """Keep ``delegation`` for its ``ttl`` (at most ``max_ttl``)."""
        ttl = min(delegation.ttl, self.max_ttl)
        if ttl > 0:
            self._store(("zone", delegation.zone, rdclass), delegation, ttl)

    # ----------------------------------------------------------------- storage

    def _lookup(self, key: tuple) -> tuple[_Entry, float] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        elapsed = self.clock.seconds() - entry.stored
        if elapsed >= entry.ttl:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry, elapsed

    def _store(self, key: tuple, value, ttl: int) -> None:
        self._entries[key] = _Entry(value, self.clock.seconds(), ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


def _has_data(name: dns.name.Name, rdtype: int, resolution: Resolution) -> bool:
    """True when the answer holds data of the type asked (at the end of any CNAME chain)."""
    if rdtype in (dns.rdatatype.CNAME, dns.rdatatype.ANY):
        return any(r.name == name for r in resolution.answer)
    end = chain_end(name, resolution.answer)
    return any(r.name == end and r.rdtype == rdtype for r in resolution.answer)


def _aged(resolution: Resolution, entry_ttl: int, max_ttl: int, elapsed: float) -> Resolution:
    """
    A copy of ``resolution`` whose records carry what is left of their TTLs: capped at
    ``max_ttl``, and for the SOA of a negative answer at the entry's own TTL (RFC 2308 §3).
    Records that ran out before the entry (only possible in the authority and additional
    sections: the entry lives no longer than its answer and SOA) are left off.
    """
    spent = int(elapsed)

    def age(rrsets):
        out = []
        for rrset in rrsets:
            cap = entry_ttl if rrset.rdtype == dns.rdatatype.SOA else max_ttl
            left = min(rrset.ttl, cap) - spent
            if left > 0:
                copy = rrset.copy()
                copy.ttl = left
                out.append(copy)
        return out

    return dataclasses.replace(resolution, answer=age(resolution.answer),
                               authority=age(resolution.authority),
                               additional=age(resolution.additional))
