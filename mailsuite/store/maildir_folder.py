"""
The in-memory state of a Maildir++ account as the maildir backend caches it: per folder the
messages by UID (file name, flags letters, MODSEQ) and the mapping between IMAP flags and
":2," info letters; per account the folders and the lock shared with other processes.
"""

from __future__ import annotations

import fcntl
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone

from mailsuite.interfaces import DEFAULT_MAILBOXES, MessageInfo, StoreError
from mailsuite.store import files
from mailsuite.store.maildir_files import (
    FLAG_LETTERS,
    KEYWORD_LETTERS,
    LETTER_FLAGS,
    FolderIndex,
    size_from_base,
)

LOCK_FILE = "mailsuite.lock"
DEFAULT_SPECIAL_USE = dict(DEFAULT_MAILBOXES)


def to_ns(moment: datetime) -> int:
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (moment - epoch) // _MICROSECOND * 1000


_MICROSECOND = datetime.resolution


def from_ns(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 1000 / 1_000_000, tz=timezone.utc).replace(
        microsecond=(ns // 1000) % 1_000_000
    )


@dataclass
class Entry:
    base: str
    sub: str  # "new" or "cur"
    info: str | None  # the letters after ":2,", None for a file without info
    modseq: int

    @property
    def filename(self):
        return self.base if self.info is None else f"{self.base}:2,{self.info}"

    @property
    def record(self):
        return self.modseq, self.info


class Folder:
    """What is known of one mailbox directory, rebuilt from disk when it changes."""

    def __init__(self, state, name, path):
        self.state = state
        self.name = name
        self.path = path
        self.uidvalidity = 0
        self.nextuid = 1
        self.highestmodseq = 0
        self.special_use = DEFAULT_SPECIAL_USE.get(name)
        self._keywords: list[str] = []
        # The flag set of each ":2," info string, shared by the messages having it.
        self._flag_sets: dict[str | None, frozenset] = {}
        # base name -> (size, internal date): a message file's base name, size and mtime
        # never change while it exists, so a listing needs no stat() once it is known.
        self._file_meta: dict[str, tuple[int, datetime]] = {}
        # The same facts as the folder index keeps them, so a restart needs no stat() per
        # message: loaded once, and what was learnt by stat() is written back by save_files.
        self._files_loaded = False
        self._stated: dict[str, tuple[int, int]] = {}
        self.entries: dict[int, _Entry] = {}
        self.uidlist_lines = 0
        # (mtime of new/, cur/, uidlist, size of uidlist) as last written or seen
        self.stamp = None
        # False while a change within one mtime tick of ``stamp`` could be unseen.
        self.verified = False
        self.scanned_at = 0.0
        self._index = None

    @property
    def index(self) -> FolderIndex:
        if self._index is None:
            self._index = FolderIndex(self.path)
        return self._index

    def close(self):
        if self._index is not None:
            self._index.close()
            self._index = None

    def file(self, uid):
        entry = self.entries[uid]
        return os.path.join(self.path, entry.sub, entry.filename)

    @property
    def keywords(self) -> list[str]:
        return self._keywords

    @keywords.setter
    def keywords(self, keywords: list[str]) -> None:
        self._keywords = keywords
        self._flag_sets.clear()

    def forget_files(self, keep) -> None:
        """Drop the cached size and date of files whose base name is not in ``keep``."""
        meta = self._file_meta
        if len(meta) > len(keep):
            self._file_meta = {base: meta[base] for base in keep if base in meta}

    def flags(self, entry) -> frozenset:
        flags = self._flag_sets.get(entry.info)
        if flags is None:
            flags = self._flag_sets[entry.info] = self._parse_flags(entry)
        return flags

    def _parse_flags(self, entry) -> frozenset:
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
                # A letter unknown so far may name this keyword now.
                self._flag_sets.clear()
                grew = True
            letters.add(KEYWORD_LETTERS[self.keywords.index(flag)])
        for letter in keep:
            known = letter in LETTER_FLAGS or (
                letter in KEYWORD_LETTERS and KEYWORD_LETTERS.index(letter) < len(self.keywords)
            )
            if not known:
                letters.add(letter)
        return "".join(sorted(letters)), grew

    def _load_files(self) -> None:
        self._files_loaded = True
        known = self.index.load_files()
        present = {entry.base for entry in self.entries.values()}
        meta = self._file_meta
        for base, (size, ns) in known.items():
            if base in present and base not in meta:
                meta[base] = (size, from_ns(ns))
        gone = [base for base in known if base not in present]
        if gone:
            self.index.save_files({}, gone=gone)

    def _meta(self, uid, entry) -> tuple[int, datetime]:
        meta = self._file_meta.get(entry.base)
        if meta is None and not self._files_loaded:
            self._load_files()
            meta = self._file_meta.get(entry.base)
        if meta is None:
            stat = os.stat(self.file(uid))
            size = size_from_base(entry.base)
            size = size if size is not None else stat.st_size
            meta = (size, from_ns(stat.st_mtime_ns))
            self._file_meta[entry.base] = meta
            self._stated[entry.base] = (size, stat.st_mtime_ns)
        return meta

    def note_file(self, base: str, size: int, mtime_ns: int) -> None:
        """Know a file just written (kept in the index at the next save_files)."""
        self._file_meta[base] = (size, from_ns(mtime_ns))
        self._stated[base] = (size, mtime_ns)

    def save_files(self) -> None:
        """Record in the folder index the sizes and dates learnt by stat() since last time."""
        if self._stated:
            stated, self._stated = self._stated, {}
            self.index.save_files(stated)

    def size(self, uid) -> int:
        entry = self.entries[uid]
        meta = self._file_meta.get(entry.base)
        if meta is not None:
            return meta[0]
        size = size_from_base(entry.base)
        return size if size is not None else self._meta(uid, entry)[0]

    def info(self, uid) -> MessageInfo:
        entry = self.entries[uid]
        size, date = self._meta(uid, entry)
        return MessageInfo(uid, self.flags(entry), entry.modseq, date, size)


class Account:
    def __init__(self, name, root):
        self.name = name
        self.root = root
        self.lock = threading.Lock()
        self.folders: dict[str, Folder] = {}
        self.lock_fd = None

    def forget(self, name):
        """Drop the cached state of ``name`` (its next use reads it from disk again)."""
        folder = self.folders.pop(name, None)
        if folder is not None:
            folder.close()

    def forget_all(self):
        for name in list(self.folders):
            self.forget(name)

    def release(self):
        """Drop all cached state and close the lock file (account lock held)."""
        self.forget_all()
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


class Changing:
    """A change to ``folders``: on failure their cached state, which may be half updated,
    is dropped and read from disk again on next use."""

    def __init__(self, state, *folders):
        self._state = state
        self._folders = folders

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is not None:
            for folder in self._folders:
                if self._state.folders.get(folder.name) is folder:
                    self._state.forget(folder.name)
                else:
                    folder.close()
        return False


class AccountLock:
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
