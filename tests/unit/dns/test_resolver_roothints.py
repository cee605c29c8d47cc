"""Root hints: the built-in list and the named.root file parser."""

from __future__ import annotations

import ipaddress

import dns.name
import pytest

from mailsuite.dns.roothints import (
    RootHintsError,
    builtin_root_hints,
    load_root_hints,
    parse_root_hints,
)

NAMED_ROOT = """\
; a shortened named.root
.                        3600000      NS    A.ROOT-SERVERS.NET.
A.ROOT-SERVERS.NET.      3600000      A     198.41.0.4
A.ROOT-SERVERS.NET.      3600000      AAAA  2001:503:ba3e::2:30
.                        3600000      NS    X.EXAMPLE.
X.EXAMPLE.               3600000      AAAA  2001:db8::53
.                        3600000      NS    NOADDRESS.EXAMPLE.
UNRELATED.EXAMPLE.       3600000      A     192.0.2.99
"""


def test_builtin_list_has_thirteen_servers_with_both_families():
    """a. to m.root-servers.net, each with one IPv4 and one IPv6 address."""
    hints = builtin_root_hints()
    assert [n.to_text() for n in hints.nameservers] == [
        f"{letter}.root-servers.net." for letter in "abcdefghijklm"]
    for name in hints.nameservers:
        v4, v6 = (ipaddress.ip_address(a) for a in hints.addresses[name])
        assert v4.version == 4 and v6.version == 6 and v4.is_global and v6.is_global


def test_named_root_file_gives_root_ns_names_and_their_addresses():
    """NS names of the root with their A/AAAA records; unrelated records are left out."""
    hints = parse_root_hints(NAMED_ROOT)
    a, x, missing = (dns.name.from_text(n) for n in
                     ("a.root-servers.net", "x.example", "noaddress.example"))
    assert hints.nameservers == (a, x, missing)
    assert hints.addresses == {a: ("198.41.0.4", "2001:503:ba3e::2:30"),
                               x: ("2001:db8::53",)}


def test_file_without_any_addressed_server_is_refused():
    """Hints naming servers but no addresses cannot start a resolution."""
    with pytest.raises(RootHintsError, match="no root server"):
        parse_root_hints(".  3600000 NS a.root-servers.net.\n")


def test_malformed_file_is_one_readable_error():
    """A line that does not parse gives RootHintsError, not a dnspython exception."""
    with pytest.raises(RootHintsError, match="do not parse"):
        parse_root_hints(". 3600000 NS\n")


def test_load_without_path_is_the_builtin_list(tmp_path):
    """No path (None or "") means the built-in list; a missing file is a RootHintsError."""
    assert load_root_hints(None) == builtin_root_hints() == load_root_hints("")
    with pytest.raises(RootHintsError, match="cannot read"):
        load_root_hints(str(tmp_path / "absent.root"))
