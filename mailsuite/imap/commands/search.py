"""SEARCH and UID SEARCH (RFC 3501 §6.4.4).  A store providing ISearchableStore answers
the search AST translated into its store-neutral query, in one call; otherwise the AST is
evaluated over the snapshot, reading (and parsing once) message bytes only when a key looks
inside messages.  Results go out as SEARCH, or as ESEARCH (RFC 4731) for RETURN options and
IMAP4rev2 clients; RETURN (SAVE) keeps them for "$" (RFC 5182)."""

from __future__ import annotations

from datetime import datetime, timezone

from mailsuite.imap import wire
from mailsuite.imap.commands import SELECTED, command
from mailsuite.imap.message import ParsedMessage, SectionSpec
from mailsuite.imap.parser import SearchKey
from mailsuite.imap.selected import uid_set
from mailsuite.interfaces import (
    ISearchableStore,
    NoSuchMessage,
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

_HEADER = SectionSpec(text="HEADER")
_DATA_KEYS = frozenset({"HEADER", "BODY", "TEXT", "SENTBEFORE", "SENTON", "SENTSINCE"})


def needs_data(key: SearchKey) -> bool:
    if key.op in _DATA_KEYS:
        return True
    return any(isinstance(arg, SearchKey) and needs_data(arg) for arg in key.args)


class _Context:
    """What a key is judged against: position, metadata and (maybe) the parsed message."""

    __slots__ = ("number", "info", "message", "count", "last_uid", "now", "saved")

    def __init__(self, count: int, last_uid: int, *, now: float = 0.0,
                 saved: frozenset = frozenset()):
        self.count = count
        self.last_uid = last_uid
        self.now = now
        self.saved = saved
        self.number = 0
        self.info = None
        self.message: ParsedMessage | None = None


def _contains(haystack: str, needle: str) -> bool:
    # RFC 3501 §6.4.4: substring match, case-insensitive.
    return needle.casefold() in haystack.casefold()


def matches(key: SearchKey, ctx: _Context) -> bool:
    op = key.op
    args = key.args
    info = ctx.info
    if op == "ALL" or op == "OLD":
        return True
    if op == "AND":
        return all(matches(k, ctx) for k in args)
    if op == "FLAG":
        return args[0] in info.flags
    if op == "NOFLAG":
        return args[0] not in info.flags
    if op == "NOT":
        return not matches(args[0], ctx)
    if op == "OR":
        return matches(args[0], ctx) or matches(args[1], ctx)
    if op == "SEQ" or op == "UID":
        if args[0].saved:
            return info.uid in ctx.saved  # RFC 5182 §2.1: "$" is the saved result
        if op == "SEQ":
            return args[0].contains(ctx.number, ctx.count)
        return args[0].contains(info.uid, ctx.last_uid)
    if op == "MODSEQ":
        return info.modseq >= args[0]  # RFC 7162 §3.1.5
    if op == "OLDER":
        # RFC 5032 §3: ages in seconds against the internal date.
        return ctx.now - info.internal_date.timestamp() >= args[0]
    if op == "YOUNGER":
        return ctx.now - info.internal_date.timestamp() < args[0]
    if op in ("NEW", "RECENT"):
        return False  # no \Recent (RFC 9051 removed it)
    if op == "LARGER":
        return info.size > args[0]
    if op == "SMALLER":
        return info.size < args[0]
    if op in ("BEFORE", "ON", "SINCE"):
        # RFC 3501 §6.4.4: dates disregarding time and timezone.
        return _compare(op, info.internal_date.date(), args[0])
    message = ctx.message
    if op in ("SENTBEFORE", "SENTON", "SENTSINCE"):
        sent = message.date
        return sent is not None and _compare(op[4:], sent.date(), args[0])
    if op == "HEADER":
        name, value = args
        values = message.header(name)
        return any(_contains(v, value) for v in values) if value else bool(values)
    if op == "BODY":
        return _contains(message.text(), args[0])
    if op == "TEXT":
        header = message.section(_HEADER).decode("utf-8", "replace")
        return _contains(header, args[0]) or _contains(message.text(), args[0])
    raise ValueError(f"unknown search key {op}")


def uses_modseq(key: SearchKey) -> bool:
    if key.op == "MODSEQ":
        return True
    return any(isinstance(arg, SearchKey) and uses_modseq(arg) for arg in key.args)


def _compare(op: str, day, wanted) -> bool:
    if op == "BEFORE":
        return day < wanted
    if op == "ON":
        return day == wanted
    return day >= wanted


@command("SEARCH", states=SELECTED, allow_expunge=False)
async def search(session, cmd):
    return await _search(session, cmd, uid=False)


@command("UID SEARCH", states=SELECTED)
async def uid_search(session, cmd):
    return await _search(session, cmd, uid=True)


async def _search(session, cmd, *, uid: bool):
    args = cmd.args
    returns = args.returns
    selected = session.selected
    modseq = uses_modseq(args.key)
    if modseq:
        session.enable_condstore()  # RFC 7162 §3.1
    saving = returns is not None and "SAVE" in returns
    saved_before = frozenset(selected.saved)
    if saving:
        selected.saved = []  # RFC 5182 §2.1: a failed SAVE leaves an empty result
    positions = await matching(session, args.key, saved=saved_before)
    if positions is None:
        return None
    infos = selected.infos
    found_uids = [infos[i].uid for i in positions]
    found = found_uids if uid else [i + 1 for i in positions]
    highest = max((infos[i].modseq for i in positions), default=0)
    if saving:
        selected.saved = _to_save(returns, found_uids)
    if returns is None and not session.rev2:
        # RFC 3501 §7.2.5: an empty result is still a SEARCH response.
        tail = b" (MODSEQ %d)" % highest if modseq and found else b""
        session.write(b"* SEARCH" + b"".join(b" %d" % n for n in found) + tail + b"\r\n")
        return None
    # RFC 9051 §6.4.4: IMAP4rev2 clients get ESEARCH, plain SEARCH meaning RETURN (ALL).
    options = returns if returns is not None else ("ALL",)
    if options == ("SAVE",):
        return None  # RFC 5182 §2.4: SAVE alone sends no ESEARCH
    session.write(esearch(cmd.tag, found, options, uid=uid,
                          modseq=highest if modseq and found else None))
    return None


async def matching(session, key: SearchKey, *, saved=None) -> list[int] | None:
    """
    The 0-based snapshot positions of the messages matching ``key``, ascending, ghosts
    left out; None when the mailbox was closed meanwhile.  ``saved`` is the "$" result to
    use (default: the selected mailbox's).
    """
    selected = session.selected
    saved = frozenset(selected.saved) if saved is None else saved
    if key.op == "ALL":
        # The snapshot is the answer (SORT/THREAD ... ALL): no store call at all.
        return [i for i, info in enumerate(selected.infos) if info.uid not in selected.ghosts]
    if ISearchableStore.providedBy(session.store):
        try:
            query = store_query(key, selected, now=session.clock.seconds(), saved=saved)
        except Untranslatable:
            pass
        else:
            return await _indexed(session, selected, query)
    return await _evaluated(session, selected, key, saved)


async def _indexed(session, selected, query) -> list[int] | None:
    uids = await session.store.search(session.account, selected.name, query)
    if session.selected is not selected:
        return None
    # RFC 3501 §7.4.1 ff.: messages the session has not been told of yet do not appear.
    positions = []
    for found in uids:
        i = selected.position(found)
        if i is not None and found not in selected.ghosts:
            positions.append(i)
    return positions


async def _evaluated(session, selected, key, saved) -> list[int] | None:
    infos = selected.infos
    ctx = _Context(len(infos), selected.uids[-1] if selected.uids else 0,
                   now=session.clock.seconds(), saved=saved)
    reading = needs_data(key)
    positions = []
    for i, info in enumerate(infos):
        if info.uid in selected.ghosts:
            continue
        ctx.number = i + 1
        ctx.info = info
        if reading:
            try:
                data = await session.store.read(session.account, selected.name, info.uid)
            except NoSuchMessage:
                continue
            if session.selected is not selected:
                return None
            ctx.message = ParsedMessage.parse(data)
        if matches(key, ctx):
            positions.append(i)
    return positions


# --------------------------------------------------------------------------- to the store


class Untranslatable(Exception):
    """A search key the store's query has no counterpart for."""


_DAY_OPS = {"BEFORE": Op.LT, "ON": Op.EQ, "SINCE": Op.GE}


def store_query(key: SearchKey, selected, *, now: float, saved=frozenset()):
    """
    The ISearchableStore query for ``key`` over ``selected``: sequence numbers become the
    UIDs of the snapshot, "$" the saved UIDs, ages instants relative to ``now``.
    Untranslatable for a key without a counterpart.
    """
    op = key.op
    args = key.args
    if op in ("ALL", "OLD"):
        return SearchAll()
    if op in ("NEW", "RECENT"):
        return SearchUIDs(())  # never \Recent (RFC 9051 removed it)
    if op == "AND":
        return SearchAnd(tuple(store_query(k, selected, now=now, saved=saved) for k in args))
    if op == "OR":
        return SearchOr(tuple(store_query(k, selected, now=now, saved=saved) for k in args))
    if op == "NOT":
        return SearchNot(store_query(args[0], selected, now=now, saved=saved))
    if op in ("SEQ", "UID"):
        if args[0].saved:
            return SearchUIDs.of(saved)  # RFC 5182 §2.1
        if op == "UID":
            return SearchUIDs(tuple(args[0].resolve(selected.uids[-1] if selected.uids else 0)))
        return SearchUIDs(tuple(_sequence_uids(args[0], selected.uids)))
    if op == "FLAG":
        return SearchFlag(args[0])
    if op == "NOFLAG":
        return SearchFlag(args[0], present=False)
    if op == "HEADER":
        return SearchHeader(args[0], args[1])
    if op == "BODY":
        return SearchBody(args[0])
    if op == "TEXT":
        return SearchText(args[0])
    if op in _DAY_OPS:
        return SearchInternalDate(_DAY_OPS[op], args[0])
    if op[4:] in _DAY_OPS and op.startswith("SENT"):
        return SearchSentDate(_DAY_OPS[op[4:]], args[0])
    if op == "LARGER":
        return SearchSize(Op.GT, args[0])
    if op == "SMALLER":
        return SearchSize(Op.LT, args[0])
    if op == "MODSEQ":
        return SearchModSeq(Op.GE, args[0])  # RFC 7162 §3.1.5
    if op in ("OLDER", "YOUNGER"):
        # RFC 5032 §3: OLDER n is an internal date at least n seconds before now.
        moment = datetime.fromtimestamp(now - args[0], timezone.utc)
        return SearchInternalDate(Op.LE if op == "OLDER" else Op.GT, moment)
    raise Untranslatable(op)


def _sequence_uids(sequence, uids: list[int]) -> list[tuple[int, int]]:
    """UID ranges covering the messages a sequence set addresses in the snapshot."""
    count = len(uids)
    out = []
    for low, high in sequence.resolve(count):
        low, high = max(low, 1), min(high, count)
        if low <= high:
            out.append((uids[low - 1], uids[high - 1]))
    return out


def _to_save(returns, uids: list[int]) -> list[int]:
    # RFC 5182 §2.4: with MIN and/or MAX but neither ALL nor COUNT, only those are saved.
    if not uids or "ALL" in returns or "COUNT" in returns:
        return uids
    picked = []
    if "MIN" in returns:
        picked.append(uids[0])
    if "MAX" in returns and uids[-1] not in picked:
        picked.append(uids[-1])
    return picked or uids


def esearch(tag: str, found: list[int], options, *, uid: bool,
            modseq: int | None = None) -> bytes:
    """RFC 4731 §3.1: * ESEARCH (TAG "t") [UID] MIN n MAX n COUNT n ALL set [MODSEQ n]."""
    out = b"* ESEARCH (TAG " + wire.quoted(tag.encode("ascii")) + b")"
    if uid:
        out += b" UID"
    if found:
        if "MIN" in options:
            out += b" MIN %d" % found[0]
        if "MAX" in options:
            out += b" MAX %d" % found[-1]
    if "COUNT" in options:
        out += b" COUNT %d" % len(found)
    if found and "ALL" in options:
        out += b" ALL " + uid_set(found).encode("ascii")
    if modseq is not None:
        out += b" MODSEQ %d" % modseq  # RFC 7162 §3.1.5
    return out + b"\r\n"
