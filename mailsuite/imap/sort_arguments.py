"""
Argument parsers of SORT, UID SORT, THREAD and UID THREAD (RFC 5256 §4), registered in
mailsuite.imap.parser.ARGUMENTS; the search criteria are SEARCH's (mailsuite.imap.arguments).
"""

from __future__ import annotations

from dataclasses import dataclass

from mailsuite.imap.arguments import SEARCH_CHARSETS, unsupported_charset
from mailsuite.imap.arguments import search_key
from mailsuite.imap.parser import Reader, SearchKey, arguments
from mailsuite.imap.sortthread import REVERSE, SORT_KEYS, THREAD_ALGORITHMS, SortCriterion



@dataclass(frozen=True)
class SortArgs:
    criteria: tuple[SortCriterion, ...]
    charset: str
    key: SearchKey


@dataclass(frozen=True)
class ThreadArgs:
    algorithm: str
    charset: str
    key: SearchKey


@arguments("SORT", "UID SORT")
def _sort(r: Reader) -> SortArgs:
    # RFC 5256 §5: sort SP sort-criteria SP search-charset 1*(SP search-key)
    r.sp()
    criteria = _sort_criteria(r)
    r.sp()
    charset = _charset(r)
    return SortArgs(criteria, charset, _search_keys(r))


@arguments("THREAD", "UID THREAD")
def _thread(r: Reader) -> ThreadArgs:
    # RFC 5256 §5: thread SP thread-alg SP search-charset 1*(SP search-key)
    r.sp()
    algorithm = r.atom().upper()
    if algorithm not in THREAD_ALGORITHMS:
        raise r.error("Unknown threading algorithm")
    r.sp()
    charset = _charset(r)
    return ThreadArgs(algorithm, charset, _search_keys(r))


def _sort_criteria(r: Reader) -> tuple[SortCriterion, ...]:
    # sort-criteria = "(" sort-criterion *(SP sort-criterion) ")"
    # sort-criterion = ["REVERSE" SP] sort-key
    r.open_list()
    criteria = []
    while True:
        word = r.atom().upper()
        reverse = word == REVERSE
        if reverse:
            r.sp()
            word = r.atom().upper()
        if word not in SORT_KEYS:
            raise r.error("Unknown sort key")
        criteria.append(SortCriterion(word, reverse))
        if r.close_list():
            return tuple(criteria)
        r.sp()


def _charset(r: Reader) -> str:
    charset = r.text(r.astring()).upper()
    if charset not in SEARCH_CHARSETS:
        raise unsupported_charset(r)  # NO, not BAD (RFC 5256 §3)
    return charset


def _search_keys(r: Reader) -> SearchKey:
    keys = []
    while r.accept(b" "):
        keys.append(search_key(r, 0))
    if not keys:
        raise r.error("Expected a search key")
    return keys[0] if len(keys) == 1 else SearchKey("AND", tuple(keys))
