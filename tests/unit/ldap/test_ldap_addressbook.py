"""Address-book searches (Thunderbird, Evolution) over 10,000 entries answer from the indexes."""

import random

import pytest
from ldaptor import ldapfilter
from twisted.internet import task

from mailsuite.directory.embedded import EmbeddedDirectory
from mailsuite.ldap import codec
from mailsuite.ldap.acl import ANONYMOUS, AccessPolicy
from mailsuite.ldap.filters import from_ldaptor
from mailsuite.ldap.search import SearchLimits, SearchQuery, Searcher

BASE = "dc=example,dc=test"
COUNT = 10_000
FIRST = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
LAST = ["smith", "jones", "taylor", "brown", "walker", "wright", "evans", "green", "hall"]


def thunderbird(term):
    return f"(|(cn=*{term}*)(mail=*{term}*)(sn=*{term}*)(givenName=*{term}*))"


def evolution(term):
    return (f"(|(cn={term}*)(mail={term}*)(sn={term}*)(givenName={term}*)"
            f"(fileAs={term}*)(displayName={term}*))")


def people_ldif(count):
    rnd = random.Random(7)
    records = [
        f"dn: {BASE}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\n"
        f"dc: example\no: example\n\n"
        f"dn: ou=people,{BASE}\nobjectClass: top\nobjectClass: organizationalUnit\n"
        f"ou: people\n\n"
    ]
    for i in range(count):
        given = rnd.choice(FIRST)
        sn = rnd.choice(LAST) + "".join(rnd.choice("aeioulnrst") for _ in range(3))
        records.append(
            f"dn: uid=u{i},ou=people,{BASE}\nobjectClass: top\nobjectClass: inetOrgPerson\n"
            f"uid: u{i}\ncn: {given.title()} {sn.title()}\ngivenName: {given.title()}\n"
            f"sn: {sn.title()}\nmail: {given}.{sn}{i}@example.test\n\n")
    return "".join(records).encode()


@pytest.fixture(scope="module")
def directory():
    d = EmbeddedDirectory(None, domains=["example.test"], base_dn=BASE)
    d.import_ldif(people_ldif(COUNT))
    yield d
    d.close()


class Spy:
    """The directory, counting the entries a search fetches; lacks the substring hook if asked."""

    def __init__(self, directory, *, indexed=True):
        self._d = directory
        self.fetched = 0
        self.scanned = 0
        if indexed:
            self.ndns_with_substrings = directory.ndns_with_substrings

    def get(self, dn):
        self.fetched += 1
        return self._d.get(dn)

    def entries(self):
        found = self._d.entries()
        self.scanned += len(found)
        return found

    def children(self, dn):
        return self._d.children(dn)


def search(directory, text, *, size_limit=0):
    searcher = Searcher(directory=directory, policy=AccessPolicy(base_ndn=BASE), base_dn=BASE,
                        clock=task.Clock(), limits=SearchLimits(max_size=COUNT))
    query = SearchQuery(BASE, codec.SCOPE_SUB, from_ldaptor(ldapfilter.parseFilter(text)),
                        size_limit, 0)
    return searcher.search(ANONYMOUS, query)


def dns(result):
    return [e.ndn for e in result.entries]


@pytest.mark.parametrize("term", ["walk", "smith", "Grace", "ace.s", "u7@", "zzqx"])
def test_thunderbird_query_matches_a_scan(directory, term):
    """The indexed Thunderbird query returns the same entries, in order, as a full scan."""
    indexed, scanned = Spy(directory), Spy(directory, indexed=False)
    assert dns(search(indexed, thunderbird(term))) == dns(search(scanned, thunderbird(term)))
    assert scanned.scanned > COUNT


def test_thunderbird_query_fetches_only_matching_entries(directory):
    """The Thunderbird query fetches only the entries that match (beside the base), never all."""
    spy = Spy(directory)
    result = search(spy, thunderbird("smith"))
    assert spy.scanned == 0
    assert 0 < len(result.entries) < COUNT // 5
    assert spy.fetched == len(result.entries) + 1


def test_thunderbird_query_with_size_limit(directory):
    """With a size limit, the indexed query stops there with sizeLimitExceeded."""
    spy = Spy(directory)
    result = search(spy, thunderbird("a"), size_limit=20)
    assert (result.code, len(result.entries)) == (codec.SIZE_LIMIT_EXCEEDED, 20)


def test_evolution_prefix_query_uses_the_index(directory):
    """Evolution's prefix query, with an attribute nobody holds, is answered without a scan."""
    indexed, scanned = Spy(directory), Spy(directory, indexed=False)
    result = search(indexed, evolution("ju"))
    assert indexed.scanned == 0
    assert result.entries
    assert dns(result) == dns(search(scanned, evolution("ju")))


def test_short_any_component_falls_back_to_a_scan(directory):
    """A one-letter Thunderbird query, with nothing to index, still answers by scanning."""
    spy = Spy(directory)
    result = search(spy, thunderbird("q"))
    assert spy.scanned > 0
    assert all("q" in (e.first("cn") + e.first("mail")).lower() for e in result.entries)
