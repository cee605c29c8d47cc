"""SORT, UID SORT, THREAD and UID THREAD (RFC 5256): SEARCH's criteria, then
mailsuite.imap.sortthread.  A store providing ISearchableStore answers the criteria from its
indexes and the sort/thread inputs from its precomputed SortKeys (one call each per command);
otherwise each message is read and parsed at most once, and only when a search key or a
sort key looks inside messages."""

from __future__ import annotations

from mailsuite.imap import sortthread
from mailsuite.imap.commands import SELECTED, command
from mailsuite.imap.commands.search import _Context, matches, matching, needs_data
from mailsuite.imap.message import ParsedMessage
from mailsuite.interfaces import ISearchableStore, NoSuchMessage, SortKeys


@command("SORT", states=SELECTED, allow_expunge=False)
async def sort(session, cmd):
    return await _sort(session, cmd, uid=False)


@command("UID SORT", states=SELECTED)
async def uid_sort(session, cmd):
    return await _sort(session, cmd, uid=True)


@command("THREAD", states=SELECTED, allow_expunge=False)
async def thread(session, cmd):
    return await _thread(session, cmd, uid=False)


@command("UID THREAD", states=SELECTED)
async def uid_thread(session, cmd):
    return await _thread(session, cmd, uid=True)


async def _sort(session, cmd, *, uid: bool):
    args = cmd.args
    headers = any(c.key in sortthread.HEADER_KEYS for c in args.criteria)
    if ISearchableStore.providedBy(session.store):
        rows = await _keyed_rows(session, args.key, uid=uid, keys=headers)
        if rows is None:
            return None
        found = sortthread.sort_by_keys(rows, args.criteria)
        session.write(b"* SORT" + b"".join(b" %d" % n for n in found) + b"\r\n")
        return None
    entries = await _entries(session, args.key, uid=uid, headers=headers)
    if entries is None:
        return None
    found = sortthread.sort(entries, args.criteria)
    # RFC 5256 §4: an empty result is still a SORT response.
    session.write(b"* SORT" + b"".join(b" %d" % n for n in found) + b"\r\n")


async def _thread(session, cmd, *, uid: bool):
    args = cmd.args
    entries = await _entries(session, args.key, uid=uid, headers=True)
    if entries is None:
        return None
    threads = sortthread.thread(args.algorithm, entries)
    wire = sortthread.thread_wire(threads)
    session.write(b"* THREAD" + (b" " + wire if wire else b"") + b"\r\n")


async def _entries(session, key, *, uid: bool, headers: bool):
    """
    The sortthread.Entry of every message matching ``key``; None when the mailbox was
    closed while messages were being read.
    """
    if ISearchableStore.providedBy(session.store):
        return await _indexed_entries(session, key, uid=uid, headers=headers)
    selected = session.selected
    infos = selected.infos
    ctx = _Context(len(infos), selected.uids[-1] if selected.uids else 0)
    searching_data = needs_data(key)
    entries = []
    for i, info in enumerate(infos):
        if info.uid in selected.ghosts:
            continue
        ctx.number = i + 1
        ctx.info = info
        ctx.message = None
        # Metadata-only criteria decide before any read, so only matches are read.
        if not searching_data and not matches(key, ctx):
            continue
        if headers or searching_data:
            try:
                data = await session.store.read(session.account, selected.name, info.uid)
            except NoSuchMessage:
                continue
            if session.selected is not selected:
                return None
            ctx.message = ParsedMessage.parse(data)
            if searching_data and not matches(key, ctx):
                continue
        ident = info.uid if uid else i + 1
        message = ctx.message if headers else None
        entries.append(sortthread.entry_from(i + 1, ident, info, message))
    return entries


async def _keyed_rows(session, key, *, uid: bool, keys: bool = True):
    """(number, ident, MessageInfo, SortKeys) of every message matching ``key``, from the
    store's indexes; None when the mailbox was closed meanwhile.  Without ``keys`` (ARRIVAL
    and SIZE only) the SortKeys are empty and the store is not asked for them."""
    selected = session.selected
    positions = await matching(session, key)
    if positions is None:
        return None
    infos = selected.infos
    if not keys:
        empty = SortKeys()
        return [(i + 1, infos[i].uid if uid else i + 1, infos[i], empty) for i in positions]
    stored = await session.store.sort_keys(session.account, selected.name,
                                           [infos[i].uid for i in positions])
    if session.selected is not selected:
        return None
    rows = []
    for i in positions:
        info = infos[i]
        found = stored.get(info.uid)
        if found is not None:   # else expunged meanwhile, as a failed read when reading
            rows.append((i + 1, info.uid if uid else i + 1, info, found))
    return rows


async def _indexed_entries(session, key, *, uid: bool, headers: bool):
    """_entries from the store's search and SortKeys, reading no message."""
    if not headers:
        selected = session.selected
        positions = await matching(session, key)
        if positions is None:
            return None
        infos = selected.infos
        return [sortthread.Entry(i + 1, infos[i].uid if uid else i + 1, infos[i].internal_date,
                                 infos[i].size) for i in positions]
    rows = await _keyed_rows(session, key, uid=uid)
    if rows is None:
        return None
    return [sortthread.entry_from_keys(number, ident, info, keys)
            for number, ident, info, keys in rows]
