"""
An in-memory substring index for the attributes address books search (cn, sn, givenName,
mail, displayName), so that ``(cn=*ali*)`` looks at a few candidate entries, not every entry.

Values are folded as search filters fold them (case-folded, runs of spaces collapsed:
caseIgnoreSubstringsMatch, RFC 4517 §4.2.6, with RFC 4518 §2.6.1 space handling simplified)
and broken into trigrams.  Each trigram maps to a posting list of entry numbers, kept as a
compact ``array`` (4 bytes a member) rather than a set (about 40): at 100,000 entries that is
the difference between tens and hundreds of megabytes.

An entry that changes or goes away only has its number retired; its new version gets a new
number.  Retired numbers are skipped at query time, and the index asks to be rebuilt once they
outnumber the live ones.
"""

from __future__ import annotations

import sys
from array import array
from collections import defaultdict
from collections.abc import Callable, Iterable
from functools import partial

from mailsuite.directory.entry import Entry

# The attributes address books (Thunderbird, Evolution, Outlook) search by substring.
DEFAULT_ATTRIBUTES = ("cn", "sn", "givenname", "mail", "displayname")

# Posting lists longer than this many times the current candidate set are not intersected:
# checking each remaining candidate's values is then cheaper than walking the list.
_INTERSECT_RATIO = 32
# Marks a prefix key.  A trigram of a value holding this character may share a key with a
# prefix; that only adds candidates, which lookup checks against the values anyway.
_PREFIX = "\x00"
# Retired entry numbers tolerated before a rebuild is wanted, whatever the size.
_MIN_RETIRED = 1024


def fold(value: str) -> str:
    """The comparison form of a directory string, as the search filters compute it."""
    return " ".join(value.casefold().split())


def trigrams(text: str) -> set[str]:
    return {text[k:k + 3] for k in range(len(text) - 2)}


def folded_match(text: str, initial: str | None, middle: Iterable[str],
                 final: str | None) -> bool:
    """
    True if folded ``text`` matches the folded substring components, which must not overlap
    (RFC 4511 §4.5.1.7.2).
    """
    pos = 0
    if initial is not None:
        if not text.startswith(initial):
            return False
        pos = len(initial)
    end = len(text)
    if final is not None:
        if end - pos < len(final) or not text.endswith(final):
            return False
        end -= len(final)
    for part in middle:
        found = text.find(part, pos, end)
        if found < 0:
            return False
        pos = found + len(part)
    return True


def _strings(entry: Entry, attribute: str) -> list[str]:
    return [v for v in entry.get(attribute) if isinstance(v, str)]


class SubstringIndex:
    """
    Trigram and prefix posting lists per indexed attribute, over normalised DNs.
    ``add`` and ``discard`` keep it in step with the directory; ``lookup`` answers a
    substring assertion.
    """

    def __init__(self, attributes: Iterable[str] = DEFAULT_ATTRIBUTES):
        self.attributes = frozenset(a.lower() for a in attributes)
        self.clear()

    def clear(self) -> None:
        self._number: dict[str, int] = {}  # live ndn -> entry number
        self._ndn: list[str | None] = []  # entry number -> ndn, None once retired
        self._retired = 0
        # attribute -> key -> posting list.  A key is a trigram, or _PREFIX and the first one
        # or two characters of a value, for an initial component too short for a trigram.
        self._tables: dict[str, defaultdict[str, array]] = {
            a: defaultdict(partial(array, "i")) for a in self.attributes
        }
        # lower-cased attribute name -> how many entries hold it
        self._holders: dict[str, int] = {}
        # entry number -> the attribute names it holds; entries of one shape share a tuple
        self._held: dict[int, tuple[str, ...]] = {}
        self._shapes: dict[tuple[str, ...], tuple[str, ...]] = {}

    def rebuild(self, entries: Iterable[Entry]) -> None:
        self.clear()
        for entry in entries:
            self.add(entry)

    @property
    def wants_rebuild(self) -> bool:
        return self._retired > max(len(self._number), _MIN_RETIRED)

    def __len__(self) -> int:
        return len(self._number)

    def __contains__(self, ndn: str) -> bool:
        return ndn in self._number

    # ------------------------------------------------------------------ maintenance

    def add(self, entry: Entry) -> None:
        """Index ``entry``, replacing any earlier version with the same DN."""
        ndn = entry.ndn
        self.discard(ndn)
        number = len(self._ndn)
        self._ndn.append(ndn)
        self._number[ndn] = number
        held = self._held_names(entry)
        self._held[number] = held
        holders = self._holders
        for name in held:
            holders[name] = holders.get(name, 0) + 1
        for name, table in self._tables.items():
            values = entry.get(name)
            if not values:
                continue
            keys: set[str] = set()
            for value in values:
                if isinstance(value, str):
                    text = fold(value)
                    keys.update(text[k:k + 3] for k in range(len(text) - 2))
                    keys.update((_PREFIX + text[:1], _PREFIX + text[:2]))
            for key in keys:
                table[key].append(number)

    def discard(self, ndn: str) -> None:
        """Forget the entry ``ndn`` if it is indexed."""
        number = self._number.pop(ndn, None)
        if number is None:
            return
        self._ndn[number] = None
        self._retired += 1
        for name in self._held.pop(number, ()):
            left = self._holders[name] - 1
            if left:
                self._holders[name] = left
            else:
                del self._holders[name]

    def _held_names(self, entry: Entry) -> tuple[str, ...]:
        names = tuple(entry.names())
        held = self._shapes.get(names)
        if held is None:
            held = self._shapes[names] = tuple(sys.intern(n.lower()) for n in names)
        return held

    # ------------------------------------------------------------------ queries

    def lookup(self, attribute: str, initial: str | None, middle: Iterable[str],
               final: str | None, *, entry_of: Callable[[str], Entry | None]) -> set[str] | None:
        """
        Normalised DNs of the entries whose ``attribute`` matches the substring assertion, or
        None when the index cannot narrow the search (an attribute it does not cover, or only
        components too short to index) and every entry must be tested.  ``entry_of(ndn)``
        gives the current entry, whose values are checked against the assertion.
        """
        name = attribute.lower()
        if name not in self.attributes:
            # An attribute no entry holds matches nothing; any other needs a scan.
            return None if self._holders.get(name) else set()
        first = fold(initial) if initial is not None else None
        last = fold(final) if final is not None else None
        parts = tuple(fold(p) for p in middle)
        lists = self._posting_lists(name, first, parts, last)
        if lists is None:
            return None
        numbers = self._intersect(lists)
        found = set()
        for number in numbers:
            ndn = self._ndn[number]
            entry = entry_of(ndn) if ndn is not None else None
            if entry is not None and any(
                    folded_match(fold(v), first, parts, last) for v in _strings(entry, name)):
                found.add(ndn)
        return found

    def _posting_lists(self, name: str, first: str | None, parts: tuple[str, ...],
                       last: str | None) -> list[array] | None:
        keys: set[str] = set()
        for text in (first, *parts, last):
            if text:
                keys |= trigrams(text)
        if first and len(first) < 3:
            keys.add(_PREFIX + first)
        if not keys:
            return None
        table, empty = self._tables[name], array("i")
        # .get, not [], so that a query never adds keys to the table
        return [table.get(key, empty) for key in keys]

    @staticmethod
    def _intersect(lists: list[array]) -> set[int]:
        lists.sort(key=len)
        numbers = set(lists[0])
        for posting in lists[1:]:
            if not numbers or len(posting) > _INTERSECT_RATIO * len(numbers):
                break
            numbers.intersection_update(posting)
        return numbers
