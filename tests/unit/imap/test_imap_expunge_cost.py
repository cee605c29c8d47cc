"""EXPUNGE, UID EXPUNGE, CLOSE and STORE UNCHANGEDSINCE answer from the selected snapshot
and ask the store only for the change: no full mailbox listing."""

from twisted.trial.unittest import SynchronousTestCase

from mailsuite.interfaces import FlagMode
from mailsuite.testing.memstore import MemoryMailStore
from tests.unit.imap.imap_fakes import Session, deliver, lines, message


class CountingStore(MemoryMailStore):
    """Records each ``messages`` call as its ``changed_since`` (0: a full listing)."""

    def __init__(self):
        super().__init__()
        self.listings: list[int] = []

    def messages(self, account, name, changed_since=0):
        self.listings.append(changed_since)
        return super().messages(account, name, changed_since=changed_since)


def selected(count: int = 5) -> Session:
    s = Session(store=CountingStore())
    deliver(s.store, "alice", *(message(f"m{n}") for n in range(count)))
    s.login()
    s.select()
    s.store.listings.clear()
    return s


def uids_in(s: Session) -> list[int]:
    # Past the counter: the test's own look is not the server's.
    return [m.uid for m in MemoryMailStore.messages(s.store, "alice", "INBOX").result]


class ExpungeCostTests(SynchronousTestCase):
    def test_expunge_makes_no_full_listing(self):
        """EXPUNGE after the session's own STORE finds \\Deleted messages without listing."""
        s = selected()
        s.command(b"a STORE 2,4 +FLAGS.SILENT (\\Deleted)")
        s.store.listings.clear()
        out = s.command(b"b EXPUNGE")
        self.assertEqual(lines(out), [b"* 2 EXPUNGE", b"* 3 EXPUNGE", b"b OK Completed"])
        self.assertNotIn(0, s.store.listings)

    def test_expunge_sees_deleted_flag_set_elsewhere(self):
        """A \\Deleted set by another session is expunged, with only an incremental listing."""
        s = selected()
        s.store.set_flags("alice", "INBOX", [3], frozenset({"\\Deleted"}), FlagMode.ADD)
        out = s.command(b"b EXPUNGE")
        self.assertIn(b"* 3 EXPUNGE", lines(out))
        self.assertEqual(uids_in(s), [1, 2, 4, 5])
        self.assertNotIn(0, s.store.listings)

    def test_uid_expunge_takes_only_listed_deleted_uids(self):
        """UID EXPUNGE removes the listed \\Deleted UIDs only, without a full listing."""
        s = selected()
        s.command(b"a STORE 1:3 +FLAGS.SILENT (\\Deleted)")
        s.store.listings.clear()
        out = s.command(b"b UID EXPUNGE 2:5")
        self.assertEqual(lines(out), [b"* 2 EXPUNGE", b"* 2 EXPUNGE", b"b OK Completed"])
        self.assertEqual(uids_in(s)[:1], [1])
        self.assertNotIn(0, s.store.listings)

    def test_close_expunges_silently_without_listing(self):
        """CLOSE expunges \\Deleted messages, sends no EXPUNGE and lists nothing."""
        s = selected()
        s.command(b"a STORE 1 +FLAGS.SILENT (\\Deleted)")
        s.store.listings.clear()
        out = s.command(b"b CLOSE")
        self.assertEqual(lines(out), [b"b OK Completed"])
        self.assertEqual(s.store.listings, [])
        self.assertEqual(uids_in(s), [2, 3, 4, 5])

    def test_close_sees_deleted_flag_set_elsewhere(self):
        """CLOSE expunges a message marked \\Deleted elsewhere, asking only what changed."""
        s = selected()
        s.store.set_flags("alice", "INBOX", [5], frozenset({"\\Deleted"}), FlagMode.ADD)
        s.store.listings.clear()
        s.command(b"b CLOSE")
        self.assertEqual(uids_in(s)[-1], 4)
        self.assertNotIn(0, s.store.listings)

    def test_read_only_close_expunges_nothing(self):
        """CLOSE of an EXAMINEd mailbox leaves \\Deleted messages in place."""
        s = selected()
        s.command(b"a STORE 1 +FLAGS.SILENT (\\Deleted)")
        s.command(b"b EXAMINE INBOX")
        s.command(b"c CLOSE")
        self.assertEqual(len(uids_in(s)), 5)

    def test_unchangedsince_lists_only_changes_since_modseq(self):
        """STORE UNCHANGEDSINCE asks the store for messages changed since the modseq only."""
        s = selected()
        base = s.server.selected.highestmodseq
        s.store.set_flags("alice", "INBOX", [2], frozenset({"$x"}), FlagMode.ADD)
        s.store.listings.clear()
        out = s.command(b"a STORE 1:3 (UNCHANGEDSINCE %d) +FLAGS (\\Seen)" % base)
        self.assertIn(b"[MODIFIED 2]", out)
        self.assertIn(base, s.store.listings)
        self.assertNotIn(0, s.store.listings)

    def test_unchangedsince_stores_unchanged_messages(self):
        """The messages not changed since the modseq get the new flags."""
        s = selected()
        base = s.server.selected.highestmodseq
        s.store.set_flags("alice", "INBOX", [2], frozenset({"$x"}), FlagMode.ADD)
        s.command(b"a UID STORE 1:3 (UNCHANGEDSINCE %d) +FLAGS (\\Seen)" % base)
        seen = {m.uid for m in MemoryMailStore.messages(s.store, "alice", "INBOX").result
                if "\\Seen" in m.flags}
        self.assertEqual(seen, {1, 3})
