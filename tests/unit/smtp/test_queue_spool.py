"""
Tests for mailsuite.smtp.queue: the durable outbound spool.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from mailsuite.interfaces import Envelope
from mailsuite.smtp import queue as queue_module
from mailsuite.smtp.queue import (
    InvalidQueueId,
    NoSuchQueueEntry,
    OutboundQueue,
    QueueEntry,
    QueueError,
    RecipientState,
)
from tests.unit.smtp.delivery_fakes import inline_runner, queue_dir

MESSAGE = b"Subject: hi\r\n\r\nhello\r\n"
RECEIVED_AT = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
INVALID_IDS = ["../x", "", "a/b", ".hidden", "x.json", "a\0b", "..", "/etc/passwd", "a" * 65]


def make_envelope(**overrides):
    values = dict(
        mail_from="alice@example.test",
        helo="client.example.net",
        client_address="192.0.2.7",
        authenticated_as="alice",
        id="tx1",
        received_at=RECEIVED_AT,
        mail_params={"BODY": "8BITMIME", "RET": None},
    )
    values.update(overrides)
    return Envelope(**values)


class QueueTestsMixin:
    def setUp(self):
        self.path = queue_dir(self)
        self.clock = task.Clock()
        self.clock.advance(RECEIVED_AT.timestamp() + 5)
        self.queue = self.open_queue()

    def open_queue(self):
        return OutboundQueue(self.path, runner=inline_runner, clock=self.clock)

    def enqueue(self, recipients=("bob@remote.test",), data=MESSAGE, **envelope):
        d = self.queue.enqueue(make_envelope(**envelope), list(recipients), data)
        return self.successResultOf(d)


class EnqueueTests(QueueTestsMixin, SynchronousTestCase):
    def test_enqueue_writes_message_and_envelope(self):
        """enqueue leaves exactly <id>.eml and <id>.json in the queue directory."""
        queue_id = self.enqueue()
        self.assertEqual(sorted(os.listdir(self.path)),
                         [queue_id + ".eml", queue_id + ".json"])

    def test_message_file_holds_exact_bytes(self):
        """The .eml file holds the message bytes unchanged."""
        queue_id = self.enqueue(data=b"X: \xff\r\n\r\nbare\nlf\r\n")
        with open(os.path.join(self.path, queue_id + ".eml"), "rb") as f:
            self.assertEqual(f.read(), b"X: \xff\r\n\r\nbare\nlf\r\n")

    def test_json_envelope_content(self):
        """The .json file is a JSON envelope with every field the relay needs."""
        queue_id = self.enqueue(recipients=["bob@remote.test", "carol@other.test"])
        with open(os.path.join(self.path, queue_id + ".json"), "rb") as f:
            record = json.load(f)
        self.assertEqual(record["id"], queue_id)
        self.assertEqual(record["mail_from"], "alice@example.test")
        self.assertEqual(record["recipients"], [
            {"address": "bob@remote.test", "status": "pending", "notify": None, "orcpt": None},
            {"address": "carol@other.test", "status": "pending", "notify": None,
             "orcpt": None},
        ])
        self.assertEqual(record["version"], queue_module.FORMAT_VERSION)
        self.assertIs(record["delay_warned"], False)
        self.assertIs(record["bounce_requested"], False)
        self.assertEqual(record["helo"], "client.example.net")
        self.assertEqual(record["client_address"], "192.0.2.7")
        self.assertEqual(record["authenticated_as"], "alice")
        self.assertEqual(record["received_at"], "2024-05-01T12:00:00+00:00")
        self.assertEqual(record["attempts"], 0)
        self.assertEqual(record["next_attempt"], "2024-05-01T12:00:05+00:00")
        self.assertEqual(record["mail_params"], {"BODY": "8BITMIME", "RET": None})
        self.assertEqual(record["size"], len(MESSAGE))
        self.assertEqual(record["envelope_id"], "tx1")

    def test_received_at_defaults_to_clock(self):
        """An envelope without received_at gets the queue clock's time as creation time."""
        queue_id = self.enqueue(received_at=None)
        self.assertEqual(self.queue.get(queue_id).created,
                         datetime(2024, 5, 1, 12, 0, 5, tzinfo=timezone.utc))

    def test_ids_are_unique_and_valid(self):
        """Two entries get different ids, each acceptable to validate_id."""
        first, second = self.enqueue(), self.enqueue()
        self.assertNotEqual(first, second)
        for queue_id in (first, second):
            self.assertEqual(queue_module.validate_id(queue_id), queue_id)

    def test_duplicate_recipients_are_queued_once(self):
        """A recipient listed twice appears once in the envelope."""
        queue_id = self.enqueue(recipients=["bob@remote.test", "bob@remote.test"])
        self.assertEqual(self.queue.get(queue_id).recipients, ("bob@remote.test",))

    def test_no_recipients_is_refused(self):
        """enqueue with an empty recipient list fails and writes nothing."""
        d = self.queue.enqueue(make_envelope(), [], MESSAGE)
        self.failureResultOf(d, QueueError)
        self.assertEqual(os.listdir(self.path), [])

    def test_failed_write_leaves_nothing(self):
        """A failure while writing the entry removes every file already written."""
        calls = []

        def failing_fsync(path):
            calls.append(path)
            if len(calls) == 2:
                raise OSError("disk full")

        self.patch(queue_module, "_fsync_directory", failing_fsync)
        d = self.queue.enqueue(make_envelope(), ["bob@remote.test"], MESSAGE)
        self.failureResultOf(d, OSError)
        self.assertEqual(os.listdir(self.path), [])
        self.assertEqual(self.queue.entries(), [])

    def test_runner_does_the_disk_work(self):
        """enqueue writes through the runner, so the files appear only when it runs."""
        pending = []

        def deferred_runner(f, *args, **kwargs):
            pending.append((f, args, kwargs))
            return inline_runner(lambda: None)

        queue = OutboundQueue(self.path, runner=deferred_runner, clock=self.clock)
        self.successResultOf(queue.enqueue(make_envelope(), ["bob@remote.test"], MESSAGE))
        self.assertEqual(os.listdir(self.path), [])
        f, args, kwargs = pending[0]
        f(*args, **kwargs)
        self.assertEqual(len(queue.entries()), 1)


class ReadTests(QueueTestsMixin, SynchronousTestCase):
    def test_entries_lists_entry_fields(self):
        """entries() reports id, sender, recipients and their states, size, times, flags."""
        queue_id = self.enqueue(recipients=["bob@remote.test"])
        self.assertEqual(self.queue.entries(), [QueueEntry(
            id=queue_id,
            sender="alice@example.test",
            recipients=("bob@remote.test",),
            size=len(MESSAGE),
            created=RECEIVED_AT,
            attempts=0,
            next_attempt=datetime(2024, 5, 1, 12, 0, 5, tzinfo=timezone.utc),
            states=(RecipientState("bob@remote.test"),),
            envelope_id="tx1",
            delay_warned=False,
            bounce_requested=False,
        )])

    def test_entries_oldest_first(self):
        """entries() sorts by creation time."""
        newer = self.enqueue(received_at=datetime(2024, 6, 1, tzinfo=timezone.utc))
        older = self.enqueue(received_at=datetime(2024, 4, 1, tzinfo=timezone.utc))
        self.assertEqual([e.id for e in self.queue.entries()], [older, newer])

    def test_entries_survive_a_new_queue_object(self):
        """A new OutboundQueue on the same path sees the entries and bytes written before."""
        queue_id = self.enqueue()
        reopened = self.open_queue()
        self.assertEqual([e.id for e in reopened.entries()], [queue_id])
        self.assertEqual(reopened.read(queue_id), MESSAGE)

    def test_get_unknown_id_is_none(self):
        """get() of a well-formed id with no entry answers None."""
        self.assertIsNone(self.queue.get("20240101000000-0000000000000000"))

    def test_read_unknown_id_fails(self):
        """read() of a missing entry raises NoSuchQueueEntry."""
        self.assertRaises(NoSuchQueueEntry, self.queue.read, "nothing-here")

    def test_damaged_envelope_is_skipped(self):
        """An unparsable .json file does not hide the other entries."""
        good = self.enqueue()
        with open(os.path.join(self.path, "broken.json"), "wb") as f:
            f.write(b"{not json")
        self.assertEqual([e.id for e in self.queue.entries()], [good])

    def test_envelope_naming_another_id_is_skipped(self):
        """A .json whose id field differs from its file name is not listed."""
        queue_id = self.enqueue()
        with open(os.path.join(self.path, queue_id + ".json"), "rb") as f:
            record = json.load(f)
        record["id"] = "other"
        with open(os.path.join(self.path, "copied.json"), "w") as f:
            json.dump(record, f)
        self.assertEqual([e.id for e in self.queue.entries()], [queue_id])

    def test_invalid_ids_refused(self):
        """Ids that could name a file outside the queue are refused by every helper."""
        for bad in INVALID_IDS:
            for method in (self.queue.get, self.queue.read, self.queue.delete,
                           self.queue.record):
                self.assertRaises(InvalidQueueId, method, bad)

    def test_traversal_id_never_reads_outside(self):
        """'../x' is refused even when a matching entry exists one level up."""
        parent = os.path.dirname(os.path.abspath(self.path))
        with open(os.path.join(parent, "x.json"), "w") as f:
            json.dump({"id": "../x"}, f)
        self.assertRaises(InvalidQueueId, self.queue.get, "../x")
        self.assertTrue(os.path.exists(os.path.join(parent, "x.json")))


class RemoveTests(QueueTestsMixin, SynchronousTestCase):
    def test_delete_removes_entry(self):
        """delete() answers True and removes both files of the entry."""
        queue_id = self.enqueue()
        self.assertTrue(self.queue.delete(queue_id))
        self.assertEqual(os.listdir(self.path), [])

    def test_delete_missing_is_false(self):
        """delete() of an id with no entry answers False."""
        self.assertFalse(self.queue.delete("nothing-here"))

    def test_delete_leaves_other_entries(self):
        """delete() removes only the named entry."""
        first, second = self.enqueue(), self.enqueue()
        self.queue.delete(first)
        self.assertEqual([e.id for e in self.queue.entries()], [second])

    def test_orphan_message_is_ignored(self):
        """An .eml without its .json (a crash between the two writes) is not an entry."""
        with open(os.path.join(self.path, "orphan.eml"), "wb") as f:
            f.write(MESSAGE)
        self.assertEqual(self.queue.entries(), [])
        self.assertRaises(NoSuchQueueEntry, self.queue.read, "orphan")

    def test_cleanup_removes_orphans_and_temporaries(self):
        """cleanup() removes orphan .eml and temporary files, and keeps complete entries."""
        queue_id = self.enqueue()
        for name in ("orphan.eml", ".tmp-abc.eml", ".tmp-abc.json"):
            with open(os.path.join(self.path, name), "wb") as f:
                f.write(MESSAGE)
        self.assertEqual(self.queue.cleanup(), 3)
        self.assertEqual(sorted(os.listdir(self.path)),
                         [queue_id + ".eml", queue_id + ".json"])

    def test_cleanup_keeps_young_orphans(self):
        """cleanup(min_age=...) leaves orphans younger than min_age alone."""
        orphan = os.path.join(self.path, "orphan.eml")
        with open(orphan, "wb") as f:
            f.write(MESSAGE)
        stamp = self.clock.seconds() - 10
        os.utime(orphan, (stamp, stamp))
        self.assertEqual(self.queue.cleanup(min_age=60), 0)
        self.assertTrue(os.path.exists(orphan))
        self.assertEqual(self.queue.cleanup(min_age=5), 1)

    def test_cleanup_skips_entries_being_written(self):
        """An entry whose write has not finished is not treated as an orphan."""
        pending = []

        def deferred_runner(f, *args, **kwargs):
            pending.append((f, args))
            return defer.Deferred()

        queue = OutboundQueue(self.path, runner=deferred_runner, clock=self.clock)
        queue.enqueue(make_envelope(), ["bob@remote.test"], MESSAGE)
        queue_id = pending[0][1][0]
        with open(os.path.join(self.path, queue_id + ".eml"), "wb") as out:
            out.write(MESSAGE)
        self.assertEqual(queue.cleanup(), 0)
        self.assertTrue(os.path.exists(os.path.join(self.path, queue_id + ".eml")))
