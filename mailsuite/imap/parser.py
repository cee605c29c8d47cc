"""
The IMAP command parser (RFC 3501 §9, RFC 9051 §9): a complete command in, a Command or a
precise ParseError out.  Pure: no I/O, no state beyond the call.

A command arrives as a RawCommand: its lines (without CRLF) and the payloads of the
literals that ended all lines but the last, as collected by mailsuite.imap.framing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from mailsuite.imap.wire import month_number
from mailsuite.store.names import decode_mutf7

# RFC 3501 §9: ATOM-CHAR excludes atom-specials; ASTRING-CHAR adds "]".
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]')
LITERAL_HEADER = re.compile(rb"(~?)\{(\d{1,12})(\+?)\}\Z")

MAX_NESTING = 32

STAR = -1  # "*" in a sequence set: the largest number in use


class ParseError(Exception):
    """The command is malformed; ``tag`` is set once the tag was read."""

    def __init__(self, text: str, *, tag: str | None = None, code: str | None = None):
        super().__init__(text)
        self.text = text
        self.tag = tag
        self.code = code


@dataclass(frozen=True)
class RawCommand:
    lines: tuple[bytes, ...]
    literals: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Command:
    tag: str
    name: str  # upper case; "UID FETCH" style for UID commands
    args: object = None


# --------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class SequenceSet:
    """
    RFC 3501 §9 sequence-set: ranges (low, high) with STAR for "*"; ``saved`` for "$"
    (RFC 5182: the saved search result).
    """

    ranges: tuple[tuple[int, int], ...] = ()
    saved: bool = False

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """The ranges as ordered (low, high) pairs with "*" replaced by ``largest``."""
        out = []
        for low, high in self.ranges:
            low = largest if low == STAR else low
            high = largest if high == STAR else high
            if low > high:
                low, high = high, low  # RFC 3501 §9: "4:2" equals "2:4"
            out.append((low, high))
        return out

    def positions(self, count: int) -> list[int]:
        """0-based indexes of the message sequence numbers in 1..count, ascending."""
        if count == 0:
            return []
        picked = set()
        ranges = self.resolve(count)
        if len(ranges) == 1:
            low, high = ranges[0]
            return list(range(max(low, 1) - 1, min(high, count)))
        for low, high in ranges:
            picked.update(range(max(low, 1) - 1, min(high, count)))
        return sorted(picked)

    def contains(self, number: int, largest: int) -> bool:
        return any(low <= number <= high for low, high in self.resolve(largest))


@dataclass(frozen=True)
class Section:
    """RFC 3501 §6.4.5 section-spec: part numbers, then "", HEADER, HEADER.FIELDS[.NOT], TEXT, MIME."""

    part: tuple[int, ...] = ()
    text: str = ""
    fields: tuple[str, ...] = ()

    def wire(self) -> bytes:
        pieces = [".".join(str(n) for n in self.part)] if self.part else []
        if self.text:
            pieces.append(self.text)
        spec = ".".join(pieces)
        if self.fields:
            spec += " (" + " ".join(self.fields) + ")"
        return spec.encode("ascii")


@dataclass(frozen=True)
class FetchItem:
    """One fetch attribute: FLAGS, UID, BODY (with section), BINARY, BINARY.SIZE, ..."""

    name: str
    section: Section | None = None
    partial: tuple[int, int] | None = None
    peek: bool = False


@dataclass(frozen=True)
class FetchArgs:
    sequence: SequenceSet
    items: tuple[FetchItem, ...]
    changedsince: int | None = None  # RFC 7162 §3.1.4.1
    vanished: bool = False  # RFC 7162 §3.2.6


@dataclass(frozen=True)
class StoreArgs:
    sequence: SequenceSet
    mode: str  # "set", "add" or "remove"
    silent: bool
    flags: tuple[str, ...]
    unchangedsince: int | None = None  # RFC 7162 §3.1.3


@dataclass(frozen=True)
class SearchKey:
    """
    A node of the search AST.  ``op`` is one of: ALL, SEQ, UID, FLAG, NOFLAG, NEW, OLD,
    RECENT, HEADER, BODY, TEXT, BEFORE, ON, SINCE, SENTBEFORE, SENTON, SENTSINCE, LARGER,
    SMALLER, NOT, OR, AND, MODSEQ (RFC 7162), OLDER, YOUNGER (RFC 5032).  ``args`` holds the operands (strings, dates, numbers, keys).
    """

    op: str
    args: tuple = ()


@dataclass(frozen=True)
class SearchArgs:
    charset: str | None
    key: SearchKey
    returns: tuple[str, ...] | None = None  # RFC 4731 RETURN options; None: plain SEARCH


@dataclass(frozen=True)
class AppendMessage:
    flags: tuple[str, ...]
    internal_date: datetime | None
    data: bytes


@dataclass(frozen=True)
class QResyncParams:
    """RFC 7162 §3.2.5: what the client remembers of the mailbox."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None


@dataclass(frozen=True)
class SelectParams:
    """SELECT/EXAMINE parameters: (CONDSTORE) and (QRESYNC (...))."""

    condstore: bool = False
    qresync: QResyncParams | None = None


@dataclass(frozen=True)
class ListArgs:
    reference: str
    patterns: tuple[str, ...]
    selection: frozenset[str] = frozenset()
    returns: frozenset[str] = frozenset()
    status_items: tuple[str, ...] = ()
    extended: bool = False


# --------------------------------------------------------------------------- reader


class Reader:
    """A cursor over a RawCommand; literals are read where a line ends in their header."""

    def __init__(self, raw: RawCommand, *, utf8: bool = False):
        self.lines = raw.lines
        self.literals = raw.literals
        self.seg = 0
        self.pos = 0
        self.line = raw.lines[0]
        self.utf8 = utf8
        self.tag: str | None = None

    def error(self, text: str, code: str | None = None) -> ParseError:
        return ParseError(text, tag=self.tag, code=code)

    # -- low level

    def peek(self) -> int | None:
        if self.pos < len(self.line):
            return self.line[self.pos]
        return None

    def at_end(self) -> bool:
        return self.seg == len(self.lines) - 1 and self.pos >= len(self.line)

    def end(self) -> None:
        if not self.at_end():
            raise self.error("Unexpected extra arguments")

    def expect(self, token: bytes) -> None:
        if self.line[self.pos : self.pos + len(token)].upper() != token:
            raise self.error(f"Expected {token.decode()!r}")
        self.pos += len(token)

    def accept(self, token: bytes) -> bool:
        if self.line[self.pos : self.pos + len(token)].upper() == token:
            self.pos += len(token)
            return True
        return False

    def sp(self) -> None:
        if self.peek() != 0x20:
            raise self.error("Expected a space")
        self.pos += 1

    def _run(self, extra: frozenset = frozenset(), allow: frozenset = frozenset()) -> bytes:
        start = self.pos
        line = self.line
        n = len(line)
        while self.pos < n:
            b = line[self.pos]
            if b in allow or (0x20 < b < 0x7F and b not in _ATOM_SPECIALS and b not in extra):
                self.pos += 1
            else:
                break
        return line[start : self.pos]

    def atom(self) -> str:
        value = self._run()
        if not value:
            raise self.error("Expected an atom")
        return value.decode("ascii")

    def number64(self, *, nonzero: bool = False) -> int:
        """RFC 7162 §7 mod-sequence-value: up to 63 bits."""
        start = self.pos
        while self.pos < len(self.line) and 0x30 <= self.line[self.pos] <= 0x39:
            self.pos += 1
        digits = self.line[start : self.pos]
        if not digits or len(digits) > 19:
            raise self.error("Expected a number")
        value = int(digits)
        if value > 0x7FFFFFFFFFFFFFFF or (nonzero and value == 0):
            raise self.error("Number out of range")
        return value

    def number(self, *, nonzero: bool = False) -> int:
        start = self.pos
        while self.pos < len(self.line) and 0x30 <= self.line[self.pos] <= 0x39:
            self.pos += 1
        digits = self.line[start : self.pos]
        if not digits or len(digits) > 10:
            raise self.error("Expected a number")
        value = int(digits)
        # RFC 3501 §9: number is a 32-bit unsigned value.
        if value > 0xFFFFFFFF or (nonzero and value == 0):
            raise self.error("Number out of range")
        return value

    # -- strings

    def _literal(self) -> bytes | None:
        m = LITERAL_HEADER.search(self.line, self.pos)
        if m is None or m.start() != self.pos:
            return None
        if self.seg >= len(self.literals):
            raise self.error("Literal missing")
        data = self.literals[self.seg]
        if len(data) != int(m.group(2)):
            raise self.error("Literal length mismatch")
        if not m.group(1) and b"\0" in data:
            raise self.error("NUL in a literal")  # RFC 3501 §4.3
        self.seg += 1
        self.pos = 0
        self.line = self.lines[self.seg]
        return data

    def quoted(self) -> bytes:
        self.expect(b'"')
        out = bytearray()
        line = self.line
        while True:
            if self.pos >= len(line):
                raise self.error("Unterminated quoted string")
            b = line[self.pos]
            self.pos += 1
            if b == 0x22:
                return bytes(out)
            if b == 0x5C:
                if self.pos >= len(line) or line[self.pos] not in (0x22, 0x5C):
                    raise self.error("Bad escape in quoted string")
                b = line[self.pos]
                self.pos += 1
            elif b == 0:
                raise self.error("Bad character in quoted string")
            out.append(b)

    def string(self) -> bytes:
        b = self.peek()
        if b == 0x22:
            return self.quoted()
        if b in (0x7B, 0x7E):
            data = self._literal()
            if data is not None:
                return data
        raise self.error("Expected a string")

    def _string_ahead(self) -> bool:
        """A quoted string or a literal starts here; "~" alone starts an atom ("~user")."""
        b = self.peek()
        if b == 0x7E:
            return self.line[self.pos + 1 : self.pos + 2] == b"{"
        return b in (0x22, 0x7B)

    def astring(self) -> bytes:
        if self._string_ahead():
            return self.string()
        value = self._run(allow=frozenset(b"]"))
        if not value:
            raise self.error("Expected a string")
        return value

    def nstring_or_nil(self) -> bytes | None:
        if self.line[self.pos : self.pos + 3].upper() == b"NIL" and (
            self.pos + 3 == len(self.line) or self.line[self.pos + 3] in b" )"
        ):
            self.pos += 3
            return None
        return self.string()

    def text(self, data: bytes) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error("Invalid UTF-8") from None

    def mailbox(self) -> str:
        return decode_mailbox(self.astring(), utf8=self.utf8, error=self.error)

    def list_mailbox(self) -> str:
        if self._string_ahead():
            data = self.string()
        else:
            data = self._run(allow=frozenset(b"]%*"))
            if not data:
                raise self.error("Expected a mailbox pattern")
        return decode_mailbox(data, utf8=self.utf8, error=self.error)

    # -- lists

    def open_list(self) -> None:
        self.expect(b"(")

    def close_list(self) -> bool:
        return self.accept(b")")

    def flag(self) -> str:
        if self.accept(b"\\"):
            if self.accept(b"*"):
                return "\\*"
            return "\\" + self.atom()
        return self.atom()

    def flag_list(self) -> tuple[str, ...]:
        self.open_list()
        flags = []
        if self.close_list():
            return ()
        while True:
            flags.append(self.flag())
            if self.close_list():
                return tuple(flags)
            self.sp()

    # -- sequence sets

    def sequence_set(self) -> SequenceSet:
        if self.accept(b"$"):
            return SequenceSet(saved=True)
        ranges = []
        while True:
            low = self._seq_number()
            high = low
            if self.accept(b":"):
                high = self._seq_number()
            ranges.append((low, high))
            if not self.accept(b","):
                return SequenceSet(tuple(ranges))

    def _seq_number(self) -> int:
        if self.accept(b"*"):
            return STAR
        return self.number(nonzero=True)

    # -- dates

    def date(self) -> date:
        quoted = self.accept(b'"')
        start = self.pos
        while self.pos < len(self.line) and self.line[self.pos] not in b' )"':
            self.pos += 1
        text = self.line[start : self.pos].decode("ascii", "replace")
        if quoted:
            self.expect(b'"')
        return parse_date(text, error=self.error)

    def date_time(self) -> datetime:
        return parse_date_time(self.quoted().decode("ascii", "replace"), error=self.error)


def decode_mailbox(data: bytes, *, utf8: bool, error=ParseError) -> str:
    """A mailbox name from the wire: UTF-8 once enabled (RFC 6855 §3), else modified UTF-7."""
    try:
        if utf8 or not data.isascii():
            name = data.decode("utf-8")
        else:
            name = decode_mutf7(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise error("Invalid mailbox name") from None
    # RFC 3501 §5.1: INBOX is case-insensitive, also as the first level of a child.
    first, sep, rest = name.partition("/")
    if first.upper() == "INBOX":
        name = "INBOX" + sep + rest
    return name


def parse_date(text: str, *, error=ParseError) -> date:
    """RFC 3501 §9 date: d-Mon-yyyy."""
    try:
        day, month, year = text.split("-")
        if not (1 <= len(day) <= 2 and len(year) == 4 and day.isdigit() and year.isdigit()):
            raise ValueError
        return date(int(year), month_number(month), int(day))
    except ValueError:
        raise error("Invalid date") from None


def parse_date_time(text: str, *, error=ParseError) -> datetime:
    """RFC 3501 §9 date-time: "dd-Mon-yyyy hh:mm:ss +zzzz" (day may be space-padded)."""
    try:
        day_part, time_part, zone = text.strip().split()
        d = parse_date(day_part, error=ValueError)
        hh, mm, ss = (int(x) for x in time_part.split(":"))
        if len(zone) != 5 or zone[0] not in "+-" or not zone[1:].isdigit():
            raise ValueError
        minutes = int(zone[1:3]) * 60 + int(zone[3:5])
        tz = timezone(timedelta(minutes=minutes if zone[0] == "+" else -minutes))
        return datetime(d.year, d.month, d.day, hh, mm, ss, tzinfo=tz)
    except (ValueError, TypeError):
        raise error("Invalid date-time") from None


# --------------------------------------------------------------------------- entry point

#: Argument parsers by command name; each reads what follows the command name.
ARGUMENTS: dict[str, object] = {}


def arguments(*names):
    def register(f):
        for name in names:
            ARGUMENTS[name] = f
        return f

    return register


def parse_tag(raw: RawCommand) -> str | None:
    """The tag of a command, or None when it has none (for an untagged BAD)."""
    line = raw.lines[0]
    end = line.find(b" ")
    tag = line if end < 0 else line[:end]
    if not tag or any(b <= 0x20 or b >= 0x7F or b in b'(){%*"\\+' for b in tag):
        return None
    return tag.decode("ascii")


def parse_command(raw: RawCommand, *, utf8: bool = False) -> Command:
    """Parse one complete command; ParseError (with the tag if known) when malformed."""
    r = Reader(raw, utf8=utf8)
    tag = parse_tag(raw)
    if tag is None:
        raise ParseError("Missing or invalid tag")
    r.pos = len(tag)
    r.tag = tag
    r.sp()
    name = r.atom().upper()
    if name == "UID":
        r.sp()
        sub = r.atom().upper()
        name = "UID " + sub
    parse = ARGUMENTS.get(name)
    if parse is None:
        raise r.error("Unknown command")
    args = parse(r)
    r.end()
    return Command(tag, name, args)


# The argument parsers of the commands register themselves in ARGUMENTS.
from mailsuite.imap import arguments as _arguments  # noqa: E402,F401
