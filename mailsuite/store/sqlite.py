"""
The ``sqlite`` store backend: metadata in one SQLite database (WAL), bodies as files.

Layout below ``path``:
  index.sqlite                    mailboxes and messages, plus the search index and message
                                  metadata of mailsuite.store.sqlite_search
  messages/<account>/<xx>/<id>    one file per message, named by a random id, never by input
  tmp/                            files being written

A copy shares the body file with its source (rows reference the file name); a file is removed
when the last row naming it is expunged, and recorded as going in the same transaction, so a
crash before the unlink leaves no file that looks like mail the index lost.
"""

from __future__ import annotations

import email.header
import email.parser
import email.policy
import os
import sqlite3
import threading
import time
import uuid
from datetime import datetime

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
    SortKeys,
    StoreError,
    StoreUnavailable,
)
from mailsuite.store import files, sqlite_search
from mailsuite.store.base import (
    StoreCore,
    StoreFrontend,
    UidValidityCounter,
    append_arguments,
    check_quota,
    flag_updates,
)
from mailsuite.store.search import index_entry, meta_from_row
from mailsuite.store.names import (
    INBOX,
    check_deletable,
    normalize_flags,
    rename_moves,
    sorted_mailboxes,
    validate_account,
    validate_mailbox_name,
)

log = Logger()

BUSY_TIMEOUT_MS = 10_000
# Older than any append in progress in another worker process.
STALE_TMP_SECONDS = 3600
# Above this many UIDs, sort_keys reads the whole mailbox instead of looking UIDs up.
WHOLE_MAILBOX_ABOVE = 2000

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (account TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS mailboxes (
    id INTEGER PRIMARY KEY,
    account TEXT NOT NULL,
    name TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL,
    highestmodseq INTEGER NOT NULL,
    special_use TEXT,
    subscribed INTEGER NOT NULL DEFAULT 1,
    UNIQUE (account, name)
);
CREATE TABLE IF NOT EXISTS messages (
    mailbox INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    flags TEXT NOT NULL,
    internal_date TEXT NOT NULL,
    size INTEGER NOT NULL,
    file TEXT NOT NULL,
    hdr_from TEXT,
    hdr_to TEXT,
    hdr_cc TEXT,
    hdr_subject TEXT,
    hdr_date TEXT,
    hdr_message_id TEXT,
    PRIMARY KEY (mailbox, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_by_modseq ON messages (mailbox, modseq);
CREATE INDEX IF NOT EXISTS messages_by_file ON messages (file);
-- Covers the quota sum: an account's usage is read from the index alone.
CREATE INDEX IF NOT EXISTS messages_by_size ON messages (mailbox, size);
-- Body files whose last row went, recorded in the same transaction: one a crash keeps from
-- being unlinked is removed at the next start, never taken for mail to recover.
CREATE TABLE IF NOT EXISTS unlinking (file TEXT PRIMARY KEY, account TEXT NOT NULL)
    WITHOUT ROWID;
"""

SEARCH_HEADERS = ("from", "to", "cc", "subject", "date", "message-id")


def search_columns(data: bytes) -> tuple:
    """The SEARCH_HEADERS values of a message, decoded to str (None when absent)."""
    try:
        headers = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
            data, headersonly=True
        )
    except Exception:
        return (None,) * len(SEARCH_HEADERS)
    values = []
    for name in SEARCH_HEADERS:
        raw = headers.get(name)
        if raw is None:
            values.append(None)
            continue
        try:
            values.append(str(email.header.make_header(email.header.decode_header(str(raw)))))
        except Exception:
            values.append(str(raw))
    return tuple(values)


def _search_columns(meta) -> tuple:
    """The values of the hdr_* columns, from metadata parsed at append."""
    def address(item):
        if item is None:
            return None
        return f"{item.name} <{item.address}>" if item.name else item.address

    return (
        address(meta.from_), address(meta.to), address(meta.cc), meta.subject,
        None if meta.date is None else meta.date.isoformat(), meta.message_id,
    )


def _keys_row(row) -> list:
    """A row of SORT_COLUMNS in SortKeys field form (reply a bool, references a tuple)."""
    row[2] = row[2] == 1
    refs = row[10]
    row[10] = tuple(refs.split()) if refs else ()
    return row


def _flags_text(flags) -> str:
    return " ".join(sorted(flags))


_FLAG_SETS: dict[str, frozenset] = {}
_FLAG_SETS_MAX = 4096


def _flags_set(text: str) -> frozenset:
    # Few distinct flag combinations exist; listing 100k messages then builds a handful of
    # sets instead of 100k.
    flags = _FLAG_SETS.get(text)
    if flags is None:
        flags = frozenset(text.split()) if text else frozenset()
        if len(_FLAG_SETS) >= _FLAG_SETS_MAX:
            _FLAG_SETS.clear()
        _FLAG_SETS[text] = flags
    return flags


class SQLiteStoreCore(StoreCore):
    """The synchronous, thread-safe core of SQLiteMailStore (see mailsuite.store.base)."""

    def __init__(self, path: str):
        self._path = os.path.abspath(path)
        self._tmp = os.path.join(self._path, "tmp")
        self._messages = os.path.join(self._path, "messages")
        try:
            files.makedirs_durably(self._tmp)
            files.makedirs_durably(self._messages)
        except OSError as e:
            raise files.unavailable(e) from e
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            os.path.join(self._path, "index.sqlite"),
            check_same_thread=False,
            isolation_level=None,
        )
        self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._db.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on disk when it returns, so the append Deferred means durable.
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.executescript(SCHEMA)
        self._fts = sqlite_search.create_index_tables(self._db)
        # Mailboxes known to have no row waiting for its index entry.
        self._indexed: set[int] = set()
        # Whether every index row has its sort keys (rows of earlier versions get them once).
        self._sort_keys_filled = False
        row = self._db.execute("SELECT value FROM meta WHERE key = 'uidvalidity'").fetchone()
        self._uidvalidity = UidValidityCounter(row[0] if row else 0)
        self._known_accounts = set()
        self._clean_tmp()
        self._unlink(self._db.execute("SELECT file, account FROM unlinking").fetchall())

    def _clean_tmp(self):
        """Drop bodies left in tmp/ by a crash (never visible: no row names them)."""
        cutoff = time.time() - STALE_TMP_SECONDS
        for entry in os.scandir(self._tmp):
            try:
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
            except OSError:
                log.failure("could not remove stale temporary file {path}", path=entry.path)

    # -- helpers

    def _transaction(self):
        return _Transaction(self._db)

    def _new_uidvalidity(self) -> int:
        value = self._uidvalidity.next()
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES ('uidvalidity', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (value,),
        )
        return value

    def _ensure(self, account) -> str:
        """Validate ``account`` and create its default mailboxes on first use (lock held)."""
        self._check_open()
        account = validate_account(account)
        if account in self._known_accounts:
            return account
        with self._transaction():
            cur = self._db.execute(
                "INSERT OR IGNORE INTO accounts (account) VALUES (?)", (account,)
            )
            if cur.rowcount:
                for name, special_use in DEFAULT_MAILBOXES:
                    self._insert_mailbox(account, name, special_use)
        self._known_accounts.add(account)
        return account

    def _insert_mailbox(self, account, name, special_use):
        uidvalidity = self._new_uidvalidity()
        self._db.execute(
            "INSERT INTO mailboxes (account, name, uidvalidity, uidnext, highestmodseq, "
            "special_use) VALUES (?, ?, ?, 1, 0, ?)",
            (account, name, uidvalidity, special_use),
        )
        return uidvalidity

    def _mailbox(self, account, name):
        """(account, canonical name, row) of an existing mailbox (lock held)."""
        account = self._ensure(account)
        name = validate_mailbox_name(name)
        row = self._db.execute(
            "SELECT id, uidvalidity, uidnext, highestmodseq FROM mailboxes "
            "WHERE account = ? AND name = ?",
            (account, name),
        ).fetchone()
        if row is None:
            raise NoSuchMailbox(f"no mailbox {name!r}")
        return account, name, row

    def _bump(self, mailbox_id) -> int:
        self._db.execute(
            "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = ?", (mailbox_id,)
        )
        return self._db.execute(
            "SELECT highestmodseq FROM mailboxes WHERE id = ?", (mailbox_id,)
        ).fetchone()[0]

    def _take_uids(self, mailbox_id, count) -> int:
        """Reserve ``count`` UIDs; return the first."""
        first = self._db.execute(
            "SELECT uidnext FROM mailboxes WHERE id = ?", (mailbox_id,)
        ).fetchone()[0]
        self._db.execute(
            "UPDATE mailboxes SET uidnext = uidnext + ? WHERE id = ?", (count, mailbox_id)
        )
        return first

    def _file_path(self, account, file_id) -> str:
        return os.path.join(self._messages, account, file_id[:2], file_id)

    def _infos(self, mailbox_id, uids=None):
        rows = self._db.execute(
            "SELECT uid, flags, modseq, internal_date, size FROM messages "
            "WHERE mailbox = ? ORDER BY uid",
            (mailbox_id,),
        ).fetchall()
        if uids is not None:
            wanted = set(uids)
            rows = [row for row in rows if row[0] in wanted]
        flag_sets, parse_date = _flags_set, datetime.fromisoformat
        return [
            MessageInfo(uid, flag_sets(flags), modseq, parse_date(date), size)
            for uid, flags, modseq, date, size in rows
        ]

    def _present(self, mailbox_id, uids):
        """The rows of ``uids`` that exist, in UID order."""
        wanted = sorted(set(u for u in uids if isinstance(u, int)))
        rows = []
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows.extend(
                self._db.execute(
                    f"SELECT uid, flags, internal_date, size, file, hdr_from, hdr_to, hdr_cc, "
                    f"hdr_subject, hdr_date, hdr_message_id, doc FROM messages "
                    f"WHERE mailbox = ? AND uid IN ({marks})",
                    (mailbox_id, *chunk),
                ).fetchall()
            )
        return sorted(rows)

    def _names(self, account) -> dict[str, int]:
        """Mailbox name -> row id of every mailbox of ``account``."""
        return dict(self._db.execute(
            "SELECT name, id FROM mailboxes WHERE account = ?", (account,)
        ).fetchall())

    def _doom_unreferenced(self, account, file_ids) -> list[tuple[str, str]]:
        """Record the body files of ``file_ids`` that no row names any more as to be
        unlinked (transaction held); return them as (file, account) for _unlink."""
        doomed = [
            (file_id, account) for file_id in sorted(set(file_ids))
            if self._db.execute(
                "SELECT 1 FROM messages WHERE file = ? LIMIT 1", (file_id,)
            ).fetchone() is None
        ]
        self._db.executemany(
            "INSERT OR IGNORE INTO unlinking (file, account) VALUES (?, ?)", doomed
        )
        return doomed

    def _unlink(self, doomed):
        """Remove the body files of ``doomed`` ((file, account)), then their unlinking rows."""
        removed = []
        for file_id, account in doomed:
            try:
                files.unlink_quietly(self._file_path(account, file_id))
                removed.append((file_id,))
            except (OSError, StoreError):
                log.failure("could not remove message file {file}", file=file_id)
        if removed:
            try:
                with self._transaction():
                    self._db.executemany("DELETE FROM unlinking WHERE file = ?", removed)
            except sqlite3.Error:
                # Harmless: the next start unlinks them again and forgets them then.
                log.failure("could not forget {count} removed message files",
                            count=len(removed))

    # -- IMailStore, synchronously

    def ensure_account(self, account):
        with self._lock:
            self._ensure(account)
            return None, []

    def mailboxes(self, account):
        with self._lock:
            account = self._ensure(account)
            rows = self._db.execute(
                "SELECT name, uidvalidity, special_use, subscribed FROM mailboxes "
                "WHERE account = ?",
                (account,),
            ).fetchall()
        return sorted_mailboxes(MailboxInfo(n, v, s, bool(sub)) for n, v, s, sub in rows), []

    def create_mailbox(self, account, name, special_use=None):
        with self._lock:
            account = self._ensure(account)
            name = validate_mailbox_name(name)
            with self._transaction():
                exists = self._db.execute(
                    "SELECT 1 FROM mailboxes WHERE account = ? AND name = ?", (account, name)
                ).fetchone()
                if exists:
                    raise MailboxExists(f"mailbox {name!r} exists")
                uidvalidity = self._insert_mailbox(account, name, special_use)
            info = MailboxInfo(name, uidvalidity, special_use)
            return info, [Change(ChangeKind.MAILBOXES, account, name)]

    def delete_mailbox(self, account, name):
        with self._lock:
            account, name, (box_id, *_) = self._mailbox(account, name)
            check_deletable(self._names(account), name)
            with self._transaction():
                file_ids = [r[0] for r in self._db.execute(
                    "SELECT file FROM messages WHERE mailbox = ?", (box_id,)
                )]
                self._db.execute("DELETE FROM messages WHERE mailbox = ?", (box_id,))
                self._db.execute("DELETE FROM mailboxes WHERE id = ?", (box_id,))
                sqlite_search.drop_unreferenced(self._db, file_ids)
                doomed = self._doom_unreferenced(account, file_ids)
            self._unlink(doomed)
            return None, [Change(ChangeKind.MAILBOXES, account, name)]

    def rename_mailbox(self, account, old, new):
        with self._lock:
            account, old, (box_id, *_) = self._mailbox(account, old)
            new = validate_mailbox_name(new)
            names = self._names(account)
            moves = rename_moves(names, old, new)
            with self._transaction():
                for source, target in moves.items():
                    self._db.execute(
                        "UPDATE mailboxes SET name = ? WHERE id = ?", (target, names[source])
                    )
                if old == INBOX:
                    # RFC 3501 §6.3.5: the messages move, INBOX stays (empty), children stay.
                    self._insert_mailbox(account, INBOX, None)
            return None, [Change(ChangeKind.MAILBOXES, account, new)]

    def set_subscribed(self, account, name, subscribed):
        with self._lock:
            _, _, (box_id, *_) = self._mailbox(account, name)
            with self._transaction():
                self._db.execute(
                    "UPDATE mailboxes SET subscribed = ? WHERE id = ?", (int(subscribed), box_id)
                )
            return None, []

    def status(self, account, name):
        with self._lock:
            account, name, (box_id, uidvalidity, uidnext, highestmodseq) = self._mailbox(
                account, name
            )
            count, size, unseen = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), "
                "COALESCE(SUM(CASE WHEN (' ' || flags || ' ') LIKE '% \\Seen %' "
                "THEN 0 ELSE 1 END), 0) FROM messages WHERE mailbox = ?",
                (box_id,),
            ).fetchone()
        return MailboxStatus(name, uidvalidity, uidnext, highestmodseq, count, unseen, size), []

    def _used(self, account) -> int:
        """Octets stored by ``account`` over all its mailboxes (lock held)."""
        (total,) = self._db.execute(
            "SELECT COALESCE(SUM(m.size), 0) FROM mailboxes b "
            "JOIN messages m INDEXED BY messages_by_size ON m.mailbox = b.id "
            "WHERE b.account = ?",
            (account,),
        ).fetchone()
        return total

    def usage(self, account):
        with self._lock:
            account = self._ensure(account)
            return self._used(account), []

    def append(self, account, name, data, flags=frozenset(), internal_date=None, *, limit=None):
        data, flags, internal_date = append_arguments(data, flags, internal_date)
        with self._lock:
            account, name, _ = self._mailbox(account, name)
            check_quota(self._used(account), len(data), limit)
        file_id = uuid.uuid4().hex
        final = self._file_path(account, file_id)
        # The body is written and fsynced outside the lock, so appends run in parallel.
        try:
            files.makedirs_durably(os.path.dirname(final))
        except OSError as e:
            raise files.unavailable(e) from e
        files.write_durably(os.path.join(self._tmp, file_id), final, data)
        entry = index_entry(data)
        try:
            with self._lock:
                account, name, (box_id, *_) = self._mailbox(account, name)
                # Checked again: other appends may have landed while the body was written.
                check_quota(self._used(account), len(data), limit)
                uid, modseq = self._insert_message(
                    box_id, file_id, len(data), entry, flags, internal_date
                )
        except BaseException as e:
            files.unlink_quietly(final)
            if isinstance(e, sqlite3.Error):
                raise StoreUnavailable("mail storage is unavailable") from e
            raise
        info = MessageInfo(uid, flags, modseq, internal_date, len(data))
        return info, [Change(ChangeKind.NEW, account, name, (uid,), modseq)]

    def _insert_message(self, box_id, file_id, size, entry, flags, internal_date):
        """Give body file ``file_id`` a row in mailbox ``box_id`` under the next UID, with its
        search index entry, in one transaction (lock held); return (uid, modseq)."""
        with self._transaction():
            uid = self._take_uids(box_id, 1)
            modseq = self._bump(box_id)
            doc = sqlite_search.insert_entry(self._db, file_id, entry)
            self._db.execute(
                "INSERT INTO messages (mailbox, uid, modseq, flags, internal_date, size, "
                "file, hdr_from, hdr_to, hdr_cc, hdr_subject, hdr_date, hdr_message_id, "
                "doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (box_id, uid, modseq, _flags_text(flags), internal_date.isoformat(),
                 size, file_id, *_search_columns(entry.meta), doc),
            )
        return uid, modseq

    def messages(self, account, name, changed_since=0):
        with self._lock:
            _, _, (box_id, *_) = self._mailbox(account, name)
            if changed_since > 0:
                return self._changed_infos(box_id, changed_since), []
            return self._infos(box_id), []

    def _changed_infos(self, mailbox_id, changed_since):
        # The (mailbox, modseq) index finds the few changed rows without a mailbox scan.
        rows = self._db.execute(
            "SELECT uid, flags, modseq, internal_date, size FROM messages "
            "INDEXED BY messages_by_modseq WHERE mailbox = ? AND modseq > ?",
            (mailbox_id, changed_since),
        ).fetchall()
        rows.sort()
        return [
            MessageInfo(uid, _flags_set(flags), modseq, datetime.fromisoformat(date), size)
            for uid, flags, modseq, date, size in rows
        ]

    def read(self, account, name, uid):
        with self._lock:
            account, _, (box_id, *_) = self._mailbox(account, name)
            row = self._db.execute(
                "SELECT file FROM messages WHERE mailbox = ? AND uid = ?", (box_id, uid)
            ).fetchone()
        if row is None:
            raise NoSuchMessage(f"no message with UID {uid}")
        try:
            with open(self._file_path(account, row[0]), "rb") as f:
                return f.read(), []
        except OSError as e:
            log.failure("could not read message file {file}", file=row[0])
            raise files.unavailable(e) from e

    def set_flags(self, account, name, uids, flags, mode=FlagMode.SET):
        flags = normalize_flags(flags)
        with self._lock:
            account, name, (box_id, *_) = self._mailbox(account, name)
            rows = self._present(box_id, uids)
            present = [r[0] for r in rows]
            changed = flag_updates(((r[0], _flags_set(r[1])) for r in rows), flags, mode)
            changes = []
            if changed:
                with self._transaction():
                    modseq = self._bump(box_id)
                    self._db.executemany(
                        "UPDATE messages SET flags = ?, modseq = ? WHERE mailbox = ? AND uid = ?",
                        [(_flags_text(f), modseq, box_id, uid) for uid, f in changed.items()],
                    )
                changes.append(Change(ChangeKind.FLAGS, account, name, tuple(changed), modseq))
            return self._infos(box_id, present), changes

    def _copy(self, account, name, uids, destination, *, remove, limit):
        with self._lock:
            return self._copy_locked(account, name, uids, destination, remove=remove,
                                     limit=limit)

    def _copy_locked(self, account, name, uids, destination, *, remove, limit):
        account, name, (box_id, *_) = self._mailbox(account, name)
        _, destination, (target_id, *_) = self._mailbox(account, destination)
        rows = self._present(box_id, uids)
        if not rows:
            return {}, []
        if limit is not None:
            check_quota(self._used(account), sum(row[3] for row in rows), limit)
        with self._transaction():
            first = self._take_uids(target_id, len(rows))
            modseq = self._bump(target_id)
            mapping = {row[0]: first + i for i, row in enumerate(rows)}
            self._db.executemany(
                "INSERT INTO messages (mailbox, uid, modseq, flags, internal_date, size, file, "
                "hdr_from, hdr_to, hdr_cc, hdr_subject, hdr_date, hdr_message_id, doc) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(target_id, mapping[row[0]], modseq, *row[1:]) for row in rows],
            )
            changes = [
                Change(ChangeKind.NEW, account, destination, tuple(mapping.values()), modseq)
            ]
            if any(row[-1] is None for row in rows):
                self._indexed.discard(target_id)
            if remove:
                source_modseq = self._bump(box_id)
                self._db.executemany(
                    "DELETE FROM messages WHERE mailbox = ? AND uid = ?",
                    [(box_id, uid) for uid in mapping],
                )
                changes.append(
                    Change(ChangeKind.EXPUNGED, account, name, tuple(mapping), source_modseq)
                )
        return mapping, changes

    def expunge(self, account, name, uids):
        with self._lock:
            account, name, (box_id, *_) = self._mailbox(account, name)
            rows = self._present(box_id, uids)
            if not rows:
                return [], []
            removed = [row[0] for row in rows]
            with self._transaction():
                modseq = self._bump(box_id)
                self._db.executemany(
                    "DELETE FROM messages WHERE mailbox = ? AND uid = ?",
                    [(box_id, uid) for uid in removed],
                )
                sqlite_search.drop_unreferenced(self._db, [row[4] for row in rows])
                doomed = self._doom_unreferenced(account, [row[4] for row in rows])
            self._unlink(doomed)
            return removed, [Change(ChangeKind.EXPUNGED, account, name, tuple(removed), modseq)]

    # -- ISearchableStore, synchronously

    def search(self, account, name, query):
        with self._lock:
            account, _, (box_id, *_) = self._mailbox(account, name)
            sql, params = sqlite_search.search_sql(query, box_id, fts=self._fts)
            self._index_missing(account, box_id)
            try:
                return [uid for (uid,) in self._db.execute(sql, params)], []
            except sqlite3.Error as e:
                raise StoreUnavailable("mail storage is unavailable") from e

    def explain_search(self, account, name, query) -> list[str]:
        """The query plan of ``search`` (EXPLAIN QUERY PLAN details), for checks and tuning."""
        with self._lock:
            _, _, (box_id, *_) = self._mailbox(account, name)
            sql, params = sqlite_search.search_sql(query, box_id, fts=self._fts)
            return [row[3] for row in self._db.execute("EXPLAIN QUERY PLAN " + sql, params)]

    def message_meta(self, account, name, uids):
        with self._lock:
            account, _, (box_id, *_) = self._mailbox(account, name)
            self._index_missing(account, box_id)
            wanted = sorted(set(u for u in uids if isinstance(u, int)))
            found = {}
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                for uid, *row in self._db.execute(
                    sqlite_search.select_meta_sql(len(chunk)), (box_id, *chunk)
                ):
                    found[uid] = meta_from_row(row)
            return dict(sorted(found.items())), []

    def sort_keys(self, account, name, uids):
        with self._lock:
            account, _, (box_id, *_) = self._mailbox(account, name)
            self._index_missing(account, box_id)
            if not self._sort_keys_filled:
                with self._transaction():
                    sqlite_search.fill_sort_keys(self._db)
                self._sort_keys_filled = True
            wanted = set(u for u in uids if isinstance(u, int))
            make = SortKeys._make
            try:
                if len(wanted) > WHOLE_MAILBOX_ABOVE:
                    # One scan of the mailbox beats thousands of IN lookups.
                    rows = self._db.execute(sqlite_search.select_sort_keys_sql(None), (box_id,))
                    found = {uid: make(_keys_row(row)) for uid, *row in rows if uid in wanted}
                else:
                    found = {}
                    ordered = sorted(wanted)
                    for start in range(0, len(ordered), 500):
                        chunk = ordered[start : start + 500]
                        rows = self._db.execute(
                            sqlite_search.select_sort_keys_sql(len(chunk)), (box_id, *chunk)
                        )
                        found.update((uid, make(_keys_row(row))) for uid, *row in rows)
            except sqlite3.Error as e:
                raise StoreUnavailable("mail storage is unavailable") from e
            return found, []

    def _index_missing(self, account, box_id):
        """Index the bodies of rows stored without an index entry (lock held)."""
        if box_id in self._indexed:
            return
        pending = [file_id for (file_id,) in self._db.execute(
            "SELECT DISTINCT file FROM messages WHERE mailbox = ? AND doc IS NULL", (box_id,)
        )]
        for start in range(0, len(pending), 500):
            with self._transaction():
                for file_id in pending[start : start + 500]:
                    self._index_file(account, file_id)
        self._indexed.add(box_id)

    def _index_file(self, account, file_id):
        row = self._db.execute(
            "SELECT doc FROM message_meta WHERE file = ?", (file_id,)
        ).fetchone()
        if row is None:
            try:
                with open(self._file_path(account, file_id), "rb") as f:
                    data = f.read()
            except OSError:
                log.failure("could not read message file {file} to index it", file=file_id)
                data = b""
            doc = sqlite_search.insert_entry(self._db, file_id, index_entry(data))
        else:
            doc = row[0]
        self._db.execute("UPDATE messages SET doc = ? WHERE file = ?", (doc, file_id))

    # -- repair after a crash (see mailsuite.store.check; the server is stopped)

    def adopt_file(self, account, path, internal_date) -> MessageInfo:
        """
        Make the body file at ``path``, below messages/ but named by no row, a new message in
        ``account``'s INBOX with the next UID.  The file moves to a fresh name first; a crash
        before the row is written leaves it unnamed again, for the next repair.
        """
        with self._lock:
            account, _, (box_id, *_) = self._mailbox(account, INBOX)
            with open(path, "rb") as f:
                data = f.read()
            file_id = uuid.uuid4().hex
            final = self._file_path(account, file_id)
            files.makedirs_durably(os.path.dirname(final))
            os.rename(path, final)
            files.fsync_dir(os.path.dirname(final))
            files.fsync_dir(os.path.dirname(path))
            uid, modseq = self._insert_message(
                box_id, file_id, len(data), index_entry(data), frozenset(), internal_date
            )
        return MessageInfo(uid, frozenset(), modseq, internal_date, len(data))

    def raise_counters(self) -> list[str]:
        """Raise each mailbox's UIDNEXT above its UIDs and its HIGHESTMODSEQ to its highest
        MODSEQ, and the UIDVALIDITY counter to every mailbox's; return a line per change."""
        done = []
        with self._lock, self._transaction():
            rows = self._db.execute(
                "SELECT b.id, b.account, b.name, b.uidnext, b.highestmodseq, MAX(m.uid), "
                "MAX(m.modseq) FROM mailboxes b JOIN messages m ON m.mailbox = b.id "
                "GROUP BY b.id"
            ).fetchall()
            for box_id, account, name, uidnext, highest, top_uid, top_modseq in rows:
                if top_uid >= uidnext:
                    self._db.execute("UPDATE mailboxes SET uidnext = ? WHERE id = ?",
                                     (top_uid + 1, box_id))
                    done.append(f"{account}/{name}: UIDNEXT raised from {uidnext} to "
                                f"{top_uid + 1}")
                if top_modseq > highest:
                    self._db.execute("UPDATE mailboxes SET highestmodseq = ? WHERE id = ?",
                                     (top_modseq, box_id))
                    done.append(f"{account}/{name}: HIGHESTMODSEQ raised from {highest} to "
                                f"{top_modseq}")
            (top,) = self._db.execute("SELECT MAX(uidvalidity) FROM mailboxes").fetchone()
            row = self._db.execute("SELECT value FROM meta WHERE key = 'uidvalidity'").fetchone()
            current = row[0] if row else 0
            if top is not None and top > current:
                self._db.execute(
                    "INSERT INTO meta (key, value) VALUES ('uidvalidity', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (top,),
                )
                self._uidvalidity = UidValidityCounter(top)
                done.append(f"UIDVALIDITY counter raised from {current} to {top}")
        return done

    def repair_index(self) -> list[str]:
        """
        Drop message rows of mailboxes that no longer exist (their body files are then named
        by no row, for adopt_file), detach rows from search entries that are missing or
        describe another file (indexed again when next searched), and drop search entries no
        row uses; return a line per kind of change.
        """
        done = []
        with self._lock, self._transaction():
            cur = self._db.execute(
                "DELETE FROM messages WHERE mailbox NOT IN (SELECT id FROM mailboxes)"
            )
            if cur.rowcount:
                done.append(f"dropped {cur.rowcount} message rows of mailboxes that no "
                            f"longer exist")
            cur = self._db.execute(
                "UPDATE messages SET doc = NULL WHERE doc IS NOT NULL AND NOT EXISTS ("
                "SELECT 1 FROM message_meta WHERE message_meta.doc = messages.doc "
                "AND message_meta.file = messages.file)"
            )
            if cur.rowcount:
                done.append(f"{cur.rowcount} messages will be indexed again for search")
            unused = [file_id for (file_id,) in self._db.execute(
                "SELECT file FROM message_meta WHERE file NOT IN (SELECT file FROM messages)"
            )]
            sqlite_search.drop_unreferenced(self._db, unused)
            dropped = len(unused)
            for table, key in (("header_fields", "doc"), ("message_text", "rowid")):
                dropped += self._db.execute(
                    f"DELETE FROM {table} WHERE {key} NOT IN (SELECT doc FROM message_meta)"
                ).rowcount
            if dropped:
                done.append(f"dropped {dropped} search index rows of removed messages")
        self._indexed.clear()
        return done

    def files_on_disk(self) -> set[tuple[str, str]]:
        """(account, file id) of every message file present; for consistency checks."""
        found = set()
        for account in os.listdir(self._messages):
            for bucket in os.listdir(os.path.join(self._messages, account)):
                for file_id in os.listdir(os.path.join(self._messages, account, bucket)):
                    found.add((account, file_id))
        return found

    def files_in_index(self) -> set[tuple[str, str]]:
        """(account, file id) of every message file the index names."""
        with self._lock:
            return set(self._db.execute(
                "SELECT DISTINCT mailboxes.account, messages.file FROM messages "
                "JOIN mailboxes ON mailboxes.id = messages.mailbox"
            ).fetchall())

    def close(self):
        with self._lock:
            return super().close()

    def _release(self):
        self._db.close()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error; nests as a no-op."""

    def __init__(self, db):
        self._db = db
        self._outer = False

    def __enter__(self):
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
            self._outer = True

    def __exit__(self, kind, value, tb):
        if not self._outer:
            return False
        if kind is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")
        return False


class SQLiteMailStore(StoreFrontend):
    """See IMailStore.  Data lives below ``path``; blocking work goes through ``runner``."""

    def __init__(self, path: str, *, runner):
        super().__init__(SQLiteStoreCore(path), runner=runner)
