"""
MemoryMailStore: an in-memory IMailStore for tests of the protocols.

It keeps the semantics of the real backends (it runs the same conformance suite) and returns
already-fired Deferreds, so tests stay synchronous.  Nothing survives the object.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime

from mailsuite.interfaces import (
    DEFAULT_MAILBOXES,
    Change,
    ChangeKind,
    FlagMode,
    MailboxExists,
    MailboxInfo,
    MailboxStatus,
    MessageInfo,
    NoSuchMailbox,
    NoSuchMessage,
)
from mailsuite.store.base import (
    StoreCore,
    StoreFrontend,
    UidValidityCounter,
    append_arguments,
    check_quota,
    flag_updates,
    inline_runner,
    present_uids,
)
from mailsuite.store.search import Candidate, IndexEntry, evaluate, index_entry
from mailsuite.store.names import (
    INBOX,
    check_deletable,
    normalize_flags,
    rename_moves,
    sorted_mailboxes,
    validate_account,
    validate_mailbox_name,
)


@dataclass
class _Message:
    flags: frozenset
    modseq: int
    internal_date: datetime
    data: bytes
    # Parsed once when stored; copies share it with their source.
    entry: IndexEntry | None = None

    def info(self, uid):
        return MessageInfo(uid, self.flags, self.modseq, self.internal_date, len(self.data))


@dataclass
class _Mailbox:
    uidvalidity: int
    special_use: str | None
    subscribed: bool = True
    uidnext: int = 1
    highestmodseq: int = 0
    messages: dict = field(default_factory=dict)


class MemoryStoreCore(StoreCore):
    """The synchronous core of MemoryMailStore (see mailsuite.store.base)."""

    def __init__(self):
        self._accounts: dict[str, dict[str, _Mailbox]] = {}
        self._uidvalidity = UidValidityCounter()
        self._lock = threading.RLock()

    # -- helpers

    def _account(self, account):
        self._check_open()
        account = validate_account(account)
        boxes = self._accounts.get(account)
        if boxes is None:
            boxes = self._accounts[account] = {}
            for name, special_use in DEFAULT_MAILBOXES:
                boxes[name] = _Mailbox(self._uidvalidity.next(), special_use)
        return account, boxes

    def _mailbox(self, account, name):
        account, boxes = self._account(account)
        name = validate_mailbox_name(name)
        box = boxes.get(name)
        if box is None:
            raise NoSuchMailbox(f"no mailbox {name!r}")
        return account, name, box

    @staticmethod
    def _bump(box):
        box.highestmodseq += 1
        return box.highestmodseq

    # -- IMailStore, synchronously

    def ensure_account(self, account):
        with self._lock:
            self._account(account)
            return None, []

    def mailboxes(self, account):
        with self._lock:
            _, boxes = self._account(account)
            infos = [
                MailboxInfo(name, box.uidvalidity, box.special_use, box.subscribed)
                for name, box in boxes.items()
            ]
            return sorted_mailboxes(infos), []

    def create_mailbox(self, account, name, special_use=None):
        with self._lock:
            account, boxes = self._account(account)
            name = validate_mailbox_name(name)
            if name in boxes:
                raise MailboxExists(f"mailbox {name!r} exists")
            box = boxes[name] = _Mailbox(self._uidvalidity.next(), special_use)
            info = MailboxInfo(name, box.uidvalidity, special_use)
            return info, [Change(ChangeKind.MAILBOXES, account, name)]

    def delete_mailbox(self, account, name):
        with self._lock:
            account, name, _ = self._mailbox(account, name)
            boxes = self._accounts[account]
            check_deletable(boxes, name)
            del boxes[name]
            return None, [Change(ChangeKind.MAILBOXES, account, name)]

    def rename_mailbox(self, account, old, new):
        with self._lock:
            account, old, box = self._mailbox(account, old)
            boxes = self._accounts[account]
            new = validate_mailbox_name(new)
            moves = rename_moves(boxes, old, new)
            if old == INBOX:
                # RFC 3501 §6.3.5: the messages move, INBOX stays (empty), children stay.
                boxes[new] = box
                boxes[INBOX] = _Mailbox(self._uidvalidity.next(), None)
                return None, [Change(ChangeKind.MAILBOXES, account, new)]
            for source, target in moves.items():
                boxes[target] = boxes.pop(source)
            return None, [Change(ChangeKind.MAILBOXES, account, new)]

    def set_subscribed(self, account, name, subscribed):
        with self._lock:
            _, _, box = self._mailbox(account, name)
            box.subscribed = bool(subscribed)
            return None, []

    def status(self, account, name):
        with self._lock:
            _, name, box = self._mailbox(account, name)
            msgs = box.messages.values()
            return (
                MailboxStatus(
                    name=name,
                    uidvalidity=box.uidvalidity,
                    uidnext=box.uidnext,
                    highestmodseq=box.highestmodseq,
                    messages=len(box.messages),
                    unseen=sum(1 for m in msgs if "\\Seen" not in m.flags),
                    size=sum(len(m.data) for m in msgs),
                ),
                [],
            )

    def _used(self, account) -> int:
        _, boxes = self._account(account)
        return sum(len(m.data) for box in boxes.values() for m in box.messages.values())

    def usage(self, account):
        with self._lock:
            return self._used(account), []

    def append(self, account, name, data, flags=frozenset(), internal_date=None, *, limit=None):
        data, flags, internal_date = append_arguments(data, flags, internal_date)
        with self._lock:
            account, name, box = self._mailbox(account, name)
            check_quota(self._used(account), len(data), limit)
            uid = box.uidnext
            box.uidnext += 1
            msg = box.messages[uid] = _Message(
                flags, self._bump(box), internal_date, data, index_entry(data)
            )
            change = Change(ChangeKind.NEW, account, name, (uid,), msg.modseq)
            return msg.info(uid), [change]

    def messages(self, account, name, changed_since=0):
        with self._lock:
            _, _, box = self._mailbox(account, name)
            return [m.info(uid) for uid, m in sorted(box.messages.items())
                    if m.modseq > changed_since], []

    def read(self, account, name, uid):
        with self._lock:
            _, _, box = self._mailbox(account, name)
            msg = box.messages.get(uid)
            if msg is None:
                raise NoSuchMessage(f"no message with UID {uid}")
            return msg.data, []

    def set_flags(self, account, name, uids, flags, mode=FlagMode.SET):
        flags = normalize_flags(flags)
        with self._lock:
            account, name, box = self._mailbox(account, name)
            present = present_uids(uids, box.messages)
            changed = flag_updates(
                ((uid, box.messages[uid].flags) for uid in present), flags, mode
            )
            changes = []
            if changed:
                modseq = self._bump(box)
                for uid, new in changed.items():
                    box.messages[uid].flags = new
                    box.messages[uid].modseq = modseq
                changes.append(Change(ChangeKind.FLAGS, account, name, tuple(changed), modseq))
            return [box.messages[uid].info(uid) for uid in present], changes

    def _copy(self, account, name, uids, destination, *, remove, limit):
        with self._lock:
            return self._copy_locked(account, name, uids, destination, remove=remove,
                                     limit=limit)

    def _copy_locked(self, account, name, uids, destination, *, remove, limit):
        account, name, box = self._mailbox(account, name)
        _, destination, target = self._mailbox(account, destination)
        present = present_uids(uids, box.messages)
        mapping = {}
        changes = []
        if not present:
            return mapping, changes
        check_quota(
            self._used(account), sum(len(box.messages[uid].data) for uid in present), limit
        )
        modseq = self._bump(target)
        for uid in present:
            msg = box.messages[uid]
            new_uid = target.uidnext
            target.uidnext += 1
            target.messages[new_uid] = _Message(
                msg.flags, modseq, msg.internal_date, msg.data, msg.entry
            )
            mapping[uid] = new_uid
        changes.append(
            Change(ChangeKind.NEW, account, destination, tuple(mapping.values()), modseq)
        )
        if remove:
            source_modseq = self._bump(box)
            for uid in present:
                del box.messages[uid]
            changes.append(
                Change(ChangeKind.EXPUNGED, account, name, tuple(present), source_modseq)
            )
        return mapping, changes

    def expunge(self, account, name, uids):
        with self._lock:
            account, name, box = self._mailbox(account, name)
            present = present_uids(uids, box.messages)
            if not present:
                return [], []
            modseq = self._bump(box)
            for uid in present:
                del box.messages[uid]
            return present, [Change(ChangeKind.EXPUNGED, account, name, tuple(present), modseq)]

    def search(self, account, name, query):
        with self._lock:
            _, _, box = self._mailbox(account, name)
            candidates = [
                Candidate(m.info(uid), meta=lambda m=m: m.entry.meta, entry=lambda m=m: m.entry)
                for uid, m in box.messages.items()
            ]
            return evaluate(query, candidates), []

    def message_meta(self, account, name, uids):
        with self._lock:
            _, _, box = self._mailbox(account, name)
            present = present_uids(uids, box.messages)
            return {uid: box.messages[uid].entry.meta for uid in present}, []

    def sort_keys(self, account, name, uids):
        with self._lock:
            _, _, box = self._mailbox(account, name)
            present = present_uids(uids, box.messages)
            return {uid: box.messages[uid].entry.keys for uid in present}, []


class MemoryMailStore(StoreFrontend):
    """An IMailStore held in memory; every Deferred it returns has already fired."""

    def __init__(self):
        super().__init__(MemoryStoreCore(), runner=inline_runner)
