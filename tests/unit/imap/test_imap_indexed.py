"""SEARCH, SORT, THREAD and FETCH ENVELOPE/BODYSTRUCTURE answered from a store's indexes
(ISearchableStore), compared with the reading path a plain IMailStore gets."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest
from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from mailsuite.imap import sortthread
from mailsuite.imap.commands.search import Untranslatable, store_query
from mailsuite.imap.message import ParsedMessage
from mailsuite.imap.parser import SearchKey, SequenceSet
from mailsuite.imap.selected import SelectedMailbox
from mailsuite.interfaces import (
    IMailStore,
    ISearchableStore,
    MessageInfo,
    Op,
    SearchInternalDate,
    SearchUIDs,
)
from mailsuite.store.base import inline_runner
from mailsuite.store.search import extract_meta
from mailsuite.store.sqlite import SQLiteMailStore
from mailsuite.testing.memstore import MemoryMailStore
from tests.unit.imap.imap_fakes import Session, lines

NOW = datetime(2024, 3, 10, 12, 0, tzinfo=timezone.utc)


@implementer(IMailStore)
class UnindexedStore:
    """A store passing every IMailStore call through, without ISearchableStore."""

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        if name in ("search", "message_meta", "sort_keys"):
            raise AttributeError(name)
        return getattr(self._store, name)


class CountingStore(MemoryMailStore):
    """A MemoryMailStore counting search, message_meta and read calls."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def search(self, account, mailbox, query):
        self.calls.append("search")
        return super().search(account, mailbox, query)

    def message_meta(self, account, mailbox, uids):
        self.calls.append("message_meta")
        return super().message_meta(account, mailbox, uids)

    def sort_keys(self, account, mailbox, uids):
        self.calls.append("sort_keys")
        return super().sort_keys(account, mailbox, uids)

    def read(self, account, mailbox, uid):
        self.calls.append("read")
        return super().read(account, mailbox, uid)


def mail(subject: str, *, sender: str, date_: str, body: str, refs: str | None = None,
         extra: str = "") -> bytes:
    head = [f"Date: {date_}", f"From: {sender}", "To: Alice <alice@example.test>",
            f"Subject: {subject}", f"Message-ID: <{subject.replace(' ', '.')}@example.org>"]
    if refs:
        head.append(f"References: {refs}")
    if extra:
        head.append(extra)
    return ("\r\n".join(head) + "\r\n\r\n" + body + "\r\n").encode()


MESSAGES = [
    (mail("Meeting", sender="Smith <smith@example.org>", date_="Mon, 1 Jan 2024 09:00 +0000",
          body="see you at noon"), datetime(2024, 1, 1, 9, tzinfo=timezone.utc)),
    (mail("Lunch", sender="jones@example.org", date_="Tue, 1 Mar 2022 10:00 +0000",
          body="pizza " * 300, extra="X-Tag: =?utf-8?q?caf=C3=A9?="),
     datetime(2024, 3, 1, 10, tzinfo=timezone.utc)),
    (mail("Re: Meeting", sender="Amy <amy@example.org>", date_="Wed, 3 Jan 2024 09:00 +0000",
          body="agreed", refs="<Meeting@example.org>"),
     datetime(2024, 3, 10, 11, tzinfo=timezone.utc)),
    (mail("Report", sender="smith@example.org", date_="Fri, 5 Jan 2024 09:00 +0000",
          body="numbers and more numbers"), datetime(2024, 3, 9, 8, tzinfo=timezone.utc)),
]


def open_session(store) -> Session:
    clock = task.Clock()
    clock.advance(NOW.timestamp())
    s = Session(store=store, clock=clock)
    s.store.ensure_account("alice")
    for data, when in MESSAGES:
        s.store.append("alice", "INBOX", data, internal_date=when)
    s.login()
    s.select()
    s.command(b"f STORE 2 +FLAGS (\\Flagged $Todo)")
    s.command(b"f STORE 4 +FLAGS (\\Seen)")
    return s


SEARCHES = [
    b"SEARCH ALL",
    b"SEARCH FLAGGED",
    b"SEARCH UNFLAGGED",
    b"SEARCH KEYWORD $Todo",
    b"SEARCH UNKEYWORD $Todo",
    b"SEARCH NEW",
    b"SEARCH OLD",
    b"SEARCH RECENT",
    b"SEARCH UNSEEN",
    b"SEARCH 2:3",
    b"SEARCH 3:*",
    b"SEARCH NOT 1,3",
    b"UID SEARCH UID 2:*",
    b"SEARCH LARGER 1000",
    b"SEARCH SMALLER 1000",
    b"SEARCH BEFORE 1-Mar-2024",
    b"SEARCH ON 1-Mar-2024",
    b"SEARCH SINCE 9-Mar-2024",
    b"SEARCH SENTBEFORE 2-Jan-2024",
    b"SEARCH SENTON 3-Jan-2024",
    b"SEARCH SENTSINCE 3-Jan-2024",
    b"SEARCH OLDER 7200",
    b"SEARCH YOUNGER 7200",
    b'SEARCH FROM "Smith"',
    b"SEARCH SUBJECT meeting",
    b'SEARCH HEADER X-Tag "caf\xc3\xa9"',
    b'SEARCH HEADER References ""',
    b"SEARCH BODY pizza",
    b"SEARCH BODY NUMBERS",
    b"SEARCH TEXT jones",
    b"SEARCH TEXT noon",
    b"SEARCH OR FLAGGED SUBJECT report",
    b"SEARCH NOT FROM smith",
    b"SEARCH MODSEQ 1",
    b"UID SEARCH RETURN (MIN MAX COUNT) FROM smith",
]


@pytest.mark.parametrize("criteria", SEARCHES)
def test_indexed_search_answers_like_the_reading_path(criteria):
    """Every search key gives the same answer from the indexes as from reading messages."""
    indexed = lines(open_session(MemoryMailStore()).command(b"q " + criteria))
    reading = lines(open_session(UnindexedStore(MemoryMailStore())).command(b"q " + criteria))
    assert indexed == reading
    assert indexed[-1] == b"q OK Completed"


@pytest.mark.parametrize("criteria", SEARCHES)
def test_sqlite_search_answers_like_the_reading_path(criteria, tmp_path):
    """The sqlite backend's SQL translation agrees with reading messages, key by key."""
    store = SQLiteMailStore(str(tmp_path / "store"), runner=inline_runner)
    try:
        indexed = lines(open_session(store).command(b"q " + criteria))
    finally:
        store.close()
    reading = lines(open_session(UnindexedStore(MemoryMailStore())).command(b"q " + criteria))
    assert indexed == reading


def test_search_answers_expected_messages():
    """A spot check of the indexed answers themselves (not only their agreement)."""
    s = open_session(MemoryMailStore())
    assert lines(s.command(b"q SEARCH BODY pizza"))[0] == b"* SEARCH 2"
    assert lines(s.command(b"q SEARCH YOUNGER 7200"))[0] == b"* SEARCH 3"
    assert lines(s.command(b"q SEARCH NOT 1,3"))[0] == b"* SEARCH 2 4"
    assert lines(s.command(b"q SEARCH SENTON 3-Jan-2024"))[0] == b"* SEARCH 3"


class IndexedCallsTests(SynchronousTestCase):
    def setUp(self):
        self.store = CountingStore()
        self.s = open_session(self.store)
        del self.store.calls[:]

    def test_search_is_one_store_search_and_no_read(self):
        """A SEARCH with header and body keys is one store.search call, reading nothing."""
        self.s.command(b"q SEARCH OR BODY pizza HEADER Subject report NOT 1")
        self.assertEqual(self.store.calls, ["search"])

    def test_sort_reads_no_message(self):
        """SORT by header keys is one search and one sort_keys call, reading nothing."""
        answer = lines(self.s.command(b"q SORT (SUBJECT REVERSE DATE) UTF-8 TEXT example"))
        self.assertEqual(answer[0], b"* SORT 2 3 1 4")
        self.assertEqual(self.store.calls, ["search", "sort_keys"])

    def test_metadata_sort_needs_no_meta(self):
        """SORT (SIZE) takes sizes from the snapshot: no sort_keys call."""
        self.s.command(b"q SORT (SIZE) UTF-8 UNSEEN")
        self.assertEqual(self.store.calls, ["search"])

    def test_all_needs_no_store_search(self):
        """ALL is answered from the snapshot without a store.search call."""
        self.assertEqual(lines(self.s.command(b"q SEARCH ALL"))[0], b"* SEARCH 1 2 3 4")
        self.assertEqual(self.store.calls, [])

    def test_thread_reads_no_message(self):
        """THREAD REFERENCES takes Message-ID and References from the SortKeys."""
        answer = lines(self.s.command(b"q THREAD REFERENCES UTF-8 ALL"))
        self.assertEqual(answer[0], b"* THREAD (2)(1 3)(4)")
        self.assertEqual(self.store.calls, ["sort_keys"])

    def test_fetch_envelope_reads_no_message(self):
        """FETCH ENVELOPE BODYSTRUCTURE BODY FLAGS is one message_meta call per command."""
        self.s.command(b"q FETCH 1:* (FLAGS ENVELOPE BODYSTRUCTURE BODY)")
        self.assertEqual(self.store.calls, ["message_meta"])

    def test_fetch_with_a_section_reads(self):
        """A body section needs the bytes anyway: messages are read, no meta is fetched."""
        self.s.command(b"q FETCH 1 (ENVELOPE BODY.PEEK[HEADER])")
        self.assertEqual(self.store.calls, ["read"])

    def test_saved_result_is_used(self):
        """RFC 5182: "$" in an indexed SEARCH stands for the saved UIDs."""
        self.s.command(b"q SEARCH RETURN (SAVE) FROM smith")
        self.assertEqual(lines(self.s.command(b"q SEARCH $ SUBJECT report"))[0],
                         b"* SEARCH 4")


def test_fetch_from_meta_matches_reading_path():
    """ENVELOPE, BODYSTRUCTURE and BODY from the MessageMeta are the bytes parsing gives."""
    line = b"q FETCH 1:* (UID ENVELOPE BODYSTRUCTURE BODY)"
    indexed = open_session(MemoryMailStore()).command(line)
    reading = open_session(UnindexedStore(MemoryMailStore())).command(line)
    assert indexed == reading
    assert b"ENVELOPE (" in indexed


def test_message_unknown_to_the_session_is_left_out():
    """RFC 3501 §7.4.1: a message delivered after the snapshot is not reported by SEARCH."""
    s = open_session(MemoryMailStore())
    s.store.append("alice", "INBOX", MESSAGES[1][0])
    answer = lines(s.command(b"q UID SEARCH BODY pizza"))
    assert answer[0] == b"* SEARCH 2"
    assert b"* 5 EXISTS" in answer


def test_message_expunged_elsewhere_is_left_out():
    """A message expunged by another session (a ghost) is not in an indexed result."""
    s = open_session(MemoryMailStore())
    s.store.expunge("alice", "INBOX", [2])
    s.command(b"f FETCH 1 FLAGS")  # RFC 3501 §7.4.1: no EXPUNGE here; message 2 stays
    assert lines(s.command(b"q SEARCH ALL"))[0] == b"* SEARCH 1 3 4"


# --------------------------------------------------------------------------- translation


def snapshot(uids) -> SelectedMailbox:
    infos = [MessageInfo(uid, frozenset(), 1, NOW, 10) for uid in uids]
    return SelectedMailbox("INBOX", uidvalidity=1, uidnext=uids[-1] + 1, highestmodseq=1,
                           messages=infos, read_only=False)


def test_sequence_numbers_become_snapshot_uid_ranges():
    """A sequence set becomes the UID ranges of those positions, "*" the last message."""
    key = SearchKey("SEQ", (SequenceSet(((2, 3), (5, -1))),))
    query = store_query(key, snapshot([4, 7, 9, 12, 20]), now=0)
    assert query == SearchUIDs(((7, 9), (20, 20)))


def test_sequence_numbers_beyond_the_mailbox_match_nothing():
    """Numbers past the last message give no range at all."""
    key = SearchKey("SEQ", (SequenceSet(((8, 9),)),))
    assert store_query(key, snapshot([1, 2]), now=0) == SearchUIDs(())


def test_older_is_an_instant_before_now():
    """RFC 5032: OLDER n is an internal date at or before now - n seconds."""
    query = store_query(SearchKey("OLDER", (60,)), snapshot([1]), now=NOW.timestamp())
    assert query == SearchInternalDate(Op.LE, datetime(2024, 3, 10, 11, 59, tzinfo=timezone.utc))


def test_dates_compare_days():
    """BEFORE is a day comparison on the internal date."""
    query = store_query(SearchKey("BEFORE", (date(2024, 1, 2),)), snapshot([1]), now=0)
    assert query == SearchInternalDate(Op.LT, date(2024, 1, 2))


def test_unknown_key_is_untranslatable():
    """A key with no store counterpart raises Untranslatable (the caller then reads)."""
    with pytest.raises(Untranslatable):
        store_query(SearchKey("FUZZY", ()), snapshot([1]), now=0)


def test_unindexed_wrapper_is_not_searchable():
    """The fallback tests really run without ISearchableStore."""
    assert ISearchableStore.providedBy(MemoryMailStore())
    assert not ISearchableStore.providedBy(UnindexedStore(MemoryMailStore()))


@pytest.mark.parametrize("data", [data for data, _ in MESSAGES])
def test_entry_from_meta_equals_entry_from_parsed(data):
    """The sort/thread Entry from a MessageMeta equals the one from the parsed message."""
    info = MessageInfo(1, frozenset(), 1, NOW, len(data))
    parsed = ParsedMessage.parse(data)
    assert (sortthread.entry_from_meta(1, 1, info, extract_meta(parsed))
            == sortthread.entry_from(1, 1, info, parsed))
