"""Delivery to an account over its quota: the store refuses and SMTP answers 552 5.2.2."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mailsuite.interfaces import DeliveryError, Envelope
from mailsuite.smtp.delivery import Router
from mailsuite.smtp.queue import OutboundQueue
from mailsuite.testing.memstore import MemoryMailStore
from tests.unit.smtp.delivery_fakes import FakeDirectory, inline_runner, make_account, queue_dir

MESSAGE = b"Subject: t\r\n\r\nbody\r\n"


class QuotaDeliveryTests(SynchronousTestCase):
    def setUp(self):
        self.directory = FakeDirectory()
        self.directory.add(make_account("alice"))
        self.directory.add(make_account("bob"))
        self.queue = OutboundQueue(queue_dir(self), runner=inline_runner)
        self.store = MemoryMailStore()
        self.store.quota_for = {"bob": len(MESSAGE) - 1}.get

    def deliver(self, *recipients):
        router = Router(directory=self.directory, store=self.store, queue=self.queue)
        delivery = router.start(Envelope(mail_from="s@remote.test"))
        for address in recipients:
            self.successResultOf(delivery.add_recipient(address))
        self.successResultOf(delivery.body(MESSAGE))
        return delivery.commit()

    def count(self, account):
        return len(self.successResultOf(self.store.messages(account, "INBOX")))

    def test_over_quota_recipient_gets_552_5_2_2(self):
        """A message that does not fit the recipient's quota is refused with 552 5.2.2."""
        error = self.failureResultOf(self.deliver("bob@example.test"), DeliveryError).value
        self.assertEqual((error.code, error.status), (552, "5.2.2"))
        self.assertEqual(self.count("bob"), 0)

    def test_over_quota_recipient_refuses_whole_message(self):
        """With one recipient over quota the whole message is refused: nobody keeps a copy."""
        d = self.deliver("alice@example.test", "bob@example.test")
        self.assertEqual(self.failureResultOf(d, DeliveryError).value.code, 552)
        self.assertEqual(self.count("alice"), 0)

    def test_within_quota_is_delivered(self):
        """A recipient without a limit still receives the message."""
        self.successResultOf(self.deliver("alice@example.test"))
        self.assertEqual(self.count("alice"), 1)
