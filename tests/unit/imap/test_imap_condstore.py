"""CONDSTORE and QRESYNC (RFC 7162): MODSEQ, CHANGEDSINCE, UNCHANGEDSINCE, HIGHESTMODSEQ,
SEARCH MODSEQ, ENABLE, VANISHED."""

import pytest
from twisted.trial.unittest import SynchronousTestCase

from mailsuite.imap.parser import ParseError, QResyncParams, SequenceSet
from mailsuite.imap.selected import missing_uids
from mailsuite.interfaces import FlagMode
from tests.unit.imap.imap_fakes import Session, deliver, lines, message
from tests.unit.imap.test_imap_parser import parse


def selected(count: int = 3) -> Session:
    s = Session()
    deliver(s.store, "alice", *(message(f"m{n}") for n in range(count)))
    s.login()
    s.select()
    return s


def modseq_of(s: Session, uid: int) -> int:
    return {m.uid: m.modseq for m in s.store.messages("alice", "INBOX").result}[uid]


# RFC 7162 examples (§3.1.3, §3.1.4.1, §3.1.5, §3.2.5, §3.2.6) as parser table.
@pytest.mark.parametrize("line,check", [
    (b"a103 UID STORE 6,4,8 (UNCHANGEDSINCE 12121230045) +FLAGS.SILENT (\\Deleted)",
     lambda a: a.unchangedsince == 12121230045 and a.silent and a.mode == "add"),
    (b"s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)",
     lambda a: a.changedsince == 12345 and not a.vanished),
    (b"s100 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)",
     lambda a: a.changedsince == 12345 and a.vanished),
    (b"a SEARCH MODSEQ \"/flags/\\\\draft\" all 620162338",
     lambda a: a.key.op == "MODSEQ" and a.key.args == (620162338,)),
    (b"A142 SELECT INBOX (CONDSTORE)", lambda a: a[1].condstore),
    (b"A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))",
     lambda a: a[1].qresync == QResyncParams(
         67890007, 20050715194045000, SequenceSet(((41, 41), (43, 211), (214, 541))))),
    (b"B04 SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 "
     b"(5000,7500,9000,9990:9999 15000,22500,27000,29970,29973,29976:29997)))",
     lambda a: a[1].qresync.seq_match[0].ranges[0] == (5000, 5000)),
    (b"A03 SELECT INBOX (QRESYNC (67890007 90060115194045000 (1:3 4:6)))",
     lambda a: a[1].qresync.known_uids is None and a[1].qresync.seq_match is not None),
])
def test_rfc7162_examples_parse(line, check):
    """The RFC 7162 command examples parse to their parameters."""
    assert check(parse(line).args)


@pytest.mark.parametrize("line", [
    b"a FETCH 1 FLAGS (VANISHED)",
    b"a FETCH 1 FLAGS (CHANGEDSINCE 0)",
    b"a STORE 1 (UNCHANGEDSINCE x) FLAGS (\\Seen)",
    b"a SELECT INBOX (QRESYNC (1))",
    b"a SELECT INBOX (BOGUS)",
])
def test_bad_condstore_syntax_is_refused(line):
    """Malformed CONDSTORE/QRESYNC parameters are parse errors (BAD)."""
    with pytest.raises(ParseError):
        parse(line)


@pytest.mark.parametrize("ranges,existing,expected", [
    ([(1, 10)], [2, 3, 7], "1,4:6,8:10"),
    ([(1, 4294967295)], [1], "2:4294967295"),
    ([(5, 6), (1, 3)], [1, 2, 3], "5:6"),
    ([(1, 3)], [1, 2, 3], ""),
])
def test_missing_uids(ranges, existing, expected):
    """missing_uids lists the UIDs of the ranges not present, without enumerating ranges."""
    assert missing_uids(ranges, existing) == expected


class CondstoreTests(SynchronousTestCase):
    def test_select_reports_highestmodseq(self):
        """RFC 7162 §3.1.2.1: SELECT sends OK [HIGHESTMODSEQ n]."""
        s = Session()
        deliver(s.store, "alice", message())
        s.login()
        self.assertIn(b"* OK [HIGHESTMODSEQ 1] Highest\r\n", s.select())

    def test_status_highestmodseq(self):
        """STATUS HIGHESTMODSEQ answers the mailbox's highest mod-sequence."""
        s = Session()
        deliver(s.store, "alice", message(), message())
        s.login()
        self.assertIn(b"* STATUS INBOX (HIGHESTMODSEQ 2)", s.command(b"a STATUS INBOX (HIGHESTMODSEQ)"))

    def test_fetch_modseq(self):
        """FETCH MODSEQ answers each message's mod-sequence."""
        s = selected(2)
        out = lines(s.command(b"f FETCH 1:2 (MODSEQ)"))[1:]
        self.assertEqual(out[:2], [b"* 1 FETCH (MODSEQ (1))", b"* 2 FETCH (MODSEQ (2))"])

    def test_fetch_changedsince_filters_and_adds_modseq(self):
        """RFC 7162 §3.1.4.1: only messages changed after the value, with MODSEQ."""
        s = selected(3)
        s.command(b"a STORE 1 +FLAGS (\\Flagged)")
        out = lines(s.command(b"f FETCH 1:* (FLAGS) (CHANGEDSINCE 3)"))[1:]
        self.assertEqual(out, [b"* 1 FETCH (FLAGS (\\Flagged) MODSEQ (4))", b"f OK Completed"])

    def test_unsolicited_fetch_carries_modseq_once_enabled(self):
        """RFC 7162 §3.1.4: after ENABLE CONDSTORE, flag changes by others include MODSEQ."""
        s = selected(1)
        s.command(b"e ENABLE CONDSTORE")
        s.store.set_flags("alice", "INBOX", [1], frozenset({"\\Seen"}), FlagMode.ADD)
        self.assertIn(b"* 1 FETCH (UID 1 FLAGS (\\Seen) MODSEQ (2))", s.command(b"n NOOP"))

    def test_enable_condstore_while_selected_sends_highestmodseq(self):
        """RFC 7162 §3.1: enabling on a selected mailbox reports HIGHESTMODSEQ at once."""
        s = selected(2)
        out = lines(s.command(b"e ENABLE CONDSTORE"))
        self.assertEqual(out, [b"* ENABLED CONDSTORE", b"* OK [HIGHESTMODSEQ 2] Highest",
                               b"e OK Completed"])

    def test_first_condstore_command_enables_it(self):
        """RFC 7162 §3.1: a CONDSTORE-using command enables CONDSTORE and says HIGHESTMODSEQ."""
        s = selected(2)
        self.assertEqual(lines(s.command(b"f FETCH 1 (MODSEQ)"))[0],
                         b"* OK [HIGHESTMODSEQ 2] Highest")
        self.assertNotIn(b"HIGHESTMODSEQ", s.command(b"g FETCH 1 (MODSEQ)"))

    def test_store_unchangedsince_reports_modified(self):
        """RFC 7162 §3.1.3: messages changed after the value are left alone, [MODIFIED]."""
        s = selected(3)
        s.store.set_flags("alice", "INBOX", [2], frozenset({"$X"}), FlagMode.ADD)  # modseq 4
        out = lines(s.command(b"a STORE 1:3 (UNCHANGEDSINCE 3) +FLAGS.SILENT (\\Deleted)"))
        self.assertEqual(out[-1], b"a OK [MODIFIED 2] Conditional STORE failed for some messages")
        self.assertIn(b"* 1 FETCH (MODSEQ (5))", out)
        self.assertNotIn("\\Deleted", {m.uid: m.flags for m in
                                       s.store.messages("alice", "INBOX").result}[2])

    def test_uid_store_unchangedsince_zero_fails_all(self):
        """UNCHANGEDSINCE 0 fails for every message; [MODIFIED] lists UIDs."""
        s = selected(2)
        out = lines(s.command(b"a UID STORE 1:2 (UNCHANGEDSINCE 0) +FLAGS (\\Seen)"))[1:]
        self.assertEqual(out, [b"a OK [MODIFIED 1:2] Conditional STORE failed for some messages"])

    def test_search_modseq(self):
        """RFC 7162 §3.1.5: SEARCH MODSEQ ends with (MODSEQ highest-of-results)."""
        s = selected(3)
        out = lines(s.command(b"a SEARCH MODSEQ 2"))
        self.assertEqual(out[1], b"* SEARCH 2 3 (MODSEQ 3)")


class QresyncTests(SynchronousTestCase):
    def test_select_qresync_needs_enable(self):
        """RFC 7162 §3.2.5: the QRESYNC parameter without ENABLE QRESYNC is BAD."""
        s = Session()
        s.login()
        self.assertIn(b"q BAD", s.command(b"q SELECT INBOX (QRESYNC (1 1))"))

    def test_select_qresync_reports_vanished_and_changes(self):
        """RFC 7162 §3.2.5.1: VANISHED (EARLIER) for gone known UIDs, FETCH for changes."""
        s = Session()
        deliver(s.store, "alice", *(message(f"m{n}") for n in range(5)))
        s.store.expunge("alice", "INBOX", [2, 4])
        s.store.set_flags("alice", "INBOX", [5], frozenset({"\\Seen"}), FlagMode.ADD)
        validity = s.store.status("alice", "INBOX").result.uidvalidity
        s.login()
        s.command(b"e ENABLE QRESYNC")
        out = lines(s.command(b"q SELECT INBOX (QRESYNC (%d 5 1:5))" % validity))
        self.assertIn(b"* VANISHED (EARLIER) 2,4", out)
        self.assertIn(b"* 3 FETCH (UID 5 FLAGS (\\Seen) MODSEQ (7))", out)
        self.assertNotIn(b"* 1 FETCH", b"\n".join(out))

    def test_select_qresync_wrong_uidvalidity_is_plain_select(self):
        """A UIDVALIDITY mismatch ignores the QRESYNC data."""
        s = selected(1)
        s.command(b"e ENABLE QRESYNC")
        out = s.command(b"q SELECT INBOX (QRESYNC (1 1 1:9))")
        self.assertNotIn(b"VANISHED", out)
        self.assertIn(b"q OK", out)

    def test_expunge_sends_vanished_once_enabled(self):
        """RFC 7162 §3.2.10: after ENABLE QRESYNC, expunges are VANISHED, not EXPUNGE."""
        s = selected(3)
        s.command(b"e ENABLE QRESYNC")
        s.command(b"a STORE 1:2 +FLAGS.SILENT (\\Deleted)")
        self.assertEqual(lines(s.command(b"x EXPUNGE")), [b"* VANISHED 1:2", b"x OK Completed"])

    def test_uid_fetch_vanished(self):
        """RFC 7162 §3.2.6: UID FETCH (CHANGEDSINCE m VANISHED) reports gone UIDs first."""
        s = selected(4)
        s.command(b"e ENABLE QRESYNC")
        s.store.expunge("alice", "INBOX", [3])
        s.command(b"n NOOP")
        out = lines(s.command(b"f UID FETCH 1:* (FLAGS) (CHANGEDSINCE 3 VANISHED)"))
        self.assertEqual(out[0], b"* VANISHED (EARLIER) 3")
        self.assertEqual(out[1:], [b"* 3 FETCH (UID 4 FLAGS () MODSEQ (4))", b"f OK Completed"])

    def test_vanished_modifier_needs_qresync(self):
        """The VANISHED modifier without ENABLE QRESYNC is BAD."""
        s = selected(1)
        self.assertIn(b"f BAD", s.command(b"f UID FETCH 1:* FLAGS (CHANGEDSINCE 1 VANISHED)"))
