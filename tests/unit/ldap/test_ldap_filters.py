"""Filter conversion from ldaptor objects and three-valued evaluation against entries."""

import pytest
from ldaptor import ldapfilter
from ldaptor.protocols import pureldap

from mailsuite.directory.entry import Entry
from mailsuite.ldap.filters import (
    FilterError, Substrings, evaluate, from_ldaptor, matches, substring_match,
)

ALICE = Entry("uid=alice,dc=x", {
    "objectClass": ["inetOrgPerson"], "cn": ["Alice Liddell"], "sn": ["Liddell"],
    "uid": ["alice"], "employeeNumber": ["42"], "userPassword": ["{SSHA}abc"],
})


def f(text):
    return from_ldaptor(ldapfilter.parseFilter(text))


def every(_):
    return True


@pytest.mark.parametrize("text, expected", [
    ("(cn=alice liddell)", True),
    ("(cn=Alice)", False),
    ("(cn=*)", True),
    ("(mail=*)", False),
    ("(cn=Alice L*d*l)", True),
    ("(cn=*iddell)", True),
    ("(cn=A*e*e*l)", True),
    ("(cn=*lid*dell*)", True),
    ("(sn=Li*ll*ll)", False),
    ("(employeeNumber>=5)", True),
    ("(employeeNumber<=5)", False),
    ("(cn~=aliceliddell)", True),
    ("(&(uid=alice)(!(sn=Smith)))", True),
    ("(|(uid=bob)(sn=liddell))", True),
    ("(!(uid=alice))", False),
])
def test_filter_table(text, expected):
    """Each filter type matches (or not) the sample entry as RFC 4511 §4.5.1.7 says."""
    assert matches(f(text), ALICE, every) is expected


def test_substring_parts_do_not_overlap():
    """The initial and final parts may not share characters: (x=ab*bc) misses "abc"."""
    assert not substring_match("abc", Substrings("x", "ab", (), "bc"))


def test_unreadable_attribute_is_undefined():
    """A filter on an attribute the client may not read is Undefined, and so is its NOT."""
    hidden = lambda name: name.lower() != "uid"  # noqa: E731
    assert evaluate(f("(uid=alice)"), ALICE, hidden) is None
    assert evaluate(f("(!(uid=alice))"), ALICE, hidden) is None
    assert not matches(f("(!(uid=bob))"), ALICE, hidden)


def test_or_with_undefined_and_true_is_true():
    """OR is TRUE as soon as one branch is TRUE, even when another is Undefined."""
    hidden = lambda name: name.lower() != "uid"  # noqa: E731
    assert matches(f("(|(uid=x)(sn=liddell))"), ALICE, hidden)


def test_too_deep_filter_is_refused():
    """Nesting beyond the limit raises FilterError instead of exhausting the stack."""
    node = pureldap.LDAPFilter_present(b"cn")
    for _ in range(100):
        node = pureldap.LDAPFilter_not(node)
    with pytest.raises(FilterError):
        from_ldaptor(node)
