"""FETCH and UID FETCH (RFC 3501 §6.4.5, §6.4.8; RFC 3516 BINARY).

Metadata items (FLAGS, UID, INTERNALDATE, RFC822.SIZE) come from the selected mailbox's
snapshot in a tight loop.  ENVELOPE, BODYSTRUCTURE and BODY come from a store providing
ISearchableStore (its MessageMeta, one call per command) unless another item needs the bytes
anyway.  Otherwise message bytes are read only when an item needs them, and each message is
parsed at most once per command.
"""

from __future__ import annotations

from mailsuite.imap import wire
from mailsuite.imap.commands import SELECTED, command
from mailsuite.imap.message import ParsedMessage, SectionSpec, UnknownEncoding
from mailsuite.imap.parser import FetchItem, Section
from mailsuite.imap.responses import EXPUNGEISSUED, Reply, bad, no
from mailsuite.imap.selected import missing_uids
from mailsuite.interfaces import FlagMode, ISearchableStore, NoSuchMessage

NEEDS_DATA = frozenset({"ENVELOPE", "BODYSTRUCTURE", "BODY", "BINARY", "BINARY.SIZE",
                        "RFC822", "RFC822.HEADER", "RFC822.TEXT"})
#: Items a MessageMeta answers (BODY only without a section).
META_ITEMS = frozenset({"ENVELOPE", "BODYSTRUCTURE", "BODY"})
BATCH = 1000
UNKNOWN_CTE = "UNKNOWN-CTE"  # RFC 3516 §4.3


def _from_meta(items) -> bool:
    """Whether no item needs message bytes once ENVELOPE/BODY/BODYSTRUCTURE are known."""
    for item in items:
        if item.name in META_ITEMS:
            if item.name == "BODY" and item.section is not None:
                return False
        elif item.name in NEEDS_DATA:
            return False
    return True


def _sets_seen(item: FetchItem) -> bool:
    # RFC 3501 §6.4.5: BODY[...] and RFC822(.TEXT) set \Seen; .PEEK and HEADER do not.
    if item.name in ("BODY", "BINARY"):
        return item.section is not None and not item.peek
    return item.name in ("RFC822", "RFC822.TEXT")


class _FlagCache(dict):
    def __missing__(self, flags):
        value = self[flags] = wire.flags(flags)
        return value


@command("FETCH", states=SELECTED, allow_expunge=False)
async def fetch(session, cmd):
    return await _fetch(session, cmd, uid=False)


@command("UID FETCH", states=SELECTED)
async def uid_fetch(session, cmd):
    # RFC 3501 §7.4.1: EXPUNGE responses may be sent during UID commands.
    return await _fetch(session, cmd, uid=True)


async def _fetch(session, cmd, *, uid: bool):
    selected = session.selected
    args = cmd.args
    items = list(args.items)
    if uid and not any(item.name == "UID" for item in items):
        items.insert(0, FetchItem("UID"))  # RFC 3501 §6.4.8
    if args.vanished and not (uid and session.qresync):
        raise bad("VANISHED needs UID FETCH and QRESYNC")  # RFC 7162 §3.2.6
    wants_modseq = any(item.name == "MODSEQ" for item in items)
    if args.changedsince is not None or wants_modseq:
        session.enable_condstore()  # RFC 7162 §3.1: CONDSTORE-enabling commands
    if args.changedsince is not None and not wants_modseq:
        items.append(FetchItem("MODSEQ"))  # RFC 7162 §3.1.4.1
    positions = selected.positions(args.sequence, uid=uid)
    if args.vanished and not args.sequence.saved and selected.uidnext > 1:
        # RFC 7162 §3.2.6: UIDs of the set that are gone (a superset: no tombstones).
        top = selected.uidnext - 1
        ranges = [(low, min(high, top)) for low, high in args.sequence.resolve(top)
                  if low <= top]
        gone = missing_uids(ranges, selected.uids)
        if gone:
            session.write(b"* VANISHED (EARLIER) " + gone.encode("ascii") + b"\r\n")
    if args.changedsince is not None:
        since = args.changedsince
        positions = [i for i in positions if selected.infos[i].modseq > since]
    if not positions:
        return None
    seen_changed: set[int] = set()
    if not selected.read_only and any(_sets_seen(item) for item in items):
        unseen = [selected.infos[i].uid for i in positions
                  if "\\Seen" not in selected.infos[i].flags
                  and selected.infos[i].uid not in selected.ghosts]
        if unseen:
            infos = await session.store.set_flags(session.account, selected.name, unseen,
                                                  frozenset({"\\Seen"}), FlagMode.ADD)
            selected.update(infos)
            seen_changed = {info.uid for info in infos}
    if not any(item.name in NEEDS_DATA for item in items):
        _fetch_metadata(session, selected, positions, items)
        return None
    metas = {}
    if ISearchableStore.providedBy(session.store) and _from_meta(items):
        metas = await session.store.message_meta(
            session.account, selected.name,
            [selected.infos[i].uid for i in positions
             if selected.infos[i].uid not in selected.ghosts])
        if session.selected is not selected:
            return None
    missing = False
    want_flags = any(item.name == "FLAGS" for item in items)
    for i in positions:
        info = selected.infos[i]
        if info.uid in selected.ghosts:
            missing = True
            continue
        meta = metas.get(info.uid)
        if meta is not None and meta.envelope and meta.bodystructure:
            parts = [_meta_item(item, info, meta) for item in items]
        else:
            # Not indexed (or the index could not parse it): the bytes decide.
            try:
                data = await session.store.read(session.account, selected.name, info.uid)
            except NoSuchMessage:
                missing = True
                continue
            if session.selected is not selected:
                return None
            message = _Message(data)
            parts = [_item(item, info, message) for item in items]
        if info.uid in seen_changed and not want_flags:
            parts.append(b"FLAGS " + wire.flags(info.flags))
            if session.condstore and not any(item.name == "MODSEQ" for item in items):
                parts.append(b"MODSEQ (%d)" % info.modseq)  # RFC 7162 §3.1.4
        session.write(b"* %d FETCH (%s)\r\n" % (i + 1, b" ".join(parts)))
        # A slow reader slows the response down rather than filling the server's memory.
        await session.output_room()
        if session.selected is not selected:
            return None
    if missing:
        # RFC 2180 §4.1.3 / RFC 5530: some messages were expunged by another session.
        return Reply("NO", "Some messages were expunged", EXPUNGEISSUED)
    return None


def _fetch_metadata(session, selected, positions, items) -> None:
    flag_cache = _FlagCache()
    infos = selected.infos
    names = [item.name for item in items]
    if names == ["UID", "FLAGS"] or names == ["FLAGS", "UID"]:
        # The synchronisation fetch every client sends: the tightest loop.
        flags_first = names[0] == "FLAGS"
        out = []
        for n, i in enumerate(positions):
            info = infos[i]
            if flags_first:
                out.append(b"* %d FETCH (FLAGS %s UID %d)\r\n"
                           % (i + 1, flag_cache[info.flags], info.uid))
            else:
                out.append(b"* %d FETCH (UID %d FLAGS %s)\r\n"
                           % (i + 1, info.uid, flag_cache[info.flags]))
            if len(out) >= BATCH:
                session.write(b"".join(out))
                out = []
        session.write(b"".join(out))
        return
    out = []
    for i in positions:
        info = infos[i]
        parts = []
        for name in names:
            if name == "FLAGS":
                parts.append(b"FLAGS " + flag_cache[info.flags])
            elif name == "UID":
                parts.append(b"UID %d" % info.uid)
            elif name == "INTERNALDATE":
                parts.append(b"INTERNALDATE " + wire.date_time(info.internal_date))
            elif name == "RFC822.SIZE":
                parts.append(b"RFC822.SIZE %d" % info.size)
            elif name == "MODSEQ":
                parts.append(b"MODSEQ (%d)" % info.modseq)
        out.append(b"* %d FETCH (%s)\r\n" % (i + 1, b" ".join(parts)))
        if len(out) >= BATCH:
            session.write(b"".join(out))
            out = []
    session.write(b"".join(out))


class _Message:
    """The bytes of one message, parsed on first need."""

    __slots__ = ("data", "_parsed")

    def __init__(self, data: bytes):
        self.data = data
        self._parsed = None

    @property
    def parsed(self) -> ParsedMessage:
        if self._parsed is None:
            self._parsed = ParsedMessage.parse(self.data)
        return self._parsed

    def section(self, section: Section) -> bytes:
        if not section.part and not section.text:
            return self.data
        return self.parsed.section(SectionSpec(section.part, section.text, section.fields))


def _partial(data: bytes, partial) -> tuple[bytes, bytes]:
    if partial is None:
        return data, b""
    start, length = partial
    return data[start:start + length], b"<%d>" % start


def _meta_item(item: FetchItem, info, meta) -> bytes:
    name = item.name
    if name == "ENVELOPE":
        return b"ENVELOPE " + meta.envelope
    if name == "BODYSTRUCTURE":
        return b"BODYSTRUCTURE " + meta.bodystructure
    if name == "BODY":
        return b"BODY " + meta.body
    return _item(item, info, None)


def _item(item: FetchItem, info, message: _Message | None) -> bytes:
    name = item.name
    if name == "FLAGS":
        return b"FLAGS " + wire.flags(info.flags)
    if name == "UID":
        return b"UID %d" % info.uid
    if name == "INTERNALDATE":
        return b"INTERNALDATE " + wire.date_time(info.internal_date)
    if name == "RFC822.SIZE":
        return b"RFC822.SIZE %d" % info.size
    if name == "MODSEQ":
        return b"MODSEQ (%d)" % info.modseq
    if name == "ENVELOPE":
        return b"ENVELOPE " + message.parsed.envelope()
    if name == "BODYSTRUCTURE":
        return b"BODYSTRUCTURE " + message.parsed.bodystructure(extended=True)
    if name == "RFC822":
        return b"RFC822 " + wire.literal(message.data)
    if name == "RFC822.HEADER":
        return b"RFC822.HEADER " + wire.literal(message.section(Section(text="HEADER")))
    if name == "RFC822.TEXT":
        return b"RFC822.TEXT " + wire.literal(message.section(Section(text="TEXT")))
    if name == "BODY":
        if item.section is None:
            return b"BODY " + message.parsed.bodystructure(extended=False)
        data, origin = _partial(message.section(item.section), item.partial)
        return b"BODY[" + item.section.wire() + b"]" + origin + b" " + wire.literal(data)
    if name in ("BINARY", "BINARY.SIZE"):
        try:
            data = message.parsed.binary(item.section.part)
        except UnknownEncoding:
            raise no("Unknown content transfer encoding", UNKNOWN_CTE) from None
        spec = item.section.wire()
        if name == "BINARY.SIZE":
            return b"BINARY.SIZE[" + spec + b"] %d" % len(data)
        data, origin = _partial(data, item.partial)
        encoded = wire.literal8(data) if b"\0" in data else wire.literal(data)
        return b"BINARY[" + spec + b"]" + origin + b" " + encoded
    raise ValueError(f"unknown fetch item {name}")
