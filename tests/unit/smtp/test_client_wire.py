"""Tests for mailsuite.smtp.client_wire: reply parsing, EHLO keywords, command lines, the DATA encoder."""

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mailsuite.smtp.client_wire import (
    MAX_REPLY_LINE,
    DataEncoder,
    EnvelopeError,
    Extensions,
    ReplyError,
    ReplyParser,
    ServerReply,
    mail_command,
    rcpt_command,
)
from mailsuite.smtp.data import DataReader


def parse(data: bytes) -> list[ServerReply]:
    return ReplyParser().feed(data)


class ReplyParserTests(SynchronousTestCase):
    def test_single_line(self):
        """A one-line reply gives its code, enhanced code and text."""
        self.assertEqual(parse(b"250 2.1.5 Recipient OK\r\n"), [ServerReply(250, "2.1.5", ("Recipient OK",))])

    def test_without_enhanced_code(self):
        """A reply without an enhanced code has enhanced == ""."""
        [reply] = parse(b"220 mx.example.net ESMTP\r\n")
        self.assertEqual((reply.code, reply.enhanced, reply.text), (220, "", "mx.example.net ESMTP"))

    def test_code_alone(self):
        """RFC 5321 §4.2: a reply may be the code alone."""
        self.assertEqual(parse(b"250\r\n"), [ServerReply(250, "", ("",))])

    def test_multiline(self):
        """Lines with "-" continue the reply; the line with " " ends it."""
        [reply] = parse(b"250-mx.example.net\r\n250-PIPELINING\r\n250 SIZE 1000\r\n")
        self.assertEqual(reply.lines, ("mx.example.net", "PIPELINING", "SIZE 1000"))

    def test_enhanced_code_on_every_line_is_taken_off(self):
        """RFC 2034 §4: the enhanced code repeats on each line and is not part of the text."""
        [reply] = parse(b"550-5.7.1 first\r\n550 5.7.1 second\r\n")
        self.assertEqual((reply.enhanced, reply.text), ("5.7.1", "first second"))

    def test_enhanced_code_of_another_class_is_text(self):
        """RFC 3463 §3.1: "250 5.0.0" does not carry an enhanced code."""
        [reply] = parse(b"250 5.0.0 odd\r\n")
        self.assertEqual((reply.enhanced, reply.text), ("", "5.0.0 odd"))

    def test_three_digit_enhanced_parts(self):
        """Subject and detail may have up to three digits (RFC 3463 §2)."""
        [reply] = parse(b"550 5.7.123 Blocked\r\n")
        self.assertEqual((reply.enhanced, reply.text), ("5.7.123", "Blocked"))

    def test_bare_lf_line_ends(self):
        """Replies ended by a bare LF are still read."""
        self.assertEqual([r.code for r in parse(b"220 a\n250 b\n")], [220, 250])

    def test_split_anywhere(self):
        """A reply split into single bytes is reassembled once complete."""
        parser = ReplyParser()
        data = b"250-a\r\n250 2.0.0 b\r\n"
        out = []
        for byte in data:
            out += parser.feed(bytes([byte]))
        self.assertEqual(out, parse(data))

    def test_control_characters_become_spaces(self):
        """Control characters and invalid UTF-8 in a text cannot reach results or logs."""
        [reply] = parse(b"550 bad\x1b[31m \xff end\r\n")
        self.assertEqual(reply.text, "bad [31m \ufffd end")

    def test_garbage(self):
        """Lines that are not replies raise ReplyError."""
        for line in [b"hello\r\n", b"25\r\n", b"2500 x\r\n", b"199 x\r\n", b"260 x\r\n", b"250x\r\n",
                     b"650 x\r\n", b" 250 x\r\n"]:
            with self.assertRaises(ReplyError, msg=line):
                parse(line)

    def test_code_change_within_a_reply(self):
        """A multiline reply whose code changes raises ReplyError."""
        with self.assertRaises(ReplyError):
            parse(b"250-a\r\n251 b\r\n")

    def test_overlong_line_without_end(self):
        """More than MAX_REPLY_LINE bytes with no line end raise ReplyError."""
        with self.assertRaises(ReplyError):
            ReplyParser().feed(b"250 " + b"x" * MAX_REPLY_LINE)

    def test_overlong_complete_line(self):
        """A complete line over MAX_REPLY_LINE raises ReplyError."""
        with self.assertRaises(ReplyError):
            ReplyParser().feed(b"250 " + b"x" * MAX_REPLY_LINE + b"\r\n")

    def test_endless_multiline_reply(self):
        """A multiline reply that never ends is cut off at MAX_REPLY_SIZE."""
        parser = ReplyParser()
        with self.assertRaises(ReplyError):
            for _ in range(100):
                parser.feed(b"250-" + b"x" * 60000 + b"\r\n")

    def test_discard(self):
        """discard() forgets a partial reply."""
        parser = ReplyParser()
        parser.feed(b"250-injected\r\n250 AU")
        self.assertTrue(parser.pending)
        parser.discard()
        self.assertEqual(parser.pending, 0)
        self.assertEqual(parser.feed(b"220 fresh\r\n"), [ServerReply(220, "", ("fresh",))])


class ExtensionsTests(SynchronousTestCase):
    def test_keywords(self):
        """EHLO keywords are upper-cased with their parameters; the first line is the name."""
        [reply] = parse(b"250-mx\r\n250-pipelining\r\n250-SIZE 1000\r\n250 AUTH PLAIN login\r\n")
        extensions = Extensions.from_reply(reply)
        self.assertIn("PIPELINING", extensions)
        self.assertNotIn("MX", extensions)
        self.assertEqual(extensions.size_limit, 1000)
        self.assertEqual(extensions.auth_mechanisms, frozenset({"PLAIN", "LOGIN"}))

    def test_size_without_limit(self):
        """SIZE with no number or 0 means no limit."""
        for line in (b"250 SIZE\r\n", b"250 SIZE 0\r\n", b"250 SIZE lots\r\n"):
            self.assertIsNone(Extensions.from_reply(parse(b"250-mx\r\n" + line)[0]).size_limit)

    def test_helo_session_has_none(self):
        """Extensions.none() announces nothing."""
        self.assertNotIn("PIPELINING", Extensions.none())


class CommandTests(SynchronousTestCase):
    def test_mail_with_params(self):
        """MAIL FROM with keyword and keyword=value parameters."""
        line = mail_command("a@example.test", [("SIZE", "10"), ("SMTPUTF8", None)], utf8=False)
        self.assertEqual(line, b"MAIL FROM:<a@example.test> SIZE=10 SMTPUTF8\r\n")

    def test_null_sender(self):
        """The null reverse-path is <>."""
        self.assertEqual(mail_command("", [], utf8=False), b"MAIL FROM:<>\r\n")

    def test_rcpt_utf8(self):
        """With utf8, addresses and values are UTF-8."""
        line = rcpt_command("jörg@bücher.example", [("ORCPT", "utf-8;jörg@bücher.example")], utf8=True)
        self.assertEqual(line, "RCPT TO:<jörg@bücher.example> ORCPT=utf-8;jörg@bücher.example\r\n".encode())

    def test_refusals(self):
        """Line breaks, empty recipients, non-ASCII without utf8 and bad parameters raise EnvelopeError."""
        bad = [
            lambda: rcpt_command("a@b\r\nDATA", [], utf8=False),
            lambda: rcpt_command("", [], utf8=False),
            lambda: rcpt_command("jörg@example.net", [], utf8=False),
            lambda: mail_command("a@b", [("NOTIFY", "a b")], utf8=False),
            lambda: mail_command("a@b", [("X=Y", None)], utf8=False),
            lambda: mail_command("a@b", [("ENVID", "a=b")], utf8=False),
            lambda: mail_command("a@b", [("ENVID", "ü")], utf8=False),
        ]
        for make in bad:
            with self.assertRaises(EnvelopeError):
                make()


def encode(chunks: list[bytes]) -> bytes:
    encoder = DataEncoder()
    out = b"".join(encoder.feed(chunk) for chunk in chunks) + encoder.finish()
    assert encoder.size == len(out)
    return out


def normalised(data: bytes) -> bytes:
    """The content with every line end made CRLF and the last line ended."""
    text = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    if text and not text.endswith(b"\r\n"):
        text += b"\r\n"
    return text


def unstuffed(wire: bytes) -> bytes:
    """Undo DATA encoding as a receiver does; fails on a lone "." before the end or bare CR/LF."""
    assert wire.endswith(b".\r\n") and (wire == b".\r\n" or wire.endswith(b"\r\n.\r\n"))
    body = wire[:-3]
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", body) is None, "bare CR or LF on the wire"
    lines = body.split(b"\r\n")[:-1] if body else []
    assert b"." not in lines, "a lone dot inside the content"
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    pieces, start = [], 0
    for point in points + [len(data)]:
        pieces.append(data[start:point])
        start = point
    return pieces


class DataEncoderTests(SynchronousTestCase):
    def test_examples(self):
        """Line ends become CRLF, leading dots are doubled, the last line is ended."""
        cases = {
            b"": b".\r\n",
            b"a": b"a\r\n.\r\n",
            b"a\r\n": b"a\r\n.\r\n",
            b"a\nb\n": b"a\r\nb\r\n.\r\n",
            b"a\rb": b"a\r\nb\r\n.\r\n",
            b"a\r\r\nb": b"a\r\n\r\nb\r\n.\r\n",
            b".": b"..\r\n.\r\n",
            b".\r\n": b"..\r\n.\r\n",
            b"..\r\n": b"...\r\n.\r\n",
            b"a\r\n.\r\nb": b"a\r\n..\r\nb\r\n.\r\n",
            b"a\n.\nb": b"a\r\n..\r\nb\r\n.\r\n",
            b"a\r.b": b"a\r\n..b\r\n.\r\n",
            b"x.y\r\n": b"x.y\r\n.\r\n",
            b"\xff\xfe\x00": b"\xff\xfe\x00\r\n.\r\n",
        }
        for data, wire in cases.items():
            self.assertEqual(encode([data]), wire, data)

    def test_crlf_split_between_chunks(self):
        """A CR at the end of one chunk and its LF at the start of the next make one line end."""
        self.assertEqual(encode([b"a\r", b"\nb"]), b"a\r\nb\r\n.\r\n")
        self.assertEqual(encode([b"a\r", b"", b"\n", b"b"]), b"a\r\nb\r\n.\r\n")
        self.assertEqual(encode([b"a\r", b"\r\n"]), b"a\r\n\r\n.\r\n")

    def test_dot_at_the_start_of_a_chunk(self):
        """A line starting a new chunk with "." is stuffed."""
        self.assertEqual(encode([b"a\r\n", b".\r\n", b"b"]), b"a\r\n..\r\nb\r\n.\r\n")
        self.assertEqual(encode([b"a\r", b"\n", b"."]), b"a\r\n..\r\n.\r\n")
        self.assertEqual(encode([b"a", b".b"]), b"a.b\r\n.\r\n")

    def test_smuggling_at_16k_and_64k_chunk_boundaries(self):
        """CRLF "." CRLF straddling 16 KiB and 64 KiB boundaries never ends the data early."""
        for boundary in (16384, 65536):
            for shift in range(-3, 3):
                prefix = b"x" * (boundary + shift)
                data = prefix + b"\r\n.\r\nMAIL FROM:<evil@example.org>\r\n"
                wire = encode(split(data, [boundary, 2 * boundary]))
                self.assertEqual(wire, prefix + b"\r\n..\r\nMAIL FROM:<evil@example.org>\r\n.\r\n")

    @settings(max_examples=400, deadline=None)
    @given(data=st.binary(max_size=300) | st.lists(st.sampled_from([b"\r", b"\n", b".", b"a", b"\r\n", b".."]),
                                                   max_size=60).map(b"".join),
           cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=12))
    def test_any_chunking_round_trips(self, data, cuts):
        """For any content and chunking, un-stuffing the output gives the CRLF-normalised input."""
        wire = encode(split(data, cuts))
        self.assertEqual(wire, encode([data]))
        self.assertEqual(unstuffed(wire), normalised(data))

    @settings(max_examples=200, deadline=None)
    @given(data=st.lists(st.sampled_from([b"\r", b"\n", b".", b"x", b"\r\n", b".\r\n"]),
                         max_size=80).map(b"".join),
           cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8))
    def test_the_server_reads_what_was_meant(self, data, cuts):
        """mailsuite's own DATA reader ends exactly at the terminator and reads the normalised content."""
        wire = encode(split(data, cuts))
        reader = DataReader(max_line_length=1 << 20, max_size=1 << 20)
        self.assertEqual(reader.feed(wire), len(wire))
        self.assertIsNone(reader.error)
        self.assertEqual(reader.message(), normalised(data))
