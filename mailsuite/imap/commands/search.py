"""SEARCH and UID SEARCH (RFC 3501 §6.4.4): the search AST evaluated over the snapshot;
message bytes are read (and parsed once) only when a key looks inside messages."""

from __future__ import annotations

from mailsuite.imap.commands import SELECTED, command
from mailsuite.imap.message import ParsedMessage, SectionSpec
from mailsuite.imap.parser import SearchKey
from mailsuite.imap.responses import bad
from mailsuite.interfaces import NoSuchMessage

_HEADER = SectionSpec(text="HEADER")
_DATA_KEYS = frozenset({"HEADER", "BODY", "TEXT", "SENTBEFORE", "SENTON", "SENTSINCE"})


def needs_data(key: SearchKey) -> bool:
    if key.op in _DATA_KEYS:
        return True
    return any(isinstance(arg, SearchKey) and needs_data(arg) for arg in key.args)


class _Context:
    """What a key is judged against: position, metadata and (maybe) the parsed message."""

    __slots__ = ("number", "info", "message", "count", "last_uid")

    def __init__(self, count: int, last_uid: int):
        self.count = count
        self.last_uid = last_uid
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
    if op == "SEQ":
        return args[0].contains(ctx.number, ctx.count)
    if op == "UID":
        return args[0].contains(info.uid, ctx.last_uid)
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
    if args.returns is not None:
        raise bad("SEARCH RETURN is not supported")
    selected = session.selected
    infos = selected.infos
    ctx = _Context(len(infos), selected.uids[-1] if selected.uids else 0)
    reading = needs_data(args.key)
    found = []
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
        if matches(args.key, ctx):
            found.append(info.uid if uid else i + 1)
    # RFC 3501 §7.2.5: an empty result is still a SEARCH response.
    session.write(b"* SEARCH" + b"".join(b" %d" % n for n in found) + b"\r\n")
