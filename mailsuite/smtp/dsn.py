"""
Delivery status notifications (RFC 3464, RFC 3461; RFC 6533 for SMTPUTF8 mail).

Pure functions: values in, the bytes of a complete notification message out.  Nothing here
looks at the queue, the clock or the network; the relay decides when a notification is due
(``wants_notice``) and hands over everything the report needs (``build_dsn``).

The result is a ``multipart/report; report-type=delivery-status`` message with CRLF line
ends and no line over 998 octets.  It is 7-bit unless the returned original holds 8-bit
octets or the report carries UTF-8 for an SMTPUTF8 sender; in that case the top level says
``Content-Transfer-Encoding: 8bit`` and the message must be sent with BODY=8BITMIME (and
SMTPUTF8 when ``smtputf8`` was given).
"""

from __future__ import annotations

import email.quoprimime
import re
import secrets
import textwrap
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime

ACTION_FAILED = "failed"
ACTION_DELAYED = "delayed"
ACTION_DELIVERED = "delivered"
ACTION_RELAYED = "relayed"
ACTION_EXPANDED = "expanded"
ACTIONS = (ACTION_FAILED, ACTION_DELAYED, ACTION_DELIVERED, ACTION_RELAYED, ACTION_EXPANDED)

SUBJECT_FAILED = "Undelivered Mail Returned to Sender"
SUBJECT_DELAYED = "Delayed Mail (still being retried)"
SUBJECT_DELIVERED = "Successful Mail Delivery Report"

DEFAULT_MAX_RETURNED = 256 * 1024

# RFC 5322 §2.1.1: 998 octets per line, 78 preferred.
MAX_LINE = 998
_PREFERRED_LINE = 78
_TEXT_WIDTH = 72

# RFC 3464 §2.3.4 status-code = DIGIT "." 1*3DIGIT "." 1*3DIGIT, class 2, 4 or 5 (RFC 3463).
_STATUS_RE = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}")
# RFC 3464 §2.1.2: "type;value" fields (address-type, mta-name-type, diagnostic-type).
_TYPED_RE = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*)\s*;\s*(.*)", re.DOTALL)
_XTEXT_ESCAPE = re.compile(rb"\+([0-9A-Fa-f]{2})")
# RFC 6533 §3 EmbeddedUnicodeChar inside utf-8-addr-xtext.
_UNICODE_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
# Whitespace and control characters collapse to one space in report fields: a field value
# is one logical line (RFC 3464 §2.1.1 text excludes CR and LF).
_BLANKS = re.compile(r"[\s\x00-\x1f\x7f]+")
# A control character in an address would end or corrupt the line it is written on.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")

# RFC 3461 §4.1 NOTIFY keyword requesting each kind of report.
_NOTIFY_KEYWORD = {
    ACTION_FAILED: "FAILURE",
    ACTION_DELAYED: "DELAY",
    ACTION_DELIVERED: "SUCCESS",
    ACTION_RELAYED: "SUCCESS",
    ACTION_EXPANDED: "SUCCESS",
}
# RFC 3461 §4.1: without NOTIFY, failures and (at the MTA's choice) delays are reported.
_DEFAULT_NOTIFY = frozenset({"FAILURE", "DELAY"})


@dataclass
class RecipientStatus:
    """
    What happened to one recipient.  ``original`` is the ORCPT value decoded from xtext
    ("rfc822;bob@example.org") or None; ``remote_mta`` is "dns; mx.example.org" (a bare host
    name gets the "dns" type); ``diagnostic`` is "smtp; 550 5.1.1 user unknown" (text
    without a type is reported as "X-mailsuite; text").
    """

    address: str
    original: str | None
    action: str
    status: str
    diagnostic: str | None
    remote_mta: str | None
    last_attempt: datetime | None = None
    will_retry_until: datetime | None = None


def wants_notice(notify: str | None, action: str) -> bool:
    """
    Whether a recipient whose RCPT carried ``notify`` (the NOTIFY value, or None) asked for a
    report of ``action``.  RFC 3461 §4.1: NEVER asks for none; without NOTIFY, failures and
    delays are reported; "delivered", "relayed" and "expanded" need SUCCESS.
    """
    try:
        keyword = _NOTIFY_KEYWORD[action]
    except KeyError:
        raise ValueError(f"unknown delivery status action {action!r}") from None
    if notify is None or not notify.strip():
        requested = _DEFAULT_NOTIFY
    else:
        requested = frozenset(item.strip().upper() for item in notify.split(","))
    if "NEVER" in requested:
        return False
    return keyword in requested


def decode_xtext(value: str) -> str:
    """
    Undo the "+XX" escapes of xtext (RFC 3461 §4).  The escaped octets are read as UTF-8;
    a "+" not followed by two hex digits is kept as it is, so decoding never fails.
    """
    raw = _XTEXT_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), value.encode("utf-8"))
    return raw.decode("utf-8", "replace")


def build_dsn(
    *,
    reporting_mta: str,
    postmaster: str,
    to: str,
    envid: str | None,
    ret: str | None,
    arrival: datetime,
    recipients: list[RecipientStatus],
    original: bytes,
    smtputf8: bool = False,
    now: datetime,
    max_returned: int = DEFAULT_MAX_RETURNED,
    message_id_domain: str,
) -> bytes:
    """
    The notification to send to ``to`` (the original envelope sender) about ``recipients``.

    ``envid`` is the ENVID value decoded from xtext; ``ret`` the RET value ("FULL", "HDRS" or
    None); ``original`` the queued message.  RFC 3461 §4.3: the full message comes back
    only when at least one recipient failed, RET is not HDRS, and it fits in
    ``max_returned`` octets and can travel unchanged (no NUL, no line over 998 octets);
    otherwise its header section does.  ``smtputf8``: the original was SMTPUTF8 mail, so the
    report may carry UTF-8 (message/global, RFC 6533).  ValueError for an empty recipient
    list, an unknown action, a malformed status code or a non-ASCII address without
    ``smtputf8``.
    """
    if not recipients:
        raise ValueError("a delivery status notification needs at least one recipient")
    for recipient in recipients:
        _check_recipient(recipient)
    if not to:
        raise ValueError("no delivery status notification is sent to the null reverse-path")
    for address in (to, postmaster):
        if not smtputf8 and not address.isascii():
            raise ValueError(f"non-ASCII address {address!r} needs SMTPUTF8")
        if _CONTROLS.search(address):
            raise ValueError(f"malformed address {address!r}")
    for name in (reporting_mta, message_id_domain):
        if not name or not name.isascii() or _BLANKS.search(name):
            raise ValueError(f"malformed host name {name!r}")

    actions = {recipient.action for recipient in recipients}
    original = _normalise_line_ends(original)
    full_wanted = ACTION_FAILED in actions and (ret or "").upper() != "HDRS"
    returned = _returned_part(original, full_wanted=full_wanted, smtputf8=smtputf8,
                              max_returned=max_returned)
    human = _text_part(
        _human_text(reporting_mta=reporting_mta, arrival=arrival, recipients=recipients,
                    returned=returned),
        smtputf8=smtputf8,
    )
    report = _status_part(reporting_mta=reporting_mta, envid=envid, arrival=arrival,
                          recipients=recipients, smtputf8=smtputf8)
    parts = [human, report, returned.part]
    boundary = _boundary(parts)
    eight_bit = any(not part.isascii() for part in parts) or not to.isascii()

    if ACTION_FAILED in actions:
        subject = SUBJECT_FAILED
    elif ACTION_DELAYED in actions:
        subject = SUBJECT_DELAYED
    else:
        subject = SUBJECT_DELIVERED
    headers = [
        f"From: Mail Delivery System <{postmaster}>",
        f"To: {to}",
        f"Subject: {subject}",
        f"Date: {_date(now)}",
        f"Message-ID: <{_utc(now):%Y%m%d%H%M%S}.{secrets.token_hex(8)}@{message_id_domain}>",
        # RFC 3834 §5
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f' boundary="{boundary}"',
    ]
    if eight_bit:
        headers.append("Content-Transfer-Encoding: 8bit")
    out = [_lines(headers), b"\r\n",
           b"This is a MIME-encapsulated delivery status notification.\r\n"]
    delimiter = b"\r\n--" + boundary.encode("ascii")
    for part in parts:
        # The CRLF before each delimiter belongs to the delimiter (RFC 2046 §5.1.1).
        out += [delimiter, b"\r\n", part]
    out += [delimiter, b"--\r\n"]
    return b"".join(out)


# ---------------------------------------------------------------------- recipients


def _check_recipient(recipient: RecipientStatus) -> None:
    if recipient.action not in ACTIONS:
        raise ValueError(f"unknown delivery status action {recipient.action!r}")
    if not isinstance(recipient.status, str) or not _STATUS_RE.fullmatch(recipient.status):
        raise ValueError(f"malformed status code {recipient.status!r}")
    if not recipient.address or _CONTROLS.search(recipient.address):
        raise ValueError(f"malformed recipient address {recipient.address!r}")


# ---------------------------------------------------------------------- the returned message


@dataclass(frozen=True)
class _Returned:
    part: bytes  # MIME part: its headers, a blank line, its body
    full: bool  # the whole message, else its header section
    why_headers: str  # when only the headers come back although the full message was wanted


def _normalise_line_ends(data: bytes) -> bytes:
    # A bare CR or LF inside a MIME part would be a line end to some readers and not others.
    return re.sub(rb"\r\n|\r|\n", b"\r\n", data)


def _longest_line(data: bytes) -> int:
    return max((len(line) for line in data.split(b"\r\n")), default=0)


def _header_section(message: bytes) -> bytes:
    """The header lines of ``message`` (CRLF-terminated), without the empty line after them."""
    if message.startswith(b"\r\n"):
        return b""
    end = message.find(b"\r\n\r\n")
    if end < 0:
        return message if not message or message.endswith(b"\r\n") else message + b"\r\n"
    return message[: end + 2]


def _returned_part(original: bytes, *, full_wanted: bool, smtputf8: bool,
                   max_returned: int) -> _Returned:
    why = ""
    if full_wanted:
        if len(original) > max_returned:
            why = (f"The message is {len(original)} bytes long, more than the {max_returned} "
                   f"bytes returned, so only its headers are attached.")
        elif b"\0" in original or _longest_line(original) > MAX_LINE:
            why = ("The message has lines too long or characters that cannot be returned "
                   "unchanged, so only its headers are attached.")
        else:
            # RFC 2046 §5.2.1: message/rfc822 is never encoded; 8-bit content is declared.
            content_type = "message/global" if smtputf8 else "message/rfc822"
            encoding = "7bit" if original.isascii() else "8bit"
            head = _lines([f"Content-Type: {content_type}",
                           "Content-Description: Undelivered message",
                           f"Content-Transfer-Encoding: {encoding}"])
            return _Returned(head + b"\r\n" + original, True, "")

    headers = _header_section(original)
    if len(headers) > max_returned:
        cut = headers.rfind(b"\r\n", 0, max_returned)
        headers = headers[: cut + 2] if cut >= 0 else b""
    plain = b"\0" not in headers and _longest_line(headers) <= MAX_LINE
    if plain and headers.isascii():
        content_type, encoding, body = "text/rfc822-headers", "7bit", headers
    elif plain and smtputf8 and _is_utf8(headers):
        # RFC 6533 §6.4: UTF-8 header fields of SMTPUTF8 mail.
        content_type, encoding, body = "message/global-headers", "8bit", headers
    else:
        charset = "utf-8" if _is_utf8(headers) else "unknown-8bit"
        content_type = f"text/rfc822-headers; charset={charset}"
        encoding, body = "quoted-printable", _quoted_printable(headers)
    head = _lines([f"Content-Type: {content_type}",
                   "Content-Description: Message headers",
                   f"Content-Transfer-Encoding: {encoding}"])
    return _Returned(head + b"\r\n" + body, False, why)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _quoted_printable(data: bytes) -> bytes:
    # Each octet becomes one latin-1 character, so any bytes survive the str-based encoder.
    encoded = email.quoprimime.body_encode(data.decode("latin-1"), maxlinelen=76, eol="\r\n")
    if encoded and not encoded.endswith("\r\n"):
        encoded += "\r\n"
    return encoded.encode("ascii")


# ---------------------------------------------------------------------- human-readable part


def _human_text(*, reporting_mta: str, arrival: datetime, recipients: list[RecipientStatus],
                returned: _Returned) -> str:
    host = _clean(reporting_mta)
    paragraphs: list[str] = [f"This is the mail delivery system at {host}."]
    groups = [
        (ACTION_FAILED, "Your message could not be delivered to the recipients below. "
                        "No further attempts will be made."),
        (ACTION_DELAYED, "Your message has not yet been delivered to the recipients below. "
                         "Delivery is still being attempted; you do not need to send it "
                         "again."),
        (ACTION_DELIVERED, "Your message was delivered to the recipients below."),
        (ACTION_RELAYED, "Your message was passed on to the recipients below by a mail "
                         "system that does not send delivery reports; no further report "
                         "will follow."),
        (ACTION_EXPANDED, "Your message was delivered to the recipients below, which are "
                          "lists or aliases; it has been passed on to their members."),
    ]
    lines: list[str] = []
    for action, intro in groups:
        chosen = [r for r in recipients if r.action == action]
        if not chosen:
            continue
        lines += ["", *textwrap.wrap(intro, _TEXT_WIDTH, break_on_hyphens=False)]
        for recipient in chosen:
            lines += ["", *_wrap(f"<{recipient.address}>", indent="  ")]
            details = [f"Status: {recipient.status}"]
            if recipient.diagnostic:
                details.append(f"Reason: {_clean(recipient.diagnostic)}")
            if recipient.remote_mta:
                details.append(f"Remote server: {_mta_name(recipient.remote_mta)}")
            if recipient.last_attempt is not None:
                details.append(f"Last attempt: {_date(recipient.last_attempt)}")
            if action == ACTION_DELAYED and recipient.will_retry_until is not None:
                details.append(
                    f"Delivery will be tried until {_date(recipient.will_retry_until)}.")
            for detail in details:
                lines += _wrap(detail, indent="    ")
    lines += ["", *textwrap.wrap(
        f"The message was received at {_date(arrival)}.", _TEXT_WIDTH)]
    if returned.full:
        attached = "The undelivered message is attached."
    else:
        attached = returned.why_headers or "The headers of the message are attached."
    lines += ["", *textwrap.wrap(attached, _TEXT_WIDTH)]
    return "\r\n".join([*paragraphs, *lines]) + "\r\n"


def _wrap(text: str, *, indent: str) -> list[str]:
    return textwrap.wrap(text, _TEXT_WIDTH, initial_indent=indent,
                         subsequent_indent=indent + "  ", break_on_hyphens=False) or [indent]


def _text_part(text: str, *, smtputf8: bool) -> bytes:
    if text.isascii():
        charset, encoding, body = "us-ascii", "7bit", text.encode("ascii")
    elif smtputf8:
        charset, encoding, body = "utf-8", "8bit", text.encode("utf-8")
    else:
        charset, encoding = "utf-8", "quoted-printable"
        body = _quoted_printable(text.encode("utf-8"))
    head = _lines([f"Content-Type: text/plain; charset={charset}",
                   "Content-Description: Notification",
                   f"Content-Transfer-Encoding: {encoding}"])
    return head + b"\r\n" + body


# ---------------------------------------------------------------------- delivery-status part


def _status_part(*, reporting_mta: str, envid: str | None, arrival: datetime,
                 recipients: list[RecipientStatus], smtputf8: bool) -> bytes:
    # RFC 6533 §6.2: UTF-8 in the report needs message/global-delivery-status, which only an
    # SMTPUTF8 sender can be given; otherwise everything is reduced to ASCII.
    utf8 = smtputf8 and not (
        all(_is_ascii_report(r) for r in recipients) and (envid or "").isascii())
    per_message = [("Reporting-MTA", f"dns; {_ascii(_clean(reporting_mta), utf8)}")]
    if envid:
        per_message.append(("Original-Envelope-Id", _ascii(_clean(envid), utf8)))
    per_message.append(("Arrival-Date", _date(arrival)))
    blocks = [per_message]
    for recipient in recipients:
        fields = []
        original = _original_recipient(recipient.original or "", utf8)
        if original:
            fields.append(("Original-Recipient", original))
        fields += [
            ("Final-Recipient", _address_field(recipient.address, utf8)),
            ("Action", recipient.action),
            ("Status", recipient.status),
        ]
        if recipient.remote_mta:
            fields.append(("Remote-MTA", _typed(recipient.remote_mta, "dns", utf8)))
        if recipient.diagnostic:
            fields.append(("Diagnostic-Code", _typed(recipient.diagnostic, "X-mailsuite", utf8)))
        if recipient.last_attempt is not None:
            fields.append(("Last-Attempt-Date", _date(recipient.last_attempt)))
        if recipient.action == ACTION_DELAYED and recipient.will_retry_until is not None:
            fields.append(("Will-Retry-Until", _date(recipient.will_retry_until)))
        blocks.append(fields)
    body = b"\r\n".join(
        b"".join(_fold(name, value) for name, value in block) for block in blocks)
    content_type = "message/global-delivery-status" if utf8 else "message/delivery-status"
    head = [f"Content-Type: {content_type}", "Content-Description: Delivery report"]
    if utf8:
        head.append("Content-Transfer-Encoding: 8bit")
    return _lines(head) + b"\r\n" + body


def _is_ascii_report(recipient: RecipientStatus) -> bool:
    return all((value or "").isascii() for value in (
        recipient.address, recipient.original, recipient.diagnostic, recipient.remote_mta))


def _original_recipient(value: str, utf8: bool) -> str | None:
    # RFC 3461 §4.2: the ORCPT value, decoded, is reported as given ("rfc822;bob@x").
    value = _clean(value)
    match = _TYPED_RE.fullmatch(value)
    if match is None or not match.group(2):
        return _address_field(value, utf8) if value else None
    address_type, address = match.group(1), match.group(2)
    if address_type.lower() == "utf-8":
        address = _UNICODE_ESCAPE.sub(_unescape_unicode, address)
    if address.isascii() and address_type.lower() != "utf-8":
        return f"{address_type};{address}"
    return _address_field(address, utf8, utf8_type=True)


def _unescape_unicode(match: re.Match) -> str:
    code = int(match.group(1), 16)
    return chr(code) if code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else match.group(0)


def _address_field(address: str, utf8: bool, *, utf8_type: bool = False) -> str:
    if address.isascii() and not utf8_type:
        return f"rfc822; {address}"
    # RFC 6533 §3: the raw address in message/global-delivery-status, else
    # utf-8-addr-xtext (QCHAR, and "\x{HEX}" for anything else).
    if utf8:
        return f"utf-8; {address}"
    return "utf-8; " + "".join(
        c if ("\x21" <= c <= "\x7e" and c not in "+=\\") else f"\\x{{{ord(c):X}}}"
        for c in address)


def _typed(value: str, default_type: str, utf8: bool) -> str:
    value = _clean(value)
    match = _TYPED_RE.fullmatch(value)
    if match is None:
        return f"{default_type}; {_ascii(value, utf8)}".rstrip()
    return f"{match.group(1)}; {_ascii(match.group(2), utf8)}".rstrip()


def _mta_name(value: str) -> str:
    match = _TYPED_RE.fullmatch(_clean(value))
    return match.group(2) if match else _clean(value)


def _ascii(text: str, utf8: bool) -> str:
    if utf8 or text.isascii():
        return text
    return text.encode("ascii", "replace").decode("ascii")


def _clean(text: str) -> str:
    return _BLANKS.sub(" ", text).strip()


def _fold(name: str, value: str) -> bytes:
    """
    ``name: value`` as header lines: folded before a space to stay within 78 octets where
    possible, and a run without spaces that would pass 998 octets broken by an inserted
    space, so that no line is longer than that whatever the value.
    """
    line = name + ":"
    rest = " " + value if value else ""
    out: list[str] = []
    while _size(line) + _size(rest) > _PREFERRED_LINE:
        budget = _PREFERRED_LINE - _size(line)
        cut = rest.rfind(" ", 1, budget + 1) if budget > 0 else -1
        if cut <= 0:
            # No space early enough: take the next word whole if it fits the hard limit.
            cut = rest.find(" ", 1)
            if cut < 0:
                cut = len(rest)
            if _size(line) + _size(rest[:cut]) > MAX_LINE:
                cut = _fit(rest, MAX_LINE - _size(line))
                line += rest[:cut]
                out.append(line)
                line, rest = "", " " + rest[cut:]
                continue
        if cut >= len(rest):
            break
        line += rest[:cut]
        out.append(line)
        line, rest = "", rest[cut:]
    out.append(line + rest)
    return "".join(piece + "\r\n" for piece in out).encode("utf-8")


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def _fit(text: str, budget: int) -> int:
    """The longest prefix length of ``text`` whose UTF-8 form fits in ``budget`` octets."""
    used = 0
    for index, char in enumerate(text):
        used += len(char.encode("utf-8"))
        if used > budget:
            return max(index, 1)
    return len(text)


# ---------------------------------------------------------------------- assembly


def _lines(lines: list[str]) -> bytes:
    return "".join(line + "\r\n" for line in lines).encode("utf-8")


def _boundary(parts: list[bytes]) -> str:
    while True:
        boundary = f"=_dsn_{secrets.token_hex(12)}"
        if not any(boundary.encode("ascii") in part for part in parts):
            return boundary


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _date(moment: datetime) -> str:
    """RFC 5322 §3.3 date-time, in UTC (a naive datetime is taken as UTC)."""
    return format_datetime(_utc(moment))
