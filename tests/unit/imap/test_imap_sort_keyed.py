"""SORT and THREAD over a store's precomputed SortKeys agree with the message-parsing path."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest

from mailsuite.imap import sortthread
from mailsuite.imap.message import ParsedMessage
from mailsuite.interfaces import MessageInfo
from mailsuite.store.search import extract_meta, sort_keys_of
from tests.unit.imap.test_imap_indexed import MESSAGES

BASE = datetime(2024, 1, 1, tzinfo=timezone.utc)

EXTRA = [
    b"Subject: [fwd: Re: Meeting]\r\nFrom: Bob <bob@x.test>\r\nMessage-ID: <a@x>\r\n\r\n.\r\n",
    b"Subject: meeting\r\nTo: zed@x.test\r\nIn-Reply-To: <a@x>\r\n\r\n.\r\n",
    b"Subject: Lunch (fwd)\r\nCc: amy@x.test\r\nDate: nonsense\r\n\r\n.\r\n",
]
DATA = [data for data, _ in MESSAGES] + EXTRA


def _corpus():
    infos, parsed = [], []
    for n, data in enumerate(DATA):
        # Same internal date for two messages: ties fall back to the sequence number.
        infos.append(MessageInfo(n + 1, frozenset(), 1, BASE + timedelta(hours=n // 2),
                                 len(data)))
        parsed.append(ParsedMessage.parse(data))
    return infos, parsed


CRITERIA = [
    [sortthread.SortCriterion(key, reverse)]
    for key in sorted(sortthread.SORT_KEYS) for reverse in (False, True)
] + [
    [sortthread.SortCriterion("SUBJECT"), sortthread.SortCriterion("DATE", True)],
    [sortthread.SortCriterion("FROM", True), sortthread.SortCriterion("ARRIVAL")],
]


@pytest.mark.parametrize("criteria", CRITERIA, ids=lambda c: " ".join(
    ("REVERSE " if x.reverse else "") + x.key for x in c))
def test_sort_by_keys_equals_sort_over_parsed_entries(criteria):
    """sort_by_keys over SortKeys orders exactly as sort() over entries of parsed messages."""
    infos, parsed = _corpus()
    entries = [sortthread.entry_from(n + 1, 100 + n, infos[n], parsed[n])
               for n in range(len(infos))]
    rows = [(n + 1, 100 + n, infos[n], sort_keys_of(extract_meta(parsed[n])))
            for n in range(len(infos))]
    assert sortthread.sort_by_keys(rows, criteria) == sortthread.sort(entries, criteria)


def test_sort_by_keys_ignores_row_order():
    """Rows given out of sequence order still tie-break by sequence number."""
    infos, parsed = _corpus()
    rows = [(n + 1, n + 1, infos[n], sort_keys_of(extract_meta(parsed[n])))
            for n in range(len(infos))]
    criteria = [sortthread.SortCriterion("ARRIVAL")]
    assert (sortthread.sort_by_keys(list(reversed(rows)), criteria)
            == sortthread.sort_by_keys(rows, criteria))


@pytest.mark.parametrize("algorithm", sorted(sortthread.THREAD_ALGORITHMS))
def test_thread_from_keys_equals_thread_from_parsed(algorithm):
    """THREAD over entry_from_keys builds the same trees as over parsed messages."""
    infos, parsed = _corpus()
    for order in itertools.islice(itertools.permutations(range(len(infos))), 0, 40, 7):
        from_parsed = [sortthread.entry_from(n + 1, n + 1, infos[n], parsed[n]) for n in order]
        from_keys = [sortthread.entry_from_keys(n + 1, n + 1, infos[n],
                                                sort_keys_of(extract_meta(parsed[n])))
                     for n in order]
        assert (sortthread.thread(algorithm, from_keys)
                == sortthread.thread(algorithm, from_parsed))
