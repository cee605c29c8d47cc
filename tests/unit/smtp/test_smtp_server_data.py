"""Tests for message content in mailsuite.smtp.server: DATA, BDAT, delivery and Received."""

import re
from twisted.trial.unittest import SynchronousTestCase

from mailsuite.smtp.server import SMTPLimits
from tests.unit.smtp.test_smtp_support import Session, codes, final, refused, transaction


def _in_data(**options) -> Session:
    """A session that has just received 354 for one local recipient."""
    session = Session(**options)
    session.ehlo()
    lines = session.send(transaction("alice@example.test") + b"DATA\r\n")
    if codes(lines)[-1] != 354:
        raise RuntimeError(lines)
    return session


def _body(session: Session) -> bytes:
    """The delivered message without the Received header."""
    [delivery] = session.target.delivered
    return delivery.data.split(b"\r\n", 3)[3]


class DotTests(SynchronousTestCase):
    def test_leading_dots_unstuffed(self):
        """'..' at the start of a line arrives as '.'."""
        session = _in_data()
        session.send(b"..one\r\n.\r\n")
        self.assertEqual(_body(session), b".one\r\n")

    def test_dot_inside_line(self):
        """A '.' inside a line is kept as is."""
        session = _in_data()
        session.send(b"a . b\r\n.\r\n")
        self.assertEqual(_body(session), b"a . b\r\n")

    def test_end_marker_split_at_every_byte(self):
        """CRLF.CRLF split across two packets at any byte ends the data exactly once."""
        payload = b"text\r\n.\r\nNOOP\r\n"
        for split in range(1, len(payload)):
            with self.subTest(split=split):
                session = _in_data()
                lines = session.send(payload[:split]) + session.send(payload[split:])
                self.assertEqual(codes(lines), [250, 250])
                self.assertEqual(_body(session), b"text\r\n")

    def test_smuggling_variants_never_end_data(self):
        """\\n.\\n, \\r\\n.\\n, \\n.\\r\\n, \\r.\\r\\n keep the data open and refuse the message."""
        for variant in (b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n"):
            with self.subTest(variant=variant):
                session = _in_data()
                smuggled = (b"x" + variant + b"MAIL FROM:<evil@x.example>\r\n"
                            b"RCPT TO:<alice@example.test>\r\nDATA\r\nforged\r\n")
                self.assertEqual(session.send(smuggled), [])
                lines = session.send(b".\r\n")
                self.assertEqual(final(lines), ["554 5.6.0 Message refused: bare CR or LF"])
                self.assertEqual(len(session.target.deliveries), 1)
                self.assertEqual(session.target.delivered, [])


class ContentErrorTests(SynchronousTestCase):
    def test_bare_lf_refused(self):
        """A bare LF in the content refuses the message after end-of-data."""
        session = _in_data()
        lines = session.send(b"line one\nline two\r\n.\r\n")
        self.assertEqual(codes(lines), [554])
        self.assertEqual(session.target.delivered, [])
        self.assertTrue(session.target.deliveries[0].aborted)

    def test_bare_cr_refused(self):
        """A bare CR in the content refuses the message."""
        session = _in_data()
        self.assertEqual(codes(session.send(b"line\rone\r\n.\r\n")), [554])
        self.assertEqual(session.target.delivered, [])

    def test_long_line_never_returns_to_command_mode(self):
        """A 20,000-byte line refuses the message; what follows is never run as commands."""
        session = _in_data()
        lines = session.send(b"A" * 20000 + b"MAIL FROM:<evil@x.example>\r\n"
                             b"RCPT TO:<alice@example.test>\r\nDATA\r\nforged\r\n")
        self.assertEqual(lines, [])
        lines = session.send(b".\r\nNOOP\r\n")
        self.assertEqual(final(lines), ["500 5.5.2 Message line too long", "250 2.0.0 OK"])
        self.assertEqual(len(session.target.deliveries), 1)
        self.assertEqual(session.target.delivered, [])

    def test_long_line_in_pieces(self):
        """A long line sent over many packets is discarded and the session stays in DATA."""
        session = _in_data()
        for _ in range(5):
            self.assertEqual(session.send(b"B" * 5000), [])
        self.assertEqual(session.send(b"\r\nQUIT\r\n"), [])
        self.assertFalse(session.closed)
        self.assertEqual(codes(session.send(b".\r\n")), [500])

    def test_message_too_big(self):
        """A message over max_message_size is read to its end, then refused with 552 5.3.4."""
        session = _in_data(limits=SMTPLimits(max_message_size=1000))
        for _ in range(100):
            session.send(b"x" * 100 + b"\r\n")
        self.assertEqual(final(session.send(b".\r\n")), ["552 5.3.4 Message size exceeds fixed limit"])
        self.assertEqual(session.target.delivered, [])

    def test_transaction_reset_after_refusal(self):
        """After a refused message, RCPT needs a new MAIL."""
        session = _in_data()
        session.send(b"bad\nline\r\n.\r\n")
        self.assertEqual(codes(session.send(b"RCPT TO:<alice@example.test>\r\n")), [503])


class CommitTests(SynchronousTestCase):
    def test_250_only_after_commit(self):
        """The 250 for DATA is sent only when commit's Deferred fires."""
        session = _in_data()
        session.target.hold_commit = True
        self.assertEqual(session.send(b"x\r\n.\r\n"), [])
        session.target.deliveries[0].commit_deferred.callback(None)
        self.assertEqual(codes(session.take()), [250])

    def test_input_after_data_waits_for_commit(self):
        """Commands pipelined after the message wait until the commit has answered."""
        session = _in_data()
        session.target.hold_commit = True
        self.assertEqual(session.send(b"x\r\n.\r\nNOOP\r\nQUIT\r\n"), [])
        self.assertFalse(session.closed)
        session.target.deliveries[0].commit_deferred.callback(None)
        self.assertEqual(codes(session.take()), [250, 250, 221])

    def test_commit_failure_is_451(self):
        """An unexpected commit failure gives 451 4.3.0 and nothing is delivered."""
        session = _in_data()
        session.target.commit_error = OSError("disk full")
        lines = session.send(b"x\r\n.\r\n")
        self.assertEqual(final(lines), ["451 4.3.0 Temporary failure, please try again later"])
        self.assertEqual(session.target.delivered, [])
        self.assertTrue(session.target.deliveries[0].aborted)
        self.flushLoggedErrors(OSError)

    def test_commit_delivery_error_reply(self):
        """A DeliveryError from commit becomes the reply."""
        session = _in_data()
        session.target.commit_error = refused(552, "5.2.2", "Mailbox full")
        self.assertEqual(final(session.send(b"x\r\n.\r\n")), ["552 5.2.2 Mailbox full"])

    def test_body_failure_is_451(self):
        """A failure from body() gives 451 and no commit."""
        session = _in_data()
        session.target.body_error = RuntimeError("boom")
        self.assertEqual(codes(session.send(b"x\r\n.\r\n")), [451])
        self.assertIsNone(session.target.deliveries[0].commit_deferred)
        self.flushLoggedErrors(RuntimeError)

    def test_disconnect_during_commit_does_not_abort(self):
        """A commit in flight is left to finish when the client goes away."""
        session = _in_data()
        session.target.hold_commit = True
        session.send(b"x\r\n.\r\n")
        session.protocol.connectionLost(None)
        self.assertFalse(session.target.deliveries[0].aborted)


class ReceivedHeaderTests(SynchronousTestCase):
    def test_received_header_one_recipient(self):
        """One recipient: from/by/with/id, 'for <rcpt>' and an RFC 5322 date."""
        session = _in_data(start_time=1_700_000_000)
        session.send(b"x\r\n.\r\n")
        [delivery] = session.target.delivered
        header, _ = delivery.data.split(b"\r\nx\r\n")
        envelope_id = delivery.envelope.id
        self.assertEqual(
            header.decode(),
            "Received: from client.example.net (unknown [192.0.2.10])\r\n"
            f"\tby mx.example.test (mailsuite) with ESMTP id {envelope_id}\r\n"
            "\tfor <alice@example.test>; Tue, 14 Nov 2023 22:13:20 +0000",
        )

    def test_received_header_several_recipients(self):
        """With several recipients there is no 'for' clause."""
        session = Session()
        session.ehlo()
        session.send(transaction("alice@example.test", "bob@example.test") + b"DATA\r\nx\r\n.\r\n")
        data = session.target.delivered[0].data.decode()
        self.assertNotIn("for <", data)
        self.assertRegex(data.split("\r\n")[1], r"^\tby mx\.example\.test \(mailsuite\) with ESMTP id \w+; ")

    def test_received_header_protocol_after_auth(self):
        """An authenticated plaintext session is recorded as ESMTPA."""
        session = Session(allow_plaintext_auth=True)
        session.login()
        session.send(transaction("bob@remote.example", sender="alice@example.test")
                     + b"DATA\r\nx\r\n.\r\n")
        data = session.target.delivered[0].data.decode()
        self.assertTrue(re.search(r"with ESMTPA id", data))
        self.assertEqual(session.target.delivered[0].envelope.authenticated_as, "alice")


class BdatTests(SynchronousTestCase):
    def _ready(self, **options) -> Session:
        session = Session(**options)
        session.ehlo()
        session.send(transaction("alice@example.test"))
        return session

    def test_chunks_and_last(self):
        """BDAT chunks get 250 each; LAST delivers their concatenation, dots untouched."""
        session = self._ready()
        lines = session.send(b"BDAT 6\r\nab\r\n.\r")
        self.assertEqual(final(lines), ["250 2.0.0 6 octets received"])
        lines = session.send(b"BDAT 3 LAST\r\n\ncd")
        self.assertEqual(codes(lines), [250])
        self.assertEqual(_body(session), b"ab\r\n.\r\ncd")

    def test_chunk_split_across_packets(self):
        """A chunk's octets may arrive over several packets; what follows is a command."""
        session = self._ready()
        self.assertEqual(session.send(b"BDAT 10 LAST\r\n01234"), [])
        self.assertEqual(codes(session.send(b"56789NOOP\r\n")), [250, 250])
        self.assertEqual(_body(session), b"0123456789")

    def test_bdat_zero_last(self):
        """BDAT 0 LAST ends a chunked message."""
        session = self._ready()
        self.assertEqual(codes(session.send(b"BDAT 4\r\nabcdBDAT 0 LAST\r\n")), [250, 250])
        self.assertEqual(_body(session), b"abcd")

    def test_data_after_bdat(self):
        """DATA after a BDAT chunk gives 503."""
        session = self._ready()
        self.assertEqual(codes(session.send(b"BDAT 1\r\nxDATA\r\n")), [250, 503])

    def test_refused_bdat_still_consumes_its_octets(self):
        """BDAT without MAIL gives 503, and its octets are never run as commands."""
        session = Session()
        session.ehlo()
        lines = session.send(b"BDAT 6\r\nQUIT\r\nNOOP\r\n")
        self.assertEqual(codes(lines), [503, 250])
        self.assertFalse(session.closed)

    def test_bdat_total_over_size(self):
        """Chunks whose total exceeds the limit give 552 5.3.4 and no delivery."""
        session = self._ready(limits=SMTPLimits(max_message_size=10))
        lines = session.send(b"BDAT 6\r\n123456BDAT 6\r\n123456BDAT 0 LAST\r\n")
        self.assertEqual(codes(lines), [250, 552, 503])
        self.assertEqual(session.target.delivered, [])

    def test_binarymime_requires_bdat(self):
        """BODY=BINARYMIME with DATA gives 503; with BDAT it is delivered."""
        session = Session()
        session.ehlo()
        lines = session.send(b"MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n"
                             b"RCPT TO:<alice@example.test>\r\nDATA\r\nBDAT 2 LAST\r\n\x00\xff")
        self.assertEqual(codes(lines), [250, 250, 503, 250])
        self.assertEqual(_body(session), b"\x00\xff")
