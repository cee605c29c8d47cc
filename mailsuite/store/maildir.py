"""
The ``maildir`` store backend: Maildir++ as Dovecot, Courier and mutt read it.

Layout of ``path/<account>/Maildir``:
  cur/ new/ tmp/                 INBOX
  .Name/ .Parent.Child/          other mailboxes (levels in IMAP modified UTF-7), each with
                                 cur/ new/ tmp/ and an empty ``maildirfolder`` file
  subscriptions                  subscribed mailboxes, one per line
  <folder>/dovecot-uidlist       "3 V<uidvalidity> N<nextuid>" then "<uid> :<basename>" lines
  <folder>/dovecot-keywords      "<index> <keyword>": keyword letters a-z of the ":2," info
  <folder>/mailsuite-index.sqlite  what Maildir cannot hold: MODSEQ per UID, special use

The Maildir is the truth for messages and flags (the ":2," info of file names); the internal
date is the file's mtime.  Files another program adds, removes or renames are noticed on the
next call (a rescan when a directory's mtime changes) and get new UIDs.

Every change costs the same in a large folder as in a small one: new UIDs are appended to the
uidlist (rewritten only once it holds many expunged lines), the index writes only the rows
that change, and this process's own writes do not trigger a rescan.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid

from twisted.logger import Logger

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
    StoreUnavailable,
)
from mailsuite.store import files
from mailsuite.store.base import (
    StoreCore,
    StoreFrontend,
    append_arguments,
    check_quota,
    flag_updates,
    present_uids,
)
from mailsuite.store.search import index_entry
from mailsuite.store.maildir_files import (
    KEYWORDS,
    SUBSCRIPTIONS,
    UIDLIST,
    FolderIndex,
    append_uidlist,
    folder_dirname,
    folder_name,
    read_keywords,
    read_subscriptions,
    read_uidlist,
    size_from_base,
    split_filename,
    subscription_line,
    unique_basename,
    write_keywords,
    write_subscriptions,
    write_uidlist,
)
from mailsuite.store.maildir_search import (
    copied_meta,
    folder_meta,
    folder_sort_keys,
    search_folder,
)
from mailsuite.store.maildir_folder import (
    DEFAULT_SPECIAL_USE,
    Account,
    AccountLock,
    Changing,
    Entry,
    Folder,
    to_ns,
)
from mailsuite.store.names import (
    INBOX,
    check_deletable,
    normalize_flags,
    rename_moves,
    sorted_mailboxes,
    validate_account,
    validate_mailbox_name,
)

__all__ = ["MaildirMailStore", "MaildirStoreCore", "folder_dirname", "folder_name"]

log = Logger()

UIDVALIDITY_FILE = "mailsuite-uidvalidity"
# Present once the default mailboxes were made; a deleted one is then not made again.
ACCOUNT_MARKER = "mailsuite-account"

# A directory changed this recently may change again within the same mtime tick, unseen;
# such a folder is checked again once per this many seconds until its mtimes are older.
MTIME_TRUST_SECONDS = 1.0
# Accounts whose folder state and files stay open between calls.
MAX_OPEN_ACCOUNTS = 64
# The uidlist is rewritten when it has this many more lines than twice the live messages.
UIDLIST_SLACK = 64


def _init_folder_files(path, uidvalidity, special_use):
    """The uidlist and index of a new, empty folder directory."""
    write_uidlist(os.path.join(path, UIDLIST), uidvalidity, 1, ())
    index = FolderIndex(path)
    try:
        index.save(0, special_use=special_use)
    finally:
        index.close()


class MaildirStoreCore(StoreCore):
    """The synchronous, thread-safe core of MaildirMailStore (see mailsuite.store.base)."""

    def __init__(self, path: str, *, clock=None, max_open_accounts=MAX_OPEN_ACCOUNTS):
        self._path = os.path.abspath(path)
        self._clock = clock.seconds if clock is not None else time.time
        self._max_open = max(1, max_open_accounts)
        # Accounts whose folders are cached (open index files), least recently used first.
        self._open: dict[str, Account] = {}
        try:
            files.makedirs_durably(self._path)
        except OSError as e:
            raise files.unavailable(e) from e
        self._accounts: dict[str, Account] = {}
        self._accounts_lock = threading.Lock()

    # -- accounts and locking

    def _account(self, account) -> tuple[str, Account]:
        self._check_open()
        account = validate_account(account)
        with self._accounts_lock:
            state = self._accounts.get(account)
            if state is None:
                root = os.path.join(self._path, account, "Maildir")
                state = self._accounts[account] = Account(account, root)
        return account, state

    def _create_account(self, state: Account):
        """Create the Maildir with the default mailboxes if it does not exist (lock held)."""
        if os.path.exists(os.path.join(state.root, ACCOUNT_MARKER)):
            return
        if os.path.isdir(os.path.join(state.root, "cur")):
            self._adopt_account(state)
            return
        parent = os.path.dirname(state.root)
        files.makedirs_durably(parent)
        staging = os.path.join(parent, f"Maildir.creating-{uuid.uuid4().hex}")
        os.mkdir(staging, 0o700)
        for sub in ("cur", "new", "tmp"):
            os.mkdir(os.path.join(staging, sub), 0o700)
        with open(os.path.join(staging, SUBSCRIPTIONS), "w", encoding="utf-8") as f:
            f.write("".join(subscription_line(n) for n, _ in DEFAULT_MAILBOXES))
        open(os.path.join(staging, ACCOUNT_MARKER), "wb").close()
        state.root, real_root = staging, state.root
        try:
            for name, special_use in DEFAULT_MAILBOXES:
                if name == INBOX:
                    _init_folder_files(staging, self._next_uidvalidity(state), special_use)
                else:
                    self._make_folder(state, name, special_use)
        finally:
            state.root = real_root
            state.forget_all()
        os.rename(staging, real_root)
        files.fsync_dir(parent)

    def _adopt_account(self, state: Account):
        """A Maildir made by another program: add the missing default mailboxes once."""
        existing = set(self._folder_names(state))
        subscribed = self._subscriptions(state)
        for name, special_use in DEFAULT_MAILBOXES:
            if name not in existing:
                self._make_folder(state, name, special_use)
                subscribed.append(name)
        self._set_subscriptions(state, subscribed)
        marker = os.path.join(state.root, ACCOUNT_MARKER)
        files.write_durably(marker + ".tmp", marker, b"", replace=True)

    # -- folder state

    def _folder_path(self, state, name):
        dirname = folder_dirname(name)
        return os.path.join(state.root, dirname) if dirname else state.root

    def _next_uidvalidity(self, state) -> int:
        """RFC 3501 §2.3.1.1: above every value this account has used (lock held)."""
        path = os.path.join(state.root, UIDVALIDITY_FILE)
        try:
            with open(path, encoding="ascii") as f:
                last = int(f.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            last = 0
        value = max(int(time.time()) & 0xFFFFFFFF, last + 1)
        files.replace_file_durably(path, b"%d\n" % value)
        return value

    def _make_folder(self, state, name, special_use):
        """Create the directory of a new mailbox, complete before it appears (lock held);
        return its UIDVALIDITY."""
        final = self._folder_path(state, name)
        staging = os.path.join(state.root, f"tmp/mailsuite-folder-{uuid.uuid4().hex}")
        os.mkdir(staging, 0o700)
        for sub in ("cur", "new", "tmp"):
            os.mkdir(os.path.join(staging, sub), 0o700)
        open(os.path.join(staging, "maildirfolder"), "wb").close()
        uidvalidity = self._next_uidvalidity(state)
        if special_use is None:
            special_use = DEFAULT_SPECIAL_USE.get(name)
        _init_folder_files(staging, uidvalidity, special_use)
        os.rename(staging, final)
        files.fsync_dir(state.root)
        return uidvalidity

    def _folder(self, state, name, changes) -> Folder:
        """The up-to-date state of an existing mailbox (lock held); rescans if needed."""
        path = self._folder_path(state, name)
        folder = state.folders.get(name)
        if folder is not None and folder.path != path:
            state.forget(name)
            folder = None
        if folder is None:
            if not os.path.isdir(os.path.join(path, "cur")):
                raise NoSuchMailbox(f"no mailbox {name!r}")
            folder = Folder(state, name, path)
            try:
                self._scan(folder, changes=None)
            except BaseException:
                folder.close()
                raise
            state.folders[name] = folder
        elif self._stale(folder):
            if not os.path.isdir(os.path.join(path, "cur")):
                state.forget(name)
                raise NoSuchMailbox(f"no mailbox {name!r}")
            with Changing(state, folder):
                self._scan(folder, changes=changes)
        return folder

    def _stamp(self, folder):
        stamp = []
        for item in ("new", "cur", UIDLIST):
            try:
                stat = os.stat(os.path.join(folder.path, item))
                stamp.append(stat.st_mtime_ns)
            except FileNotFoundError:
                stat = None
                stamp.append(0)
        stamp.append(stat.st_size if stat is not None else -1)
        return tuple(stamp)

    def _recent(self, stamp) -> bool:
        return self._clock() - max(stamp[:3]) / 1e9 < MTIME_TRUST_SECONDS

    def _stale(self, folder) -> bool:
        """Whether ``folder`` may differ from disk: another program changed a stamped
        directory or file, or a change could hide in the mtime tick of the last one."""
        if self._stamp(folder) != folder.stamp:
            return True
        return not folder.verified and self._clock() - folder.scanned_at >= MTIME_TRUST_SECONDS

    def _saw(self, folder, stamp=None):
        """Remember the stamp this process's own writes (or a scan) left on ``folder``."""
        folder.stamp = stamp if stamp is not None else self._stamp(folder)
        folder.verified = folder.verified and not self._recent(folder.stamp)

    def _scan(self, folder: Folder, *, changes):
        """Rebuild ``folder`` from disk; report what another program changed in ``changes``."""
        scanned_at = self._clock()
        stamp = self._stamp(folder)
        uidlist = read_uidlist(os.path.join(folder.path, UIDLIST))
        keywords = read_keywords(os.path.join(folder.path, KEYWORDS))
        index = folder.index.load()
        rewrite = not uidlist.clean
        uidvalidity = uidlist.uidvalidity or self._next_uidvalidity(folder.state)
        found = {}
        for sub in ("new", "cur"):
            for filename in os.listdir(os.path.join(folder.path, sub)):
                if not filename.startswith("."):
                    base, info = split_filename(filename)
                    found.setdefault(base, (sub, info))
        entries, unlisted = {}, []
        for base, (sub, info) in found.items():
            uid = uidlist.listed.get(base)
            if uid is None or uid in index.expunged:
                # Never listed, or back under a UID clients were told is gone.
                rewrite = rewrite or uid is not None
                unlisted.append(base)
            else:
                entries[uid] = Entry(base, sub, info, 0)
        known_next = folder.nextuid if folder.uidvalidity == uidvalidity else 1
        nextuid = max(uidlist.nextuid, known_next, *(uid + 1 for uid in entries))
        added = []
        for base in sorted(unlisted):
            sub, info = found[base]
            entries[nextuid] = Entry(base, sub, info, 0)
            added.append((nextuid, base))
            nextuid += 1
        highest = max(index.highestmodseq, folder.highestmodseq)
        touched = []
        for uid, entry in entries.items():
            record = index.records.get(uid)
            if record is not None and record[1] == entry.info:
                entry.modseq = record[0]
            else:
                touched.append(uid)
        gone = sorted(uid for uid in index.records if uid not in entries)
        if touched or gone:
            highest += 1
            for uid in touched:
                entries[uid].modseq = highest
        if changes is not None:
            self._report(folder, entries, highest, changes)
        folder.uidvalidity = uidvalidity
        folder.nextuid = nextuid
        folder.highestmodseq = highest
        folder.keywords = keywords
        folder.entries = dict(sorted(entries.items()))
        folder.forget_files({entry.base for entry in entries.values()})
        folder.uidlist_lines = uidlist.lines
        if index.special_use_known:
            folder.special_use = index.special_use
        wrote = False
        if touched or gone:
            folder.index.save(
                highest, upsert={uid: entries[uid].record for uid in touched}, delete=gone
            )
            wrote = True
        if rewrite or uidvalidity != uidlist.uidvalidity:
            self._compact(folder)
            wrote = True
        elif added:
            self._append_records(folder, added)
            wrote = True
        folder.scanned_at = scanned_at
        folder.verified = not self._recent(stamp)
        self._saw(folder, None if wrote else stamp)

    def _report(self, folder, entries, highest, changes):
        account = folder.state.name
        old = folder.entries
        new_uids = tuple(sorted(u for u in entries if u not in old))
        gone = tuple(sorted(u for u in old if u not in entries))
        flagged = tuple(sorted(
            u for u in entries if u in old and entries[u].info != old[u].info
        ))
        for kind, uids in (
            (ChangeKind.EXPUNGED, gone), (ChangeKind.NEW, new_uids), (ChangeKind.FLAGS, flagged)
        ):
            if uids:
                changes.append(Change(kind, account, folder.name, uids, highest))

    # -- writing folder state (lock held; each costs what it changes, not the folder size)

    def _compact(self, folder):
        """Rewrite the uidlist with only the live messages; the index forgets expunged UIDs."""
        write_uidlist(
            os.path.join(folder.path, UIDLIST),
            folder.uidvalidity,
            folder.nextuid,
            ((uid, e.base) for uid, e in sorted(folder.entries.items())),
        )
        folder.uidlist_lines = len(folder.entries)
        folder.index.save(folder.highestmodseq, forget_expunged=True)

    def _append_records(self, folder, records):
        """Give ``records`` ((uid, base), ascending) their uidlist lines."""
        append_uidlist(os.path.join(folder.path, UIDLIST), records)
        folder.uidlist_lines += len(records)

    def _compact_if_sparse(self, folder):
        if folder.uidlist_lines > 2 * len(folder.entries) + UIDLIST_SLACK:
            self._compact(folder)

    def _write_keywords(self, folder):
        write_keywords(os.path.join(folder.path, KEYWORDS), folder.keywords)

    # -- subscriptions

    def _subscriptions(self, state) -> list[str]:
        return read_subscriptions(os.path.join(state.root, SUBSCRIPTIONS))

    def _set_subscriptions(self, state, names):
        write_subscriptions(os.path.join(state.root, SUBSCRIPTIONS), names)

    def _folder_names(self, state) -> list[str]:
        result = [INBOX]
        for entry in os.scandir(state.root):
            if entry.is_dir():
                name = folder_name(entry.name)
                if name is not None and os.path.isdir(os.path.join(entry.path, "cur")):
                    result.append(name)
        return result

    # -- the operations

    def _run(self, account, work):
        """Run ``work(account, state, changes)`` with the account locked and created."""
        account, state = self._account(account)
        changes = []
        try:
            with AccountLock(state):
                self._create_account(state)
                value = work(account, state, changes)
        except OSError as e:
            log.failure("maildir operation failed for {account}", account=account)
            raise files.unavailable(e) from e
        finally:
            self._used(state)
        return value, changes

    def _used(self, state):
        """Note that ``state`` was just used; let go of the least recently used accounts'
        cached folders and open files beyond ``max_open_accounts``."""
        with self._accounts_lock:
            self._open.pop(state.name, None)
            self._open[state.name] = state
            idle = []
            while len(self._open) > self._max_open:
                name = next(iter(self._open))
                idle.append(self._open.pop(name))
        for other in idle:
            # A busy account is not idle after all; it is noted again when it finishes.
            if other.lock.acquire(blocking=False):
                try:
                    other.release()
                finally:
                    other.lock.release()

    def _run_on(self, account, name, work):
        """``_run`` for an operation on mailbox ``name``: ``work(account, state, folder,
        changes)`` gets the folder, up to date."""
        name = validate_mailbox_name(name)
        folder_dirname(name)

        def run(account, state, changes):
            return work(account, state, self._folder(state, name, changes), changes)

        return self._run(account, run)

    def ensure_account(self, account):
        return self._run(account, lambda account, state, changes: None)

    def mailboxes(self, account):
        def work(account, state, changes):
            subscribed = set(self._subscriptions(state))
            infos = []
            for name in self._folder_names(state):
                folder = self._folder(state, name, changes)
                infos.append(MailboxInfo(
                    name, folder.uidvalidity, folder.special_use, name in subscribed))
            return sorted_mailboxes(infos)

        return self._run(account, work)

    def create_mailbox(self, account, name, special_use=None):
        name = validate_mailbox_name(name)
        folder_dirname(name)

        def work(account, state, changes):
            if name == INBOX or os.path.exists(self._folder_path(state, name)):
                raise MailboxExists(f"mailbox {name!r} exists")
            uidvalidity = self._make_folder(state, name, special_use)
            self._set_subscriptions(state, [*self._subscriptions(state), name])
            changes.append(Change(ChangeKind.MAILBOXES, account, name))
            return MailboxInfo(name, uidvalidity, special_use or DEFAULT_SPECIAL_USE.get(name))

        return self._run(account, work)

    def delete_mailbox(self, account, name):
        def work(account, state, folder, changes):
            check_deletable(self._folder_names(state), folder.name)
            state.forget(folder.name)
            # Renamed out of sight first, so a crash never leaves half a mailbox.
            trash = os.path.join(state.root, "tmp", f"mailsuite-deleted-{uuid.uuid4().hex}")
            os.rename(folder.path, trash)
            files.fsync_dir(state.root)
            shutil.rmtree(trash, ignore_errors=True)
            self._set_subscriptions(
                state, [n for n in self._subscriptions(state) if n != folder.name])
            changes.append(Change(ChangeKind.MAILBOXES, account, folder.name))

        return self._run_on(account, name, work)

    def rename_mailbox(self, account, old, new):
        new = validate_mailbox_name(new)
        folder_dirname(new)

        def work(account, state, folder, changes):
            old = folder.name
            moves = rename_moves(self._folder_names(state), old, new)
            for target in moves.values():
                folder_dirname(target)
            subscribed = self._subscriptions(state)
            if old == INBOX:
                self._rename_inbox(state, folder, new)
                # The subscription follows the messages; the fresh INBOX is subscribed.
                if INBOX in subscribed:
                    subscribed.append(new)
                subscribed.append(INBOX)
            else:
                for source, target in moves.items():
                    state.forget(source)
                    os.rename(self._folder_path(state, source), self._folder_path(state, target))
                files.fsync_dir(state.root)
                subscribed = [moves.get(n, n) for n in subscribed]
            self._set_subscriptions(state, subscribed)
            changes.append(Change(ChangeKind.MAILBOXES, account, new))

        return self._run_on(account, old, work)

    def _rename_inbox(self, state, inbox, new):
        """RFC 3501 §6.3.5: INBOX's messages move to ``new``; INBOX stays, empty."""
        with Changing(state, inbox):
            self._make_folder(state, new, None)
            target = Folder(state, new, self._folder_path(state, new))
            state.folders[new] = target
            with Changing(state, target):
                target.uidvalidity = inbox.uidvalidity
                target.nextuid = inbox.nextuid
                target.highestmodseq = inbox.highestmodseq
                target.keywords = list(inbox.keywords)
                for entry in inbox.entries.values():
                    os.rename(
                        os.path.join(inbox.path, entry.sub, entry.filename),
                        os.path.join(target.path, entry.sub, entry.filename),
                    )
                target.entries = dict(inbox.entries)
                for sub in ("new", "cur"):
                    files.fsync_dir(os.path.join(target.path, sub))
                    files.fsync_dir(os.path.join(inbox.path, sub))
                if target.keywords:
                    self._write_keywords(target)
                self._compact(target)
                target.index.save(
                    target.highestmodseq,
                    upsert={uid: e.record for uid, e in target.entries.items()},
                )
                self._saw(target)
            inbox.entries = {}
            inbox.uidvalidity = self._next_uidvalidity(state)
            inbox.nextuid = 1
            inbox.highestmodseq = 0
            inbox.index.save(0, clear=True)
            self._compact(inbox)
            self._saw(inbox)

    def set_subscribed(self, account, name, subscribed):
        def work(account, state, folder, changes):
            names = [n for n in self._subscriptions(state) if n != folder.name]
            if subscribed:
                names.append(folder.name)
            self._set_subscriptions(state, names)

        return self._run_on(account, name, work)

    def status(self, account, name):
        def work(account, state, folder, changes):
            unseen = sum(
                1 for e in folder.entries.values() if "S" not in (e.info or "")
            )
            size = sum(folder.size(uid) for uid in folder.entries)
            return MailboxStatus(
                folder.name, folder.uidvalidity, folder.nextuid, folder.highestmodseq,
                len(folder.entries), unseen, size,
            )

        return self._run_on(account, name, work)

    def _account_size(self, state, changes) -> int:
        """Octets stored over all the account's folders (lock held), from the cached sizes."""
        total = 0
        for name in self._folder_names(state):
            try:
                folder = self._folder(state, name, changes)
            except NoSuchMailbox:
                continue
            total += sum(folder.size(uid) for uid in folder.entries)
        return total

    def usage(self, account):
        return self._run(account, lambda account, state, changes: self._account_size(
            state, changes))

    def append(self, account, name, data, flags=frozenset(), internal_date=None, *, limit=None):
        data, flags, internal_date = append_arguments(data, flags, internal_date)

        def locate(account, state, folder, changes):
            if limit is not None:
                check_quota(self._account_size(state, changes), len(data), limit)
            return folder.path

        located, seen = self._run_on(account, name, locate)
        base = unique_basename(len(data))
        tmp = os.path.join(located, "tmp", base)
        # Written and fsynced outside the account lock, so appends run in parallel.
        files.write_synced(tmp, data, mtime_ns=to_ns(internal_date))
        meta = index_entry(data).meta

        def deliver(account, state, folder, changes):
            final = None
            try:
                if folder.path != located:
                    raise NoSuchMailbox(f"no mailbox {folder.name!r}")
                if limit is not None:
                    # Checked again: other appends may have landed while the body was written.
                    check_quota(self._account_size(state, changes), len(data), limit)
                with Changing(state, folder):
                    info, grew = folder.info_for(flags)
                    entry = Entry(base, "cur", info, 0) if flags else Entry(base, "new", None, 0)
                    if grew:
                        self._write_keywords(folder)
                    final = os.path.join(folder.path, entry.sub, entry.filename)
                    os.rename(tmp, final)
                    files.fsync_dir(os.path.dirname(final))
                    uid = folder.nextuid
                    entry.modseq = folder.highestmodseq + 1
                    self._append_records(folder, [(uid, base)])
                    folder.nextuid = uid + 1
                    folder.index.save(
                        entry.modseq, upsert={uid: entry.record}, meta={uid: (base, meta)}
                    )
                    folder.highestmodseq = entry.modseq
                    folder.entries[uid] = entry
                    folder.note_file(base, len(data), to_ns(internal_date))
                    self._saw(folder)
            except BaseException:
                files.unlink_quietly(tmp)
                if final is not None:
                    files.unlink_quietly(final)
                raise
            changes.append(Change(ChangeKind.NEW, account, folder.name, (uid,), entry.modseq))
            return MessageInfo(uid, flags, entry.modseq, internal_date, len(data))

        try:
            info, changes = self._run_on(account, name, deliver)
        finally:
            files.unlink_quietly(tmp)
        return info, seen + changes

    def messages(self, account, name, changed_since=0):
        def work(account, state, folder, changes):
            if changed_since > 0:
                found = [folder.info(uid) for uid, entry in folder.entries.items()
                         if entry.modseq > changed_since]
            else:
                found = [folder.info(uid) for uid in folder.entries]
            try:
                folder.save_files()
            except StoreUnavailable:
                # Only a cache of what stat() found: on a full disk the listing still stands.
                log.warn("could not cache file sizes of {account}/{mailbox}",
                         account=account, mailbox=folder.name)
            return found

        return self._run_on(account, name, work)

    def read(self, account, name, uid):
        def work(account, state, folder, changes):
            for attempt in range(2):
                if uid not in folder.entries:
                    break
                try:
                    with open(folder.file(uid), "rb") as f:
                        return f.read()
                except FileNotFoundError:
                    # Renamed or removed by another program within one mtime tick.
                    with Changing(state, folder):
                        self._scan(folder, changes=changes)
            raise NoSuchMessage(f"no message with UID {uid}")

        return self._run_on(account, name, work)

    def set_flags(self, account, name, uids, flags, mode=FlagMode.SET):
        flags = normalize_flags(flags)

        def work(account, state, folder, changes):
            present = present_uids(uids, folder.entries)
            with Changing(state, folder):
                renames = {}
                grew = False
                current = ((uid, folder.flags(folder.entries[uid])) for uid in present)
                for uid, new in flag_updates(current, flags, mode).items():
                    info, added = folder.info_for(new, keep=folder.entries[uid].info or "")
                    grew = grew or added
                    renames[uid] = info
                if renames:
                    if grew:
                        self._write_keywords(folder)
                    modseq = folder.highestmodseq + 1
                    for uid, info in renames.items():
                        entry = folder.entries[uid]
                        source = folder.file(uid)
                        entry.sub, entry.info, entry.modseq = "cur", info, modseq
                        os.rename(source, folder.file(uid))
                    files.fsync_dir(os.path.join(folder.path, "cur"))
                    folder.index.save(
                        modseq, upsert={uid: folder.entries[uid].record for uid in renames}
                    )
                    folder.highestmodseq = modseq
                    self._saw(folder)
                    changes.append(
                        Change(ChangeKind.FLAGS, account, folder.name, tuple(renames), modseq))
            return [folder.info(uid) for uid in present]

        return self._run_on(account, name, work)

    def _copy(self, account, name, uids, destination, *, remove, limit):
        destination = validate_mailbox_name(destination)
        folder_dirname(destination)

        def work(account, state, source, changes):
            target = self._folder(state, destination, changes)
            present = present_uids(uids, source.entries)
            if not present:
                return {}
            if remove and source is target:
                return {uid: uid for uid in present}
            if limit is not None:
                adding = sum(source.size(uid) for uid in present)
                check_quota(self._account_size(state, changes), adding, limit)
            with Changing(state, source, target):
                return self._transfer(account, source, target, present, changes, remove=remove)

        return self._run_on(account, name, work)

    def _transfer(self, account, source, target, present, changes, *, remove):
        placed, grew = [], False
        try:
            for uid in present:
                entry = source.entries[uid]
                flags = source.flags(entry)
                info, added = target.info_for(flags)
                grew = grew or added
                new = Entry(unique_basename(source.size(uid)), "cur", info, 0)
                if entry.info is None and not flags:
                    new.sub, new.info = "new", None
                path = os.path.join(target.path, new.sub, new.filename)
                self._place(source.file(uid), path, move=remove)
                placed.append((uid, new, path))
            for sub in ("new", "cur"):
                files.fsync_dir(os.path.join(target.path, sub))
        except BaseException:
            for uid, _, path in placed:
                if remove:
                    os.rename(path, source.file(uid))
                else:
                    files.unlink_quietly(path)
            raise
        if grew:
            self._write_keywords(target)
        modseq = target.highestmodseq + 1
        mapping = {}
        for uid, new, _ in placed:
            new.modseq = modseq
            mapping[uid] = target.nextuid
            target.entries[target.nextuid] = new
            target.nextuid += 1
        self._append_records(target, [(mapping[uid], new.base) for uid, new, _ in placed])
        meta = copied_meta(source, {uid: (mapping[uid], new.base) for uid, new, _ in placed})
        target.index.save(
            modseq, upsert={mapping[uid]: new.record for uid, new, _ in placed}, meta=meta
        )
        target.highestmodseq = modseq
        self._saw(target)
        changes.append(Change(
            ChangeKind.NEW, account, target.name, tuple(mapping.values()), modseq))
        if remove:
            for sub in ("new", "cur"):
                files.fsync_dir(os.path.join(source.path, sub))
            changes.append(self._forget_uids(account, source, present))
        return mapping

    def _forget_uids(self, account, folder, uids) -> Change:
        """Record that ``uids`` (whose files are gone) are expunged; the Change to report."""
        modseq = folder.highestmodseq + 1
        folder.index.save(modseq, delete=uids)
        folder.highestmodseq = modseq
        for uid in uids:
            del folder.entries[uid]
        self._compact_if_sparse(folder)
        self._saw(folder)
        return Change(ChangeKind.EXPUNGED, account, folder.name, tuple(uids), modseq)

    @staticmethod
    def _place(source, path, *, move):
        if move:
            os.rename(source, path)
            return
        try:
            # A hard link shares bytes and mtime (the internal date); flags are in the name.
            os.link(source, path)
        except OSError:
            shutil.copy2(source, path)
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def expunge(self, account, name, uids):
        def work(account, state, folder, changes):
            present = present_uids(uids, folder.entries)
            if not present:
                return []
            with Changing(state, folder):
                for uid in present:
                    files.unlink_quietly(folder.file(uid))
                for sub in ("new", "cur"):
                    files.fsync_dir(os.path.join(folder.path, sub))
                changes.append(self._forget_uids(account, folder, present))
            return present

        return self._run_on(account, name, work)

    # -- repair after a crash (see mailsuite.store.check; the server is stopped)

    def repair_folder(self, account, name) -> list[str]:
        """
        Bring mailbox ``name`` back in line with its files: a UID listed for two files stays
        with the first (the other file gets a new UID), files missing from the uidlist get
        new UIDs, UIDs whose file is gone are expunged, cached sizes and dates that disagree
        with the files are forgotten, HIGHESTMODSEQ and the next UID are raised above every
        value in use, and the uidlist is rewritten with the live messages only.  Returns a
        line per change.
        """
        name = validate_mailbox_name(name)
        folder_dirname(name)

        def work(account, state, changes):
            state.forget(name)
            path = self._folder_path(state, name)
            if not os.path.isdir(os.path.join(path, "cur")):
                raise NoSuchMailbox(f"no mailbox {name!r}")
            where = f"{account}/{name}"
            done = []
            index = FolderIndex(path)
            try:
                recorded = index.load()
                top = max((modseq for modseq, _ in recorded.records.values()), default=0)
                if top > recorded.highestmodseq:
                    index.save(top)
                    done.append(f"{where}: HIGHESTMODSEQ raised from "
                                f"{recorded.highestmodseq} to {top}")
                on_disk = _message_files(path)
                wrong = [base for base, (size, ns) in index.load_files().items()
                         if base in on_disk and _file_facts(on_disk[base]) != (size, ns)]
                if wrong:
                    index.save_files({}, gone=wrong)
                    done.append(f"{where}: forgot the cached size and date of "
                                f"{len(wrong)} files")
                used = set(recorded.records) | recorded.expunged
            finally:
                index.close()
            uidlist_path = os.path.join(path, UIDLIST)
            uidlist = read_uidlist(uidlist_path)
            before = {}
            for base, uid in uidlist.listed.items():
                if uid not in recorded.expunged:
                    before.setdefault(uid, base)
            nextuid = max(uidlist.nextuid, max(used, default=0) + 1)
            kept = {base: uid for base, uid in uidlist.listed.items() if before.get(uid) == base}
            if uidlist.uidvalidity and (len(kept) < len(uidlist.listed)
                                        or nextuid > uidlist.nextuid):
                # Dropped lines' files are unlisted now, so the scan gives them new UIDs.
                write_uidlist(uidlist_path, uidlist.uidvalidity, nextuid,
                              sorted((uid, base) for base, uid in kept.items()))
            folder = self._folder(state, name, None)
            with Changing(state, folder):
                folder.nextuid = max(folder.nextuid, nextuid)
                self._compact(folder)
                self._saw(folder)
            for uid, entry in folder.entries.items():
                if before.get(uid) != entry.base:
                    done.append(f"{where}: file {entry.base} added as UID {uid}")
            for uid in sorted(before):
                if uid not in folder.entries:
                    done.append(f"{where}: UID {uid} expunged, its file is gone")
            return done

        return self._run(account, work)

    # -- ISearchableStore, synchronously

    def search(self, account, name, query):
        return self._run_on(
            account, name, lambda account, state, folder, changes: search_folder(folder, query)
        )

    def message_meta(self, account, name, uids):
        return self._run_on(
            account, name, lambda account, state, folder, changes: folder_meta(folder, uids)
        )

    def sort_keys(self, account, name, uids):
        return self._run_on(
            account, name, lambda account, state, folder, changes: folder_sort_keys(folder, uids)
        )

    def close(self):
        with self._accounts_lock:
            return super().close()

    def _release(self):
        for state in self._accounts.values():
            with state.lock:
                state.release()


def _message_files(folder_path) -> dict[str, str]:
    """{base name: path} of the message files in new/ and cur/ of a folder."""
    found = {}
    for sub in ("new", "cur"):
        directory = os.path.join(folder_path, sub)
        for filename in os.listdir(directory):
            if not filename.startswith("."):
                found.setdefault(split_filename(filename)[0], os.path.join(directory, filename))
    return found


def _file_facts(path) -> tuple[int, int]:
    """(size, mtime in ns) of a message file as the folder index caches them: the size
    from the ",S=" of the name when there is one."""
    stat = os.stat(path)
    size = size_from_base(split_filename(os.path.basename(path))[0])
    return (stat.st_size if size is None else size), stat.st_mtime_ns


class MaildirMailStore(StoreFrontend):
    """See IMailStore.  Maildirs live below ``path``; blocking work goes through ``runner``."""

    def __init__(self, path: str, *, runner, clock=None, max_open_accounts=MAX_OPEN_ACCOUNTS):
        """``clock`` (an IReactorTime, default the system time) dates the checks for
        changes by other programs; ``max_open_accounts`` bounds the cached accounts."""
        core = MaildirStoreCore(path, clock=clock, max_open_accounts=max_open_accounts)
        super().__init__(core, runner=runner)
