"""
Tests for mailsuite.smtp.delivery: routing accepted mail to local mailboxes and the queue.
"""

from __future__ import annotations

from datetime import datetime, timezone

from twisted.internet import defer, task
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mailsuite.interfaces import (
    DeliveryError,
    DirectoryError,
    Envelope,
    IDelivery,
    IDeliveryTarget,
    QuotaExceeded,
    StoreUnavailable,
)
from mailsuite.smtp.delivery import MAX_RECEIVED_HEADERS, Router, count_received_headers
from mailsuite.smtp.queue import OutboundQueue
from tests.unit.smtp.delivery_fakes import (
    FakeDirectory,
    FakeStore,
    inline_runner,
    make_account,
    queue_dir,
)

MESSAGE = b"Received: from a by b; Wed, 1 May 2024 12:00:00 +0000\r\nSubject: t\r\n\r\nbody\r\n"


class FailingQueue:
    """A queue whose enqueue always fails, as on a full disk."""

    def __init__(self):
        self.deleted = []

    def enqueue(self, envelope, recipients, data):
        return defer.fail(OSError("disk full"))

    def delete(self, queue_id):
        self.deleted.append(queue_id)
        return True


class RouterTestsMixin:
    def setUp(self):
        self.directory = FakeDirectory()
        self.store = FakeStore()
        clock = task.Clock()
        clock.advance(datetime(2024, 5, 1, tzinfo=timezone.utc).timestamp())
        self.queue = OutboundQueue(queue_dir(self), runner=inline_runner, clock=clock)
        self.alice = self.directory.add(make_account("alice", aliases=["info@example.test"]))
        self.bob = self.directory.add(make_account("bob"))
        self.fwd = self.directory.add(make_account("fwd", forward=["far@remote.test"]))
        self.directory.add_group("team@example.test", ["alice@example.test", "bob@example.test"])
        self.directory.add_group("empty@example.test", [])
        self.router = self.make_router()

    def make_router(self, queue=None):
        return Router(directory=self.directory, store=self.store,
                      queue=queue if queue is not None else self.queue)

    def start(self, router=None):
        return (router or self.router).start(Envelope(mail_from="sender@remote.test", id="tx"))

    def deliver(self, *recipients, data=MESSAGE, router=None):
        """Run a whole transaction; return the delivery and the commit Deferred."""
        delivery = self.start(router)
        for address in recipients:
            self.successResultOf(delivery.add_recipient(address))
        self.successResultOf(delivery.body(data))
        return delivery, delivery.commit()

    def assertRefused(self, d, code, status):
        error = self.failureResultOf(d, DeliveryError).value
        self.assertEqual((error.code, error.status), (code, status))
        return error


class InterfaceTests(RouterTestsMixin, SynchronousTestCase):
    def test_router_provides_delivery_target(self):
        """Router provides IDeliveryTarget."""
        verifyObject(IDeliveryTarget, self.router)

    def test_delivery_provides_idelivery(self):
        """The object start() returns provides IDelivery."""
        verifyObject(IDelivery, self.start())


class LocalDeliveryTests(RouterTestsMixin, SynchronousTestCase):
    def test_local_account(self):
        """Mail to an account's address lands in its INBOX, byte for byte."""
        _, d = self.deliver("alice@example.test")
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.store.inbox("alice"), [MESSAGE])

    def test_account_ensured_before_append(self):
        """The store is asked to create the account's mailboxes before the append."""
        self.deliver("bob@example.test")
        self.assertEqual(self.store.ensured, ["bob"])

    def test_alias(self):
        """Mail to an alias lands in the owning account's INBOX."""
        self.deliver("info@example.test")
        self.assertEqual(self.store.inbox("alice"), [MESSAGE])

    def test_domain_is_case_insensitive(self):
        """A local domain written in capitals is still local."""
        self.deliver("alice@EXAMPLE.Test")
        self.assertEqual(self.store.inbox("alice"), [MESSAGE])

    def test_group_expands_to_members(self):
        """Mail to a group lands once in each member's INBOX."""
        self.deliver("team@example.test")
        self.assertEqual(self.store.inbox("alice"), [MESSAGE])
        self.assertEqual(self.store.inbox("bob"), [MESSAGE])

    def test_group_and_direct_recipient_get_one_copy(self):
        """An account reached by a group, directly and by alias receives one copy."""
        delivery, d = self.deliver("team@example.test", "alice@example.test",
                                   "info@example.test")
        self.successResultOf(d)
        self.assertEqual(self.store.inbox("alice"), [MESSAGE])
        self.assertEqual(self.store.stored(), 2)
        self.assertEqual(sorted(delivery.accounts), ["alice", "bob"])

    def test_duplicate_recipient_harmless(self):
        """The same recipient given twice is delivered once."""
        self.deliver("bob@example.test", "BOB@example.test")
        self.assertEqual(self.store.inbox("bob"), [MESSAGE])

    def test_postmaster_without_domain(self):
        """A bare "postmaster" (RFC 5321 §4.5.1) is resolved in a local domain."""
        self.directory.add(make_account("postmaster"))
        self.deliver("Postmaster")
        self.assertEqual(self.store.inbox("postmaster"), [MESSAGE])

    def test_local_only_creates_no_queue_entry(self):
        """Purely local mail writes nothing to the outbound queue."""
        delivery, d = self.deliver("alice@example.test")
        self.successResultOf(d)
        self.assertEqual(self.queue.entries(), [])
        self.assertIsNone(delivery.queue_id)


class RemoteDeliveryTests(RouterTestsMixin, SynchronousTestCase):
    def test_remote_recipient_is_queued(self):
        """A recipient outside the local domains goes to the outbound queue."""
        delivery, d = self.deliver("carol@remote.test")
        self.successResultOf(d)
        [entry] = self.queue.entries()
        self.assertEqual(entry.recipients, ("carol@remote.test",))
        self.assertEqual(entry.sender, "sender@remote.test")
        self.assertEqual(self.queue.read(entry.id), MESSAGE)
        self.assertEqual(delivery.queue_id, entry.id)

    def test_forward_goes_to_queue(self):
        """An account forwarding to a remote address has the message queued for it."""
        self.deliver("fwd@example.test")
        [entry] = self.queue.entries()
        self.assertEqual(entry.recipients, ("far@remote.test",))
        self.assertEqual(self.store.stored(), 0)

    def test_mixed_local_and_remote(self):
        """Local recipients are stored and all remote ones share one queue entry."""
        self.successResultOf(self.deliver(
            "alice@example.test", "carol@remote.test", "fwd@example.test", "dave@other.test",
        )[1])
        self.assertEqual(self.store.inbox("alice"), [MESSAGE])
        [entry] = self.queue.entries()
        self.assertEqual(sorted(entry.recipients),
                         ["carol@remote.test", "dave@other.test", "far@remote.test"])

    def test_remote_duplicates_queued_once(self):
        """A remote address given directly and reached by forward is queued once."""
        self.deliver("far@remote.test", "fwd@example.test", "far@REMOTE.test")
        [entry] = self.queue.entries()
        self.assertEqual(entry.recipients, ("far@remote.test",))


class RecipientRefusalTests(RouterTestsMixin, SynchronousTestCase):
    def test_unknown_user(self):
        """An unknown local address is refused with 550 5.1.1 User unknown."""
        error = self.assertRefused(self.start().add_recipient("nobody@example.test"),
                                   550, "5.1.1")
        self.assertEqual(error.text, "User unknown")

    def test_empty_group_refused(self):
        """A group that expands to nobody is refused at RCPT rather than dropping mail."""
        self.assertRefused(self.start().add_recipient("empty@example.test"), 550, "5.1.1")

    def test_empty_group_same_text_as_unknown(self):
        """An empty group and an unknown user get the same reply text."""
        unknown = self.assertRefused(self.start().add_recipient("x@example.test"), 550, "5.1.1")
        empty = self.assertRefused(self.start().add_recipient("empty@example.test"),
                                   550, "5.1.1")
        self.assertEqual(str(unknown), str(empty))

    def test_directory_failure_is_temporary(self):
        """A directory error while resolving answers 451 4.3.0."""
        self.directory.fail_with = DirectoryError("ldap down")
        self.assertRefused(self.start().add_recipient("alice@example.test"), 451, "4.3.0")
        self.flushLoggedErrors(DirectoryError)

    def test_address_without_domain_refused(self):
        """An address without '@' other than postmaster is a syntax error (501 5.1.3)."""
        self.assertRefused(self.start().add_recipient("alice"), 501, "5.1.3")

    def test_refused_recipient_not_delivered(self):
        """A refused recipient next to an accepted one gets nothing."""
        delivery = self.start()
        self.successResultOf(delivery.add_recipient("bob@example.test"))
        self.failureResultOf(delivery.add_recipient("nobody@example.test"), DeliveryError)
        self.successResultOf(delivery.body(MESSAGE))
        self.successResultOf(delivery.commit())
        self.assertEqual(self.store.stored(), 1)


class CommitFailureTests(RouterTestsMixin, SynchronousTestCase):
    def test_second_append_failure_rolls_back_first(self):
        """When the 2nd append fails, the 1st copy is expunged and the reply is 451 4.3.0."""
        self.store.fail_append[2] = OSError("boom")
        _, d = self.deliver("alice@example.test", "bob@example.test")
        self.assertRefused(d, 451, "4.3.0")
        self.assertEqual(self.store.stored(), 0)
        self.flushLoggedErrors(OSError)

    def test_queue_failure_rolls_back_local_copies(self):
        """When queueing fails, the local copies are expunged and the reply is 451 4.3.0."""
        router = self.make_router(queue=FailingQueue())
        _, d = self.deliver("alice@example.test", "carol@remote.test", router=router)
        self.assertRefused(d, 451, "4.3.0")
        self.assertEqual(self.store.stored(), 0)
        self.flushLoggedErrors(OSError)

    def test_quota_exceeded_is_552(self):
        """A full mailbox answers 552 5.2.2."""
        self.store.fail_append[1] = QuotaExceeded("over quota")
        self.assertRefused(self.deliver("alice@example.test")[1], 552, "5.2.2")

    def test_store_unavailable_is_452(self):
        """A temporarily unavailable store answers 452 4.3.1."""
        self.store.fail_append[1] = StoreUnavailable("disk full")
        self.assertRefused(self.deliver("alice@example.test")[1], 452, "4.3.1")

    def test_failed_rollback_keeps_copy(self):
        """If the undo itself fails the reply is still 451 (a duplicate beats a loss)."""
        self.store.fail_append[2] = OSError("boom")
        self.store.fail_expunge = True
        self.assertRefused(self.deliver("alice@example.test", "bob@example.test")[1],
                           451, "4.3.0")
        self.assertEqual(self.store.inbox("alice"), [MESSAGE])
        self.flushLoggedErrors(OSError, StoreUnavailable)

    def test_recipient_vanished_before_commit(self):
        """A recipient that expands to nothing by commit time tempfails the message."""
        delivery = self.start()
        self.successResultOf(delivery.add_recipient("team@example.test"))
        self.directory.add_group("team@example.test", [])
        self.successResultOf(delivery.body(MESSAGE))
        self.assertRefused(delivery.commit(), 451, "4.3.0")
        self.assertEqual(self.store.stored(), 0)

    def test_directory_failure_at_commit(self):
        """A directory error during expansion at commit answers 451 and stores nothing."""
        delivery = self.start()
        self.successResultOf(delivery.add_recipient("alice@example.test"))
        self.successResultOf(delivery.body(MESSAGE))
        self.directory.fail_with = DirectoryError("ldap down")
        self.assertRefused(delivery.commit(), 451, "4.3.0")
        self.assertEqual(self.store.stored(), 0)
        self.flushLoggedErrors(DirectoryError)


class SequenceTests(RouterTestsMixin, SynchronousTestCase):
    def test_abort_leaves_nothing(self):
        """abort() after recipients and body stores and queues nothing."""
        delivery = self.start()
        self.successResultOf(delivery.add_recipient("alice@example.test"))
        self.successResultOf(delivery.add_recipient("carol@remote.test"))
        self.successResultOf(delivery.body(MESSAGE))
        delivery.abort()
        self.assertEqual(self.store.stored(), 0)
        self.assertEqual(self.queue.entries(), [])

    def test_commit_after_abort_fails(self):
        """commit() after abort() is refused and delivers nothing."""
        delivery = self.start()
        self.successResultOf(delivery.add_recipient("alice@example.test"))
        self.successResultOf(delivery.body(MESSAGE))
        delivery.abort()
        self.assertRefused(delivery.commit(), 503, "5.5.1")
        self.assertEqual(self.store.stored(), 0)

    def test_commit_twice_fails(self):
        """A second commit() is refused and does not deliver a second copy."""
        delivery, d = self.deliver("alice@example.test")
        self.successResultOf(d)
        self.assertRefused(delivery.commit(), 503, "5.5.1")
        self.assertEqual(self.store.inbox("alice"), [MESSAGE])

    def test_commit_without_body_fails(self):
        """commit() before body() is refused."""
        delivery = self.start()
        self.successResultOf(delivery.add_recipient("alice@example.test"))
        self.assertRefused(delivery.commit(), 503, "5.5.1")

    def test_commit_without_recipients_fails(self):
        """commit() with no accepted recipient is refused with 554."""
        delivery = self.start()
        self.successResultOf(delivery.body(MESSAGE))
        self.assertRefused(delivery.commit(), 554, "5.5.1")


class LoopTests(RouterTestsMixin, SynchronousTestCase):
    @staticmethod
    def with_received(count, body=b"body\r\n"):
        received = b"Received: from x by y; Wed, 1 May 2024 12:00:00 +0000\r\n" * count
        return received + b"Subject: t\r\n\r\n" + body

    def test_too_many_received_is_a_loop(self):
        """More than 30 Received fields fail the commit with 554 5.4.6 and store nothing."""
        data = self.with_received(MAX_RECEIVED_HEADERS + 1)
        self.assertRefused(self.deliver("alice@example.test", data=data)[1], 554, "5.4.6")
        self.assertEqual(self.store.stored(), 0)

    def test_thirty_received_is_fine(self):
        """Exactly 30 Received fields are still delivered."""
        data = self.with_received(MAX_RECEIVED_HEADERS)
        self.successResultOf(self.deliver("alice@example.test", data=data)[1])

    def test_received_lines_in_body_not_counted(self):
        """Received: lines after the header section do not count as hops."""
        body = b"Received: quoted\r\n" * 40
        self.assertEqual(count_received_headers(self.with_received(2, body)), 2)

    def test_received_count_is_case_insensitive(self):
        """Field names match case-insensitively (RFC 5322 §1.2.2)."""
        self.assertEqual(count_received_headers(b"RECEIVED: a\r\nreceived : b\r\n\r\n"), 2)


class LoggingTests(RouterTestsMixin, SynchronousTestCase):
    def test_delivery_is_logged(self):
        """A delivery logs the transaction id, sender, accounts and remote count."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.deliver("alice@example.test", "carol@remote.test")
        [event] = [e for e in events if e.get("accounts") is not None]
        self.assertEqual(event["id"], "tx")
        self.assertEqual(event["sender"], "sender@remote.test")
        self.assertEqual(event["accounts"], ["alice"])
        self.assertEqual(event["remote"], 1)


class ShutdownDrainTests(SynchronousTestCase):
    """A shutdown waits for commits under way before the store closes, within a grace time."""

    def setUp(self):
        from mailsuite.tap import _Deliveries

        self.directory = FakeDirectory()
        self.directory.add(make_account("alice"))
        self.store = FakeStore()
        self.clock = task.Clock()
        self.queue = OutboundQueue(queue_dir(self), runner=inline_runner, clock=self.clock)
        self.router = Router(directory=self.directory, store=self.store, queue=self.queue)
        self.service = _Deliveries(self.router, self.clock, grace=5.0)
        self.service.startService()
        self.gate = defer.Deferred()
        real_append = self.store.append
        self.store.append = lambda *a, **k: self.gate.addCallback(lambda _: real_append(*a, **k))

    def commit_one(self):
        delivery = self.router.start(Envelope(mail_from="x@remote.test"))
        self.successResultOf(delivery.add_recipient("alice@example.test"))
        self.successResultOf(delivery.body(MESSAGE))
        return delivery.commit()

    def test_stop_waits_for_a_commit_under_way(self):
        committed = self.commit_one()
        stopped = self.service.stopService()
        self.assertNoResult(stopped)
        self.gate.callback(None)
        self.successResultOf(committed)
        self.successResultOf(stopped)
        self.assertEqual(len(self.store.inbox("alice")), 1)

    def test_stop_gives_up_after_the_grace_time(self):
        self.commit_one()
        stopped = self.service.stopService()
        self.clock.advance(4.9)
        self.assertNoResult(stopped)
        self.clock.advance(0.2)
        self.successResultOf(stopped)

    def test_nothing_under_way_stops_at_once(self):
        self.assertIsNone(self.service.stopService())
