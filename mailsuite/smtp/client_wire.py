"""
The wire format of the SMTP client side, without I/O: server replies parsed from bytes
(RFC 5321 §4.2, enhanced status codes of RFC 2034 / RFC 3463), the EHLO keyword list,
MAIL and RCPT command lines with their parameters, and the DATA encoder (line ends and
dot-stuffing, RFC 5321 §4.5.2) that stays correct across chunk boundaries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A reply line longer than this, or a reply longer than MAX_REPLY_SIZE, is not a server
# speaking SMTP (RFC 5321 §4.5.3.1.5 allows 512 octets per reply line).
MAX_REPLY_LINE = 65536
MAX_REPLY_SIZE = 1024 * 1024

# RFC 5321 §4.2: a reply code is 2-5, 0-5, 0-9; "-" continues a multiline reply.
_REPLY_LINE_RE = re.compile(rb"([2-5][0-5][0-9])(?:([ -])(.*))?", re.DOTALL)
# RFC 3463 §2: class "." subject "." detail, 1-3 digits each; RFC 2034 §4 puts it first.
_ENHANCED_RE = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})(?: +|$)")
_KEYWORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# RFC 5321 §4.1.2 esmtp-value: printable ASCII but "="; RFC 6531 §3.3 adds UTF-8.
_VALUE_RE = re.compile(r"[\x21-\x3c\x3e-\x7e]+")
_UTF8_VALUE_RE = re.compile(r"[\x21-\x3c\x3e-\x7e\u0080-\U0010ffff]+")


class ReplyError(ValueError):
    """What the server sent is not an SMTP reply; the message is one readable line."""


class EnvelopeError(ValueError):
    """An address or parameter cannot be put into a command line."""


@dataclass(frozen=True)
class ServerReply:
    """
    One reply.  ``enhanced`` is the RFC 3463 status code of the first line, "" when the
    server gave none; ``lines`` are the texts with the enhanced code taken off.
    """

    code: int
    enhanced: str
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """All lines joined into one."""
        return " ".join(line for line in self.lines if line)

    def __str__(self) -> str:
        status = f" {self.enhanced}" if self.enhanced else ""
        return f"{self.code}{status} {self.text}".rstrip()


class ReplyParser:
    """
    Splits the server's byte stream into replies.  ``feed`` returns the replies completed
    by the new bytes and raises ReplyError for anything that is not a reply; the parser
    cannot be used after that.
    """

    def __init__(self):
        self._buffer = b""
        self._code: int | None = None  # of the multiline reply being read
        self._lines: list[str] = []
        self._size = 0

    def feed(self, data: bytes) -> list[ServerReply]:
        self._buffer += data
        done: list[ServerReply] = []
        position = 0
        while True:
            newline = self._buffer.find(b"\n", position)
            if newline < 0:
                break
            line = self._buffer[position:newline]
            position = newline + 1
            reply = self._line(line[:-1] if line.endswith(b"\r") else line)
            if reply is not None:
                done.append(reply)
        self._buffer = self._buffer[position:]
        if len(self._buffer) > MAX_REPLY_LINE:
            raise ReplyError(f"reply line longer than {MAX_REPLY_LINE} bytes")
        return done

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a complete reply."""
        return len(self._buffer) + self._size

    def discard(self) -> None:
        """Forget what is buffered (after STARTTLS, RFC 3207 §4.2)."""
        self._buffer = b""
        self._code = None
        self._lines = []
        self._size = 0

    def _line(self, line: bytes) -> ServerReply | None:
        if len(line) > MAX_REPLY_LINE:
            raise ReplyError(f"reply line longer than {MAX_REPLY_LINE} bytes")
        match = _REPLY_LINE_RE.fullmatch(line)
        if match is None:
            raise ReplyError(f"not an SMTP reply: {_printable(line[:80])!r}")
        code = int(match.group(1))
        if self._code is not None and code != self._code:
            raise ReplyError(f"reply code changed within a multiline reply: {self._code} then {code}")
        self._size += len(line)
        if self._size > MAX_REPLY_SIZE:
            raise ReplyError(f"reply longer than {MAX_REPLY_SIZE} bytes")
        self._code = code
        self._lines.append(_printable(match.group(3) or b""))
        if match.group(2) == b"-":
            return None
        lines, self._lines, self._code, self._size = self._lines, [], None, 0
        return _reply(code, lines)


def _reply(code: int, lines: list[str]) -> ServerReply:
    enhanced = ""
    texts = []
    for index, text in enumerate(lines):
        match = _ENHANCED_RE.match(text)
        # RFC 3463 §3.1: the class matches the reply's; 3xx replies carry none.
        if match is not None and int(match.group(1)) == code // 100:
            if index == 0:
                enhanced = ".".join(str(int(part)) for part in match.groups())
            text = text[match.end() :]
        texts.append(text.strip())
    return ServerReply(code, enhanced, tuple(texts))


def _printable(data: bytes) -> str:
    return _CONTROL_RE.sub(" ", data.decode("utf-8", "replace"))


# ---------------------------------------------------------------------------- EHLO


@dataclass(frozen=True)
class Extensions:
    """The service extensions an EHLO reply announces (RFC 5321 §4.1.1.1)."""

    keywords: dict[str, str]  # upper-case keyword -> its parameters ("" when none)

    @classmethod
    def from_reply(cls, reply: ServerReply) -> Extensions:
        keywords = {}
        for line in reply.lines[1:]:  # the first line is the server's name
            keyword, _, params = line.partition(" ")
            if _KEYWORD_RE.fullmatch(keyword):
                keywords.setdefault(keyword.upper(), params.strip())
        return cls(keywords)

    @classmethod
    def none(cls) -> Extensions:
        """What a HELO session offers."""
        return cls({})

    def __contains__(self, keyword: str) -> bool:
        return keyword.upper() in self.keywords

    @property
    def size_limit(self) -> int | None:
        """The SIZE limit in bytes, or None when there is none (RFC 1870 §4: "SIZE 0")."""
        value = self.keywords.get("SIZE")
        if value is None or not value.isascii() or not value.isdigit():
            return None
        return int(value) or None

    @property
    def auth_mechanisms(self) -> frozenset[str]:
        return frozenset(self.keywords.get("AUTH", "").upper().split())


# ---------------------------------------------------------------------------- commands


def mail_command(sender: str, params: list[tuple[str, str | None]], *, utf8: bool) -> bytes:
    """``MAIL FROM:<sender> params`` (RFC 5321 §4.1.1.2); "" is the null reverse-path."""
    return _command("MAIL FROM:", _path(sender, utf8=utf8, null=True), params, utf8=utf8)


def rcpt_command(recipient: str, params: list[tuple[str, str | None]], *, utf8: bool) -> bytes:
    """``RCPT TO:<recipient> params`` (RFC 5321 §4.1.1.3)."""
    return _command("RCPT TO:", _path(recipient, utf8=utf8, null=False), params, utf8=utf8)


def _path(address: str, *, utf8: bool, null: bool) -> str:
    if not address and not null:
        raise EnvelopeError("empty recipient address")
    if _CONTROL_RE.search(address):
        raise EnvelopeError(f"control character in address {address!r}")
    if not utf8 and not address.isascii():
        # RFC 6531 §3.2: only after the server has announced SMTPUTF8.
        raise EnvelopeError(f"non-ASCII address {address!r} without SMTPUTF8")
    return f"<{address}>"


def _command(verb: str, path: str, params: list[tuple[str, str | None]], *, utf8: bool) -> bytes:
    words = [verb + path]
    value_re = _UTF8_VALUE_RE if utf8 else _VALUE_RE
    for keyword, value in params:
        if not _KEYWORD_RE.fullmatch(keyword):
            raise EnvelopeError(f"bad parameter keyword {keyword!r}")
        if value is None:
            words.append(keyword)
        elif value_re.fullmatch(value):
            words.append(f"{keyword}={value}")
        else:
            raise EnvelopeError(f"bad value for parameter {keyword}: {value!r}")
    return (" ".join(words) + "\r\n").encode("utf-8")


# ---------------------------------------------------------------------------- DATA


class DataEncoder:
    """
    Turns message content into DATA bytes (RFC 5321 §4.1.1.4, §4.5.2): every line ends in
    CRLF (a bare LF or bare CR becomes CRLF), a line starting with "." gets a second "."
    in front, and ``finish`` ends the last line if needed and adds the ".CRLF" terminator.

    The content may arrive in chunks of any size, split anywhere: whether the next byte
    starts a line, and whether a CR just seen may be followed by its LF, are carried from
    one chunk to the next.
    """

    def __init__(self):
        self._line_start = True  # the next byte starts a line
        self._after_cr = False  # the last byte was a CR, already written out as CRLF
        self.size = 0  # bytes produced so far

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        if self._after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]  # the LF of a CRLF split between two chunks
            if not chunk:
                self._after_cr = False
                return b""
        self._after_cr = chunk[-1:] == b"\r"
        text = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        stuffed = text.replace(b"\n.", b"\n..")
        if self._line_start and stuffed[:1] == b".":
            stuffed = b"." + stuffed
        self._line_start = stuffed[-1:] == b"\n"
        out = stuffed.replace(b"\n", b"\r\n")
        self.size += len(out)
        return out

    def finish(self) -> bytes:
        out = b".\r\n" if self._line_start else b"\r\n.\r\n"
        self._line_start = True
        self._after_cr = False
        self.size += len(out)
        return out
