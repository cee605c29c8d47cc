"""
The selected mailbox (RFC 3501 §2.3.1.2, §7.4.1): message sequence numbers ↔ UIDs with a
snapshot of each message's metadata, and the untagged EXISTS / EXPUNGE / FETCH FLAGS that
tell the client about changes made elsewhere.

The snapshot changes only in ``merge()`` (the messages changed since the last MODSEQ this
view has seen), ``sync()`` (a fresh full listing, the fallback) and in the session's own
commands, so sequence numbers never shift while a command runs.  Messages
expunged elsewhere stay in place ("ghosts") until an EXPUNGE response may be sent.
"""

from __future__ import annotations

import enum
from bisect import bisect_left, bisect_right

from mailsuite.imap import wire
from mailsuite.imap.parser import SequenceSet
from mailsuite.interfaces import Change, ChangeKind, MessageInfo


class Need(enum.IntEnum):
    """What the store must be asked before the snapshot is current again."""

    NOTHING = 0
    CHANGES = 1  # messages(changed_since=seen_modseq)
    LISTING = 2  # the whole mailbox


class SelectedMailbox:
    def __init__(self, name: str, *, uidvalidity: int, uidnext: int, highestmodseq: int,
                 messages: list[MessageInfo], read_only: bool):
        self.name = name
        self.uidvalidity = uidvalidity
        self.uidnext = uidnext
        self.highestmodseq = highestmodseq
        # Every change up to this MODSEQ is in the snapshot (apart from expunges, which the
        # feed tells by UID); the next incremental listing starts after it.
        self.seen_modseq = highestmodseq
        self.read_only = read_only
        self.infos: list[MessageInfo] = list(messages)
        self.uids: list[int] = [m.uid for m in self.infos]
        self.ghosts: set[int] = set()
        self.pending: list[Change] = []  # store changes not yet looked at
        self.saved: list[int] = []  # RFC 5182 "$": UIDs of the last saved search
        self.condstore = False  # RFC 7162 §3.1.4: MODSEQ in unsolicited FETCH responses
        self.qresync = False  # RFC 7162 §3.2.10: VANISHED instead of EXPUNGE

    @property
    def exists(self) -> int:
        return len(self.infos)

    # -- addressing

    def positions(self, sequence: SequenceSet, *, uid: bool) -> list[int]:
        """0-based positions addressed by a sequence set of numbers or (``uid``) UIDs."""
        if sequence.saved:
            return self._positions_of_uids(self.saved)
        if not uid:
            return sequence.positions(len(self.infos))
        uids = self.uids
        if not uids:
            return []
        picked: list[int] = []
        ranges = sequence.resolve(uids[-1])
        for low, high in ranges:
            picked.extend(range(bisect_left(uids, low), bisect_right(uids, high)))
        if len(ranges) > 1:
            picked = sorted(set(picked))
        return picked

    def _positions_of_uids(self, wanted) -> list[int]:
        uids = self.uids
        out = []
        for uid in sorted(set(wanted)):
            i = bisect_left(uids, uid)
            if i < len(uids) and uids[i] == uid:
                out.append(i)
        return out

    def position(self, uid: int) -> int | None:
        i = bisect_left(self.uids, uid)
        if i < len(self.uids) and self.uids[i] == uid:
            return i
        return None

    # -- own changes

    def update(self, infos) -> list[int]:
        """Take fresh metadata for messages (after STORE); their positions."""
        changed = []
        fresh = set()
        for info in infos:
            i = self.position(info.uid)
            if i is not None:
                self.infos[i] = info
                changed.append(i)
                if info.modseq > self.highestmodseq:
                    self.highestmodseq = info.modseq
            if info.modseq > self.seen_modseq:
                fresh.add(info.modseq)
        # One store call takes one MODSEQ; the very next one means nobody else changed
        # anything in between, so later listings may start after it.
        if fresh == {self.seen_modseq + 1}:
            self.seen_modseq += 1
        return changed

    def remove(self, uids) -> list[bytes]:
        """Remove messages this session expunged; their untagged EXPUNGE responses."""
        self.ghosts.update(u for u in uids if self.position(u) is not None)
        return self.flush_expunges()

    # -- changes made elsewhere

    def note(self, change: Change) -> None:
        self.pending.append(change)

    def take_pending(self) -> Need:
        """
        Fold the noted changes into the snapshot as far as they tell enough: expunged UIDs
        become ghosts at once.  What else the store must be asked: nothing, the messages
        changed since ``seen_modseq``, or (when the feed no longer matches the snapshot)
        the whole listing.  The session's own STORE, EXPUNGE and MOVE come back through the
        feed too; those need nothing.
        """
        pending, self.pending = self.pending, []
        need = Need.NOTHING
        last = self.uids[-1] if self.uids else 0
        for change in pending:
            kind = change.kind
            if kind is ChangeKind.EXPUNGED:
                for uid in change.uids:
                    if self.position(uid) is not None:
                        self.ghosts.add(uid)
            elif kind is ChangeKind.NEW:
                for uid in change.uids:
                    if uid > last:
                        need = max(need, Need.CHANGES)
                    elif self.position(uid) is None:
                        return Need.LISTING  # a UID reused: the mailbox was recreated
            elif kind is ChangeKind.FLAGS:
                for uid in change.uids:
                    i = self.position(uid)
                    if i is not None and self.infos[i].modseq < change.modseq:
                        need = max(need, Need.CHANGES)
            elif kind is ChangeKind.MAILBOXES:
                return Need.LISTING
        return need

    def merge(self, changed: list[MessageInfo], *, allow_expunge: bool) -> list[bytes] | None:
        """
        Take the messages changed since ``seen_modseq`` (in UID order); the untagged
        responses to send, or None when they do not fit the snapshot (a full listing is
        needed then).
        """
        last = self.uids[-1] if self.uids else 0
        updates = []
        added = []
        for info in changed:
            if info.uid > last:
                added.append(info)
                continue
            i = self.position(info.uid)
            if i is None:
                return None
            updates.append((i, info))
        flagged = []
        infos = self.infos
        for i, info in updates:
            old = infos[i]
            if info.uid in self.ghosts:
                continue
            infos[i] = info
            if info.flags != old.flags:
                flagged.append(info)
            if info.modseq > self.highestmodseq:
                self.highestmodseq = info.modseq
        for info in changed:
            if info.modseq > self.seen_modseq:
                self.seen_modseq = info.modseq
        return self._responses(flagged, added, allow_expunge=allow_expunge)

    def sync(self, listing: list[MessageInfo], *, allow_expunge: bool,
             uidnext: int | None = None) -> list[bytes]:
        """
        Compare a fresh listing with the snapshot; the untagged responses to send.
        New messages are appended (EXISTS), changed flags reported (FETCH), vanished
        messages become ghosts and are reported only when ``allow_expunge``.
        """
        current = {m.uid: m for m in listing}
        infos = self.infos
        flagged = []
        for i, old in enumerate(infos):
            new = current.get(old.uid)
            if new is None:
                self.ghosts.add(old.uid)
                continue
            if new.flags != old.flags or new.modseq != old.modseq:
                infos[i] = new
                if new.flags != old.flags:
                    flagged.append(new)
            if new.modseq > self.highestmodseq:
                self.highestmodseq = new.modseq
        for info in listing:
            if info.modseq > self.seen_modseq:
                self.seen_modseq = info.modseq
        last = self.uids[-1] if self.uids else 0
        added = [m for m in listing if m.uid > last]
        out = self._responses(flagged, added, allow_expunge=allow_expunge)
        if uidnext is not None:
            self.uidnext = max(self.uidnext, uidnext)
        return out

    def _responses(self, flagged, added, *, allow_expunge: bool) -> list[bytes]:
        # RFC 3501 §7.4.1: the EXPUNGEs go first, so the numbers after them are current.
        out = self.flush_expunges() if allow_expunge else []
        expunged = bool(out)
        for info in flagged:
            out.append(self.flags_response(self.position(info.uid), info))
        if added:
            self.infos.extend(added)
            self.uids.extend(m.uid for m in added)
            self.uidnext = max(self.uidnext, added[-1].uid + 1)
            self.highestmodseq = max(self.highestmodseq, max(m.modseq for m in added))
        if added or expunged:
            out.append(b"* %d EXISTS\r\n" % len(self.infos))
        return out

    def flags_response(self, i: int, info: MessageInfo) -> bytes:
        """The FETCH telling a flag change; with MODSEQ once CONDSTORE is on (RFC 7162 §3.1.4)."""
        if self.condstore:
            return b"* %d FETCH (UID %d FLAGS %s MODSEQ (%d))\r\n" % (
                i + 1, info.uid, wire.flags(info.flags), info.modseq)
        return b"* %d FETCH (UID %d FLAGS %s)\r\n" % (i + 1, info.uid, wire.flags(info.flags))

    def flush_expunges(self) -> list[bytes]:
        """
        Drop ghosts; their EXPUNGE responses in order (each number valid when sent), or one
        VANISHED response once QRESYNC is enabled (RFC 7162 §3.2.10).
        """
        if not self.ghosts:
            return []
        if self.qresync:
            gone = sorted(self.ghosts)
            self.infos = [m for m in self.infos if m.uid not in self.ghosts]
            self.uids = [m.uid for m in self.infos]
            self.ghosts.clear()
            return [b"* VANISHED " + uid_set(gone).encode("ascii") + b"\r\n"]
        out = []
        kept_infos = []
        removed = 0
        for i, info in enumerate(self.infos):
            if info.uid in self.ghosts:
                out.append(b"* %d EXPUNGE\r\n" % (i + 1 - removed))
                removed += 1
            else:
                kept_infos.append(info)
        self.infos = kept_infos
        self.uids = [m.uid for m in kept_infos]
        self.ghosts.clear()
        return out


def uid_set(uids) -> str:
    """A compact sequence set for ascending numbers: "1:3,7"."""
    out = []
    start = prev = None
    for uid in uids:
        if start is None:
            start = prev = uid
        elif uid == prev + 1:
            prev = uid
        else:
            out.append(f"{start}:{prev}" if start != prev else str(start))
            start = prev = uid
    if start is not None:
        out.append(f"{start}:{prev}" if start != prev else str(start))
    return ",".join(out)


def missing_uids(ranges, existing: list[int]) -> str:
    """
    The UIDs within ``ranges`` (ordered (low, high) pairs) that are not in ``existing``
    (ascending), as a compact set; computed range by range, so a wide range costs no more
    than the messages it holds.
    """
    pieces = []
    for low, high in _merge(ranges):
        cursor = low
        for uid in existing[bisect_left(existing, low):bisect_right(existing, high)]:
            if uid > cursor:
                pieces.append((cursor, uid - 1))
            cursor = uid + 1
        if cursor <= high:
            pieces.append((cursor, high))
    return ",".join(f"{a}:{b}" if a != b else str(a) for a, b in pieces)


def _merge(ranges):
    merged: list[list[int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    return merged
