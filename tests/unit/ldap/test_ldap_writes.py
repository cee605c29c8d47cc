"""Add, Modify, Delete and ModifyDN over LDAP: only the admin writes; changes are live."""

from ldaptor.protocols import pureber, pureldap
from twisted.trial.unittest import SynchronousTestCase

from mailsuite.directory.passwords import is_hashed
from mailsuite.interfaces import RecipientKind
from mailsuite.ldap import codec

from .ldap_fakes import ADMIN_DN, ADMIN_PASSWORD, ALICE_DN, BASE, BOB_DN, Session

CAROL_DN = "uid=carol,ou=people," + BASE


def attrs(**values):
    return [(pureldap.LDAPAttributeDescription(name),
             pureber.BERSet([pureldap.LDAPAttributeValue(v.encode()) for v in vs]))
            for name, vs in values.items()]


def add_carol():
    return pureldap.LDAPAddRequest(entry=CAROL_DN.encode(), attributes=attrs(
        objectClass=["top", "person", "organizationalPerson", "inetOrgPerson"],
        uid=["carol"], cn=["Carol C"], sn=["C"], mail=["carol@example.test"],
        userPassword=["carol-password"]))


def modification(operation, name, *values):
    return pureber.BERSequence([pureber.BEREnumerated(operation), pureber.BERSequence([
        pureldap.LDAPAttributeDescription(name),
        pureber.BERSet([pureldap.LDAPAttributeValue(v.encode()) for v in values])])])


def admin():
    session = Session()
    session.bind(ADMIN_DN, ADMIN_PASSWORD)
    return session


class AddTests(SynchronousTestCase):
    def test_admin_adds_a_user_who_receives_mail_at_once(self):
        """An added account resolves at once and its cleartext password is stored hashed."""
        session = admin()
        self.assertEqual(session.result(add_carol()).resultCode, codec.SUCCESS)
        self.assertEqual(session.directory.resolve("carol@example.test").kind, RecipientKind.ACCOUNT)
        self.assertTrue(is_hashed(session.directory.get(CAROL_DN).first("userPassword")))

    def test_anonymous_and_user_adds_are_refused(self):
        """Adds by anonymous clients and by users are refused and store nothing."""
        for who in (None, (BOB_DN, "bob-password")):
            session = Session()
            if who:
                session.bind(*who)
            self.assertEqual(session.result(add_carol()).resultCode, codec.INSUFFICIENT_ACCESS_RIGHTS)
            self.assertIsNone(session.directory.get(CAROL_DN))

    def test_add_existing_entry(self):
        """Adding an entry that exists gives entryAlreadyExists."""
        session = admin()
        session.send(add_carol())
        self.assertEqual(session.result(add_carol()).resultCode, codec.ENTRY_ALREADY_EXISTS)

    def test_add_without_parent(self):
        """Adding below a missing parent gives noSuchObject."""
        op = pureldap.LDAPAddRequest(entry=b"cn=x,ou=missing," + BASE.encode(),
                                     attributes=attrs(objectClass=["top", "device"], cn=["x"]))
        self.assertEqual(admin().result(op).resultCode, codec.NO_SUCH_OBJECT)


class ModifyTests(SynchronousTestCase):
    def test_admin_modifies(self):
        """Replace and add change the live entry."""
        session = admin()
        op = pureldap.LDAPModifyRequest(object=ALICE_DN.encode(), modification=[
            modification(2, "title", "Queen"), modification(0, "mailLocalAddress", "al@example.test")])
        self.assertEqual(session.result(op).resultCode, codec.SUCCESS)
        self.assertEqual(session.directory.get(ALICE_DN).first("title"), "Queen")
        self.assertEqual(session.directory.resolve("al@example.test").account.uid, "alice")

    def test_user_cannot_modify_own_entry(self):
        """A user's modify of its own entry is refused and changes nothing."""
        session = Session()
        session.bind(ALICE_DN, "alice-password")
        before = session.directory.get(ALICE_DN)
        op = pureldap.LDAPModifyRequest(object=ALICE_DN.encode(),
                                        modification=[modification(2, "mail", "x@example.test")])
        self.assertEqual(session.result(op).resultCode, codec.INSUFFICIENT_ACCESS_RIGHTS)
        self.assertEqual(session.directory.get(ALICE_DN), before)

    def test_delete_missing_value(self):
        """Deleting a value the entry lacks gives noSuchAttribute and changes nothing."""
        session = admin()
        before = session.directory.get(ALICE_DN)
        op = pureldap.LDAPModifyRequest(object=ALICE_DN.encode(),
                                        modification=[modification(1, "title", "King")])
        self.assertEqual(session.result(op).resultCode, codec.NO_SUCH_ATTRIBUTE)
        self.assertEqual(session.directory.get(ALICE_DN), before)

    def test_modify_breaking_schema(self):
        """Removing a person's sn is refused (objectClassViolation)."""
        op = pureldap.LDAPModifyRequest(object=ALICE_DN.encode(),
                                        modification=[modification(1, "sn")])
        self.assertEqual(admin().result(op).resultCode, codec.OBJECT_CLASS_VIOLATION)


class DeleteAndRenameTests(SynchronousTestCase):
    def test_admin_deletes_a_leaf(self):
        """Delete removes a leaf; a non-leaf gives notAllowedOnNonLeaf."""
        session = admin()
        self.assertEqual(session.result(pureldap.LDAPDelRequest(entry=BOB_DN.encode())).resultCode,
                         codec.SUCCESS)
        self.assertIsNone(session.directory.get(BOB_DN))
        self.assertEqual(session.result(pureldap.LDAPDelRequest(entry=b"ou=people," + BASE.encode())).resultCode,
                         codec.NOT_ALLOWED_ON_NON_LEAF)

    def test_user_cannot_delete(self):
        """A user's delete is refused and the entry stays."""
        session = Session()
        session.bind(ALICE_DN, "alice-password")
        self.assertEqual(session.result(pureldap.LDAPDelRequest(entry=BOB_DN.encode())).resultCode,
                         codec.INSUFFICIENT_ACCESS_RIGHTS)
        self.assertIsNotNone(session.directory.get(BOB_DN))

    def test_modify_dn(self):
        """ModifyDN moves the entry and its new RDN value; the old name is gone."""
        session = admin()
        op = pureldap.LDAPModifyDNRequest(entry=b"cn=staff,ou=groups," + BASE.encode(),
                                          newrdn=b"cn=team", deleteoldrdn=True)
        self.assertEqual(session.result(op).resultCode, codec.SUCCESS)
        moved = session.directory.get("cn=team,ou=groups," + BASE)
        self.assertEqual(moved.get("cn"), ["team"])
        self.assertIsNone(session.directory.get("cn=staff,ou=groups," + BASE))
        self.assertEqual(session.directory.resolve("staff@example.test").kind, RecipientKind.GROUP)
