"""
A fake twisted.names IResolver for tests: answers from a table, fails on demand.

    resolver = FakeResolver()
    resolver.mx("example.org", (10, "mx1.example.org"), (20, "mx2.example.org"))
    resolver.a("mx1.example.org", "192.0.2.1")
    resolver.fail("broken.example", servfail=True)

A name with no records at all is NXDOMAIN; a name with records of other types is NODATA.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.names import dns
from twisted.names.common import ResolverBase
from twisted.names.error import DNSNameError, DNSServerError


class FakeResolver(ResolverBase):
    def __init__(self):
        super().__init__()
        self.records: dict[tuple[str, int], list] = {}
        self.failing: set[str] = set()
        self.queries: list[tuple[str, int]] = []

    def _add(self, name: str, record_type: int, payload) -> None:
        key = (name.lower().rstrip("."), record_type)
        self.records.setdefault(key, []).append(
            dns.RRHeader(name=name, type=record_type, payload=payload, ttl=300))

    def mx(self, domain: str, *hosts: tuple[int, str]) -> None:
        for preference, host in hosts:
            self._add(domain, dns.MX, dns.Record_MX(preference, host))

    def a(self, name: str, *addresses: str) -> None:
        for address in addresses:
            self._add(name, dns.A, dns.Record_A(address))

    def aaaa(self, name: str, *addresses: str) -> None:
        for address in addresses:
            self._add(name, dns.AAAA, dns.Record_AAAA(address))

    def txt(self, name: str, *texts: str) -> None:
        for text in texts:
            self._add(name, dns.TXT, dns.Record_TXT(text.encode()))

    def fail(self, name: str) -> None:
        """Every lookup of ``name`` fails as if the servers were unreachable (SERVFAIL)."""
        self.failing.add(name.lower().rstrip("."))

    def _lookup(self, name, cls, type, timeout):
        text = (name.decode() if isinstance(name, bytes) else name).lower().rstrip(".")
        self.queries.append((text, type))
        if text in self.failing:
            return defer.fail(DNSServerError(text))
        if not any(key[0] == text for key in self.records):
            return defer.fail(DNSNameError(text))
        return defer.succeed((list(self.records.get((text, type), [])), [], []))
