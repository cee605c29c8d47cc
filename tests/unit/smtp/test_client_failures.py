"""Tests for mailsuite.smtp.client: connection failures, timeouts, 421 and malformed replies."""

from twisted.internet import error
from twisted.trial.unittest import SynchronousTestCase

from mailsuite.smtp.client import Timeouts, TLSPolicy, deliver
from tests.unit.smtp.test_client_support import EHLO_PLAIN, Remote, codes, message


class ConnectTests(SynchronousTestCase):
    def test_connection_refused_is_temporary_for_all(self):
        """A refused connection gives code 0, stage "connect", temporary, for every recipient."""
        remote = Remote([message("a@example.net", "b@example.net"), message("c@example.net")])
        remote.fail_connection(error.ConnectionRefusedError("refused"))
        result = remote.result
        self.assertEqual(codes(result), [[(0, "connect"), (0, "connect")], [(0, "connect")]])
        r = result.results[0][0]
        self.assertTrue(r.temporary)
        self.assertEqual(r.enhanced, "4.4.1")
        self.assertIn("192.0.2.25", r.text)

    def test_connect_timeout_is_temporary(self):
        """A connection attempt that times out is a temporary failure."""
        remote = Remote([message("a@example.net")])
        remote.fail_connection(error.TimeoutError())
        [[r]] = remote.result.results
        self.assertEqual((r.code, r.stage), (0, "connect"))

    def test_connect_timeout_and_bind_address_reach_the_reactor(self):
        """connect_timeout and bind_address are used for the TCP connection."""
        remote = Remote([message("a@example.net")], connect_timeout=7.5, bind_address="192.0.2.1")
        _host, port, _factory, timeout, bind = remote.reactor.tcpClients[0]
        self.assertEqual((port, timeout, bind), (25, 7.5, ("192.0.2.1", 0)))

    def test_bad_policy_is_a_programming_error(self):
        """A tls argument that is not a TLSPolicy raises at once."""
        with self.assertRaises(TypeError):
            Remote([message("a@example.net")], tls="opportunistic")

    def test_bad_helo_name_is_a_programming_error(self):
        """A helo_name with a line break raises at once."""
        from twisted.internet.testing import MemoryReactorClock
        with self.assertRaises(ValueError):
            deliver(MemoryReactorClock(), "192.0.2.25", 25, [message()], helo_name="a\r\nRSET",
                    tls=TLSPolicy.NONE)


class TimeoutTests(SynchronousTestCase):
    def assertTimesOut(self, remote: Remote, seconds: float, stage: str):
        remote.reactor.advance(seconds - 0.5)
        self.assertFalse(remote.done, "gave up too early")
        remote.reactor.advance(0.5)
        self.assertTrue(remote.done, "did not give up")
        self.assertTrue(remote.transport.disconnected)
        for results in remote.result.results:
            for r in results:
                self.assertEqual((r.code, r.enhanced, r.stage), (0, "4.4.2", stage))
                self.assertTrue(r.temporary)

    def test_greeting_timeout_is_five_minutes(self):
        """No greeting within 300 s: temporary failure, connection aborted."""
        remote = Remote([message("a@example.net")]).connect()
        self.assertTimesOut(remote, 300, "connect")

    def test_timeouts_can_be_shortened(self):
        """Timeouts(greeting=5) gives up on the greeting after 5 s."""
        remote = Remote([message("a@example.net")], timeouts=Timeouts(greeting=5)).connect()
        self.assertTimesOut(remote, 5, "connect")

    def test_mail_timeout_is_five_minutes(self):
        """No reply to MAIL within 300 s ends the session."""
        remote = Remote([message("a@example.net")]).greet(EHLO_PLAIN)
        self.assertTimesOut(remote, 300, "mail")

    def test_rcpt_timeout_is_five_minutes(self):
        """No reply to RCPT within 300 s ends the session."""
        remote = Remote([message("a@example.net")]).greet(EHLO_PLAIN)
        remote.reply(b"250 OK\r\n")
        self.assertTimesOut(remote, 300, "rcpt")

    def test_data_command_timeout_is_two_minutes(self):
        """No reply to DATA within 120 s ends the session."""
        remote = Remote([message("a@example.net")]).greet()
        remote.reply(b"250 OK\r\n250 OK\r\n")
        self.assertTimesOut(remote, 120, "data")

    def test_data_block_timeout_is_three_minutes(self):
        """A transport that takes no content for 180 s ends the session."""
        remote = Remote([message("a@example.net")]).greet()
        remote.reply(b"250 OK\r\n250 OK\r\n354 Go\r\n")
        self.assertIsNotNone(remote.transport.producer)
        self.assertTimesOut(remote, 180, "data")

    def test_final_reply_timeout_is_ten_minutes(self):
        """No reply to the final dot within 600 s ends the session."""
        remote = Remote([message("a@example.net")]).greet()
        remote.reply(b"250 OK\r\n250 OK\r\n354 Go\r\n")
        remote.pump()
        self.assertTimesOut(remote, 600, "data")

    def test_quit_reply_is_not_awaited_for_long(self):
        """The result comes after Timeouts.quit even when QUIT gets no reply."""
        remote = Remote([message("a@example.net")], timeouts=Timeouts(quit=10)).greet()
        remote.reply(b"250 OK\r\n250 OK\r\n354 Go\r\n")
        remote.pump()
        remote.reply(b"250 OK\r\n")
        self.assertEqual(remote.sent(), ["QUIT"])
        self.assertFalse(remote.done)
        remote.reactor.advance(10)
        self.assertEqual(codes(remote.result), [[(250, "data")]])

    def test_connection_closed_after_quit(self):
        """After the reply to QUIT the client closes the connection."""
        remote = Remote([message("a@example.net")]).greet()
        remote.reply(b"250 OK\r\n250 OK\r\n354 Go\r\n")
        remote.pump()
        remote.reply(b"250 OK\r\n")
        remote.finish()
        self.assertTrue(remote.transport.disconnecting)


class DropTests(SynchronousTestCase):
    def test_drop_mid_data_is_temporary_for_all(self):
        """A connection lost while content is sent: code 0, stage "data", for every unfinished recipient."""
        first = message("a@example.net", "b@example.net", data=b"x" * 200000)
        second = message("c@example.net")
        remote = Remote([first, second]).greet()
        remote.sent()
        remote.reply(b"250 OK\r\n250 OK\r\n550 5.1.1 No\r\n354 Go\r\n")
        remote.transport.producer.resumeProducing()
        remote.drop()
        result = remote.result
        self.assertEqual(codes(result), [[(0, "data"), (550, "rcpt")], [(0, "data")]])
        self.assertTrue(all(r.temporary for r in (result.results[0][0], result.results[1][0])))
        self.assertIn("connection lost", result.results[0][0].text)

    def test_reply_before_a_drop_mid_data_is_used(self):
        """A server that answers 552 during the content and closes: the 552 is the result."""
        remote = Remote([message("a@example.net", data=b"x" * 200000)]).greet()
        remote.sent()
        remote.reply(b"250 OK\r\n250 OK\r\n354 Go\r\n")
        remote.transport.producer.resumeProducing()
        remote.reply(b"552 5.3.4 Message too big\r\n")
        remote.drop()
        [[r]] = remote.result.results
        self.assertEqual((r.code, r.enhanced, r.stage), (552, "5.3.4", "data"))

    def test_drop_after_greeting(self):
        """A connection closed right after the greeting: temporary for all."""
        remote = Remote([message("a@example.net")]).connect()
        remote.reply(b"220 mx\r\n")
        remote.drop(error.ConnectionDone())
        [[r]] = remote.result.results
        self.assertEqual((r.code, r.stage), (0, "ehlo"))
        self.assertIn("closed by the server", r.text)

    def test_421_ends_the_session(self):
        """421 to a RCPT: unfinished recipients get 421, settled ones keep theirs, no QUIT."""
        remote = Remote([message("a@example.net", "b@example.net", "c@example.net"),
                         message("d@example.net")]).greet(EHLO_PLAIN)
        remote.reply(b"250 OK\r\n")
        remote.reply(b"550 5.1.1 No\r\n")
        remote.reply(b"421 4.3.2 Shutting down\r\n")
        result = remote.result
        self.assertEqual(codes(result), [[(550, "rcpt"), (421, "rcpt"), (421, "rcpt")], [(421, "rcpt")]])
        self.assertEqual(result.results[1][0].text, "Shutting down")
        self.assertTrue(result.results[1][0].temporary)
        self.assertNotIn(b"QUIT", remote.transport.value())
        self.assertTrue(remote.transport.disconnecting)

    def test_421_greeting(self):
        """A 421 greeting is temporary for all, stage "connect"."""
        remote = Remote([message("a@example.net")]).connect()
        remote.reply(b"421 4.3.2 Busy\r\n")
        self.assertEqual(codes(remote.result), [[(421, "connect")]])

    def test_unsolicited_421_is_read_as_the_next_reply(self):
        """A 421 sent with no command outstanding ends the session at the next step."""
        remote = Remote([message("a@example.net")]).connect()
        remote.reply(b"220 mx\r\n")
        remote.reply(b"250 mx\r\n421 4.4.2 Idle\r\n")
        self.assertEqual(codes(remote.result), [[(421, "mail")]])


class MalformedReplyTests(SynchronousTestCase):
    def assertProtocolError(self, remote: Remote, stage: str):
        self.assertTrue(remote.transport.disconnected)
        [[r]] = remote.result.results
        self.assertEqual((r.code, r.enhanced, r.stage), (0, "4.5.0", stage))
        self.assertTrue(r.temporary)
        self.assertIn("protocol error", r.text)

    def test_garbage_is_temporary(self):
        """A line that is not a reply ends the connection: temporary, protocol error."""
        remote = Remote([message("a@example.net")]).connect()
        remote.reply(b"HTTP/1.1 400 Bad Request\r\n")
        self.assertProtocolError(remote, "connect")

    def test_overlong_reply_line(self):
        """A reply line over 64 KiB is a protocol error, even before it ends."""
        remote = Remote([message("a@example.net")]).connect()
        remote.reply(b"220 " + b"x" * 70000)
        self.assertProtocolError(remote, "connect")

    def test_reply_to_no_command(self):
        """A second reply where one was owed is a protocol error."""
        remote = Remote([message("a@example.net")]).connect()
        remote.reply(b"220 mx\r\n250 extra\r\n")
        self.assertProtocolError(remote, "connect")

    def test_reply_of_the_wrong_class(self):
        """A 354 to MAIL is a protocol error, not a result code."""
        remote = Remote([message("a@example.net")]).greet(EHLO_PLAIN)
        remote.reply(b"354 what\r\n")
        self.assertProtocolError(remote, "mail")

    def test_multiline_with_changing_code(self):
        """A multiline reply whose code changes is a protocol error."""
        remote = Remote([message("a@example.net")]).connect()
        remote.reply(b"220-mx\r\n250 ESMTP\r\n")
        self.assertProtocolError(remote, "connect")
