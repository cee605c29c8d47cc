"""
Where iterative resolution starts: the root name servers.

The built-in list holds the 13 root servers' IPv4 and IPv6 addresses (as published by IANA,
root zone of April 2024); ``[dns] root_hints`` may name a file in the usual named.root master
file format instead.  ``parse_root_hints`` is pure: text in, ``RootHints`` out.
"""

from __future__ import annotations

from dataclasses import dataclass

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.zonefile

# (server name, IPv4 address, IPv6 address)
ROOT_SERVERS = (
    ("a.root-servers.net.", "198.41.0.4", "2001:503:ba3e::2:30"),
    ("b.root-servers.net.", "170.247.170.2", "2801:1b8:10::b"),
    ("c.root-servers.net.", "192.33.4.12", "2001:500:2::c"),
    ("d.root-servers.net.", "199.7.91.13", "2001:500:2d::d"),
    ("e.root-servers.net.", "192.203.230.10", "2001:500:a8::e"),
    ("f.root-servers.net.", "192.5.5.241", "2001:500:2f::f"),
    ("g.root-servers.net.", "192.112.36.4", "2001:500:12::d0d"),
    ("h.root-servers.net.", "198.97.190.53", "2001:500:1::53"),
    ("i.root-servers.net.", "192.36.148.17", "2001:7fe::53"),
    ("j.root-servers.net.", "192.58.128.30", "2001:503:c27::2:30"),
    ("k.root-servers.net.", "193.0.14.129", "2001:7fd::1"),
    ("l.root-servers.net.", "199.7.83.42", "2001:500:9f::42"),
    ("m.root-servers.net.", "202.12.27.33", "2001:dc3::35"),
)


class RootHintsError(ValueError):
    """A root hints file that cannot be used (unreadable, malformed, or naming no server)."""


@dataclass(frozen=True)
class RootHints:
    """The root servers: their names, and for each name its addresses (IPv4 before IPv6)."""

    nameservers: tuple[dns.name.Name, ...]
    addresses: dict[dns.name.Name, tuple[str, ...]]


def builtin_root_hints() -> RootHints:
    """The built-in root server list."""
    names = tuple(dns.name.from_text(name) for name, _, _ in ROOT_SERVERS)
    return RootHints(names, {name: (v4, v6) for name, (_, v4, v6) in zip(names, ROOT_SERVERS)})


def parse_root_hints(text: str) -> RootHints:
    """
    The root servers listed in named.root-format ``text``: the NS records of the root and the
    A/AAAA records of those names.  RootHintsError when the text does not parse or lists no
    server with an address.
    """
    try:
        rrsets = dns.zonefile.read_rrsets(text, origin=dns.name.root, relativize=False,
                                          default_ttl=3600000)
    except (dns.exception.DNSException, ValueError) as e:
        raise RootHintsError(f"root hints do not parse: {e}") from None
    names: list[dns.name.Name] = []
    found: dict[dns.name.Name, list[str]] = {}
    for rrset in rrsets:
        if rrset.rdclass != dns.rdataclass.IN:
            continue
        if rrset.rdtype == dns.rdatatype.NS and rrset.name == dns.name.root:
            names += [rdata.target for rdata in rrset if rdata.target not in names]
    for family in (dns.rdatatype.A, dns.rdatatype.AAAA):
        for rrset in rrsets:
            if rrset.rdtype == family and rrset.rdclass == dns.rdataclass.IN:
                found.setdefault(rrset.name, []).extend(rdata.address for rdata in rrset)
    addresses = {name: tuple(found[name]) for name in names if found.get(name)}
    if not addresses:
        raise RootHintsError("root hints name no root server with an address")
    return RootHints(tuple(names), addresses)


def load_root_hints(path: str | None) -> RootHints:
    """The hints in the file at ``path``, or the built-in list when ``path`` is empty/None."""
    if not path:
        return builtin_root_hints()
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise RootHintsError(f"cannot read root hints {path}: {e}") from None
    return parse_root_hints(text)
