"""
What every backend shares for ISearchableStore: the metadata and search text extracted from a
message once when it is stored, their row form for SQLite tables, and the evaluator of a
SearchQuery over messages in Python (the memory and maildir backends; the sqlite backend
translates queries to SQL in mailsuite.store.sqlite_search instead).

Substring matching is case-insensitive (RFC 3501 §6.4.4): both the stored text and the
searched string are case-folded with ``fold``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timezone

from twisted.logger import Logger

from mailsuite.imap import mime, sortthread
from mailsuite.imap.message import ParsedMessage
from mailsuite.interfaces import (
    MessageMeta,
    MetaAddress,
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
    SortKeys,
    StoreError,
)

log = Logger()

# Indexed text per message and part (header, body); searches look no further.
MAX_INDEXED_CHARS = 1024 * 1024

_MESSAGE_ID = re.compile(r"<[^<>\s]*>")


class InvalidQuery(StoreError):
    """The search query holds something that is not a search key."""


def fold(text: str) -> str:
    return text.casefold()


@dataclass(frozen=True)
class IndexEntry:
    """What a message contributes to the search index, computed once."""

    meta: MessageMeta
    fields: tuple[tuple[str, str], ...]  # (lower-case name, folded decoded value)
    headers: str  # folded "name: value" lines
    body: str  # folded text of the text/* parts
    keys: SortKeys = SortKeys()


def _first(addresses) -> MetaAddress | None:
    if not addresses:
        return None
    return MetaAddress(addresses[0].name, addresses[0].addr_spec)


def _ids(text: str | None) -> list[str]:
    return _MESSAGE_ID.findall(text or "")


def extract_meta(parsed: ParsedMessage) -> MessageMeta:
    """The MessageMeta of a parsed message; never raises on malformed input."""
    in_reply_to = _ids(" ".join(parsed.header("in-reply-to")[:1]))
    return MessageMeta(
        date=parsed.date,
        subject=parsed.subject,
        from_=_first(parsed.from_),
        to=_first(parsed.to),
        cc=_first(parsed.cc),
        message_id=(parsed.message_id or "").strip() or None,
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=tuple(_ids(" ".join(parsed.header("references")))),
        envelope=parsed.envelope(),
        body=parsed.bodystructure(extended=False),
        bodystructure=parsed.bodystructure(extended=True),
    )


def header_fields(parsed: ParsedMessage) -> tuple[tuple[str, str], ...]:
    """(name, folded decoded value) of every top-level header field, in order."""
    data = parsed.data
    out = []
    for field in parsed.root.fields:
        if field.name:
            out.append((field.name, fold(mime.header_text(mime.field_value(data, field)))))
    return tuple(out)


def index_entry(data: bytes) -> IndexEntry:
    """Parse ``data`` once into its metadata and search text.  A message the parser cannot
    handle is still stored: it gets empty metadata and no search text."""
    try:
        return _index_entry(data)
    except Exception:
        log.failure("could not index a message of {size} bytes", size=len(data))
        return IndexEntry(MessageMeta(), (), "", "")


def _index_entry(data: bytes) -> IndexEntry:
    parsed = ParsedMessage.parse(data)
    fields = header_fields(parsed)
    headers = "\n".join(f"{name}: {value}" for name, value in fields)
    meta = extract_meta(parsed)
    return IndexEntry(
        meta=meta,
        fields=fields,
        headers=headers[:MAX_INDEXED_CHARS],
        body=fold(parsed.text()[:MAX_INDEXED_CHARS]),
        keys=sort_keys_of(meta),
    )


# ------------------------------------------------------------------ row form

META_COLUMNS = (
    "sent_date", "sent_day", "subject", "from_name", "from_addr", "to_name", "to_addr",
    "cc_name", "cc_addr", "message_id", "in_reply_to", "refs", "envelope", "body",
    "bodystructure",
)


def _address_pair(address: MetaAddress | None) -> tuple:
    return (None, None) if address is None else (address.name, address.address)


def meta_row(meta: MessageMeta) -> tuple:
    """The values of META_COLUMNS for ``meta``."""
    sent = meta.date
    return (
        None if sent is None else sent.isoformat(),
        None if sent is None else sent.date().isoformat(),
        meta.subject,
        *_address_pair(meta.from_),
        *_address_pair(meta.to),
        *_address_pair(meta.cc),
        meta.message_id,
        meta.in_reply_to,
        " ".join(meta.references),
        meta.envelope,
        meta.body,
        meta.bodystructure,
    )


def _address(name, address) -> MetaAddress | None:
    return None if address is None else MetaAddress(name, address)


def meta_from_row(row) -> MessageMeta:
    """The MessageMeta of a row holding META_COLUMNS in order."""
    (sent, _day, subject, from_name, from_addr, to_name, to_addr, cc_name, cc_addr,
     message_id, in_reply_to, refs, envelope, body, bodystructure) = row
    return MessageMeta(
        date=None if sent is None else datetime.fromisoformat(sent),
        subject=subject,
        from_=_address(from_name, from_addr),
        to=_address(to_name, to_addr),
        cc=_address(cc_name, cc_addr),
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=tuple(refs.split()) if refs else (),
        envelope=bytes(envelope),
        body=bytes(body),
        bodystructure=bytes(bodystructure),
    )


# ------------------------------------------------------------------ sort keys

SORT_COLUMNS = (
    "sort_sent", "sort_subject", "sort_reply", "sort_from", "sort_to", "sort_cc",
    "sort_display_from", "sort_display_to", "sort_message_id", "sort_in_reply_to",
    "sort_refs",
)


def _bare(msg_id: str | None) -> str | None:
    # "<>" names no message (RFC 5256 §3 threads by non-empty msg-ids only).
    return msg_id[1:-1] if msg_id and len(msg_id) > 2 else None


def sort_keys_of(meta: MessageMeta) -> SortKeys:
    """The SortKeys of a message from its MessageMeta."""
    ids = sortthread.message_ids(meta.message_id)
    subject, reply = sortthread.base_subject(meta.subject)
    casemap = sortthread.casemap
    return SortKeys(
        sent=None if meta.date is None else sortthread.instant(meta.date),
        subject=casemap(subject),
        reply=reply,
        from_=casemap(sortthread.meta_mailbox(meta.from_)),
        to=casemap(sortthread.meta_mailbox(meta.to)),
        cc=casemap(sortthread.meta_mailbox(meta.cc)),
        display_from=casemap(sortthread.meta_display(meta.from_)),
        display_to=casemap(sortthread.meta_display(meta.to)),
        message_id=ids[0] if ids else None,
        in_reply_to=_bare(meta.in_reply_to),
        references=tuple(b for b in map(_bare, meta.references) if b),
    )


def sort_row(keys: SortKeys) -> tuple:
    """The values of SORT_COLUMNS for ``keys``."""
    return (*keys[:2], int(keys.reply), *keys[3:10], " ".join(keys.references))


def sort_keys_from_row(row) -> SortKeys:
    """The SortKeys of a row holding SORT_COLUMNS in order."""
    (sent, subject, reply, from_, to, cc, display_from, display_to, message_id, in_reply_to,
     refs) = row
    return SortKeys(sent, subject, reply == 1, from_, to, cc, display_from, display_to,
                    message_id, in_reply_to, tuple(refs.split()) if refs else ())


# ------------------------------------------------------------------ the evaluator


def needs_text(query) -> bool:
    """Whether evaluating ``query`` looks at header fields or text (not only metadata)."""
    if isinstance(query, (SearchHeader, SearchBody, SearchText)):
        return True
    if isinstance(query, (SearchAnd, SearchOr)):
        return any(needs_text(q) for q in query.items)
    if isinstance(query, SearchNot):
        return needs_text(query.item)
    return False


def needs_meta(query) -> bool:
    """Whether evaluating ``query`` looks at the MessageMeta (the sent date)."""
    if isinstance(query, SearchSentDate):
        return True
    if isinstance(query, (SearchAnd, SearchOr)):
        return any(needs_meta(q) for q in query.items)
    if isinstance(query, SearchNot):
        return needs_meta(query.item)
    return False


class Candidate:
    """
    One message as the evaluator sees it: ``info`` (a MessageInfo), and ``meta``/``entry``
    callables that give its MessageMeta and IndexEntry when a key needs them.
    """

    __slots__ = ("info", "_meta", "_entry", "_meta_value", "_entry_value")

    def __init__(self, info, *, meta, entry):
        self.info = info
        self._meta = meta
        self._entry = entry
        self._meta_value = None
        self._entry_value = None

    def meta(self) -> MessageMeta:
        if self._meta_value is None:
            self._meta_value = self._meta()
        return self._meta_value

    def entry(self) -> IndexEntry:
        if self._entry_value is None:
            self._entry_value = self._entry()
        return self._entry_value


def compare(op: Op, value, wanted) -> bool:
    if op is Op.LT:
        return value < wanted
    if op is Op.LE:
        return value <= wanted
    if op is Op.EQ:
        return value == wanted
    if op is Op.GE:
        return value >= wanted
    if op is Op.GT:
        return value > wanted
    raise InvalidQuery(f"unknown comparison {op!r}")


def compare_moment(op: Op, moment: datetime, when) -> bool:
    """A day comparison for a ``date``, an instant comparison for a ``datetime``."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return compare(op, moment, when)
    if isinstance(when, date):
        return compare(op, moment.date(), when)
    raise InvalidQuery("a date key needs a date or a datetime")


def matches(query, candidate: Candidate) -> bool:
    """Whether the message of ``candidate`` matches ``query``."""
    info = candidate.info
    if isinstance(query, SearchAll):
        return True
    if isinstance(query, SearchAnd):
        return all(matches(q, candidate) for q in query.items)
    if isinstance(query, SearchOr):
        return any(matches(q, candidate) for q in query.items)
    if isinstance(query, SearchNot):
        return not matches(query.item, candidate)
    if isinstance(query, SearchUIDs):
        return any(first <= info.uid <= last for first, last in query.ranges)
    if isinstance(query, SearchFlag):
        return (query.name in info.flags) == query.present
    if isinstance(query, SearchSize):
        return compare(query.op, info.size, query.size)
    if isinstance(query, SearchModSeq):
        return compare(query.op, info.modseq, query.modseq)
    if isinstance(query, SearchInternalDate):
        return compare_moment(query.op, info.internal_date, query.when)
    if isinstance(query, SearchSentDate):
        sent = candidate.meta().date
        return sent is not None and compare_moment(query.op, sent, query.when)
    if isinstance(query, SearchHeader):
        name, needle = query.name.lower(), fold(query.substring)
        return any(n == name and needle in v for n, v in candidate.entry().fields)
    if isinstance(query, SearchBody):
        return fold(query.substring) in candidate.entry().body
    if isinstance(query, SearchText):
        needle = fold(query.substring)
        entry = candidate.entry()
        return needle in entry.headers or needle in entry.body
    raise InvalidQuery(f"not a search key: {query!r}")


_LEAVES = (
    SearchAll, SearchUIDs, SearchFlag, SearchSize, SearchModSeq, SearchInternalDate,
    SearchSentDate, SearchHeader, SearchBody, SearchText,
)


def validate(query) -> None:
    """InvalidQuery unless ``query`` is a tree of search keys with values of the right types."""
    if isinstance(query, (SearchAnd, SearchOr)):
        for item in query.items:
            validate(item)
        return
    if isinstance(query, SearchNot):
        validate(query.item)
        return
    if not isinstance(query, _LEAVES):
        raise InvalidQuery(f"not a search key: {query!r}")
    if isinstance(query, (SearchSize, SearchModSeq, SearchInternalDate, SearchSentDate)):
        if not isinstance(query.op, Op):
            raise InvalidQuery("unknown comparison")
    if isinstance(query, (SearchHeader, SearchBody, SearchText)):
        if not isinstance(query.substring, str):
            raise InvalidQuery("a search string must be str")
    if isinstance(query, (SearchInternalDate, SearchSentDate)):
        if not isinstance(query.when, date):
            raise InvalidQuery("a date key needs a date or a datetime")


def evaluate(query, candidates) -> list[int]:
    """UIDs of the ``candidates`` matching ``query``, ascending."""
    validate(query)
    return sorted(c.info.uid for c in candidates if matches(query, c))
