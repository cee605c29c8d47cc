"""
ISearchableStore conformance: search and message_meta give the same answers on every backend
(memory, sqlite, maildir).
"""

from __future__ import annotations

import base64
from datetime import date, datetime, timedelta, timezone

import pytest
from zope.interface.verify import verifyObject

from mailsuite.imap.message import ParsedMessage
from mailsuite.interfaces import (
    FlagMode,
    ISearchableStore,
    MetaAddress,
    NoSuchMailbox,
    Op,
    SearchAll,
    SearchAnd,
    SearchBody,
    SearchFlag,
    SearchHeader,
    SearchInternalDate,
    SearchModSeq,
    SearchNot,
    SearchOr,
    SearchSentDate,
    SearchSize,
    SearchText,
    SearchUIDs,
)
from mailsuite.store.search import InvalidQuery
from tests.unit.store.storetesting import BACKENDS, Subject, failure, result

A = "alice"
UTC = timezone.utc

PLAIN = (
    b'From: "Alice Example" <alice@example.test>\r\n'
    b"To: Bob <bob@example.test>, carol@example.test\r\n"
    b"Cc: dave@example.test\r\n"
    b"Subject: Quarterly Report\r\n"
    b"Date: Tue, 14 May 2024 23:30:00 -0700\r\n"
    b"Message-ID: <m1@example.test>\r\n"
    b"\r\n"
    b"The numbers look GOOD this quarter.\r\n"
)

ENCODED = (
    b"From: =?iso-8859-1?q?J=F6rg?= <jorg@example.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: =?utf-8?B?" + base64.b64encode("Grüße aus Köln".encode()) + b"?=\r\n"
    b"Date: Wed, 15 May 2024 08:00:00 +0000\r\n"
    b"Message-ID: <m2@example.test>\r\n"
    b"In-Reply-To: <m1@example.test>\r\n"
    b"References: <m0@example.test>\r\n <m1@example.test>\r\n"
    b"\r\n"
    b"Antwort folgt.\r\n"
)

MULTIPART = (
    b"From: news@example.test\r\n"
    b"Subject: Weekly digest\r\n"
    b"Date: Thu, 16 May 2024 12:00:00 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Caf=C3=A9 opening hours\r\n"
    b"--b1\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    + base64.b64encode(b"<p>Zebra crossing ahead</p>") + b"\r\n"
    b"--b1\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    + base64.b64encode(b"SECRETWORD in an attachment") + b"\r\n"
    b"--b1--\r\n"
)

UNDATED = b"From: x@example.test\r\nSubject: no date\r\n\r\n" + b"padding line\r\n" * 200

MESSAGES = (PLAIN, ENCODED, MULTIPART, UNDATED)
DATES = (
    datetime(2024, 5, 14, 10, 0, tzinfo=UTC),
    datetime(2024, 5, 15, 10, 0, tzinfo=UTC),
    datetime(2024, 5, 16, 10, 0, tzinfo=UTC),
    datetime(2024, 5, 17, 10, 0, tzinfo=UTC),
)


@pytest.fixture(params=BACKENDS)
def subject(request, tmp_path):
    s = Subject(request.param, tmp_path / "store")
    for data, when in zip(MESSAGES, DATES):
        result(s.store.append(A, "INBOX", data, frozenset(), when))
    yield s
    s.close()


def search(subject, query, mailbox="INBOX"):
    return result(subject.store.search(A, mailbox, query))


def test_store_provides_isearchablestore(subject):
    """Every backend provides ISearchableStore."""
    assert verifyObject(ISearchableStore, subject.store)


def test_all_gives_every_uid_ascending(subject):
    """SearchAll gives the UIDs of every message, ascending."""
    assert search(subject, SearchAll()) == [1, 2, 3, 4]


def test_flag_present_and_absent(subject):
    """SearchFlag matches messages with the flag; present=False those without it."""
    result(subject.store.set_flags(A, "INBOX", [2, 4], {"\\Seen", "$Work"}, FlagMode.ADD))
    assert search(subject, SearchFlag("\\Seen")) == [2, 4]
    assert search(subject, SearchFlag("$Work")) == [2, 4]
    assert search(subject, SearchFlag("\\Seen", present=False)) == [1, 3]


def test_header_substring_is_case_insensitive(subject):
    """A header key matches a substring of the field's value whatever its case."""
    assert search(subject, SearchHeader("Subject", "qUARTERLY rep")) == [1]
    assert search(subject, SearchHeader("to", "BOB@EXAMPLE")) == [1]


def test_header_key_matches_only_its_field(subject):
    """A header key does not match the same text in another field or the body."""
    assert search(subject, SearchHeader("Cc", "bob")) == []
    assert search(subject, SearchHeader("Subject", "numbers")) == []


def test_header_encoded_word_decoded(subject):
    """Header values are matched after RFC 2047 decoding, case-insensitively."""
    assert search(subject, SearchHeader("subject", "KÖLN")) == [2]
    assert search(subject, SearchHeader("from", "jörg")) == [2]


def test_header_empty_substring_means_field_present(subject):
    """An empty substring matches the messages that have the field at all."""
    assert search(subject, SearchHeader("In-Reply-To", "")) == [2]


def test_short_header_substring(subject):
    """Substrings shorter than three characters still match."""
    assert search(subject, SearchHeader("subject", "ly")) == [1, 3]


def test_body_in_quoted_printable_part(subject):
    """Body search sees the decoded text of a quoted-printable text/plain part."""
    assert search(subject, SearchBody("café")) == [3]


def test_body_in_base64_part(subject):
    """Body search sees the decoded text of a base64 text/html part."""
    assert search(subject, SearchBody("zebra CROSSING")) == [3]


def test_body_skips_non_text_parts(subject):
    """Body search does not look into non-text attachments."""
    assert search(subject, SearchBody("secretword")) == []


def test_body_ignores_header(subject):
    """Body search does not match text found only in the header."""
    assert search(subject, SearchBody("Quarterly")) == []
    assert search(subject, SearchBody("good")) == [1]


def test_short_body_substring(subject):
    """A one-character body substring is matched too."""
    assert search(subject, SearchBody("?")) == []
    assert search(subject, SearchBody(".")) == [1, 2]


def test_text_matches_header_or_body(subject):
    """Text search matches header fields and body text."""
    assert search(subject, SearchText("quarterly")) == [1]
    assert search(subject, SearchText("antwort")) == [2]
    assert search(subject, SearchText("grüsse")) == [2]


def test_quote_in_substring(subject):
    """A double quote in a search string is searched for, not taken as syntax."""
    assert search(subject, SearchText('"alice example"')) == [1]
    assert search(subject, SearchText('no "such')) == []


def test_size_comparisons(subject):
    """Size keys compare the message size."""
    assert search(subject, SearchSize(Op.GT, 1000)) == [4]
    assert search(subject, SearchSize(Op.LT, len(PLAIN) + 1)) == [
        i + 1 for i, m in enumerate(MESSAGES) if len(m) <= len(PLAIN)
    ]


def test_internal_date_days(subject):
    """A date compares the internal date's day (RFC 3501 BEFORE/ON/SINCE)."""
    assert search(subject, SearchInternalDate(Op.LT, date(2024, 5, 15))) == [1]
    assert search(subject, SearchInternalDate(Op.EQ, date(2024, 5, 16))) == [3]
    assert search(subject, SearchInternalDate(Op.GE, date(2024, 5, 16))) == [3, 4]


def test_internal_date_instants(subject):
    """A datetime compares instants (RFC 5032 OLDER/YOUNGER)."""
    moment = datetime(2024, 5, 16, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert search(subject, SearchInternalDate(Op.LE, moment)) == [1, 2, 3]
    assert search(subject, SearchInternalDate(Op.GT, moment)) == [4]


def test_sent_date_uses_header_day(subject):
    """The sent date's day is the Date header's own day, not the UTC one."""
    assert search(subject, SearchSentDate(Op.EQ, date(2024, 5, 14))) == [1]
    assert search(subject, SearchSentDate(Op.GE, date(2024, 5, 15))) == [2, 3]


def test_missing_sent_date_never_matches(subject):
    """A message without Date matches no sent-date key, so NOT of one matches it."""
    assert 4 not in search(subject, SearchSentDate(Op.LT, date(2100, 1, 1)))
    assert search(subject, SearchNot(SearchSentDate(Op.LT, date(2100, 1, 1)))) == [4]


def test_modseq_comparison(subject):
    """ModSeq keys compare the message's MODSEQ."""
    infos = result(subject.store.set_flags(A, "INBOX", [3], {"\\Flagged"}, FlagMode.ADD))
    assert search(subject, SearchModSeq(Op.GE, infos[0].modseq)) == [3]


def test_and_or_not(subject):
    """And, Or and Not combine keys."""
    query = SearchOr((
        SearchAnd((SearchHeader("from", "example"), SearchNot(SearchBody("good")))),
        SearchSize(Op.GT, 1000),
    ))
    assert search(subject, query) == [2, 3, 4]
    assert search(subject, SearchAnd(())) == [1, 2, 3, 4]
    assert search(subject, SearchOr(())) == []


def test_uid_ranges(subject):
    """UID keys match the UIDs inside their ranges."""
    assert search(subject, SearchUIDs(((2, 3),))) == [2, 3]
    assert search(subject, SearchUIDs.of([1, 4, 99])) == [1, 4]


def test_many_uid_ranges(subject):
    """A UID key with many ranges (every other UID up to 1000) still matches exactly."""
    query = SearchUIDs.of(range(1, 1000, 2))
    assert len(query.ranges) == 500
    assert search(subject, query) == [1, 3]


def test_expunged_messages_not_found(subject):
    """Expunged messages are gone from results."""
    result(subject.store.expunge(A, "INBOX", [1, 3]))
    assert search(subject, SearchText("e")) == [2, 4]
    assert search(subject, SearchBody("good")) == []


def test_copied_and_moved_messages_searchable(subject):
    """Copies and moved messages are found in their new mailbox under their new UIDs."""
    result(subject.store.copy(A, "INBOX", [1], "Trash"))
    result(subject.store.move(A, "INBOX", [2], "Trash"))
    assert search(subject, SearchText("quarterly"), "Trash") == [1]
    assert search(subject, SearchHeader("subject", "köln"), "Trash") == [2]
    assert search(subject, SearchAll()) == [1, 3, 4]


def test_search_missing_mailbox(subject):
    """Searching a missing mailbox fails with NoSuchMailbox."""
    failure(subject.store.search(A, "Nope", SearchAll()), NoSuchMailbox)


def test_invalid_query_refused(subject):
    """Something that is not a search key fails with InvalidQuery."""
    failure(subject.store.search(A, "INBOX", SearchAnd(("ALL",))), InvalidQuery)
    failure(subject.store.search(A, "INBOX", SearchSize(">", 3)), InvalidQuery)


# ------------------------------------------------------------------ message_meta


def test_meta_of_plain_message(subject):
    """message_meta gives date, subject, first addresses and message id."""
    meta = result(subject.store.message_meta(A, "INBOX", [1]))[1]
    assert meta.date == datetime(2024, 5, 14, 23, 30, tzinfo=timezone(timedelta(hours=-7)))
    assert meta.subject == "Quarterly Report"
    assert meta.from_ == MetaAddress("Alice Example", "alice@example.test")
    assert meta.to == MetaAddress("Bob", "bob@example.test")
    assert meta.cc == MetaAddress(None, "dave@example.test")
    assert meta.message_id == "<m1@example.test>"


def test_meta_decodes_and_threads(subject):
    """Encoded words are decoded; In-Reply-To and References are kept for THREAD."""
    meta = result(subject.store.message_meta(A, "INBOX", [2]))[2]
    assert meta.subject == "Grüße aus Köln"
    assert meta.from_ == MetaAddress("Jörg", "jorg@example.test")
    assert meta.in_reply_to == "<m1@example.test>"
    assert meta.references == ("<m0@example.test>", "<m1@example.test>")


def test_meta_wire_values_match_parsed_message(subject):
    """ENVELOPE, BODY and BODYSTRUCTURE are what ParsedMessage computes from the bytes."""
    meta = result(subject.store.message_meta(A, "INBOX", [3]))[3]
    parsed = ParsedMessage.parse(MULTIPART)
    assert meta.envelope == parsed.envelope()
    assert meta.body == parsed.bodystructure(extended=False)
    assert meta.bodystructure == parsed.bodystructure()


def test_meta_without_date(subject):
    """A message without Date has date None."""
    assert result(subject.store.message_meta(A, "INBOX", [4]))[4].date is None


def test_meta_skips_missing_uids(subject):
    """message_meta answers only for UIDs that exist."""
    result(subject.store.expunge(A, "INBOX", [2]))
    assert sorted(result(subject.store.message_meta(A, "INBOX", [1, 2, 77]))) == [1]


def test_meta_of_copy(subject):
    """A copy has the same metadata as its source."""
    mapping = result(subject.store.copy(A, "INBOX", [2], "Drafts"))
    source = result(subject.store.message_meta(A, "INBOX", [2]))[2]
    copy = result(subject.store.message_meta(A, "Drafts", [mapping[2]]))[mapping[2]]
    assert copy == source


def test_meta_and_search_survive_reopen(subject):
    """After a reopen the metadata and the index answer as before."""
    if not subject.persistent:
        pytest.skip("memory store keeps nothing")
    before = result(subject.store.message_meta(A, "INBOX", [1, 2, 3, 4]))
    store = subject.reopen()
    assert result(store.message_meta(A, "INBOX", [1, 2, 3, 4])) == before
    assert result(store.search(A, "INBOX", SearchBody("zebra"))) == [3]


@pytest.mark.parametrize("data", [b"", bytes(range(256)) * 8, b"Subject: =?x?Q?\xff?=\r\n\r\n"])
def test_garbage_is_stored_and_searchable(subject, data):
    """Malformed messages are stored, searched and described without errors."""
    uid = result(subject.store.append(A, "INBOX", data)).uid
    assert uid in search(subject, SearchAll())
    assert uid not in search(subject, SearchBody("zebra"))
    assert uid in result(subject.store.message_meta(A, "INBOX", [uid]))
