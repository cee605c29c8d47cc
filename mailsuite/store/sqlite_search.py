"""
The search index of the sqlite backend, and SearchQuery translated to SQL over it.

Tables (next to ``messages``, whose ``doc`` column names a message's index entry):
  message_meta    one row per body file (copies share it): MessageMeta columns
  header_fields   (doc, name, folded decoded value) per top-level header field
  message_text    folded header text and body text; an FTS5 table with the trigram tokenizer
                  when this SQLite has one (substring MATCH through the index), else a plain
                  table searched with instr()

The FTS index answers substrings of three characters or more; shorter ones, and the exact
check of a header field's name, look only at the rows of the searched mailbox.
"""

from __future__ import annotations

import sqlite3
from datetime import date, datetime, timezone

from mailsuite.interfaces import (
    SearchAll,
    SearchAnd,
    SearchBody,
    SearchFlag,
    SearchHeader,
    SearchInternalDate,
    SearchModSeq,
    SearchNot,
    SearchOr,
    SearchSentDate,
    SearchSize,
    SearchText,
    SearchUIDs,
)
from mailsuite.store.search import (
    META_COLUMNS,
    SORT_COLUMNS,
    IndexEntry,
    InvalidQuery,
    fold,
    meta_from_row,
    meta_row,
    sort_keys_of,
    sort_row,
    validate,
)

# sqlite 3.34.0 added the trigram tokenizer.
TRIGRAM_MIN_VERSION = (3, 34, 0)
TRIGRAM_MIN_CHARS = 3
# Above this many UID ranges the ranges go to SQLite as one JSON parameter.
MAX_INLINE_RANGES = 64

META_SCHEMA = """
CREATE TABLE IF NOT EXISTS message_meta (
    doc INTEGER PRIMARY KEY,
    file TEXT NOT NULL UNIQUE,
    sent_date TEXT, sent_day TEXT, subject TEXT,
    from_name TEXT, from_addr TEXT, to_name TEXT, to_addr TEXT, cc_name TEXT, cc_addr TEXT,
    message_id TEXT, in_reply_to TEXT, refs TEXT,
    envelope BLOB NOT NULL, body BLOB NOT NULL, bodystructure BLOB NOT NULL,
    sort_sent REAL, sort_subject TEXT, sort_reply INTEGER, sort_from TEXT, sort_to TEXT, sort_cc TEXT, sort_display_from TEXT, sort_display_to TEXT, sort_message_id TEXT, sort_in_reply_to TEXT, sort_refs TEXT
);
CREATE TABLE IF NOT EXISTS header_fields (
    doc INTEGER NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS header_fields_by_doc ON header_fields (doc, name);
"""

FTS_TEXT_TABLE = (
    "CREATE VIRTUAL TABLE message_text USING fts5(headers, body, tokenize='trigram')"
)
PLAIN_TEXT_TABLE = (
    "CREATE TABLE message_text (rowid INTEGER PRIMARY KEY, headers TEXT, body TEXT)"
)


def trigram_available(db) -> bool:
    """Whether this SQLite has FTS5 with the trigram tokenizer."""
    if sqlite3.sqlite_version_info < TRIGRAM_MIN_VERSION:
        return False
    try:
        db.execute("CREATE VIRTUAL TABLE temp.trigram_probe USING fts5(x, tokenize='trigram')")
        db.execute("DROP TABLE temp.trigram_probe")
    except sqlite3.Error:
        return False
    return True


def create_index_tables(db) -> bool:
    """Create the index tables if missing; True when message_text is an FTS5 table."""
    db.executescript(META_SCHEMA)
    meta_columns = {row[1] for row in db.execute("PRAGMA table_info(message_meta)")}
    missing = [column for column in SORT_COLUMNS if column not in meta_columns]
    for column in missing:
        db.execute(f"ALTER TABLE message_meta ADD COLUMN {column}")
    if missing:
        # Rows of earlier versions: sort keys computed again by fill_sort_keys.
        db.execute("UPDATE message_meta SET sort_reply = NULL")
    columns = [row[1] for row in db.execute("PRAGMA table_info(messages)")]
    if "doc" not in columns:
        # Rows of earlier versions: indexed when a search first needs them.
        db.execute("ALTER TABLE messages ADD COLUMN doc INTEGER")
    row = db.execute(
        "SELECT sql FROM sqlite_master WHERE name = 'message_text'"
    ).fetchone()
    if row is None:
        db.execute(FTS_TEXT_TABLE if trigram_available(db) else PLAIN_TEXT_TABLE)
        row = db.execute("SELECT sql FROM sqlite_master WHERE name = 'message_text'").fetchone()
    return "fts5" in row[0].lower()


def insert_entry(db, file_id: str, entry: IndexEntry) -> int:
    """Store the index rows of body file ``file_id`` (transaction held); return its doc."""
    columns = (*META_COLUMNS, *SORT_COLUMNS)
    marks = ", ".join("?" * (len(columns) + 1))
    cur = db.execute(
        f"INSERT INTO message_meta (file, {', '.join(columns)}) VALUES ({marks})",
        (file_id, *meta_row(entry.meta), *sort_row(entry.keys)),
    )
    doc = cur.lastrowid
    db.executemany(
        "INSERT INTO header_fields (doc, name, value) VALUES (?, ?, ?)",
        [(doc, name, value) for name, value in entry.fields],
    )
    db.execute(
        "INSERT INTO message_text (rowid, headers, body) VALUES (?, ?, ?)",
        (doc, entry.headers, entry.body),
    )
    return doc


def drop_unreferenced(db, file_ids) -> None:
    """Remove the index rows of body files no message row names any more (transaction held)."""
    for file_id in set(file_ids):
        if db.execute("SELECT 1 FROM messages WHERE file = ? LIMIT 1", (file_id,)).fetchone():
            continue
        row = db.execute("SELECT doc FROM message_meta WHERE file = ?", (file_id,)).fetchone()
        if row is None:
            continue
        db.execute("DELETE FROM message_text WHERE rowid = ?", row)
        db.execute("DELETE FROM header_fields WHERE doc = ?", row)
        db.execute("DELETE FROM message_meta WHERE doc = ?", row)


def fill_sort_keys(db) -> int:
    """Compute the sort keys of index rows stored without them (by earlier versions) from
    their metadata columns (transaction held); return how many rows were filled."""
    rows = db.execute(
        f"SELECT doc, {', '.join(META_COLUMNS)} FROM message_meta WHERE sort_reply IS NULL"
    ).fetchall()
    assignments = ", ".join(f"{c} = ?" for c in SORT_COLUMNS)
    db.executemany(
        f"UPDATE message_meta SET {assignments} WHERE doc = ?",
        [(*sort_row(sort_keys_of(meta_from_row(row))), doc) for doc, *row in rows],
    )
    return len(rows)


def select_sort_keys_sql(count: int | None) -> str:
    """SQL giving (uid, SORT_COLUMNS...) for ``count`` UIDs of one mailbox (None: all)."""
    columns = ", ".join(f"mm.{c}" for c in SORT_COLUMNS)
    sql = (
        f"SELECT m.uid, {columns} FROM messages m JOIN message_meta mm ON mm.doc = m.doc "
        "WHERE m.mailbox = ?"
    )
    if count is not None:
        sql += f" AND m.uid IN ({','.join('?' * count)})"
    return sql


def select_meta_sql(count: int) -> str:
    """SQL giving (uid, META_COLUMNS...) for ``count`` UIDs of one mailbox."""
    marks = ",".join("?" * count)
    columns = ", ".join(f"mm.{c}" for c in META_COLUMNS)
    return (
        f"SELECT m.uid, {columns} FROM messages m JOIN message_meta mm ON mm.doc = m.doc "
        f"WHERE m.mailbox = ? AND m.uid IN ({marks})"
    )


# ------------------------------------------------------------------ SearchQuery to SQL


def _phrase(column: str | None, needle: str) -> str:
    """An FTS5 query for ``needle`` as a substring (a trigram phrase) of ``column``."""
    quoted = '"' + needle.replace('"', '""') + '"'
    return quoted if column is None else f"{column} : {quoted}"


class _Compiler:
    def __init__(self, *, fts: bool):
        self.fts = fts
        self.params: list = []

    def param(self, value) -> str:
        self.params.append(value)
        return "?"

    def indexed(self, needle: str) -> bool:
        return self.fts and len(needle) >= TRIGRAM_MIN_CHARS

    def text_match(self, column: str | None, needle: str) -> str:
        return (
            "m.doc IN (SELECT rowid FROM message_text WHERE message_text MATCH "
            f"{self.param(_phrase(column, needle))})"
        )

    def compile(self, query) -> str:
        if isinstance(query, SearchAll):
            return "1"
        if isinstance(query, SearchAnd):
            parts = [self.compile(q) for q in query.items]
            return "(" + " AND ".join(parts) + ")" if parts else "1"
        if isinstance(query, SearchOr):
            parts = [self.compile(q) for q in query.items]
            return "(" + " OR ".join(parts) + ")" if parts else "0"
        if isinstance(query, SearchNot):
            return f"NOT {self.compile(query.item)}"
        if isinstance(query, SearchUIDs):
            return self.uids(query.ranges)
        if isinstance(query, SearchFlag):
            test = f"instr(' ' || m.flags || ' ', {self.param(' ' + query.name + ' ')}) > 0"
            return f"({test})" if query.present else f"NOT ({test})"
        if isinstance(query, SearchSize):
            return f"(m.size {query.op.value} {self.param(query.size)})"
        if isinstance(query, SearchModSeq):
            return f"(m.modseq {query.op.value} {self.param(query.modseq)})"
        if isinstance(query, SearchInternalDate):
            return self.moment("m.internal_date", query.op, query.when)
        if isinstance(query, SearchSentDate):
            return self.moment("mm.sent_date", query.op, query.when, day_column="mm.sent_day")
        if isinstance(query, SearchHeader):
            return self.header(query.name.lower(), fold(query.substring))
        if isinstance(query, SearchBody):
            return self.text(("body",), fold(query.substring))
        if isinstance(query, SearchText):
            return self.text(("headers", "body"), fold(query.substring))
        raise InvalidQuery(f"not a search key: {query!r}")

    def uids(self, ranges) -> str:
        if not ranges:
            return "0"
        if len(ranges) <= MAX_INLINE_RANGES:
            tests = [
                f"m.uid BETWEEN {self.param(first)} AND {self.param(last)}"
                for first, last in ranges
            ]
            return "(" + " OR ".join(tests) + ")"
        pairs = "[" + ",".join(f"[{int(a)},{int(b)}]" for a, b in ranges) + "]"
        return (
            f"EXISTS (SELECT 1 FROM json_each({self.param(pairs)}) r WHERE m.uid BETWEEN "
            "json_extract(r.value, '$[0]') AND json_extract(r.value, '$[1]'))"
        )

    def moment(self, column, op, when, *, day_column=None) -> str:
        # A missing Date header compares as NULL; COALESCE keeps NOT from matching it.
        if isinstance(when, datetime):
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            instant = when.astimezone(timezone.utc).isoformat()
            return f"COALESCE(julianday({column}) {op.value} julianday({self.param(instant)}), 0)"
        if isinstance(when, date):
            # RFC 3501 §6.4.4: the day as written, disregarding time and timezone.
            day = day_column or f"substr({column}, 1, 10)"
            return f"COALESCE({day} {op.value} {self.param(when.isoformat())}, 0)"
        raise InvalidQuery("a date key needs a date or a datetime")

    def header(self, name: str, needle: str) -> str:
        # Parameters are taken in the order they appear in the SQL.
        prefilter = self.text_match("headers", needle) + " AND " if self.indexed(needle) else ""
        exact = (
            "EXISTS (SELECT 1 FROM header_fields h WHERE h.doc = m.doc AND h.name = "
            f"{self.param(name)}"
        )
        if needle:
            exact += f" AND instr(h.value, {self.param(needle)}) > 0"
        exact += ")"
        return f"({prefilter}{exact})"

    def text(self, columns, needle: str) -> str:
        if self.indexed(needle):
            return self.text_match(columns[0] if len(columns) == 1 else None, needle)
        tests = " OR ".join(f"instr(t.{c}, {self.param(needle)}) > 0" for c in columns)
        return f"EXISTS (SELECT 1 FROM message_text t WHERE t.rowid = m.doc AND ({tests}))"


def search_sql(query, mailbox_id: int, *, fts: bool) -> tuple[str, list]:
    """The SQL (and its parameters) giving the UIDs of mailbox ``mailbox_id`` that match."""
    validate(query)
    compiler = _Compiler(fts=fts)
    condition = compiler.compile(query)
    sql = (
        "SELECT m.uid FROM messages m LEFT JOIN message_meta mm ON mm.doc = m.doc "
        f"WHERE m.mailbox = ? AND {condition} ORDER BY m.uid"
    )
    return sql, [mailbox_id, *compiler.params]
