"""
Selected sessions under other writers: changes made elsewhere reach a selected session
incrementally (expunges from the feed, new messages and flags from one listing of what
changed since the session's MODSEQ), never by re-reading the whole mailbox.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mailsuite.interfaces import Change, ChangeKind, FlagMode
from mailsuite.testing.memstore import MemoryMailStore
from tests.unit.imap.imap_fakes import Session, deliver, lines, message


class CountingStore:
    """A MemoryMailStore recording each messages() call's ``changed_since``."""

    def __init__(self):
        self._store = MemoryMailStore()
        self.listings: list[int] = []

    def messages(self, account, name, *, changed_since=0):
        self.listings.append(changed_since)
        return self._store.messages(account, name, changed_since=changed_since)

    def __getattr__(self, name):
        return getattr(self._store, name)


class SyncTests(SynchronousTestCase):
    def setUp(self):
        self.store = CountingStore()
        deliver(self.store, "alice", *(message(f"m{i}") for i in range(5)))
        self.a = Session(store=self.store)
        self.b = Session(store=self.store)
        for s in (self.a, self.b):
            s.login()
            s.select()
        self.store.listings.clear()

    def test_append_elsewhere_lists_only_changes(self):
        """Another session's APPEND costs one changed-since listing and gives EXISTS."""
        deliver(self.store, "alice", message("new"))
        out = lines(self.a.command(b"N1 NOOP"))
        self.assertEqual(out, [b"* 6 EXISTS", b"N1 OK Completed"])
        self.assertEqual(len(self.store.listings), 1)
        self.assertGreater(self.store.listings[0], 0)

    def test_new_message_is_addressable_after_sync(self):
        """A message appended elsewhere gets the next sequence number and its UID."""
        (uid,) = deliver(self.store, "alice", message("new"))
        self.a.command(b"N1 NOOP")
        out = self.a.command(b"F1 FETCH 6 (UID)")
        self.assertIn(b"* 6 FETCH (UID %d)" % uid, out)

    def test_flag_change_elsewhere_sends_fetch_flags(self):
        """Another session's STORE reaches this one as FETCH FLAGS, without a full listing."""
        self.b.command(b"S2 STORE 2 +FLAGS (\\Flagged)")
        self.store.listings.clear()
        out = lines(self.a.command(b"N1 NOOP"))
        self.assertEqual(out, [b"* 2 FETCH (UID 2 FLAGS (\\Flagged))", b"N1 OK Completed"])
        self.assertNotIn(0, self.store.listings)

    def test_expunge_elsewhere_needs_no_listing(self):
        """An expunge made elsewhere is told from the feed's UIDs: no store listing at all."""
        self.store.expunge("alice", "INBOX", [2, 4])
        out = lines(self.a.command(b"N1 NOOP"))
        self.assertEqual(out, [b"* 2 EXPUNGE", b"* 3 EXPUNGE", b"N1 OK Completed"])
        self.assertEqual(self.store.listings, [])

    def test_expunge_elsewhere_waits_during_fetch(self):
        """RFC 3501 §7.4.1: no EXPUNGE during FETCH; it comes with the next NOOP."""
        self.store.expunge("alice", "INBOX", [3])
        out = self.a.command(b"F1 FETCH 1:* (UID)")
        self.assertNotIn(b"EXPUNGE", out)
        self.assertIn(b"* 5 FETCH (UID 5)", out)
        self.assertEqual(lines(self.a.command(b"N1 NOOP"))[0], b"* 3 EXPUNGE")

    def test_own_store_needs_no_listing(self):
        """The session's own STORE, echoed by the feed, costs no listing."""
        self.a.command(b"S2 STORE 1 +FLAGS (\\Seen)")
        self.a.command(b"N1 NOOP")
        self.assertEqual(self.store.listings, [])

    def test_changes_since_own_store_are_not_skipped(self):
        """A change elsewhere before the session's own STORE is still reported after it."""
        self.store.set_flags("alice", "INBOX", [4], frozenset({"\\Answered"}), FlagMode.ADD)
        out = self.a.command(b"S2 STORE 1 +FLAGS (\\Seen)")
        self.assertIn(b"* 4 FETCH (UID 4 FLAGS (\\Answered))", out)

    def test_mailbox_event_falls_back_to_full_listing(self):
        """A mailbox-level event for the selected name makes the session list it again."""
        self.store._store._feed.publish(Change(ChangeKind.MAILBOXES, "alice", "INBOX"))
        self.a.command(b"N1 NOOP")
        self.assertEqual(self.store.listings, [0])

    def test_reused_uid_falls_back_to_full_listing(self):
        """A NEW event for a UID the snapshot has never held makes the session list it again."""
        self.store.expunge("alice", "INBOX", [3])
        self.a.command(b"N1 NOOP")
        self.store._store._feed.publish(Change(ChangeKind.NEW, "alice", "INBOX", (3,), 99))
        self.store.listings.clear()
        self.a.command(b"N2 NOOP")
        self.assertEqual(self.store.listings, [0])

    def test_idle_pushes_incremental_changes(self):
        """RFC 2177: while idling, a new message is pushed as EXISTS after one small listing."""
        self.a.command(b"I1 IDLE")
        deliver(self.store, "alice", message("new"))
        self.assertIn(b"* 6 EXISTS", self.a.output())
        self.assertEqual(len(self.store.listings), 1)
        self.assertGreater(self.store.listings[0], 0)
