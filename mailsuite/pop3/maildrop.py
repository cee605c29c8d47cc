"""
The maildrop of one POP3 session: the snapshot of INBOX taken at login (RFC 1939 §4:
messages are numbered 1..n for the whole session) and the deletion marks.  Plain state; the
store is only touched by the server.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mailsuite.interfaces import MessageInfo


class MessageNumberError(LookupError):
    """No visible message has this number; ``str(error)`` is the text for the client."""


@dataclass
class Entry:
    number: int
    uid: int
    stored_size: int
    wire_size: int | None = None  # known once the message has been read
    deleted: bool = False


class Maildrop:
    def __init__(self, uidvalidity: int, messages: Iterable[MessageInfo]):
        self.uidvalidity = uidvalidity
        self._entries = [
            Entry(number, info.uid, info.size)
            for number, info in enumerate(sorted(messages, key=lambda m: m.uid), start=1)
        ]

    def entry(self, number: int) -> Entry:
        """The visible message ``number``; MessageNumberError if none or marked deleted."""
        if not 1 <= number <= len(self._entries):
            raise MessageNumberError("No such message")
        entry = self._entries[number - 1]
        if entry.deleted:
            raise MessageNumberError("Message already deleted")
        return entry

    def visible(self) -> list[Entry]:
        return [e for e in self._entries if not e.deleted]

    def mark_deleted(self, number: int) -> None:
        self.entry(number).deleted = True

    def reset(self) -> None:
        for entry in self._entries:
            entry.deleted = False

    def deleted_uids(self) -> list[int]:
        return [e.uid for e in self._entries if e.deleted]

    def unique_id(self, entry: Entry) -> str:
        """
        RFC 1939 §7 UIDL: stable across sessions, 0x21..0x7E, at most 70 octets.  A UID is
        never reused while UIDVALIDITY stays the same.
        """
        return f"{self.uidvalidity}.{entry.uid}"
