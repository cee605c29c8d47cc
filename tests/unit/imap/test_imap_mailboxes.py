"""Mailbox commands: SELECT, EXAMINE, CREATE, DELETE, RENAME, LIST, LSUB, STATUS."""

from twisted.trial.unittest import SynchronousTestCase

from tests.unit.imap.imap_fakes import Session, deliver, lines, message


def logged_in() -> Session:
    s = Session()
    s.login()
    return s


class SelectTests(SynchronousTestCase):
    def test_select_reports_required_responses(self):
        """RFC 3501 §6.3.1: FLAGS, PERMANENTFLAGS, EXISTS, UIDVALIDITY, UIDNEXT, READ-WRITE."""
        s = logged_in()
        deliver(s.store, "alice", message("a"), message("b"))
        out = s.select()
        status = s.store.status("alice", "INBOX").result
        self.assertIn(b"* FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen)\r\n", out)
        self.assertIn(b"* OK [PERMANENTFLAGS (\\* \\Answered", out)
        self.assertIn(b"* 2 EXISTS\r\n", out)
        self.assertIn(b"* OK [UIDVALIDITY %d]" % status.uidvalidity, out)
        self.assertIn(b"* OK [UIDNEXT 3]", out)
        self.assertTrue(out.endswith(b"S1 OK [READ-WRITE] SELECT completed\r\n"))

    def test_select_costs_one_listing(self):
        """SELECT asks the store for the message list once."""
        s = logged_in()
        calls = []
        original = s.store.messages
        s.store.messages = lambda *a: calls.append(a) or original(*a)
        s.select()
        self.assertEqual(len(calls), 1)

    def test_examine_is_read_only(self):
        """EXAMINE answers [READ-ONLY], no permanent flags, and STORE is refused."""
        s = logged_in()
        deliver(s.store, "alice", message())
        out = s.command(b"e EXAMINE INBOX")
        self.assertIn(b"[PERMANENTFLAGS ()]", out)
        self.assertIn(b"e OK [READ-ONLY]", out)
        self.assertIn(b"s NO [READ-ONLY]", s.command(b"s STORE 1 +FLAGS (\\Seen)"))

    def test_select_missing_mailbox(self):
        """SELECT of a missing mailbox is NO [NONEXISTENT] and leaves nothing selected."""
        s = logged_in()
        s.select()
        out = s.command(b"s SELECT Nowhere")
        self.assertIn(b"* OK [CLOSED]", out)
        self.assertIn(b"s NO [NONEXISTENT]", out)
        self.assertIn(b"BAD", s.command(b"f FETCH 1 FLAGS"))


class ManageTests(SynchronousTestCase):
    def test_create_delete_rename(self):
        """CREATE, RENAME and DELETE change the store's mailboxes."""
        s = logged_in()
        self.assertEqual(s.command(b"c CREATE Projects/"), b"c OK Completed\r\n")
        self.assertEqual(s.command(b"r RENAME Projects Work"), b"r OK Completed\r\n")
        names = [m.name for m in s.store.mailboxes("alice").result]
        self.assertIn("Work", names)
        self.assertEqual(s.command(b"d DELETE Work"), b"d OK Completed\r\n")
        self.assertNotIn("Work", [m.name for m in s.store.mailboxes("alice").result])

    def test_create_existing_is_alreadyexists(self):
        """CREATE of an existing mailbox is NO [ALREADYEXISTS]."""
        self.assertIn(b"c NO [ALREADYEXISTS]", logged_in().command(b"c CREATE Sent"))

    def test_create_with_special_use(self):
        """RFC 6154 §3: CREATE (USE (\\Archive)) records the special use."""
        s = logged_in()
        s.command(b"c CREATE Old (USE (\\Archive))")
        infos = {m.name: m for m in s.store.mailboxes("alice").result}
        self.assertEqual(infos["Old"].special_use, "\\Archive")
        self.assertIn(b"NO [USEATTR]", s.command(b"c CREATE X (USE (\\Bogus))"))

    def test_names_cannot_escape_the_account(self):
        """Names with ".." levels or empty levels are refused with NO [CANNOT]."""
        s = logged_in()
        self.assertIn(b"c NO [CANNOT]", s.command(b"c CREATE ../../etc"))
        self.assertIn(b"c NO [CANNOT]", s.command(b'c CREATE "a//b"'))

    def test_delete_inbox_is_refused(self):
        """INBOX cannot be deleted."""
        self.assertIn(b"d NO", logged_in().command(b"d DELETE inbox"))

    def test_utf8_names_go_out_in_modified_utf7(self):
        """RFC 3501 §5.1.3: a name created in modified UTF-7 is listed the same way."""
        s = logged_in()
        s.command(b"c CREATE &ZeVnLIqe-")
        self.assertIn("日本語", [m.name for m in s.store.mailboxes("alice").result])
        self.assertIn(b'"/" &ZeVnLIqe-\r\n', s.command(b'l LIST "" *'))


class ListTests(SynchronousTestCase):
    def test_list_all_with_children_and_special_use(self):
        """LIST "" * shows every mailbox with \\HasChildren/\\HasNoChildren and special use."""
        s = logged_in()
        s.command(b"c CREATE Work/Reports")
        out = lines(s.command(b'l LIST "" *'))
        self.assertEqual(out[0], b'* LIST (\\HasNoChildren) "/" INBOX')
        self.assertIn(b'* LIST (\\Sent \\HasNoChildren) "/" Sent', out)
        self.assertIn(b'* LIST (\\HasNoChildren) "/" Work/Reports', out)
        self.assertIn(b'* LIST (\\Noselect \\HasChildren) "/" Work', out)

    def test_percent_stops_at_the_separator(self):
        """RFC 3501 §6.3.8: "%" does not match the hierarchy separator."""
        s = logged_in()
        s.command(b"c CREATE Work/Reports")
        out = s.command(b'l LIST "" %')
        self.assertNotIn(b"Work/Reports", out)
        self.assertIn(b'"/" Work\r\n', out)

    def test_empty_pattern_gives_the_separator(self):
        """RFC 3501 §6.3.8: LIST "" "" returns the hierarchy delimiter."""
        self.assertIn(b'* LIST (\\Noselect) "/" ""', logged_in().command(b'l LIST "" ""'))

    def test_reference_is_prefixed(self):
        """The reference name is joined to the pattern."""
        s = logged_in()
        s.command(b"c CREATE Work/Reports")
        out = lines(s.command(b"l LIST Work %"))
        self.assertEqual(out[0], b'* LIST (\\HasNoChildren) "/" Work/Reports')

    def test_list_special_use_selection(self):
        """RFC 6154 §5.2: LIST (SPECIAL-USE) returns only special-use mailboxes."""
        out = logged_in().command(b'l LIST (SPECIAL-USE) "" *')
        self.assertNotIn(b"INBOX", out)
        self.assertIn(b"\\Trash", out)

    def test_list_return_status(self):
        """RFC 5819: RETURN (STATUS (MESSAGES)) follows each LIST with its STATUS."""
        s = logged_in()
        deliver(s.store, "alice", message())
        out = lines(s.command(b'l LIST "" INBOX RETURN (STATUS (MESSAGES))'))
        self.assertEqual(out[:2], [b'* LIST (\\HasNoChildren) "/" INBOX',
                                   b"* STATUS INBOX (MESSAGES 1)"])

    def test_lsub_lists_subscribed(self):
        """LSUB lists subscribed mailboxes."""
        self.assertIn(b'* LSUB () "/" INBOX', logged_in().command(b'l LSUB "" *'))


class StatusTests(SynchronousTestCase):
    def test_status_items(self):
        """STATUS answers each requested item (RFC 3501 §6.3.10, RFC 8438 SIZE)."""
        s = logged_in()
        data = message()
        deliver(s.store, "alice", data, data)
        s.store.set_flags("alice", "INBOX", [1], {"\\Seen", "\\Deleted"})
        out = s.command(b"t STATUS inbox (MESSAGES UNSEEN UIDNEXT SIZE DELETED)")
        self.assertEqual(lines(out)[0], b"* STATUS INBOX (MESSAGES 2 UNSEEN 1 UIDNEXT 3 SIZE %d "
                         b"DELETED 1)" % (2 * len(data)))

    def test_status_of_missing_mailbox(self):
        """STATUS of a missing mailbox is NO [NONEXISTENT]."""
        self.assertIn(b"t NO [NONEXISTENT]", logged_in().command(b"t STATUS Nope (MESSAGES)"))


class SubscriptionTests(SynchronousTestCase):
    def test_unsubscribe_and_subscribe(self):
        """UNSUBSCRIBE drops a mailbox from LSUB and LIST (SUBSCRIBED); SUBSCRIBE restores it."""
        s = logged_in()
        self.assertEqual(s.command(b"u UNSUBSCRIBE Junk"), b"u OK Completed\r\n")
        self.assertNotIn(b"Junk", s.command(b'l LSUB "" *'))
        self.assertNotIn(b"Junk", s.command(b'l LIST (SUBSCRIBED) "" *'))
        s.command(b"s SUBSCRIBE Junk")
        self.assertIn(b'* LIST (\\Subscribed \\Junk \\HasNoChildren) "/" Junk',
                      s.command(b'l LIST (SUBSCRIBED) "" *'))

    def test_subscribe_missing_mailbox(self):
        """SUBSCRIBE of a missing mailbox is NO [NONEXISTENT]."""
        self.assertIn(b"s NO [NONEXISTENT]", logged_in().command(b"s SUBSCRIBE Nope"))


class UTF8Tests(SynchronousTestCase):
    def test_names_are_utf8_after_enable(self):
        """RFC 6855 §3: after ENABLE UTF8=ACCEPT names travel as UTF-8 quoted strings."""
        s = logged_in()
        s.command(b"e ENABLE UTF8=ACCEPT")
        s.command('c CREATE "Bär&Co"'.encode())
        self.assertIn('"/" "Bär&Co"\r\n'.encode(), s.command(b'l LIST "" *'))
