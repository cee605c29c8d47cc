"""
The answer to one DNS question, as the authority and the resolver hand it on.

Wire details (IDs, flags other than AA, EDNS) belong to the server that sends a Resolution
out; this is only what the answer says.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dns.rcode
import dns.rrset


@dataclass
class Resolution:
    """
    ``rcode`` is a dns.rcode value (NOERROR, NXDOMAIN, SERVFAIL, REFUSED ...); NODATA is
    NOERROR with an empty ``answer``.  ``authoritative`` is True when the answer comes from a
    zone this server is authoritative for (the AA flag).  Negative answers carry the zone's
    SOA in ``authority`` (RFC 2308).
    """

    rcode: int = dns.rcode.NOERROR
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    additional: list[dns.rrset.RRset] = field(default_factory=list)
    authoritative: bool = False
