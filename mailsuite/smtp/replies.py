"""
SMTP replies as named constants: a reply code (RFC 5321 §4.2) with its enhanced status code
(RFC 3463, announced with ENHANCEDSTATUSCODES, RFC 2034) and a short text for the client.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    """
    One SMTP reply.  ``status`` is None for replies that carry no enhanced status code:
    3xx intermediate replies and the greeting (RFC 2034 §3).
    """

    code: int
    status: str | None
    text: str

    def encode(self) -> bytes:
        return format_reply(self.code, self.status, [self.text])

    def with_text(self, text: str) -> Reply:
        return Reply(self.code, self.status, text)


def format_reply(code: int, status: str | None, lines: list[str]) -> bytes:
    """
    A (possibly multi-line) reply: ``code-text`` for all lines but the last, ``code text``
    for the last (RFC 5321 §4.2.1).  CR and LF in a text are replaced so that a text
    can never inject a reply line.
    """
    out = []
    for index, text in enumerate(lines):
        text = _one_line(text)
        separator = " " if index == len(lines) - 1 else "-"
        prefix = f"{code}{separator}"
        if status is not None:
            prefix += f"{status} "
        out.append(f"{prefix}{text}\r\n")
    return "".join(out).encode("utf-8")


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


# --- 2xx
OK = Reply(250, "2.0.0", "OK")
SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
RESET_OK = Reply(250, "2.0.0", "Reset OK")
MESSAGE_ACCEPTED = Reply(250, "2.0.0", "OK: message accepted")
CHUNK_OK = Reply(250, "2.0.0", "Chunk received")
CLOSING = Reply(221, "2.0.0", "Bye")
HELP = Reply(214, "2.0.0", "See RFC 5321; commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT")
READY_FOR_TLS = Reply(220, "2.0.0", "Ready to start TLS")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
# RFC 5321 §3.5.3: 252 when the server will not verify but will accept mail.
CANNOT_VRFY = Reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")

# --- 3xx (no enhanced status code)
START_DATA = Reply(354, None, "End data with <CR><LF>.<CR><LF>")

# --- 4xx
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
TEMPORARY_FAILURE = Reply(451, "4.3.0", "Temporary failure, please try again later")
AUTH_TEMPORARY_FAILURE = Reply(454, "4.7.0", "Temporary authentication failure")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
IDLE_TIMEOUT = Reply(421, "4.4.2", "Idle timeout, closing connection")

# --- 5xx: commands
UNKNOWN_COMMAND = Reply(500, "5.5.1", "Command unrecognized")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
INVALID_CHARACTERS = Reply(500, "5.5.2", "Invalid characters in command")
BAD_SYNTAX = Reply(501, "5.5.4", "Syntax error in parameters")
BAD_HELO = Reply(501, "5.5.4", "Invalid domain name")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
EXPN_DISABLED = Reply(502, "5.5.1", "EXPN not available")
STARTTLS_UNAVAILABLE = Reply(502, "5.5.1", "STARTTLS not available")
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
HELO_FIRST = Reply(503, "5.5.1", "Send EHLO or HELO first")
MAIL_FIRST = Reply(503, "5.5.1", "Need MAIL command first")
RCPT_FIRST = Reply(503, "5.5.1", "Need RCPT command first")
NESTED_MAIL = Reply(503, "5.5.1", "Sender already specified")
ALREADY_TLS = Reply(503, "5.5.1", "TLS already active")
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Already authenticated")
BINARYMIME_NEEDS_BDAT = Reply(503, "5.5.1", "BODY=BINARYMIME requires BDAT")
DATA_AFTER_BDAT = Reply(503, "5.5.1", "DATA cannot follow BDAT")
UNKNOWN_PARAMETER = Reply(555, "5.5.4", "Unsupported parameter")

# --- 5xx: addresses and policy
BAD_SENDER_SYNTAX = Reply(501, "5.1.7", "Bad sender address syntax")
BAD_RECIPIENT_SYNTAX = Reply(501, "5.1.3", "Bad recipient address syntax")
# RFC 6531 §3.5
NON_ASCII_ADDRESS = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
SENDER_NOT_OWNED = Reply(553, "5.7.1", "Sender address not owned by user")
NULL_SENDER_NOT_ALLOWED = Reply(553, "5.7.1", "Null sender not allowed here")
RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")
# RFC 1870 §6
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed limit")
MESSAGE_LINE_TOO_LONG = Reply(500, "5.5.2", "Message line too long")
BARE_LINE_ENDING = Reply(554, "5.6.0", "Message refused: bare CR or LF")

# --- 5xx: authentication (RFC 4954 §6)
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
ENCRYPTION_REQUIRED = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")
AUTH_MALFORMED = Reply(501, "5.5.2", "Malformed authentication data")
AUTH_UNKNOWN_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication type")
