"""
BIND zone files: read with dnspython, merged into the generated zones, errors as one line.
Includes the cases twisted.names' parser gets wrong (FINDINGS.md, Twisted #5470).
"""

import os

import dns.rcode
import dns.rdatatype
import pytest

from mailsuite.dns.authority import Authority
from mailsuite.dns.zones import ZoneFileError, build_zones, load_zone_file

from .dns_fakes import HOSTNAME, name, write

SOA_ONE_LINE = """\
$ORIGIN oneline.test.
$TTL 120
@ IN SOA ns1.oneline.test. hostmaster.oneline.test. ( 7 3600 900 1209600 60 )
@ IN NS ns1
ns1 IN A 192.0.2.7
"""


def rdata(zone, owner, rdtype):
    return list(zone.get_rdataset(name(owner), dns.rdatatype.from_text(rdtype)) or [])


def test_one_line_parenthesised_soa(tmp_path):
    """A SOA with all fields inside "( … )" on one line is read field by field."""
    zone = load_zone_file(write(tmp_path, "z", SOA_ONE_LINE))
    [soa] = rdata(zone, "oneline.test", "SOA")
    assert (soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum) == (
        7, 3600, 900, 1209600, 60)
    assert soa.mname == name("ns1.oneline.test")


def test_quoted_txt_keeps_spaces(tmp_path):
    """A quoted TXT string with spaces stays one string; several quoted strings stay apart."""
    zone = load_zone_file(write(tmp_path, "z", SOA_ONE_LINE
                                + 'txt TXT "hello world, with spaces" "second part"\n'))
    [txt] = rdata(zone, "txt.oneline.test", "TXT")
    assert txt.strings == (b"hello world, with spaces", b"second part")


def test_relative_cname_target_is_qualified(tmp_path):
    """A relative CNAME target is completed with the origin."""
    zone = load_zone_file(write(tmp_path, "z", SOA_ONE_LINE + "www CNAME web\nweb A 192.0.2.8\n"))
    [cname] = rdata(zone, "www.oneline.test", "CNAME")
    assert cname.target == name("web.oneline.test")
    answer = Authority([zone]).answer(name("www.oneline.test"), dns.rdatatype.A)
    assert [r.to_text() for r in answer.answer] == [
        "www.oneline.test. 120 IN CNAME web.oneline.test.",
        "web.oneline.test. 120 IN A 192.0.2.8"]


def test_relative_mx_and_srv_targets_are_qualified(tmp_path):
    """Relative MX and SRV targets get the origin too, and their glue is in additional."""
    zone = load_zone_file(write(tmp_path, "z", SOA_ONE_LINE
                                + "@ MX 5 mx\n_imap._tcp SRV 0 1 143 mx\nmx A 192.0.2.9\n"))
    [mx] = rdata(zone, "oneline.test", "MX")
    assert mx.exchange == name("mx.oneline.test")
    answer = Authority([zone]).answer(name("_imap._tcp.oneline.test"), dns.rdatatype.SRV)
    assert "mx.oneline.test. 120 IN A 192.0.2.9" in [r.to_text() for r in answer.additional]


def test_out_of_zone_records_are_never_served(tmp_path):
    """A record outside the file's origin is not loaded, so no answer is given for it."""
    path = write(tmp_path, "z", SOA_ONE_LINE + "www.elsewhere.test. A 203.0.113.1\n")
    zones = build_zones(domains=["example.test"], hostname=HOSTNAME, zone_files=[path])
    authority = Authority(zones)
    assert authority.answer(name("www.elsewhere.test"), dns.rdatatype.A) is None
    assert all(n.is_subdomain(z.origin) for z in zones for n in z.nodes)


def test_origin_argument_when_file_has_none(tmp_path):
    """Without $ORIGIN, the origin given to load_zone_file is used."""
    zone = load_zone_file(write(tmp_path, "z", "@ 60 NS ns1\nns1 60 A 192.0.2.1\n"),
                          origin="given.test")
    assert zone.origin == name("given.test")
    assert [r.to_text() for r in rdata(zone, "ns1.given.test", "A")] == ["192.0.2.1"]


def test_file_for_local_domain_adds_and_overrides(tmp_path):
    """A file whose origin is a local domain adds names and replaces same-type records."""
    path = write(tmp_path, "local.zone", "$ORIGIN example.test.\n$TTL 60\n"
                 "@ TXT \"v=spf1 ip4:192.0.2.0/24 -all\"\n"
                 "extra A 192.0.2.77\n"
                 "autoconfig A 192.0.2.78\n")
    [zone] = build_zones(domains=["example.test"], hostname=HOSTNAME, zone_files=[path])
    assert [r.to_text() for r in rdata(zone, "example.test", "TXT")] == [
        '"v=spf1 ip4:192.0.2.0/24 -all"']
    assert [r.to_text() for r in rdata(zone, "extra.example.test", "A")] == ["192.0.2.77"]
    # An address at a generated CNAME's name replaces the CNAME (no CNAME-and-other-data).
    assert rdata(zone, "autoconfig.example.test", "CNAME") == []
    assert rdata(zone, "example.test", "MX")  # untouched generated data stays


def test_added_records_change_the_generated_serial(tmp_path):
    """Records from a file are part of the serial of the generated zone."""
    plain = build_zones(domains=["example.test"], hostname=HOSTNAME)[0]
    path = write(tmp_path, "local.zone", "$ORIGIN example.test.\nextra 60 A 192.0.2.77\n")
    merged = build_zones(domains=["example.test"], hostname=HOSTNAME, zone_files=[path])[0]
    serial = lambda z: rdata(z, "example.test", "SOA")[0].serial  # noqa: E731
    assert serial(plain) != serial(merged)


def test_extra_zone_without_soa_is_refused(tmp_path):
    """A whole extra zone needs its SOA and NS; the error names the file."""
    path = write(tmp_path, "bad.zone", "$ORIGIN nosoa.test.\n@ 60 NS ns1\n")
    with pytest.raises(ZoneFileError) as raised:
        build_zones(domains=["example.test"], hostname=HOSTNAME, zone_files=[path])
    assert str(raised.value).startswith(f"{path}: ") and "SOA" in str(raised.value)


@pytest.mark.parametrize("text, problem", [
    ("$ORIGIN x.test.\n$TTL 60\n@ SOA a b ( 1 2 3\n", "unbalanced parentheses"),
    ("$ORIGIN x.test.\n$TTL 60\nfoo BOGUS 1.2.3.4\n", "unknown rdatatype"),
    ("$ORIGIN x.test.\n$TTL 60\nfoo A 1.2.3.999\n", "malformed"),
])
def test_syntax_error_names_file_and_line(tmp_path, text, problem):
    """A syntax error raises ZoneFileError "file:line: problem" on one line."""
    path = write(tmp_path, "bad.zone", text)
    with pytest.raises(ZoneFileError) as raised:
        load_zone_file(path)
    message = str(raised.value)
    assert message.startswith(f"{path}:") and problem in message and "\n" not in message
    assert message[len(path) + 1].isdigit()


def test_missing_origin_is_explained(tmp_path):
    """A file with no $ORIGIN and no origin given gets a message saying so."""
    path = write(tmp_path, "z", "foo 60 A 192.0.2.1\n")
    with pytest.raises(ZoneFileError, match=r"no \$ORIGIN"):
        load_zone_file(path)


def test_unreadable_file(tmp_path):
    """A missing file raises ZoneFileError naming it."""
    path = str(tmp_path / "missing.zone")
    with pytest.raises(ZoneFileError, match="missing.zone: cannot read"):
        load_zone_file(path)


def test_binary_file(tmp_path):
    """A file that is not UTF-8 text is refused with the line of the bad byte."""
    path = tmp_path / "bin.zone"
    path.write_bytes(b"$ORIGIN x.test.\n\xff\xfe\n")
    with pytest.raises(ZoneFileError, match=r"bin.zone:2: not UTF-8"):
        load_zone_file(str(path))


def test_negative_answer_from_file_zone_uses_its_soa_minimum(tmp_path):
    """NXDOMAIN in a file zone carries its SOA with TTL min(SOA TTL, minimum)."""
    zone = load_zone_file(write(tmp_path, "z", SOA_ONE_LINE))
    answer = Authority([zone]).answer(name("none.oneline.test"), dns.rdatatype.A)
    assert answer.rcode == dns.rcode.NXDOMAIN
    assert [r.ttl for r in answer.authority] == [60]


def test_sample_zone_file_extends_the_local_domain():
    """etc/zones/example.zone loads, adds its hosts to example.test and replaces the SPF."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    sample = os.path.join(root, "etc", "zones", "example.zone")
    authority = Authority(build_zones(domains=["example.test"], hostname=HOSTNAME,
                                      zone_files=[sample]))
    spf = authority.answer(name("example.test"), dns.rdatatype.TXT)
    assert [r.to_text() for r in spf.answer[0]] == ['"v=spf1 mx ip4:192.0.2.0/24 -all"']
    www = authority.answer(name("intranet.example.test"), dns.rdatatype.AAAA)
    assert [r.rdtype for r in www.answer] == [dns.rdatatype.CNAME, dns.rdatatype.AAAA]
    assert authority.answer(name("example.test"), dns.rdatatype.MX).answer
