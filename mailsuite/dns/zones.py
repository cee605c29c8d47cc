"""
The zones this server is authoritative for: one generated per local mail domain, plus BIND
zone files.

For a local domain D served by the host H ([suite] hostname) the generated zone holds:

    D                       SOA   H hostmaster.D <serial> 3600 900 1209600 300
    D                       NS    H
    D                       MX    10 H
    D                       TXT   "v=spf1 mx -all"
    H (only when inside D)  A / AAAA   from [dns] addresses
    _dmarc.D                TXT   "v=DMARC1; p=quarantine; rua=mailto:postmaster@D"
    <sel>._domainkey.D      TXT   "v=DKIM1; k=rsa; p=..."   when <data_dir>/dkim/D/<sel>.key exists
    _submission._tcp.D      SRV   0 1 <port> H              RFC 6186 §3.1
    _submissions._tcp.D     SRV   0 1 <port> H              RFC 8314 §5.1
    _imap._tcp.D, _imaps._tcp.D, _pop3._tcp.D, _pop3s._tcp.D  SRV   RFC 6186 §3.2, §3.3
    autoconfig.D, autodiscover.D   CNAME H

A service switched off in [listen] gets the SRV record ``0 0 0 .``, which says "not offered
here" (RFC 6186 §3, RFC 2782).  A service whose port cannot be known before it binds
(``port=0``, ``systemd:`` sockets, ``unix:``) gets no SRV record at all, so clients fall back
to their defaults instead of being told a wrong port.

The SOA serial is a digest of the zone's other records, so it changes whenever the data
changes and stays the same across restarts on the same data (nothing here transfers zones,
so only caches ever compare serials, and for equality).

A zone file whose origin is a local domain adds records to that domain's generated zone; a
name and type present in both take the file's records (a CNAME in the file replaces the
other data at its name, and the other way round).  Any other origin makes a whole extra zone,
which must have its own SOA and NS at the origin.  Records outside a file's origin are never
loaded, so never served.

Everything here is pure apart from reading the key and zone files it is given.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable, Mapping

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdataset
import dns.rdtypes.ANY.TXT
import dns.zone

IN = dns.rdataclass.IN

# SOA timers (RFC 1912 §2.2 ranges).  The minimum is the negative-caching TTL (RFC 2308 §4):
# short, so a record added to the directory or a zone file is seen soon.
SOA_REFRESH = 3600
SOA_RETRY = 900
SOA_EXPIRE = 1209600
SOA_MINIMUM = 300

MX_PREFERENCE = 10

SPF = "v=spf1 mx -all"

#: [listen] key -> the SRV owner below the domain (RFC 6186 §3, RFC 8314 §5.1).
SRV_SERVICES = (
    ("submission", "_submission._tcp"),
    ("submissions", "_submissions._tcp"),
    ("imap", "_imap._tcp"),
    ("imaps", "_imaps._tcp"),
    ("pop3", "_pop3._tcp"),
    ("pop3s", "_pop3s._tcp"),
)

# RFC 1035 §3.3: one <character-string> holds at most 255 octets.
_TXT_CHUNK = 255


class ZoneError(Exception):
    """Zone data cannot be used; ``str(error)`` is one line naming the file or name."""


class ZoneFileError(ZoneError):
    """A zone file cannot be read or parsed; the message names the file and, when known,
    the line."""


# --------------------------------------------------------------------------- endpoints


def endpoint_port(description: str) -> int | None:
    """
    The TCP port a Twisted endpoint description listens on (``tcp:port=2587:...``,
    ``tcp:2587``, ``ssl:port=993:...``), or None when it cannot be known before binding
    (``port=0``, ``systemd:``, ``unix:``, or anything unparsable).
    """
    parts = _split_endpoint(description)
    if not parts or parts[0] not in ("tcp", "tcp6", "ssl"):
        return None
    positional = [p for p in parts[1:] if "=" not in p]
    keywords = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    value = keywords.get("port", positional[0] if positional else "")
    if not value.isdigit() or not 0 < int(value) < 65536:
        return None
    return int(value)


def _split_endpoint(description: str) -> list[str]:
    # Twisted's syntax: fields separated by ":", a backslash escapes the next character.
    parts, current, escaped = [], [], False
    for char in description:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts if description else []


# --------------------------------------------------------------------------- DKIM


def dkim_record(pem: bytes, *, source: str = "DKIM key") -> str:
    """
    The DKIM key record (RFC 6376 §3.6.1) publishing the public half of a PEM private key:
    ``v=DKIM1; k=rsa; p=<SubjectPublicKeyInfo>`` or, for Ed25519, ``k=ed25519; p=<raw key>``
    (RFC 8463 §4).  ``source`` names the key in the ZoneError raised for a bad one.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise ZoneError(f"{source}: not an unencrypted PEM private key ({e})") from None
    public = key.public_key()
    if isinstance(key, rsa.RSAPrivateKey):
        kind = "rsa"
        data = public.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        kind = "ed25519"
        data = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        raise ZoneError(f"{source}: DKIM keys are RSA or Ed25519, not {type(key).__name__}")
    return f"v=DKIM1; k={kind}; p={base64.b64encode(data).decode('ascii')}"


def read_dkim_keys(directory: str, domains: Iterable[str],
                   selector: str) -> dict[str, dict[str, str]]:
    """
    domain -> {selector: DKIM key record} for each ``<directory>/<domain>/<selector>.key``
    that exists.  An unreadable or unusable key raises ZoneError naming the file.
    """
    keys: dict[str, dict[str, str]] = {}
    if not selector:
        return keys
    for domain in domains:
        path = os.path.join(directory, domain, f"{selector}.key")
        try:
            with open(path, "rb") as f:
                pem = f.read()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise ZoneError(f"{path}: {e.strerror or e}") from None
        keys[domain] = {selector: dkim_record(pem, source=path)}
    return keys


# --------------------------------------------------------------------------- generated zones


def build_zones(
    *,
    domains: Iterable[str],
    hostname: str,
    addresses: Iterable = (),
    ttl: int | float = 3600,
    listen: Mapping[str, str] | None = None,
    dkim_keys: Mapping[str, Mapping[str, str]] | None = None,
    zone_files: Iterable[str] = (),
) -> list[dns.zone.Zone]:
    """
    The zones served: one per local domain in ``domains`` (generated as described in the
    module docstring), merged with the zone files ``zone_files``.

    ``addresses`` are IP addresses (str or ipaddress objects) published for ``hostname``
    when it lies inside a domain; ``listen`` maps [listen] keys to endpoint descriptions
    ("" = switched off, missing = no SRV record); ``dkim_keys`` maps domain -> selector ->
    record text (see read_dkim_keys).  Raises ZoneError or ZoneFileError.
    """
    host = _name(hostname, "hostname")
    ttl = int(ttl)
    addresses = [str(a) for a in addresses]
    listen = dict(listen or {})
    dkim_keys = {d.lower().rstrip("."): keys for d, keys in (dkim_keys or {}).items()}
    zones: dict[dns.name.Name, dns.zone.Zone] = {}
    for domain in domains:
        origin = _name(domain, "domain")
        if origin in zones:
            continue
        dkim = dkim_keys.get(domain.lower().rstrip("."), {})
        zones[origin] = _domain_zone(origin, host, addresses=addresses, ttl=ttl,
                                     listen=listen, dkim=dkim)
    local = set(zones)
    soa_from_file: set[dns.name.Name] = set()
    for path in zone_files:
        soa_from_file |= _merge_file(zones, local, path)
    for origin in local - soa_from_file:
        _stamp_serial(zones[origin], host, ttl)
    return list(zones.values())


def _name(text: str, what: str) -> dns.name.Name:
    try:
        name = dns.name.from_text(text.strip())
    except (dns.exception.DNSException, UnicodeError) as e:
        raise ZoneError(f"{what} {text!r} is not a domain name: {e}") from None
    if name == dns.name.root:
        raise ZoneError(f"{what} {text!r} is not a domain name")
    return name.canonicalize()


def _add(zone: dns.zone.Zone, name: dns.name.Name, ttl: int, rdtype: str, *texts: str) -> None:
    rdataset = dns.rdataset.from_text(IN, rdtype, ttl, *texts)
    zone.replace_rdataset(name, rdataset)


def _domain_zone(origin, host, *, addresses, ttl, listen, dkim) -> dns.zone.Zone:
    zone = dns.zone.Zone(origin, relativize=False)
    # The SOA is written now with serial 0 and stamped once the rest of the data is final.
    _add(zone, origin, ttl, "SOA", _soa_text(origin, host, 0))
    _add(zone, origin, ttl, "NS", host.to_text())
    _add(zone, origin, ttl, "MX", f"{MX_PREFERENCE} {host}")
    _add(zone, origin, ttl, "TXT", _quoted(SPF))
    if host.is_subdomain(origin):
        v4 = [a for a in addresses if ":" not in a]
        v6 = [a for a in addresses if ":" in a]
        if v4:
            _add(zone, host, ttl, "A", *v4)
        if v6:
            _add(zone, host, ttl, "AAAA", *v6)
    domain = origin.to_text(omit_final_dot=True)
    _add(zone, _child("_dmarc", origin), ttl, "TXT",
         _quoted(f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}"))
    for selector, record in sorted(dkim.items()):
        owner = _child(f"{selector}._domainkey", origin)
        chunks = [record[i:i + _TXT_CHUNK].encode("ascii")
                  for i in range(0, len(record), _TXT_CHUNK)]
        rdataset = dns.rdataset.Rdataset(IN, dns.rdatatype.TXT)
        rdataset.add(dns.rdtypes.ANY.TXT.TXT(IN, dns.rdatatype.TXT, chunks), ttl)
        zone.replace_rdataset(owner, rdataset)
    for key, label in SRV_SERVICES:
        if key not in listen:
            continue
        if not listen[key]:
            _add(zone, _child(label, origin), ttl, "SRV", "0 0 0 .")
            continue
        port = endpoint_port(listen[key])
        if port is not None:
            _add(zone, _child(label, origin), ttl, "SRV", f"0 1 {port} {host}")
    for label in ("autoconfig", "autodiscover"):
        owner = _child(label, origin)
        if owner != host:
            _add(zone, owner, ttl, "CNAME", host.to_text())
    return zone


def _child(labels: str, origin: dns.name.Name) -> dns.name.Name:
    return dns.name.from_text(labels, origin=origin)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _soa_text(origin: dns.name.Name, host: dns.name.Name, serial: int) -> str:
    return (f"{host} {_child('hostmaster', origin)} {serial} "
            f"{SOA_REFRESH} {SOA_RETRY} {SOA_EXPIRE} {SOA_MINIMUM}")


def zone_serial(zone: dns.zone.Zone) -> int:
    """
    A serial derived from every record of ``zone`` but its SOA: equal data gives an equal
    serial, and any change gives (almost surely) another one.  Never 0.
    """
    lines = []
    for name, node in zone.nodes.items():
        for rdataset in node:
            if rdataset.rdtype == dns.rdatatype.SOA and name == zone.origin:
                continue
            for rdata in rdataset:
                lines.append(f"{name} {rdataset.ttl} {rdataset.rdtype} {rdata.to_text()}")
    digest = hashlib.sha256("\n".join(sorted(lines)).encode()).digest()
    # Kept below 2**31 so tools comparing serials as signed numbers see a positive one.
    return int.from_bytes(digest[:4], "big") % 0x7FFFFFFF + 1


def _stamp_serial(zone: dns.zone.Zone, host: dns.name.Name, ttl: int) -> None:
    _add(zone, zone.origin, ttl, "SOA", _soa_text(zone.origin, host, zone_serial(zone)))


# --------------------------------------------------------------------------- zone files


def load_zone_file(path: str, origin: str | dns.name.Name | None = None) -> dns.zone.Zone:
    """
    Read a BIND master file (RFC 1035 §5) into a Zone with absolute names.  The origin is
    ``origin`` when given, else the file's first $ORIGIN.  The SOA and NS at the origin are
    not required here (a file adding records to a local domain has neither); build_zones
    checks them for whole extra zones.  Any problem raises ZoneFileError with one line
    naming the file and, when known, the line.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ZoneFileError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ZoneFileError(f"{path}:{line}: not UTF-8 text") from None
    if origin is not None and not isinstance(origin, dns.name.Name):
        origin = _name(str(origin), f"{path}: origin")
    try:
        zone = dns.zone.from_text(text, origin=origin, relativize=False, filename=path,
                                  check_origin=False)
    except dns.zone.UnknownOrigin:
        raise ZoneFileError(f"{path}: no $ORIGIN before the first record, "
                            "and no origin given") from None
    except dns.exception.SyntaxError as e:
        # dnspython's text is already "file:line: problem".
        raise ZoneFileError(_one_line(str(e), path)) from None
    except (dns.exception.DNSException, ValueError) as e:
        raise ZoneFileError(f"{path}: {_one_line(str(e) or type(e).__name__, path)}") from None
    return zone


def _one_line(message: str, path: str) -> str:
    message = " ".join(message.split())
    return message if message.startswith(path) else f"{path}: {message}"


def _merge_file(zones: dict, local: set, path: str) -> set[dns.name.Name]:
    """Load ``path`` into ``zones``; the origins whose SOA now comes from the file."""
    loaded = load_zone_file(path)
    origin = loaded.origin.canonicalize()
    target = zones.get(origin)
    if target is None:
        _check_apex(loaded, path)
        zones[origin] = loaded
        return {origin}
    soa = set()
    for name, node in loaded.nodes.items():
        for rdataset in node:
            target.replace_rdataset(name, rdataset)
            if rdataset.rdtype == dns.rdatatype.SOA and name == origin:
                soa.add(origin)
    if origin not in local:
        _check_apex(target, path)
    return soa


def _check_apex(zone: dns.zone.Zone, path: str) -> None:
    apex = zone.get_node(zone.origin)
    for rdtype in (dns.rdatatype.SOA, dns.rdatatype.NS):
        if apex is None or apex.get_rdataset(IN, rdtype) is None:
            raise ZoneFileError(
                f"{path}: zone {zone.origin} has no {dns.rdatatype.to_text(rdtype)} record "
                "at its origin (needed unless the origin is a local mail domain)")

