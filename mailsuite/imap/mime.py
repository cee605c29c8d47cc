"""
A MIME walker over raw message bytes (RFC 2045, RFC 2046, RFC 5322): one forward walk that
records, for every entity, where its header and body start and end, so that IMAP body
sections are exact slices of the stored bytes.  Also the small decoders the IMAP layer needs:
header unfolding, Content-Type parameters, RFC 2047 encoded words, base64 and
quoted-printable.

The walker never raises on malformed mail.  Bare-LF line ends, missing boundaries, a missing
final boundary and garbage header lines are tolerated; nesting deeper than ``MAX_DEPTH`` is
kept opaque and parts beyond ``MAX_PARTS`` are skipped, so a MIME bomb costs time linear in
size × nesting depth and bounded memory.
"""

from __future__ import annotations

import binascii
import re

#: Entities nested deeper than this are opaque: their bodies are not parsed.
MAX_DEPTH = 50
#: At most this many entities are recorded per message; later body parts are skipped.
MAX_PARTS = 10_000
#: Header lines read one by one per message; beyond this, header ends are found unread.
MAX_HEADER_LINES = 100_000
#: Structured header values (Content-Type and friends) are only read this far.
MAX_STRUCTURED = 64 * 1024
# RFC 2046 §5.1.1: a boundary is at most 70 characters; a delimiter line may carry
# transport padding, which is tolerated up to this many octets.
_MAX_DELIMITER_LINE = 2 + 70 + 2 + 256

# RFC 5322 §3.6.8: field-name = 1*ftext (printable US-ASCII except ":").
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")
_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_LINE_BREAK = re.compile(rb"[\r\n]")
_STRUCTURED_TOKEN = re.compile(
    rb'(?P<q>"(?:[^"\\]|\\.)*"?)'
    rb"|(?P<c>\((?:[^()\\]|\\.)*\)?)"
    rb"|(?P<s>[;=])"
    rb'|(?P<a>[^\s;="(]+)'
    rb"|(?P<w>\s+)",
    re.S,
)
_QUOTED_PAIR = re.compile(rb"\\(.)", re.S)
_MEDIA_TOKEN = re.compile(rb"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_BASE64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")

_COMPOSITE_MESSAGE = {b"rfc822", b"global"}   # RFC 2046 §5.2.1, RFC 6532 §3.7


class Field:
    """One header field: its lower-case name (None for a garbage line) and byte offsets."""

    __slots__ = ("name", "start", "value_start", "end")

    def __init__(self, name: str | None, start: int, value_start: int, end: int):
        self.name = name
        self.start = start
        self.value_start = value_start
        self.end = end


class Part:
    """
    One MIME entity.  ``header_start:header_end`` is its header including the blank line that
    ends it (when there is one); ``body_start:body_end`` its body.  A multipart has
    ``children`` (a list); a message/rfc822 part has ``message``, the encapsulated message's
    root entity, whose bytes are this part's body.
    """

    __slots__ = ("header_start", "header_end", "body_start", "body_end", "fields",
                 "mtype", "subtype", "params", "children", "message", "depth",
                 "boundary", "current", "line_end")

    def __init__(self, header_start: int, depth: int):
        self.header_start = header_start
        self.header_end = header_start
        self.body_start = header_start
        self.body_end: int | None = None
        self.fields: list[Field] = []
        self.mtype = b"text"
        self.subtype = b"plain"
        self.params: list[tuple[bytes, bytes]] = []
        self.children: list[Part] | None = None
        self.message: Part | None = None
        self.depth = depth
        self.boundary: bytes | None = None
        self.current: Part | None = None
        self.line_end = b"\r\n"

    def first(self, data: bytes, name: str) -> bytes | None:
        """The unfolded raw value of the first field called ``name`` (lower-case), or None."""
        for field in self.fields:
            if field.name == name:
                return field_value(data, field)
        return None

    def all(self, data: bytes, name: str) -> list[bytes]:
        return [field_value(data, f) for f in self.fields if f.name == name]

    def param(self, name: bytes) -> bytes | None:
        """The value of the first Content-Type parameter called ``name`` (lower-case)."""
        return param_in(self.params, name)

    def walk(self):
        """This entity and all below it, depth first, in section order."""
        stack = [self]
        while stack:
            part = stack.pop()
            yield part
            below = part.children if part.children is not None else (
                [part.message] if part.message is not None else [])
            stack.extend(reversed(below))


def field_value(data: bytes, field: Field) -> bytes:
    """RFC 5322 §2.2.3: unfold (drop each line break before white space), trim."""
    raw = data[field.value_start:field.end]
    return _LINE_BREAK.sub(b"", _FOLD.sub(b"", raw)).strip(b" \t")


def param_in(params: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The value of the first parameter called ``name`` (lower-case), or None."""
    for key, value in params:
        if key.lower() == name:
            return value
    return None


def parse_structured(value: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """
    ``token; name=value; ...`` as in Content-Type and Content-Disposition (RFC 2045 §5.1,
    RFC 2183 §2): the leading token (lower-case) and the parameters in order, with quoted
    values unquoted and comments dropped.
    """
    segments: list[list[tuple[str, bytes]]] = [[]]
    for match in _STRUCTURED_TOKEN.finditer(value[:MAX_STRUCTURED]):
        kind = match.lastgroup
        text = match.group()
        if kind == "s" and text == b";":
            segments.append([])
        elif kind in ("q", "a", "s"):
            segments[-1].append((kind, text))
    head = b"".join(text for _, text in segments[0]).lower()
    params = []
    for segment in segments[1:]:
        name, value_parts, seen_equals = b"", [], False
        for kind, text in segment:
            if kind == "s":
                if seen_equals:
                    value_parts.append(text)
                seen_equals = True
            elif not seen_equals:
                name += text
            else:
                value_parts.append(_unquote(text) if kind == "q" else text)
        if name and seen_equals:
            params.append((name, b"".join(value_parts)))
    return head, params


def _unquote(text: bytes) -> bytes:
    inner = text[1:-1] if len(text) > 1 and text.endswith(b'"') else text[1:]
    return _QUOTED_PAIR.sub(rb"\1", inner)


def transfer_decode(body: bytes, encoding: bytes) -> bytes | None:
    """
    The body with its Content-Transfer-Encoding (RFC 2045 §6) undone, leniently; None when
    the encoding is not one this module knows.
    """
    encoding = encoding.lower()
    if encoding in (b"", b"7bit", b"8bit", b"binary"):
        return body
    if encoding == b"base64":
        return decode_base64(body)
    if encoding == b"quoted-printable":
        return binascii.a2b_qp(body)
    return None


def decode_base64(text: bytes) -> bytes:
    # RFC 2045 §6.8: characters outside the alphabet are ignored; a damaged tail is cut.
    clean = _BASE64_JUNK.sub(b"", text)
    clean = clean[:len(clean) - len(clean) % 4] if len(clean) % 4 == 1 else clean
    clean += b"=" * (-len(clean) % 4)
    try:
        return binascii.a2b_base64(clean)
    except binascii.Error:
        return b""


def header_text(raw: bytes) -> str:
    """A raw header value as text: UTF-8 (RFC 6532) or Latin-1, then RFC 2047 decoded."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return decode_encoded_words(text)


def decode_encoded_words(text: str) -> str:
    """RFC 2047 §6: decode encoded words; never raises."""
    out: list[str] = []
    pending: list[bytes] = []
    pending_charset = ""
    position = 0

    def flush():
        if pending:
            out.append(_decode_charset(b"".join(pending), pending_charset))
            pending.clear()

    for match in _ENCODED_WORD.finditer(text):
        between = text[position:match.start()]
        charset = match.group(1).split("*", 1)[0].lower()   # RFC 2231 §5 language suffix
        # RFC 2047 §6.2: white space between adjacent encoded words is not displayed.
        if between and (not pending or between.strip(" \t\r\n")):
            flush()
            out.append(between)
        elif pending and charset != pending_charset:
            flush()
        payload = match.group(3).encode("ascii", "replace")
        if match.group(2) in "Bb":
            pending.append(decode_base64(payload))
        else:
            pending.append(binascii.a2b_qp(payload, header=True))
        pending_charset = charset
        position = match.end()
    flush()
    out.append(text[position:])
    return "".join(out)


def _decode_charset(data: bytes, charset: str | bytes | None) -> str:
    if isinstance(charset, bytes):
        charset = charset.decode("ascii", "replace")
    try:
        return data.decode(charset or "us-ascii", "replace")
    except (LookupError, ValueError):
        return data.decode("utf-8", "replace")


def decode_text(data: bytes, charset: bytes | None) -> str:
    """Body bytes in the given charset as text; unknown charsets read as UTF-8."""
    if charset is None or charset.lower() in (b"us-ascii", b"ascii"):
        charset = b"utf-8"   # 8-bit text labelled ASCII is nearly always UTF-8
    return _decode_charset(data, charset)


# --------------------------------------------------------------------------- the walker


_UNSEARCHED = object()
_DELIMITER_TAIL = re.compile(rb"(--)?[ \t\r]*(?=\n|\Z)")
# After this many near-miss delimiter lines in a message, boundaries are searched with a
# compiled pattern (at most _MAX_PATTERNS of them, as compiling costs time too).
_FALSE_HITS_BEFORE_REGEX = 16
_MAX_PATTERNS = 64


class _Walker:
    def __init__(self, data: bytes):
        self.data = data
        self.size = len(data)
        self.open: list[Part] = []          # multiparts whose boundary is live, innermost last
        self.live: dict[bytes, Part] = {}
        self.hits: dict[bytes, object] = {}
        self.patterns: dict[bytes, re.Pattern[bytes]] = {}
        self.false_hits = 0
        self.compiled = 0
        self.parts = 0
        self.header_lines = 0

    def run(self) -> Part:
        root = self.entity(0, depth=0, digest=False)
        position = root.body_start
        while self.open:
            found = self.next_delimiter(position)
            if found is None:
                break
            position = self.on_delimiter(*found)
            if position < 0:
                break
        _finish(root, self.size)
        return root

    def push(self, multipart: Part) -> None:
        self.open.append(multipart)
        self.live[multipart.boundary] = multipart

    def pop(self) -> None:
        boundary = self.open.pop().boundary
        del self.live[boundary]
        self.hits.pop(boundary, None)

    def next_delimiter(self, position: int) -> tuple[Part, int, int, bool] | None:
        """(multipart, line start, end of line, is-close-delimiter) of the first delimiter
        line of a live boundary (RFC 2046 §5.1.1) starting at or after ``position``."""
        start = max(position - 1, 0)
        best: tuple[Part, int, int, bool] | None = None
        bound = self.size
        # Outermost first: an inner boundary is only searched up to the next delimiter of
        # an outer one, which will end the inner multipart anyway.  A result is kept until
        # the walk passes it, so each byte is scanned once per multipart enclosing it.
        for multipart in self.open:
            boundary = multipart.boundary
            hit = self.hits.get(boundary, _UNSEARCHED)
            if hit is _UNSEARCHED or (hit is not None and hit[1] - 1 < start):
                hit = self.search(multipart, start, bound)
                self.hits[boundary] = hit
            if hit is not None and hit[1] - 1 < bound:
                best, bound = hit, hit[1] - 1
        return best

    def search(self, multipart: Part, start: int, bound: int) -> tuple[Part, int, int, bool] | None:
        data = self.data
        boundary = multipart.boundary
        needle = b"\n--" + boundary
        while True:
            pattern = self.patterns.get(boundary)
            if pattern is not None:
                match = pattern.search(data, start, bound)
                if match is None:
                    return None
                return multipart, match.start() + 1, match.end(), match.group(1) is not None
            hit = data.find(needle, start, bound)
            if hit < 0:
                return None
            # \Z at ``bound`` is sound: the bound is the line break of an outer delimiter.
            tail = _DELIMITER_TAIL.match(data, hit + len(needle), bound)
            if tail is not None:
                return multipart, hit + 1, tail.end(), tail.group(1) is not None
            start = hit + 1
            # Many lines that merely start with the boundary: let the regex engine skip them.
            self.false_hits += 1
            if self.false_hits > _FALSE_HITS_BEFORE_REGEX and self.compiled < _MAX_PATTERNS:
                self.compiled += 1
                self.patterns[boundary] = re.compile(re.escape(needle) + _DELIMITER_TAIL.pattern)

    def delimiter_at(self, line: int) -> bool:
        """Whether the line starting at ``line`` is a delimiter of a live boundary."""
        data = self.data
        eol = data.find(b"\n", line, line + _MAX_DELIMITER_LINE)
        if eol < 0:
            if self.size - line > _MAX_DELIMITER_LINE:
                return False
            eol = self.size
        token = data[line + 2:eol].rstrip(b" \t\r")
        return token in self.live or (token.endswith(b"--") and token[:-2] in self.live)

    def on_delimiter(self, multipart: Part, line: int, eol: int, closing: bool) -> int:
        """Close the current body part; open the next one.  Where to search on, or -1
        when the part budget is spent."""
        # Delimiters of an outer boundary end every multipart nested inside it.
        while self.open[-1] is not multipart:
            self.pop()
        # RFC 2046 §5.1.1: the line break before a delimiter belongs to the delimiter.
        end = line - 1
        if end > 0 and self.data[end - 1] == 0x0D:
            end -= 1
        current = multipart.current
        if current is not None and current.body_end is None:
            current.body_end = max(current.body_start, end)
        multipart.current = None
        next_line = min(eol + 1, self.size)
        if closing:
            self.pop()
            return next_line
        if self.parts >= MAX_PARTS:
            return -1
        child = self.entity(next_line, depth=multipart.depth + 1,
                            digest=multipart.subtype == b"digest")
        multipart.children.append(child)
        multipart.current = child
        return child.body_start

    def entity(self, start: int, *, depth: int, digest: bool) -> Part:
        self.parts += 1
        part = Part(start, depth)
        self.read_header(part)
        self.content_type(part, digest=digest)
        composite = part.mtype == b"multipart" or (
            part.mtype == b"message" and part.subtype in _COMPOSITE_MESSAGE)
        boundary = part.param(b"boundary").rstrip(b" \t") if part.mtype == b"multipart" else b""
        if composite and (depth >= MAX_DEPTH or self.parts >= MAX_PARTS
                          or boundary in self.live):
            # Too deep, too many parts, or a boundary reused inside itself (RFC 2046
            # §5.1.2 forbids it): the body stays opaque.
            part.mtype, part.subtype, part.params = b"application", b"octet-stream", []
            return part
        if part.mtype == b"multipart":
            part.children = []
            part.boundary = boundary
            self.push(part)
        elif composite:
            part.message = self.entity(part.body_start, depth=depth + 1, digest=False)
        return part

    def read_header(self, part: Part) -> None:
        data, size = self.data, self.size
        position = part.header_start
        fields = part.fields
        while position < size:
            if self.header_lines >= MAX_HEADER_LINES:
                self.skip_header(part, position)
                return
            self.header_lines += 1
            eol = data.find(b"\n", position)
            next_line = size if eol < 0 else eol + 1
            first = data[position]
            if first == 0x0A or (first == 0x0D and next_line == position + 2):
                part.line_end = data[position:next_line]
                part.header_end = part.body_start = next_line
                return
            if first == 0x2D and self.live and self.delimiter_at(position):
                break
            if first in (0x20, 0x09):
                if not fields:
                    break   # no header at all: the body starts here
                fields[-1].end = next_line
            else:
                colon = data.find(b":", position, next_line)
                name = data[position:colon].rstrip(b" \t") if colon > 0 else b""
                if _FIELD_NAME.fullmatch(name):
                    fields.append(Field(name.decode("ascii").lower(), position, colon + 1,
                                        next_line))
                elif not fields:
                    break
                else:
                    fields.append(Field(None, position, position, next_line))
            position = next_line
        part.header_end = part.body_start = min(position, size)

    def skip_header(self, part: Part, position: int) -> None:
        """Find the end of a header without recording its fields (the line budget is spent)."""
        data = self.data
        ends = []
        limit = self.size
        if self.live:
            found = self.next_delimiter(position)
            if found is not None:
                limit = found[1]
                ends.append((limit, limit))
        for blank in (b"\n\n", b"\n\r\n"):
            hit = data.find(blank, max(position - 1, 0), limit)
            if hit >= 0:
                ends.append((hit + 1, hit + len(blank)))
        line, end = min(ends) if ends else (self.size, self.size)
        if end > line:
            part.line_end = data[line:end]
        part.header_end = part.body_start = end

    def content_type(self, part: Part, *, digest: bool) -> None:
        raw = part.first(self.data, "content-type")
        if raw is None:
            # RFC 2045 §5.2 defaults; RFC 2046 §5.1.5 inside multipart/digest.
            if digest:
                part.mtype, part.subtype = b"message", b"rfc822"
            return
        head, params = parse_structured(raw)
        mtype, _, subtype = head.partition(b"/")
        valid = _MEDIA_TOKEN.fullmatch(mtype) and _MEDIA_TOKEN.fullmatch(subtype)
        if mtype == b"multipart" and not (param_in(params, b"boundary") or b"").strip():
            valid = False
        if not valid:
            return   # RFC 2045 §5.2: an invalid Content-Type means text/plain
        part.mtype, part.subtype, part.params = mtype, subtype, params


def _finish(root: Part, size: int) -> None:
    """Give every entity still open when the bytes ran out its end."""
    stack: list[tuple[Part, int]] = [(root, size)]
    while stack:
        part, end = stack.pop()
        if part.body_end is None:
            part.body_end = max(part.body_start, end)
        part.current = None
        if part.message is not None:
            stack.append((part.message, part.body_end))
        if part.children:
            stack.extend((child, part.body_end) for child in part.children)


def walk(data: bytes) -> Part:
    """The entity tree of a message; never raises."""
    return _Walker(data).run()
