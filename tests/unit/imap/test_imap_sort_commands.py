"""SORT, UID SORT, THREAD and UID THREAD (RFC 5256, RFC 5957): their argument parsers and the
commands over a fake transport."""

from datetime import datetime, timezone

import pytest
from twisted.trial.unittest import SynchronousTestCase

import mailsuite.imap.commands.sort  # noqa: F401  (registers the handlers)
import mailsuite.imap.sort_arguments  # noqa: F401  (registers the argument parsers)
from mailsuite.imap.parser import ParseError, RawCommand, SearchKey, parse_command
from mailsuite.imap.sort_arguments import SortArgs, ThreadArgs
from mailsuite.imap.sortthread import SortCriterion
from mailsuite.testing.memstore import MemoryMailStore
from tests.unit.imap.imap_fakes import Session, lines
from tests.unit.imap.test_imap_indexed import UnindexedStore


def parse(line: bytes, *literals: bytes):
    return parse_command(RawCommand(tuple(line.split(b"\r\n")), literals))


# --------------------------------------------------------------------------- arguments


def test_parse_sort_rfc_example():
    """RFC 5256 §4: SORT (SUBJECT REVERSE DATE) UTF-8 ALL."""
    cmd = parse(b"A283 SORT (SUBJECT REVERSE DATE) UTF-8 ALL")
    assert cmd.name == "SORT"
    assert cmd.args == SortArgs(
        (SortCriterion("SUBJECT"), SortCriterion("DATE", reverse=True)), "UTF-8",
        SearchKey("ALL"))


def test_parse_uid_sort_with_display_keys_and_criteria():
    """UID SORT takes RFC 5957 keys and several search keys (an AND)."""
    cmd = parse(b"a UID SORT (displayfrom REVERSE DISPLAYTO) us-ascii SEEN LARGER 10")
    assert cmd.name == "UID SORT"
    assert cmd.args.criteria == (SortCriterion("DISPLAYFROM"),
                                 SortCriterion("DISPLAYTO", reverse=True))
    assert cmd.args.key.op == "AND"


def test_parse_thread():
    """RFC 5256 §4: THREAD ORDEREDSUBJECT UTF-8 SINCE 5-MAR-2000."""
    cmd = parse(b"A283 THREAD ORDEREDSUBJECT UTF-8 SINCE 5-MAR-2000")
    assert cmd.args.algorithm == "ORDEREDSUBJECT"
    assert cmd.args.key.op == "SINCE"
    assert parse(b"a UID THREAD references UTF-8 ALL").args == ThreadArgs(
        "REFERENCES", "UTF-8", SearchKey("ALL"))


@pytest.mark.parametrize("line", [
    b"a SORT () UTF-8 ALL",                 # no sort key
    b"a SORT (SUBJECT UTF-8 ALL",           # unclosed criteria
    b"a SORT (SENDER) UTF-8 ALL",           # unknown key
    b"a SORT (REVERSE) UTF-8 ALL",          # REVERSE without a key
    b"a SORT (REVERSE REVERSE DATE) UTF-8 ALL",
    b"a SORT (DATE) UTF-8",                 # no search criteria
    b"a SORT (DATE) ALL",                   # no charset: ALL is not one
    b"a SORT SUBJECT UTF-8 ALL",            # criteria not in a list
    b"a THREAD UTF-8 ALL",                  # no algorithm
    b"a THREAD FANCY UTF-8 ALL",            # unknown algorithm
    b"a THREAD REFERENCES UTF-8 NOSUCHKEY",
])
def test_malformed_sort_and_thread_are_parse_errors(line):
    """Malformed SORT / THREAD arguments raise ParseError with the tag."""
    with pytest.raises(ParseError) as caught:
        parse(line)
    assert caught.value.tag == "a"


def test_unknown_charset_names_badcharset():
    """RFC 5256 §3: an unsupported charset answers [BADCHARSET]."""
    with pytest.raises(ParseError) as caught:
        parse(b"a SORT (DATE) KOI8-R ALL")
    assert caught.value.code.startswith("BADCHARSET")


def test_charset_from_literal():
    """The charset is an astring, so a literal works too."""
    assert parse(b"a SORT (SIZE) {5}\r\n ALL", b"UTF-8").args.charset == "UTF-8"


# --------------------------------------------------------------------------- commands


def mail(subject: str, *, sender: str = "carol@example.org", date: str | None = None,
         message_id: str | None = None, refs: str | None = None, body: str = "text") -> bytes:
    head = [f"From: {sender}", "To: alice@example.test", f"Subject: {subject}"]
    if date is not None:
        head.append(f"Date: {date}")
    if message_id is not None:
        head.append(f"Message-ID: <{message_id}>")
    if refs is not None:
        head.append(f"References: {refs}")
    return ("\r\n".join(head) + "\r\n\r\n" + body + "\r\n").encode()


def arrived(day: int) -> datetime:
    return datetime(2024, 1, day, tzinfo=timezone.utc)


class SortCommandTests(SynchronousTestCase):
    """Over a store answering ISearchableStore."""

    def make_store(self):
        return MemoryMailStore()

    def setUp(self):
        self.s = Session(store=self.make_store())
        self.s.store.ensure_account("alice")
        messages = [
            (mail("beta", sender="Zed <alpha@example.org>", date="Fri, 5 Jan 2024 00:00 +0000",
                  body="x" * 500), arrived(3)),
            (mail("Re: alpha", sender="Amy <zulu@example.org>",
                  date="Tue, 2 Jan 2024 00:00 +0000"), arrived(1)),
            (mail("[fwd: Alpha]", sender="bob@example.org"), arrived(2)),
        ]
        for data, when in messages:
            self.s.store.append("alice", "INBOX", data, internal_date=when)
        self.s.login()
        self.s.select()

    def answer(self, line: bytes) -> list[bytes]:
        return lines(self.s.command(line))

    def test_sort_by_subject_then_date(self):
        """SORT (SUBJECT DATE): base subjects first, the missing Date uses arrival."""
        self.assertEqual(self.answer(b"q SORT (SUBJECT DATE) UTF-8 ALL"),
                         [b"* SORT 2 3 1", b"q OK Completed"])

    def test_sort_reverse_arrival_and_size(self):
        """ARRIVAL and SIZE come from the metadata; REVERSE flips them."""
        self.assertEqual(self.answer(b"q SORT (REVERSE ARRIVAL) UTF-8 ALL")[0], b"* SORT 1 3 2")
        self.assertEqual(self.answer(b"q SORT (REVERSE SIZE) UTF-8 ALL")[0][:9], b"* SORT 1 ")

    def test_from_and_displayfrom(self):
        """FROM sorts by mailbox, DISPLAYFROM (RFC 5957) by display name or address."""
        self.assertEqual(self.answer(b"q SORT (FROM) UTF-8 ALL")[0], b"* SORT 1 3 2")
        self.assertEqual(self.answer(b"q SORT (DISPLAYFROM) UTF-8 ALL")[0], b"* SORT 2 3 1")

    def test_sort_applies_search_criteria(self):
        """Only messages matching the search criteria are sorted."""
        self.assertEqual(self.answer(b"q SORT (SUBJECT) UTF-8 FROM example NOT 2")[0],
                         b"* SORT 3 1")
        self.assertEqual(self.answer(b"q SORT (SUBJECT) UTF-8 BODY xxxx")[0], b"* SORT 1")

    def test_empty_result_still_answers_sort(self):
        """RFC 5256 §4: no match gives a bare "* SORT"."""
        self.assertEqual(self.answer(b'q SORT (SUBJECT) US-ASCII TEXT "not in mailbox"'),
                         [b"* SORT", b"q OK Completed"])

    def test_uid_sort_answers_uids(self):
        """UID SORT reports UIDs, which differ from sequence numbers after an expunge."""
        self.s.command(b"s STORE 2 +FLAGS (\\Deleted)")
        self.s.command(b"x EXPUNGE")
        self.assertEqual(self.answer(b"q UID SORT (ARRIVAL) UTF-8 ALL")[0], b"* SORT 3 1")
        self.assertEqual(self.answer(b"q SORT (ARRIVAL) UTF-8 ALL")[0], b"* SORT 2 1")

    def test_metadata_sort_reads_no_message(self):
        """SORT (ARRIVAL) with metadata-only criteria never reads message bytes."""
        self.s.store.read = lambda *a: self.fail("read called")
        self.assertEqual(self.answer(b"q SORT (REVERSE SIZE) UTF-8 UNSEEN")[-1],
                         b"q OK Completed")

    def test_bad_charset_is_refused(self):
        """An unknown charset is refused with [BADCHARSET]."""
        self.assertIn(b"[BADCHARSET", self.s.command(b"q SORT (DATE) KOI8-R ALL"))

    def test_sort_needs_a_selected_mailbox(self):
        """SORT and THREAD are commands of the selected state."""
        s = Session()
        s.login()
        self.assertTrue(s.command(b"q SORT (DATE) UTF-8 ALL").startswith(b"q BAD"))
        self.assertTrue(s.command(b"q THREAD REFERENCES UTF-8 ALL").startswith(b"q BAD"))


class ReadingSortCommandTests(SortCommandTests):
    """The same, over a store that is only an IMailStore: messages are read."""

    def make_store(self):
        return UnindexedStore(MemoryMailStore())

    def test_each_message_read_once(self):
        """Header keys plus a BODY search read each message exactly once."""
        reads = []
        read = self.s.store.read

        def counting(account, mailbox, uid):
            reads.append(uid)
            return read(account, mailbox, uid)

        self.s.store.read = counting
        self.answer(b"q SORT (SUBJECT FROM) UTF-8 BODY text")
        self.assertEqual(sorted(reads), [1, 2, 3])

    def test_header_sort_reads_only_matches(self):
        """Metadata criteria filter before any read: only matches are read."""
        reads = []
        read = self.s.store.read
        self.s.store.read = lambda a, m, uid: reads.append(uid) or read(a, m, uid)
        self.answer(b"q SORT (SUBJECT) UTF-8 UID 2")
        self.assertEqual(reads, [2])


class ThreadCommandTests(SynchronousTestCase):
    """Over a store answering ISearchableStore."""

    def make_store(self):
        return MemoryMailStore()

    def setUp(self):
        self.s = Session(store=self.make_store())
        self.s.store.ensure_account("alice")
        messages = [
            mail("Plans", message_id="a@x", date="Mon, 1 Jan 2024 10:00 +0000"),
            mail("Other", message_id="b@x", date="Mon, 1 Jan 2024 11:00 +0000"),
            mail("Re: Plans", message_id="c@x", refs="<a@x>",
                 date="Mon, 1 Jan 2024 12:00 +0000"),
            mail("Re: Plans", message_id="d@x", refs="<a@x> <c@x>",
                 date="Mon, 1 Jan 2024 13:00 +0000"),
            mail("Re: Plans", message_id="e@x", refs="<a@x>",
                 date="Mon, 1 Jan 2024 09:00 +0000"),
            mail("Re: Other", message_id="f@x", date="Mon, 1 Jan 2024 14:00 +0000"),
        ]
        for data in messages:
            self.s.store.append("alice", "INBOX", data)
        self.s.login()
        self.s.select()

    def answer(self, line: bytes) -> list[bytes]:
        return lines(self.s.command(line))

    def test_thread_references(self):
        """THREAD REFERENCES links by References and gathers by subject."""
        self.assertEqual(self.answer(b"t THREAD REFERENCES UTF-8 ALL"),
                         [b"* THREAD (1 (5)(3 4))(2 6)", b"t OK Completed"])

    def test_thread_ordered_subject(self):
        """THREAD ORDEREDSUBJECT groups by base subject; the earliest is the root."""
        self.assertEqual(self.answer(b"t THREAD ORDEREDSUBJECT UTF-8 ALL")[0],
                         b"* THREAD (5 (1)(3)(4))(2 6)")

    def test_uid_thread_answers_uids(self):
        """UID THREAD reports UIDs."""
        self.s.command(b"s STORE 2 +FLAGS (\\Deleted)")
        self.s.command(b"x EXPUNGE")
        self.assertEqual(self.answer(b"t UID THREAD REFERENCES UTF-8 ALL")[0],
                         b"* THREAD (1 (5)(3 4))(6)")

    def test_empty_thread_result(self):
        """RFC 5256 §4: no match gives a bare "* THREAD"."""
        self.assertEqual(self.answer(b't THREAD ORDEREDSUBJECT US-ASCII TEXT "gewp"'),
                         [b"* THREAD", b"t OK Completed"])

    def test_thread_with_criteria(self):
        """Only matching messages are threaded; a missing parent leaves its replies."""
        self.assertEqual(self.answer(b"t THREAD REFERENCES UTF-8 NOT 1")[0],
                         b"* THREAD ((5)(3 4))(2 6)")

    def test_unknown_algorithm_is_bad(self):
        """An unknown threading algorithm is a BAD command."""
        self.assertTrue(self.s.command(b"t THREAD FANCY UTF-8 ALL").startswith(b"t BAD"))


class ReadingThreadCommandTests(ThreadCommandTests):
    """The same, over a store that is only an IMailStore."""

    def make_store(self):
        return UnindexedStore(MemoryMailStore())
