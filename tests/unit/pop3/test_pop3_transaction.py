"""The POP3 server in the TRANSACTION and UPDATE states."""

from twisted.trial.unittest import SynchronousTestCase

from mailsuite.interfaces import StoreUnavailable

from .pop3_fakes import Session, deliver, inbox_uids

CRLF_MESSAGE = b"Subject: one\r\n\r\nHello\r\n.hidden\r\n"
LF_MESSAGE = b"Subject: two\n\nline\n.\n..x\n"
NO_NEWLINE_MESSAGE = b"Subject: three\r\n\r\nend"


class TransactionTestCase(SynchronousTestCase):
    messages = (CRLF_MESSAGE, LF_MESSAGE, NO_NEWLINE_MESSAGE)

    def setUp(self):
        self.session = Session(implicit_tls=True)
        self.uids = deliver(self.session.store, "alice", *self.messages)
        self.uidvalidity = self.session.store.store.status("alice", "INBOX").result.uidvalidity
        self.session.login()

    def command(self, line: bytes) -> bytes:
        return self.session.command(line)


class ListingTests(TransactionTestCase):
    def test_stat_counts_crlf_sizes(self):
        """STAT gives the count and the total size as RETR would send (CRLF line ends)."""
        # 32 + (25 + 5 bare LFs) + (21 + the missing CRLF)
        self.assertEqual(self.command(b"STAT"), b"+OK 3 85\r\n")

    def test_list_all(self):
        """LIST gives every message number with its size."""
        self.assertEqual(
            self.command(b"LIST"),
            b"+OK 3 messages (85 octets)\r\n1 32\r\n2 30\r\n3 23\r\n.\r\n",
        )

    def test_list_one(self):
        """LIST n gives one message's size on the status line."""
        self.assertEqual(self.command(b"LIST 2"), b"+OK 2 30\r\n")

    def test_list_out_of_range(self):
        """LIST of a message that does not exist gets -ERR."""
        self.assertEqual(self.command(b"LIST 4"), b"-ERR No such message\r\n")

    def test_uidl_all_uses_uidvalidity_and_uid(self):
        """UIDL lists "<uidvalidity>.<uid>" per message."""
        expected = b"".join(f"{n} {self.uidvalidity}.{u}\r\n".encode() for n, u in enumerate(self.uids, 1))
        self.assertEqual(self.command(b"UIDL"), b"+OK Unique-id listing follows\r\n" + expected + b".\r\n")

    def test_uidl_one(self):
        """UIDL n gives one unique-id."""
        self.assertEqual(self.command(b"UIDL 1"), f"+OK 1 {self.uidvalidity}.{self.uids[0]}\r\n".encode())

    def test_uidl_stable_across_sessions(self):
        """A second session sees the same unique-ids."""
        first = self.command(b"UIDL")
        second = Session(implicit_tls=True, store=self.session.store)
        second.login()
        self.assertEqual(second.command(b"UIDL"), first)

    def test_noop(self):
        """NOOP answers +OK."""
        self.assertEqual(self.command(b"NOOP"), b"+OK\r\n")

    def test_snapshot_ignores_later_deliveries(self):
        """Messages delivered after login are not in this session's maildrop."""
        deliver(self.session.store, "alice", b"late\r\n")
        self.assertTrue(self.command(b"STAT").startswith(b"+OK 3 "))


class RetrTests(TransactionTestCase):
    def test_retr_crlf_message_byte_exact(self):
        """A CRLF message is sent unchanged (no CR CR LF), dot-stuffed and terminated."""
        self.assertEqual(
            self.command(b"RETR 1"),
            b"+OK 32 octets\r\nSubject: one\r\n\r\nHello\r\n..hidden\r\n.\r\n",
        )

    def test_retr_lf_message_byte_exact(self):
        """An LF message goes out with CRLF and dot lines stuffed."""
        self.assertEqual(
            self.command(b"RETR 2"),
            b"+OK 30 octets\r\nSubject: two\r\n\r\nline\r\n..\r\n...x\r\n.\r\n",
        )

    def test_retr_message_without_final_newline(self):
        """A message without a final line end gets CRLF before the terminator."""
        self.assertEqual(
            self.command(b"RETR 3"),
            b"+OK 23 octets\r\nSubject: three\r\n\r\nend\r\n.\r\n",
        )

    def test_retr_large_message_with_dot_lines_at_16k_boundaries(self):
        """A large message whose "." lines start at 16 KiB offsets is stuffed everywhere."""
        block = b"." + b"y" * (16384 - 3) + b"\r\n"
        session = Session(implicit_tls=True)
        deliver(session.store, "alice", block * 40)
        session.login()
        session.send(b"RETR 1\r\n")
        self.assertIsNotNone(session.transport.producer)
        reply = session.output()
        self.assertEqual(reply, b"+OK %d octets\r\n" % (16384 * 40) + (b"." + block) * 40 + b".\r\n")

    def test_top(self):
        """TOP n m sends the header, the blank line and m body lines, stuffed."""
        self.assertEqual(
            self.command(b"TOP 1 1"),
            b"+OK Top of message follows\r\nSubject: one\r\n\r\nHello\r\n.\r\n",
        )

    def test_top_lf_message(self):
        """TOP of an LF message converts line ends and stuffs dot lines."""
        self.assertEqual(
            self.command(b"TOP 2 2"),
            b"+OK Top of message follows\r\nSubject: two\r\n\r\nline\r\n..\r\n.\r\n",
        )

    def test_top_bad_line_count(self):
        """TOP with a non-numeric line count gets -ERR."""
        self.assertEqual(self.command(b"TOP 1 x"), b"-ERR Invalid number\r\n")

    def test_retr_bad_number(self):
        """RETR 0 and RETR abc get -ERR."""
        self.assertEqual(self.command(b"RETR 0"), b"-ERR Invalid number\r\n")
        self.assertEqual(self.command(b"RETR abc"), b"-ERR Invalid number\r\n")

    def test_retr_out_of_range(self):
        """RETR of a number past the maildrop gets -ERR."""
        self.assertEqual(self.command(b"RETR 9"), b"-ERR No such message\r\n")

    def test_retr_of_message_expunged_by_another_session(self):
        """A message removed elsewhere after login gets -ERR; the session goes on."""
        self.session.store.store.expunge("alice", "INBOX", [self.uids[0]])
        self.assertEqual(self.command(b"RETR 1"), b"-ERR No such message\r\n")
        self.assertTrue(self.command(b"RETR 2").startswith(b"+OK"))

    def test_retr_store_failure_is_temporary(self):
        """A store failure on RETR gets -ERR [SYS/TEMP]."""
        self.session.store.fail["read"] = StoreUnavailable("io")
        self.assertEqual(self.command(b"RETR 1"), b"-ERR [SYS/TEMP] Temporary failure, try again later\r\n")
        self.assertEqual(len(self.flushLoggedErrors(StoreUnavailable)), 1)


class DeletionTests(TransactionTestCase):
    def test_dele_hides_message(self):
        """A message marked with DELE is gone from STAT, LIST, UIDL and RETR."""
        self.assertEqual(self.command(b"DELE 1"), b"+OK Message deleted\r\n")
        self.assertEqual(self.command(b"STAT"), b"+OK 2 53\r\n")
        self.assertEqual(self.command(b"LIST"), b"+OK 2 messages (53 octets)\r\n2 30\r\n3 23\r\n.\r\n")
        self.assertNotIn(b"\r\n1 ", self.command(b"UIDL"))
        self.assertEqual(self.command(b"RETR 1"), b"-ERR Message already deleted\r\n")
        self.assertEqual(self.command(b"DELE 1"), b"-ERR Message already deleted\r\n")

    def test_dele_then_quit_expunges(self):
        """QUIT after DELE removes exactly the marked messages and says +OK."""
        self.command(b"DELE 1")
        self.command(b"DELE 3")
        self.assertEqual(self.command(b"QUIT"), b"+OK Bye\r\n")
        self.assertTrue(self.session.transport.disconnecting)
        self.assertEqual(inbox_uids(self.session.store, "alice"), [self.uids[1]])

    def test_dele_then_connection_drop_keeps_everything(self):
        """A connection lost without QUIT deletes nothing."""
        self.command(b"DELE 1")
        self.session.lose()
        self.assertEqual(inbox_uids(self.session.store, "alice"), self.uids)
        self.assertNotIn("expunge", [c[0] for c in self.session.store.calls])

    def test_rset_unmarks(self):
        """RSET removes the deletion marks; QUIT then deletes nothing."""
        self.command(b"DELE 2")
        self.assertEqual(self.command(b"RSET"), b"+OK Deletion marks removed\r\n")
        self.assertEqual(self.command(b"STAT"), b"+OK 3 85\r\n")
        self.command(b"QUIT")
        self.assertEqual(inbox_uids(self.session.store, "alice"), self.uids)

    def test_quit_with_failed_expunge_reports_error(self):
        """When the expunge fails, QUIT answers -ERR [SYS/TEMP] and closes."""
        self.command(b"DELE 1")
        self.session.store.fail["expunge"] = StoreUnavailable("disk")
        self.assertEqual(self.command(b"QUIT"), b"-ERR [SYS/TEMP] Deleted messages not removed\r\n")
        self.assertTrue(self.session.transport.disconnecting)
        self.assertEqual(inbox_uids(self.session.store, "alice"), self.uids)
        self.assertEqual(len(self.flushLoggedErrors(StoreUnavailable)), 1)

    def test_quit_after_other_session_expunged_a_marked_message(self):
        """A marked message already removed elsewhere does not spoil QUIT."""
        self.command(b"DELE 1")
        self.command(b"DELE 2")
        self.session.store.store.expunge("alice", "INBOX", [self.uids[0]])
        self.assertEqual(self.command(b"QUIT"), b"+OK Bye\r\n")
        self.assertEqual(inbox_uids(self.session.store, "alice"), [self.uids[2]])

    def test_quit_without_marks_does_not_expunge(self):
        """QUIT with nothing marked says +OK without calling expunge."""
        self.assertEqual(self.command(b"QUIT"), b"+OK Bye\r\n")
        self.assertNotIn("expunge", [c[0] for c in self.session.store.calls])
