"""
The caching resolver: answers for names outside the local zones, by forwarding or iteration.

``CachingResolver.resolve(name, rdtype)`` fires with a ``Resolution`` and never fails for a
DNS outcome: NXDOMAIN, NODATA and SERVFAIL (every server failed or timed out, or the work
limits were reached) come back as the Resolution's rcode.

Order of consultation for each name of a CNAME chain: the local authority (its answers are
neither sent out nor cached), then the cache, then the network:

- with ``upstream`` forwarders: a recursive query to each in turn, the next one after a
  timeout, a failure to reach it, SERVFAIL or REFUSED;
- without: iteration from the root hints (RFC 1034 §5.3.3), starting at the closest zone whose
  delegation is cached.  Each reply is checked against the zone of the server that sent it
  (the bailiwick): records outside that zone are dropped, referrals must point below it, and
  glue is taken only for the delegation's own name servers inside it.  IPv4 and IPv6 glue are
  both used (IPv4 first, families this host cannot route to skipped); name servers without
  glue are looked up themselves.

Each resolution has a budget (queries, nested name-server lookups, CNAME links, referrals and
total time), so no reply or misconfiguration makes it run away.  Concurrent identical
questions share one resolution.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailsuite.config import split_host_port
from mailsuite.dns.cache import Delegation, DNSCache, chain_end, negative_ttl
from mailsuite.dns.resolution import Resolution
from mailsuite.dns.roothints import load_root_hints
from mailsuite.dns.transport import Network, QueryError, make_query

log = Logger()

DNS_PORT = 53

MAX_CNAME_LINKS = 10
MAX_QUERIES = 60
MAX_NAMESERVER_LOOKUPS = 20
MAX_DEPTH = 4
MAX_REFERRALS = 16
# A resolution gives up this many timeouts after it started, whatever is left to try.
TIME_LIMIT_TIMEOUTS = 6
# A server that timed out is tried after the others for this long.
UNRESPONSIVE_SECONDS = 60.0
_UNRESPONSIVE_MEMORY = 1024

_ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)
# A representative address of each family, for the network's reachability check.
_FAMILY_PROBE = {dns.rdatatype.A: "192.0.2.1", dns.rdatatype.AAAA: "2001:db8::1"}


class _LimitReached(Exception):
    """The resolution's budget ran out; its result is SERVFAIL and is not cached."""


@dataclass
class _Budget:
    deadline: float
    queries: int = 0
    lookups: int = 0

    def spend_query(self, now: float) -> None:
        self.queries += 1
        if self.queries > MAX_QUERIES:
            raise _LimitReached(f"more than {MAX_QUERIES} queries")
        if now >= self.deadline:
            raise _LimitReached("out of time")

    def spend_lookup(self) -> bool:
        self.lookups += 1
        return self.lookups <= MAX_NAMESERVER_LOOKUPS


def _servfail() -> Resolution:
    return Resolution(rcode=dns.rcode.SERVFAIL)


def _as_name(name) -> dns.name.Name:
    if isinstance(name, dns.name.Name):
        return name if name.is_absolute() else name.derelativize(dns.name.root)
    return dns.name.from_text(name)


def _server(entry) -> tuple[str, int]:
    if isinstance(entry, str):
        entry = split_host_port(entry)
    host, port = entry
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"a DNS forwarder must be an IP address, got {host!r}") from None
    return host, int(port)


def _matching(rrsets, name: dns.name.Name, rdtype: int) -> list[dns.rrset.RRset]:
    return [r for r in rrsets if r.name == name
            and (r.rdtype == rdtype or rdtype == dns.rdatatype.ANY)]


def classify_reply(reply: dns.message.Message, zone: dns.name.Name, qname: dns.name.Name,
                   rdtype: int, rdclass: int = dns.rdataclass.IN
                   ) -> Resolution | Delegation | None:
    """
    What a (non-recursive) reply from a server for ``zone`` says about (qname, rdtype):
    a Resolution (answer, CNAME chain leaving the zone, NXDOMAIN or NODATA), a Delegation to
    a zone below ``zone``, or None when the server is of no use (error rcode, lame, upward
    referral).  Only records inside ``zone`` are looked at.
    """
    rcode = reply.rcode()
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return None

    def inside(rrset) -> bool:
        return rrset.rdclass == rdclass and rrset.name.is_subdomain(zone)

    answer = [r for r in reply.answer if inside(r)]
    chain: list[dns.rrset.RRset] = []
    name, seen = qname, {qname}
    while True:
        found = _matching(answer, name, rdtype)
        if found:
            return Resolution(answer=chain + found)
        cname = _matching(answer, name, dns.rdatatype.CNAME)
        if not cname or not len(cname[0]):
            break
        chain.append(cname[0])
        name = cname[0][0].target
        if name in seen:
            return _servfail()
        seen.add(name)
        if not name.is_subdomain(zone):
            # The target's own servers answer for it (RFC 1034 §5.3.3 step 3).
            return Resolution(answer=chain)

    soa = [r for r in reply.authority if inside(r) and r.rdtype == dns.rdatatype.SOA
           and name.is_subdomain(r.name)]
    if rcode == dns.rcode.NXDOMAIN:
        return Resolution(rcode=dns.rcode.NXDOMAIN, answer=chain, authority=soa)
    if not chain and not soa:
        referral = [r for r in reply.authority if inside(r) and r.rdtype == dns.rdatatype.NS
                    and r.name != zone and name.is_subdomain(r.name)]
        if referral:
            return _delegation(referral[0], reply.additional, zone)
    if soa or reply.flags & dns.flags.AA or chain:
        return Resolution(answer=chain, authority=soa)
    return None


def _delegation(ns: dns.rrset.RRset, additional, zone: dns.name.Name) -> Delegation:
    """The delegation in a referral; glue only for its own name servers inside ``zone``."""
    names = tuple(dict.fromkeys(rdata.target for rdata in ns))
    addresses: dict[dns.name.Name, list[str]] = {}
    ttl = ns.ttl
    for rdtype in _ADDRESS_TYPES:
        for rrset in additional:
            if (rrset.rdtype == rdtype and rrset.rdclass == ns.rdclass and rrset.name in names
                    and rrset.name.is_subdomain(zone)):
                addresses.setdefault(rrset.name, []).extend(rdata.address for rdata in rrset)
                ttl = min(ttl, rrset.ttl)
    return Delegation(ns.name, names, {k: tuple(v) for k, v in addresses.items()}, ttl)


class CachingResolver:
    """
    See the module docstring.  ``authority`` has ``answer(qname, rdtype) -> Resolution |
    None``; ``upstream`` holds (host, port) forwarders (IP addresses); ``root_hints`` is the
    path of a named.root file (None: the built-in list); ``network`` defaults to
    ``Network(reactor)``.
    """

    def __init__(self, reactor, *, authority=None, upstream=(), root_hints=None,
                 cache_size: int = 10000, timeout: float = 5.0, network=None):
        self.reactor = reactor
        self.authority = authority
        self.upstream = tuple(_server(entry) for entry in upstream)
        hints = load_root_hints(root_hints)
        self.root = Delegation(dns.name.root, hints.nameservers, hints.addresses)
        self.cache = DNSCache(reactor, size=cache_size)
        self.timeout = timeout
        self.network = network if network is not None else Network(reactor)
        self._pending: dict[tuple, list[defer.Deferred]] = {}
        self._unresponsive: dict[tuple[str, int], float] = {}

    def resolve(self, name, rdtype, rdclass=dns.rdataclass.IN) -> defer.Deferred:
        """Deferred[Resolution] answering (name, rdtype, rdclass); see the module docstring."""
        qname = _as_name(name)
        rdtype = dns.rdatatype.RdataType.make(rdtype)
        rdclass = dns.rdataclass.RdataClass.make(rdclass)
        key = (qname, rdtype, rdclass)
        waiting = self._pending.get(key)
        if waiting is not None:
            joined = defer.Deferred()
            waiting.append(joined)
            return joined
        self._pending[key] = waiting = []

        def done(result):
            del self._pending[key]
            for joined in waiting:
                if isinstance(result, Failure):
                    joined.errback(result)
                else:
                    joined.callback(result)
            return result

        return defer.Deferred.fromCoroutine(self._resolve(qname, rdtype, rdclass)).addBoth(done)

    async def _resolve(self, qname, rdtype, rdclass) -> Resolution:
        budget = _Budget(self.reactor.seconds() + TIME_LIMIT_TIMEOUTS * self.timeout)
        try:
            return await self._resolve_chain(qname, rdtype, rdclass, budget, 0)
        except _LimitReached as e:
            log.info("giving up on {name} {rdtype}: {reason}", name=qname.to_text(),
                     rdtype=dns.rdatatype.to_text(rdtype), reason=str(e))
        except Exception:
            log.failure("resolving {name} {rdtype} failed", name=qname.to_text(),
                        rdtype=dns.rdatatype.to_text(rdtype))
        return _servfail()

    # ----------------------------------------------------------------- chains and hops

    async def _resolve_chain(self, qname, rdtype, rdclass, budget, depth) -> Resolution:
        """The answer for qname with its CNAME chain followed across zones."""
        answer: list[dns.rrset.RRset] = []
        name, seen = qname, {qname}
        for link in range(MAX_CNAME_LINKS + 1):
            hop = await self._resolve_hop(name, rdtype, rdclass, budget, depth)
            answer += hop.answer
            authoritative = hop.authoritative and link == 0
            if hop.rcode != dns.rcode.NOERROR:
                return Resolution(hop.rcode, answer, hop.authority, hop.additional, authoritative)
            target = _dangling(name, rdtype, hop)
            if target is None:
                return Resolution(hop.rcode, answer, hop.authority, hop.additional, authoritative)
            if target in seen:
                log.info("CNAME loop at {name}", name=target.to_text())
                return _servfail()
            seen.add(target)
            name = target
        log.info("CNAME chain of {name} longer than {limit}", name=qname.to_text(),
                 limit=MAX_CNAME_LINKS)
        return _servfail()

    async def _resolve_hop(self, name, rdtype, rdclass, budget, depth) -> Resolution:
        """One name: from the local authority, the cache or the network (then cached)."""
        if self.authority is not None and rdclass == dns.rdataclass.IN:
            local = self.authority.answer(name, rdtype)
            if local is not None:
                return local
        cached = self.cache.get(name, rdtype, rdclass)
        if cached is not None:
            return cached
        if self.upstream:
            hop = await self._forward(name, rdtype, rdclass, budget)
        else:
            hop = await self._iterate(name, rdtype, rdclass, budget, depth)
        self.cache.put(name, rdtype, rdclass, hop)
        return hop

    # ----------------------------------------------------------------- forwarding

    async def _forward(self, name, rdtype, rdclass, budget) -> Resolution:
        for server in self._ordered(self.upstream):
            reply = await self._ask(server, name, rdtype, rdclass, budget, recursive=True)
            if reply is None:
                continue
            rcode = reply.rcode()
            if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                return Resolution(rcode, list(reply.answer), list(reply.authority),
                                  list(reply.additional))
            log.info("forwarder {server} answered {rcode} for {name}; trying the next",
                     server=_text(server), rcode=dns.rcode.to_text(rcode), name=name.to_text())
        return _servfail()

    # ----------------------------------------------------------------- iteration

    async def _iterate(self, name, rdtype, rdclass, budget, depth) -> Resolution:
        delegation = self._closest_delegation(name, rdclass)
        for _ in range(MAX_REFERRALS):
            outcome = await self._ask_zone(delegation, name, rdtype, rdclass, budget, depth)
            if outcome is None:
                log.info("no server of {zone} answered for {name}",
                         zone=delegation.zone.to_text(), name=name.to_text())
                return _servfail()
            if isinstance(outcome, Resolution):
                return outcome
            self.cache.put_delegation(outcome, rdclass)
            delegation = outcome
        raise _LimitReached(f"more than {MAX_REFERRALS} referrals")

    def _closest_delegation(self, name: dns.name.Name, rdclass: int) -> Delegation:
        zone = name
        while zone != dns.name.root:
            cached = self.cache.get_delegation(zone, rdclass)
            if cached is not None:
                return cached
            zone = zone.parent()
        return self.root

    async def _ask_zone(self, delegation: Delegation, name, rdtype, rdclass, budget, depth):
        """The first useful outcome from any server of ``delegation``; None if none gave one."""
        asked: set[str] = set()
        glued = [address for ns in delegation.nameservers
                 for address in delegation.addresses.get(ns, ())]
        for address in self._preferred(glued):
            asked.add(address)
            outcome = await self._ask_server(address, delegation.zone, name, rdtype, rdclass,
                                             budget)
            if outcome is not None:
                return outcome
        limited = False
        for ns in delegation.nameservers:
            if delegation.addresses.get(ns):
                continue
            for rdtype_of_address in self._families():
                if depth + 1 > MAX_DEPTH or not budget.spend_lookup():
                    limited = True
                    break
                try:
                    found = await self._resolve_chain(ns, rdtype_of_address, rdclass, budget,
                                                      depth + 1)
                except _LimitReached:
                    limited = True
                    continue
                addresses = [rdata.address for rrset in found.answer
                             if rrset.rdtype == rdtype_of_address for rdata in rrset]
                for address in self._preferred([a for a in addresses if a not in asked]):
                    asked.add(address)
                    outcome = await self._ask_server(address, delegation.zone, name, rdtype,
                                                     rdclass, budget)
                    if outcome is not None:
                        return outcome
        if limited:
            raise _LimitReached("name servers too deeply nested or too many to look up")
        return None

    async def _ask_server(self, address: str, zone, name, rdtype, rdclass, budget):
        reply = await self._ask((address, DNS_PORT), name, rdtype, rdclass, budget,
                                recursive=False)
        if reply is None:
            return None
        outcome = classify_reply(reply, zone, name, rdtype, rdclass)
        if outcome is None:
            log.debug("{address} (for {zone}) gave no usable answer for {name}",
                      address=address, zone=zone.to_text(), name=name.to_text())
        return outcome

    # ----------------------------------------------------------------- one query

    async def _ask(self, server, name, rdtype, rdclass, budget, *, recursive: bool):
        """The reply of ``server``, over TCP if the UDP one was truncated; None on failure."""
        query = make_query(name, rdtype, rdclass, recursion_desired=recursive)
        tcp = False
        while True:
            budget.spend_query(self.reactor.seconds())
            try:
                reply = await self.network.query(server, query, tcp=tcp, timeout=self.timeout)
            except QueryError as e:
                log.debug("{server}: {error}", server=_text(server), error=str(e))
                self._mark_unresponsive(server)
                return None
            if reply.flags & dns.flags.TC and not tcp:
                # RFC 7766 §5 (the network layer does this itself; another may not).
                tcp = True
                continue
            return reply

    # ----------------------------------------------------------------- server choice

    def _mark_unresponsive(self, server) -> None:
        now = self.reactor.seconds()
        if len(self._unresponsive) >= _UNRESPONSIVE_MEMORY:
            self._unresponsive = {s: t for s, t in self._unresponsive.items() if t > now}
            if len(self._unresponsive) >= _UNRESPONSIVE_MEMORY:
                self._unresponsive.clear()
        self._unresponsive[server] = now + UNRESPONSIVE_SECONDS

    def _ordered(self, servers):
        """``servers`` in their order, those that recently timed out last."""
        now = self.reactor.seconds()
        return sorted(servers, key=lambda server: self._unresponsive.get(server, 0.0) > now)

    def _reachable(self, address: str) -> bool:
        reachable = getattr(self.network, "reachable", None)
        return True if reachable is None else reachable(address)

    def _preferred(self, addresses: list[str]) -> list[str]:
        """IPv4 before IPv6, unroutable families dropped (unless nothing else is left)."""
        addresses = sorted(dict.fromkeys(addresses),
                           key=lambda a: ipaddress.ip_address(a).version)
        usable = [a for a in addresses if self._reachable(a)] or addresses
        return [server[0] for server in self._ordered([(a, DNS_PORT) for a in usable])]

    def _families(self) -> list[int]:
        usable = [t for t in _ADDRESS_TYPES if self._reachable(_FAMILY_PROBE[t])]
        return usable or list(_ADDRESS_TYPES)


def _dangling(name: dns.name.Name, rdtype: int, hop: Resolution) -> dns.name.Name | None:
    """The CNAME target still to look up after ``hop``, or None when the answer is complete."""
    if rdtype in (dns.rdatatype.CNAME, dns.rdatatype.ANY):
        return None
    end = chain_end(name, hop.answer)
    if end == name or _matching(hop.answer, end, rdtype) or negative_ttl(hop) is not None:
        return None
    return end


def _text(server: tuple[str, int]) -> str:
    host, port = server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
