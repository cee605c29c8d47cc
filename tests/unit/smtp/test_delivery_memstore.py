"""
The delivery router against the shared in-memory IMailStore, so routing and the real store
contract (ensure_account, append, expunge) are exercised together.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from mailsuite.interfaces import DeliveryError, Envelope, StoreUnavailable
from mailsuite.smtp.delivery import Router
from mailsuite.smtp.queue import OutboundQueue
from mailsuite.testing.memstore import MemoryMailStore
from tests.unit.smtp.delivery_fakes import FakeDirectory, inline_runner, make_account, queue_dir

MESSAGE = b"Subject: t\r\n\r\nbody\r\n"


class FlakyMemoryStore(MemoryMailStore):
    """A MemoryMailStore whose append fails for one account."""

    def __init__(self, failing_account):
        super().__init__()
        self.failing_account = failing_account

    def append(self, account, name, data, flags=frozenset(), internal_date=None):
        if account == self.failing_account:
            return defer.fail(StoreUnavailable("disk full"))
        return super().append(account, name, data, flags, internal_date)


class MemoryStoreDeliveryTests(SynchronousTestCase):
    def setUp(self):
        self.directory = FakeDirectory()
        self.directory.add(make_account("alice"))
        self.directory.add(make_account("bob"))
        self.queue = OutboundQueue(queue_dir(self), runner=inline_runner)

    def deliver(self, store, *recipients):
        router = Router(directory=self.directory, store=store, queue=self.queue)
        delivery = router.start(Envelope(mail_from="s@remote.test"))
        for address in recipients:
            self.successResultOf(delivery.add_recipient(address))
        self.successResultOf(delivery.body(MESSAGE))
        return delivery.commit()

    def inbox(self, store, account):
        infos = self.successResultOf(store.messages(account, "INBOX"))
        return [self.successResultOf(store.read(account, "INBOX", i.uid)) for i in infos]

    def test_message_readable_from_inbox(self):
        """A delivered message can be read back from the account's INBOX unchanged."""
        store = MemoryMailStore()
        self.successResultOf(self.deliver(store, "alice@example.test"))
        self.assertEqual(self.inbox(store, "alice"), [MESSAGE])

    def test_failed_second_account_leaves_first_inbox_empty(self):
        """When bob's append fails, alice's copy is expunged again."""
        store = FlakyMemoryStore("bob")
        d = self.deliver(store, "alice@example.test", "bob@example.test")
        self.assertEqual(self.failureResultOf(d, DeliveryError).value.code, 452)
        self.assertEqual(self.inbox(store, "alice"), [])
