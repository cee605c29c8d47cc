"""
Status responses (RFC 3501 §7.1): named response codes, the Reply a command ends with, and
the mapping of store errors to what the client sees (RFC 5530 codes).
"""

from __future__ import annotations

from dataclasses import dataclass

from mailsuite.interfaces import (
    InvalidMailboxName,
    MailboxExists,
    NoSuchMailbox,
    NoSuchMessage,
    QuotaExceeded,
    StoreError,
    StoreUnavailable,
)
from mailsuite.store.names import InvalidFlag

OK = "OK"
NO = "NO"
BAD = "BAD"

# Response codes: RFC 3501 §7.1, RFC 5530, RFC 4315, RFC 7888, RFC 6154.
ALREADYEXISTS = "ALREADYEXISTS"
AUTHENTICATIONFAILED = "AUTHENTICATIONFAILED"
CANNOT = "CANNOT"
CLIENTBUG = "CLIENTBUG"
COMPRESSIONACTIVE = "COMPRESSIONACTIVE"  # RFC 4978
EXPUNGEISSUED = "EXPUNGEISSUED"
HASCHILDREN = "HASCHILDREN"  # RFC 9051 §7.1
NONEXISTENT = "NONEXISTENT"
OVERQUOTA = "OVERQUOTA"
PRIVACYREQUIRED = "PRIVACYREQUIRED"
READ_ONLY = "READ-ONLY"
READ_WRITE = "READ-WRITE"
SERVERBUG = "SERVERBUG"
TOOBIG = "TOOBIG"
TRYCREATE = "TRYCREATE"
UNAVAILABLE = "UNAVAILABLE"
USEATTR = "USEATTR"


@dataclass(frozen=True)
class Reply:
    status: str = OK
    text: str = "Completed"
    code: str | None = None

    def line(self, tag: str) -> bytes:
        code = f"[{self.code}] " if self.code else ""
        return f"{tag} {self.status} {code}{self.text}\r\n".encode("utf-8")


class CommandFailed(Exception):
    """Ends a command with NO or BAD."""

    def __init__(self, status: str, text: str, code: str | None = None):
        super().__init__(text)
        self.reply = Reply(status, text, code)


def no(text: str, code: str | None = None) -> CommandFailed:
    return CommandFailed(NO, text, code)


def bad(text: str, code: str | None = None) -> CommandFailed:
    return CommandFailed(BAD, text, code)


def store_failure(error: Exception, *, target: bool = False) -> Reply | None:
    """
    The reply for a store error, or None if it is not one.  ``target``: the mailbox was the
    destination of COPY, MOVE or APPEND (RFC 3501 §6.3.11: TRYCREATE).
    """
    if isinstance(error, NoSuchMailbox):
        if target:
            return Reply(NO, "Mailbox does not exist", TRYCREATE)
        return Reply(NO, "Mailbox does not exist", NONEXISTENT)
    if isinstance(error, MailboxExists):
        return Reply(NO, "Mailbox already exists", ALREADYEXISTS)
    if isinstance(error, InvalidMailboxName):
        return Reply(NO, "Invalid mailbox name", CANNOT)
    if isinstance(error, InvalidFlag):
        return Reply(NO, "Invalid flag", CANNOT)
    if isinstance(error, StoreUnavailable):
        return Reply(NO, "Temporarily unavailable, try again later", UNAVAILABLE)
    if isinstance(error, QuotaExceeded):
        return Reply(NO, "Quota exceeded", OVERQUOTA)
    if isinstance(error, NoSuchMessage):
        return Reply(NO, "Some messages were expunged", EXPUNGEISSUED)
    if isinstance(error, StoreError):
        return Reply(NO, "Operation not permitted", CANNOT)
    return None


def failed(error: Exception, *, target: bool = False) -> Exception:
    """The CommandFailed for a store error (``error`` itself if it is not one)."""
    reply = store_failure(error, target=target)
    if reply is None:
        return error
    return CommandFailed(reply.status, reply.text, reply.code)
