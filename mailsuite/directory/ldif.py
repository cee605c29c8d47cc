"""
LDIF (RFC 2849) content records: a pure parser and a writer.

Only entry content is handled: ``changetype: add`` is accepted as a plain entry; other change
types, controls and ``:<`` URL values are refused with an LDIFError naming the line.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

from mailsuite.directory.entry import DNError, Entry, Value
from mailsuite.interfaces import InvalidEntry

# RFC 2849 §"Formal Syntax": AttributeDescription = AttributeType [";" options]
_ATTRIBUTE_RE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)*)(?:;[A-Za-z0-9-]+)*$")

#: RFC 2849 recommends lines of at most 76 characters.
FOLD_WIDTH = 76


class LDIFError(InvalidEntry):
    """The LDIF input is malformed; ``line`` is the 1-based line number concerned."""

    def __init__(self, line: int, message: str):
        super().__init__(f"LDIF line {line}: {message}")
        self.line = line


def parse_ldif(data: bytes) -> list[Entry]:
    """Parse LDIF content ``data`` into entries, in file order."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return _parse_plain(data)
    except _Unusual:
        # The line-by-line parser gives the same entries and names the offending line.
        return _parse_lines(data)


# What bytes.strip() removes, for the version line.
_ASCII_SPACE = " \t\n\r\x0b\x0c"


class _Unusual(Exception):
    """The input needs the line-by-line parser: an error to locate, or a rare construct."""


def _parse_plain(data: bytes) -> list[Entry]:
    """
    The common case, fast: valid UTF-8 content records.  Works on whole records instead of
    single lines; raises _Unusual for anything it does not handle exactly as _parse_lines
    does (errors, URL values, a line starting with a space right after a blank line).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Unusual from None
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if text.endswith("\r"):
            text = text[:-1]
    if text.startswith(" ") or "\n\n " in text:
        raise _Unusual
    # RFC 2849 note 2: a line starting with one space continues the previous one; a folded
    # comment stays one comment line.
    text = text.replace("\n ", "")
    names: dict[str, tuple[str, str]] = {}  # as written -> (as written, lower-cased)
    classes: dict[str, str] = {}  # objectClass values seen
    entries = []
    first = True
    for chunk in text.split("\n\n"):
        lines = [line for line in chunk.split("\n") if line and line[0] != "#"]
        if not lines:
            continue
        if first:
            first = False
            if lines[0][:8].lower() == "version:":
                if lines[0][8:].strip(_ASCII_SPACE) != "1":
                    raise _Unusual
                del lines[0]
                if not lines:
                    continue
        entries.append(_plain_entry(lines, names, classes))
    return entries


def _plain_entry(lines: list[str], names: dict[str, tuple[str, str]],
                 classes: dict[str, str]) -> Entry:
    dn = _plain_value(lines[0], names, "dn")
    if not isinstance(dn, str):
        raise _Unusual
    attributes: dict[str, tuple[str, list[Value]]] = {}
    rest_lines = lines[1:]
    if rest_lines and rest_lines[0][:11].lower() == "changetype:":
        change = _plain_value(rest_lines[0], names, "changetype")
        if not isinstance(change, str) or change.strip().lower() != "add":
            raise _Unusual
        del rest_lines[0]
    for line in rest_lines:
        raw, colon, rest = line.partition(":")
        known = names.get(raw)
        if known is None or not colon:
            if not colon or not _ATTRIBUTE_RE.match(raw):
                raise _Unusual
            known = names[raw] = (raw, raw.lower())
        attr, key = known
        first = rest[:1]
        if first == " ":
            value: Value = rest.lstrip(" ")
        elif first == ":" or first == "<":
            value = _plain_value(line, names, key)
        else:
            value = rest
        if key == "objectclass" and isinstance(value, str):
            # One string object per class name for the whole input, not one per entry.
            value = classes.setdefault(value, value)
        found = attributes.get(key)
        if found is None:
            if key in _RECORD_KEYWORDS:
                raise _Unusual
            attributes[key] = (attr, [value])
        else:
            found[1].append(value)
    if not attributes:
        raise _Unusual
    entry = Entry.trusted(
        dn, {key: (attr, tuple(values)) for key, (attr, values) in attributes.items()})
    try:
        entry.rdns
    except DNError:
        raise _Unusual from None
    return entry


def _plain_value(line: str, names: dict[str, tuple[str, str]], expected: str) -> Value:
    """The value of ``line``, whose lower-cased attribute name must be ``expected``."""
    raw, colon, rest = line.partition(":")
    if not colon or raw.lower() != expected or not _ATTRIBUTE_RE.match(raw):
        raise _Unusual
    if rest[:1] == ":":
        try:
            octets = base64.b64decode(rest[1:].strip(" "), validate=True)
        except (binascii.Error, ValueError):
            raise _Unusual from None
        try:
            return octets.decode("utf-8")
        except UnicodeDecodeError:
            return octets
    if rest[:1] == "<":
        raise _Unusual
    return rest.lstrip(" ")


def _parse_lines(data: bytes) -> list[Entry]:
    """Parse line by line, naming the line of any error."""
    entries = []
    names: dict[bytes, str] = {}  # attribute names already validated in this input
    first = True
    for record in _records(data):
        if first:
            first = False
            lineno, line = record[0]
            if line[:8].lower() == b"version:":
                if line[8:].strip() != b"1":
                    raise LDIFError(lineno, "only LDIF version 1 is supported")
                record = record[1:]
                if not record:
                    continue
        entries.append(_entry(record, names))
    return entries


def _records(data: bytes):
    """Yield records: lists of (line number, unfolded line) without comments."""
    record: list[tuple[int, bytes]] = []
    parts: list[bytes] = []
    start = 0
    in_comment = False

    def logical():
        if parts:
            record.append((start, b"".join(parts)))
            parts.clear()

    for number, raw in enumerate(data.split(b"\n"), 1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if raw.startswith(b" ") and not parts and not in_comment and not raw.strip(b" "):
            raw = b""  # a whitespace-only line where no line can continue: a separator
        if raw.startswith(b" "):
            # RFC 2849 note 2: a line starting with one space continues the previous one.
            if in_comment:
                continue
            if not parts:
                raise LDIFError(number, "continuation line without a line to continue")
            parts.append(raw[1:])
            continue
        logical()
        in_comment = False
        if not raw:
            if record:
                yield record
                record = []
            continue
        if raw.startswith(b"#"):
            in_comment = True
            continue
        start = number
        parts.append(raw)
    logical()
    if record:
        yield record


def _entry(record: list[tuple[int, bytes]], names: dict[bytes, str]) -> Entry:
    lineno, line = record[0]
    name, value = _attribute_value(lineno, line, names)
    if name.lower() != "dn":
        raise LDIFError(lineno, "a record must start with 'dn:'")
    if not isinstance(value, str):
        raise LDIFError(lineno, "the DN is not UTF-8")
    dn = value
    attributes: dict[str, list[Value]] = {}
    spelled: dict[str, str] = {}
    lines = record[1:]
    if lines:
        number, line = lines[0]
        attr, change = _attribute_value(number, line, names)
        low = attr.lower()
        if low == "control":
            raise LDIFError(number, "LDIF controls are not supported")
        if low == "changetype":
            if not isinstance(change, str) or change.strip().lower() != "add":
                raise LDIFError(number, f"changetype {change!r} is not supported, only 'add'")
            lines = lines[1:]
    if not lines:
        raise LDIFError(lineno, f"entry {dn!r} has no attributes")
    for number, line in lines:
        attr, value = _attribute_value(number, line, names)
        key = attr.lower()
        if key in _RECORD_KEYWORDS:
            raise LDIFError(number, f"unexpected {attr!r} inside an entry")
        known = spelled.get(key)
        if known is None:
            spelled[key] = attr
            attributes[attr] = [value]
        else:
            attributes[known].append(value)
    entry = Entry(dn, attributes)
    try:
        entry.rdns  # validates the DN now, to name the line
    except DNError as e:
        raise LDIFError(lineno, str(e)) from None
    return entry


_RECORD_KEYWORDS = frozenset({"dn", "changetype", "control"})


def _attribute_value(number: int, line: bytes, names: dict[bytes, str]) -> tuple[str, Value]:
    raw_name, colon, rest = line.partition(b":")
    if not colon or not raw_name:
        raise LDIFError(number, "expected 'attribute: value'")
    attr = names.get(raw_name)
    if attr is None:
        try:
            attr = raw_name.decode("ascii")
        except UnicodeDecodeError:
            raise LDIFError(number, "the attribute name is not ASCII") from None
        if not _ATTRIBUTE_RE.match(attr):
            raise LDIFError(number, f"bad attribute name {attr!r}")
        names[raw_name] = attr
    if rest.startswith(b":"):
        try:
            raw = base64.b64decode(rest[1:].strip(b" "), validate=True)
        except (binascii.Error, ValueError):
            raise LDIFError(number, f"bad base64 value for {attr!r}") from None
        try:
            return attr, raw.decode("utf-8")
        except UnicodeDecodeError:
            return attr, raw
    if rest.startswith(b"<"):
        raise LDIFError(number, "URL values (':<') are not supported")
    try:
        return attr, rest.lstrip(b" ").decode("utf-8")
    except UnicodeDecodeError:
        raise LDIFError(number, f"value of {attr!r} is not UTF-8; use base64 ('::')") from None


# --------------------------------------------------------------------------- writer


def _is_safe(value: str) -> bool:
    """RFC 2849 SAFE-STRING, plus no trailing space (§"Notes on LDIF Syntax" 8)."""
    if not value:
        return True
    if value[0] in " :<" or value[-1] == " ":
        return False
    return value.isascii() and "\0" not in value and "\n" not in value and "\r" not in value


def _line(name: str, value: Value) -> str:
    if isinstance(value, str) and _is_safe(value):
        text = f"{name}: {value}"
    else:
        raw = value if isinstance(value, bytes) else value.encode("utf-8")
        text = f"{name}:: {base64.b64encode(raw).decode('ascii')}"
    if len(text) <= FOLD_WIDTH:
        return text
    pieces = [text[:FOLD_WIDTH]]
    step = FOLD_WIDTH - 1
    pieces.extend(" " + text[k:k + step] for k in range(FOLD_WIDTH, len(text), step))
    return "\n".join(pieces)


def write_ldif(entries: Iterable[Entry]) -> bytes:
    """Write ``entries`` as LDIF version 1, folded at 76 columns, records separated by a blank line."""
    out = ["version: 1", ""]
    for entry in entries:
        out.append(_line("dn", entry.dn))
        for name, values in entry.attributes.items():
            for value in values:
                out.append(_line(name, value))
        out.append("")
    return "\n".join(out).encode("ascii")
