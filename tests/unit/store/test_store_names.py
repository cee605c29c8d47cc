"""Mailbox name, account id and flag validation; the modified UTF-7 codec."""

import pytest

from mailsuite.interfaces import InvalidMailboxName, MailboxExists
from mailsuite.store.names import (
    InvalidAccount,
    InvalidFlag,
    decode_mutf7,
    encode_mutf7,
    normalize_flags,
    rename_moves,
    validate_account,
    validate_mailbox_name,
)


@pytest.mark.parametrize("name, canonical", [
    ("inbox", "INBOX"),
    ("Inbox/Sub", "INBOX/Sub"),
    ("Archive/2024", "Archive/2024"),
    ("INBOXES", "INBOXES"),
])
def test_valid_names_are_canonicalised(name, canonical):
    """Valid names come back canonical: only an INBOX first level changes case."""
    assert validate_mailbox_name(name) == canonical


@pytest.mark.parametrize("bad", [
    "", "/", "/etc", "a/", "a//b", ".", "..", "../x", "a/../../b", "a/./b", "a\0b", "a\tb",
    "a\x7fb", "x" * 256, ("y" * 200 + "/") * 5 + "z", None, b"INBOX",
])
def test_invalid_names_refused(bad):
    """Empty levels, dot levels, control characters, overlong and non-str names are refused."""
    with pytest.raises(InvalidMailboxName):
        validate_mailbox_name(bad)


def test_longest_level_accepted():
    """A level of exactly 255 characters is allowed."""
    assert validate_mailbox_name("x" * 255) == "x" * 255


@pytest.mark.parametrize("bad", ["", "a/b", "a\\b", "..", "a..b", ".hidden", "a\0", None])
def test_invalid_accounts_refused(bad):
    """Account ids that could leave the account's directory are refused."""
    with pytest.raises(InvalidAccount):
        validate_account(bad)


def test_plain_account_accepted():
    """An ordinary account id (with '@' and '.') is accepted unchanged."""
    assert validate_account("alice.smith@example.test") == "alice.smith@example.test"


def test_flags_normalised():
    """System flags get their canonical case; \\Recent is dropped; keywords stay."""
    assert normalize_flags({"\\SEEN", "\\recent", "$Label1"}) == {"\\Seen", "$Label1"}


@pytest.mark.parametrize("bad", [{"\\Unknown"}, {"with space"}, {"br]acket"}, {""}, "\\Seen"])
def test_bad_flags_refused(bad):
    """Unknown system flags, non-atoms and a bare string are refused."""
    with pytest.raises(InvalidFlag):
        normalize_flags(bad)


@pytest.mark.parametrize("text, encoded", [
    ("Entwürfe", "Entw&APw-rfe"),
    ("A & B", "A &- B"),
    ("日本語", "&ZeVnLIqe-"),
    ("plain", "plain"),
])
def test_mutf7_round_trip(text, encoded):
    """Modified UTF-7 matches RFC 3501 §5.1.3 and decodes back."""
    assert encode_mutf7(text) == encoded
    assert decode_mutf7(encoded) == text


@pytest.mark.parametrize("bad", ["&Jjo", "&!!-", "é"])
def test_mutf7_malformed_refused(bad):
    """Malformed modified UTF-7 raises ValueError."""
    with pytest.raises(ValueError):
        decode_mutf7(bad)


def test_rename_moves_takes_children_along():
    """Renaming a parent renames its children below the new name."""
    moves = rename_moves(["INBOX", "A", "A/B", "AB"], "A", "C")
    assert moves == {"A": "C", "A/B": "C/B"}


def test_rename_moves_refuses_existing_target():
    """A rename onto an existing name (or a child's new name) raises MailboxExists."""
    with pytest.raises(MailboxExists):
        rename_moves(["INBOX", "A", "C"], "A", "C")
    with pytest.raises(MailboxExists):
        rename_moves(["INBOX", "A", "A/B", "C/B"], "A", "C")
