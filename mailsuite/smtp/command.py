"""
Pure parsers for SMTP command lines: bytes in, a command object out, or a CommandError
carrying the exact reply to give.  No state and no I/O here; the server decides what a
well-formed command means in its session.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mailsuite.smtp import replies
from mailsuite.smtp.replies import Reply


class CommandError(ValueError):
    """The command line is malformed; ``reply`` is what the client is told."""

    def __init__(self, reply: Reply):
        super().__init__(f"{reply.code} {reply.status} {reply.text}")
        self.reply = reply


@dataclass(frozen=True)
class Command:
    verb: str  # upper-case
    argument: str  # the rest of the line after one space, "" if none


@dataclass(frozen=True)
class MailFrom:
    sender: str  # "" for the null reverse-path
    size: int | None = None
    body: str = "7BIT"
    smtputf8: bool = False
    params: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class RcptTo:
    recipient: str  # "postmaster" (bare, RFC 5321 §4.5.1) or local@domain
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def is_bare_postmaster(self) -> bool:
        return "@" not in self.recipient


@dataclass(frozen=True)
class Bdat:
    size: int
    last: bool


# RFC 5321 §4.1.2, widened by RFC 6531 §3.3 to UTF-8 in atoms, quoted strings and labels.
_UTF8 = "\u0080-\U0010ffff"
_ATEXT = rf"[A-Za-z0-9!#$%&'*+\-/=?^_`{{|}}~{_UTF8}]"
_DOT_STRING = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_QUOTED_STRING = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_UTF8}]|\\[\x20-\x7e])*"'
_LET_DIG = rf"[A-Za-z0-9{_UTF8}]"
_LABEL = rf"{_LET_DIG}(?:[A-Za-z0-9\-{_UTF8}]*{_LET_DIG})?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*"
# RFC 5321 §4.1.3: IPv4, "IPv6:..." or a General-address-literal.
_ADDRESS_LITERAL = r"\[(?:[0-9.]+|[A-Za-z0-9\-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+)\]"
_MAILBOX = rf"(?P<local>{_DOT_STRING}|{_QUOTED_STRING})@(?P<domain>{_DOMAIN}|{_ADDRESS_LITERAL})"
_SOURCE_ROUTE = rf"@{_DOMAIN}(?:,@{_DOMAIN})*:"
_PATH_RE = re.compile(rf"<(?:{_SOURCE_ROUTE})?{_MAILBOX}>")
_KEYWORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*")
# RFC 5321 §4.1.2 esmtp-value, plus UTF-8 (RFC 6531 §3.3).
_VALUE_RE = re.compile(rf"[\x21-\x3c\x3e-\x7e{_UTF8}]+")
_VERB_RE = re.compile(r"[A-Za-z]{1,16}")
_HELO_RE = re.compile(rf"(?:{_DOMAIN}|{_ADDRESS_LITERAL})")
_XTEXT_RE = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")

# RFC 5321 §4.5.3.1.1-3
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256

BODY_TYPES = ("7BIT", "8BITMIME", "BINARYMIME")


def parse_command(line: bytes) -> Command:
    """
    Split a command line (without its CRLF) into verb and argument.  The line must be UTF-8
    (non-ASCII only makes sense in SMTPUTF8 addresses) without control characters.
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError(replies.INVALID_CHARACTERS) from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text if c != "\t"):
        raise CommandError(replies.INVALID_CHARACTERS)
    verb, _, argument = text.partition(" ")
    if not _VERB_RE.fullmatch(verb):
        raise CommandError(replies.UNKNOWN_COMMAND)
    return Command(verb.upper(), argument.strip(" "))


def parse_helo(argument: str) -> str:
    """The domain or address literal of HELO/EHLO (RFC 5321 §4.1.1.1)."""
    domain = argument.strip()
    if not domain or len(domain) > MAX_DOMAIN or not _HELO_RE.fullmatch(domain):
        raise CommandError(replies.BAD_HELO)
    return domain


def parse_mail(argument: str) -> MailFrom:
    """``FROM:<reverse-path> [params]`` (RFC 5321 §4.1.1.2, RFC 1870, 6152, 3030, 6531, 3461)."""
    rest = _strip_prefix(argument, "FROM:", replies.BAD_SENDER_SYNTAX)
    if rest.startswith("<>"):
        sender, rest = "", _after_path(rest[2:], replies.BAD_SENDER_SYNTAX)
    else:
        sender, rest = _parse_path(rest, replies.BAD_SENDER_SYNTAX)
    params = _parse_params(rest)
    size = None
    body = "7BIT"
    for keyword, value in params.items():
        if keyword == "SIZE":
            # RFC 1870 §3: size-value is 1*20DIGIT
            if value is None or not value.isascii() or not value.isdigit() or len(value) > 20:
                raise CommandError(replies.BAD_SYNTAX)
            size = int(value)
        elif keyword == "BODY":
            if value is None or value.upper() not in BODY_TYPES:
                raise CommandError(replies.BAD_SYNTAX)
            body = value.upper()
        elif keyword == "SMTPUTF8":
            if value is not None:
                raise CommandError(replies.BAD_SYNTAX)
        elif keyword == "AUTH":
            # RFC 4954 §5: AUTH=<> or AUTH=xtext
            if value is None or (value != "<>" and not is_xtext(value)):
                raise CommandError(replies.BAD_SYNTAX)
        elif keyword == "RET":
            # RFC 3461 §4.3
            if value is None or value.upper() not in ("FULL", "HDRS"):
                raise CommandError(replies.BAD_SYNTAX)
        elif keyword == "ENVID":
            # RFC 3461 §4.4
            if value is None or len(value) > 100 or not is_xtext(value):
                raise CommandError(replies.BAD_SYNTAX)
        else:
            raise CommandError(replies.UNKNOWN_PARAMETER)
    smtputf8 = "SMTPUTF8" in params
    if not sender.isascii() and not smtputf8:
        raise CommandError(replies.NON_ASCII_ADDRESS)
    return MailFrom(sender, size=size, body=body, smtputf8=smtputf8, params=params)


def parse_rcpt(argument: str, *, smtputf8: bool) -> RcptTo:
    """
    ``TO:<forward-path> [params]`` (RFC 5321 §4.1.1.3, RFC 3461 §4.1-2).  ``smtputf8`` says
    whether the transaction's MAIL carried SMTPUTF8.
    """
    rest = _strip_prefix(argument, "TO:", replies.BAD_RECIPIENT_SYNTAX)
    if rest[:12].lower() == "<postmaster>":
        recipient, rest = "postmaster", _after_path(rest[12:], replies.BAD_RECIPIENT_SYNTAX)
    else:
        recipient, rest = _parse_path(rest, replies.BAD_RECIPIENT_SYNTAX)
    params = _parse_params(rest)
    for keyword, value in params.items():
        if keyword == "NOTIFY":
            if value is None or not _valid_notify(value):
                raise CommandError(replies.BAD_SYNTAX)
        elif keyword == "ORCPT":
            addr_type, semicolon, xtext = (value or "").partition(";")
            if not semicolon or not _KEYWORD_RE.fullmatch(addr_type) or not xtext:
                raise CommandError(replies.BAD_SYNTAX)
            if not is_xtext(xtext) and not smtputf8:
                raise CommandError(replies.BAD_SYNTAX)
        else:
            raise CommandError(replies.UNKNOWN_PARAMETER)
    if not recipient.isascii() and not smtputf8:
        raise CommandError(replies.NON_ASCII_ADDRESS)
    return RcptTo(recipient, params=params)


def parse_bdat(argument: str) -> Bdat:
    """``<chunk-size> [LAST]`` (RFC 3030 §2)."""
    parts = argument.split()
    if not 1 <= len(parts) <= 2 or not parts[0].isascii() or not parts[0].isdigit():
        raise CommandError(replies.BAD_SYNTAX)
    if len(parts[0]) > 20:
        raise CommandError(replies.BAD_SYNTAX)
    last = False
    if len(parts) == 2:
        if parts[1].upper() != "LAST":
            raise CommandError(replies.BAD_SYNTAX)
        last = True
    return Bdat(int(parts[0]), last)


def parse_auth(argument: str) -> tuple[str, bytes | None]:
    """``mechanism [initial-response]`` (RFC 4954 §4); the response is still base64."""
    parts = argument.split()
    if not 1 <= len(parts) <= 2 or not _KEYWORD_RE.fullmatch(parts[0]):
        raise CommandError(replies.BAD_SYNTAX)
    initial = parts[1].encode("ascii", "replace") if len(parts) == 2 else None
    return parts[0].upper(), initial


def is_xtext(value: str) -> bool:
    """RFC 3461 §4: printable ASCII except "+" and "=", with "+XX" hex escapes."""
    return _XTEXT_RE.fullmatch(value) is not None


def decode_xtext(value: str) -> str:
    """Undo xtext's "+XX" escapes; CommandError if ``value`` is not xtext."""
    if not is_xtext(value):
        raise CommandError(replies.BAD_SYNTAX)
    return re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), value)


def _strip_prefix(argument: str, prefix: str, error: Reply) -> str:
    if argument[: len(prefix)].upper() != prefix:
        raise CommandError(error)
    # Many clients send "MAIL FROM: <a@b>"; RFC 5321 §4.1.1.2 has no space, but it is harmless.
    return argument[len(prefix) :].lstrip(" ")


def _parse_path(text: str, error: Reply) -> tuple[str, str]:
    match = _PATH_RE.match(text)
    if match is None:
        raise CommandError(error)
    local, domain = match.group("local"), match.group("domain")
    if len(local.encode()) > MAX_LOCAL_PART or len(domain.encode()) > MAX_DOMAIN:
        raise CommandError(error)
    if len(local.encode()) + len(domain.encode()) + 3 > MAX_PATH:
        raise CommandError(error)
    return f"{local}@{domain.lower()}", _after_path(text[match.end() :], error)


def _after_path(rest: str, error: Reply) -> str:
    if rest and not rest.startswith(" "):
        raise CommandError(error)
    return rest


def _parse_params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for item in text.split():
        keyword, equals, value = item.partition("=")
        if not _KEYWORD_RE.fullmatch(keyword):
            raise CommandError(replies.BAD_SYNTAX)
        if equals and not _VALUE_RE.fullmatch(value):
            raise CommandError(replies.BAD_SYNTAX)
        keyword = keyword.upper()
        if keyword in params:
            raise CommandError(replies.BAD_SYNTAX)
        params[keyword] = value if equals else None
    return params


def _valid_notify(value: str) -> bool:
    # RFC 3461 §4.1: NEVER alone, or a list of SUCCESS, FAILURE, DELAY.
    items = value.upper().split(",")
    if items == ["NEVER"]:
        return True
    return len(set(items)) == len(items) and all(i in ("SUCCESS", "FAILURE", "DELAY") for i in items)
