"""
Verify a mail store after a crash and repair what can be repaired without guessing: the
logic behind ``mailsuite check --store [--repair]``.  It reads and writes the store's files
directly, so it runs only while the server is stopped (see ``running_server``).

What is verified:

sqlite   ``PRAGMA integrity_check`` of index.sqlite; every message row names a body file that
         exists and has the recorded size; no body file is named by no row (the file of an
         expunge cut short, which the store recorded, is a leftover); nothing is left
         in tmp/; each mailbox's UIDNEXT is above its UIDs and its HIGHESTMODSEQ at or above
         its MODSEQs; the UIDVALIDITY counter is at or above every mailbox's; the search
         index rows belong to existing messages.
maildir  per folder: dovecot-uidlist is well formed and gives no UID to two files; every
         message file is listed and every listed UID has its file; the folder index is sound
         and has a MODSEQ record matching each message's flags, HIGHESTMODSEQ at or above
         them and no UID at or above the next UID; the size in each file name (",S=")
         matches the file; dovecot-keywords is well formed; nothing is left in tmp/ or in a
         half-created account; the account's UIDVALIDITY counter is at or above every
         folder's.

What ``repair`` does: leftovers of interrupted writes (never visible to clients) are removed;
a body file no index names becomes a new message in INBOX (mail that reached the disk is
never thrown away, so a delivery cut short by the crash, never acknowledged, may show up in
INBOX, whichever mailbox it was meant for); index entries whose file is gone are expunged;
counters are raised above every value in use; a malformed keywords file is rewritten with the
keywords it names.  A damaged SQLite database and a message file whose size disagrees with
its index are reported and left alone: fixing them needs a person (or a backup).  A repair
that fails says so, and what it was meant to fix stays on the list of remaining problems.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone

from mailsuite.interfaces import StoreError
from mailsuite.store import files
from mailsuite.store.maildir_files import (
    INDEX,
    KEYWORD_LETTERS,
    KEYWORDS,
    UIDLIST,
    folder_name,
    read_keywords,
    read_uidlist,
    size_from_base,
    split_filename,
    write_keywords,
)
from mailsuite.store.names import INBOX, validate_account

# Kinds of problem.  A SIGKILL can leave only LEFTOVER and ORPHAN in a sqlite store, and
# those plus MISSING and STALE in a maildir one; the others mean damage from outside.
LEFTOVER = "leftover"  # a file of an interrupted write, never visible to clients
ORPHAN = "orphan"  # a message file no index names
MISSING = "missing"  # an index entry whose message file is gone
STALE = "stale"  # an index record that disagrees with the files
COUNTER = "counter"  # a UID, MODSEQ or UIDVALIDITY counter below a value in use
DUPLICATE = "duplicate"  # one UID or one file name used twice
FORMAT = "format"  # a malformed metadata file
DAMAGED = "damaged"  # a broken database or a message file of the wrong size

CRASH_KINDS = {
    "sqlite": frozenset({LEFTOVER, ORPHAN}),
    "maildir": frozenset({LEFTOVER, ORPHAN, MISSING, STALE}),
}

# Repair rounds: a repair may reveal more (rows of a lost mailbox leave unnamed files).
MAX_REPAIR_PASSES = 3

SQLITE_INDEX = "index.sqlite"
_UIDVALIDITY_FILE = "mailsuite-uidvalidity"
_ACCOUNT_STAGING = "Maildir.creating-"


@dataclass(frozen=True)
class Problem:
    """
    One thing wrong with a store: ``kind`` (one of the constants above), ``where`` (an
    account and mailbox, or a path below the store) and ``text``, a readable line.
    ``repair`` is the backend's action that fixes it (equal actions run once), or None when
    it needs a person.
    """

    kind: str
    where: str
    text: str
    repair: tuple | None = field(default=None, compare=False)

    def line(self) -> str:
        return _printable(f"{self.where}: {self.text}")


@dataclass
class CheckReport:
    """What check_store found and did: ``found`` before any repair, ``repaired`` a line per
    change made, ``remaining`` what is still wrong (``found`` when not repairing)."""

    backend: str
    path: str
    found: list[Problem]
    repaired: list[str]
    remaining: list[Problem]
    mailboxes: int = 0
    messages: int = 0

    @property
    def clean(self) -> bool:
        return not self.remaining


def check_store(backend: str, path: str, *, repair: bool = False) -> CheckReport:
    """Verify the ``backend`` store at ``path``; with ``repair``, fix what can be fixed and
    verify again.  StoreError for a backend this module cannot check."""
    checkers = {"sqlite": SQLiteCheck, "maildir": MaildirCheck}
    if backend not in checkers:
        raise StoreError(f"no store check for the {backend!r} backend")
    checker = checkers[backend](path)
    found = checker.verify()
    remaining, repaired = found, []
    if repair:
        for _ in range(MAX_REPAIR_PASSES):
            actions = list(dict.fromkeys(p.repair for p in remaining if p.repair is not None))
            if not actions:
                break
            repaired += checker.repair(actions)
            remaining = checker.verify()
    return CheckReport(backend, os.path.abspath(path), found, repaired, remaining,
                       checker.mailboxes, checker.messages)


def running_server(data_dir: str) -> int | None:
    """
    The pid of a mailsuite server using ``data_dir``, from run/listening.json, if that
    process is alive (and, where /proc tells, is a mailsuite process); else None.  A server
    killed without a chance to clean up leaves the file behind with a dead pid.
    """
    try:
        with open(os.path.join(data_dir, "run", "listening.json"), encoding="utf-8") as f:
            pid = json.load(f)["pid"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read()
    except FileNotFoundError:
        return pid if not os.path.isdir("/proc/self") else None
    except OSError:
        return pid
    # A pid reused by an unrelated process after the server died is no server.
    return pid if b"mailsuite" in command or b"twistd" in command else None


# ------------------------------------------------------------------ shared helpers


def _printable(text: str) -> str:
    # File names come from disk and may hold anything: no control characters reach a terminal.
    return "".join(c if c.isprintable() else "?" for c in text)


def _open_read_only(path: str) -> sqlite3.Connection:
    """A connection that cannot change the database.  Without a write-ahead log to read it
    is opened immutable, so not even an empty -wal file appears."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    try:
        unfinished = os.path.getsize(path + "-wal") > 0
    except FileNotFoundError:
        unfinished = False
    if not unfinished:
        uri += "&immutable=1"
    return sqlite3.connect(uri, uri=True)


def _integrity(db) -> list[str]:
    """The complaints of PRAGMA integrity_check (empty when the database is sound)."""
    lines = [row[0] for row in db.execute("PRAGMA integrity_check(20)")]
    return [] if lines == ["ok"] else lines


def _remove(path: str) -> str:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        files.unlink_quietly(path)
    files.fsync_dir(os.path.dirname(path))
    return path


def _leftovers(directory: str, where: str, relative: str) -> list[Problem]:
    """Everything in ``directory`` (a tmp/) as LEFTOVER problems."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    return [
        Problem(LEFTOVER, where, f"leftover of an interrupted write: {relative}/{name}",
                ("remove", os.path.join(directory, name)))
        for name in names
    ]


def _describe(action: tuple, root: str) -> str:
    """What a repair action was meant to do, for the line saying it failed."""
    kind, *args = action
    if kind in ("remove", "mkdir", "keywords"):
        return f"{kind} {os.path.relpath(args[0], root)}"
    if kind == "adopt":
        return f"add {os.path.relpath(args[1], root)} to {args[0]}/{INBOX}"
    if kind == "expunge":
        return f"expunge {args[0]}/{args[1]} UID {args[2]}"
    if kind == "rescan":
        return f"repair {args[0]}/{args[1]}"
    return f"repair the {kind}"


def _mtime(path: str) -> datetime:
    return datetime.fromtimestamp(os.stat(path).st_mtime, tz=timezone.utc)


# ------------------------------------------------------------------ sqlite


class SQLiteCheck:
    """Verify and repair a store of mailsuite.store.sqlite at ``path``."""

    _STAGES = {"remove": 0, "index": 1, "expunge": 2, "counters": 3, "adopt": 4}

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.messages_dir = os.path.join(self.path, "messages")
        self.mailboxes = 0
        self.messages = 0
        # Paths of the body files an expunge recorded as to be removed.
        self.unlinking: set[str] = set()

    def verify(self) -> list[Problem]:
        problems = _leftovers(os.path.join(self.path, "tmp"), "tmp", "tmp")
        rows, mailboxes = [], {}
        self.unlinking = set()
        database = os.path.join(self.path, SQLITE_INDEX)
        if os.path.exists(database):
            try:
                db = _open_read_only(database)
                try:
                    damage = _integrity(db)
                    if damage:
                        return problems + [
                            Problem(DAMAGED, SQLITE_INDEX, f"integrity check: {line}")
                            for line in damage
                        ]
                    rows, mailboxes = self._read_index(db, problems)
                finally:
                    db.close()
            except sqlite3.DatabaseError as e:
                return problems + [Problem(DAMAGED, SQLITE_INDEX, f"unreadable: {e}")]
        self.mailboxes, self.messages = len(mailboxes), len(rows)
        problems += self._check_files(rows, mailboxes)
        return problems

    def _read_index(self, db, problems) -> tuple[list, dict]:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        if not {"mailboxes", "messages", "meta"} <= tables:
            return [], {}
        mailboxes = {
            box_id: (account, name, uidvalidity, uidnext, highest)
            for box_id, account, name, uidvalidity, uidnext, highest in db.execute(
                "SELECT id, account, name, uidvalidity, uidnext, highestmodseq FROM mailboxes")
        }
        rows = db.execute(
            "SELECT mailbox, uid, modseq, size, file FROM messages ORDER BY mailbox, uid"
        ).fetchall()
        if "unlinking" in tables:
            self.unlinking = {
                os.path.join(self.messages_dir, account, file_id[:2], file_id)
                for file_id, account in db.execute("SELECT file, account FROM unlinking")
            }
        row = db.execute("SELECT value FROM meta WHERE key = 'uidvalidity'").fetchone()
        counter = row[0] if row else 0
        tops = {}
        for box_id, uid, modseq, _, _ in rows:
            top_uid, top_modseq = tops.get(box_id, (0, 0))
            tops[box_id] = (max(top_uid, uid), max(top_modseq, modseq))
        for box_id, (account, name, uidvalidity, uidnext, highest) in mailboxes.items():
            where = f"{account}/{name}"
            top_uid, top_modseq = tops.get(box_id, (0, 0))
            if top_uid >= uidnext:
                problems.append(Problem(COUNTER, where, f"UIDNEXT {uidnext} is not above "
                                        f"UID {top_uid}", ("counters",)))
            if top_modseq > highest:
                problems.append(Problem(COUNTER, where, f"HIGHESTMODSEQ {highest} is below "
                                        f"MODSEQ {top_modseq}", ("counters",)))
            if uidvalidity > counter:
                problems.append(Problem(COUNTER, where, f"UIDVALIDITY {uidvalidity} is above "
                                        f"the counter {counter}", ("counters",)))
        lost = sorted({box_id for box_id, *_ in rows if box_id not in mailboxes})
        for box_id in lost:
            count = sum(1 for row in rows if row[0] == box_id)
            problems.append(Problem(STALE, SQLITE_INDEX, f"{count} message rows belong to "
                                    f"mailbox id {box_id}, which does not exist", ("index",)))
        if {"message_meta", "header_fields"} <= tables:
            problems += self._check_search_index(db)
        return rows, mailboxes

    @staticmethod
    def _check_search_index(db) -> list[Problem]:
        columns = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
        found = []
        if "doc" in columns:
            (detached,) = db.execute(
                "SELECT COUNT(*) FROM messages WHERE doc IS NOT NULL AND NOT EXISTS ("
                "SELECT 1 FROM message_meta WHERE message_meta.doc = messages.doc "
                "AND message_meta.file = messages.file)"
            ).fetchone()
            if detached:
                found.append(Problem(STALE, SQLITE_INDEX, f"{detached} messages point to a "
                                     f"missing or foreign search index entry", ("index",)))
        (unused,) = db.execute(
            "SELECT COUNT(*) FROM message_meta WHERE file NOT IN (SELECT file FROM messages)"
        ).fetchone()
        (fields,) = db.execute(
            "SELECT COUNT(DISTINCT doc) FROM header_fields "
            "WHERE doc NOT IN (SELECT doc FROM message_meta)"
        ).fetchone()
        if unused or fields:
            found.append(Problem(STALE, SQLITE_INDEX, f"{max(unused, fields)} search index "
                                 f"entries belong to no message", ("index",)))
        return found

    def _check_files(self, rows, mailboxes) -> list[Problem]:
        problems = []
        on_disk = self._files_on_disk(problems)
        named = set()
        for box_id, uid, _, size, file_id in rows:
            if box_id not in mailboxes:
                continue
            account, name = mailboxes[box_id][:2]
            path = os.path.join(self.messages_dir, account, file_id[:2], file_id)
            named.add(path)
            where = f"{account}/{name} UID {uid}"
            if path not in on_disk:
                problems.append(Problem(MISSING, where, f"its message file {file_id} is missing",
                                        ("expunge", account, name, uid)))
            elif on_disk[path] != size:
                problems.append(Problem(DAMAGED, where, f"its message file {file_id} has "
                                        f"{on_disk[path]} octets, the index says {size}"))
        for path in sorted(set(on_disk) - named):
            relative = os.path.relpath(path, self.path)
            account = os.path.relpath(path, self.messages_dir).split(os.sep)[0]
            try:
                validate_account(account)
            except StoreError:
                problems.append(Problem(ORPHAN, relative, "a file outside any account"))
                continue
            if path in self.unlinking:
                problems.append(Problem(LEFTOVER, relative, "the file of an expunged message, "
                                        "not yet removed", ("remove", path)))
            elif on_disk[path] == 0:
                problems.append(Problem(ORPHAN, relative, "an empty file no message names",
                                        ("remove", path)))
            else:
                problems.append(Problem(ORPHAN, relative, "a message file no index row names",
                                        ("adopt", account, path)))
        return problems

    def _files_on_disk(self, problems) -> dict[str, int]:
        """{path: size} of every file below messages/ (account/bucket/file)."""
        found = {}
        if not os.path.isdir(self.messages_dir):
            return found
        for top, _, names in os.walk(self.messages_dir):
            for name in names:
                path = os.path.join(top, name)
                if len(os.path.relpath(path, self.messages_dir).split(os.sep)) != 3:
                    problems.append(Problem(ORPHAN, os.path.relpath(path, self.path),
                                            "a file outside the message layout"))
                    continue
                try:
                    found[path] = os.lstat(path).st_size
                except FileNotFoundError:
                    continue
        return found

    def repair(self, actions) -> list[str]:
        from mailsuite.store.sqlite import SQLiteStoreCore

        done = []
        core = SQLiteStoreCore(self.path)
        try:
            for action in sorted(actions, key=lambda a: self._STAGES[a[0]]):
                try:
                    done += self._apply(core, action)
                except (OSError, StoreError, sqlite3.Error) as e:
                    done.append(f"could not {_describe(action, self.path)}: {e}")
        finally:
            core.close()
        return [_printable(line) for line in done]

    def _apply(self, core, action) -> list[str]:
        done = []
        kind, *args = action
        if kind == "remove":
            done.append(f"removed {os.path.relpath(_remove(args[0]), self.path)}")
        elif kind == "index":
            done += core.repair_index()
        elif kind == "expunge":
            account, name, uid = args
            core.expunge(account, name, [uid])
            done.append(f"{account}/{name}: UID {uid} expunged, its file is gone")
        elif kind == "counters":
            done += core.raise_counters()
        elif kind == "adopt":
            account, path = args
            info = core.adopt_file(account, path, _mtime(path))
            done.append(f"{account}/{INBOX}: {os.path.relpath(path, self.path)} added as "
                        f"UID {info.uid}")
        return done


# ------------------------------------------------------------------ maildir


class MaildirCheck:
    """Verify and repair a store of mailsuite.store.maildir at ``path``."""

    _STAGES = {"remove": 0, "mkdir": 0, "keywords": 1, "uidvalidity": 1, "rescan": 2}

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.mailboxes = 0
        self.messages = 0

    def verify(self) -> list[Problem]:
        self.mailboxes = self.messages = 0
        problems = []
        if not os.path.isdir(self.path):
            return problems
        for account in sorted(os.listdir(self.path)):
            home = os.path.join(self.path, account)
            if not os.path.isdir(home):
                continue
            for name in sorted(os.listdir(home)):
                if name.startswith(_ACCOUNT_STAGING):
                    problems.append(Problem(LEFTOVER, account, f"leftover of an interrupted "
                                            f"account creation: {name}",
                                            ("remove", os.path.join(home, name))))
            root = os.path.join(home, "Maildir")
            if os.path.isdir(root):
                problems += self._account(account, root)
        return problems

    def _account(self, account, root) -> list[Problem]:
        problems = []
        counter = _read_counter(os.path.join(root, _UIDVALIDITY_FILE))
        folders = [(INBOX, root)] if os.path.isdir(os.path.join(root, "cur")) else []
        for entry in sorted(os.listdir(root)):
            name = folder_name(entry)
            path = os.path.join(root, entry)
            if name is not None and os.path.isdir(os.path.join(path, "cur")):
                folders.append((name, path))
        highest_uidvalidity = 0
        for name, path in folders:
            self.mailboxes += 1
            uidvalidity, found = self._folder(account, name, path)
            problems += found
            highest_uidvalidity = max(highest_uidvalidity, uidvalidity)
        if highest_uidvalidity > counter:
            problems.append(Problem(COUNTER, account, f"the UIDVALIDITY counter {counter} is "
                                    f"below a folder's {highest_uidvalidity}",
                                    ("uidvalidity", root, highest_uidvalidity)))
        return problems

    def _folder(self, account, name, path) -> tuple[int, list[Problem]]:
        where = f"{account}/{name}"
        rescan = ("rescan", account, name)
        problems = []
        for sub in ("new", "tmp"):
            if not os.path.isdir(os.path.join(path, sub)):
                problems.append(Problem(FORMAT, where, f"{sub}/ is missing",
                                        ("mkdir", os.path.join(path, sub))))
        problems += _leftovers(os.path.join(path, "tmp"), where, "tmp")
        for name in sorted(os.listdir(path)):
            # Metadata files are replaced through "<name>.tmp" (files.replace_file_durably).
            if name.endswith(".tmp") and os.path.isfile(os.path.join(path, name)):
                problems.append(Problem(LEFTOVER, where, f"leftover of an interrupted write: "
                                        f"{name}", ("remove", os.path.join(path, name))))
        found, sizes = {}, {}
        for sub in ("new", "cur"):
            directory = os.path.join(path, sub)
            if not os.path.isdir(directory):
                continue
            for filename in sorted(os.listdir(directory)):
                if filename.startswith("."):
                    continue
                base, info = split_filename(filename)
                file_path = os.path.join(directory, filename)
                if base in found:
                    problems.append(Problem(DUPLICATE, where, f"file {base} is there twice: "
                                            f"{found[base][1]} and {file_path}"))
                    continue
                found[base] = (info, file_path)
                expected = size_from_base(base)
                actual = os.lstat(file_path).st_size
                sizes[base] = actual if expected is None else expected
                if expected is not None and expected != actual:
                    problems.append(Problem(DAMAGED, where, f"file {base} has {actual} "
                                            f"octets, its name says {expected}"))
        uidlist_path = os.path.join(path, UIDLIST)
        uidlist = read_uidlist(uidlist_path)
        problems += _uidlist_format(uidlist_path, where, rescan)
        index = self._read_index(path, where, rescan, problems)
        expunged = index["expunged"] if index else set()
        records = index["records"] if index else {}
        live, listed_uids = {}, {}
        for base, uid in uidlist.listed.items():
            if uid in expunged:
                continue
            if uid in listed_uids and listed_uids[uid] != base:
                problems.append(Problem(DUPLICATE, where, f"UID {uid} is given to two "
                                        f"files: {listed_uids[uid]} and {base}", rescan))
                continue
            listed_uids[uid] = base
        for base, (info, _) in sorted(found.items()):
            uid = uidlist.listed.get(base)
            if uid is None:
                problems.append(Problem(ORPHAN, where, f"file {base} is not in {UIDLIST}",
                                        rescan))
            elif uid in expunged:
                problems.append(Problem(STALE, where, f"file {base} is back under expunged "
                                        f"UID {uid}", rescan))
            elif listed_uids.get(uid) == base:
                live[uid] = info
        for uid, base in sorted(listed_uids.items()):
            if base not in found:
                problems.append(Problem(MISSING, where, f"UID {uid} is listed but its file "
                                        f"{base} is gone", rescan))
        if index is not None:
            problems += _index_problems(where, rescan, index, live, listed_uids, uidlist)
            wrong = sorted(base for base, size in index["files"].items()
                           if base in sizes and sizes[base] != size)
            if wrong:
                problems.append(Problem(STALE, where, f"{len(wrong)} cached file sizes are "
                                        f"wrong, e.g. of {wrong[0]}", rescan))
        self.messages += len(live)
        problems += _keywords_problems(os.path.join(path, KEYWORDS), where)
        return uidlist.uidvalidity, problems

    @staticmethod
    def _read_index(path, where, rescan, problems) -> dict | None:
        database = os.path.join(path, INDEX)
        if not os.path.exists(database):
            problems.append(Problem(STALE, where, f"{INDEX} is missing", rescan))
            return None
        try:
            db = _open_read_only(database)
            try:
                damage = _integrity(db)
                if damage:
                    problems += [Problem(DAMAGED, where, f"{INDEX}: integrity check: {line}")
                                 for line in damage]
                    return None
                tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
                if not {"meta", "records", "expunged", "files"} <= tables:
                    problems.append(Problem(STALE, where, f"{INDEX} lacks tables", rescan))
                    return None
                meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
                return {
                    "highest": int(meta.get("highestmodseq") or 0),
                    "records": {uid: (modseq, info) for uid, modseq, info in
                                db.execute("SELECT uid, modseq, info FROM records")},
                    "expunged": {uid for (uid,) in db.execute("SELECT uid FROM expunged")},
                    "files": {base: size for base, size in
                              db.execute("SELECT base, size FROM files")},
                }
            finally:
                db.close()
        except sqlite3.DatabaseError as e:
            problems.append(Problem(DAMAGED, where, f"{INDEX}: unreadable: {e}"))
            return None

    def repair(self, actions) -> list[str]:
        from mailsuite.store.maildir import MaildirStoreCore

        done, core = [], None
        try:
            for action in sorted(actions, key=lambda a: self._STAGES[a[0]]):
                if action[0] == "rescan" and core is None:
                    core = MaildirStoreCore(self.path)
                try:
                    done += self._apply(core, action)
                except (OSError, StoreError, sqlite3.Error) as e:
                    done.append(f"could not {_describe(action, self.path)}: {e}")
        finally:
            if core is not None:
                core.close()
        return [_printable(line) for line in done]

    def _apply(self, core, action) -> list[str]:
        kind, *args = action
        if kind == "remove":
            return [f"removed {os.path.relpath(_remove(args[0]), self.path)}"]
        if kind == "mkdir":
            files.makedirs_durably(args[0])
            return [f"created {os.path.relpath(args[0], self.path)}"]
        if kind == "keywords":
            keywords = read_keywords(args[0])[: len(KEYWORD_LETTERS)]
            write_keywords(args[0], keywords)
            return [f"rewrote {os.path.relpath(args[0], self.path)} with {len(keywords)} "
                    f"keywords"]
        if kind == "uidvalidity":
            root, value = args
            path = os.path.join(root, _UIDVALIDITY_FILE)
            files.replace_file_durably(path, b"%d\n" % value)
            return [f"{os.path.relpath(path, self.path)} raised to {value}"]
        return core.repair_folder(*args)[0]


def _read_counter(path: str) -> int:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read().strip()
    except FileNotFoundError:
        return 0
    return int(text) if text.isdigit() else 0


def _uidlist_format(path, where, rescan) -> list[Problem]:
    """Problems of the dovecot-uidlist file's form: header, order of UIDs, a torn line."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return [Problem(FORMAT, where, f"{UIDLIST} is missing", rescan)]
    lines = data.split(b"\n")
    fields = lines[0].split()
    if len(lines) < 2 or not fields or fields[0] != b"3" or not any(
        f[:1] == b"V" and f[1:].isdigit() for f in fields[1:]
    ):
        return [Problem(FORMAT, where, f"{UIDLIST} has no valid header", rescan)]
    found = []
    if lines[-1]:
        found.append(Problem(FORMAT, where, f"the last line of {UIDLIST} is cut short", rescan))
    last = 0
    for number, line in enumerate(lines[1:-1], start=2):
        uid, _, rest = line.partition(b" ")
        if not uid.isdigit() or b":" not in rest:
            found.append(Problem(FORMAT, where, f"{UIDLIST} line {number} is malformed", rescan))
            continue
        if int(uid) <= last:
            found.append(Problem(FORMAT, where, f"{UIDLIST} line {number}: UID {int(uid)} is "
                                 f"not above the line before", rescan))
        last = max(last, int(uid))
    return found


def _index_problems(where, rescan, index, live, listed_uids, uidlist) -> list[Problem]:
    """Problems of a folder index against the live messages ({uid: info letters})."""
    found = []
    records = index["records"]
    for uid, info in sorted(live.items()):
        record = records.get(uid)
        if record is None:
            found.append(Problem(STALE, where, f"UID {uid} has no MODSEQ record", rescan))
        elif record[1] != info:
            found.append(Problem(STALE, where, f"the flags of UID {uid} changed without a "
                                 f"new MODSEQ", rescan))
    for uid in sorted(records):
        if uid not in live and uid not in listed_uids:
            found.append(Problem(STALE, where, f"the index has a record for UID {uid}, "
                                 f"which has no file", rescan))
    top = max((modseq for modseq, _ in records.values()), default=0)
    if top > index["highest"]:
        found.append(Problem(COUNTER, where, f"HIGHESTMODSEQ {index['highest']} is below "
                             f"MODSEQ {top}", rescan))
    used = max([*records, *index["expunged"]], default=0)
    if used >= uidlist.nextuid:
        found.append(Problem(COUNTER, where, f"the next UID {uidlist.nextuid} is not above "
                             f"UID {used}", rescan))
    return found


def _keywords_problems(path, where) -> list[Problem]:
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").split("\n")
    except FileNotFoundError:
        return []
    fix = ("keywords", path)
    found = []
    if lines[-1]:
        found.append(Problem(FORMAT, where, f"the last line of {KEYWORDS} is cut short", fix))
    count = 0
    for number, line in enumerate(lines[:-1], start=1):
        index, _, word = line.partition(" ")
        if not index.isdigit() or int(index) != count or not word:
            found.append(Problem(FORMAT, where, f"{KEYWORDS} line {number} is malformed", fix))
            continue
        count += 1
    if count > len(KEYWORD_LETTERS):
        found.append(Problem(FORMAT, where, f"{KEYWORDS} names {count} keywords, more than "
                             f"the {len(KEYWORD_LETTERS)} letters", fix))
    return found
