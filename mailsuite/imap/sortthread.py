"""
SORT and THREAD (RFC 5256) and the display-based sort keys (RFC 5957), pure: the facts of
each message in, the ordered message numbers or the thread trees (and their wire form) out.

Every comparison falls back on the message sequence number (RFC 5256 §2.2, §3), so the
result never depends on the order the caller lists the messages in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property

# RFC 5256 §3 sort keys, RFC 5957 §3 display keys.
SORT_KEYS = frozenset({"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO",
                       "DISPLAYFROM", "DISPLAYTO"})
REVERSE = "REVERSE"
#: Keys that need the message header (ARRIVAL and SIZE come from the store's metadata).
HEADER_KEYS = SORT_KEYS - {"ARRIVAL", "SIZE"}

ORDEREDSUBJECT = "ORDEREDSUBJECT"
REFERENCES = "REFERENCES"
THREAD_ALGORITHMS = frozenset({ORDEREDSUBJECT, REFERENCES})

_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def casemap(text: str) -> str:
    """The i;ascii-casemap collation key (RFC 4790 §9.2): ASCII letters folded to upper case."""
    return text.translate(_ASCII_UPPER)


# --------------------------------------------------------------------------- base subject

_WSP_RUN = re.compile(r"[ \t\r\n]+")
# RFC 5256 §5: subj-trailer = "(fwd)" / WSP
_TRAILER = re.compile(r"(?:\(fwd\)| )\Z", re.IGNORECASE)
# subj-blob = "[" *BLOBCHAR "]" *WSP ; subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"
_BLOB = r"\[[^\[\]]*\] *"
_REFWD = re.compile(r"(?:%s)*(?:re|fwd?) *(?:%s)?:" % (_BLOB, _BLOB), re.IGNORECASE)
_BLOB_PREFIX = re.compile(_BLOB)
_FWD_HEADER = "[FWD:"


def base_subject(subject: str | None) -> tuple[str, bool]:
    """
    RFC 5256 §2.1: the base subject of an (already RFC 2047-decoded) Subject, and whether
    extracting it removed a reply or forward marker (subj-refwd, "(fwd)", "[fwd: ...]").
    """
    if not subject:
        return "", False
    # (1) tabs and continuations become a space; runs of spaces one space.
    text = _WSP_RUN.sub(" ", subject)
    reply = False
    while True:
        # (2) trailing "(fwd)" and white space.
        while True:
            match = _TRAILER.search(text)
            if match is None:
                break
            if match.group() != " ":
                reply = True
            text = text[:match.start()]
        # (3), (4), (5): leaders, then a leading blob if something remains after it.
        while True:
            if text.startswith(" "):
                text = text[1:]
                continue
            match = _REFWD.match(text)
            if match is not None:
                reply = True
                text = text[match.end():]
                continue
            match = _BLOB_PREFIX.match(text)
            if match is not None and text[match.end():].strip(" "):
                text = text[match.end():]
                continue
            break
        # (6) "[fwd:" ... "]" wrapping the whole subject: unwrap and start again at (2).
        if casemap(text[:len(_FWD_HEADER)]) == _FWD_HEADER and text.endswith("]"):
            text = text[len(_FWD_HEADER):-1]
            reply = True
            continue
        return text, reply


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class Entry:
    """
    What SORT and THREAD know of one message.  ``number`` is the sequence number (the
    tie-breaker); ``ident`` is what the response reports (sequence number or UID).
    Address keys hold the first address's addr-mailbox (RFC 5256 §3) or, for the display
    keys, the RFC 5957 §3 display text; a missing field is "".
    """

    number: int
    ident: int
    arrival: datetime
    size: int = 0
    sent: datetime | None = None   # the Date header; None when missing or unreadable
    subject: str = ""
    from_: str = ""
    to: str = ""
    cc: str = ""
    display_from: str = ""
    display_to: str = ""
    message_id: str | None = None
    references: tuple[str, ...] = ()
    # The base subject and reply marker when known already (a store's SortKeys).
    known_base: tuple[str, bool] | None = field(default=None, compare=False, repr=False)

    @cached_property
    def base(self) -> tuple[str, bool]:
        if self.known_base is not None:
            return self.known_base
        return base_subject(self.subject)

    @cached_property
    def sent_key(self) -> float:
        # RFC 5256 §2.2: without a usable Date header the internal date stands in.
        return instant(self.sent if self.sent is not None else self.arrival)


def instant(when: datetime) -> float:
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)   # "-0000": UTC, zone unknown (RFC 5322 §3.3)
    return when.timestamp()


_MSG_ID = re.compile(r"<([^<>\s]+)>")


def message_ids(text: str | None) -> list[str]:
    """The msg-ids of a Message-ID, References or In-Reply-To value, in order."""
    return _MSG_ID.findall(text) if text else []


def display(addresses) -> str:
    """RFC 5957 §3: the first address's display name, else its addr-spec; "" if none."""
    if not addresses:
        return ""
    first = addresses[0]
    name = (first.name or "").strip()
    return name if name else first.addr_spec


def entry_from(number: int, ident: int, info, message=None) -> Entry:
    """
    The Entry of a message from its MessageInfo and (when header keys are wanted) its
    ParsedMessage.
    """
    if message is None:
        return Entry(number, ident, info.internal_date, info.size)
    ids = message_ids(message.message_id)
    references = message.header("references")
    refs = message_ids(references[0]) if references else []
    if not refs:
        # RFC 5256 §3 REFERENCES (1)(B): else the first msg-id of In-Reply-To.
        in_reply_to = message.header("in-reply-to")
        refs = message_ids(in_reply_to[0])[:1] if in_reply_to else []
    from_, to, cc = message.from_, message.to, message.cc
    return Entry(
        number, ident, info.internal_date, info.size,
        sent=message.date,
        subject=message.subject or "",
        from_=from_[0].mailbox if from_ else "",
        to=to[0].mailbox if to else "",
        cc=cc[0].mailbox if cc else "",
        display_from=display(from_),
        display_to=display(to),
        message_id=ids[0] if ids else None,
        references=tuple(refs),
    )


def meta_mailbox(address) -> str:
    """The addr-mailbox (local part) of a MetaAddress's addr-spec."""
    if address is None:
        return ""
    return address.address.rpartition("@")[0] or address.address


def meta_display(address) -> str:
    if address is None:
        return ""
    name = (address.name or "").strip()
    return name if name else address.address


def _bare(ids) -> list[str]:
    # The store keeps msg-ids in their "<...>" form (mailsuite.store.search); "<>" says nothing.
    return [i[1:-1] for i in ids if len(i) > 2]


def entry_from_meta(number: int, ident: int, info, meta) -> Entry:
    """
    The Entry of a message from its MessageInfo and the store's MessageMeta (the same facts
    ``entry_from`` takes from a parsed message).
    """
    ids = message_ids(meta.message_id)
    refs = _bare(meta.references)
    if not refs and meta.in_reply_to:
        # RFC 5256 §3 REFERENCES (1)(B): else the first msg-id of In-Reply-To.
        refs = _bare((meta.in_reply_to,))
    return Entry(
        number, ident, info.internal_date, info.size,
        sent=meta.date,
        subject=meta.subject or "",
        from_=meta_mailbox(meta.from_),
        to=meta_mailbox(meta.to),
        cc=meta_mailbox(meta.cc),
        display_from=meta_display(meta.from_),
        display_to=meta_display(meta.to),
        message_id=ids[0] if ids else None,
        references=tuple(refs),
    )


def entry_from_keys(number: int, ident: int, info, keys) -> Entry:
    """
    The Entry of a message from its MessageInfo and the store's SortKeys (text already
    casemapped, the subject already reduced to its base).
    """
    refs = keys.references
    if not refs and keys.in_reply_to:
        # RFC 5256 §3 REFERENCES (1)(B): else the first msg-id of In-Reply-To.
        refs = (keys.in_reply_to,)
    sent = None
    if keys.sent is not None:
        sent = datetime.fromtimestamp(keys.sent, timezone.utc)
    return Entry(
        number, ident, info.internal_date, info.size,
        sent=sent,
        subject=keys.subject,
        from_=keys.from_,
        to=keys.to,
        cc=keys.cc,
        display_from=keys.display_from,
        display_to=keys.display_to,
        message_id=keys.message_id,
        references=tuple(refs),
        known_base=(keys.subject, keys.reply),
    )


# --------------------------------------------------------------------------- SORT


@dataclass(frozen=True)
class SortCriterion:
    key: str
    reverse: bool = False


def _sort_value(entry: Entry, key: str):
    if key == "ARRIVAL":
        return instant(entry.arrival)
    if key == "DATE":
        return entry.sent_key
    if key == "SIZE":
        return entry.size
    if key == "SUBJECT":
        return casemap(entry.base[0])
    if key == "FROM":
        return casemap(entry.from_)
    if key == "TO":
        return casemap(entry.to)
    if key == "CC":
        return casemap(entry.cc)
    if key == "DISPLAYFROM":
        return casemap(entry.display_from)
    if key == "DISPLAYTO":
        return casemap(entry.display_to)
    raise ValueError(f"unknown sort key {key}")


def sort(entries, criteria) -> list[int]:
    """RFC 5256 §3 SORT: the idents ordered by ``criteria``, ties by sequence number."""
    ordered = sorted(entries, key=lambda e: e.number)
    # Stable sorts from the last criterion to the first; the sequence order survives ties,
    # also under REVERSE (list.sort keeps equal items in order when reversing).
    for criterion in reversed(criteria):
        ordered.sort(key=lambda e, k=criterion.key: _sort_value(e, k),
                     reverse=criterion.reverse)
    return [e.ident for e in ordered]


# SortKeys field of each text sort key (its values are casemapped by the store).
_KEYS_FIELD = {"SUBJECT": "subject", "FROM": "from_", "TO": "to", "CC": "cc",
               "DISPLAYFROM": "display_from", "DISPLAYTO": "display_to"}


def sort_by_keys(rows, criteria) -> list[int]:
    """
    RFC 5256 §3 SORT over precomputed keys: ``rows`` are (number, ident, info, SortKeys)
    with ``info`` a MessageInfo; the idents ordered by ``criteria``, ties by sequence number.
    Each criterion's values are computed once per message and compared as plain values.
    """
    rows = sorted(rows, key=lambda r: r[0]) if _unordered(rows) else list(rows)
    arrival: list[float] | None = None

    def arrivals() -> list[float]:
        nonlocal arrival
        if arrival is None:
            arrival = [instant(r[2].internal_date) for r in rows]
        return arrival

    def column(key: str) -> list:
        if key == "ARRIVAL":
            return arrivals()
        if key == "SIZE":
            return [r[2].size for r in rows]
        if key == "DATE":
            # RFC 5256 §2.2: without a usable Date header the internal date stands in.
            sent = [r[3].sent for r in rows]
            if None in sent:
                fallback = arrivals()
                sent = [fallback[n] if s is None else s for n, s in enumerate(sent)]
            return sent
        name = _KEYS_FIELD.get(key)
        if name is None:
            raise ValueError(f"unknown sort key {key}")
        return [getattr(r[3], name) for r in rows]

    order = list(range(len(rows)))
    for criterion in reversed(criteria):
        order.sort(key=column(criterion.key).__getitem__, reverse=criterion.reverse)
    return [rows[n][1] for n in order]


def _unordered(rows) -> bool:
    return any(rows[n][0] > rows[n + 1][0] for n in range(len(rows) - 1))


# --------------------------------------------------------------------------- THREAD


@dataclass(frozen=True)
class Thread:
    """A node of a thread tree: a message ident, or None for a dummy (RFC 5256 §3)."""

    ident: int | None
    children: tuple[Thread, ...] = ()


def thread_wire(threads) -> bytes:
    """RFC 5256 §4 thread-list form: (1 2)(3 (4)(5)); no lists at all for no threads."""
    return b"".join(b"(" + _members(t) + b")" for t in threads)


def _members(node: Thread) -> bytes:
    # thread-members = nz-number *(SP nz-number) [SP thread-nested]: one child continues
    # the chain, two or more open a nested list each.  Iterative: threads can be deep.
    out: list[bytes] = []
    stack: list[Thread | bytes] = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            out.append(item)
            continue
        kids = item.children
        if item.ident is not None:
            out.append(b"%d" % item.ident)
            if kids:
                out.append(b" ")
        if len(kids) == 1:
            stack.append(kids[0])
        else:
            for kid in reversed(kids):
                stack.extend((b")", kid, b"("))
    return b"".join(out)


def ordered_subject(entries) -> list[Thread]:
    """
    RFC 5256 §3 ORDEREDSUBJECT: messages grouped by base subject; the first (by sent
    date) of each group is the root and the others its children; threads in the order of
    their roots' sent dates.
    """
    ordered = sorted(entries, key=lambda e: (casemap(e.base[0]), e.sent_key, e.number))
    groups: list[list[Entry]] = []
    previous = None
    for entry in ordered:
        subject = casemap(entry.base[0])
        if not groups or subject != previous:
            groups.append([])
            previous = subject
        groups[-1].append(entry)
    groups.sort(key=lambda g: (g[0].sent_key, g[0].number))
    return [Thread(g[0].ident, tuple(Thread(e.ident) for e in g[1:])) for g in groups]


class _Container:
    """A node of the REFERENCES id table; ``entry`` None makes it a dummy."""

    __slots__ = ("entry", "parent", "children")

    def __init__(self, entry: Entry | None = None):
        self.entry = entry
        self.parent: _Container | None = None
        self.children: list[_Container] = []

    def descends_from(self, other: _Container) -> bool:
        node = self
        while node is not None:
            if node is other:
                return True
            node = node.parent
        return False

    def unlink(self) -> None:
        if self.parent is not None:
            self.parent.children.remove(self)
            self.parent = None

    def link_under(self, parent: _Container) -> None:
        self.unlink()
        self.parent = parent
        parent.children.append(self)

    def first_entry(self) -> Entry | None:
        """The message itself, or for a dummy the first (sorted) child's."""
        node = self
        while node.entry is None:
            if not node.children:
                return None
            node = node.children[0]
        return node.entry

    def sort_key(self):
        entry = self.first_entry()
        return (entry.sent_key, entry.number) if entry is not None else (0.0, 0)


def references(entries) -> list[Thread]:
    """RFC 5256 §3 REFERENCES: threads from References / In-Reply-To, then subjects."""
    ordered = sorted(entries, key=lambda e: e.number)
    table: dict[str, _Container] = {}
    containers: list[_Container] = []

    # (1) The id table and the parent/child links.
    for entry in ordered:
        container = None
        if entry.message_id is not None:
            found = table.get(entry.message_id)
            if found is None:
                container = table[entry.message_id] = _Container(entry)
            elif found.entry is None:
                found.entry = entry
                container = found
        if container is None:
            # (1)(A): no Message-ID, or a duplicate one: a message of its own.
            container = _Container(entry)
        containers.append(container)
        parent = None
        for ref in entry.references:
            if ref == entry.message_id:
                continue   # a message never references itself
            node = table.get(ref)
            if node is None:
                node = table[ref] = _Container()
            # (1)(B): keep existing links; never create a loop.
            if (parent is not None and node.parent is None and node is not parent
                    and not parent.descends_from(node)):
                node.link_under(parent)
            parent = node
        # (1)(C): the last reference is the parent, replacing any earlier guess.
        if parent is None:
            container.unlink()
        elif parent is not container and container.parent is not parent and not (
                container.children and parent.descends_from(container)):
            container.link_under(parent)

    # (2) The root set: everything without a parent, in the order met.
    seen: set[int] = set()
    roots: list[_Container] = []
    for container in [*containers, *table.values()]:
        if container.parent is None and id(container) not in seen:
            seen.add(id(container))
            roots.append(container)

    # (3) Prune dummies.
    roots = _prune(roots)

    # (4) Sort the root set; a dummy sorts by its first child.
    for root in roots:
        if root.entry is None:
            root.children.sort(key=_Container.sort_key)
    roots.sort(key=_Container.sort_key)

    # (5) Gather roots that share a base subject.
    roots = _group_by_subject(roots)

    # (6) Sort every set of siblings, the deepest first.
    _sort_tree(roots)
    return _freeze(roots)


def _post_order(roots: list[_Container]) -> list[_Container]:
    """Every node below ``roots``, children before their parents (no recursion)."""
    order: list[_Container] = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    order.reverse()
    return order


def _prune(roots: list[_Container]) -> list[_Container]:
    for node in _post_order(roots):
        node.children = _pruned(node.children, at_root=False)
        for child in node.children:
            child.parent = node
    out = _pruned(roots, at_root=True)
    for node in out:
        node.parent = None
    return out


def _pruned(nodes: list[_Container], *, at_root: bool) -> list[_Container]:
    """One level of (3); the nodes' own children are pruned already."""
    out: list[_Container] = []
    for node in nodes:
        if node.entry is not None:
            out.append(node)
        elif not node.children:
            continue   # (3)(A): a dummy without children goes
        elif at_root and len(node.children) > 1:
            out.append(node)   # (3)(B): children are not promoted to the root in numbers
        else:
            out.extend(node.children)   # (3)(B): promoted in the dummy's place
    return out


def _thread_subject(node: _Container) -> tuple[str, bool]:
    entry = node.first_entry()
    if entry is None:
        return "", False
    subject, reply = entry.base
    return casemap(subject), reply


def _group_by_subject(roots: list[_Container]) -> list[_Container]:
    # (5)(A), (5)(B): the subject table.
    subjects: dict[str, _Container] = {}
    for root in roots:
        subject, reply = _thread_subject(root)
        if not subject:
            continue
        held = subjects.get(subject)
        if held is None:
            subjects[subject] = root
        elif held.entry is not None and (
                root.entry is None or (_thread_subject(held)[1] and not reply)):
            subjects[subject] = root
    # (5)(C): merge.
    out: list[_Container] = []
    placed: set[int] = set()

    def place(node: _Container) -> None:
        if id(node) not in placed:
            placed.add(id(node))
            out.append(node)

    for root in roots:
        if root.parent is not None:
            # Already gathered under a dummy made for it: the dummy takes its place.
            place(root.parent)
            continue
        subject, reply = _thread_subject(root)
        held = subjects.get(subject) if subject else None
        if held is None or held is root:
            place(root)
        elif held.entry is None and root.entry is None:
            for child in list(root.children):
                child.link_under(held)
        elif held.entry is None or (reply and not _thread_subject(held)[1]):
            root.link_under(held)
        else:
            dummy = _Container()
            if id(held) in placed:
                out[out.index(held)] = dummy
                placed.add(id(dummy))
            held.link_under(dummy)
            root.link_under(dummy)
            subjects[subject] = dummy
    return out


def _sort_tree(roots: list[_Container]) -> None:
    for node in _post_order(roots):
        node.children.sort(key=_Container.sort_key)
    roots.sort(key=_Container.sort_key)


def _freeze(roots: list[_Container]) -> list[Thread]:
    frozen: dict[int, Thread] = {}
    for node in _post_order(roots):
        frozen[id(node)] = Thread(None if node.entry is None else node.entry.ident,
                                  tuple(frozen.pop(id(child)) for child in node.children))
    return [frozen[id(root)] for root in roots]


def thread(algorithm: str, entries) -> list[Thread]:
    """The threads of ``entries`` by ``algorithm`` (ORDEREDSUBJECT or REFERENCES)."""
    if algorithm == ORDEREDSUBJECT:
        return ordered_subject(entries)
    if algorithm == REFERENCES:
        return references(entries)
    raise ValueError(f"unknown thread algorithm {algorithm}")
