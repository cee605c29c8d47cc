"""
The suite's twisted.names IResolver, over the caching resolver.

Everything in the suite that looks a name up (MX and addresses for the relay, TXT for SPF,
DKIM and DMARC, DNSBL queries, SRV) calls the usual ``lookupMailExchange``,
``lookupAddress``, ``lookupIPV6Address``, ``lookupText``, ``lookupService`` ... and gets the
usual (answers, authority, additional) lists of twisted.names.dns.RRHeader.  Records are
carried over in wire format, so every record type twisted.names knows comes out as its own
Record class.

Outcomes: NXDOMAIN fails with DNSNameError (a DomainError), or AuthoritativeDomainError when
the name is in a local zone; SERVFAIL, which includes timeouts, fails with DNSServerError;
NODATA is ([], authority, []).
"""

from __future__ import annotations

import ipaddress

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
from twisted.internet import defer
from twisted.names import dns as tdns, error
from twisted.names.common import ResolverBase

from mailsuite.dns.resolution import Resolution

# Zone transfers are not lookups; the resolver does not do them.
_NOT_LOOKUPS = frozenset({tdns.AXFR, tdns.IXFR, tdns.MAILB, tdns.MAILA})

_ERRORS = {
    dns.rcode.SERVFAIL: error.DNSServerError,
    dns.rcode.REFUSED: error.DNSQueryRefusedError,
    dns.rcode.FORMERR: error.DNSFormatError,
    dns.rcode.NOTIMP: error.DNSNotImplementedError,
}


def to_twisted(resolution: Resolution) -> tuple[list, list, list]:
    """(answers, authority, additional) as twisted.names RRHeader lists."""
    message = dns.message.Message()
    message.flags = dns.flags.QR
    message.answer = list(resolution.answer)
    message.authority = list(resolution.authority)
    message.additional = list(resolution.additional)
    converted = tdns.Message()
    converted.fromStr(message.to_wire())
    return converted.answers, converted.authority, converted.additional


def outcome(name: str, resolution: Resolution):
    """The (answers, authority, additional) of ``resolution``, or the failure it stands for."""
    rcode = resolution.rcode
    if rcode == dns.rcode.NOERROR:
        return to_twisted(resolution)
    if rcode == dns.rcode.NXDOMAIN:
        if resolution.authoritative:
            raise error.AuthoritativeDomainError(name)
        raise error.DNSNameError(name)
    raise _ERRORS.get(rcode, error.DNSUnknownError)(name)


class SuiteResolver(ResolverBase):
    """
    A twisted.names IResolver answering from ``resolver`` (a CachingResolver, or anything
    with ``resolve(name, rdtype, rdclass) -> Deferred[Resolution]``).
    """

    def __init__(self, resolver):
        super().__init__()
        self.resolver = resolver

    def _lookup(self, name, cls, type, timeout):
        # ``timeout`` is twisted.names' per-try sequence; the resolver keeps its own.
        text = name.decode("ascii", "backslashreplace") if isinstance(name, bytes) else name
        if type in _NOT_LOOKUPS:
            return defer.fail(error.DNSNotImplementedError(text))
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException as e:
            return defer.fail(error.DNSFormatError(f"{text}: {e}"))
        d = self.resolver.resolve(qname, type, cls)
        d.addCallback(lambda resolution: outcome(text, resolution))
        return d

    def getHostByName(self, name, timeout=None, effort=10):
        """
        The first address of ``name``: IPv4 if it has one, else IPv6 (A then AAAA lookups,
        not ANY, per RFC 8482).  DNSNameError when it has neither.
        """
        return defer.Deferred.fromCoroutine(self._host_address(name, timeout))

    async def _host_address(self, name, timeout) -> str:
        text = name.decode("ascii", "backslashreplace") if isinstance(name, bytes) else name
        for lookup, rdtype in ((self.lookupAddress, tdns.A), (self.lookupIPV6Address, tdns.AAAA)):
            try:
                answers, _, _ = await lookup(name, timeout)
            except error.DNSNameError:
                return _no_address(text)
            for record in answers:
                if record.type == rdtype:
                    return _address_text(record)
        return _no_address(text)


def _no_address(name: str):
    raise error.DNSNameError(f"{name} has no address")


def _address_text(record: tdns.RRHeader) -> str:
    if record.type == tdns.A:
        return record.payload.dottedQuad()
    return str(ipaddress.IPv6Address(record.payload.address))
