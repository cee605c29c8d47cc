"""
Quota accounting for IMAP (RFC 9208): one quota root per account, named "", holding every
mailbox; its STORAGE usage is what the store counts against the account (IMailStore.usage).
"""

from __future__ import annotations

ROOT = ""


def kib(octets: int) -> int:
    """RFC 9208 §5.1: STORAGE counts units of 1024 octets, rounded up."""
    return -(-octets // 1024)


async def usage(session) -> int:
    """Octets stored by the logged-in account, over all its mailboxes."""
    return await session.store.usage(session.account)


def limit(session) -> int | None:
    """The account's limit in octets, or None when it has none."""
    if session.quota_for is None or session.avatar is None:
        return None
    return session.quota_for(session.avatar.account)


async def usage_and_limit(session) -> tuple[int, int | None]:
    most = limit(session)
    if most is None:
        return 0, None
    return await usage(session), most
