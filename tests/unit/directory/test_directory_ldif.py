"""LDIF parsing and writing (RFC 2849) and the Entry model."""

import base64
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailsuite.directory import ldif
from mailsuite.directory.entry import DNError, Entry, is_under, normalize_dn, parent_of_normalized
from mailsuite.directory.ldif import LDIFError, parse_ldif, write_ldif
from mailsuite.interfaces import InvalidEntry


def test_parses_version_comments_and_records():
    """Version line and comments are skipped; blank lines separate records."""
    data = (
        b"version: 1\n\n# a comment\n#  folded comment\ndn: dc=example,dc=test\n"
        b"objectClass: top\ndc: example\n\n\n"
        b"dn: ou=people,dc=example,dc=test\nobjectClass: organizationalUnit\nou: people\n"
    )
    entries = parse_ldif(data)
    assert [e.dn for e in entries] == ["dc=example,dc=test", "ou=people,dc=example,dc=test"]
    assert entries[1].get("ou") == ["people"]


def test_last_record_without_trailing_newline():
    """A final record with no blank line (or no newline at all) after it is kept."""
    entries = parse_ldif(b"dn: cn=a,dc=t\ncn: a\nobjectClass: top")
    assert entries[0].first("objectclass") == "top"


def test_version_line_directly_before_first_dn():
    """'version: 1' followed at once by the first record is accepted."""
    assert parse_ldif(b"version: 1\ndn: cn=a\ncn: a\n")[0].dn == "cn=a"


def test_folded_lines_are_joined():
    """A line starting with one space continues the previous line (the space dropped)."""
    entries = parse_ldif(b"dn: cn=a\ndescription: hello\n  world\n wide\ncn: a\n")
    assert entries[0].get("description") == ["hello worldwide"]


def test_crlf_line_ends():
    """CRLF line ends parse like LF."""
    entries = parse_ldif(b"dn: cn=a\r\ncn: a\r\n\r\ndn: cn=b\r\ncn: b\r\n")
    assert [e.first("cn") for e in entries] == ["a", "b"]


def test_base64_values_are_decoded():
    """'::' values are base64: UTF-8 text becomes str, other bytes stay bytes."""
    text = base64.b64encode("Zoë".encode()).decode()
    data = f"dn:: {base64.b64encode(b'cn=z').decode()}\ncn:: {text}\njpegPhoto:: /9j/AA==\n"
    entry = parse_ldif(data.encode())[0]
    assert entry.dn == "cn=z"
    assert entry.get("cn") == ["Zoë"]
    assert entry.get("jpegPhoto") == [b"\xff\xd8\xff\x00"]


def test_changetype_add_is_accepted():
    """'changetype: add' after the DN makes a plain entry."""
    entry = parse_ldif(b"dn: cn=a\nchangetype: add\ncn: a\n")[0]
    assert not entry.has("changetype") and entry.get("cn") == ["a"]


@pytest.mark.parametrize(
    "data,line",
    [
        (b"dn: cn=a\ncn: a\n\ndn: cn=b\nchangetype: modify\nreplace: cn\n", 5),
        (b"dn: cn=a\njpegPhoto:< file:///etc/passwd\n", 2),
        (b"dn: cn=a\ncn:: ***\n", 2),
        (b"cn: a\n", 1),
        (b"dn: cn=a\nno colon here\n", 2),
        (b"dn: cn=a\n", 1),
        (b"dn: cn=a\ncontrol: 1.2.3\ncn: a\n", 2),
        (b"version: 2\ndn: cn=a\ncn: a\n", 1),
        (b"dn: cn=a\nbad attr: x\n", 2),
        (b"dn: not a dn\ncn: a\n", 1),
        (b"dn: cn=a\ncn: \xff\n", 2),
        (b"\n dangling\n", 2),
        (b"dn: cn=a\ncn: a\ncn\n", 3),
    ],
)
def test_refused_input_names_the_line(data, line):
    """Unsupported or malformed input raises LDIFError carrying the offending line number."""
    with pytest.raises(LDIFError) as caught:
        parse_ldif(data)
    assert caught.value.line == line
    assert f"line {line}" in str(caught.value)


def test_ldif_error_is_an_invalid_entry():
    """LDIFError is a DirectoryError (InvalidEntry), so admin callers catch one family."""
    assert issubclass(LDIFError, InvalidEntry)


def test_writer_base64_encodes_unsafe_values():
    """Values that are not SAFE-STRINGs (leading space/colon/<, trailing space, non-ASCII) use '::'."""
    entry = Entry("cn=a", {"cn": ["a"], "d": [" lead", ":colon", "<lt", "trail ", "ünï", "ok"]})
    out = write_ldif([entry]).decode()
    assert out.count("d:: ") == 5 and "d: ok" in out


def test_writer_folds_at_76_columns():
    """No written line is longer than 76 characters."""
    entry = Entry("cn=a", {"cn": ["a"], "description": ["x" * 500]})
    out = write_ldif([entry])
    assert max(len(line) for line in out.split(b"\n")) <= 76


def test_round_trip_preserves_entries():
    """write_ldif then parse_ldif gives back equal entries, binary values included."""
    entries = [
        Entry("dc=example,dc=test", {"objectClass": ["top", "dcObject"], "dc": ["example"]}),
        Entry("cn=Zoë Ünïcode,dc=example,dc=test", {
            "cn": ["Zoë Ünïcode"], "description": ["line1\nline2", " spaced ", "y" * 300],
            "jpegPhoto": [bytes(range(256))], "empty": [""],
        }),
    ]
    again = parse_ldif(write_ldif(entries))
    assert again == entries
    assert [e.dn for e in again] == [e.dn for e in entries]


def test_parsing_is_fast_for_ten_thousand_entries():
    """10,000 entries parse well under a second (linear time)."""
    record = "dn: uid=u{0},ou=people,dc=example,dc=test\nobjectClass: inetOrgPerson\n" \
             "uid: u{0}\ncn: User {0}\nsn: {0}\nmail: u{0}@example.test\n\n"
    data = "".join(record.format(i) for i in range(10_000)).encode()
    start = time.perf_counter()
    entries = parse_ldif(data)
    assert len(entries) == 10_000
    assert time.perf_counter() - start < 1.0


# Lines to build LDIF from: valid ones, folds, comments, blank and odd lines, errors.
_LINES = [b"dn: cn=a,dc=t", b"dn: cn=b", b"dn:: Y249Yg==", b"cn: a", b"CN: x", b"sn:: w6k=",
          b"jpegPhoto:: /w==", b"", b" ", b"  x", b" y", b"#c", b"version: 1", b"version: 2",
          b"changetype: add", b"changetype: modify", b"control: 1", b"cn:", b"cn:  spaced",
          b"bad attr: x", b"noColon", b"x:< file:/", b"dn: bad", b"mail: \xc3\xa9", b"\xff",
          b"cn: a\r", b"\r", b"o: x:y", b"dn", b"cn:: ***", b"dn: cn=x\\,y+sn=z,dc=t"]


def _outcome(parse, data):
    try:
        entries = parse(data)
    except LDIFError as e:
        return ("error", e.line)
    return ("ok", [(e.dn, list(e.attributes.items())) for e in entries])


@settings(max_examples=500, deadline=None)
@given(lines=st.lists(st.sampled_from(_LINES), max_size=12), newline=st.booleans())
def test_fast_parser_agrees_with_the_line_parser(lines, newline):
    """parse_ldif (whole records at a time, the line parser for anything unusual) gives the
    same entries, or the same error line, as parsing line by line."""
    data = b"\n".join(lines) + (b"\n" if newline else b"")
    assert _outcome(parse_ldif, data) == _outcome(ldif._parse_lines, data)


# --------------------------------------------------------------------------- Entry / DNs


def test_attribute_access_is_case_insensitive():
    """get, first and has ignore the case of attribute names."""
    entry = Entry("cn=a", {"mailLocalAddress": ["x@t"], "CN": ["a"]})
    assert entry.get("maillocaladdress") == ["x@t"]
    assert entry.first("cn") == "a"
    assert entry.first("sn", "none") == "none"
    assert entry.has("MAILLOCALADDRESS")


def test_object_classes_compare_case_insensitively():
    """has_object_class matches whatever case the values were written in."""
    assert Entry("cn=a", {"objectClass": ["InetOrgPerson"]}).has_object_class("inetorgperson")


def test_with_values_returns_a_new_entry():
    """Changing an attribute returns a copy and leaves the original alone."""
    entry = Entry("cn=a", {"cn": ["a"]})
    changed = entry.with_added("mail", ["a@t"]).with_removed("cn", ["A"])
    assert entry.get("mail") == [] and entry.get("cn") == ["a"]
    assert changed.get("mail") == ["a@t"] and not changed.has("cn")


@pytest.mark.parametrize(
    "dn,normal",
    [
        ("UID=Alice, OU=People ,DC=Example,DC=Test", "uid=alice,ou=people,dc=example,dc=test"),
        ("cn=Smith\\, John,dc=t", "cn=smith\\, john,dc=t"),
        ("cn=\\53mith,dc=t", "cn=smith,dc=t"),
        ("cn=a+sn=b,dc=t", "cn=a+sn=b,dc=t"),
        ("sn=B+cn=A,dc=t", "cn=a+sn=b,dc=t"),
        ("cn=\\ lead\\ ,dc=t", "cn=\\ lead\\ ,dc=t"),
        ("cn=trail   ,dc=t", "cn=trail,dc=t"),
        ("cn=caf\\C3\\A9,dc=t", "cn=café,dc=t"),
        ("", ""),
    ],
)
def test_normalize_dn(dn, normal):
    """DNs normalise per RFC 4514: case, spaces, escapes and multi-valued RDN order."""
    assert normalize_dn(dn) == normal


@pytest.mark.parametrize("dn", ["cn", "cn=a,", "=a", "cn=a\\", 'cn="q"', "c n=a"])
def test_malformed_dn_is_refused(dn):
    """Malformed DNs raise DNError (an InvalidEntry)."""
    with pytest.raises(DNError):
        normalize_dn(dn)


def test_parent_and_is_under_respect_escaped_commas():
    """An escaped comma does not split RDNs when finding parents or checking the base."""
    ndn = normalize_dn("cn=a\\,dc=example,dc=test")
    assert parent_of_normalized(ndn) == "dc=test"
    assert not is_under(ndn, "dc=example,dc=test")
    assert is_under("uid=a,dc=example,dc=test", "dc=example,dc=test")
    assert not is_under("uid=a,dc=xexample,dc=test", "dc=example,dc=test")


def test_with_values_unchanged_returns_the_same_entry():
    """Setting an attribute to the values it has returns the entry itself (no copy)."""
    entry = Entry("cn=a", {"cn": ["a"], "sn": ["b"]})
    assert entry.with_values("CN", ["a"]) is entry
    assert entry.with_values("cn", ["A"]).get("cn") == ["A"]


def test_values_and_items_give_the_stored_values():
    """values() and items() expose the values without copying; get() returns a copy."""
    entry = Entry("cn=a", {"cn": ["a", "b"]})
    assert entry.values("CN") == ("a", "b") and entry.values("sn") == ()
    assert list(entry.items()) == [("cn", ("a", "b"))]
    entry.get("cn").append("c")
    assert entry.get("cn") == ["a", "b"]


def test_trusted_entry_equals_a_checked_one():
    """Entry.trusted builds the same entry as the checking constructor, given the same data."""
    checked = Entry("CN=A,dc=t", {"cn": ["A"], "objectClass": ["top"]})
    trusted = Entry.trusted("CN=A,dc=t", {"cn": ("cn", ("A",)),
                                          "objectclass": ("objectClass", ("top",))})
    assert trusted == checked and trusted.names() == ["cn", "objectClass"]
    assert trusted.ndn == "cn=a,dc=t"


def test_parsed_entries_share_names_and_object_classes():
    """Parsed entries share one string per attribute name and per objectClass value."""
    first, second = parse_ldif(b"dn: cn=a\nobjectClass: top\ncn: a\n\n"
                               b"dn: cn=b\nobjectClass: top\ncn: b\n")
    assert first.names()[0] is second.names()[0]
    assert first.values("objectClass")[0] is second.values("objectClass")[0]
