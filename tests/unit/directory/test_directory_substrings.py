"""The substring index of the embedded directory: answers agree with a scan, and follow changes."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailsuite.directory import substring_index
from mailsuite.directory.embedded import EmbeddedDirectory
from mailsuite.directory.entry import Entry
from mailsuite.directory.substring_index import SubstringIndex
from mailsuite.ldap.filters import Substrings, substring_match

BASE = "dc=example,dc=test"
PEOPLE = "ou=people," + BASE
SEED = (
    f"dn: {BASE}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\n"
    f"dc: example\no: example\n\n"
    f"dn: {PEOPLE}\nobjectClass: top\nobjectClass: organizationalUnit\nou: people\n\n"
).encode()


def person(uid, cn, **extra):
    attrs = {"objectClass": ["top", "inetOrgPerson"], "uid": [uid], "cn": [cn],
             "sn": [cn.split()[-1]], "mail": [f"{uid}@example.test"]}
    attrs.update(extra)
    return Entry(f"uid={uid},{PEOPLE}", attrs)


@pytest.fixture
def directory():
    d = EmbeddedDirectory(None, domains=["example.test"], base_dn=BASE, seed_ldif=SEED)
    d.add_entry(person("alice", "Alice Liddell", givenName=["Alice"]))
    d.add_entry(person("bob", "Bob Builder", displayName=["Bobby B"]))
    yield d
    d.close()


def uid_dn(uid):
    return f"uid={uid},{PEOPLE}".lower()


def brute_force(entries, attribute, initial, middle, final):
    f = Substrings(attribute, initial, tuple(middle), final)
    return {e.ndn for e in entries
            if any(isinstance(v, str) and substring_match(v, f) for v in e.get(attribute))}


# Small alphabets make collisions, shared trigrams and overlapping components common.
_text = st.text(alphabet="abAB ßs.@", max_size=8)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.lists(_text, min_size=0, max_size=3), min_size=1, max_size=12),
       initial=st.none() | _text, middle=st.lists(_text, max_size=3), final=st.none() | _text)
def test_lookup_agrees_with_a_scan(values, initial, middle, final):
    """Whenever the index answers, it names exactly the entries a scan of the values matches."""
    entries = [Entry(f"cn=e{k},{BASE}", {"cn": cns, "objectClass": ["top"]})
               for k, cns in enumerate(values)]
    index = SubstringIndex()
    index.rebuild(entries)
    by_ndn = {e.ndn: e for e in entries}
    found = index.lookup("cn", initial, middle, final, entry_of=by_ndn.get)
    if initial is None and final is None and not middle:
        return
    if found is not None:
        assert found == brute_force(entries, "cn", initial, middle, final)


@settings(max_examples=100, deadline=None)
@given(initial=st.text(alphabet="abAB", min_size=3, max_size=6))
def test_lookup_uses_the_index_for_indexable_components(initial):
    """A component of three or more characters is answered from the index, not by a scan."""
    index = SubstringIndex()
    entry = Entry(f"cn=x,{BASE}", {"cn": ["ab" + initial]})
    index.add(entry)
    assert index.lookup("cn", None, (initial,), None, entry_of={entry.ndn: entry}.get) == {
        entry.ndn}


def test_short_initial_uses_the_prefix_index(directory):
    """An initial component of one or two characters is answered from the prefix keys."""
    assert directory.ndns_with_substrings("cn", "al", (), None) == {uid_dn("alice")}
    assert directory.ndns_with_substrings("cn", "B", (), None) == {uid_dn("bob")}


def test_short_any_alone_needs_a_scan(directory):
    """With only components too short to index, the index gives up (None)."""
    assert directory.ndns_with_substrings("cn", None, ("li",), None) is None


def test_unindexed_attribute_needs_a_scan(directory):
    """A substring on an attribute outside the index, held by entries, gives None."""
    assert directory.ndns_with_substrings("uid", None, ("ali",), None) is None


def test_attribute_nobody_holds_matches_nothing(directory):
    """A substring on an attribute no entry holds (Evolution's fileAs) matches no entry."""
    assert directory.ndns_with_substrings("fileAs", None, ("ali",), None) == set()


def test_lookup_folds_case_and_spaces(directory):
    """Components and values compare case-folded with runs of spaces collapsed."""
    assert directory.ndns_with_substrings("CN", None, ("E  LIDD",), None) == {uid_dn("alice")}


def test_mail_display_name_and_given_name_are_indexed(directory):
    """mail, displayName and givenName substrings are answered from the index."""
    assert directory.ndns_with_substrings("mail", None, ("ob@exa",), None) == {uid_dn("bob")}
    assert directory.ndns_with_substrings("displayName", None, ("bby",), None) == {
        uid_dn("bob")}
    assert directory.ndns_with_substrings("givenName", "al", (), "ice") == {uid_dn("alice")}


def test_add_is_indexed(directory):
    """An added entry is found at once."""
    directory.add_entry(person("carol", "Carol Lewis"))
    assert directory.ndns_with_substrings("sn", None, ("lew",), None) == {uid_dn("carol")}


def test_replace_drops_old_values(directory):
    """After a replace, the old value no longer matches and the new one does."""
    directory.replace_entry(person("alice", "Alice Hargreaves"))
    assert directory.ndns_with_substrings("cn", None, ("liddell",), None) == set()
    assert directory.ndns_with_substrings("cn", None, ("hargr",), None) == {uid_dn("alice")}


def test_delete_is_unindexed(directory):
    """A deleted entry is no longer a candidate."""
    directory.delete_entry(f"uid=bob,{PEOPLE}")
    assert directory.ndns_with_substrings("cn", None, ("builder",), None) == set()


def test_rename_moves_the_entry(directory):
    """After a rename, the entry is found under its new DN only."""
    directory.rename_entry(f"uid=bob,{PEOPLE}", person("robert", "Robert Builder"))
    assert directory.ndns_with_substrings("cn", None, ("builder",), None) == {uid_dn("robert")}


def test_change_by_another_process_is_seen(tmp_path):
    """A change written through another connection to the same file is indexed on reload."""
    path = str(tmp_path / "directory.sqlite")
    first = EmbeddedDirectory(path, domains=["example.test"], base_dn=BASE, seed_ldif=SEED)
    second = EmbeddedDirectory(path, domains=["example.test"], base_dn=BASE)
    try:
        second.add_entry(person("dave", "Dave Lister"))
        assert first.ndns_with_substrings("cn", None, ("lister",), None) == {uid_dn("dave")}
    finally:
        first.close()
        second.close()


def test_many_replacements_trigger_a_rebuild_that_keeps_answers(directory, monkeypatch):
    """Once retired entries outnumber live ones, the index is rebuilt with the same answers."""
    monkeypatch.setattr(substring_index, "_MIN_RETIRED", 2)
    for k in range(6):
        directory.replace_entry(person("alice", f"Alice Version{k}"))
    assert not directory._substrings.wants_rebuild
    assert len(directory._substrings._ndn) < 10
    assert directory.ndns_with_substrings("cn", None, ("version5",), None) == {uid_dn("alice")}
    assert directory.ndns_with_substrings("cn", None, ("version4",), None) == set()


def test_index_wants_rebuild_after_retirements():
    """wants_rebuild turns true only once retired numbers outnumber the threshold."""
    index = SubstringIndex()
    entry = Entry(f"cn=x,{BASE}", {"cn": ["x"]})
    for _ in range(substring_index._MIN_RETIRED + 1):
        index.add(entry)
    assert not index.wants_rebuild
    index.add(entry)
    assert index.wants_rebuild
    index.rebuild([entry])
    assert not index.wants_rebuild


class StepClock:
    """Runs calls scheduled with callLater one at a time, when the test says so."""

    def __init__(self):
        self.calls = []

    def callLater(self, delay, f, *args):
        call = _Call(f, args)
        self.calls.append(call)
        return call

    def step(self) -> bool:
        """Run the oldest pending call; False if there was none."""
        while self.calls:
            call = self.calls.pop(0)
            if call.active():
                call.done = True
                call.f(*call.args)
                return True
        return False


class _Call:
    def __init__(self, f, args):
        self.f, self.args, self.done, self.cancelled = f, args, False, False

    def active(self):
        return not (self.done or self.cancelled)

    def cancel(self):
        self.cancelled = True


def test_index_is_built_at_the_first_lookup_without_a_builder(directory):
    """After a load the index is pending; the first substring lookup builds and answers."""
    directory.reload()
    assert not directory.substring_index_ready
    assert directory.ndns_with_substrings("cn", None, ("lidd",), None) == {uid_dn("alice")}
    assert directory.substring_index_ready


def test_background_build_answers_none_until_ready(directory):
    """While built in steps, lookups answer None (scan); once done, the index answers."""
    directory.reload()
    clock = StepClock()
    directory.build_indexes_in_background(clock, step=1)
    assert directory.ndns_with_substrings("cn", None, ("lidd",), None) is None
    assert clock.step()
    assert not directory.substring_index_ready
    while clock.step():
        pass
    assert directory.substring_index_ready
    assert directory.ndns_with_substrings("cn", None, ("lidd",), None) == {uid_dn("alice")}


def test_changes_during_the_background_build_are_indexed(directory):
    """Entries added, replaced and deleted while the index is built are answered right."""
    directory.reload()
    clock = StepClock()
    directory.build_indexes_in_background(clock, step=1)
    clock.step()
    directory.add_entry(person("carol", "Carol Lewis"))
    directory.replace_entry(person("alice", "Alice Pleasance"))
    directory.delete_entry(f"uid=bob,{PEOPLE}")
    while clock.step():
        pass
    assert directory.ndns_with_substrings("cn", None, ("lewis",), None) == {uid_dn("carol")}
    assert directory.ndns_with_substrings("cn", None, ("pleas",), None) == {uid_dn("alice")}
    assert directory.ndns_with_substrings("cn", None, ("lidd",), None) == set()
    assert directory.ndns_with_substrings("cn", None, ("build",), None) == set()


def test_reload_restarts_the_background_build(directory):
    """A reload (a change by another process) starts the index again in the background."""
    clock = StepClock()
    directory.build_indexes_in_background(clock, step=100)
    while clock.step():
        pass
    directory.reload()
    assert directory.ndns_with_substrings("cn", None, ("lidd",), None) is None
    while clock.step():
        pass
    assert directory.ndns_with_substrings("cn", None, ("lidd",), None) == {uid_dn("alice")}


def test_close_cancels_the_pending_step(directory):
    """Closing the directory cancels the next building step."""
    directory.reload()
    clock = StepClock()
    directory.build_indexes_in_background(clock, step=1)
    directory.close()
    assert not clock.step()
