"""Mailbox commands: SELECT, EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST,
LSUB and STATUS (RFC 3501 §6.3, RFC 5258, RFC 5819, RFC 6154, RFC 3348, RFC 8438)."""

from __future__ import annotations

from mailsuite.imap import wire
from mailsuite.imap.commands import AUTHENTICATED, command
from mailsuite.imap.responses import (
    HASCHILDREN,
    READ_ONLY,
    READ_WRITE,
    USEATTR,
    Reply,
    bad,
    failed,
    no,
)
from mailsuite.imap.quota import kib
from mailsuite.imap.selected import SelectedMailbox, missing_uids
from mailsuite.interfaces import HIERARCHY_SEPARATOR, SYSTEM_FLAGS, StoreError

SEP = HIERARCHY_SEPARATOR
# RFC 6154 §2
SPECIAL_USES = frozenset({"\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent",
                          "\\Trash"})
_SYSTEM_FLAG_LIST = wire.flags(SYSTEM_FLAGS)


# ------------------------------------------------------------------ SELECT / EXAMINE


@command("SELECT", "EXAMINE", states=AUTHENTICATED)
async def select(session, cmd):
    name, params = cmd.args
    read_only = cmd.name == "EXAMINE"
    if params.qresync is not None and not session.qresync:
        raise bad("QRESYNC is not enabled")  # RFC 7162 §3.2.5
    if session.selected is not None:
        # RFC 3501 §6.3.1: selecting ends the previous selection, even if this one fails;
        # RFC 7162 §3.2.11 / RFC 9051 §7.1: say so with [CLOSED].
        session.select(None)
        session.untagged("OK [CLOSED] Previous mailbox closed")
    status = await session.store.status(session.account, name)
    listing = await session.store.messages(session.account, name)
    selected = SelectedMailbox(
        status.name, uidvalidity=status.uidvalidity, uidnext=status.uidnext,
        highestmodseq=status.highestmodseq, messages=listing, read_only=read_only,
    )
    # Stores share one flag set among messages with the same flags: few distinct sets.
    keywords = set().union(*{info.flags for info in listing}) - SYSTEM_FLAGS
    first_unseen = next(
        (i + 1 for i, info in enumerate(listing) if "\\Seen" not in info.flags), 0)
    all_flags = wire.flags(SYSTEM_FLAGS | keywords)
    permanent = b"()" if read_only else wire.flags(SYSTEM_FLAGS | keywords | {"\\*"})
    out = [
        b"* FLAGS %s\r\n" % all_flags,
        b"* OK [PERMANENTFLAGS %s] Flags permitted\r\n" % permanent,
        b"* %d EXISTS\r\n" % len(listing),
    ]
    if not session.rev2:
        out.append(b"* 0 RECENT\r\n")  # RFC 9051 Appendix E: no \Recent in IMAP4rev2
    out += [
        b"* OK [UIDVALIDITY %d] UIDs valid\r\n" % status.uidvalidity,
        b"* OK [UIDNEXT %d] Predicted next UID\r\n" % status.uidnext,
        # RFC 7162 §3.1.2.1: every SELECT/EXAMINE of a store with mod-sequences says so.
        b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % status.highestmodseq,
    ]
    if first_unseen and not session.rev2:
        out.append(b"* OK [UNSEEN %d] First unseen\r\n" % first_unseen)
    if session.rev2:
        # RFC 9051 §6.3.2: a LIST response naming the mailbox, with accurate attributes.
        out.append(await _list_line(session, status.name))
    if params.condstore:
        session.enable_condstore()  # RFC 7162 §3.1.8
    session.write(b"".join(out))
    session.select(selected)
    qresync = params.qresync
    if qresync is not None and qresync.uidvalidity == status.uidvalidity:
        session.write(resync(selected, qresync))
    return Reply(text=f"{cmd.name} completed", code=READ_ONLY if read_only else READ_WRITE)


async def _list_line(session, name: str) -> bytes:
    infos = await session.store.mailboxes(session.account)
    attrs = []
    for info in infos:
        if info.name == name and info.special_use:
            attrs.append(info.special_use)
    children = any(info.name.startswith(name + SEP) for info in infos)
    attrs.append("\\HasChildren" if children else "\\HasNoChildren")
    return b'* LIST (%s) "/" %s\r\n' % (" ".join(attrs).encode("ascii"),
                                        wire.mailbox(name, utf8=session.utf8))


def resync(selected: SelectedMailbox, params) -> bytes:
    """
    RFC 7162 §3.2.5.1: what changed since the client's mod-sequence: VANISHED (EARLIER),
    then FETCH of changed messages.  Expunged UIDs are not kept by the store, so the
    vanished set is the client's known UIDs (default: every UID below UIDNEXT) that no
    longer exist, a superset the RFC allows; seq-match data is not needed for that.
    """
    if params.known_uids is not None:
        ranges = params.known_uids.resolve(max(selected.uidnext - 1, 1))
    else:
        ranges = [(1, selected.uidnext - 1)] if selected.uidnext > 1 else []
    out = []
    gone = missing_uids(ranges, selected.uids)
    if gone:
        out.append(b"* VANISHED (EARLIER) " + gone.encode("ascii") + b"\r\n")
    for i, info in enumerate(selected.infos):
        if info.modseq > params.modseq:
            out.append(b"* %d FETCH (UID %d FLAGS %s MODSEQ (%d))\r\n"
                       % (i + 1, info.uid, wire.flags(info.flags), info.modseq))
    return b"".join(out)


# ------------------------------------------------------------------ CREATE / DELETE / RENAME


@command("CREATE", states=AUTHENTICATED)
async def create(session, cmd):
    name, special_use = cmd.args
    # RFC 3501 §6.3.3: a trailing separator only declares the intent to have children.
    name = name.rstrip(SEP) or name
    if special_use is not None:
        match = {u.lower(): u for u in SPECIAL_USES}.get(special_use.lower())
        if match is None:
            raise no("Unknown special-use attribute", USEATTR)
        special_use = match
    if name.upper() == "INBOX":
        raise no("INBOX exists", "ALREADYEXISTS")
    await session.store.create_mailbox(session.account, name, special_use)


@command("DELETE", states=AUTHENTICATED)
async def delete(session, cmd):
    name = cmd.args
    if name == "INBOX":
        raise no("INBOX cannot be deleted", "CANNOT")
    if session.selected is not None and session.selected.name == name:
        session.select(None)
    try:
        await session.store.delete_mailbox(session.account, name)
    except StoreError as e:
        if type(e) is StoreError and await _has_children(session, name):
            # RFC 9051 §6.3.4: a mailbox with children is kept; the code says why.
            raise no("Mailbox has children", HASCHILDREN) from None
        raise failed(e) from None


async def _has_children(session, name: str) -> bool:
    infos = await session.store.mailboxes(session.account)
    return any(info.name.startswith(name + SEP) for info in infos)


@command("RENAME", states=AUTHENTICATED)
async def rename(session, cmd):
    old, new = cmd.args
    new = new.rstrip(SEP) or new
    await session.store.rename_mailbox(session.account, old, new)
    if session.rev2:
        # RFC 9051 §6.3.6 / §7.3.1: a LIST response with the new name and OLDNAME.
        line = await _list_line(session, new)
        oldname = b' ("OLDNAME" (%s))\r\n' % wire.mailbox(old, utf8=session.utf8)
        session.write(line[:-2] + oldname)


@command("SUBSCRIBE", "UNSUBSCRIBE", states=AUTHENTICATED)
async def subscribe(session, cmd):
    await session.store.set_subscribed(session.account, cmd.args, cmd.name == "SUBSCRIBE")


# ------------------------------------------------------------------ LIST / LSUB


class MailboxPattern:
    """
    A LIST/LSUB pattern (RFC 3501 §6.3.8): "*" matches anything, "%" anything but the
    separator.  Matching runs the pattern's automaton over all positions at once (a bit
    set), one step per character of the name, so a pattern like "*%*%*%...x" costs time
    linear in the name's length where backtracking would be exponential.
    """

    def __init__(self, pattern: str):
        tokens: list[str] = []
        for c in pattern:
            if c in "*%" and tokens and tokens[-1] in "*%":
                # A run of wildcards matches what its widest member matches.
                tokens[-1] = "*" if "*" in (c, tokens[-1]) else "%"
            else:
                tokens.append(c)
        # Bit i stands for "the first i tokens are matched".
        self._accept = 1 << len(tokens)
        self._star = percent = 0
        self._literal: dict[str, int] = {}
        for i, token in enumerate(tokens):
            if token == "*":
                self._star |= 1 << i
            elif token == "%":
                percent |= 1 << i
            else:
                self._literal[token] = self._literal.get(token, 0) | 1 << i
        self._wild = self._star | percent
        # Each literal matches one character: a shorter name cannot match.  This also keeps
        # the bit sets no longer than about twice the name.
        self._min_length = len(tokens) - bin(self._wild).count("1")
        #: Characters looked at so far, over all names: the cost of matching.
        self.steps = 0

    def _closure(self, states: int) -> int:
        # A wildcard may match nothing: step over it (runs were merged, so one step does).
        return states | (states & self._wild) << 1

    def match(self, name: str) -> bool:
        if len(name) < self._min_length:
            return False
        states = self._closure(1)
        for step, c in enumerate(name, 1):
            stay = self._star if c == SEP else self._wild
            states = (states & stay) | (states & self._literal.get(c, 0)) << 1
            if not states:
                self.steps += step
                return False
            states = self._closure(states)
        self.steps += len(name)
        return bool(states & self._accept)


def _canonical(pattern: str) -> str:
    first, sep, rest = pattern.partition(SEP)
    if first.upper() == "INBOX":
        return "INBOX" + sep + rest
    return pattern


def _full_pattern(reference: str, pattern: str) -> str:
    if pattern.startswith(SEP) or not reference:
        return pattern
    if reference.endswith(SEP):
        return reference + pattern
    return reference + SEP + pattern if pattern else reference


@command("LIST", "LSUB", states=AUTHENTICATED)
async def list_(session, cmd):
    args = cmd.args
    lsub = cmd.name == "LSUB"
    if not lsub and len(args.patterns) == 1 and args.patterns[0] == "" and not args.extended:
        # RFC 3501 §6.3.8: an empty pattern asks for the separator and the root.
        session.write(b'* LIST (\\Noselect) "/" ""\r\n')
        return None
    infos = await session.store.mailboxes(session.account)
    by_name = {info.name: info for info in infos}
    names_with_children = set()
    implied = set()
    for name in by_name:
        parts = name.split(SEP)
        for i in range(1, len(parts)):
            parent = SEP.join(parts[:i])
            names_with_children.add(parent)
            if parent not in by_name:
                implied.add(parent)
    matchers = [MailboxPattern(_canonical(_full_pattern(args.reference, p)))
                for p in args.patterns]
    selection = args.selection
    returns = args.returns
    show_subscribed = lsub or "SUBSCRIBED" in selection or "SUBSCRIBED" in returns
    out: list[bytes] = []
    for name in sorted(set(by_name) | implied, key=lambda n: (n != "INBOX", n)):
        if not any(m.match(name) for m in matchers):
            continue
        info = by_name.get(name)
        attrs = []
        if info is None:
            if "SUBSCRIBED" in selection or "SPECIAL-USE" in selection:
                continue
            # RFC 9051 §7.3.1: \NonExistent (implying \Noselect) for IMAP4rev2 clients.
            attrs.append("\\NonExistent" if args.extended or session.rev2 else "\\Noselect")
        else:
            if "SUBSCRIBED" in selection and not info.subscribed:
                continue
            if "SPECIAL-USE" in selection and not info.special_use:
                continue
            if lsub and not info.subscribed:
                continue
            if show_subscribed and info.subscribed and not lsub:
                attrs.append("\\Subscribed")
            if info.special_use and not lsub:
                attrs.append(info.special_use)
        if not lsub:
            attrs.append("\\HasChildren" if name in names_with_children else "\\HasNoChildren")
        keyword = b"LSUB" if lsub else b"LIST"
        out.append(b"* %s (%s) \"/\" %s\r\n" % (
            keyword, " ".join(attrs).encode("ascii"), wire.mailbox(name, utf8=session.utf8)))
        if "STATUS" in returns and info is not None:
            # RFC 5819 §2: the STATUS follows its LIST response.
            out.append(await _status_line(session, name, args.status_items))
    session.write(b"".join(out))


# ------------------------------------------------------------------ STATUS


async def _status_line(session, name: str, items) -> bytes:
    status = await session.store.status(session.account, name)
    deleted = deleted_size = 0
    if "DELETED" in items or "DELETED-STORAGE" in items:
        listing = await session.store.messages(session.account, name)
        deleted = sum(1 for m in listing if "\\Deleted" in m.flags)
        deleted_size = sum(m.size for m in listing if "\\Deleted" in m.flags)
    values = {
        "MESSAGES": status.messages,
        "RECENT": 0,
        "UIDNEXT": status.uidnext,
        "UIDVALIDITY": status.uidvalidity,
        "UNSEEN": status.unseen,
        "SIZE": status.size,
        "HIGHESTMODSEQ": status.highestmodseq,
        "DELETED": deleted,
        "DELETED-STORAGE": kib(deleted_size),  # RFC 9208 §4.2.2
    }
    pairs = " ".join(f"{item} {values[item]}" for item in items)
    return b"* STATUS %s (%s)\r\n" % (wire.mailbox(status.name, utf8=session.utf8),
                                      pairs.encode("ascii"))


@command("STATUS", states=AUTHENTICATED)
async def status(session, cmd):
    name, items = cmd.args
    if "HIGHESTMODSEQ" in items:
        session.enable_condstore()  # RFC 7162 §3.1: a CONDSTORE-enabling command
    session.write(await _status_line(session, name, items))

