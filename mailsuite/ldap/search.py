"""
The Search operation (RFC 4511 §4.5): scopes, filters under the access policy, attribute
selection, size and time limits, and simple paged results (RFC 2696).
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

from mailsuite.directory.entry import DNError, Entry, is_under, normalize_dn
from mailsuite.ldap import codec, dse, rules
from mailsuite.ldap.acl import AccessPolicy, Identity
from mailsuite.ldap.filters import (
    And, Compare, Extensible, Filter, Or, Substrings, matches,
)

# Attributes the server computes (RFC 4512 §3.4), returned only for "+" or by name.
OPERATIONAL = ("entryDN", "hasSubordinates", "subschemaSubentry")
_OPERATIONAL_LOWER = {name.lower(): name for name in OPERATIONAL}
# How often the time limit is looked at while entries are tested.
_CLOCK_EVERY = 256


@dataclass
class SearchLimits:
    max_size: int = 1000  # entries per search (or per page) for anyone but the admin
    max_time: float = 30.0  # seconds
    max_cursors: int = 8  # paged searches kept open per connection


@dataclass
class SearchResult:
    """What a search answers: the entries to send, then the SearchResultDone."""

    entries: list[Entry]
    code: int = codec.SUCCESS
    message: str = ""
    cookie: bytes | None = None  # set for a paged search
    who: Identity = field(default_factory=Identity)


@dataclass(frozen=True)
class SearchQuery:
    base: str
    scope: int
    filter: Filter
    size_limit: int
    time_limit: int


def index_candidates(directory, f: Filter) -> set[str] | None:
    """
    Normalised DNs that can possibly match ``f``, from the directory's indexes, or None when
    no index helps and every entry must be tested.  Always a superset of the matches.
    """
    if isinstance(f, Compare) and f.op == "=" and _index_safe(f.value):
        lookup = getattr(directory, "ndns_with_value", None)
        return lookup(f.attribute, f.value) if lookup else None
    if isinstance(f, Extensible) and f.attribute is not None and not f.dn_attributes \
            and _index_safe(f.value):
        # RFC 4511 §4.5.1.7.7: without a rule, the attribute's equality rule applies.
        rule = rules.find(f.rule) if f.rule is not None else rules.equality_rule(f.attribute)
        if rule in rules.INDEX_FRIENDLY:
            lookup = getattr(directory, "ndns_with_value", None)
            return lookup(f.attribute, f.value) if lookup else None
        return None
    if isinstance(f, Substrings):
        lookup = getattr(directory, "ndns_with_substrings", None)
        return lookup(f.attribute, f.initial, f.any, f.final) if lookup else None
    if isinstance(f, And):
        best = None
        for item in f.items:
            found = index_candidates(directory, item)
            if found is not None and (best is None or len(found) < len(best)):
                best = found
        return best
    if isinstance(f, Or):
        union: set[str] = set()
        for item in f.items:
            found = index_candidates(directory, item)
            if found is None:
                return None
            union |= found
        return union
    return None


def _index_safe(value) -> bool:
    """
    True if the equality indexes, which strip and lower-case a value, look ``value`` up as
    the filters compare it (case folded, runs of spaces collapsed): otherwise an index could
    miss a match, and the entries are scanned instead.
    """
    return isinstance(value, str) and " ".join(value.casefold().split()) == value.strip().lower()


class Searcher:
    """Runs searches over an EmbeddedDirectory for one connection (which owns the cursors)."""

    def __init__(self, *, directory, policy: AccessPolicy, base_dn: str, clock,
                 limits: SearchLimits):
        self.directory = directory
        self.policy = policy
        self.base_dn = base_dn
        self.clock = clock
        self.limits = limits
        self._cursors: OrderedDict[bytes, list[str]] = OrderedDict()

    # ------------------------------------------------------------------ entry points

    def search(self, who: Identity, query: SearchQuery, *,
               page: tuple[int, bytes] | None = None) -> SearchResult:
        if page is not None and page[1]:
            return self._next_page(who, query, page)
        special = self._special(query)
        if special is not None:
            return special
        if not self.policy.may_search(who):
            return SearchResult([], codec.INSUFFICIENT_ACCESS_RIGHTS, "authentication required")
        try:
            base_ndn = normalize_dn(query.base)
        except DNError:
            return SearchResult([], codec.INVALID_DN_SYNTAX, "invalid base DN")
        base = self.directory.get(query.base)
        if base is None or not self.policy.may_search_from(who, base_ndn):
            return SearchResult([], codec.NO_SUCH_OBJECT, "no such object")
        limit = self._size_limit(who, query)
        deadline = self.clock.seconds() + self._time_limit(who, query)
        found: list[Entry] = []
        code, message = codec.SUCCESS, ""
        # Paged searches collect every match once; the pages are then cut from that list.
        cap = None if page is not None else limit
        for k, entry in enumerate(self._scope(base, base_ndn, query)):
            if k % _CLOCK_EVERY == _CLOCK_EVERY - 1 and self.clock.seconds() > deadline:
                code, message = codec.TIME_LIMIT_EXCEEDED, "time limit exceeded"
                break
            if not self.policy.may_see_entry(who, entry.ndn):
                continue
            ndn = entry.ndn
            if matches(query.filter, entry,
                       lambda name: self.policy.may_filter(who, ndn, name)):
                if cap is not None and len(found) >= cap:
                    code, message = codec.SIZE_LIMIT_EXCEEDED, "size limit exceeded"
                    break
                found.append(entry)
        if page is None or code != codec.SUCCESS:
            return SearchResult(found, code, message, who=who)
        return self._first_page(who, found, page[0])

    # ------------------------------------------------------------------ parts

    def _special(self, query: SearchQuery) -> SearchResult | None:
        """The root DSE and the subschema entry, readable by anyone at base scope."""
        if query.scope != codec.SCOPE_BASE:
            return None
        if query.base.strip() == "":
            entry = dse.root_dse(self.base_dn)
        elif query.base.replace(" ", "").lower() == dse.SUBSCHEMA_NDN:
            entry = dse.subschema()
        else:
            return None
        ok = matches(query.filter, entry, lambda name: True)
        return SearchResult([entry] if ok else [], who=Identity(admin=True))

    def _size_limit(self, who: Identity, query: SearchQuery) -> int | None:
        limits = [n for n in (query.size_limit,) if n > 0]
        if not who.admin:
            limits.append(self.limits.max_size)
        return min(limits) if limits else None

    def _time_limit(self, who: Identity, query: SearchQuery) -> float:
        limit = query.time_limit if query.time_limit > 0 else self.limits.max_time
        return limit if who.admin else min(limit, self.limits.max_time)

    def _scope(self, base: Entry, base_ndn: str, query: SearchQuery) -> Iterator[Entry]:
        if query.scope == codec.SCOPE_BASE:
            yield base
            return
        if query.scope == codec.SCOPE_ONE:
            yield from self.directory.children(query.base)
            return
        candidates = index_candidates(self.directory, query.filter)
        if candidates is None:
            for entry in self.directory.entries():
                if is_under(entry.ndn, base_ndn):
                    yield entry
            return
        for ndn in sorted(candidates):
            if is_under(ndn, base_ndn):
                entry = self.directory.get(ndn)
                if entry is not None:
                    yield entry

    # ------------------------------------------------------------------ RFC 2696 paging

    def _first_page(self, who: Identity, found: list[Entry], size: int) -> SearchResult:
        if size == 0:
            return SearchResult([], cookie=b"", who=who)
        size = size if who.admin else min(size, self.limits.max_size)
        if len(found) <= size:
            return SearchResult(found, cookie=b"", who=who)
        cookie = secrets.token_bytes(12)
        self._cursors[cookie] = [e.ndn for e in found[size:]]
        while len(self._cursors) > self.limits.max_cursors:
            self._cursors.popitem(last=False)
        return SearchResult(found[:size], cookie=cookie, who=who)

    def _next_page(self, who: Identity, query: SearchQuery, page) -> SearchResult:
        size, cookie = page
        remaining = self._cursors.pop(cookie, None)
        if remaining is None:
            return SearchResult([], codec.UNWILLING_TO_PERFORM, "unknown paging cookie")
        if size == 0:  # RFC 2696 §3: a size of zero abandons the paged search
            return SearchResult([], cookie=b"", who=who)
        size = size if who.admin else min(size, self.limits.max_size)
        entries = []
        for ndn in remaining[:size]:
            entry = self.directory.get(ndn)
            if entry is not None and self.policy.may_see_entry(who, ndn):
                entries.append(entry)
        rest = remaining[size:]
        if not rest:
            return SearchResult(entries, cookie=b"", who=who)
        new_cookie = secrets.token_bytes(12)
        self._cursors[new_cookie] = rest
        return SearchResult(entries, cookie=new_cookie, who=who)


# ----------------------------------------------------------------------- attribute selection


def select_attributes(entry: Entry, who: Identity, policy: AccessPolicy, requested: list[str],
                      *, types_only: bool, directory=None) -> list[tuple[str, list[bytes]]]:
    """
    The (name, values) pairs to return for ``entry`` (RFC 4511 §4.5.1.8): "*" or nothing for
    every user attribute, "+" for the operational ones, "1.1" for none, else by name; always
    filtered by what ``who`` may read.
    """
    names = [n.strip() for n in requested if n.strip()]
    lowered = {n.lower() for n in names}
    all_user = not names or "*" in lowered
    all_operational = "+" in lowered
    special = entry.ndn in ("", dse.SUBSCHEMA_NDN)
    if special and all_operational:  # RFC 4512 §5.1: the root DSE's attributes are operational
        all_user = True
    out = []
    for name in entry.names():
        if not (all_user or name.lower() in lowered):
            continue
        if not policy.may_read(who, entry.ndn, name):
            continue
        values = [] if types_only else [_wire(v) for v in entry.get(name)]
        out.append((name, values))
    if special:
        return out
    for low, name in _OPERATIONAL_LOWER.items():
        if all_operational or low in lowered:
            value = _operational(entry, low, directory)
            out.append((name, [] if types_only else [value]))
    return out


def _operational(entry: Entry, name: str, directory) -> bytes:
    if name == "entrydn":
        return entry.dn.encode("utf-8")
    if name == "subschemasubentry":
        return dse.SUBSCHEMA_DN.encode()
    has = bool(directory is not None and directory.children(entry.dn))
    return b"TRUE" if has else b"FALSE"


def _wire(value) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value
