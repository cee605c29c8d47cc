"""Message commands on the selected mailbox: CHECK, CLOSE, UNSELECT, EXPUNGE, UID EXPUNGE,
STORE, COPY and MOVE (RFC 3501 §6.4, RFC 3691, RFC 4315, RFC 6851)."""

from __future__ import annotations

from mailsuite.imap.commands import SELECTED, command
from mailsuite.imap.responses import (
    READ_ONLY,
    Reply,
    bad,
    no,
    failed,
)
from mailsuite.imap.selected import Need, uid_set
from mailsuite.interfaces import FlagMode, StoreError

_MODES = {"set": FlagMode.SET, "add": FlagMode.ADD, "remove": FlagMode.REMOVE}


def _writable(session):
    selected = session.selected
    if selected.read_only:
        raise no("Mailbox is read-only", READ_ONLY)
    return selected


def addressed_uids(session, sequence, *, uid: bool) -> list[int]:
    """UIDs (ascending) addressed by a sequence set, ghosts left out."""
    selected = session.selected
    infos = selected.infos
    ghosts = selected.ghosts
    uids = [infos[i].uid for i in selected.positions(sequence, uid=uid)]
    if ghosts:
        uids = [u for u in uids if u not in ghosts]
    return uids


@command("CHECK", states=SELECTED)
async def check(session, cmd):
    # Every change is durable when the store answers; nothing to do (RFC 3501 §6.4.1).
    return None


@command("UNSELECT", states=SELECTED)
async def unselect(session, cmd):
    session.select(None)


@command("CLOSE", states=SELECTED)
async def close(session, cmd):
    selected = session.selected
    session.select(None)
    if not selected.read_only:
        # RFC 3501 §6.4.2: expunge silently.
        current = await _current_messages(session, selected)
        deleted = [m.uid for m in current if "\\Deleted" in m.flags]
        if deleted:
            await session.store.expunge(session.account, selected.name, deleted)


async def _current_messages(session, selected):
    """
    The selected mailbox's messages as they are now, without telling the client (CLOSE
    sends no untagged responses): the snapshot with what changed since it; a full listing
    only when the change feed no longer fits the snapshot.
    """
    need = selected.take_pending()
    if need is Need.LISTING:
        return await session.store.messages(session.account, selected.name)
    ghosts = selected.ghosts
    current = {m.uid: m for m in selected.infos if m.uid not in ghosts}
    if need is Need.CHANGES:
        changed = await session.store.messages(session.account, selected.name,
                                               changed_since=selected.seen_modseq)
        current.update((m.uid, m) for m in changed if m.uid not in ghosts)
    return list(current.values())


@command("EXPUNGE", "UID EXPUNGE", states=SELECTED)
async def expunge(session, cmd):
    selected = _writable(session)
    # Brings the snapshot up to date (flags set elsewhere), so it alone tells what is
    # \Deleted; the store is asked only to expunge.
    await session.sync(allow_expunge=True)
    if session.selected is not selected:
        return None
    infos = selected.infos
    if cmd.name == "UID EXPUNGE":
        # RFC 4315 §2.1: only the listed UIDs that are marked \Deleted.
        candidates = (infos[i] for i in selected.positions(cmd.args, uid=True))
    else:
        candidates = iter(infos)
    ghosts = selected.ghosts
    deleted = [m.uid for m in candidates
               if "\\Deleted" in m.flags and m.uid not in ghosts]
    if deleted:
        removed = await session.store.expunge(session.account, selected.name, deleted)
        if session.selected is selected:
            session.write(b"".join(selected.remove(removed)))


@command("STORE", "UID STORE", states=SELECTED, allow_expunge=False)
async def store(session, cmd):
    args = cmd.args
    selected = _writable(session)
    flags = set()
    for flag in args.flags:
        if flag.lower() in ("\\recent", "\\*"):
            raise bad("Invalid flag")
        flags.add(flag)
    by_uid = cmd.name == "UID STORE"
    uids = addressed_uids(session, args.sequence, uid=by_uid)
    reply = None
    if args.unchangedsince is not None:
        session.enable_condstore()  # RFC 7162 §3.1
        uids, modified = await _unchanged_since(session, uids, args.unchangedsince)
        if modified:
            # RFC 7162 §3.1.3: [MODIFIED set]: UIDs for UID STORE, else numbers.
            numbers = modified if by_uid else [selected.position(u) + 1 for u in modified]
            reply = Reply(text="Conditional STORE failed for some messages",
                          code="MODIFIED " + uid_set(sorted(numbers)))
    if not uids:
        return reply
    infos = await session.store.set_flags(session.account, selected.name, uids,
                                          frozenset(flags), _MODES[args.mode])
    positions = selected.update(infos)
    if args.silent:
        if not session.condstore:
            return reply
        # RFC 7162 §3.1.3: .SILENT still reports the new mod-sequences.
        out = [b"* %d FETCH (%sMODSEQ (%d))\r\n"
               % (i + 1, b"UID %d " % selected.infos[i].uid if by_uid else b"",
                  selected.infos[i].modseq) for i in positions]
        session.write(b"".join(out))
        return reply
    out = [selected.flags_response(i, selected.infos[i]) for i in positions]
    session.write(b"".join(out))
    return reply


async def _unchanged_since(session, uids, modseq: int):
    """
    Split UIDs into those whose mod-sequence is at most ``modseq`` and the others; the
    store lists only the messages changed since ``modseq`` (RFC 7162 §3.1.3).
    """
    selected = session.selected
    changed = await session.store.messages(session.account, selected.name,
                                           changed_since=modseq)
    newer = {m.uid for m in changed if m.modseq > modseq}
    keep = [u for u in uids if u not in newer]
    modified = [u for u in uids if u in newer]
    return keep, modified


async def _copy(session, cmd, *, move: bool):
    sequence, destination = cmd.args
    selected = _writable(session) if move else session.selected
    uid = cmd.name.startswith("UID ")
    uids = addressed_uids(session, sequence, uid=uid)
    try:
        target = await session.store.status(session.account, destination)
        if not uids:
            return Reply(text="No messages")
        if move:
            mapping = await session.store.move(session.account, selected.name, uids,
                                               destination)
        else:
            mapping = await session.store.copy(session.account, selected.name, uids,
                                               destination)
    except StoreError as e:
        raise failed(e, target=True) from None
    sources = sorted(mapping)
    # RFC 4315 §3: COPYUID uidvalidity source-set destination-set, in matching order.
    code = None
    if sources:
        code = "COPYUID %d %s %s" % (
            target.uidvalidity, uid_set(sources), ",".join(str(mapping[s]) for s in sources))
    if not move:
        return Reply(code=code)
    # RFC 6851 §4.3: COPYUID goes in an untagged OK before the EXPUNGEs.
    if code:
        session.untagged(f"OK [{code}] Moved")
    if session.selected is selected:
        session.write(b"".join(selected.remove(sources)))
    return Reply()


@command("COPY", "UID COPY", states=SELECTED)
async def copy(session, cmd):
    return await _copy(session, cmd, move=False)


@command("MOVE", "UID MOVE", states=SELECTED)
async def move(session, cmd):
    return await _copy(session, cmd, move=True)
