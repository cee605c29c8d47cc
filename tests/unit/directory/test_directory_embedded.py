"""The embedded directory as IDirectory: resolve, expand, logins and passwords."""

from pathlib import Path

import pytest
from twisted.internet import defer
from zope.interface.verify import verifyObject

from mailsuite.directory.embedded import EmbeddedDirectory
from mailsuite.directory.entry import Entry
from mailsuite.interfaces import IDirectory, IDirectoryAdmin, RecipientKind

SEED = (Path(__file__).parents[3] / "etc" / "directory.ldif").read_bytes()
BASE = "dc=example,dc=test"
PEOPLE = "ou=people," + BASE
GROUPS = "ou=groups," + BASE


def person(uid, **extra):
    attrs = {
        "objectClass": ["top", "inetOrgPerson", "inetLocalMailRecipient"],
        "uid": [uid], "cn": [uid], "sn": [uid], "mail": [f"{uid}@example.test"],
        "userPassword": [f"{uid}-password"],
    }
    attrs.update(extra)
    return Entry(f"uid={uid},{PEOPLE}", attrs)


def group(cn, members, mail=True):
    attrs = {"objectClass": ["top", "groupOfNames"], "cn": [cn],
             "member": [m if "=" in m else f"uid={m},{PEOPLE}" for m in members]}
    if mail:
        attrs["mail"] = [f"{cn}@example.test"]
    return Entry(f"cn={cn},{GROUPS}", attrs)


@pytest.fixture
def directory():
    d = EmbeddedDirectory(None, domains=["Example.Test"], base_dn=BASE, seed_ldif=SEED)
    yield d
    d.close()


def uids(expansion):
    return [a.uid for a in expansion.accounts]


def test_provides_the_directory_interfaces(directory):
    """EmbeddedDirectory provides IDirectory and IDirectoryAdmin."""
    assert verifyObject(IDirectory, directory)
    assert verifyObject(IDirectoryAdmin, directory)
    assert directory.local_domains == frozenset({"example.test"})


def test_seed_is_loaded_with_hashed_passwords(directory):
    """The sample seed loads; its cleartext passwords are stored hashed."""
    stored = directory.get(f"uid=alice,{PEOPLE}").get("userPassword")
    assert stored[0].startswith("{SSHA512}")
    assert b"alice-password" not in directory.export_ldif()


def test_resolve_primary_address(directory):
    """A primary mail address resolves to its account, via 'mail', case-insensitively."""
    r = directory.resolve("<Alice@EXAMPLE.test>")
    assert r.kind is RecipientKind.ACCOUNT and r.via == "mail"
    assert r.account.uid == "alice" and r.address == "alice@example.test"
    assert r.account.display_name == "Alice Liddell"
    assert r.account.addresses == {"alice@example.test", "postmaster@example.test",
                                   "abuse@example.test"}


def test_resolve_alias(directory):
    """A mailLocalAddress resolves to the account via 'alias'."""
    r = directory.resolve("postmaster@example.test")
    assert (r.kind, r.via, r.account.uid) == (RecipientKind.ACCOUNT, "alias", "alice")


def test_resolve_plus_address(directory):
    """user+tag@domain resolves like user@domain, via 'subaddress'."""
    r = directory.resolve("bob+lists@example.test")
    assert (r.kind, r.via, r.account.uid) == (RecipientKind.ACCOUNT, "subaddress", "bob")
    assert r.address == "bob+lists@example.test"


def test_exact_address_wins_over_plus_addressing(directory):
    """An address that exists with a '+' is found as is, not as a subaddress."""
    directory.add_entry(person("carol", mailLocalAddress=["bob+x@example.test"]))
    r = directory.resolve("bob+x@example.test")
    assert (r.account.uid, r.via) == ("carol", "alias")


def test_resolve_group_lists_member_addresses(directory):
    """A group resolves to GROUP with its members' addresses, one level."""
    r = directory.resolve("staff@example.test")
    assert r.kind is RecipientKind.GROUP
    assert r.members == ("alice@example.test", "bob@example.test")


@pytest.mark.parametrize(
    "address", ["nobody@example.test", "alice@elsewhere.test", "alice", "", "+@example.test"]
)
def test_unknown_and_foreign_addresses(directory, address):
    """Unknown local addresses, other domains and junk resolve to UNKNOWN."""
    assert directory.resolve(address).kind is RecipientKind.UNKNOWN


def test_expand_account_and_alias(directory):
    """An account or alias expands to that account only."""
    assert uids(directory.expand("abuse@example.test")) == ["alice"]
    assert directory.expand("nobody@example.test").accounts == ()


def test_expand_group_deduplicates_in_order(directory):
    """A group whose members repeat (directly and via nesting) lists each account once."""
    directory.add_entry(group("all", ["alice", f"cn=staff,{GROUPS}", "bob"]))
    assert uids(directory.expand("all@example.test")) == ["alice", "bob"]


def test_expand_nested_group_loop_terminates(directory):
    """Groups nested in each other expand once each, without looping."""
    directory.add_entry(group("a", ["alice", f"cn=b,{GROUPS}"]))
    directory.add_entry(group("b", ["bob", f"cn=a,{GROUPS}"], mail=False))
    assert uids(directory.expand("a@example.test")) == ["alice", "bob"]


def test_expand_remote_group_member(directory):
    """A group member outside the local domains ends up in remote."""
    directory.add_entry(Entry(f"cn=Ext,{PEOPLE}", {
        "objectClass": ["top", "inetOrgPerson"], "cn": ["Ext"], "sn": ["Ext"],
        "mail": ["Ext@Remote.Example"]}))
    directory.add_entry(group("mixed", ["bob", f"cn=Ext,{PEOPLE}"]))
    e = directory.expand("mixed@example.test")
    assert uids(e) == ["bob"] and e.remote == ("ext@remote.example",)


def test_expand_forward_to_remote(directory):
    """An account with a remote mailRoutingAddress delivers there instead of locally."""
    directory.add_entry(person("dave", mailRoutingAddress=["dave@far.example"]))
    e = directory.expand("dave@example.test")
    assert e.accounts == () and e.remote == ("dave@far.example",)
    assert directory.resolve("dave@example.test").account.forward == ("dave@far.example",)


def test_expand_forward_to_local_account(directory):
    """A forward to a local address is expanded again."""
    directory.add_entry(person("erin", mailRoutingAddress=["postmaster@example.test"]))
    assert uids(directory.expand("erin@example.test")) == ["alice"]


def test_expand_forward_loop_keeps_the_mail(directory):
    """Accounts forwarding to each other stop at the loop and keep the mail."""
    directory.add_entry(person("f1", mailRoutingAddress=["f2@example.test"]))
    directory.add_entry(person("f2", mailRoutingAddress=["f1@example.test"]))
    assert uids(directory.expand("f1@example.test")) == ["f1"]


def test_expand_remote_address_is_remote(directory):
    """Expanding a non-local address gives it back as remote."""
    assert directory.expand("x@far.example").remote == ("x@far.example",)


@pytest.mark.parametrize("login", ["alice", "ALICE", "alice@example.test",
                                   "postmaster@example.test"])
def test_find_account_by_uid_mail_or_alias(directory, login):
    """uid, primary mail and alias all name the account."""
    assert directory.find_account(login).uid == "alice"


def test_account_by_uid(directory):
    """account(uid) finds the account; unknown uids and non-accounts give None."""
    assert directory.account("bob").mail == "bob@example.test"
    assert directory.account("nobody") is None
    assert directory.find_account("staff@example.test") is None


def test_check_password_right_and_wrong(directory):
    """The right password gives the Account, a wrong one or unknown login gives None."""
    assert directory.check_password("alice@example.test", "alice-password").uid == "alice"
    assert directory.check_password("alice", "bob-password") is None
    assert directory.check_password("nobody", "alice-password") is None
    assert directory.check_password("alice", "") is None


def test_check_password_refuses_the_stored_hash(directory):
    """Giving the stored hash string as the password fails (no pass-the-hash)."""
    stored = directory.get(f"uid=alice,{PEOPLE}").first("userPassword")
    assert directory.check_password("alice", stored) is None


def _recording_runner(calls):
    def runner(f, *args):
        calls.append(f)
        return defer.maybeDeferred(f, *args)

    return runner


def test_slow_hashes_are_verified_through_the_runner():
    """With a runner, a slow scheme ({ARGON2}) is verified through it: a Deferred comes back."""
    calls = []
    d = EmbeddedDirectory(None, domains=["example.test"], base_dn=BASE, seed_ldif=SEED,
                          runner=_recording_runner(calls), password_scheme="ARGON2")
    good = d.check_password("bob", "bob-password")
    bad = d.check_password("bob", "nope")
    assert isinstance(good, defer.Deferred) and len(calls) == 2
    assert good.result.uid == "bob"
    assert bad.result is None


def test_cheap_digests_are_verified_inline():
    """A salted digest costs less than a thread hand-off, so it is checked on the spot."""
    calls = []
    d = EmbeddedDirectory(None, domains=["example.test"], base_dn=BASE, seed_ldif=SEED,
                          runner=_recording_runner(calls))
    assert d.check_password("bob", "bob-password").uid == "bob"
    assert d.check_password("bob", "nope") is None
    assert d.check_password("nobody", "nope") is None
    assert calls == []


def test_entries_are_listed_parents_first(directory):
    """entries() lists every parent before its children."""
    seen = set()
    for entry in directory.entries():
        parent = entry.ndn.partition(",")[2]
        assert entry.ndn == "dc=example,dc=test" or parent in seen
        seen.add(entry.ndn)
    assert len(seen) == 6
    assert [e.first("uid") for e in directory.children(PEOPLE)] == ["alice", "bob"]


def test_large_loads_are_frozen_out_of_the_collector(monkeypatch, tmp_path):
    """Opening a directory of at least _LARGE_LOAD entries (seeded or stored) ends with
    gc.freeze; a smaller one, or a later reload, does not."""
    from mailsuite.directory import embedded

    frozen = []
    monkeypatch.setattr(embedded.gc, "freeze", lambda: frozen.append(True))
    monkeypatch.setattr(embedded, "_LARGE_LOAD", 6)  # the seed has 6 entries
    path = str(tmp_path / "directory.sqlite")
    EmbeddedDirectory(path, domains=["example.test"], base_dn=BASE, seed_ldif=SEED).close()
    assert frozen
    frozen.clear()
    EmbeddedDirectory(path, domains=["example.test"], base_dn=BASE).close()
    assert frozen
    frozen.clear()
    monkeypatch.setattr(embedded, "_LARGE_LOAD", 7)
    EmbeddedDirectory(path, domains=["example.test"], base_dn=BASE).close()
    assert not frozen
    monkeypatch.setattr(embedded, "_LARGE_LOAD", 6)
    opened = EmbeddedDirectory(path, domains=["example.test"], base_dn=BASE)
    frozen.clear()
    opened.reload()
    opened.import_ldif(SEED)
    assert not frozen
    opened.close()


def test_binary_values_survive_storage(tmp_path):
    """A value that is not UTF-8 is stored and read back as the same bytes."""
    path = str(tmp_path / "directory.sqlite")
    d = EmbeddedDirectory(path, domains=["example.test"], base_dn=BASE, seed_ldif=SEED)
    d.replace_entry(d.get(f"uid=alice,{PEOPLE}").with_values("jpegPhoto", [b"\xff\xd8\x00"]))
    d.close()
    again = EmbeddedDirectory(path, domains=["example.test"], base_dn=BASE)
    assert again.get(f"uid=alice,{PEOPLE}").get("jpegPhoto") == [b"\xff\xd8\x00"]
    again.close()


def test_loaded_entries_share_names_and_object_classes(tmp_path):
    """Entries read back from storage share one string per attribute name and per
    objectClass value, instead of a copy in each entry."""
    path = str(tmp_path / "directory.sqlite")
    EmbeddedDirectory(path, domains=["example.test"], base_dn=BASE, seed_ldif=SEED).close()
    again = EmbeddedDirectory(path, domains=["example.test"], base_dn=BASE)
    alice, bob = again.get(f"uid=alice,{PEOPLE}"), again.get(f"uid=bob,{PEOPLE}")
    names = [{name: name for name, _ in entry.items()} for entry in (alice, bob)]
    assert names[0]["objectClass"] is names[1]["objectClass"]
    assert names[0]["mail"] is names[1]["mail"]
    assert alice.values("objectClass")[-1] is bob.values("objectClass")[-1]
    again.close()
