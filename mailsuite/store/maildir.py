"""
The ``maildir`` store backend: Maildir++ as Dovecot, Courier and mutt read it.

Layout of ``path/<account>/Maildir``:
  cur/ new/ tmp/                 INBOX
  .Name/ .Parent.Child/          other mailboxes (levels in IMAP modified UTF-7), each with
                                 cur/ new/ tmp/ and an empty ``maildirfolder`` file
  subscriptions                  subscribed mailboxes, one per line
  <folder>/dovecot-uidlist       "3 V<uidvalidity> N<nextuid>" then "<uid> :<basename>" lines
  <folder>/dovecot-keywords      "<index> <keyword>": keyword letters a-z of the ":2," info
  <folder>/mailsuite-index.json  what Maildir cannot hold: MODSEQ per UID, special use

The Maildir is the truth for messages and flags (the ":2," info of file names); the internal
date is the file's mtime.  Files another program adds, removes or renames are noticed on the
next call (a rescan when a directory's mtime changes) and get new UIDs.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from twisted.logger import Logger

from mailsuite.interfaces import (
    DEFAULT_MAILBOXES,
    HIERARCHY_SEPARATOR,
    Change,
    ChangeKind,
    FlagMode,
    InvalidMailboxName,
    MailboxExists,
    MailboxInfo,
    MailboxStatus,
    MessageInfo,
    NoSuchMailbox,
    NoSuchMessage,
    StoreError,
)
from mailsuite.store import files
from mailsuite.store.base import (
    StoreFrontend,
    apply_flags,
    check_data,
    internal_date_or_now,
)
from mailsuite.store.names import (
    INBOX,
    decode_mutf7,
    encode_mutf7,
    is_child,
    mailbox_sort_key,
    normalize_flags,
    validate_account,
    validate_mailbox_name,
)

log = Logger()

UIDLIST = "dovecot-uidlist"
KEYWORDS = "dovecot-keywords"
INDEX = "mailsuite-index.json"
SUBSCRIPTIONS = "subscriptions"
UIDVALIDITY_FILE = "mailsuite-uidvalidity"
LOCK_FILE = "mailsuite.lock"
# Present once the default mailboxes were made; a deleted one is then not made again.
ACCOUNT_MARKER = "mailsuite-account"

# Maildir info letters, in the ASCII order the spec requires within ":2,".
FLAG_LETTERS = {
    "\\Draft": "D",
    "\\Flagged": "F",
    "$Forwarded": "P",
    "\\Answered": "R",
    "\\Seen": "S",
    "\\Deleted": "T",
}
LETTER_FLAGS = {letter: flag for flag, letter in FLAG_LETTERS.items()}
KEYWORD_LETTERS = "abcdefghijklmnopqrstuvwxyz"
DEFAULT_SPECIAL_USE = dict(DEFAULT_MAILBOXES)
# A directory changed this recently may change again within the same mtime tick.
MTIME_TRUST_SECONDS = 1.0

_sequence = itertools.count()
_host = (
    socket.gethostname().replace("/", "\\057").replace(":", "\\072").replace(",", "\\054")
    or "localhost"
)


def unique_basename(size: int) -> str:
    """A new Maildir file name: "<time>.M<usec>P<pid>Q<n>.<host>,S=<size>"."""
    now = time.time()
    sec = int(now)
    usec = int((now - sec) * 1_000_000)
    return f"{sec}.M{usec}P{os.getpid()}Q{next(_sequence)}.{_host},S={size}"


def folder_dirname(name: str) -> str:
    """The directory of mailbox ``name`` below the Maildir root ("" for INBOX)."""
    if name == INBOX:
        return ""
    levels = name.split(HIERARCHY_SEPARATOR)
    if any("." in level for level in levels):
        # Maildir++ uses "." as its own hierarchy separator.
        raise InvalidMailboxName("mailbox name contains '.'")
    return "." + ".".join(encode_mutf7(level) for level in levels)


def folder_name(dirname: str) -> str | None:
    """The mailbox name of a ".Folder" directory, or None if it is not a valid one."""
    if not dirname.startswith(".") or dirname in (".", ".."):
        return None
    try:
        levels = [decode_mutf7(level) for level in dirname[1:].split(".")]
        name = validate_mailbox_name(HIERARCHY_SEPARATOR.join(levels))
    except (ValueError, StoreError):
        return None
    if name == INBOX or folder_dirname(name) != dirname:
        return None
    return name


def _to_ns(moment: datetime) -> int:
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (moment - epoch) // _MICROSECOND * 1000


_MICROSECOND = datetime.resolution


def _from_ns(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 1000 / 1_000_000, tz=timezone.utc).replace(
        microsecond=(ns // 1000) % 1_000_000
    )


@dataclass
class _Entry:
    base: str
    sub: str  # "new" or "cur"
    info: str | None  # the letters after ":2,", None for a file without info
    modseq: int

    @property
    def filename(self):
        return self.base if self.info is None else f"{self.base}:2,{self.info}"


class _Folder:
    """What is known of one mailbox directory, rebuilt from disk when it changes."""

    def __init__(self, state, name, path):
        self.state = state
        self.name = name
        self.path = path
        self.uidvalidity = 0
        self.nextuid = 1
        self.highestmodseq = 0
        self.special_use = DEFAULT_SPECIAL_USE.get(name)
        self.keywords: list[str] = []
        self.entries: dict[int, _Entry] = {}
        self.stamp = None

    def file(self, uid):
        entry = self.entries[uid]
        return os.path.join(self.path, entry.sub, entry.filename)

    def flags(self, entry) -> frozenset:
        result = set()
        for letter in entry.info or "":
            if letter in LETTER_FLAGS:
                result.add(LETTER_FLAGS[letter])
            elif letter in KEYWORD_LETTERS:
                index = KEYWORD_LETTERS.index(letter)
                if index < len(self.keywords):
                    result.add(self.keywords[index])
        return frozenset(result)

    def info_for(self, flags, *, keep="") -> tuple[str, bool]:
        """The ":2," letters for ``flags`` (plus unknown letters of ``keep``), and whether
        the keyword list grew."""
        letters = set()
        grew = False
        for flag in flags:
            if flag in FLAG_LETTERS:
                letters.add(FLAG_LETTERS[flag])
                continue
            if flag not in self.keywords:
                if len(self.keywords) >= len(KEYWORD_LETTERS):
                    raise StoreError("too many keywords in this mailbox")
                self.keywords.append(flag)
                grew = True
            letters.add(KEYWORD_LETTERS[self.keywords.index(flag)])
        for letter in keep:
            known = letter in LETTER_FLAGS or (
                letter in KEYWORD_LETTERS and KEYWORD_LETTERS.index(letter) < len(self.keywords)
            )
            if not known:
                letters.add(letter)
        return "".join(sorted(letters)), grew

    def size(self, uid) -> int:
        entry = self.entries[uid]
        for part in entry.base.split(",")[1:]:
            if part.startswith("S=") and part[2:].isdigit():
                return int(part[2:])
        return os.stat(self.file(uid)).st_size

    def info(self, uid) -> MessageInfo:
        entry = self.entries[uid]
        stat = os.stat(self.file(uid))
        return MessageInfo(
            uid, self.flags(entry), entry.modseq, _from_ns(stat.st_mtime_ns), self.size(uid)
        )


class _Account:
    def __init__(self, name, root):
        self.name = name
        self.root = root
        self.lock = threading.Lock()
        self.folders: dict[str, _Folder] = {}
        self.lock_fd = None


class MaildirStoreCore:
    """The synchronous, thread-safe core of MaildirMailStore (see mailsuite.store.base)."""

    def __init__(self, path: str):
        self._path = os.path.abspath(path)
        try:
            files.makedirs_durably(self._path)
        except OSError as e:
            raise files.unavailable(e) from e
        self._accounts: dict[str, _Account] = {}
        self._accounts_lock = threading.Lock()

    # -- accounts and locking

    def _account(self, account) -> tuple[str, _Account]:
        account = validate_account(account)
        with self._accounts_lock:
            state = self._accounts.get(account)
            if state is None:
                root = os.path.join(self._path, account, "Maildir")
                state = self._accounts[account] = _Account(account, root)
        return account, state

    def _locked(self, state: _Account):
        return _AccountLock(state)

    def _create_account(self, state: _Account):
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
            f.write("".join(self._subscription_line(n) for n, _ in DEFAULT_MAILBOXES))
        open(os.path.join(staging, ACCOUNT_MARKER), "wb").close()
        state.root, real_root = staging, state.root
        try:
            for name, special_use in DEFAULT_MAILBOXES:
                if name == INBOX:
                    self._write_folder(self._new_folder(state, INBOX), uids=True)
                else:
                    self._make_folder(state, name, special_use)
        finally:
            state.root = real_root
            state.folders.clear()
        os.rename(staging, real_root)
        files.fsync_dir(parent)

    def _adopt_account(self, state: _Account):
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

    def _new_folder(self, state, name, special_use=None):
        folder = _Folder(state, name, self._folder_path(state, name))
        folder.uidvalidity = self._next_uidvalidity(state)
        if special_use is not None:
            folder.special_use = special_use
        return folder

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
        """Create the directory of a new mailbox, complete before it appears (lock held)."""
        final = self._folder_path(state, name)
        staging = os.path.join(state.root, f"tmp/mailsuite-folder-{uuid.uuid4().hex}")
        os.mkdir(staging, 0o700)
        for sub in ("cur", "new", "tmp"):
            os.mkdir(os.path.join(staging, sub), 0o700)
        open(os.path.join(staging, "maildirfolder"), "wb").close()
        folder = self._new_folder(state, name, special_use)
        folder.path = staging
        self._write_folder(folder, uids=True)
        os.rename(staging, final)
        files.fsync_dir(state.root)
        folder.path = final
        return folder

    def _folder(self, state, name, changes) -> _Folder:
        """The up-to-date state of an existing mailbox (lock held); rescans if needed."""
        path = self._folder_path(state, name)
        folder = state.folders.get(name)
        if folder is None or folder.path != path:
            if not os.path.isdir(os.path.join(path, "cur")):
                raise NoSuchMailbox(f"no mailbox {name!r}")
            folder = _Folder(state, name, path)
            self._scan(folder, changes=None)
            state.folders[name] = folder
        elif self._stamp(folder) != folder.stamp or self._recent(folder):
            if not os.path.isdir(os.path.join(path, "cur")):
                state.folders.pop(name, None)
                raise NoSuchMailbox(f"no mailbox {name!r}")
            self._scan(folder, changes=changes)
        return folder

    def _stamp(self, folder):
        stamp = []
        for item in ("new", "cur", UIDLIST):
            try:
                stamp.append(os.stat(os.path.join(folder.path, item)).st_mtime_ns)
            except FileNotFoundError:
                stamp.append(0)
        return tuple(stamp)

    def _recent(self, folder):
        return time.time() - max(folder.stamp) / 1e9 < MTIME_TRUST_SECONDS

    def _read_json(self, path, default):
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            return default

    def _scan(self, folder: _Folder, *, changes):
        """Rebuild ``folder`` from disk; report what another program changed in ``changes``."""
        stamp = self._stamp(folder)
        listed, uidvalidity, nextuid = {}, 0, 1
        try:
            with open(os.path.join(folder.path, UIDLIST), encoding="utf-8") as f:
                header = f.readline().split()
                if header and header[0] == "3":
                    for field in header[1:]:
                        if field[:1] == "V" and field[1:].isdigit():
                            uidvalidity = int(field[1:])
                        elif field[:1] == "N" and field[1:].isdigit():
                            nextuid = int(field[1:])
                    for line in f:
                        uid_text, _, rest = line.partition(" ")
                        base = rest.rpartition(":")[2].strip() if ":" in rest else ""
                        if uid_text.isdigit() and base:
                            listed.setdefault(base, int(uid_text))
        except FileNotFoundError:
            pass
        keywords = []
        try:
            with open(os.path.join(folder.path, KEYWORDS), encoding="utf-8") as f:
                for line in f:
                    index, _, word = line.rstrip("\n").partition(" ")
                    if index.isdigit() and int(index) == len(keywords) and word:
                        keywords.append(word)
        except FileNotFoundError:
            pass
        index = self._read_json(os.path.join(folder.path, INDEX), {})
        known = {int(k): v for k, v in index.get("modseq", {}).items()}
        dirty = False
        if not uidvalidity:
            uidvalidity = self._next_uidvalidity(folder.state)
            dirty = True
        found = {}
        for sub in ("new", "cur"):
            for filename in os.listdir(os.path.join(folder.path, sub)):
                if filename.startswith("."):
                    continue
                base, sep, info = filename.partition(":")
                info = info[2:] if sep and info.startswith("2,") else None
                found.setdefault(base, (sub, info))
        entries = {}
        for base, (sub, info) in found.items():
            if base in listed:
                entries[listed[base]] = _Entry(base, sub, info, 0)
        nextuid = max([nextuid, *(uid + 1 for uid in entries)])
        for base in sorted(b for b in found if b not in listed):
            sub, info = found[base]
            entries[nextuid] = _Entry(base, sub, info, 0)
            nextuid += 1
            dirty = True
        highest = int(index.get("highestmodseq", 0))
        touched = []
        for uid, entry in entries.items():
            record = known.get(uid)
            if record and record[1] == entry.info:
                entry.modseq = int(record[0])
            else:
                touched.append(uid)
        gone = sorted(uid for uid in listed.values() if uid not in entries)
        if touched or gone:
            highest += 1
            for uid in touched:
                entries[uid].modseq = highest
            dirty = True
        if changes is not None:
            self._report(folder, entries, highest, changes)
        folder.uidvalidity = uidvalidity
        folder.nextuid = nextuid
        folder.highestmodseq = highest
        folder.keywords = keywords
        folder.entries = dict(sorted(entries.items()))
        folder.special_use = index.get("special_use", DEFAULT_SPECIAL_USE.get(folder.name))
        folder.stamp = stamp
        if dirty:
            self._write_folder(folder, uids=True)

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

    def _write_folder(self, folder: _Folder, *, uids: bool, keywords: bool = False):
        """Persist the uidlist (if ``uids``), keywords (if asked) and the index (lock held)."""
        if uids:
            lines = [f"3 V{folder.uidvalidity} N{folder.nextuid}\n"]
            lines.extend(f"{uid} :{e.base}\n" for uid, e in sorted(folder.entries.items()))
            files.replace_file_durably(
                os.path.join(folder.path, UIDLIST), "".join(lines).encode("utf-8")
            )
        if keywords or uids and folder.keywords:
            text = "".join(f"{i} {word}\n" for i, word in enumerate(folder.keywords))
            files.replace_file_durably(os.path.join(folder.path, KEYWORDS), text.encode())
        index = {
            "highestmodseq": folder.highestmodseq,
            "special_use": folder.special_use,
            "modseq": {str(uid): [e.modseq, e.info] for uid, e in folder.entries.items()},
        }
        files.replace_file_durably(
            os.path.join(folder.path, INDEX), json.dumps(index).encode("utf-8")
        )
        folder.stamp = self._stamp(folder)

    # -- subscriptions

    @staticmethod
    def _subscription_line(name):
        return (folder_dirname(name)[1:] or INBOX) + "\n"

    def _subscriptions(self, state) -> list[str]:
        try:
            with open(os.path.join(state.root, SUBSCRIPTIONS), encoding="utf-8") as f:
                lines = [line.rstrip("\n") for line in f if line.strip()]
        except FileNotFoundError:
            return []
        names = []
        for line in lines:
            name = INBOX if line == INBOX else folder_name("." + line)
            if name is not None:
                names.append(name)
        return names

    def _set_subscriptions(self, state, names):
        text = "".join(self._subscription_line(n) for n in sorted(set(names)))
        files.replace_file_durably(os.path.join(state.root, SUBSCRIPTIONS), text.encode())

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
            with self._locked(state):
                self._create_account(state)
                value = work(account, state, changes)
        except OSError as e:
            log.failure("maildir operation failed for {account}", account=account)
            raise files.unavailable(e) from e
        return value, changes

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
            return sorted(infos, key=lambda i: mailbox_sort_key(i.name))

        return self._run(account, work)

    def create_mailbox(self, account, name, special_use=None):
        name = validate_mailbox_name(name)
        folder_dirname(name)

        def work(account, state, changes):
            if name == INBOX or os.path.exists(self._folder_path(state, name)):
                raise MailboxExists(f"mailbox {name!r} exists")
            folder = self._make_folder(state, name, special_use)
            state.folders[name] = folder
            self._set_subscriptions(state, [*self._subscriptions(state), name])
            changes.append(Change(ChangeKind.MAILBOXES, account, name))
            return MailboxInfo(name, folder.uidvalidity, folder.special_use)

        return self._run(account, work)

    def delete_mailbox(self, account, name):
        name = validate_mailbox_name(name)
        folder_dirname(name)

        def work(account, state, changes):
            folder = self._folder(state, name, changes)
            if name == INBOX:
                raise StoreError("INBOX cannot be deleted")
            if any(is_child(other, name) for other in self._folder_names(state)):
                raise StoreError("mailbox has children")
            # Renamed out of sight first, so a crash never leaves half a mailbox.
            trash = os.path.join(state.root, "tmp", f"mailsuite-deleted-{uuid.uuid4().hex}")
            os.rename(folder.path, trash)
            files.fsync_dir(state.root)
            state.folders.pop(name, None)
            shutil.rmtree(trash, ignore_errors=True)
            self._set_subscriptions(state, [n for n in self._subscriptions(state) if n != name])
            changes.append(Change(ChangeKind.MAILBOXES, account, name))

        return self._run(account, work)

    def rename_mailbox(self, account, old, new):
        old = validate_mailbox_name(old)
        new = validate_mailbox_name(new)
        folder_dirname(old)
        folder_dirname(new)

        def work(account, state, changes):
            folder = self._folder(state, old, changes)
            existing = self._folder_names(state)
            if new in existing:
                raise MailboxExists(f"mailbox {new!r} exists")
            subscribed = self._subscriptions(state)
            if old == INBOX:
                self._rename_inbox(state, folder, new)
                subscribed.append(new)
            else:
                if is_child(new, old):
                    raise StoreError("cannot rename a mailbox below itself")
                moves = {old: new}
                for other in existing:
                    if is_child(other, old):
                        moves[other] = validate_mailbox_name(new + other[len(old):])
                        folder_dirname(moves[other])
                if any(target in existing for target in moves.values()):
                    raise MailboxExists("a mailbox of the new name exists")
                for source, target in moves.items():
                    os.rename(self._folder_path(state, source), self._folder_path(state, target))
                    state.folders.pop(source, None)
                files.fsync_dir(state.root)
                subscribed = [moves.get(n, n) for n in subscribed]
            self._set_subscriptions(state, subscribed)
            changes.append(Change(ChangeKind.MAILBOXES, account, new))

        return self._run(account, work)

    def _rename_inbox(self, state, inbox, new):
        """RFC 3501 §6.3.5: INBOX's messages move to ``new``; INBOX stays, empty."""
        target = self._make_folder(state, new, None)
        target.uidvalidity = inbox.uidvalidity
        target.nextuid = inbox.nextuid
        target.highestmodseq = inbox.highestmodseq
        target.keywords = list(inbox.keywords)
        for uid, entry in inbox.entries.items():
            os.rename(
                os.path.join(inbox.path, entry.sub, entry.filename),
                os.path.join(target.path, entry.sub, entry.filename),
            )
        target.entries = dict(inbox.entries)
        for sub in ("new", "cur"):
            files.fsync_dir(os.path.join(target.path, sub))
            files.fsync_dir(os.path.join(inbox.path, sub))
        self._write_folder(target, uids=True, keywords=True)
        state.folders[new] = target
        inbox.entries = {}
        inbox.uidvalidity = self._next_uidvalidity(state)
        inbox.nextuid = 1
        inbox.highestmodseq = 0
        self._write_folder(inbox, uids=True)

    def status(self, account, name):
        name = validate_mailbox_name(name)
        folder_dirname(name)

        def work(account, state, changes):
            folder = self._folder(state, name, changes)
            unseen = sum(
                1 for e in folder.entries.values() if "S" not in (e.info or "")
            )
            size = sum(folder.size(uid) for uid in folder.entries)
            return MailboxStatus(
                name, folder.uidvalidity, folder.nextuid, folder.highestmodseq,
                len(folder.entries), unseen, size,
            )

        return self._run(account, work)

    def append(self, account, name, data, flags=frozenset(), internal_date=None):
        data = check_data(data)
        flags = normalize_flags(flags)
        internal_date = internal_date_or_now(internal_date)
        name = validate_mailbox_name(name)
        folder_dirname(name)
        holder = {}

        def locate(account, state, changes):
            holder["path"] = self._folder(state, name, changes).path

        self._run(account, locate)
        base = unique_basename(len(data))
        tmp = os.path.join(holder["path"], "tmp", base)
        # Written and fsynced outside the account lock, so appends run in parallel.
        self._write_tmp(tmp, data, _to_ns(internal_date))

        def deliver(account, state, changes):
            final = None
            try:
                folder = self._folder(state, name, changes)
                if folder.path != holder["path"]:
                    raise NoSuchMailbox(f"no mailbox {name!r}")
                info, grew = folder.info_for(flags)
                entry = _Entry(base, "cur", info, 0) if flags else _Entry(base, "new", None, 0)
                final = os.path.join(folder.path, entry.sub, entry.filename)
                os.rename(tmp, final)
                files.fsync_dir(os.path.dirname(final))
                uid = folder.nextuid
                folder.nextuid += 1
                folder.highestmodseq += 1
                entry.modseq = folder.highestmodseq
                folder.entries[uid] = entry
                try:
                    self._write_folder(folder, uids=True, keywords=grew)
                except BaseException:
                    del folder.entries[uid]
                    raise
            except BaseException:
                files.unlink_quietly(tmp)
                if final is not None:
                    files.unlink_quietly(final)
                raise
            changes.append(Change(ChangeKind.NEW, account, name, (uid,), entry.modseq))
            return MessageInfo(uid, flags, entry.modseq, internal_date, len(data))

        try:
            return self._run(account, deliver)
        finally:
            files.unlink_quietly(tmp)

    @staticmethod
    def _write_tmp(path, data, mtime_ns):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as e:
            raise files.unavailable(e) from e
        try:
            try:
                files.write_all(fd, data)
                os.utime(fd, ns=(mtime_ns, mtime_ns))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            files.unlink_quietly(path)
            raise files.unavailable(e) from e

    def messages(self, account, name):
        name = validate_mailbox_name(name)
        folder_dirname(name)

        def work(account, state, changes):
            folder = self._folder(state, name, changes)
            return [folder.info(uid) for uid in folder.entries]

        return self._run(account, work)

    def read(self, account, name, uid):
        name = validate_mailbox_name(name)
        folder_dirname(name)

        def work(account, state, changes):
            folder = self._folder(state, name, changes)
            for attempt in range(2):
                if uid not in folder.entries:
                    break
                try:
                    with open(folder.file(uid), "rb") as f:
                        return f.read()
                except FileNotFoundError:
                    # Renamed or removed by another program within one mtime tick.
                    self._scan(folder, changes=changes)
            raise NoSuchMessage(f"no message with UID {uid}")

        return self._run(account, work)

    def set_flags(self, account, name, uids, flags, mode=FlagMode.SET):
        flags = normalize_flags(flags)
        name = validate_mailbox_name(name)
        folder_dirname(name)

        def work(account, state, changes):
            folder = self._folder(state, name, changes)
            present = sorted(set(u for u in uids if u in folder.entries))
            renames = {}
            grew = False
            for uid in present:
                entry = folder.entries[uid]
                old = folder.flags(entry)
                new = apply_flags(old, flags, mode)
                if new != old:
                    info, added = folder.info_for(new, keep=entry.info or "")
                    grew = grew or added
                    renames[uid] = info
            if renames:
                if grew:
                    self._write_folder(folder, uids=False, keywords=True)
                folder.highestmodseq += 1
                for uid, info in renames.items():
                    entry = folder.entries[uid]
                    source = folder.file(uid)
                    entry.sub, entry.info, entry.modseq = "cur", info, folder.highestmodseq
                    os.rename(source, folder.file(uid))
                files.fsync_dir(os.path.join(folder.path, "cur"))
                self._write_folder(folder, uids=False)
                changes.append(Change(
                    ChangeKind.FLAGS, account, name, tuple(renames), folder.highestmodseq))
            return [folder.info(uid) for uid in present]

        return self._run(account, work)

    def copy(self, account, name, uids, destination):
        return self._copy(account, name, uids, destination, remove=False)

    def move(self, account, name, uids, destination):
        return self._copy(account, name, uids, destination, remove=True)

    def _copy(self, account, name, uids, destination, *, remove):
        name = validate_mailbox_name(name)
        destination = validate_mailbox_name(destination)
        folder_dirname(name)
        folder_dirname(destination)

        def work(account, state, changes):
            source = self._folder(state, name, changes)
            target = self._folder(state, destination, changes)
            present = sorted(set(u for u in uids if u in source.entries))
            if not present:
                return {}
            if remove and source is target:
                return {uid: uid for uid in present}
            mapping, placed, grew = {}, [], False
            try:
                for uid in present:
                    entry = source.entries[uid]
                    flags = source.flags(entry)
                    info, added = target.info_for(flags)
                    grew = grew or added
                    new = _Entry(unique_basename(source.size(uid)), "cur", info, 0)
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
            target.highestmodseq += 1
            for uid, new, _ in placed:
                new.modseq = target.highestmodseq
                mapping[uid] = target.nextuid
                target.entries[target.nextuid] = new
                target.nextuid += 1
            self._write_folder(target, uids=True, keywords=grew)
            changes.append(Change(
                ChangeKind.NEW, account, destination, tuple(mapping.values()),
                target.highestmodseq))
            if remove:
                source.highestmodseq += 1
                for uid in present:
                    del source.entries[uid]
                for sub in ("new", "cur"):
                    files.fsync_dir(os.path.join(source.path, sub))
                self._write_folder(source, uids=True)
                changes.append(Change(
                    ChangeKind.EXPUNGED, account, name, tuple(present), source.highestmodseq))
            return mapping

        return self._run(account, work)

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
        name = validate_mailbox_name(name)
        folder_dirname(name)

        def work(account, state, changes):
            folder = self._folder(state, name, changes)
            present = sorted(set(u for u in uids if u in folder.entries))
            if not present:
                return []
            for uid in present:
                files.unlink_quietly(folder.file(uid))
            for sub in ("new", "cur"):
                files.fsync_dir(os.path.join(folder.path, sub))
            for uid in present:
                del folder.entries[uid]
            folder.highestmodseq += 1
            self._write_folder(folder, uids=True)
            changes.append(Change(
                ChangeKind.EXPUNGED, account, name, tuple(present), folder.highestmodseq))
            return present

        return self._run(account, work)

    def close(self):
        with self._accounts_lock:
            for state in self._accounts.values():
                if state.lock_fd is not None:
                    os.close(state.lock_fd)
                    state.lock_fd = None
                state.folders.clear()
        return None, []


class _AccountLock:
    """The account's thread lock plus an flock, so worker processes take turns too."""

    def __init__(self, state):
        self._state = state

    def __enter__(self):
        state = self._state
        state.lock.acquire()
        try:
            if state.lock_fd is None:
                parent = os.path.dirname(state.root)
                files.makedirs_durably(parent)
                state.lock_fd = os.open(
                    os.path.join(parent, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600
                )
            fcntl.flock(state.lock_fd, fcntl.LOCK_EX)
        except BaseException:
            state.lock.release()
            raise
        return self

    def __exit__(self, *exc):
        try:
            fcntl.flock(self._state.lock_fd, fcntl.LOCK_UN)
        finally:
            self._state.lock.release()
        return False


class MaildirMailStore(StoreFrontend):
    """See IMailStore.  Maildirs live below ``path``; blocking work goes through ``runner``."""

    def __init__(self, path: str, *, runner):
        super().__init__(MaildirStoreCore(path), runner=runner)
