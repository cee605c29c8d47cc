"""
The relay: routing queued mail, retrying with backoff, bouncing with RFC 3464 reports.

A fake SMTP ``send`` stands for the network; the queue is the real OutboundQueue on a
temporary directory; time is a Clock.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import replace
from datetime import datetime, timezone

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from mailsuite.config import RelayConfig
from mailsuite.interfaces import Account, Envelope
from mailsuite.smtp.client import RecipientResult, SessionResult
from mailsuite.smtp.delivery import Router
from mailsuite.smtp.queue import OutboundQueue
from mailsuite.smtp.relay import Relay
from mailsuite.testing.resolver import FakeResolver
from tests.unit.smtp.delivery_fakes import (
    FakeDirectory,
    FakeStore,
    inline_runner,
    make_account,
    queue_dir,
)

MESSAGE = b"From: alice@example.test\r\nSubject: hello\r\nMessage-ID: <m1@example.test>\r\n\r\nbody\r\n"
START = datetime(2026, 5, 1, tzinfo=timezone.utc).timestamp()


class FakeSend:
    """Records each session; answers every recipient with the next scripted reply."""

    def __init__(self):
        self.calls = []
        # host -> list of replies, one per session: (code, enhanced, text, stage)
        self.script: dict[str, list[tuple[int, str, str, str]]] = {}
        self.default = (250, "2.0.0", "ok", "data")

    def __call__(self, reactor, host, port, messages, **options):
        self.calls.append({"host": host, "port": port, "messages": messages, **options})
        replies = self.script.get(host)
        code, enhanced, text, stage = replies.pop(0) if replies else self.default
        results = [[RecipientResult(address=address, code=code, enhanced=enhanced, text=text,
                                    stage=stage) for address, _ in message.recipients]
                   for message in messages]
        return defer.succeed(SessionResult(host=host, tls=False, results=results))


class RelayTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(START)
        self.directory = FakeDirectory(domains=("example.test",))
        self.alice = self.directory.add(make_account("alice"))
        self.store = FakeStore()
        self.queue = OutboundQueue(queue_dir(self), runner=inline_runner, clock=self.clock)
        self.resolver = FakeResolver()
        self.resolver.mx("remote.test", (10, "mx1.remote.test"), (20, "mx2.remote.test"))
        self.resolver.a("mx1.remote.test", "192.0.2.1")
        self.resolver.a("mx2.remote.test", "192.0.2.2")
        self.send = FakeSend()
        self.router = Router(directory=self.directory, store=self.store, queue=self.queue,
                             own_names=("mx.example.test",))
        self.make_relay(RelayConfig())

    def make_relay(self, config):
        self.config = config
        self.relay = Relay(queue=self.queue, router=self.router, resolver=self.resolver,
                           directory=self.directory, config=config,
                           hostname="mx.example.test", reactor=self.clock,
                           runner=inline_runner, send=self.send)
        self.router.on_queued = self.relay.queued

    def submit(self, recipients, *, sender="alice@example.test", params=None, mail_params=None):
        envelope = Envelope(mail_from=sender, mail_params=dict(mail_params or {}),
                            received_at=datetime.fromtimestamp(self.clock.seconds(),
                                                               tz=timezone.utc))
        delivery = self.router.start(envelope)
        for address in recipients:
            self.successResultOf(delivery.add_recipient(address, (params or {}).get(address)))
        self.successResultOf(delivery.body(MESSAGE))
        self.successResultOf(delivery.commit())
        return delivery.queue_id

    def start(self):
        self.relay.startService()
        self.addCleanup(self.relay.stopService)

    def reports(self):
        """The delivery reports that reached alice's INBOX, parsed."""
        return [email.message_from_bytes(m, policy=email.policy.default)
                for m in self.store.inbox("alice")]

    def status_fields(self, report):
        part = next(p for p in report.walk()
                    if p.get_content_type() == "message/delivery-status")
        text = part.as_bytes().decode("utf-8", "replace")
        return text

    # ------------------------------------------------------------------ delivery

    def test_delivers_to_the_preferred_mx_and_removes_the_entry(self):
        self.start()
        queue_id = self.submit(["bob@remote.test"])
        [call] = self.send.calls
        self.assertEqual((call["host"], call["port"]), ("192.0.2.1", 25))
        self.assertEqual(call["tls_hostname"], "mx1.remote.test")
        [message] = call["messages"]
        self.assertEqual(message.data, MESSAGE)
        self.assertEqual(message.mail_from, "alice@example.test")
        self.assertIsNone(self.queue.get(queue_id))
        self.assertEqual(self.reports(), [])

    def test_recipients_of_one_domain_share_one_transaction(self):
        self.start()
        self.submit(["bob@remote.test", "carol@remote.test"])
        [call] = self.send.calls
        self.assertEqual([a for a, _ in call["messages"][0].recipients],
                         ["bob@remote.test", "carol@remote.test"])

    def test_a_refused_connection_moves_on_to_the_next_mx(self):
        self.send.script["192.0.2.1"] = [(0, "", "connection refused", "connect")]
        self.start()
        queue_id = self.submit(["bob@remote.test"])
        self.assertEqual([c["host"] for c in self.send.calls], ["192.0.2.1", "192.0.2.2"])
        self.assertIsNone(self.queue.get(queue_id))

    def test_a_temporary_failure_is_retried_with_growing_delays(self):
        self.send.script["192.0.2.1"] = [(451, "4.3.0", "try later", "rcpt")] * 3
        self.start()
        queue_id = self.submit(["bob@remote.test"])
        self.assertEqual(len(self.send.calls), 1)
        record = self.queue.record(queue_id)
        self.assertEqual(record["recipients"][0]["status"], "pending")
        self.assertEqual(record["recipients"][0]["last_code"], 451)
        self.clock.advance(self.config.retry_min - 1)
        self.assertEqual(len(self.send.calls), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.send.calls), 2)
        # the second delay is twice the first
        self.clock.advance(self.config.retry_min * 2 - 1)
        self.assertEqual(len(self.send.calls), 2)
        self.clock.advance(1)
        self.assertEqual(len(self.send.calls), 3)
        self.clock.advance(self.config.retry_min * 4)
        self.assertEqual(len(self.send.calls), 4)
        self.assertIsNone(self.queue.get(queue_id))  # the fourth attempt succeeded

    def test_per_domain_route_skips_the_mx_lookup(self):
        self.make_relay(replace(RelayConfig(), routes={"remote.test": "127.0.0.1:2526"}))
        self.start()
        self.submit(["bob@remote.test"])
        [call] = self.send.calls
        self.assertEqual((call["host"], call["port"]), ("127.0.0.1", 2526))
        self.assertNotIn(("remote.test", 15), self.resolver.queries)

    def test_smart_host_gets_everything_with_its_credentials(self):
        self.resolver.a("smart.example.test", "192.0.2.9")
        self.make_relay(replace(RelayConfig(), relayhost="smart.example.test:587",
                                relayhost_username="u", relayhost_password="p"))
        self.start()
        self.submit(["bob@remote.test", "x@elsewhere.test"])
        [call] = self.send.calls
        self.assertEqual((call["host"], call["port"], call["auth"]), ("192.0.2.9", 587, ("u", "p")))
        self.assertEqual(len(call["messages"][0].recipients), 2)

    def test_user_homed_on_another_node_is_relayed_there(self):
        self.directory.add(Account(uid="dave", mail="dave@example.test",
                                   dn="uid=dave,ou=people,dc=example,dc=test",
                                   addresses=frozenset({"dave@example.test"}),
                                   mail_host="node2.example.test"))
        self.resolver.a("node2.example.test", "192.0.2.20")
        self.start()
        self.submit(["dave@example.test"])
        [call] = self.send.calls
        self.assertEqual((call["host"], call["port"]), ("192.0.2.20", 25))
        self.assertEqual(self.store.inbox("dave"), [])

    def test_dsn_parameters_travel_to_the_next_hop(self):
        self.start()
        self.submit(["bob@remote.test"],
                    params={"bob@remote.test": {"NOTIFY": "FAILURE", "ORCPT": "rfc822;bob@remote.test"}},
                    mail_params={"RET": "HDRS", "ENVID": "abc"})
        [call] = self.send.calls
        [message] = call["messages"]
        self.assertEqual(message.recipients[0][1],
                         {"NOTIFY": "FAILURE", "ORCPT": "rfc822;bob@remote.test"})
        self.assertEqual(message.mail_params, {"RET": "HDRS", "ENVID": "abc"})

    # ------------------------------------------------------------------ bounces

    def test_a_permanent_failure_bounces_at_once_with_a_report(self):
        self.send.script["192.0.2.1"] = [(550, "5.1.1", "no such user", "rcpt")]
        self.start()
        queue_id = self.submit(["bob@remote.test"])
        self.assertIsNone(self.queue.get(queue_id))
        [report] = self.reports()
        self.assertEqual(report.get_content_type(), "multipart/report")
        self.assertEqual(report.get_param("report-type"), "delivery-status")
        fields = self.status_fields(report)
        self.assertIn("Final-Recipient: rfc822; bob@remote.test", fields)
        self.assertIn("Action: failed", fields)
        self.assertIn("Status: 5.1.1", fields)
        self.assertIn("no such user", fields)
        self.assertIn("mx1.remote.test", fields)

    def test_null_mx_bounces_without_any_connection(self):
        self.resolver.mx("nomail.test", (0, ""))
        self.start()
        self.submit(["bob@nomail.test"])
        self.assertEqual(self.send.calls, [])
        [report] = self.reports()
        self.assertIn("Status: 5.1.10", self.status_fields(report))

    def test_a_bounce_is_never_sent_to_the_null_sender(self):
        self.send.script["192.0.2.1"] = [(550, "5.1.1", "no such user", "rcpt")]
        self.start()
        queue_id = self.submit(["bob@remote.test"], sender="")
        self.assertIsNone(self.queue.get(queue_id))
        self.assertEqual(self.store.stored(), 0)
        self.assertEqual(len(self.send.calls), 1)  # nothing sent anywhere for the bounce

    def test_notify_never_suppresses_the_report(self):
        self.send.script["192.0.2.1"] = [(550, "5.1.1", "no such user", "rcpt")]
        self.start()
        self.submit(["bob@remote.test"], params={"bob@remote.test": {"NOTIFY": "NEVER"}})
        self.assertEqual(self.reports(), [])

    def test_a_remote_sender_gets_its_bounce_through_the_queue(self):
        self.send.script["192.0.2.1"] = [(550, "5.1.1", "no such user", "rcpt")]
        self.resolver.mx("sender.test", (10, "mx.sender.test"))
        self.resolver.a("mx.sender.test", "192.0.2.50")
        self.start()
        self.submit(["bob@remote.test"], sender="someone@sender.test")
        bounce = self.send.calls[-1]
        self.assertEqual(bounce["host"], "192.0.2.50")
        [message] = bounce["messages"]
        self.assertEqual(message.mail_from, "")
        self.assertEqual([a for a, _ in message.recipients], ["someone@sender.test"])
        self.assertIn(b"multipart/report", message.data)

    def test_unreachable_destination_warns_once_then_bounces_when_expired(self):
        self.send.script["192.0.2.1"] = [(0, "", "connection refused", "connect")] * 1000
        self.send.script["192.0.2.2"] = [(0, "", "connection refused", "connect")] * 1000
        config = replace(RelayConfig(), queue_lifetime=86400.0, delay_warning=4 * 3600.0)
        self.make_relay(config)
        self.start()
        queue_id = self.submit(["bob@remote.test"])
        self.clock.advance(4 * 3600)
        self.clock.pump([config.retry_max] * 5)
        reports = self.reports()
        self.assertEqual(len(reports), 1)
        self.assertIn("Action: delayed", self.status_fields(reports[0]))
        self.assertIsNotNone(self.queue.get(queue_id))
        self.clock.pump([config.retry_max] * 30)
        self.assertIsNone(self.queue.get(queue_id))
        reports = self.reports()
        self.assertEqual(len(reports), 2)
        fields = self.status_fields(reports[1])
        self.assertIn("Action: failed", fields)
        self.assertIn("Status: 4.4.7", fields)
        # no attempt after the lifetime ended
        attempts = len(self.send.calls)
        self.clock.pump([config.retry_max] * 5)
        self.assertEqual(len(self.send.calls), attempts)

    def test_administrator_bounce_and_flush_reach_the_running_relay(self):
        self.send.script["192.0.2.1"] = [(451, "4.3.0", "later", "rcpt")] * 10
        self.start()
        first = self.submit(["bob@remote.test"])
        second = self.submit(["carol@remote.test"])
        self.assertEqual(len(self.send.calls), 2)
        self.queue.flush(first)
        self.clock.advance(2)
        self.assertEqual(len(self.send.calls), 3)
        self.queue.request_bounce(second)
        self.clock.advance(2)
        self.assertIsNone(self.queue.get(second))
        [report] = self.reports()
        self.assertIn("carol@remote.test", self.status_fields(report))

    def test_entries_already_queued_are_delivered_after_a_restart(self):
        queue_id = self.submit(["bob@remote.test"])  # the relay is not running yet
        self.assertEqual(self.send.calls, [])
        self.start()
        self.assertEqual(len(self.send.calls), 1)
        self.assertIsNone(self.queue.get(queue_id))


    def test_an_attempt_that_breaks_is_retried(self):
        calls = []

        def broken(*args, **kwargs):
            calls.append(args)
            if len(calls) == 1:
                raise RuntimeError("unexpected")
            return FakeSend.__call__(self.send, *args, **kwargs)

        self.relay.send = broken
        self.start()
        queue_id = self.submit(["bob@remote.test"])
        self.assertEqual(len(self.flushLoggedErrors(defer.FirstError)), 1)
        self.assertIsNotNone(self.queue.get(queue_id))
        self.clock.advance(self.config.retry_min)
        self.assertEqual(len(calls), 2)
        self.assertIsNone(self.queue.get(queue_id))


class ShutdownTests(SynchronousTestCase):
    """Stopping the relay waits for deliveries under way, but only for the grace time."""

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(START)
        self.directory = FakeDirectory(domains=("example.test",))
        self.directory.add(make_account("alice"))
        self.queue = OutboundQueue(queue_dir(self), runner=inline_runner, clock=self.clock)
        self.resolver = FakeResolver()
        self.resolver.a("slow.test", "192.0.2.1")
        self.pending = defer.Deferred()
        router = Router(directory=self.directory, store=FakeStore(), queue=self.queue)
        self.relay = Relay(queue=self.queue, router=router, resolver=self.resolver,
                           directory=self.directory, config=RelayConfig(),
                           hostname="mx.example.test", reactor=self.clock,
                           runner=inline_runner, send=lambda *a, **k: self.pending)
        router.on_queued = self.relay.queued
        self.relay.startService()
        delivery = router.start(Envelope(mail_from="alice@example.test"))
        self.successResultOf(delivery.add_recipient("bob@slow.test"))
        self.successResultOf(delivery.body(MESSAGE))
        self.successResultOf(delivery.commit())
        self.queue_id = delivery.queue_id
        self.assertTrue(self.relay.busy())

    def test_a_delivery_that_finishes_in_time_is_waited_for(self):
        stopped = self.relay.stopService()
        self.assertNoResult(stopped)
        self.pending.callback(SessionResult(host="192.0.2.1", tls=False, results=[[
            RecipientResult(address="bob@slow.test", code=250, enhanced="2.0.0", text="ok",
                            stage="data")]]))
        self.successResultOf(stopped)
        self.assertIsNone(self.queue.get(self.queue_id))

    def test_a_hanging_delivery_is_left_queued_after_the_grace_time(self):
        from mailsuite.smtp.relay import SHUTDOWN_GRACE

        stopped = self.relay.stopService()
        self.clock.advance(SHUTDOWN_GRACE - 0.5)
        self.assertNoResult(stopped)
        self.clock.advance(1)
        self.successResultOf(stopped)
        self.assertIsNotNone(self.queue.get(self.queue_id))

