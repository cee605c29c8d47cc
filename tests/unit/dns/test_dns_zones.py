"""The zones generated for the local mail domains (mailsuite.dns.zones.build_zones)."""

import base64

import dns.rdatatype
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailsuite.dns.zones import (
    SOA_MINIMUM,
    ZoneError,
    build_zones,
    dkim_record,
    endpoint_port,
    read_dkim_keys,
    zone_serial,
)

from .dns_fakes import HOSTNAME, name, zones


def records(zone, owner, rdtype):
    rdataset = zone.get_rdataset(name(owner), dns.rdatatype.from_text(rdtype))
    return sorted(r.to_text() for r in rdataset) if rdataset is not None else []


def example(**kwargs):
    [zone] = zones(extra=None, **kwargs)
    return zone


def rsa_pem():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())


def test_apex_records_of_a_local_domain():
    """SOA (mname the host, rname hostmaster.D), NS, MX 10 and SPF are at the domain."""
    zone = example()
    [soa] = zone.get_rdataset(name("example.test"), dns.rdatatype.SOA)
    assert soa.mname == name(HOSTNAME)
    assert soa.rname == name("hostmaster.example.test")
    assert soa.minimum == SOA_MINIMUM and soa.serial > 0
    assert records(zone, "example.test", "NS") == [f"{HOSTNAME}."]
    assert records(zone, "example.test", "MX") == [f"10 {HOSTNAME}."]
    assert records(zone, "example.test", "TXT") == ['"v=spf1 mx -all"']


def test_host_inside_domain_gets_configured_addresses():
    """The hostname inside the domain owns A and AAAA records from [dns] addresses."""
    zone = example()
    assert records(zone, HOSTNAME, "A") == ["192.0.2.10"]
    assert records(zone, HOSTNAME, "AAAA") == ["2001:db8::10"]


def test_host_outside_domain_gets_no_addresses():
    """For a domain that does not contain the hostname, no address records are made."""
    [zone] = build_zones(domains=["other.test"], hostname=HOSTNAME, addresses=["192.0.2.10"])
    assert records(zone, "other.test", "MX") == [f"10 {HOSTNAME}."]
    assert all(rdataset.rdtype not in (dns.rdatatype.A, dns.rdatatype.AAAA)
               for _, node in zone.nodes.items() for rdataset in node)


def test_no_addresses_configured_means_none_published():
    """An empty [dns] addresses publishes no A/AAAA even for a host inside the domain."""
    zone = example(addresses=[])
    assert records(zone, HOSTNAME, "A") == [] and records(zone, HOSTNAME, "AAAA") == []


def test_dmarc_record():
    """_dmarc.D holds the quarantine policy reporting to postmaster@D."""
    assert records(example(), "_dmarc.example.test", "TXT") == [
        '"v=DMARC1; p=quarantine; rua=mailto:postmaster@example.test"']


def test_srv_records_carry_configured_ports():
    """RFC 6186/8314 SRV records point at the host with the port of each endpoint."""
    zone = example()
    assert records(zone, "_submission._tcp.example.test", "SRV") == [f"0 1 10587 {HOSTNAME}."]
    assert records(zone, "_imap._tcp.example.test", "SRV") == [f"0 1 10143 {HOSTNAME}."]
    assert records(zone, "_imaps._tcp.example.test", "SRV") == [f"0 1 10993 {HOSTNAME}."]


def test_disabled_service_is_published_as_not_offered():
    """A switched-off listener gets the SRV target "." (RFC 6186 §3: not offered)."""
    zone = example()
    for service in ("_submissions._tcp", "_pop3._tcp", "_pop3s._tcp"):
        assert records(zone, f"{service}.example.test", "SRV") == ["0 0 0 ."]


def test_service_with_unknown_port_gets_no_srv():
    """port=0 and systemd: sockets have no port to publish, so no SRV record is made."""
    zone = example(listen={"imap": "tcp:port=0", "pop3": "systemd:domain=INET:index=0"})
    assert records(zone, "_imap._tcp.example.test", "SRV") == []
    assert records(zone, "_pop3._tcp.example.test", "SRV") == []
    assert records(zone, "_submission._tcp.example.test", "SRV") == []


def test_autoconfig_names_are_cnames_of_the_host():
    """autoconfig.D and autodiscover.D are CNAMEs of the mail host."""
    zone = example()
    for label in ("autoconfig", "autodiscover"):
        assert records(zone, f"{label}.example.test", "CNAME") == [f"{HOSTNAME}."]


def test_serial_follows_content():
    """The same data gives the same serial; a change in any record gives another."""
    first, again = example(), example()
    changed = example(addresses=["192.0.2.11"])
    assert zone_serial(first) == zone_serial(again)
    assert zone_serial(first) != zone_serial(changed)
    [soa] = changed.get_rdataset(name("example.test"), dns.rdatatype.SOA)
    assert soa.serial == zone_serial(changed)


def test_each_domain_gets_its_own_zone():
    """Two local domains give two zones with their own SOA rname."""
    made = build_zones(domains=["example.test", "other.test"], hostname=HOSTNAME)
    assert sorted(z.origin.to_text() for z in made) == ["example.test.", "other.test."]
    other = [z for z in made if z.origin == name("other.test")][0]
    [soa] = other.get_rdataset(name("other.test"), dns.rdatatype.SOA)
    assert soa.rname == name("hostmaster.other.test")


def test_bad_hostname_raises_zone_error():
    """A hostname that is not a domain name stops the build with a readable ZoneError."""
    with pytest.raises(ZoneError, match="hostname"):
        build_zones(domains=["example.test"], hostname="bad..name")


@pytest.mark.parametrize("description, port", [
    ("tcp:port=1587:interface=127.0.0.1", 1587),
    ("tcp:143", 143),
    ("ssl:port=993:privateKey=key.pem:certKey=cert.pem", 993),
    (r"tcp6:port=587:interface=\:\:1", 587),
    ("tcp:port=0:interface=127.0.0.1", None),
    ("systemd:domain=INET:index=0", None),
    ("unix:address=/run/x.sock", None),
    ("", None),
])
def test_endpoint_port(description, port):
    """The port is read from tcp/ssl descriptions, None when it cannot be known."""
    assert endpoint_port(description) == port


def test_dkim_rsa_key_published(tmp_path):
    """<dkim>/<domain>/<selector>.key (RSA PEM) is published as the SPKI in p=."""
    key, pem = rsa_pem()
    (tmp_path / "example.test").mkdir()
    (tmp_path / "example.test" / "mail.key").write_bytes(pem)
    keys = read_dkim_keys(str(tmp_path), ["example.test", "other.test"], "mail")
    assert list(keys) == ["example.test"]
    zone = example(dkim_keys=keys)
    [txt] = zone.get_rdataset(name("mail._domainkey.example.test"), dns.rdatatype.TXT)
    assert all(len(s) <= 255 for s in txt.strings) and len(txt.strings) > 1
    value = b"".join(txt.strings).decode()
    assert value.startswith("v=DKIM1; k=rsa; p=")
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    assert base64.b64decode(value.split("p=", 1)[1]) == spki


def test_dkim_ed25519_key_published():
    """An Ed25519 key is published as k=ed25519 with the raw public key (RFC 8463)."""
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    value = dkim_record(pem)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert value == f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"


def test_bad_dkim_key_names_the_file(tmp_path):
    """A key file that is not a PEM private key raises ZoneError naming the file."""
    (tmp_path / "example.test").mkdir()
    path = tmp_path / "example.test" / "mail.key"
    path.write_text("not a key")
    with pytest.raises(ZoneError) as raised:
        read_dkim_keys(str(tmp_path), ["example.test"], "mail")
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


def test_no_dkim_record_without_key_file(tmp_path):
    """No key file, no _domainkey record."""
    keys = read_dkim_keys(str(tmp_path), ["example.test"], "mail")
    zone = example(dkim_keys=keys)
    assert not any("_domainkey" in n.to_text() for n in zone.nodes)
