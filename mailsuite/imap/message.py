"""
A stored message as IMAP sees it: ENVELOPE, BODY and BODYSTRUCTURE (RFC 3501 §7.4.2,
RFC 9051 §7.5.2), body sections (RFC 3501 §6.4.5), BINARY (RFC 3516) and the decoded header
and text values that SEARCH and SORT compare.

Everything is computed from the raw bytes, parsed once by ``mailsuite.imap.mime``; sections
are exact slices of those bytes, so sizes in BODYSTRUCTURE match what FETCH sends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

from mailsuite.imap import mime
from mailsuite.imap.mime import Part
from mailsuite.imap.wire import NIL, nstring

_ADDRESS_TOKEN = re.compile(
    rb'(?P<q>"(?:[^"\\]|\\.)*"?)'
    rb"|(?P<c>\((?:[^()\\]|\\.|\((?:[^()\\]|\\.)*\))*\)?)"
    rb"|(?P<d>\[(?:[^\]\\]|\\.)*\]?)"
    rb"|(?P<s>[<>@,;:.])"
    rb'|(?P<a>[^\s<>@,;:."(\[]+)'
    rb"|(?P<w>\s+)",
    re.S,
)
_QUOTED_PAIR = re.compile(rb"\\(.)", re.S)
_COMMENT = re.compile(rb"\((?:[^()\\]|\\.)*\)", re.S)

_ENVELOPE_ADDRESSES = ("from", "sender", "reply-to", "to", "cc", "bcc")


class UnknownEncoding(Exception):
    """RFC 3516 §4.3: the part's Content-Transfer-Encoding cannot be decoded."""


@dataclass(frozen=True)
class SectionSpec:
    """A body section (RFC 3501 §6.4.5): part numbers, then an optional text specifier."""

    part: tuple[int, ...] = ()           # () = the whole message; (1, 2) = part 1.2
    text: str = ""                       # "", HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME
    fields: tuple[str, ...] = ()         # for HEADER.FIELDS[.NOT], upper-case


@dataclass(frozen=True)
class Address:
    """A mailbox from an address header; ``name`` is RFC 2047-decoded."""

    name: str | None
    mailbox: str
    host: str

    @property
    def addr_spec(self) -> str:
        return f"{self.mailbox}@{self.host}" if self.host else self.mailbox


# --------------------------------------------------------------------------- addresses

#: One entry of an address list: (name, adl, mailbox, host).  RFC 3501 §7.4.2: a group
#: starts with (NIL, NIL, group-name, NIL) and ends with (NIL, NIL, NIL, NIL).
AddressItem = tuple[bytes | None, bytes | None, bytes | None, bytes | None]
_GROUP_END: AddressItem = (None, None, None, None)


def parse_address_list(raw: bytes) -> list[AddressItem]:
    """
    An RFC 5322 §3.4 address list, leniently: mailboxes with or without angle brackets,
    source routes, groups, quoted strings and comments (a comment names a bare addr-spec).
    """
    items: list[AddressItem] = []
    words: list[tuple[str, bytes, bool]] = []
    comment: bytes | None = None
    angle: tuple[bytes | None, bytes, bytes] | None = None
    in_group = False
    tokens = _address_tokens(raw)
    index = 0

    def flush():
        nonlocal words, comment, angle
        name = _phrase(words)
        if angle is not None:
            items.append((name if name is not None else comment, *angle))
        elif words:
            mailbox, host = _addr_spec(words)
            items.append((comment, None, mailbox, host))
        words, comment, angle = [], None, None

    while index < len(tokens):
        kind, text, space = tokens[index]
        index += 1
        if kind == "s" and text == b",":
            flush()
        elif kind == "s" and text == b";":
            flush()
            if in_group:
                items.append(_GROUP_END)
                in_group = False
        elif kind == "s" and text == b":" and not in_group and angle is None:
            items.append((None, None, _phrase(words) or b"", None))
            words, comment, in_group = [], None, True
        elif kind == "s" and text == b"<":
            inner = []
            while index < len(tokens) and tokens[index][1] != b">":
                inner.append(tokens[index])
                index += 1
            index += 1
            angle = _route_addr(inner)
        elif kind == "c":
            comment = _unescape(text[1:-1] if text.endswith(b")") else text[1:]).strip()
        else:
            words.append((kind, text, space))
    flush()
    if in_group:
        items.append(_GROUP_END)
    return items


def _address_tokens(raw: bytes) -> list[tuple[str, bytes, bool]]:
    tokens = []
    space = False
    for match in _ADDRESS_TOKEN.finditer(raw[:mime.MAX_STRUCTURED]):
        if match.lastgroup == "w":
            space = True
            continue
        tokens.append((match.lastgroup, match.group(), space))
        space = False
    return tokens


def _unescape(text: bytes) -> bytes:
    return _QUOTED_PAIR.sub(rb"\1", text)


def _unquote(text: bytes) -> bytes:
    return _unescape(text[1:-1] if len(text) > 1 and text.endswith(b'"') else text[1:])


def _phrase(words: list[tuple[str, bytes, bool]]) -> bytes | None:
    """A display name: words unquoted, joined with one space where the source had space."""
    out = b""
    for position, (kind, text, space) in enumerate(words):
        if position and space:
            out += b" "
        out += _unquote(text) if kind == "q" else text
    return out if words else None


def _addr_spec(words: list[tuple[str, bytes, bool]]) -> tuple[bytes, bytes]:
    texts = [text for _, text, _ in words]
    if b"@" not in texts:
        return b"".join(texts), b""
    at = len(texts) - 1 - texts[::-1].index(b"@")
    return b"".join(texts[:at]), b"".join(texts[at + 1:])


def _route_addr(tokens: list[tuple[str, bytes, bool]]) -> tuple[bytes | None, bytes, bytes]:
    tokens = [token for token in tokens if token[0] != "c"]
    adl = None
    # RFC 5322 §4.4 obs-route: "@a,@b:" before the addr-spec.
    if tokens and tokens[0][1] == b"@":
        texts = [text for _, text, _ in tokens]
        if b":" in texts:
            colon = texts.index(b":")
            adl = b"".join(texts[:colon])
            tokens = tokens[colon + 1:]
    mailbox, host = _addr_spec(tokens)
    return adl, mailbox, host


def _address_list_wire(items: list[AddressItem]) -> bytes:
    if not items:
        return NIL
    return b"(" + b"".join(
        b"(" + b" ".join(nstring(value) for value in item) + b")" for item in items) + b")"


# --------------------------------------------------------------------------- structure


def envelope(data: bytes, part: Part) -> bytes:
    """RFC 3501 §7.4.2 ENVELOPE of the message whose root entity is ``part``."""
    lists = {name: parse_address_list(raw) if (raw := part.first(data, name)) else []
             for name in _ENVELOPE_ADDRESSES}
    # RFC 3501 §7.4.2: an absent or empty Sender or Reply-To takes the From value.
    for name in ("sender", "reply-to"):
        if not lists[name]:
            lists[name] = lists["from"]
    fields = [nstring(part.first(data, "date")), nstring(part.first(data, "subject"))]
    fields += [_address_list_wire(lists[name]) for name in _ENVELOPE_ADDRESSES]
    fields += [nstring(part.first(data, "in-reply-to")), nstring(part.first(data, "message-id"))]
    return b"(" + b" ".join(fields) + b")"


def body_structure(data: bytes, part: Part, *, extended: bool) -> bytes:
    """RFC 3501 §7.4.2 BODYSTRUCTURE (``extended``) or BODY of the entity ``part``."""
    if part.children is not None:
        children = part.children
        inner = (b"".join(body_structure(data, child, extended=extended) for child in children)
                 if children else _EMPTY_PART)
        fields = [inner, nstring(part.subtype)]
        if extended:
            fields += [_params(part.params), *_extension(data, part)]
        return b"(" + b" ".join(fields) + b")"
    params = list(part.params)
    if part.mtype == b"text" and part.param(b"charset") is None:
        params.append((b"charset", b"us-ascii"))   # RFC 2045 §5.2, RFC 2046 §4.1.2
    encoding = part.first(data, "content-transfer-encoding")
    encoding = mime.parse_structured(encoding)[0] if encoding else b""
    fields = [
        nstring(part.mtype), nstring(part.subtype), _params(params),
        nstring(part.first(data, "content-id")),
        nstring(part.first(data, "content-description")),
        nstring(encoding or b"7bit"),
        b"%d" % (part.body_end - part.body_start),
    ]
    if part.message is not None:
        fields += [envelope(data, part.message),
                   body_structure(data, part.message, extended=extended),
                   b"%d" % _lines(data, part)]
    elif part.mtype == b"text":
        fields.append(b"%d" % _lines(data, part))
    if extended:
        fields += [nstring(part.first(data, "content-md5")), *_extension(data, part)]
    return b"(" + b" ".join(fields) + b")"


# RFC 3501 §9: a multipart body has at least one part; a multipart in which no delimiter
# was found shows one empty text part.
_EMPTY_PART = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)'


def _params(params: list[tuple[bytes, bytes]]) -> bytes:
    if not params:
        return NIL
    return b"(" + b" ".join(nstring(k) + b" " + nstring(v) for k, v in params) + b")"


def _extension(data: bytes, part: Part) -> list[bytes]:
    """body-fld-dsp, body-fld-lang and body-fld-loc (RFC 3501 §9)."""
    disposition = NIL
    raw = part.first(data, "content-disposition")
    if raw:
        kind, params = mime.parse_structured(raw)
        if kind:
            disposition = b"(" + nstring(kind) + b" " + _params(params) + b")"
    language = NIL
    raw = part.first(data, "content-language")
    if raw:
        tags = [tag.strip() for tag in _COMMENT.sub(b"", raw).split(b",") if tag.strip()]
        if len(tags) == 1:
            language = nstring(tags[0])
        elif tags:
            language = b"(" + b" ".join(nstring(tag) for tag in tags) + b")"
    return [disposition, language, nstring(part.first(data, "content-location"))]


def _lines(data: bytes, part: Part) -> int:
    start, end = part.body_start, part.body_end
    count = data.count(b"\n", start, end)
    if end > start and data[end - 1] != 0x0A:
        count += 1   # a last line without its line break still counts
    return count


# --------------------------------------------------------------------------- sections


def _parts_below(part: Part, *, as_message: bool) -> list[Part]:
    """The entities numbered 1, 2, ... below ``part`` (RFC 3501 §6.4.5)."""
    if part.children is not None:
        return part.children
    if as_message:
        return [part]   # a non-multipart message has exactly part 1: its body
    if part.message is not None:
        return _parts_below(part.message, as_message=True)
    return []


def resolve(root: Part, numbers: tuple[int, ...]) -> Part | None:
    """The entity named by ``numbers`` below the message ``root``; None when missing."""
    candidates = _parts_below(root, as_message=True)
    part = None
    for number in numbers:
        if not 1 <= number <= len(candidates):
            return None
        part = candidates[number - 1]
        candidates = _parts_below(part, as_message=False)
    return part


def _header_fields(data: bytes, message: Part, names: tuple[str, ...], *,
                   exclude: bool) -> bytes:
    wanted = {name.lower() for name in names}
    line_end = message.line_end
    out = []
    for field in message.fields:
        if (field.name in wanted) != exclude:
            raw = data[field.start:field.end]
            out.append(raw if raw.endswith(b"\n") else raw + line_end)
    out.append(line_end)
    return b"".join(out)


# --------------------------------------------------------------------------- the message


class ParsedMessage:
    """A message parsed once (bytes in). Cheap to keep; never mutates the bytes."""

    __slots__ = ("data", "root", "_cache")

    def __init__(self, data: bytes, root: Part):
        self.data = data
        self.root = root
        self._cache: dict[str, object] = {}

    @classmethod
    def parse(cls, data: bytes) -> ParsedMessage:
        data = bytes(data)
        return cls(data, mime.walk(data))

    @property
    def size(self) -> int:
        return len(self.data)

    def envelope(self) -> bytes:
        """The ENVELOPE, in wire syntax."""
        if "envelope" not in self._cache:
            self._cache["envelope"] = envelope(self.data, self.root)
        return self._cache["envelope"]

    def bodystructure(self, *, extended: bool = True) -> bytes:
        """BODYSTRUCTURE (``extended``) or BODY, in wire syntax."""
        key = "bodystructure" if extended else "body"
        if key not in self._cache:
            self._cache[key] = body_structure(self.data, self.root, extended=extended)
        return self._cache[key]

    def section(self, spec: SectionSpec) -> bytes:
        """The raw bytes of BODY[spec] (before any <partial>); b"" for a missing part."""
        data, text = self.data, spec.text.upper()
        if spec.part:
            part = resolve(self.root, spec.part)
            if part is None:
                return b""
            if text == "":
                return data[part.body_start:part.body_end]
            if text == "MIME":
                return data[part.header_start:part.header_end]
            # RFC 3501 §6.4.5: HEADER and TEXT after part numbers name a message/rfc822 part.
            message = part.message
            if message is None:
                return b""
        else:
            if text == "":
                return data
            message = self.root
        if text == "HEADER":
            return data[message.header_start:message.header_end]
        if text == "TEXT":
            return data[message.body_start:message.body_end]
        if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            return _header_fields(data, message, spec.fields,
                                  exclude=text == "HEADER.FIELDS.NOT")
        return b""

    def binary(self, part: tuple[int, ...]) -> bytes:
        """RFC 3516 BINARY[part]: the part's body with its transfer encoding undone."""
        if not part:
            return self.data
        entity = resolve(self.root, part)
        if entity is None:
            return b""
        raw = entity.first(self.data, "content-transfer-encoding")
        encoding = mime.parse_structured(raw)[0] if raw else b""
        decoded = mime.transfer_decode(self.data[entity.body_start:entity.body_end], encoding)
        if decoded is None:
            raise UnknownEncoding(encoding.decode("ascii", "replace"))
        return decoded

    def binary_size(self, part: tuple[int, ...]) -> int:
        """RFC 3516 BINARY.SIZE[part]."""
        return len(self.binary(part))

    def header(self, name: str) -> list[str]:
        """Decoded (RFC 2047) values of every top-level header field called ``name``."""
        return [mime.header_text(raw) for raw in self.root.all(self.data, name.lower())]

    def text(self) -> str:
        """The decoded text of all text/* parts, for SEARCH BODY and TEXT."""
        texts = []
        for part in self.root.walk():
            if part.mtype != b"text" or part.children is not None:
                continue
            raw = part.first(self.data, "content-transfer-encoding")
            encoding = mime.parse_structured(raw)[0] if raw else b""
            body = self.data[part.body_start:part.body_end]
            decoded = mime.transfer_decode(body, encoding)
            texts.append(mime.decode_text(body if decoded is None else decoded,
                                          part.param(b"charset")))
        return "\n".join(texts)

    def _first_text(self, name: str) -> str | None:
        raw = self.root.first(self.data, name)
        return None if raw is None else mime.header_text(raw)

    @property
    def date(self) -> datetime | None:
        """The Date header as a datetime (RFC 5322 §3.3), or None when absent or unreadable."""
        raw = self._first_text("date")
        if not raw:
            return None
        try:
            return parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None

    @property
    def message_id(self) -> str | None:
        return self._first_text("message-id")

    @property
    def subject(self) -> str | None:
        return self._first_text("subject")

    def addresses(self, name: str) -> list[Address]:
        """The mailboxes of the first top-level header ``name`` (groups flattened)."""
        raw = self.root.first(self.data, name.lower())
        if not raw:
            return []
        out = []
        for display, _, mailbox, host in parse_address_list(raw):
            if mailbox is None or host is None:
                continue   # group start or end marker
            out.append(Address(
                None if display is None else mime.header_text(display),
                mailbox.decode("utf-8", "replace"), host.decode("utf-8", "replace")))
        return out

    @property
    def from_(self) -> list[Address]:
        return self.addresses("from")

    @property
    def sender(self) -> list[Address]:
        return self.addresses("sender")

    @property
    def reply_to(self) -> list[Address]:
        return self.addresses("reply-to")

    @property
    def to(self) -> list[Address]:
        return self.addresses("to")

    @property
    def cc(self) -> list[Address]:
        return self.addresses("cc")

    @property
    def bcc(self) -> list[Address]:
        return self.addresses("bcc")
