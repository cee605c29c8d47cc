"""
Small in-memory stand-ins for the directory, the mailbox store and the queue, used by the
delivery and queue tests.  Each can be told to fail at a chosen call.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import datetime, timezone

from twisted.internet import defer
from zope.interface import implementer

from mailsuite.interfaces import (
    Account,
    Expansion,
    IDirectory,
    MessageInfo,
    Recipient,
    RecipientKind,
    StoreUnavailable,
)


def queue_dir(testcase):
    """A fresh queue path inside a temporary directory removed after ``testcase``."""
    root = tempfile.mkdtemp(prefix="mailsuite-queue-")
    testcase.addCleanup(shutil.rmtree, root, ignore_errors=True)
    return os.path.join(root, "queue")


def inline_runner(f, *args, **kwargs):
    """Run blocking work at once; what a thread pool runner does, without the thread."""
    return defer.maybeDeferred(f, *args, **kwargs)


def make_account(uid, domain="example.test", *, aliases=(), forward=()):
    mail = f"{uid}@{domain}"
    return Account(
        uid=uid,
        mail=mail,
        dn=f"uid={uid},ou=people,dc=example,dc=test",
        addresses=frozenset({mail, *aliases}),
        forward=tuple(forward),
    )


@implementer(IDirectory)
class FakeDirectory:
    """
    Accounts (with aliases and forwards) and groups in dicts.  A forward replaces local
    delivery, as mailRoutingAddress does.
    """

    def __init__(self, domains=("example.test",)):
        self.local_domains = frozenset(d.lower() for d in domains)
        self.accounts: dict[str, Account] = {}
        self.groups: dict[str, tuple[str, ...]] = {}
        self.fail_with: Exception | None = None

    def add(self, account):
        self.accounts[account.uid] = account
        return account

    def add_group(self, address, members):
        self.groups[address.lower()] = tuple(members)

    def _account_for(self, address):
        key = address.lower()
        for account in self.accounts.values():
            if key in {a.lower() for a in account.addresses}:
                return account
        return None

    def resolve(self, address):
        if self.fail_with is not None:
            raise self.fail_with
        account = self._account_for(address)
        if account is not None:
            return Recipient(RecipientKind.ACCOUNT, address, account=account, via="mail")
        if address.lower() in self.groups:
            return Recipient(RecipientKind.GROUP, address, members=self.groups[address.lower()])
        return Recipient(RecipientKind.UNKNOWN, address)

    def expand(self, address, _seen=None):
        if self.fail_with is not None:
            raise self.fail_with
        seen = set() if _seen is None else _seen
        key = address.lower()
        if key in seen:
            return Expansion()
        seen.add(key)
        domain = key.rpartition("@")[2]
        if domain not in self.local_domains:
            return Expansion(remote=(address,))
        account = self._account_for(address)
        if account is not None:
            if account.forward:
                return Expansion(remote=account.forward)
            return Expansion(accounts=(account,))
        accounts, remote = [], []
        for member in self.groups.get(key, ()):
            sub = self.expand(member, seen)
            accounts.extend(sub.accounts)
            remote.extend(sub.remote)
        return Expansion(accounts=tuple(accounts), remote=tuple(remote))

    def account(self, uid):
        return self.accounts.get(uid)

    def find_account(self, login):
        return self.accounts.get(login) or self._account_for(login)

    def check_password(self, login, password):
        return None


class FakeStore:
    """
    Just enough of IMailStore for delivery: ensure_account, append, expunge, messages.
    ``fail_append`` maps an append's 1-based call number to the exception it raises.
    """

    def __init__(self):
        self.boxes: dict[tuple[str, str], dict[int, bytes]] = {}
        self.ensured: list[str] = []
        self.appends = 0
        self.fail_append: dict[int, Exception] = {}
        self.fail_expunge = False
        self._next_uid = 1

    def ensure_account(self, account):
        self.ensured.append(account)
        self.boxes.setdefault((account, "INBOX"), {})
        return defer.succeed(None)

    def append(self, account, name, data, flags=frozenset(), internal_date=None):
        self.appends += 1
        if self.appends in self.fail_append:
            return defer.fail(self.fail_append[self.appends])
        box = self.boxes.get((account, name))
        if box is None:
            return defer.fail(StoreUnavailable("no such mailbox"))
        uid = self._next_uid
        self._next_uid += 1
        box[uid] = data
        return defer.succeed(MessageInfo(
            uid=uid, flags=frozenset(flags), modseq=uid,
            internal_date=datetime(2024, 1, 1, tzinfo=timezone.utc), size=len(data),
        ))

    def expunge(self, account, name, uids):
        if self.fail_expunge:
            return defer.fail(StoreUnavailable("disk error"))
        box = self.boxes.get((account, name), {})
        removed = [uid for uid in uids if box.pop(uid, None) is not None]
        return defer.succeed(removed)

    def inbox(self, account):
        """The messages in ``account``'s INBOX, in UID order (a test helper)."""
        box = self.boxes.get((account, "INBOX"), {})
        return [box[uid] for uid in sorted(box)]

    def stored(self):
        """How many messages the store holds in total (a test helper)."""
        return sum(len(box) for box in self.boxes.values())
