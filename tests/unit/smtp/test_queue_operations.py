"""
Tests for the outbound queue's changing operations: DSN parameters per recipient, update,
finish, flush, bounce requests and the wake-up stamp the relay polls.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from datetime import datetime, timezone

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from mailsuite.smtp import queue as queue_module
from mailsuite.smtp.queue import (
    InvalidQueueId,
    NoSuchQueueEntry,
    OutboundQueue,
    QueueError,
    RecipientState,
)
from tests.unit.smtp.delivery_fakes import inline_runner, queue_dir
from tests.unit.smtp.test_queue_spool import MESSAGE, RECEIVED_AT, make_envelope

LATER = datetime(2024, 5, 3, 8, 0, 0, tzinfo=timezone.utc)


class OperationsMixin:
    def setUp(self):
        self.path = queue_dir(self)
        self.clock = task.Clock()
        self.clock.advance(RECEIVED_AT.timestamp() + 5)
        self.queue = OutboundQueue(self.path, runner=inline_runner, clock=self.clock)

    def enqueue(self, recipients=("bob@remote.test",), params=None):
        d = self.queue.enqueue(make_envelope(), list(recipients), MESSAGE, params)
        return self.successResultOf(d)

    def stored(self, queue_id):
        with open(os.path.join(self.path, queue_id + ".json"), "rb") as f:
            return json.load(f)

    def now(self):
        return datetime.fromtimestamp(self.clock.seconds(), tz=timezone.utc)


class ParamsTests(OperationsMixin, SynchronousTestCase):
    def test_notify_and_orcpt_are_kept_per_recipient(self):
        """RCPT parameters NOTIFY and ORCPT are stored with their recipient, as given."""
        queue_id = self.enqueue(
            ["bob@remote.test", "carol@remote.test"],
            params={"bob@remote.test": {"NOTIFY": "SUCCESS,FAILURE",
                                        "ORCPT": "rfc822;Bob+2Bx@Remote.test"}},
        )
        self.assertEqual(self.stored(queue_id)["recipients"], [
            {"address": "bob@remote.test", "status": "pending",
             "notify": "SUCCESS,FAILURE", "orcpt": "rfc822;Bob+2Bx@Remote.test"},
            {"address": "carol@remote.test", "status": "pending",
             "notify": None, "orcpt": None},
        ])

    def test_params_match_an_address_with_another_domain_case(self):
        """Parameters given under Bob@Remote.TEST apply to the queued bob@remote.test."""
        queue_id = self.enqueue(["Bob@remote.test"],
                                params={"Bob@Remote.TEST": {"notify": "NEVER"}})
        self.assertEqual(self.queue.get(queue_id).states[0].notify, "NEVER")

    def test_states_show_the_parameters(self):
        """QueueEntry.states carries notify and orcpt for the relay and the admin command."""
        queue_id = self.enqueue(params={"bob@remote.test": {"ORCPT": "rfc822;b@r.test"}})
        self.assertEqual(self.queue.get(queue_id).states,
                         (RecipientState("bob@remote.test", orcpt="rfc822;b@r.test"),))


class OldFormatTests(OperationsMixin, SynchronousTestCase):
    def write_version_1(self, queue_id="20240501120000-0011223344556677"):
        record = {
            "version": 1, "id": queue_id, "envelope_id": "tx0", "mail_from": "a@example.test",
            "recipients": [{"address": "bob@remote.test", "status": "pending"},
                           {"address": "carol@remote.test", "status": "delivered"}],
            "helo": "h", "client_address": "192.0.2.1", "client_name": "",
            "authenticated_as": None, "protocol": "ESMTP", "smtputf8": False,
            "body_type": "7BIT", "mail_params": {}, "received_at": "2024-05-01T12:00:00+00:00",
            "size": len(MESSAGE), "attempts": 2, "next_attempt": "2024-05-01T13:00:00+00:00",
        }
        with open(os.path.join(self.path, queue_id + ".eml"), "wb") as f:
            f.write(MESSAGE)
        with open(os.path.join(self.path, queue_id + ".json"), "w") as f:
            json.dump(record, f)
        return queue_id

    def test_version_1_envelope_is_listed(self):
        """An envelope without DSN fields reads with defaults: no params, no flags."""
        queue_id = self.write_version_1()
        entry = self.queue.get(queue_id)
        self.assertEqual(entry.states, (RecipientState("bob@remote.test"),
                                        RecipientState("carol@remote.test", "delivered")))
        self.assertEqual((entry.pending, entry.delay_warned, entry.bounce_requested),
                         (1, False, False))

    def test_version_1_envelope_can_be_updated(self):
        """update and request_bounce work on an envelope of the previous format."""
        queue_id = self.write_version_1()
        self.queue.request_bounce(queue_id)
        self.assertTrue(self.queue.get(queue_id).bounce_requested)


class UpdateTests(OperationsMixin, SynchronousTestCase):
    def test_update_changes_the_stored_envelope(self):
        """The change is on disk: a new queue object sees it."""
        queue_id = self.enqueue()

        def change(record):
            record["attempts"] = 3
            record["recipients"][0].update(status="failed", attempts=3, last_code=550,
                                           last_error="550 5.1.1 no such user",
                                           remote_mta="mx.remote.test", status_code="5.1.1")

        returned = self.queue.update(queue_id, change)
        self.assertEqual(returned, self.stored(queue_id))
        reopened = OutboundQueue(self.path, runner=inline_runner, clock=self.clock)
        entry = reopened.get(queue_id)
        self.assertEqual(entry.attempts, 3)
        self.assertEqual(entry.states[0], RecipientState(
            "bob@remote.test", "failed", attempts=3, last_error="550 5.1.1 no such user",
            last_code=550, remote_mta="mx.remote.test", status_code="5.1.1"))

    def test_datetimes_are_stored_as_iso_text(self):
        """A change may set next_attempt to a datetime; it is stored as ISO 8601."""
        queue_id = self.enqueue()
        returned = self.queue.update(queue_id, lambda r: r.update(next_attempt=LATER))
        self.assertEqual(returned["next_attempt"], "2024-05-03T08:00:00+00:00")
        self.assertEqual(self.queue.get(queue_id).next_attempt, LATER)

    def test_update_leaves_no_temporary_file(self):
        """After an update the directory holds exactly the entry's two files."""
        queue_id = self.enqueue()
        self.queue.update(queue_id, lambda r: r.update(attempts=1))
        self.assertEqual(sorted(os.listdir(self.path)), [queue_id + ".eml", queue_id + ".json"])

    def test_update_of_a_missing_entry_fails(self):
        """NoSuchQueueEntry for an unknown id, InvalidQueueId for a malformed one."""
        self.assertRaises(NoSuchQueueEntry, self.queue.update,
                          "20240101000000-0000000000000000", lambda r: None)
        self.assertRaises(InvalidQueueId, self.queue.update, "../x", lambda r: None)

    def test_update_after_delete_does_not_bring_the_entry_back(self):
        """An update of a deleted entry fails and writes no envelope."""
        queue_id = self.enqueue()
        self.queue.delete(queue_id)
        self.assertRaises(NoSuchQueueEntry, self.queue.update, queue_id,
                          lambda r: r.update(attempts=1))
        self.assertEqual(os.listdir(self.path), [])

    def test_failing_change_writes_nothing(self):
        """If the change function raises, the envelope on disk is untouched."""
        queue_id = self.enqueue()
        before = self.stored(queue_id)

        def change(record):
            record["attempts"] = 99
            raise RuntimeError("relay bug")

        self.assertRaises(RuntimeError, self.queue.update, queue_id, change)
        self.assertEqual(self.stored(queue_id), before)

    def test_change_may_not_alter_the_id(self):
        """A change that rewrites the id is refused and nothing is written."""
        queue_id = self.enqueue()
        before = self.stored(queue_id)
        self.assertRaises(QueueError, self.queue.update, queue_id,
                          lambda r: r.update(id="other"))
        self.assertEqual(self.stored(queue_id), before)

    def test_unstorable_value_writes_nothing(self):
        """A value JSON cannot hold fails the update before anything is written."""
        queue_id = self.enqueue()
        before = self.stored(queue_id)
        self.assertRaises(TypeError, self.queue.update, queue_id,
                          lambda r: r.update(attempts=object()))
        self.assertEqual(self.stored(queue_id), before)

    def test_failed_write_keeps_the_old_envelope(self):
        """A disk error while writing leaves the previous envelope and no temporary file."""
        queue_id = self.enqueue()
        before = self.stored(queue_id)

        def failing_write(path, data):
            raise OSError("disk full")

        self.patch(queue_module, "_write_new_file", failing_write)
        self.assertRaises(OSError, self.queue.update, queue_id, lambda r: r.update(attempts=1))
        self.assertEqual(self.stored(queue_id), before)
        self.assertEqual(sorted(os.listdir(self.path)), [queue_id + ".eml", queue_id + ".json"])

    def test_leftover_temporary_file_does_not_block_updates(self):
        """A temporary envelope left by a crash is replaced by the next update."""
        queue_id = self.enqueue()
        with open(os.path.join(self.path, f".tmp-{queue_id}.json"), "wb") as f:
            f.write(b"{partial")
        self.queue.update(queue_id, lambda r: r.update(attempts=4))
        self.assertEqual(self.stored(queue_id)["attempts"], 4)

    def test_change_runs_under_the_entry_lock(self):
        """While a change runs, nobody else (e.g. another process) can lock the entry."""
        queue_id = self.enqueue()
        seen = []

        def change(record):
            fd = os.open(os.path.join(self.path, queue_id + ".eml"), os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                seen.append("acquired")
            except BlockingIOError:
                seen.append("blocked")
            finally:
                os.close(fd)

        self.queue.update(queue_id, change)
        self.assertEqual(seen, ["blocked"])

    def test_concurrent_updates_lose_nothing(self):
        """Read-modify-write from several threads at once: every increment survives."""
        queue_id = self.enqueue()

        def bump(record):
            record["attempts"] += 1

        def worker():
            for _ in range(25):
                self.queue.update(queue_id, bump)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(self.stored(queue_id)["attempts"], 100)

    def test_update_async_runs_through_the_runner(self):
        """update_async does its disk work in the runner and fires with the new envelope."""
        queue_id = self.enqueue()
        pending = []

        def deferred_runner(f, *args, **kwargs):
            d = defer.Deferred()
            pending.append((f, args, kwargs, d))
            return d

        queue = OutboundQueue(self.path, runner=deferred_runner, clock=self.clock)
        d = queue.update_async(queue_id, lambda r: r.update(attempts=7))
        self.assertNoResult(d)
        self.assertEqual(self.stored(queue_id)["attempts"], 0)
        f, args, kwargs, waiting = pending[0]
        waiting.callback(f(*args, **kwargs))
        self.assertEqual(self.successResultOf(d)["attempts"], 7)


class FinishTests(OperationsMixin, SynchronousTestCase):
    def test_finish_removes_the_entry(self):
        """finish() removes both files and answers True."""
        queue_id = self.enqueue()
        self.queue.update(queue_id, lambda r: r["recipients"][0].update(status="delivered"))
        self.assertTrue(self.queue.finish(queue_id))
        self.assertEqual(os.listdir(self.path), [])

    def test_finish_of_a_missing_entry_is_false(self):
        """finish() of an id with no entry answers False."""
        self.assertFalse(self.queue.finish("20240101000000-0000000000000000"))

    def test_delete_of_an_entry_without_message_file_removes_the_envelope(self):
        """A damaged entry (envelope, no .eml) can still be deleted."""
        queue_id = self.enqueue()
        os.unlink(os.path.join(self.path, queue_id + ".eml"))
        self.assertTrue(self.queue.delete(queue_id))
        self.assertEqual(os.listdir(self.path), [])


class FlushAndBounceTests(OperationsMixin, SynchronousTestCase):
    def postpone(self, queue_id):
        self.queue.update(queue_id, lambda r: r.update(next_attempt=LATER))

    def test_flush_one_makes_it_due_now(self):
        """flush(id) sets next_attempt to now for that entry only and answers 1."""
        first, second = self.enqueue(), self.enqueue()
        self.postpone(first)
        self.postpone(second)
        self.clock.advance(600)
        self.assertEqual(self.queue.flush(first), 1)
        self.assertEqual(self.queue.get(first).next_attempt, self.now())
        self.assertEqual(self.queue.get(second).next_attempt, LATER)

    def test_flush_all_makes_every_entry_due(self):
        """flush() sets next_attempt to now everywhere and answers the count."""
        ids = [self.enqueue() for _ in range(3)]
        for queue_id in ids:
            self.postpone(queue_id)
        self.clock.advance(600)
        self.assertEqual(self.queue.flush(), 3)
        self.assertEqual({self.queue.get(i).next_attempt for i in ids}, {self.now()})

    def test_flush_of_an_empty_queue_is_zero(self):
        """Nothing queued, nothing flushed."""
        self.assertEqual(self.queue.flush(), 0)

    def test_flush_of_an_unknown_id_fails(self):
        """flush(id) of a missing entry raises NoSuchQueueEntry."""
        self.assertRaises(NoSuchQueueEntry, self.queue.flush, "20240101000000-0000000000000000")

    def test_flush_wakes_the_relay(self):
        """flush() moves the wake-up stamp forward."""
        queue_id = self.enqueue()
        self.assertIsNone(self.queue.wakeup_stamp())
        self.queue.flush(queue_id)
        self.assertIsNotNone(self.queue.wakeup_stamp())

    def test_request_bounce_marks_the_entry_and_makes_it_due(self):
        """request_bounce sets bounce_requested, makes the entry due now and wakes the relay."""
        queue_id = self.enqueue()
        self.postpone(queue_id)
        self.clock.advance(60)
        self.queue.request_bounce(queue_id)
        entry = self.queue.get(queue_id)
        self.assertTrue(entry.bounce_requested)
        self.assertEqual(entry.next_attempt, self.now())
        self.assertIs(self.stored(queue_id)["bounce_requested"], True)
        self.assertIsNotNone(self.queue.wakeup_stamp())

    def test_request_bounce_of_an_unknown_id_fails(self):
        """request_bounce of a missing entry raises NoSuchQueueEntry and wakes nobody."""
        self.assertRaises(NoSuchQueueEntry, self.queue.request_bounce,
                          "20240101000000-0000000000000000")
        self.assertIsNone(self.queue.wakeup_stamp())


class WakeTests(OperationsMixin, SynchronousTestCase):
    def test_no_stamp_before_the_first_wake(self):
        """wakeup_stamp() is None until something wakes the relay."""
        self.assertIsNone(self.queue.wakeup_stamp())

    def test_every_wake_moves_the_stamp_forward(self):
        """Two wakes at the same clock time still give two different, growing stamps."""
        self.queue.wake()
        first = self.queue.wakeup_stamp()
        self.queue.wake()
        second = self.queue.wakeup_stamp()
        self.assertGreater(second, first)

    def test_stamp_is_seen_by_another_queue_object(self):
        """The relay's queue object sees a wake made through another one (the admin command)."""
        relay_view = OutboundQueue(self.path, runner=inline_runner, clock=self.clock)
        before = relay_view.wakeup_stamp()
        self.queue.wake()
        self.assertNotEqual(relay_view.wakeup_stamp(), before)

    def test_wakeup_file_is_not_an_entry_nor_an_orphan(self):
        """entries() and cleanup() leave .wakeup alone."""
        queue_id = self.enqueue()
        self.queue.wake()
        self.assertEqual([e.id for e in self.queue.entries()], [queue_id])
        self.assertEqual(self.queue.cleanup(), 0)
        self.assertTrue(os.path.exists(os.path.join(self.path, ".wakeup")))

    def test_hidden_files_are_ignored(self):
        """A hidden .eml or .json file is neither listed nor removed as an orphan."""
        for name in (".hidden.eml", ".hidden.json"):
            with open(os.path.join(self.path, name), "wb") as f:
                f.write(b"{}")
        self.assertEqual(self.queue.entries(), [])
        self.assertEqual(self.queue.cleanup(), 0)


class EntryViewTests(OperationsMixin, SynchronousTestCase):
    def test_pending_and_last_error(self):
        """pending counts pending recipients; last_error prefers a pending recipient's."""
        queue_id = self.enqueue(["a@remote.test", "b@remote.test", "c@remote.test"])

        def change(record):
            a, b, _ = record["recipients"]
            a.update(status="failed", last_error="550 gone")
            b.update(last_error="421 busy", attempts=2)

        self.queue.update(queue_id, change)
        entry = self.queue.get(queue_id)
        self.assertEqual(entry.pending, 2)
        self.assertEqual(entry.last_error, "421 busy")

    def test_no_error_before_any_attempt(self):
        """A fresh entry has every recipient pending and no last error."""
        entry = self.queue.get(self.enqueue(["a@remote.test", "b@remote.test"]))
        self.assertEqual((entry.pending, entry.last_error), (2, None))

    def test_odd_field_values_do_not_hide_an_entry(self):
        """A last_code the relay wrote as text still reads; garbage becomes None."""
        queue_id = self.enqueue()
        self.queue.update(queue_id, lambda r: r["recipients"][0].update(last_code="x"))
        self.assertIsNone(self.queue.get(queue_id).states[0].last_code)
        self.queue.update(queue_id, lambda r: r["recipients"][0].update(last_code="451"))
        self.assertEqual(self.queue.get(queue_id).states[0].last_code, 451)
