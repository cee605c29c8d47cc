"""
The file formats of a Maildir++ folder as the maildir backend keeps it: message file names and
their ":2," info letters, folder directory names, Dovecot's ``dovecot-uidlist`` and
``dovecot-keywords``, the ``subscriptions`` file, and the folder's own index (MODSEQ per UID
and special use, which Maildir cannot hold).  Parsing is lenient: what another program wrote
badly is skipped, never trusted.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import sqlite3
import time
from dataclasses import dataclass, field

from mailsuite.interfaces import (
    HIERARCHY_SEPARATOR,
    InvalidMailboxName,
    StoreError,
    StoreUnavailable,
)
from mailsuite.store import files
from mailsuite.store.names import INBOX, decode_mutf7, encode_mutf7, validate_mailbox_name
from mailsuite.store.search import META_COLUMNS, meta_from_row, meta_row

UIDLIST = "dovecot-uidlist"
KEYWORDS = "dovecot-keywords"
INDEX = "mailsuite-index.sqlite"
# The index format of earlier versions, imported once and then removed.
LEGACY_INDEX = "mailsuite-index.json"
SUBSCRIPTIONS = "subscriptions"

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

BUSY_TIMEOUT_MS = 10_000

_sequence = itertools.count()
_host = (
    socket.gethostname().replace("/", "\\057").replace(":", "\\072").replace(",", "\\054")
    or "localhost"
)


# ------------------------------------------------------------------ names


def unique_basename(size: int) -> str:
    """A new Maildir file name: "<time>.M<usec>P<pid>Q<n>.<host>,S=<size>"."""
    now = time.time()
    sec = int(now)
    usec = int((now - sec) * 1_000_000)
    return f"{sec}.M{usec}P{os.getpid()}Q{next(_sequence)}.{_host},S={size}"


def split_filename(filename: str) -> tuple[str, str | None]:
    """(base, info letters after ":2," or None) of a message file name."""
    base, sep, info = filename.partition(":")
    return base, (info[2:] if sep and info.startswith("2,") else None)


def size_from_base(base: str) -> int | None:
    """The ",S=<size>" field of a file name, if there is a valid one."""
    for part in base.split(",")[1:]:
        if part.startswith("S=") and part[2:].isdigit():
            return int(part[2:])
    return None


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


# ------------------------------------------------------------------ dovecot-uidlist


@dataclass
class UidList:
    """What a dovecot-uidlist says; ``uidvalidity`` 0 when it has no valid header."""

    uidvalidity: int = 0
    nextuid: int = 1
    listed: dict[str, int] = field(default_factory=dict)
    lines: int = 0
    # False when the file needs rewriting: missing header, torn last line, UIDs out of order.
    clean: bool = True


def read_uidlist(path: str) -> UidList:
    """
    Parse a version 3 dovecot-uidlist: "3 V<uidvalidity> N<nextuid> ..." then one
    "<uid> [<extensions>] :<basename>" line per message.  Records may have been appended after
    the header was written, so the next UID is the larger of N and the last UID + 1.
    """
    result = UidList()
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            header = f.readline()
            fields = header.split()
            if not header.endswith("\n") or not fields or fields[0] != "3":
                result.clean = False
                return result
            for item in fields[1:]:
                if item[:1] == "V" and item[1:].isdigit():
                    result.uidvalidity = int(item[1:])
                elif item[:1] == "N" and item[1:].isdigit():
                    result.nextuid = int(item[1:])
            last = 0
            for line in f:
                result.lines += 1
                if not line.endswith("\n"):
                    # A record cut short by a crash; the rewrite drops it.
                    result.clean = False
                    break
                uid_text, _, rest = line.partition(" ")
                base = rest.rpartition(":")[2].strip() if ":" in rest else ""
                if not uid_text.isdigit() or not base:
                    continue
                uid = int(uid_text)
                if uid <= last:
                    result.clean = False
                last = max(last, uid)
                # Records are appended in UID order, so a later line for a name wins.
                result.listed[base] = uid
            result.nextuid = max(result.nextuid, last + 1)
    except FileNotFoundError:
        result.clean = False
    if not result.uidvalidity:
        result.clean = False
    return result


def uidlist_record(uid: int, base: str) -> str:
    return f"{uid} :{base}\n"


def write_uidlist(path: str, uidvalidity: int, nextuid: int, records) -> None:
    """Replace the uidlist with a header and ``records`` ((uid, base) in UID order)."""
    lines = [f"3 V{uidvalidity} N{nextuid}\n"]
    lines.extend(uidlist_record(uid, base) for uid, base in records)
    files.replace_file_durably(path, "".join(lines).encode("utf-8"))


def append_uidlist(path: str, records) -> None:
    """Add ``records`` ((uid, base), ascending, above every listed UID) at the end."""
    text = "".join(uidlist_record(uid, base) for uid, base in records)
    files.append_durably(path, text.encode("utf-8"))


# ------------------------------------------------------------------ dovecot-keywords


def read_keywords(path: str) -> list[str]:
    """The keywords of "<index> <keyword>" lines; index i is info letter a + i."""
    keywords = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                index, _, word = line.rstrip("\n").partition(" ")
                if index.isdigit() and int(index) == len(keywords) and word:
                    keywords.append(word)
    except FileNotFoundError:
        pass
    return keywords


def write_keywords(path: str, keywords) -> None:
    text = "".join(f"{i} {word}\n" for i, word in enumerate(keywords))
    files.replace_file_durably(path, text.encode("utf-8"))


# ------------------------------------------------------------------ subscriptions


def subscription_line(name: str) -> str:
    return (folder_dirname(name)[1:] or INBOX) + "\n"


def read_subscriptions(path: str) -> list[str]:
    """Mailbox names of a Maildir++ subscriptions file (folder names without the dot)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line.rstrip("\n") for line in f if line.strip()]
    except FileNotFoundError:
        return []
    names = []
    for line in lines:
        name = INBOX if line == INBOX else folder_name("." + line)
        if name is not None:
            names.append(name)
    return names


def write_subscriptions(path: str, names) -> None:
    text = "".join(subscription_line(n) for n in sorted(set(names)))
    files.replace_file_durably(path, text.encode("utf-8"))


# ------------------------------------------------------------------ the folder index

_INDEX_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS records (
    uid INTEGER PRIMARY KEY,
    modseq INTEGER NOT NULL,
    info TEXT
);
CREATE TABLE IF NOT EXISTS expunged (uid INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS files (
    base TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS message_meta (
    uid INTEGER PRIMARY KEY,
    base TEXT NOT NULL,
    %s
);
""" % ",\n    ".join(META_COLUMNS)

# Stored special use when the folder has none (a missing row means "the default").
_NO_SPECIAL_USE = ""


@dataclass
class IndexState:
    highestmodseq: int
    special_use: str | None
    # False when the index has no special-use row: the folder's default applies.
    special_use_known: bool
    # uid -> (modseq, info letters or None) as last recorded
    records: dict[int, tuple[int, str | None]]
    # UIDs reported expunged whose uidlist lines are still there (until the next rewrite)
    expunged: set[int]


class FolderIndex:
    """
    MODSEQ per UID, the highest MODSEQ and the special use of one folder, in a small SQLite
    database (WAL) in the folder's directory: each change writes only the rows it touches.
    A record also keeps the info letters the message had, so a flag change made by another
    program shows as a record that no longer matches.  Removed records leave their UID in
    ``expunged`` until the uidlist is rewritten without them: a file that comes back under
    such a line gets a new UID (RFC 3501 §2.3.1.1: UIDs are never reused).

    The index also caches the MessageMeta of messages by UID, with the file's base name so a
    row never describes another file.
    """

    def __init__(self, folder_path: str):
        self._path = os.path.join(folder_path, INDEX)
        self._db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._db.execute("PRAGMA journal_mode = WAL")
            # FULL: a MODSEQ handed to a client is on disk, so it never goes backwards.
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.executescript(_INDEX_SCHEMA)
            self._import_legacy(folder_path)
        except BaseException:
            self._db.close()
            raise

    def _import_legacy(self, folder_path):
        legacy = os.path.join(folder_path, LEGACY_INDEX)
        if not os.path.exists(legacy):
            return
        try:
            with open(legacy, encoding="utf-8") as f:
                data = json.load(f)
            records = {
                int(uid): (int(record[0]), record[1])
                for uid, record in data.get("modseq", {}).items()
            }
            highest = int(data.get("highestmodseq", 0))
        except (ValueError, TypeError, IndexError, AttributeError, OSError):
            data, records, highest = {}, {}, 0
        if self.load().highestmodseq == 0:
            kwargs = {"special_use": data["special_use"]} if "special_use" in data else {}
            self.save(highest, upsert=records, **kwargs)
        files.unlink_quietly(legacy)

    def load(self) -> IndexState:
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        records = {
            uid: (modseq, info)
            for uid, modseq, info in self._db.execute("SELECT uid, modseq, info FROM records")
        }
        special = meta.get("special_use")
        return IndexState(
            highestmodseq=int(meta.get("highestmodseq") or 0),
            special_use=special or None,
            special_use_known="special_use" in meta,
            records=records,
            expunged={uid for (uid,) in self._db.execute("SELECT uid FROM expunged")},
        )

    _UNCHANGED = object()

    def save(
        self, highestmodseq, *, upsert=(), delete=(), special_use=_UNCHANGED,
        clear=False, forget_expunged=False, meta=(),
    ):
        """
        Record the new highest MODSEQ with ``upsert`` ({uid: (modseq, info)}) and ``delete``
        (UIDs, kept as expunged) and ``meta`` ({uid: (base, MessageMeta)}) in one durable
        transaction.  ``clear`` first drops every
        record; ``forget_expunged`` drops the expunged UIDs (the uidlist no longer names them).
        """
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                if clear:
                    db.execute("DELETE FROM records")
                    db.execute("DELETE FROM message_meta")
                if forget_expunged:
                    db.execute("DELETE FROM expunged")
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('highestmodseq', ?)",
                    (highestmodseq,),
                )
                if special_use is not self._UNCHANGED:
                    db.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('special_use', ?)",
                        (special_use or _NO_SPECIAL_USE,),
                    )
                if upsert:
                    db.executemany(
                        "INSERT OR REPLACE INTO records (uid, modseq, info) VALUES (?, ?, ?)",
                        [(uid, modseq, info) for uid, (modseq, info) in dict(upsert).items()],
                    )
                if delete:
                    gone = [(uid,) for uid in delete]
                    db.executemany("DELETE FROM records WHERE uid = ?", gone)
                    db.executemany("DELETE FROM message_meta WHERE uid = ?", gone)
                    db.executemany("INSERT OR IGNORE INTO expunged (uid) VALUES (?)", gone)
                if meta:
                    self._put_meta(meta)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise StoreUnavailable("mail storage is unavailable") from e

    def _put_meta(self, meta):
        marks = ", ".join("?" * (len(META_COLUMNS) + 2))
        self._db.executemany(
            f"INSERT OR REPLACE INTO message_meta (uid, base, {', '.join(META_COLUMNS)}) "
            f"VALUES ({marks})",
            [(uid, base, *meta_row(value)) for uid, (base, value) in dict(meta).items()],
        )

    def save_meta(self, meta) -> None:
        """Cache ``meta`` ({uid: (base, MessageMeta)}) in one transaction."""
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._put_meta(meta)
        except sqlite3.Error as e:
            raise StoreUnavailable("mail storage is unavailable") from e

    def load_meta(self, uids=None) -> dict:
        """{uid: (base, MessageMeta)} cached for ``uids`` (None: every message)."""
        columns = ", ".join(META_COLUMNS)
        try:
            if uids is None:
                rows = self._db.execute(f"SELECT uid, base, {columns} FROM message_meta")
                return {uid: (base, meta_from_row(row)) for uid, base, *row in rows}
            found = {}
            wanted = sorted(set(uids))
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                rows = self._db.execute(
                    f"SELECT uid, base, {columns} FROM message_meta "
                    f"WHERE uid IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
                found.update((uid, (base, meta_from_row(row))) for uid, base, *row in rows)
            return found
        except sqlite3.Error as e:
            raise StoreUnavailable("mail storage is unavailable") from e

    def load_files(self) -> dict[str, tuple[int, int]]:
        """{base name: (size, mtime in ns)} of the message files recorded so far."""
        try:
            return {base: (size, ns) for base, size, ns in
                    self._db.execute("SELECT base, size, mtime_ns FROM files")}
        except sqlite3.Error as e:
            raise StoreUnavailable("mail storage is unavailable") from e

    def save_files(self, found, *, gone=()) -> None:
        """Record ``found`` ({base: (size, mtime ns)}) and drop the bases of ``gone``."""
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT OR REPLACE INTO files (base, size, mtime_ns) VALUES (?, ?, ?)",
                    [(base, size, ns) for base, (size, ns) in dict(found).items()],
                )
                self._db.executemany("DELETE FROM files WHERE base = ?",
                                     [(base,) for base in gone])
        except sqlite3.Error as e:
            raise StoreUnavailable("mail storage is unavailable") from e

    def close(self):
        self._db.close()
