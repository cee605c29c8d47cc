"""The pure SORT and THREAD algorithms (RFC 5256, RFC 5957): base subjects, sort keys with
sequence-number tie-breaks, ORDEREDSUBJECT, REFERENCES and the thread wire form."""

from datetime import datetime, timedelta, timezone

import pytest

from mailsuite.imap.message import ParsedMessage
from mailsuite.imap.sortthread import (
    Entry,
    SortCriterion,
    Thread,
    base_subject,
    entry_from,
    ordered_subject,
    references,
    sort,
    thread_wire,
)
from mailsuite.interfaces import MessageInfo

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def day(n: int) -> datetime:
    return T0 + timedelta(days=n)


def entry(number: int, **fields) -> Entry:
    fields.setdefault("arrival", day(number))
    return Entry(number, number, **fields)


def wire(threads) -> bytes:
    return thread_wire(threads)


# --------------------------------------------------------------------------- base subject

BASE_SUBJECTS = [
    ("Re: [fwd: Subject] (fwd)", "Subject", True),
    ("Fwd: Re: re:x", "x", True),
    ("Hello", "Hello", False),
    ("  Hello \t world  ", "Hello world", False),
    ("Hello (fwd)", "Hello", True),
    ("Hello (FWD) (fwd)", "Hello", True),
    ("RE: FW: hi", "hi", True),
    ("Re [blob]: hi", "hi", True),
    ("[list] Re: hi", "hi", True),
    ("[list] hi", "hi", False),
    ("[PATCH] [v2] Re: foo", "foo", True),
    ("[only a blob]", "[only a blob]", False),
    ("[fwd: inner]", "inner", True),
    ("[Fwd: [fwd: deep]]", "deep", True),
    ("Re:", "", True),
    ("Rebuild the index", "Rebuild the index", False),
    ("Fwdx: y", "Fwdx: y", False),
    ("", "", False),
    (None, "", False),
]


@pytest.mark.parametrize("subject, base, reply", BASE_SUBJECTS)
def test_base_subject_extraction(subject, base, reply):
    """RFC 5256 §2.1: leaders, blobs, trailers and [fwd: ] wrappers are stripped."""
    assert base_subject(subject) == (base, reply)


def test_base_subject_of_encoded_words():
    """RFC 5256 §2.1 (1): encoded words are decoded before the markers are removed."""
    data = (b"Subject: =?utf-8?q?Re=3A_=5Bfwd=3A_Gr=C3=BC=C3=9Fe=5D?=\r\n"
            b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nx\r\n")
    info = MessageInfo(1, frozenset(), 1, T0, len(data))
    got = entry_from(1, 1, info, ParsedMessage.parse(data))
    assert got.base == ("Grüße", True)


def test_folded_subject_collapses_to_single_spaces():
    """RFC 5256 §2.1 (1): continuations and tabs become one space."""
    assert base_subject("Re: long\r\n\tsubject   line")[0] == "long subject line"


# --------------------------------------------------------------------------- SORT


def test_rfc_example_subject_then_reverse_date():
    """RFC 5256 §4 example shape: SORT (SUBJECT REVERSE DATE) gives 5 3 4 1 2."""
    entries = [
        entry(1, subject="b", sent=day(5)),
        entry(2, subject="Re: B", sent=day(4)),
        entry(3, subject="a", sent=day(2)),
        entry(4, subject="A", sent=day(1)),
        entry(5, subject="Fwd: a", sent=day(3)),
    ]
    criteria = (SortCriterion("SUBJECT"), SortCriterion("DATE", reverse=True))
    assert sort(entries, criteria) == [5, 3, 4, 1, 2]


def test_ties_fall_back_to_sequence_order():
    """RFC 5256 §3: equal keys keep sequence order, also when the listing is shuffled."""
    entries = [entry(3, size=10), entry(1, size=10), entry(2, size=5)]
    assert sort(entries, (SortCriterion("SIZE"),)) == [2, 1, 3]


def test_reverse_does_not_reverse_the_tie_break():
    """RFC 5256 §3: REVERSE flips the key, not the sequence-number tie-break."""
    entries = [entry(1, size=10), entry(2, size=10), entry(3, size=5)]
    assert sort(entries, (SortCriterion("SIZE", reverse=True),)) == [1, 2, 3]


def test_missing_date_uses_internal_date():
    """RFC 5256 §2.2: without a Date header the internal date is the sent date."""
    entries = [entry(1, sent=day(10)), entry(2, arrival=day(5))]
    assert sort(entries, (SortCriterion("DATE"),)) == [2, 1]


def test_dates_compare_in_utc():
    """RFC 5256 §2.2: sent dates are compared as instants, whatever their zone."""
    east = datetime(2024, 1, 1, 10, 0, tzinfo=timezone(timedelta(hours=5)))   # 05:00Z
    west = datetime(2024, 1, 1, 6, 0, tzinfo=timezone.utc)
    entries = [entry(1, sent=west), entry(2, sent=east)]
    assert sort(entries, (SortCriterion("DATE"),)) == [2, 1]


def test_arrival_sorts_by_internal_date():
    """ARRIVAL is the internal date."""
    entries = [entry(1, arrival=day(3)), entry(2, arrival=day(1))]
    assert sort(entries, (SortCriterion("ARRIVAL"),)) == [2, 1]


def test_from_sorts_by_mailbox_case_insensitively():
    """RFC 5256 §3: FROM is the addr-mailbox of the first From, i;ascii-casemap."""
    entries = [entry(1, from_="zed"), entry(2, from_="Alpha"), entry(3, from_="")]
    assert sort(entries, (SortCriterion("FROM"),)) == [3, 2, 1]


def test_display_from_differs_from_from():
    """RFC 5957 §3: DISPLAYFROM orders by the display name, FROM by the mailbox."""
    entries = [entry(1, from_="alpha", display_from="Zed"),
               entry(2, from_="zulu", display_from="Alice")]
    assert sort(entries, (SortCriterion("FROM"),)) == [1, 2]
    assert sort(entries, (SortCriterion("DISPLAYFROM"),)) == [2, 1]


def test_display_keys_from_parsed_message():
    """RFC 5957 §3: the display name, else the addr-spec, of the first address."""
    data = (b"From: \"Zoe Q\" <alpha@example.org>\r\nTo: bob@example.org, x@y\r\n"
            b"Cc: Carol <carol@example.org>\r\n\r\nbody\r\n")
    info = MessageInfo(7, frozenset(), 1, T0, len(data))
    got = entry_from(3, 7, info, ParsedMessage.parse(data))
    assert (got.from_, got.display_from) == ("alpha", "Zoe Q")
    assert (got.to, got.display_to) == ("bob", "bob@example.org")
    assert got.cc == "carol"
    assert (got.number, got.ident, got.size) == (3, 7, len(data))


# --------------------------------------------------------------------------- wire form


def test_wire_form_of_rfc_example():
    """RFC 5256 §4: (2)(3 6 (4 23)(44 7 96)) — chains and nested siblings."""
    threads = [
        Thread(2),
        Thread(3, (Thread(6, (Thread(4, (Thread(23),)),
                              Thread(44, (Thread(7, (Thread(96),)),)))),)),
    ]
    assert wire(threads) == b"(2)(3 6 (4 23)(44 7 96))"


def test_wire_form_of_dummy_root():
    """RFC 5256 §4: a dummy parent shows as a list of lists, ((3)(5))."""
    assert wire([Thread(None, (Thread(3), Thread(5)))]) == b"((3)(5))"


def test_wire_form_of_no_threads_is_empty():
    """No messages: no thread lists at all."""
    assert wire([]) == b""


# --------------------------------------------------------------------------- ORDEREDSUBJECT


def test_ordered_subject_groups_by_base_subject():
    """RFC 5256 §3 ORDEREDSUBJECT: first by date is the root, the rest its children."""
    entries = [
        entry(1, subject="A", sent=day(1)),
        entry(2, subject="Re: A", sent=day(3)),
        entry(3, subject="B", sent=day(2)),
        entry(4, subject="re: a", sent=day(4)),
        entry(5, subject="C", sent=day(5)),
        entry(6, subject="Re: C", sent=day(6)),
    ]
    assert wire(ordered_subject(entries)) == b"(1 (2)(4))(3)(5 6)"


def test_ordered_subject_root_is_earliest_sent():
    """ORDEREDSUBJECT: a reply dated earlier than its original becomes the root."""
    entries = [entry(1, subject="Hi", sent=day(9)), entry(2, subject="Re: Hi", sent=day(1))]
    assert wire(ordered_subject(entries)) == b"(2 1)"


# --------------------------------------------------------------------------- REFERENCES


def test_references_chain():
    """Replies hang below the messages they reference."""
    entries = [
        entry(1, subject="s", message_id="a@x"),
        entry(2, subject="Re: s", message_id="b@x", references=("a@x",)),
        entry(3, subject="Re: s", message_id="c@x", references=("a@x", "b@x")),
    ]
    assert wire(references(entries)) == b"(1 2 3)"


def test_references_siblings_sorted_by_date():
    """RFC 5256 §3 (6): siblings are ordered by sent date."""
    entries = [
        entry(1, subject="s", message_id="a@x", sent=day(1)),
        entry(2, subject="r1", message_id="b@x", references=("a@x",), sent=day(5)),
        entry(3, subject="r2", message_id="c@x", references=("a@x",), sent=day(3)),
    ]
    assert wire(references(entries)) == b"(1 (3)(2))"


def test_missing_parent_shared_by_two_gives_dummy_root():
    """(3)(B): a missing parent with two children stays as a dummy root."""
    entries = [
        entry(1, subject="one", message_id="b@x", references=("gone@x",)),
        entry(2, subject="two", message_id="c@x", references=("gone@x",)),
    ]
    assert wire(references(entries)) == b"((1)(2))"


def test_missing_parent_of_one_is_pruned():
    """(3)(B): a dummy root with a single child is replaced by the child."""
    entries = [entry(1, subject="one", message_id="b@x", references=("gone@x",)),
               entry(2, subject="two", message_id="c@x")]
    assert wire(references(entries)) == b"(1)(2)"


def test_missing_middle_of_chain_is_pruned():
    """(3)(B): a dummy inside a thread is replaced by its children."""
    entries = [
        entry(1, subject="s", message_id="a@x"),
        entry(2, subject="s2", message_id="c@x", references=("a@x", "gone@x")),
        entry(3, subject="s3", message_id="d@x", references=("a@x", "gone@x")),
    ]
    assert wire(references(entries)) == b"(1 (2)(3))"


def test_mutual_references_do_not_loop():
    """(1)(B), (1)(C): links that would close a loop are not made."""
    entries = [entry(1, subject="p", message_id="a@x", references=("b@x",)),
               entry(2, subject="q", message_id="b@x", references=("a@x",))]
    assert wire(references(entries)) == b"(2 1)"


def test_loop_inside_one_references_header():
    """A References list that repeats an id is read without looping."""
    entries = [entry(1, subject="p", message_id="m@x",
                     references=("a@x", "b@x", "a@x", "m@x"))]
    assert wire(references(entries)) == b"(1)"


def test_last_reference_wins_over_truncated_chain():
    """(1)(C): a message already given a parent is re-linked to its last reference."""
    entries = [
        entry(1, subject="s", message_id="a@x"),
        entry(2, subject="t", message_id="b@x"),
        entry(3, subject="u", message_id="z@x", references=("a@x", "c@x")),
        entry(4, subject="v", message_id="c@x", references=("b@x",)),
    ]
    assert wire(references(entries)) == b"(1)(2 4 3)"


def test_messages_without_or_with_duplicate_ids_stand_alone():
    """(1)(A): no Message-ID or a duplicate one: a message of its own."""
    entries = [entry(1, subject="a", message_id="a@x"),
               entry(2, subject="b", message_id="a@x"),
               entry(3, subject="c")]
    assert wire(references(entries)) == b"(1)(2)(3)"


def test_same_subject_roots_gathered_under_dummy():
    """(5)(C): two originals with one base subject share a new dummy parent."""
    entries = [entry(1, subject="Hello", message_id="a@x", sent=day(1)),
               entry(2, subject="Other", message_id="b@x", sent=day(2)),
               entry(3, subject="hello", message_id="c@x", sent=day(3))]
    assert wire(references(entries)) == b"((1)(3))(2)"


def test_reply_root_goes_under_original_by_subject():
    """(5)(C): a reply without references joins the original with its subject."""
    entries = [entry(1, subject="Re: Hello", message_id="a@x", sent=day(1)),
               entry(2, subject="Hello", message_id="b@x", sent=day(2))]
    assert wire(references(entries)) == b"(2 1)"


def test_subject_merge_into_dummy_root():
    """(5)(C): a message joins a dummy root whose first child has its subject."""
    entries = [
        entry(1, subject="Topic", message_id="b@x", references=("gone@x",), sent=day(1)),
        entry(2, subject="Re: Topic", message_id="c@x", references=("gone@x",), sent=day(2)),
        entry(3, subject="Re: Topic", message_id="d@x", sent=day(3)),
    ]
    assert wire(references(entries)) == b"((1)(2)(3))"


def test_empty_subjects_are_not_gathered():
    """(5)(B): a thread with an empty base subject is never merged."""
    entries = [entry(1, subject="", message_id="a@x"), entry(2, subject="Re:", message_id="b@x")]
    assert wire(references(entries)) == b"(1)(2)"


def test_roots_sorted_by_date_and_dummy_by_first_child():
    """(4), (6): roots by sent date; a dummy root takes its first child's date."""
    entries = [
        entry(1, subject="late", message_id="a@x", sent=day(9)),
        entry(2, subject="x", message_id="b@x", references=("gone@x",), sent=day(4)),
        entry(3, subject="y", message_id="c@x", references=("gone@x",), sent=day(2)),
    ]
    assert wire(references(entries)) == b"((3)(2))(1)"


def test_existing_reference_links_are_kept():
    """(1)(B): a later References header does not move an already linked message."""
    entries = [
        entry(1, subject="s1", message_id="a@x"),
        entry(2, subject="s2", message_id="c@x"),
        entry(3, subject="s3", message_id="b@x"),
        entry(4, subject="s4", message_id="d@x", references=("a@x", "b@x")),
        entry(5, subject="s5", message_id="e@x", references=("c@x", "b@x")),
    ]
    assert wire(references(entries)) == b"(1 3 (4)(5))(2)"


def test_deep_reply_chain_has_no_recursion_limit():
    """A 5,000-message reply chain threads and encodes without recursion errors."""
    count = 5000
    entries = [entry(1, subject="s", message_id="m1@x")]
    entries += [entry(n, subject="Re: s", message_id=f"m{n}@x", references=(f"m{n - 1}@x",))
                for n in range(2, count + 1)]
    out = wire(references(entries))
    assert out == b"(" + b" ".join(b"%d" % n for n in range(1, count + 1)) + b")"
