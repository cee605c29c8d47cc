"""
The dns component in the real server (`twistd mailsuite` with listen.dns), driven by dig
(bind9-dnsutils) and dnspython: every kind of generated record, NXDOMAIN with SOA and AA,
truncation over UDP then the whole answer over TCP, recursion through the caching resolver to
a forwarder, and recursion refused for a client outside recursion_clients.

A second server is the forwarder: it is authoritative for example.org, which the first one
only reaches through [dns] upstream.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import subprocess

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailsuite.testing.server import RunningSuite
from mailsuite.testing.slapd import free_port

HOST = "127.0.0.1"
OUTSIDER = "127.0.0.2"
HOSTNAME = "mail.example.test"

UPSTREAM_ZONE = """\
$ORIGIN example.org.
$TTL 600
@    SOA ns hostmaster ( 1 3600 900 1209600 300 )
@    NS  ns
ns   A   127.0.0.1
www  A   203.0.113.7
"""

# 40 TXT strings of 60 bytes: about 2.7 KB, more than any UDP answer may carry here.
BIG_TXT = "".join(f'big TXT "{i:02d}{"x" * 58}"\n' for i in range(40))
LOCAL_ZONE = "$ORIGIN example.test.\n$TTL 300\n" + BIG_TXT


@pytest.fixture(scope="module")
def dns_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write(path: str, data: str | bytes) -> None:
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """The forwarder: authoritative for example.org."""
    process = RunningSuite(str(tmp_path_factory.mktemp("upstream")), listen={"dns": f"{HOST}:0"},
                         extra={"suite": {"domains": ["upstream.test"]},
                                "dns": {"zone_files": ["example.org.zone"]}})
    write(os.path.join(process.folder, "example.org.zone"), UPSTREAM_ZONE)
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, dns_key, upstream):
    """One server for the module (every test only reads from it), forwarding to upstream."""
    # SRV records need ports known before binding, so these two are picked free beforehand.
    ports = {"submission": free_port(), "imaps": free_port()}
    process = RunningSuite(
        str(tmp_path_factory.mktemp("dns")),
        listen={"dns": f"{HOST}:0",
                **{name: f"tcp:port={port}:interface={HOST}" for name, port in ports.items()}},
        extra={"dns": {"recursion_clients": [f"{HOST}/32"], "zone_files": ["local.zone"],
                       "addresses": ["192.0.2.10", "2001:db8::10"], "ttl": "1h",
                       "upstream": [f"{HOST}:{upstream.port('dns')}"], "timeout": "2s"}},
    )
    write(os.path.join(process.folder, "local.zone"), LOCAL_ZONE)
    key_dir = os.path.join(process.data_dir, "dkim", "example.test")
    os.makedirs(key_dir)
    write(os.path.join(key_dir, "mail.key"),
          dns_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()))
    process.start()
    yield process
    process.stop()


def udp(server, qname, rdtype, *, source=HOST, **kwargs):
    q = dns.message.make_query(qname, rdtype, **kwargs)
    return dns.query.udp(q, HOST, port=server.port("dns"), source=source, timeout=5,
                         ignore_trailing=False)


def tcp(server, qname, rdtype, **kwargs):
    q = dns.message.make_query(qname, rdtype, **kwargs)
    return dns.query.tcp(q, HOST, port=server.port("dns"), timeout=5)


def rdata_texts(answer) -> list[str]:
    return sorted(r.to_text() for rrset in answer.answer for r in rrset)


# --------------------------------------------------------------------------- dnspython


@pytest.mark.parametrize("qname, rdtype, expected", [
    ("example.test", "NS", [f"{HOSTNAME}."]),
    ("example.test", "MX", [f"10 {HOSTNAME}."]),
    (HOSTNAME, "A", ["192.0.2.10"]),
    (HOSTNAME, "AAAA", ["2001:db8::10"]),
    ("_dmarc.example.test", "TXT",
     ['"v=DMARC1; p=quarantine; rua=mailto:postmaster@example.test"']),
    ("_pop3._tcp.example.test", "SRV", ["0 0 0 ."]),
    ("autoconfig.example.test", "CNAME", [f"{HOSTNAME}."]),
])
def test_record_kinds_over_udp(server, qname, rdtype, expected):
    """Each generated record kind comes back over UDP, authoritative."""
    answer = udp(server, qname, rdtype)
    assert answer.rcode() == dns.rcode.NOERROR and answer.flags & dns.flags.AA
    assert rdata_texts(answer) == expected


def test_srv_records_carry_the_bound_ports(server):
    """The SRV records of the submission and imaps listeners give their ports, and the
    services really listen there."""
    for service, listener in (("_submission._tcp", "submission"), ("_imaps._tcp", "imaps")):
        answer = udp(server, f"{service}.example.test", "SRV")
        assert rdata_texts(answer) == [f"0 1 {server.port(listener)} {HOSTNAME}."]
        socket.create_connection((HOST, server.port(listener)), timeout=5).close()


def test_soa_and_spf_over_tcp(server):
    """SOA and the SPF TXT record come back over TCP too."""
    soa = tcp(server, "example.test", "SOA")
    [record] = soa.answer[0]
    assert record.mname.to_text() == f"{HOSTNAME}." and record.serial > 0
    assert soa.flags & dns.flags.AA
    spf = tcp(server, "example.test", "TXT")
    assert rdata_texts(spf) == ['"v=spf1 mx -all"']


def test_dkim_record_publishes_the_key(server, dns_key):
    """The key in <data_dir>/dkim/example.test/mail.key is published, split in strings."""
    answer = tcp(server, "mail._domainkey.example.test", "TXT")
    [txt] = answer.answer[0]
    value = b"".join(txt.strings).decode()
    spki = dns_key.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    assert value == "v=DKIM1; k=rsa; p=" + base64.b64encode(spki).decode()


def test_cname_is_followed(server):
    """An A question at autodiscover gets the CNAME and the host's address."""
    answer = udp(server, "autodiscover.example.test", "A")
    assert [r.rdtype for r in answer.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]


def test_nxdomain_with_soa_and_aa(server):
    """An unknown local name: NXDOMAIN, AA, the SOA in authority with the negative TTL."""
    answer = udp(server, "nobody.example.test", "A", use_edns=0)
    assert answer.rcode() == dns.rcode.NXDOMAIN and answer.flags & dns.flags.AA
    [soa] = answer.authority
    assert soa.rdtype == dns.rdatatype.SOA and soa.ttl == 300


def test_large_answer_truncated_over_udp_whole_over_tcp(server):
    """40 TXT records: TC with an empty answer over UDP, all 40 over TCP."""
    truncated = udp(server, "big.example.test", "TXT", use_edns=0, payload=4096)
    assert truncated.flags & dns.flags.TC and not truncated.answer
    whole = tcp(server, "big.example.test", "TXT")
    assert not whole.flags & dns.flags.TC and len(whole.answer[0]) == 40


def test_recursion_for_allowed_client(server):
    """127.0.0.1 may recurse: the forwarder's answer comes back with RA, without AA."""
    answer = udp(server, "www.example.org", "A")
    assert answer.flags & dns.flags.RA and not answer.flags & dns.flags.AA
    assert rdata_texts(answer) == ["203.0.113.7"]
    missing = udp(server, "nothing.example.org", "A")
    assert missing.rcode() == dns.rcode.NXDOMAIN and not missing.flags & dns.flags.AA


def test_recursion_refused_for_other_client(server):
    """From 127.0.0.2 (not in recursion_clients) an outside name is REFUSED, over UDP and TCP."""
    answer = udp(server, "www.example.org", "A", source=OUTSIDER)
    assert answer.rcode() == dns.rcode.REFUSED and not answer.flags & dns.flags.RA
    q = dns.message.make_query("www.example.org", "A")
    over_tcp = dns.query.tcp(q, HOST, port=server.port("dns"), source=OUTSIDER, timeout=5)
    assert over_tcp.rcode() == dns.rcode.REFUSED
    # Local data is still served to that client.
    assert udp(server, "example.test", "MX", source=OUTSIDER).answer


def test_several_queries_on_one_tcp_connection(server):
    """One TCP connection carries several queries and answers."""
    with socket.create_connection((HOST, server.port("dns")), timeout=5) as sock:
        ids = []
        for rdtype in ("MX", "NS", "SOA"):
            q = dns.message.make_query("example.test", rdtype)
            ids.append(q.id)
            dns.query.send_tcp(sock, q)
        got = [dns.query.receive_tcp(sock)[0].id for _ in ids]
    assert sorted(got) == sorted(ids)


# --------------------------------------------------------------------------- dig

needs_dig = pytest.mark.skipif(shutil.which("dig") is None, reason="dig (bind9-dnsutils) missing")


def dig(server, *args):
    result = subprocess.run(["dig", f"@{HOST}", "-p", str(server.port("dns")), "+time=5",
                             "+tries=1", *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def header(output: str) -> tuple[str, set[str]]:
    status = re.search(r"status: (\w+)", output).group(1)
    flags = set(re.search(r";; flags: ([a-z ]+);", output).group(1).split())
    return status, flags


def short(server, *args) -> list[str]:
    return sorted(dig(server, "+short", *args).split("\n")[:-1])


@needs_dig
@pytest.mark.parametrize("args, expected", [
    (["example.test", "MX"], [f"10 {HOSTNAME}."]),
    (["example.test", "NS"], [f"{HOSTNAME}."]),
    (["example.test", "TXT"], ['"v=spf1 mx -all"']),
    ([HOSTNAME, "A"], ["192.0.2.10"]),
    ([HOSTNAME, "AAAA"], ["2001:db8::10"]),
    (["_dmarc.example.test", "TXT"],
     ['"v=DMARC1; p=quarantine; rua=mailto:postmaster@example.test"']),
    (["autoconfig.example.test", "CNAME"], [f"{HOSTNAME}."]),
])
def test_dig_record_kinds(server, args, expected):
    """dig +short sees each generated record."""
    assert short(server, *args) == expected


@needs_dig
def test_dig_soa_dkim_and_srv(server):
    """dig sees the SOA (mname, rname), the DKIM key record and the submission SRV record."""
    [soa] = short(server, "example.test", "SOA")
    assert soa.startswith(f"{HOSTNAME}. hostmaster.example.test. ")
    [dkim] = short(server, "mail._domainkey.example.test", "TXT")
    assert dkim.startswith('"v=DKIM1; k=rsa; p=')
    assert short(server, "_submission._tcp.example.test", "SRV") == [
        f"0 1 {server.port('submission')} {HOSTNAME}."]


@needs_dig
def test_dig_answer_is_authoritative(server):
    """dig shows the aa flag and an authority section with the zone's NS."""
    output = dig(server, "example.test", "MX")
    status, flags = header(output)
    assert status == "NOERROR" and "aa" in flags
    assert re.search(rf"^example\.test\.\s+\d+\s+IN\s+NS\s+{re.escape(HOSTNAME)}\.$", output, re.M)


@needs_dig
def test_dig_nxdomain(server):
    """dig: NXDOMAIN, aa, and the SOA in the authority section."""
    output = dig(server, "nobody.example.test", "A")
    status, flags = header(output)
    assert status == "NXDOMAIN" and "aa" in flags
    authority = output.split(";; AUTHORITY SECTION:")[1]
    assert re.search(r"^example\.test\.\s+300\s+IN\s+SOA\s", authority, re.M)


@needs_dig
def test_dig_truncation_then_tcp(server):
    """Without EDNS, dig +ignore shows tc; by default dig retries over TCP and gets all 40."""
    status, flags = header(dig(server, "+ignore", "+noedns", "big.example.test", "TXT"))
    assert "tc" in flags
    assert len(short(server, "big.example.test", "TXT")) == 40


@needs_dig
def test_dig_edns_payload_is_advertised(server):
    """dig's EDNS query gets an OPT back with version 0 and udp 1232."""
    output = dig(server, "+edns=0", "+bufsize=4096", "example.test", "MX")
    assert re.search(r"; EDNS: version: 0, flags:.*; udp: 1232", output)


@needs_dig
def test_dig_badvers(server):
    """dig +edns=1 gets BADVERS."""
    output = dig(server, "+edns=1", "+noednsnegotiation", "example.test", "MX")
    assert header(output)[0] == "BADVERS"


@needs_dig
def test_dig_refused_from_outside_recursion_clients(server):
    """dig -b 127.0.0.2: recursion REFUSED, no ra flag; from 127.0.0.1 answered with ra."""
    status, flags = header(dig(server, "-b", OUTSIDER, "www.example.org", "A"))
    assert status == "REFUSED" and "ra" not in flags
    status, flags = header(dig(server, "www.example.org", "A"))
    assert status == "NOERROR" and "ra" in flags


def test_zone_transfer_refused(server):
    """AXFR over TCP is REFUSED."""
    assert tcp(server, "example.test", "AXFR").rcode() == dns.rcode.REFUSED


@needs_dig
def test_dig_axfr_fails(server):
    """dig's zone transfer fails."""
    assert "; Transfer failed." in dig(server, "example.test", "AXFR")
