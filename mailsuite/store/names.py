"""
Pure validation of mailbox names, account ids and flags, and the IMAP modified UTF-7 codec.

Every backend passes names through here before they touch a path or a row, so nothing a client
sends can name a file outside the account's own directory.
"""

from __future__ import annotations

import base64
import binascii

from mailsuite.interfaces import (
    HIERARCHY_SEPARATOR,
    SYSTEM_FLAGS,
    InvalidMailboxName,
    MailboxExists,
    StoreError,
)

INBOX = "INBOX"
MAX_LEVEL_LENGTH = 255
MAX_NAME_LENGTH = 1000
MAX_ACCOUNT_LENGTH = 255
MAX_FLAG_LENGTH = 255

# RFC 3501 §9: atom-specials, plus "]" which resp-specials forbids in flag keywords.
_ATOM_SPECIALS = frozenset('(){ %*"\\]')
_SYSTEM_FLAGS_BY_LOWER = {f.lower(): f for f in SYSTEM_FLAGS}


class InvalidAccount(StoreError):
    """The account id cannot name a directory or a row safely."""


class InvalidFlag(StoreError):
    """A flag is not a system flag nor a valid keyword atom."""


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text)


def validate_mailbox_name(name) -> str:
    """
    Return the canonical form of ``name`` ("INBOX" in any case becomes "INBOX", also as the
    first level of a child's name), or raise InvalidMailboxName.
    """
    if not isinstance(name, str) or not name:
        raise InvalidMailboxName("mailbox name is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidMailboxName("mailbox name is too long")
    if _has_control(name):
        raise InvalidMailboxName("mailbox name contains a control character")
    levels = name.split(HIERARCHY_SEPARATOR)
    for level in levels:
        if not level:
            raise InvalidMailboxName("mailbox name has an empty level")
        if level in (".", ".."):
            raise InvalidMailboxName("mailbox name has a '.' or '..' level")
        if len(level) > MAX_LEVEL_LENGTH:
            raise InvalidMailboxName("mailbox name level is too long")
    # RFC 3501 §5.1: INBOX is case-insensitive.
    if levels[0].upper() == INBOX:
        levels[0] = INBOX
    return HIERARCHY_SEPARATOR.join(levels)


def validate_account(account) -> str:
    """Return ``account`` unchanged if it is a safe account id, else raise InvalidAccount."""
    if not isinstance(account, str) or not account:
        raise InvalidAccount("account id is empty")
    if len(account) > MAX_ACCOUNT_LENGTH:
        raise InvalidAccount("account id is too long")
    if "/" in account or "\\" in account or ".." in account or account.startswith("."):
        raise InvalidAccount("account id contains a path character")
    if _has_control(account):
        raise InvalidAccount("account id contains a control character")
    return account


def is_child(name: str, parent: str) -> bool:
    """True if ``name`` is below ``parent`` in the hierarchy."""
    return name.startswith(parent + HIERARCHY_SEPARATOR)


def mailbox_sort_key(name: str):
    """INBOX first, then by name."""
    return (name != INBOX, name)


def sorted_mailboxes(infos) -> list:
    """MailboxInfo objects in the order IMailStore.mailboxes promises: INBOX first."""
    return sorted(infos, key=lambda info: mailbox_sort_key(info.name))


def check_deletable(existing, name: str) -> None:
    """StoreError unless mailbox ``name`` may be deleted given the ``existing`` names."""
    if name == INBOX:
        raise StoreError("INBOX cannot be deleted")
    if any(is_child(other, name) for other in existing):
        raise StoreError("mailbox has children")


def rename_moves(existing, old: str, new: str) -> dict[str, str]:
    """
    The renames that renaming ``old`` to ``new`` makes among the ``existing`` names: the
    mailbox and its children; MailboxExists or StoreError when it cannot be done.  INBOX has
    no children to take along (RFC 3501 §6.3.5: renaming it moves only its messages).
    """
    existing = set(existing)
    if new in existing:
        raise MailboxExists(f"mailbox {new!r} exists")
    if old == INBOX:
        return {old: new}
    if is_child(new, old):
        raise StoreError("cannot rename a mailbox below itself")
    moves = {old: new}
    for other in existing:
        if is_child(other, old):
            moves[other] = validate_mailbox_name(new + other[len(old):])
    if any(target in existing for target in moves.values()):
        raise MailboxExists("a mailbox of the new name exists")
    return moves


def normalize_flags(flags) -> frozenset[str]:
    """
    Canonical spelling of ``flags``: system flags in their RFC 3501 case, keywords as given.
    ``\\Recent`` is dropped (IMAP4rev2 has none); anything else invalid raises InvalidFlag.
    """
    if isinstance(flags, (str, bytes)):
        raise InvalidFlag("flags must be a collection of str")
    result = set()
    for flag in flags:
        if not isinstance(flag, str) or not flag or len(flag) > MAX_FLAG_LENGTH:
            raise InvalidFlag("invalid flag")
        if flag.startswith("\\"):
            lower = flag.lower()
            if lower == "\\recent":
                continue
            if lower not in _SYSTEM_FLAGS_BY_LOWER:
                raise InvalidFlag("unknown system flag")
            result.add(_SYSTEM_FLAGS_BY_LOWER[lower])
            continue
        if any(c in _ATOM_SPECIALS or not (0x20 < ord(c) < 0x7F) for c in flag):
            raise InvalidFlag("invalid keyword")
        result.add(flag)
    return frozenset(result)


# --------------------------------------------------------------- modified UTF-7 (RFC 3501 §5.1.3)


def encode_mutf7(text: str) -> str:
    """Encode ``text`` in IMAP modified UTF-7."""
    out = []
    pending = []

    def flush():
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            b64 = base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")
            out.append("&" + b64 + "-")
            pending.clear()

    for c in text:
        if 0x20 <= ord(c) <= 0x7E:
            flush()
            out.append("&-" if c == "&" else c)
        else:
            pending.append(c)
    flush()
    return "".join(out)


def decode_mutf7(text: str) -> str:
    """Decode IMAP modified UTF-7; ValueError when malformed."""
    out = []
    i = 0
    while i < len(text):
        c = text[i]
        if not 0x20 <= ord(c) <= 0x7E:
            raise ValueError("non-ASCII character in modified UTF-7")
        if c != "&":
            out.append(c)
            i += 1
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise ValueError("unterminated shift in modified UTF-7")
        chunk = text[i + 1 : end]
        if not chunk:
            out.append("&")
        else:
            b64 = chunk.replace(",", "/")
            b64 += "=" * (-len(b64) % 4)
            try:
                raw = base64.b64decode(b64, validate=True)
                out.append(raw.decode("utf-16-be"))
            except (binascii.Error, UnicodeDecodeError) as e:
                raise ValueError("malformed modified UTF-7") from e
        i = end + 1
    return "".join(out)
