"""Message commands: FETCH, STORE, SEARCH, COPY, MOVE, EXPUNGE, APPEND, IDLE, and two
sessions sharing a mailbox."""

from twisted.trial.unittest import SynchronousTestCase

from mailsuite.testing.memstore import MemoryMailStore
from tests.unit.imap.imap_fakes import SAMPLE, Session, deliver, lines, message


def selected(*messages: bytes, store=None) -> Session:
    s = Session(store=store)
    deliver(s.store, "alice", *messages)
    s.login()
    s.select()
    return s


def flags_of(s: Session, uid: int, mailbox: str = "INBOX") -> frozenset:
    return {m.uid: m.flags for m in s.store.messages("alice", mailbox).result}[uid]


class FetchTests(SynchronousTestCase):
    def test_fetch_flags_and_uid(self):
        """FETCH (FLAGS UID) answers from the snapshot for every message."""
        s = selected(message("a"), message("b"))
        self.assertEqual(lines(s.command(b"f FETCH 1:* (FLAGS UID)")), [
            b"* 1 FETCH (FLAGS () UID 1)", b"* 2 FETCH (FLAGS () UID 2)", b"f OK Completed"])

    def test_fetch_flags_does_not_read_messages(self):
        """FLAGS, UID, INTERNALDATE and RFC822.SIZE never read message bytes."""
        s = selected(message())
        s.store.read = lambda *a: self.fail("read called")
        self.assertIn(b"f OK", s.command(b"f FETCH 1 (FLAGS UID INTERNALDATE RFC822.SIZE)"))

    def test_uid_fetch_always_includes_uid(self):
        """RFC 3501 §6.4.8: UID FETCH responses carry the UID."""
        s = selected(message())
        self.assertEqual(lines(s.command(b"f UID FETCH 1:* FLAGS"))[0],
                         b"* 1 FETCH (UID 1 FLAGS ())")

    def test_body_is_byte_exact_and_sets_seen(self):
        """BODY[] returns the stored bytes exactly, sets \\Seen and reports FLAGS."""
        s = selected(SAMPLE)
        out = s.command(b"f FETCH 1 BODY[]")
        self.assertIn(b"BODY[] {%d}\r\n" % len(SAMPLE) + SAMPLE, out)
        self.assertIn(b"FLAGS (\\Seen)", out)
        self.assertIn("\\Seen", flags_of(s, 1))

    def test_body_peek_leaves_seen_alone(self):
        """BODY.PEEK[] does not set \\Seen."""
        s = selected(SAMPLE)
        s.command(b"f FETCH 1 BODY.PEEK[]")
        self.assertNotIn("\\Seen", flags_of(s, 1))

    def test_partial_and_header_fields(self):
        """RFC 3501 §6.4.5: <partial> slices; HEADER.FIELDS picks named fields."""
        s = selected(SAMPLE)
        self.assertIn(b"BODY[]<0> {4}\r\nDate", s.command(b"f FETCH 1 BODY.PEEK[]<0.4>"))
        out = s.command(b"f FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
        self.assertIn(b"BODY[HEADER.FIELDS (SUBJECT)] {", out)
        self.assertIn(b"Subject: IMAP4rev1 WG mtg summary and minutes\r\n", out)
        self.assertNotIn(b"From:", out)

    def test_envelope_and_bodystructure(self):
        """ENVELOPE and BODYSTRUCTURE come from the parsed message."""
        s = selected(SAMPLE)
        out = s.command(b"f FETCH 1 (ENVELOPE BODYSTRUCTURE)")
        self.assertIn(b'ENVELOPE ("Wed, 17 Jul 1996 02:23:25 -0700" '
                      b'"IMAP4rev1 WG mtg summary and minutes"', out)
        self.assertIn(b'BODYSTRUCTURE ("text" "plain"', out)

    def test_rfc822_items(self):
        """RFC822.HEADER is the header, RFC822.TEXT the body."""
        s = selected(SAMPLE)
        header, _, body = SAMPLE.partition(b"\r\n\r\n")
        self.assertIn(b"RFC822.HEADER {%d}" % (len(header) + 4),
                      s.command(b"f FETCH 1 RFC822.HEADER"))
        self.assertIn(b"RFC822.TEXT {%d}\r\n%s" % (len(body), body),
                      s.command(b"f FETCH 1 RFC822.TEXT"))

    def test_binary_size(self):
        """RFC 3516: BINARY.SIZE[1] of a single-part message is its decoded body size."""
        s = selected(SAMPLE)
        body = SAMPLE.partition(b"\r\n\r\n")[2]
        self.assertIn(b"BINARY.SIZE[1] %d" % len(body), s.command(b"f FETCH 1 BINARY.SIZE[1]"))


class StoreTests(SynchronousTestCase):
    def test_store_variants(self):
        """+FLAGS adds, -FLAGS removes, FLAGS replaces; each answers FETCH FLAGS."""
        s = selected(message())
        self.assertEqual(lines(s.command(b"s STORE 1 +FLAGS (\\Flagged $Work)"))[0],
                         b"* 1 FETCH (UID 1 FLAGS ($Work \\Flagged))")
        s.command(b"s STORE 1 -FLAGS \\Flagged")
        self.assertEqual(flags_of(s, 1), {"$Work"})
        s.command(b"s STORE 1 FLAGS (\\Seen)")
        self.assertEqual(flags_of(s, 1), {"\\Seen"})

    def test_store_silent(self):
        """.SILENT suppresses the FETCH response."""
        s = selected(message())
        self.assertEqual(s.command(b"s STORE 1 +FLAGS.SILENT (\\Seen)"), b"s OK Completed\r\n")

    def test_store_recent_is_refused(self):
        """\\Recent cannot be stored."""
        self.assertIn(b"s BAD", selected(message()).command(b"s STORE 1 +FLAGS (\\Recent)"))


class SearchTests(SynchronousTestCase):
    def setUp(self):
        self.s = selected(
            message("Meeting", "see you at noon", "smith@example.org"),
            message("Lunch", "pizza", "jones@example.org", date="Tue, 1 Mar 2022 10:00:00 +0000"),
            message("Report", "numbers " * 200, "smith@example.org"),
        )
        self.s.command(b"s STORE 2 +FLAGS (\\Flagged)")

    def search(self, criteria: bytes) -> bytes:
        return lines(self.s.command(b"q " + criteria))[0]

    def test_search_examples(self):
        """RFC 3501 §6.4.4 style keys select the right messages."""
        self.assertEqual(self.search(b"SEARCH FLAGGED"), b"* SEARCH 2")
        self.assertEqual(self.search(b'SEARCH FROM "Smith"'), b"* SEARCH 1 3")
        self.assertEqual(self.search(b"SEARCH NOT FROM smith"), b"* SEARCH 2")
        self.assertEqual(self.search(b"SEARCH OR FLAGGED SUBJECT report"), b"* SEARCH 2 3")
        self.assertEqual(self.search(b"SEARCH BODY pizza"), b"* SEARCH 2")
        self.assertEqual(self.search(b"SEARCH TEXT jones"), b"* SEARCH 2")
        self.assertEqual(self.search(b"SEARCH LARGER 1000"), b"* SEARCH 3")
        self.assertEqual(self.search(b"SEARCH SENTSINCE 1-Jan-2020"), b"* SEARCH 2")
        self.assertEqual(self.search(b"SEARCH 2:3 UNFLAGGED"), b"* SEARCH 3")
        self.assertEqual(self.search(b"SEARCH SINCE 1-Jan-2000 UNKEYWORD $X"), b"* SEARCH 1 2 3")

    def test_uid_search_returns_uids(self):
        """UID SEARCH answers UIDs."""
        self.s.command(b"e STORE 1 +FLAGS (\\Deleted)")
        self.s.command(b"x EXPUNGE")
        self.assertEqual(self.search(b"UID SEARCH ALL"), b"* SEARCH 2 3")
        self.assertEqual(self.search(b"SEARCH ALL"), b"* SEARCH 1 2")

    def test_empty_result_still_answers_search(self):
        """FINDINGS: an empty result gives "* SEARCH" (twisted omitted it)."""
        self.assertEqual(self.search(b"SEARCH DELETED"), b"* SEARCH")

    def test_keyword_search(self):
        """KEYWORD matches keywords (twisted's was always false)."""
        self.s.command(b"s STORE 3 +FLAGS ($Todo)")
        self.assertEqual(self.search(b"SEARCH KEYWORD $Todo"), b"* SEARCH 3")

    def test_bad_charset(self):
        """An unknown charset gives NO... [BADCHARSET]."""
        self.assertIn(b"[BADCHARSET", self.s.command(b"q SEARCH CHARSET KOI8-R TEXT x"))


class CopyMoveExpungeTests(SynchronousTestCase):
    def test_copy_reports_copyuid(self):
        """RFC 4315 §3: COPY answers [COPYUID uidvalidity source-uids dest-uids]."""
        s = selected(message("a"), message("b"))
        trash = s.store.status("alice", "Trash").result.uidvalidity
        self.assertEqual(s.command(b"c COPY 1:2 Trash"),
                         b"c OK [COPYUID %d 1:2 1,2] Completed\r\n" % trash)
        self.assertEqual(s.store.status("alice", "INBOX").result.messages, 2)

    def test_copy_to_missing_mailbox_is_trycreate(self):
        """FINDINGS: COPY to a missing mailbox is NO [TRYCREATE], not BAD."""
        s = selected(message())
        self.assertIn(b"c NO [TRYCREATE]", s.command(b"c COPY 1 Missing"))

    def test_move_expunges_source(self):
        """RFC 6851 §4.3: untagged COPYUID, then EXPUNGE, then OK."""
        s = selected(message("a"), message("b"))
        trash = s.store.status("alice", "Trash").result.uidvalidity
        self.assertEqual(lines(s.command(b"m UID MOVE 2 Trash")), [
            b"* OK [COPYUID %d 2 1] Moved" % trash, b"* 2 EXPUNGE", b"m OK Completed"])
        self.assertEqual(s.store.status("alice", "INBOX").result.messages, 1)

    def test_expunge_removes_deleted(self):
        """EXPUNGE removes \\Deleted messages with decreasing-safe numbers."""
        s = selected(message("a"), message("b"), message("c"))
        s.command(b"s STORE 1:2 +FLAGS.SILENT (\\Deleted)")
        self.assertEqual(lines(s.command(b"x EXPUNGE")),
                         [b"* 1 EXPUNGE", b"* 1 EXPUNGE", b"x OK Completed"])

    def test_uid_expunge_only_listed(self):
        """RFC 4315 §2.1: UID EXPUNGE removes only listed \\Deleted messages."""
        s = selected(message("a"), message("b"))
        s.command(b"s STORE 1:2 +FLAGS.SILENT (\\Deleted)")
        self.assertEqual(lines(s.command(b"x UID EXPUNGE 2")), [b"* 2 EXPUNGE", b"x OK Completed"])
        self.assertEqual([m.uid for m in s.store.messages("alice", "INBOX").result], [1])

    def test_close_expunges_silently(self):
        """CLOSE expunges \\Deleted messages without EXPUNGE responses; UNSELECT does not."""
        s = selected(message("a"), message("b"))
        s.command(b"s STORE 1 +FLAGS.SILENT (\\Deleted)")
        self.assertEqual(s.command(b"u UNSELECT"), b"u OK Completed\r\n")
        self.assertEqual(s.store.status("alice", "INBOX").result.messages, 2)
        s.select()
        self.assertEqual(s.command(b"c CLOSE"), b"c OK Completed\r\n")
        self.assertEqual(s.store.status("alice", "INBOX").result.messages, 1)


class AppendTests(SynchronousTestCase):
    def test_append_with_flags_and_date(self):
        """APPEND stores the literal with flags and date and answers [APPENDUID]."""
        s = Session()
        s.login()
        data = message("appended")
        self.assertEqual(s.command(b'a APPEND Drafts (\\Draft) "05-Jan-2024 10:00:00 +0100" '
                                   b"{%d}" % len(data)), b"+ Ready for literal data\r\n")
        out = s.command(data)
        validity = s.store.status("alice", "Drafts").result.uidvalidity
        self.assertEqual(out, b"a OK [APPENDUID %d 1] APPEND completed\r\n" % validity)
        (info,) = s.store.messages("alice", "Drafts").result
        self.assertEqual(info.flags, {"\\Draft"})
        self.assertEqual(info.internal_date.isoformat(), "2024-01-05T10:00:00+01:00")
        self.assertEqual(s.store.read("alice", "Drafts", 1).result, data)

    def test_append_to_missing_mailbox_is_trycreate(self):
        """APPEND to a missing mailbox is NO [TRYCREATE]."""
        s = Session()
        s.login()
        self.assertIn(b"a NO [TRYCREATE]", s.command(b"a APPEND Nope {1+}\r\nx"))

    def test_append_to_selected_mailbox_reports_exists(self):
        """Appending to the selected mailbox announces the new message."""
        s = selected()
        out = s.command(b"a APPEND INBOX {1+}\r\nx")
        self.assertIn(b"* 1 EXISTS\r\n", out)


class SharedMailboxTests(SynchronousTestCase):
    def setUp(self):
        self.store = MemoryMailStore()
        self.one = selected(message("a"), message("b"), message("c"), store=self.store)
        self.two = Session(store=self.store)
        self.two.login()
        self.two.select()

    def test_flag_changes_of_another_session_are_reported(self):
        """A STORE in one session shows up as FETCH FLAGS at the other's next command."""
        self.one.command(b"s STORE 2 +FLAGS (\\Flagged)")
        self.assertEqual(lines(self.two.command(b"n NOOP")),
                         [b"* 2 FETCH (UID 2 FLAGS (\\Flagged))", b"n OK Completed"])

    def test_expunge_of_another_session_is_reported_by_noop(self):
        """An EXPUNGE in one session gives the other EXPUNGE at NOOP."""
        self.one.command(b"s STORE 1 +FLAGS.SILENT (\\Deleted)")
        self.one.command(b"x EXPUNGE")
        out = lines(self.two.command(b"n NOOP"))
        self.assertIn(b"* 1 EXPUNGE", out)

    def test_expunge_is_held_back_during_fetch(self):
        """RFC 3501 §7.4.1: no EXPUNGE during FETCH; numbers stay valid until NOOP."""
        self.one.command(b"s STORE 1 +FLAGS.SILENT (\\Deleted)")
        self.one.command(b"x EXPUNGE")
        out = self.two.command(b"f FETCH 3 (UID)")
        self.assertEqual(out, b"* 3 FETCH (UID 3)\r\nf OK Completed\r\n")
        self.assertIn(b"* 1 EXPUNGE", self.two.command(b"n NOOP"))
        self.assertEqual(lines(self.two.command(b"f FETCH 2 (UID)"))[0], b"* 2 FETCH (UID 3)")

    def test_fetch_of_message_expunged_elsewhere(self):
        """Fetching the body of a message expunged elsewhere gives NO [EXPUNGEISSUED]."""
        self.one.command(b"s STORE 1 +FLAGS.SILENT (\\Deleted)")
        self.one.command(b"x EXPUNGE")
        self.assertIn(b"f NO [EXPUNGEISSUED]", self.two.command(b"f FETCH 1 BODY.PEEK[]"))

    def test_idle_sees_a_delivery(self):
        """RFC 2177: while idling, a new delivery is pushed as EXISTS; DONE ends IDLE."""
        self.assertEqual(self.two.command(b"i IDLE"), b"+ idling\r\n")
        deliver(self.store, "alice", message("new"))
        self.assertEqual(self.two.output(), b"* 4 EXISTS\r\n")
        self.assertEqual(self.two.command(b"done"), b"i OK IDLE terminated\r\n")

    def test_idle_sees_expunge_and_flags(self):
        """While idling, EXPUNGE and flag changes of other sessions are pushed at once."""
        self.two.command(b"i IDLE")
        self.one.command(b"s STORE 2 +FLAGS (\\Seen)")
        self.assertEqual(self.two.output(), b"* 2 FETCH (UID 2 FLAGS (\\Seen))\r\n")
        self.one.command(b"s STORE 1 +FLAGS.SILENT (\\Deleted)")
        self.one.command(b"x EXPUNGE")
        self.assertIn(b"* 1 EXPUNGE\r\n", self.two.output())

    def test_only_done_ends_idle(self):
        """Any line other than DONE ends IDLE with BAD."""
        self.two.command(b"i IDLE")
        self.assertEqual(self.two.command(b"x NOOP"), b"i BAD Expected DONE\r\n")

    def test_other_accounts_changes_are_not_seen(self):
        """A delivery to another account's INBOX is not reported."""
        self.two.command(b"i IDLE")
        deliver(self.store, "bob", message())
        self.assertEqual(self.two.output(), b"")
