"""Pipelining, bad input, error limits and the idle timer of the POP3 server."""

from twisted.trial.unittest import SynchronousTestCase

from mailsuite.pop3.server import MAX_PENDING_INPUT, POP3Limits, State

from .pop3_fakes import Session, deliver, inbox_uids


class PipeliningTests(SynchronousTestCase):
    def test_pipelined_commands_answered_in_order(self):
        """RFC 2449 PIPELINING: a packet of commands gets its replies in order."""
        session = Session(implicit_tls=True)
        deliver(session.store, "alice", b"A: 1\r\n\r\none\r\n", b"A: 2\r\n\r\ntwo\r\n")
        session.output()
        session.send(b"USER alice\r\nPASS alice-secret\r\nSTAT\r\nRETR 2\r\nDELE 1\r\nQUIT\r\n")
        self.assertEqual(
            session.output(),
            b"+OK Send your password\r\n"
            b"+OK Logged in, 2 messages\r\n"
            b"+OK 2 26\r\n"
            b"+OK 13 octets\r\nA: 2\r\n\r\ntwo\r\n.\r\n"
            b"+OK Message deleted\r\n"
            b"+OK Bye\r\n",
        )
        self.assertEqual(len(inbox_uids(session.store, "alice")), 1)

    def test_pipelined_commands_wait_for_slow_store(self):
        """While the store has not answered, later commands wait; replies stay in order."""
        session = Session(implicit_tls=True)
        deliver(session.store, "alice", b"x\r\n")
        session.output()
        session.store.hold = True
        session.send(b"USER alice\r\nPASS alice-secret\r\nRETR 1\r\nNOOP\r\n")
        self.assertEqual(session.output(), b"+OK Send your password\r\n")
        session.store.release()
        self.assertEqual(
            session.output(),
            b"+OK Logged in, 1 messages\r\n+OK 3 octets\r\nx\r\n.\r\n+OK\r\n",
        )

    def test_lines_split_across_packets(self):
        """A command split over several reads is answered once it is complete."""
        session = Session()
        session.output()
        session.send(b"CA")
        self.assertEqual(session.output(), b"")
        session.send(b"PA\r")
        session.send(b"\n")
        self.assertTrue(session.output().startswith(b"+OK Capability list follows\r\n"))

    def test_bare_lf_ends_a_command(self):
        """A command line ended by LF alone is accepted."""
        session = Session(implicit_tls=True)
        self.assertEqual(session.command(b"USER alice").split(b"\r\n")[0], b"+OK Send your password")
        session.send(b"NOOP\n")
        self.assertEqual(session.output(), b"-ERR Command not valid in this state\r\n")

    def test_reading_pauses_while_a_command_runs_with_much_input_waiting(self):
        """Input piling up behind a held command pauses reading; it resumes after."""
        session = Session(implicit_tls=True)
        deliver(session.store, "alice", b"x\r\n")
        session.login()
        session.store.hold = True
        session.send(b"STAT\r\n" + b"NOOP\r\n" * (MAX_PENDING_INPUT // 6 + 1))
        self.assertEqual(session.transport.producerState, "paused")
        session.store.release()
        self.assertEqual(session.transport.producerState, "producing")
        self.assertEqual(session.output().count(b"+OK\r\n"), MAX_PENDING_INPUT // 6 + 1)


class BadInputTests(SynchronousTestCase):
    def test_unknown_command(self):
        """An unknown command gets -ERR."""
        session = Session()
        self.assertEqual(session.command(b"XYZZY"), b"-ERR Unknown command\r\n")

    def test_apop_is_not_offered(self):
        """APOP gets -ERR."""
        session = Session()
        self.assertTrue(session.command(b"APOP alice 0123").startswith(b"-ERR"))

    def test_long_line_rejected_and_rest_discarded(self):
        """A line over the limit gets one -ERR; its tail is not run as a command."""
        session = Session(allow_plaintext_auth=True)
        session.output()
        session.send(b"NOOP " + b"x" * 600)
        session.send(b"x" * 10000 + b" QUIT\r\nCAPA\r\n")
        reply = session.output()
        self.assertTrue(reply.startswith(b"-ERR Line too long\r\n+OK Capability list follows\r\n"))
        self.assertFalse(session.transport.disconnecting)

    def test_long_line_in_one_packet(self):
        """A too-long complete line is refused without running it."""
        session = Session(implicit_tls=True)
        self.assertEqual(session.command(b"USER " + b"a" * 600), b"-ERR Line too long\r\n")

    def test_long_line_keeps_memory_bounded(self):
        """Bytes of an endless line are not kept."""
        session = Session()
        for _ in range(100):
            session.send(b"y" * 4096)
        self.assertLessEqual(len(session.server._buffer), 4096)

    def test_too_many_errors_close_the_connection(self):
        """After max_errors errors the server closes the connection."""
        session = Session(limits=POP3Limits(max_errors=3))
        session.output()
        session.send(b"BAD\r\nBAD\r\n")
        self.assertEqual(session.output(), b"-ERR Unknown command\r\n" * 2)
        self.assertFalse(session.transport.disconnecting)
        session.send(b"BAD\r\nCAPA\r\n")
        self.assertEqual(session.output(), b"-ERR Unknown command\r\n")
        self.assertTrue(session.transport.disconnecting)

    def test_failed_logins_count_as_errors(self):
        """Repeated failed logins close the connection after max_errors."""
        session = Session(implicit_tls=True, limits=POP3Limits(max_errors=2))
        session.login(b"alice", b"bad")
        self.assertFalse(session.transport.disconnecting)
        session.login(b"alice", b"bad")
        self.assertTrue(session.transport.disconnecting)

    def test_quit_in_authorization_closes(self):
        """QUIT before login says +OK and closes."""
        session = Session()
        self.assertEqual(session.command(b"QUIT"), b"+OK Bye\r\n")
        self.assertTrue(session.transport.disconnecting)

    def test_input_after_quit_is_ignored(self):
        """Commands after QUIT in the same packet get no reply."""
        session = Session()
        session.output()
        session.send(b"QUIT\r\nCAPA\r\n")
        self.assertEqual(session.output(), b"+OK Bye\r\n")


class IdleTimeoutTests(SynchronousTestCase):
    def test_idle_session_closed_without_reply(self):
        """After idle_timeout seconds without input the connection closes silently."""
        session = Session(limits=POP3Limits(idle_timeout=600))
        session.output()
        session.clock.advance(599)
        self.assertFalse(session.transport.disconnecting)
        session.clock.advance(1)
        self.assertTrue(session.transport.disconnecting)
        self.assertEqual(session.output(), b"")

    def test_input_restarts_the_timer(self):
        """Each command restarts the idle timer."""
        session = Session(limits=POP3Limits(idle_timeout=600))
        session.clock.advance(500)
        session.command(b"CAPA")
        session.clock.advance(500)
        self.assertFalse(session.transport.disconnecting)

    def test_timeout_in_transaction_deletes_nothing(self):
        """An idle timeout after DELE closes without expunging (RFC 1939 §3)."""
        session = Session(implicit_tls=True)
        uids = deliver(session.store, "alice", b"x\r\n")
        session.login()
        session.command(b"DELE 1")
        session.clock.advance(600)
        self.assertTrue(session.transport.disconnecting)
        session.lose()
        self.assertEqual(inbox_uids(session.store, "alice"), uids)

    def test_timeout_while_sending_stops_the_sender(self):
        """A client that stops reading a large RETR is cut off at the idle timeout."""
        session = Session(implicit_tls=True)
        deliver(session.store, "alice", b"z" * 100 + b"\r\n" + (b"line\r\n" * 30000))
        session.login()
        session.send(b"RETR 1\r\n")
        self.assertIsNotNone(session.transport.producer)
        session.clock.advance(600)
        self.assertIsNone(session.transport.producer)
        self.assertTrue(session.transport.disconnecting)

    def test_no_timer_left_after_connection_lost(self):
        """Losing the connection cancels the idle timer."""
        session = Session()
        session.lose()
        self.assertEqual(session.clock.getDelayedCalls(), [])

    def test_connection_lost_during_login_logs_nothing_in(self):
        """A login answered after the connection dropped leaves the session closed."""
        session = Session(implicit_tls=True)
        session.store.hold = True
        session.login()
        session.lose()
        session.store.release()
        self.assertEqual(session.server.state, State.AUTHORIZATION)
        self.assertEqual(session.output(), b"")
