"""
Where mail for a domain goes: MX records in preference order (RFC 5321 §5.1), the implicit MX
when there are none, the null MX (RFC 7505), and the addresses of each host.

Lookups go through a twisted.names IResolver (the suite's own caching resolver in
production, a fake in tests).  Outcomes are either a list of Destinations or a
DestinationError saying whether the failure is permanent (bounce now) or temporary (retry).
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass

from twisted.internet import defer
from twisted.names import dns
from twisted.python.failure import Failure
from twisted.names.error import (
    AuthoritativeDomainError,
    DNSNameError,
    DomainError,
)

#: At most this many MX hosts are tried for one domain, as other MTAs do.
MAX_MX_HOSTS = 10


@dataclass(frozen=True)
class Destination:
    """One host to try: its name (for TLS and logs), its addresses in the order to try them."""

    hostname: str
    addresses: tuple[str, ...]
    port: int


class DestinationError(Exception):
    """No host to try.  ``permanent`` failures bounce now; others are retried."""

    def __init__(self, text: str, *, permanent: bool, status: str):
        super().__init__(text)
        self.text = text
        self.permanent = permanent
        self.status = status


def _is_name_error(failure) -> bool:
    """NXDOMAIN, as opposed to a server failure or timeout (DNSServerError is a DomainError)."""
    return type(failure.value) in (DomainError, DNSNameError, AuthoritativeDomainError)


def _ip_literal(host: str) -> str | None:
    candidate = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if candidate.lower().startswith("ipv6:"):
        candidate = candidate[5:]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def _normal(name) -> str:
    text = name.decode("ascii", "replace") if isinstance(name, bytes) else str(name)
    return text.rstrip(".").lower()


@defer.inlineCallbacks
def host_addresses(resolver, host: str):
    """
    Deferred[tuple of address strings] of ``host``: IPv4 first, then IPv6 (an IP literal is
    its own address).  Raises DestinationError when the name has no address.
    """
    literal = _ip_literal(host)
    if literal is not None:
        return (literal,)
    found: list[str] = []
    temporary = None
    missing = 0
    for lookup, record_type in ((resolver.lookupAddress, dns.A),
                                (resolver.lookupIPV6Address, dns.AAAA)):
        try:
            answers, _, _ = yield lookup(host)
        except Exception:
            failure = Failure()
            if _is_name_error(failure):
                missing += 1
            else:
                temporary = failure.value
            continue
        found += [answer.payload.dottedQuad() if record_type == dns.A
                  else _ipv6(answer.payload.address)
                  for answer in answers if answer.type == record_type]
    if found:
        return tuple(dict.fromkeys(found))
    if temporary is not None:
        raise DestinationError(f"cannot look up the address of {host}: DNS failure",
                               permanent=False, status="4.4.3")
    raise DestinationError(f"{host} has no address", permanent=missing == 2, status="5.1.2"
                           if missing == 2 else "4.4.4")


def _ipv6(packed: bytes) -> str:
    return str(ipaddress.IPv6Address(packed))


@defer.inlineCallbacks
def mx_destinations(resolver, domain: str, *, port: int, own_names=frozenset(),
                    rng: random.Random | None = None):
    """
    Deferred[list of Destination] for mail to ``domain``, most preferred first; hosts with
    equal preference are tried in random order.  Raises DestinationError.

    ``own_names``: this server's own host names.  An MX list naming this server drops it and
    every less preferred host (RFC 5321 §5.1) so that mail never loops back here.
    """
    rng = rng or random
    try:
        answers, _, _ = yield resolver.lookupMailExchange(domain)
    except Exception:
        failure = Failure()
        if _is_name_error(failure):
            raise DestinationError(f"domain {domain} does not exist", permanent=True,
                                   status="5.1.2")
        raise DestinationError(f"cannot look up the mail servers of {domain}: DNS failure",
                               permanent=False, status="4.4.3")
    records = [(a.payload.preference, _normal(a.payload.name.name))
               for a in answers if a.type == dns.MX]
    if any(name == "" for _, name in records):
        # RFC 7505: a null MX says the domain accepts no mail at all.
        raise DestinationError(f"domain {domain} accepts no mail (null MX)", permanent=True,
                               status="5.1.10")
    if not records:
        # RFC 5321 §5.1: no MX, so the domain itself is the implicit MX.
        addresses = yield host_addresses(resolver, domain)
        return [Destination(domain.lower(), addresses, port)]
    own = {n.lower().rstrip(".") for n in own_names}
    ours = [preference for preference, name in records if name in own]
    if ours:
        records = [(p, n) for p, n in records if p < min(ours)]
        if not records:
            raise DestinationError(f"mail for {domain} loops back to this server",
                                   permanent=True, status="5.4.6")
    rng.shuffle(records)
    records.sort(key=lambda record: record[0])
    destinations = []
    last_error = None
    for _, name in records[:MAX_MX_HOSTS]:
        try:
            addresses = yield host_addresses(resolver, name)
        except DestinationError as e:
            last_error = e
            continue
        destinations.append(Destination(name, addresses, port))
    if not destinations:
        # An MX host without an address is a temporary problem on the remote side.
        raise DestinationError(
            f"no mail server of {domain} has an address"
            + (f" ({last_error.text})" if last_error else ""),
            permanent=False, status="4.4.4")
    return destinations


@defer.inlineCallbacks
def host_destinations(resolver, host: str, port: int):
    """Deferred[list with one Destination] for a configured "host:port" route."""
    addresses = yield host_addresses(resolver, host)
    return [Destination(host.lower(), addresses, port)]
