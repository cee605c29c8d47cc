"""Extensible match filters (RFC 4511 §4.5.1.7.7): matching rules, dnAttributes, candidates."""

import pytest
from ldaptor import ldapfilter
from twisted.internet import task

from mailsuite.directory.entry import Entry
from mailsuite.ldap import codec, rules
from mailsuite.ldap.acl import ANONYMOUS, AccessPolicy
from mailsuite.ldap.filters import Extensible, FilterError, evaluate, from_ldaptor, from_wire
from mailsuite.ldap.search import SearchLimits, SearchQuery, Searcher, index_candidates

from .ldap_fakes import BASE, demo_directory

ALICE = Entry("uid=alice,ou=people,dc=example,dc=test", {
    "objectClass": ["top", "inetOrgPerson"], "cn": ["Alice  Liddell"], "sn": ["Liddell"],
    "uid": ["alice"], "mail": ["Alice@Example.test"], "description": ["Zoë"],
    "telephoneNumber": ["555 0100"], "uidNumber": ["1042"],
    "member": ["UID=Bob, OU=People,DC=example,DC=test"], "userPassword": ["secret"],
    "jpegPhoto": [b"\xff\xd8binary"],
})


def f(text):
    return from_ldaptor(ldapfilter.parseFilter(text))


def every(_):
    return True


@pytest.mark.parametrize("text, expected", [
    # caseIgnoreMatch, by name and by OID, with spaces collapsed
    ("(cn:caseIgnoreMatch:=alice liddell)", True),
    ("(cn:2.5.13.2:=ALICE LIDDELL)", True),
    ("(cn:CASEIGNOREMATCH:=Bob)", False),
    # caseExactMatch
    ("(cn:caseExactMatch:=Alice Liddell)", True),
    ("(cn:2.5.13.5:=alice liddell)", False),
    # IA5 rules: ASCII only
    ("(mail:caseIgnoreIA5Match:=alice@example.TEST)", True),
    ("(mail:1.3.6.1.4.1.1466.109.114.1:=alice@example.test)", False),
    ("(mail:caseExactIA5Match:=Alice@Example.test)", True),
    # distinguishedNameMatch
    ("(member:distinguishedNameMatch:=uid=bob,ou=people,dc=example,dc=test)", True),
    ("(member:2.5.13.1:=uid=carol,ou=people,dc=example,dc=test)", False),
    # octetStringMatch: byte for byte
    ("(cn:octetStringMatch:=Alice  Liddell)", True),
    ("(cn:2.5.13.17:=Alice Liddell)", False),
    # numericStringMatch: spaces ignored
    ("(telephoneNumber:numericStringMatch:=5550100)", True),
    ("(telephoneNumber:2.5.13.8:=555 0101)", False),
    # integerMatch
    ("(uidNumber:integerMatch:=1042)", True),
    ("(uidNumber:2.5.13.14:=01042)", True),
    ("(uidNumber:integerMatch:=1043)", False),
    # no rule: the attribute's equality rule
    ("(cn:=alice liddell)", True),
    ("(member:=uid=bob,ou=people,dc=example,dc=test)", True),
    ("(uidNumber:=1042)", True),
    # no type: every attribute the rule applies to
    ("(:caseExactMatch:=Liddell)", True),
    ("(:integerMatch:=1042)", True),
    ("(:caseExactMatch:=liddell)", False),
    # dnAttributes: the RDN values of the DN as well
    ("(:dn:caseIgnoreMatch:=people)", True),
    ("(ou:dn:caseIgnoreMatch:=people)", True),
    ("(cn:dn:caseIgnoreMatch:=people)", False),
    ("(:caseIgnoreMatch:=people)", False),
    ("(uid:dn:=ALICE)", True),
])
def test_rule_table(text, expected):
    """Each matching rule matches (or not) the sample entry as RFC 4517 §4.2 defines it."""
    assert evaluate(f(text), ALICE, every) is expected


@pytest.mark.parametrize("text", [
    "(cn:1.2.3.4:=x)",
    "(cn:noSuchRuleMatch:=x)",
    "(uidNumber:integerMatch:=ten)",
    "(cn:integerMatch:=5)",
    "(description:caseIgnoreIA5Match:=zoë)",
])
def test_undefined(text):
    """An unknown rule, an assertion the rule cannot read, or values it cannot read are
    Undefined, and so is their NOT (RFC 4511 §4.5.1.7)."""
    assert evaluate(f(text), ALICE, every) is None
    assert evaluate(f(f"(!{text})"), ALICE, every) is None


def test_binary_values_match_only_octet_strings():
    """A binary value takes part in octetStringMatch and is Undefined for string rules."""
    node = Extensible("octetStringMatch", "jpegPhoto", b"\xff\xd8binary")
    assert evaluate(node, ALICE, every) is True
    assert evaluate(Extensible("caseIgnoreMatch", "jpegPhoto", "x"), ALICE, every) is None


def test_password_never_matches():
    """userPassword never matches an extensible filter, with or without a type."""
    policy = AccessPolicy(base_ndn=BASE)
    readable = lambda name: policy.may_filter(ANONYMOUS, ALICE.ndn, name)  # noqa: E731
    admin = lambda name: name.lower() != "userpassword"  # noqa: E731
    for check in (readable, admin):
        assert not evaluate(f("(userPassword:octetStringMatch:=secret)"), ALICE, check)
        assert not evaluate(f("(:octetStringMatch:=secret)"), ALICE, check)
        assert not evaluate(f("(userPassword:=secret)"), ALICE, check)


def test_unreadable_attribute_is_undefined_but_dn_still_matches():
    """A hidden attribute is Undefined; with dnAttributes, the visible DN may still match."""
    hidden = lambda name: name.lower() != "uid"  # noqa: E731
    assert evaluate(f("(uid:caseIgnoreMatch:=alice)"), ALICE, hidden) is None
    assert evaluate(f("(uid:dn:caseIgnoreMatch:=alice)"), ALICE, hidden) is True
    assert evaluate(f("(uid:dn:caseIgnoreMatch:=bob)"), ALICE, hidden) is None
    assert evaluate(f("(:caseExactMatch:=alice)"), ALICE, hidden) is False


def test_wire_and_ldaptor_agree():
    """fastber's filter tree and ldaptor's objects convert to the same Extensible."""
    tree = ("extensible", b"caseExactMatch", b"cn", b"Alice", True)
    assert from_wire(tree) == f("(cn:dn:caseExactMatch:=Alice)") == Extensible(
        "caseExactMatch", "cn", "Alice", True)


def test_neither_type_nor_rule_is_malformed():
    """RFC 4511 §4.5.1.7.7: without a matching rule the type must be present."""
    with pytest.raises(FilterError):
        from_wire(("extensible", None, None, b"x", True))


def test_rule_lookup():
    """Rules are found by OID and by name in any case; unknown ones are None."""
    assert rules.find("2.5.13.5") is rules.find("CaseExactMatch") is rules.CASE_EXACT
    assert rules.find("1.3.6.1.4.1.1466.109.114.2") is rules.CASE_IGNORE_IA5
    assert rules.find("substringsMatch") is None
    assert rules.equality_rule("MAIL") is rules.CASE_IGNORE_IA5
    assert rules.equality_rule("cn") is rules.CASE_IGNORE


# ----------------------------------------------------------------------- candidates


class Spy:
    """The demo directory, counting full scans."""

    def __init__(self):
        self._d = demo_directory()
        self.scans = 0
        self.ndns_with_value = self._d.ndns_with_value
        self.ndns_with_substrings = self._d.ndns_with_substrings

    def get(self, dn):
        return self._d.get(dn)

    def entries(self):
        self.scans += 1
        return self._d.entries()

    def children(self, dn):
        return self._d.children(dn)


def search(directory, text, *, size_limit=0):
    searcher = Searcher(directory=directory, policy=AccessPolicy(base_ndn=BASE), base_dn=BASE,
                        clock=task.Clock(), limits=SearchLimits())
    query = SearchQuery(BASE, codec.SCOPE_SUB, f(text), size_limit, 0)
    return searcher.search(ANONYMOUS, query)


@pytest.mark.parametrize("text", [
    "(mail:caseExactIA5Match:=alice@example.test)",
    "(mail:=alice@example.test)",
    "(mail:caseIgnoreMatch:=ALICE@example.test)",
    "(&(cn:caseExactMatch:=Alice Liddell)(mail=alice@example.test))",
])
def test_indexed_attribute_with_equality_like_rule_uses_the_index(text):
    """An equality-like rule on an indexed attribute (or an indexed conjunct) needs no scan."""
    spy = Spy()
    result = search(spy, text)
    assert spy.scans == 0
    assert [e.first("uid") for e in result.entries] == ["alice"]


@pytest.mark.parametrize("text", [
    "(uid:dn:caseIgnoreMatch:=alice)",
    "(uid:numericStringMatch:=12 34)",
    "(cn:caseExactMatch:=Alice Liddell)",
    "(:caseExactMatch:=alice@example.test)",
])
def test_other_extensible_items_scan(text):
    """dnAttributes, rules the index cannot serve, unindexed attributes and type-less items
    are answered by a scan."""
    spy = Spy()
    search(spy, text)
    assert spy.scans == 1


def test_candidates_are_a_superset_for_case_exact_rules():
    """The case-folding index still finds an exact-case match, and the filter then decides."""
    spy = Spy()
    node = Extensible("caseExactIA5Match", "mail", "ALICE@EXAMPLE.TEST")
    assert index_candidates(spy, node) == {"uid=alice,ou=people,dc=example,dc=test"}
    assert search(spy, "(mail:caseExactIA5Match:=ALICE@EXAMPLE.TEST)").entries == []


def test_dn_attributes_search_finds_the_subtree_of_people():
    """(:dn:2.5.13.2:=people) finds ou=people and the entries below it."""
    result = search(demo_directory(), "(:dn:2.5.13.2:=people)")
    assert sorted(e.ndn for e in result.entries) == [
        "ou=people,dc=example,dc=test",
        "uid=alice,ou=people,dc=example,dc=test",
        "uid=bob,ou=people,dc=example,dc=test",
    ]


@pytest.mark.parametrize("text", ["(uid=ali  ce)", "(uid:caseIgnoreMatch:=straße)",
                                  "(mail:=a\tb@example.test)"])
def test_values_the_index_would_look_up_differently_are_scanned(text):
    """Runs of spaces and characters whose case folding differs from lower-casing would be
    looked up under another key than the filter compares: such items scan instead."""
    spy = Spy()
    search(spy, text)
    assert spy.scans == 1
