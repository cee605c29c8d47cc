"""A long FETCH to a client that stops reading waits for it instead of queueing everything."""

from twisted.trial.unittest import SynchronousTestCase

from .imap_fakes import Session, deliver

BODY = b"Subject: big\r\n\r\n" + b"x" * 10_000 + b"\r\n"


class SlowReaderTests(SynchronousTestCase):
    def setUp(self):
        self.session = Session()
        deliver(self.session.store, "alice", *[BODY] * 5)
        self.session.login()
        self.session.select()
        transport = self.session.transport
        original = transport.write

        def write(data):
            # The socket buffer fills after every message: the transport pauses the producer.
            original(data)
            if transport.producer is not None and b" FETCH (" in data:
                transport.producer.pauseProducing()

        transport.write = write

    def test_fetch_waits_for_the_reader_between_messages(self):
        out = self.session.command(b"F1 FETCH 1:5 (BODY.PEEK[])")
        # The session registers as producer after the first message; the second one fills
        # the buffer, and then it waits.
        self.assertEqual(out.count(b" FETCH ("), 2)
        self.assertNotIn(b"F1 OK", out)
        producer = self.session.transport.producer
        for expected in (1, 1):
            producer.resumeProducing()
            self.assertEqual(self.session.output().count(b" FETCH ("), expected)
        producer.resumeProducing()
        last = self.session.output()
        self.assertEqual(last.count(b" FETCH ("), 1)
        self.assertNotIn(b"F1 OK", last)  # the buffer is full again after the fifth
        producer.resumeProducing()
        self.assertIn(b"F1 OK", self.session.output())
        # The command is over: the session no longer produces for the transport.
        self.assertIsNone(self.session.transport.producer)

    def test_a_connection_lost_while_waiting_ends_the_fetch_quietly(self):
        self.session.command(b"F1 FETCH 1:5 (BODY.PEEK[])")
        self.session.lose()
        self.assertEqual(self.flushLoggedErrors(), [])
