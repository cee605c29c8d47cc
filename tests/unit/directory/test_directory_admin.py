"""The embedded directory as IDirectoryAdmin: changes, persistence, atomic import."""

import sqlite3
from pathlib import Path

import pytest

from mailsuite.directory.embedded import EmbeddedDirectory
from mailsuite.directory.entry import Entry
from mailsuite.directory.ldif import parse_ldif
from mailsuite.interfaces import DirectoryError, EntryExists, InvalidEntry, NoSuchEntry, RecipientKind

SEED = (Path(__file__).parents[3] / "etc" / "directory.ldif").read_bytes()
BASE = "dc=example,dc=test"


def open_directory(path, seed=SEED):
    return EmbeddedDirectory(str(path), domains=["example.test", "other.test"], base_dn=BASE,
                             seed_ldif=seed)


@pytest.fixture
def path(tmp_path):
    return tmp_path / "directory.sqlite"


@pytest.fixture
def directory(path):
    d = open_directory(path)
    yield d
    d.close()


def test_add_user_creates_a_standard_account(path):
    """add_user in an empty directory creates base, ou=people and an inetOrgPerson account."""
    d = open_directory(path, seed=None)
    account = d.add_user("Carol@Example.test", "carol-pw", cn="Carol Singer")
    assert (account.uid, account.mail) == ("carol", "carol@example.test")
    entry = d.get("uid=carol,ou=people,dc=example,dc=test")
    assert entry.object_classes >= {"inetorgperson", "inetlocalmailrecipient", "person"}
    assert entry.get("sn") == ["Carol Singer"]
    assert d.get(BASE).has_object_class("dcObject")
    assert d.check_password("carol", "carol-pw") == account


def test_add_user_with_explicit_uid(directory):
    """The uid can differ from the local part; the DN uses it."""
    account = directory.add_user("c.singer@example.test", "pw", uid="csinger")
    assert account.dn == "uid=csinger,ou=people,dc=example,dc=test"
    assert directory.find_account("c.singer@example.test").uid == "csinger"


@pytest.mark.parametrize(
    "args,kwargs,error",
    [
        (("alice@example.test", "pw"), {}, EntryExists),
        (("postmaster@other.test", "pw"), {"uid": "alice"}, EntryExists),
        (("abuse@example.test", "pw"), {"uid": "x"}, EntryExists),
        (("someone@far.example", "pw"), {}, InvalidEntry),
        (("not-an-address", "pw"), {}, InvalidEntry),
        (("new@example.test", ""), {}, InvalidEntry),
        (("new@example.test", "pw"), {"uid": "bad uid/.."}, InvalidEntry),
    ],
)
def test_add_user_refusals(directory, args, kwargs, error):
    """Duplicates, foreign domains, bad addresses, empty passwords and bad uids are refused."""
    before = directory.export_ldif()
    with pytest.raises(error):
        directory.add_user(*args, **kwargs)
    assert directory.export_ldif() == before


def test_set_password(directory):
    """set_password replaces the password: the new one works, the old one no longer does."""
    directory.set_password("bob@example.test", "new-bob")
    assert directory.check_password("bob", "new-bob").uid == "bob"
    assert directory.check_password("bob", "bob-password") is None
    with pytest.raises(NoSuchEntry):
        directory.set_password("nobody", "x")


def test_delete_user_removes_account_aliases_and_memberships(directory):
    """delete_user removes the account, its aliases and its group memberships."""
    directory.delete_user("alice")
    assert directory.find_account("alice") is None
    assert directory.resolve("postmaster@example.test").kind is RecipientKind.UNKNOWN
    assert directory.resolve("staff@example.test").members == ("bob@example.test",)
    with pytest.raises(NoSuchEntry):
        directory.delete_user("alice")


def test_users_sorted_by_address(directory):
    """users() lists the accounts sorted by primary address."""
    directory.add_user("aaron@example.test", "pw")
    assert [a.mail for a in directory.users()] == [
        "aaron@example.test", "alice@example.test", "bob@example.test"]


def test_add_and_delete_alias(directory):
    """add_alias makes an address reach the account; delete_alias takes it away."""
    directory.add_alias("Builder@Other.test", "bob")
    r = directory.resolve("builder@other.test")
    assert (r.account.uid, r.via) == ("bob", "alias")
    directory.delete_alias("builder@other.test")
    assert directory.resolve("builder@other.test").kind is RecipientKind.UNKNOWN


@pytest.mark.parametrize(
    "alias,target,error",
    [
        ("bob@example.test", "alice", EntryExists),
        ("staff@example.test", "alice", EntryExists),
        ("x@far.example", "alice", InvalidEntry),
        ("x@example.test", "nobody", NoSuchEntry),
    ],
)
def test_add_alias_refusals(directory, alias, target, error):
    """Aliases already in use, in foreign domains or for unknown accounts are refused."""
    with pytest.raises(error):
        directory.add_alias(alias, target)


def test_delete_alias_refusals(directory):
    """Deleting an unknown alias or a primary address is refused."""
    with pytest.raises(NoSuchEntry):
        directory.delete_alias("nobody@example.test")
    with pytest.raises(InvalidEntry):
        directory.delete_alias("alice@example.test")


def test_changes_persist_across_reopen(directory, path):
    """Users, aliases and passwords are still there after reopening the file."""
    directory.add_user("carol@example.test", "carol-pw")
    directory.add_alias("c@example.test", "carol")
    directory.close()
    again = open_directory(path)
    assert again.resolve("c@example.test").account.uid == "carol"
    assert again.check_password("carol", "carol-pw").uid == "carol"
    assert len(again.entries()) == 7


def test_seed_is_not_reapplied_to_a_non_empty_directory(directory, path):
    """Reopening with a seed does not bring back deleted entries."""
    directory.delete_user("bob")
    directory.close()
    assert open_directory(path).find_account("bob") is None


def test_change_by_another_instance_is_seen(directory, path):
    """A change made through a second instance on the same file is seen by the first."""
    assert directory.find_account("carol") is None
    other = open_directory(path)
    other.add_user("carol@example.test", "carol-pw")
    other.delete_alias("abuse@example.test")
    assert directory.find_account("carol").mail == "carol@example.test"
    assert directory.resolve("abuse@example.test").kind is RecipientKind.UNKNOWN


def test_write_after_outside_change_does_not_lose_it(directory, path):
    """A write through a stale instance first picks up the other instance's changes."""
    other = open_directory(path)
    other.add_user("carol@example.test", "pw")
    with pytest.raises(EntryExists):
        directory.add_user("carol@example.test", "pw")
    directory.add_user("dave@example.test", "pw")
    assert {a.uid for a in other.users()} == {"alice", "bob", "carol", "dave"}


def test_import_adds_and_replaces(directory):
    """import_ldif adds new entries, replaces existing ones and hashes cleartext passwords."""
    data = (
        b"dn: uid=bob,ou=people,dc=example,dc=test\nobjectClass: inetOrgPerson\nuid: bob\n"
        b"cn: Robert\nsn: Builder\nmail: bob@example.test\nuserPassword: rebuilt\n\n"
        b"dn: uid=eve,ou=people,dc=example,dc=test\nobjectClass: inetOrgPerson\nuid: eve\n"
        b"cn: Eve\nsn: Eve\nmail: eve@example.test\nuserPassword: {SSHA}"
        b"joiON8Tg278A5pQLVwnl7ow05wnCIes5yYyBo25Z392d+yfa\n"
    )
    assert directory.import_ldif(data) == 2
    assert directory.get("uid=bob,ou=people,dc=example,dc=test").first("cn") == "Robert"
    assert directory.check_password("bob", "rebuilt").uid == "bob"
    assert directory.check_password("eve", "pw").uid == "eve"


@pytest.mark.parametrize(
    "bad_record",
    [
        b"dn: uid=x,ou=people,dc=example,dc=test\nobjectClass: inetOrgPerson\nuid: x\n"
        b"cn: x\nsn: x\nmail: alice@example.test\n",
        b"dn: uid=x,ou=people,dc=elsewhere\nobjectClass: inetOrgPerson\nuid: x\ncn: x\nsn: x\n",
        b"dn: uid=x,ou=missing,dc=example,dc=test\nobjectClass: inetOrgPerson\nuid: x\n"
        b"cn: x\nsn: x\n",
        b"dn: uid=x,ou=people,dc=example,dc=test\nobjectClass: inetOrgPerson\nuid: x\ncn: x\n",
        b"dn: uid=x,ou=people,dc=example,dc=test\nobjectClass: inetOrgPerson\nuid: x\n"
        b"cn: x\nsn: x\nuserPassword: {MADEUP}abc\n",
        b"dn: uid=x,ou=people,dc=example,dc=test\nchangetype: delete\n",
        b"dn: cn=x,ou=people,dc=example,dc=test\nobjectClass: inetOrgPerson\nuid: alice\n"
        b"cn: x\nsn: x\n",
    ],
)
def test_import_is_atomic(directory, path, bad_record):
    """
    One bad record (address or uid in use, outside the base, no parent, missing sn, unknown
    password scheme, a change record) makes the whole import fail and store nothing.
    """
    good = (b"dn: uid=carol,ou=people,dc=example,dc=test\nobjectClass: inetOrgPerson\n"
            b"uid: carol\ncn: c\nsn: c\nmail: carol@example.test\nuserPassword: pw\n\n")
    before = directory.export_ldif()
    with pytest.raises(DirectoryError):
        directory.import_ldif(good + bad_record)
    assert directory.export_ldif() == before
    assert open_directory(path).find_account("carol") is None


def test_export_then_import_into_new_directory(directory, tmp_path):
    """An export imported into an empty directory reproduces it, passwords included."""
    exported = directory.export_ldif()
    fresh = EmbeddedDirectory(str(tmp_path / "copy.sqlite"), domains=["example.test"],
                              base_dn=BASE)
    assert fresh.import_ldif(exported) == 6
    assert fresh.export_ldif() == exported
    assert fresh.check_password("alice", "alice-password").uid == "alice"


def test_generic_entry_methods(directory):
    """add_entry, replace_entry and delete_entry follow LDAP rules on existence and leaves."""
    dn = "cn=helpdesk,ou=groups,dc=example,dc=test"
    entry = Entry(dn, {"objectClass": ["groupOfNames"], "cn": ["helpdesk"],
                       "member": ["uid=bob,ou=people,dc=example,dc=test"]})
    directory.add_entry(entry)
    with pytest.raises(EntryExists):
        directory.add_entry(entry)
    directory.replace_entry(entry.with_values("mail", ["help@example.test"]))
    assert directory.resolve("help@example.test").members == ("bob@example.test",)
    with pytest.raises(InvalidEntry):
        directory.delete_entry("ou=groups,dc=example,dc=test")
    directory.delete_entry(dn)
    with pytest.raises(NoSuchEntry):
        directory.delete_entry(dn)
    with pytest.raises(NoSuchEntry):
        directory.replace_entry(entry)


def test_database_uses_wal_and_holds_normalised_rows(directory, path):
    """The file is in WAL mode and keyed by normalised DN."""
    db = sqlite3.connect(str(path))
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ndns = {row[0] for row in db.execute("SELECT ndn FROM entries")}
    assert "uid=alice,ou=people,dc=example,dc=test" in ndns


def test_seed_file_parses_with_expected_content():
    """The sample seed holds the base, two OUs, alice, bob and the staff group."""
    entries = parse_ldif(SEED)
    assert [e.first("uid") or e.first("cn") or e.first("ou") or e.first("dc")
            for e in entries] == ["example", "people", "groups", "alice", "bob", "staff"]


def test_locked_database_gives_directory_error(directory, path):
    """A write that cannot get the database lock fails with DirectoryError, changing nothing."""
    busy = EmbeddedDirectory(str(path), domains=["example.test"], base_dn=BASE, busy_timeout=0)
    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(DirectoryError):
            busy.add_user("carol@example.test", "pw")
    finally:
        holder.execute("ROLLBACK")
    assert busy.find_account("carol") is None
    busy.add_user("carol@example.test", "pw")
    assert directory.find_account("carol").uid == "carol"
