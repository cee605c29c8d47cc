"""
Authoritative answers from the zones this server holds (RFC 1034 §4.3.2, without the
recursive part).

For a question inside one of the zones (the zone with the longest matching origin):

- data at the name: the RRset, with AA, the zone's NS in the authority section and the
  addresses of MX, NS and SRV targets that lie in our zones in the additional section;
- a CNAME at the name: the CNAME, followed while its target stays in our zones (RFC 1034
  §3.6.2, at most ``MAX_CNAME_CHAIN`` links), the rcode being that of the last name (RFC 6604);
- a wildcard covering the name (RFC 4592): its data, owned by the asked name;
- no data of that type, or an empty non-terminal: NODATA, and for no name at all NXDOMAIN,
  both with the zone's SOA in the authority section with TTL min(SOA TTL, SOA minimum)
  (RFC 2308 §3) and AA;
- a name at or below a delegation (NS records below the origin): a referral, not
  authoritative: the delegation's NS in the authority section and glue addresses.

ANY questions get every RRset at the name.  RFC 8482 allows a minimal answer instead; the
full one is kept because the data here is small and administrators use ``dig ANY`` to see it,
while the size a UDP answer can reach is bounded by truncation in the server, so answers to
ANY cannot amplify beyond any other large answer.

RRsets handed out are shared between answers: callers must not change them.
"""

from __future__ import annotations

from collections.abc import Iterable

import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

from mailsuite.dns.resolution import Resolution

MAX_CNAME_CHAIN = 8

_SOA = dns.rdatatype.SOA
_NS = dns.rdatatype.NS
_CNAME = dns.rdatatype.CNAME
_DS = dns.rdatatype.DS
_ANY = dns.rdatatype.ANY
_ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)
# Types whose targets get their addresses in the additional section (RFC 1035 §3.3.9,
# §3.3.11; RFC 2782).
_TARGETED = {dns.rdatatype.MX: "exchange", dns.rdatatype.NS: "target",
             dns.rdatatype.SRV: "target"}
_WILDCARD = b"*"


def _folded(name: dns.name.Name) -> tuple[bytes, ...]:
    """The labels of ``name`` in lower case: DNS names compare case-insensitively."""
    return tuple(label.lower() for label in name.labels)


class _ZoneData:
    """One zone prepared for lookups: RRsets by name and type, and the names that exist."""

    def __init__(self, zone: dns.zone.Zone):
        origin = zone.origin
        self.origin = origin
        self.rrsets: dict[dns.name.Name, dict[int, dns.rrset.RRset]] = {}
        for name, node in zone.nodes.items():
            owner = name if name.is_absolute() else name.derelativize(origin)
            if not owner.is_subdomain(origin):
                continue  # never served: RFC 1034 §4.3.2 answers only from inside the zone
            by_type = self.rrsets.setdefault(owner, {})
            for rdataset in node:
                if rdataset.rdclass != dns.rdataclass.IN or not len(rdataset):
                    continue
                rrset = dns.rrset.RRset(owner, rdataset.rdclass, rdataset.rdtype)
                rrset.update(rdataset)
                rrset.ttl = rdataset.ttl
                by_type[rdataset.rdtype] = rrset
        # Every name that exists, including empty non-terminals (RFC 8020: a name with
        # descendants exists even when it owns no data).
        self.names: set[dns.name.Name] = set()
        for owner in self.rrsets:
            name = owner
            while name not in self.names and name != origin:
                self.names.add(name)
                name = name.parent()
        self.names.add(origin)
        self.cuts = {name for name, types in self.rrsets.items()
                     if name != origin and _NS in types}
        apex = self.rrsets.get(origin, {})
        self.ns = apex.get(_NS)
        self.negative_soa = None
        soa = apex.get(_SOA)
        if soa is not None:
            negative = dns.rrset.RRset(origin, soa.rdclass, _SOA)
            negative.update(soa)
            negative.ttl = min(soa.ttl, soa[0].minimum)  # RFC 2308 §3
            self.negative_soa = negative

    def cut_above(self, name: dns.name.Name) -> dns.name.Name | None:
        """The delegation point closest to the origin at or above ``name``, if any."""
        if not self.cuts:
            return None
        found = None
        while name != self.origin:
            if name in self.cuts:
                found = name
            name = name.parent()
        return found


class Authority:
    """
    Answers questions about the zones given (dnspython Zones with absolute or relative
    names).  ``replace(zones)`` swaps the data at once, e.g. on reload.
    """

    def __init__(self, zones: Iterable[dns.zone.Zone] = ()):
        self._zones: dict[dns.name.Name, _ZoneData] = {}
        #: Grows by one at each replace(), so users may keep derived data until it changes.
        self.generation = 0
        self.replace(zones)

    def replace(self, zones: Iterable[dns.zone.Zone]) -> None:
        """Serve ``zones`` from now on instead of the current ones."""
        prepared = {}
        for zone in zones:
            data = _ZoneData(zone)
            prepared[_folded(data.origin)] = data
        self._zones = prepared
        self.generation += 1

    @property
    def origins(self) -> list[dns.name.Name]:
        return sorted(data.origin for data in self._zones.values())

    def zone_origin(self, name: dns.name.Name) -> dns.name.Name | None:
        """The origin of the zone holding ``name`` (longest match), or None."""
        data = self._zone_for(name)
        return data.origin if data is not None else None

    def _zone_for(self, name: dns.name.Name) -> _ZoneData | None:
        # Label tuples rather than Name.parent(): this runs for every question the server
        # and the resolver see, and building Names is the costly part.
        zones = self._zones
        labels = _folded(name)
        for start in range(len(labels)):
            data = zones.get(labels[start:])
            if data is not None:
                return data
        return None

    def answer(self, qname: dns.name.Name, rdtype: int) -> Resolution | None:
        """
        The authoritative answer for ``qname``/``rdtype`` (class IN), or None when
        ``qname`` is in none of the zones here.
        """
        data = self._zone_for(qname)
        if data is None:
            return None
        result = Resolution(authoritative=True)
        seen = {qname}
        name = qname
        for step in range(MAX_CNAME_CHAIN + 1):
            cut = data.cut_above(name)
            # RFC 4035 §3.1.4.1: DS at a delegation point is the parent's data.
            if cut is not None and not (cut == name and rdtype == _DS):
                if step == 0:
                    return self._referral(data, cut)
                break  # a CNAME into a delegation: the client follows it from here
            target = self._step(data, name, rdtype, result)
            if target is None or target in seen:
                break
            seen.add(target)
            data = self._zone_for(target)
            if data is None:
                break
            name = target
        self._add_additional(result)
        return result

    def _step(self, data: _ZoneData, name: dns.name.Name, rdtype: int,
              result: Resolution) -> dns.name.Name | None:
        """Answer ``name`` into ``result``; the CNAME target to follow, if any."""
        by_type = data.rrsets.get(name)
        if by_type is None and name not in data.names:
            by_type = self._wildcard(data, name)
            if by_type is None:
                result.rcode = dns.rcode.NXDOMAIN
                self._negative(data, result)
                return None
        if not by_type:
            result.rcode = dns.rcode.NOERROR
            self._negative(data, result)
            return None
        result.rcode = dns.rcode.NOERROR
        if rdtype == _ANY:
            result.answer.extend(by_type.values())
        elif rdtype in by_type:
            result.answer.append(by_type[rdtype])
        elif _CNAME in by_type:
            cname = by_type[_CNAME]
            result.answer.append(cname)
            return cname[0].target
        else:
            self._negative(data, result)
            return None
        if data.ns is not None and not any(r is data.ns for r in result.answer):
            result.authority = [data.ns]
        else:
            result.authority = []
        return None

    @staticmethod
    def _negative(data: _ZoneData, result: Resolution) -> None:
        result.authority = [data.negative_soa] if data.negative_soa is not None else []

    @staticmethod
    def _wildcard(data: _ZoneData, name: dns.name.Name) -> dict | None:
        """RFC 4592 §3.3.1: the data of ``*.<closest encloser>`` renamed to ``name``."""
        encloser = name.parent()
        while encloser not in data.names:
            encloser = encloser.parent()
        source = data.rrsets.get(dns.name.Name((_WILDCARD,) + encloser.labels))
        if source is None:
            return None
        synthesized = {}
        for rdtype, rrset in source.items():
            copy = dns.rrset.RRset(name, rrset.rdclass, rdtype)
            copy.update(rrset)
            copy.ttl = rrset.ttl
            synthesized[rdtype] = copy
        return synthesized

    def _referral(self, data: _ZoneData, cut: dns.name.Name) -> Resolution:
        # RFC 1034 §4.3.2 step 3b: the delegation's NS and glue, without AA.
        ns = data.rrsets[cut][_NS]
        result = Resolution(authoritative=False, authority=[ns])
        for rdata in ns:
            result.additional.extend(self._addresses(rdata.target, glue=True))
        return result

    def _add_additional(self, result: Resolution) -> None:
        # RFC 1035 §3.3.9 / RFC 2782: addresses of the named hosts save the client a lookup.
        listed = {(r.name, r.rdtype) for r in result.answer}
        for rrset in (*result.answer, *result.authority):
            field = _TARGETED.get(rrset.rdtype)
            if field is None:
                continue
            for rdata in rrset:
                target = getattr(rdata, field)
                for address in self._addresses(target, glue=False):
                    key = (address.name, address.rdtype)
                    if key not in listed:
                        listed.add(key)
                        result.additional.append(address)

    def _addresses(self, target: dns.name.Name, *, glue: bool) -> list[dns.rrset.RRset]:
        if target == dns.name.root:
            return []  # SRV "." = service not offered
        data = self._zone_for(target)
        if data is None or (not glue and data.cut_above(target) is not None):
            return []
        by_type = data.rrsets.get(target, {})
        return [by_type[t] for t in _ADDRESS_TYPES if t in by_type]
