"""IMAP4rev2 (RFC 9051), Appendix E item by item, for a client that did ENABLE IMAP4rev2;
and NO [BADCHARSET] for unsupported search charsets (RFC 3501 §6.4.4, RFC 5256 §3)."""

import pytest
from twisted.trial.unittest import SynchronousTestCase

# parser first: it registers the argument modules, which import each other.
from mailsuite.imap.parser import ParseError  # isort: skip
from mailsuite.imap.arguments import Refusal, removed_in_rev2  # isort: skip
from tests.unit.imap.imap_fakes import Session, deliver, lines, message
from tests.unit.imap.test_imap_parser import parse


def rev2(*, select: bool = False, count: int = 2) -> Session:
    s = Session()
    deliver(s.store, "alice", *(message(f"m{n}") for n in range(count)))
    s.login()
    s.command(b"e ENABLE IMAP4rev2")
    if select:
        s.select()
    return s


def rev1(*, select: bool = False) -> Session:
    s = Session()
    deliver(s.store, "alice", message("m0"))
    s.login()
    if select:
        s.select()
    return s


class CapabilityTests(SynchronousTestCase):
    def test_imap4rev2_is_advertised(self):
        """CAPABILITY lists IMAP4rev2 beside IMAP4rev1 (RFC 9051 §6.1.1)."""
        out = Session().command(b"a CAPABILITY")
        self.assertIn(b" IMAP4rev1 ", out)
        self.assertIn(b" IMAP4rev2 ", out)

    def test_enable_imap4rev2_is_confirmed(self):
        """ENABLE IMAP4rev2 answers ENABLED IMAP4rev2 (RFC 9051 §6.3.1)."""
        s = Session()
        s.login()
        self.assertIn(b"* ENABLED IMAP4rev2\r\n", s.command(b"e ENABLE IMAP4rev2"))


class RemovedCommandTests(SynchronousTestCase):
    def test_lsub_is_bad_for_rev2(self):
        """LSUB is not part of IMAP4rev2: BAD (RFC 9051 Appendix E, item: LSUB)."""
        out = rev2().command(b'a LSUB "" "*"')
        self.assertTrue(out.startswith(b"a BAD "))

    def test_lsub_still_works_for_rev1(self):
        """An IMAP4rev1 client still gets LSUB answered."""
        out = rev1().command(b'a LSUB "" "*"')
        self.assertIn(b"* LSUB ", out)
        self.assertIn(b"a OK", out)

    def test_check_is_bad_for_rev2(self):
        """CHECK is not part of IMAP4rev2 (NOOP replaces it): BAD."""
        out = rev2(select=True).command(b"a CHECK")
        self.assertTrue(out.startswith(b"a BAD "))

    def test_check_still_works_for_rev1(self):
        """An IMAP4rev1 client still gets CHECK answered OK."""
        self.assertEqual(rev1(select=True).command(b"a CHECK"), b"a OK Completed\r\n")


class RecentTests(SynchronousTestCase):
    def test_search_recent_keys_are_bad_for_rev2(self):
        """NEW, OLD and RECENT, even nested, are BAD for IMAP4rev2 clients."""
        for key in (b"NEW", b"OLD", b"RECENT", b"NOT (SEEN NEW)", b"OR ALL RECENT"):
            s = rev2(select=True)
            out = s.command(b"a SEARCH " + key)
            self.assertTrue(out.startswith(b"a BAD "), key)

    def test_search_recent_keys_still_work_for_rev1(self):
        """An IMAP4rev1 client may still SEARCH NEW."""
        out = rev1(select=True).command(b"a SEARCH NEW")
        self.assertIn(b"a OK", out)

    def test_status_recent_is_bad_for_rev2(self):
        """The STATUS item RECENT is not part of IMAP4rev2: BAD."""
        out = rev2().command(b"a STATUS INBOX (MESSAGES RECENT)")
        self.assertTrue(out.startswith(b"a BAD "))

    def test_list_status_recent_is_bad_for_rev2(self):
        """LIST RETURN (STATUS (RECENT)) is refused for IMAP4rev2 as well."""
        out = rev2().command(b'a LIST "" "*" RETURN (STATUS (RECENT))')
        self.assertTrue(out.startswith(b"a BAD "))

    def test_select_has_no_recent_or_unseen(self):
        """SELECT sends neither RECENT nor [UNSEEN n] nor \\Recent in FLAGS (RFC 9051 §6.3.2)."""
        out = rev2().select()
        self.assertNotIn(b"RECENT", out)
        self.assertNotIn(b"[UNSEEN", out)
        self.assertNotIn(b"\\Recent", out)

    def test_removed_in_rev2_passes_plain_commands(self):
        """Commands IMAP4rev2 kept are not refused."""
        self.assertIsNone(removed_in_rev2(parse(b"a SEARCH UNSEEN")))
        self.assertIsNone(removed_in_rev2(parse(b"a STATUS INBOX (MESSAGES)")))


class SelectTests(SynchronousTestCase):
    def test_select_sends_list_response(self):
        """SELECT includes a LIST response for the mailbox (RFC 9051 §6.3.2)."""
        out = rev2().select()
        self.assertIn(b'* LIST (\\HasNoChildren) "/" INBOX\r\n', out)

    def test_reselect_reports_closed(self):
        """Selecting while selected first says OK [CLOSED] (RFC 9051 §7.1)."""
        s = rev2(select=True)
        self.assertIn(b"* OK [CLOSED]", s.select())


class SearchTests(SynchronousTestCase):
    def test_search_answers_esearch(self):
        """Plain SEARCH answers ESEARCH for an IMAP4rev2 client (RFC 9051 §6.4.4)."""
        out = rev2(select=True).command(b"a SEARCH ALL")
        self.assertIn(b"* ESEARCH (TAG \"a\") ALL 1:2\r\n", out)
        self.assertNotIn(b"* SEARCH", out)


class MailboxTests(SynchronousTestCase):
    def test_missing_parent_is_nonexistent(self):
        """A parent that only exists by its children is \\NonExistent (RFC 9051 §7.3.1)."""
        s = rev2()
        s.command(b"c CREATE a/b")
        out = s.command(b'l LIST "" "a"')
        self.assertIn(b'* LIST (\\NonExistent \\HasChildren) "/" "a"\r\n', out)

    def test_delete_with_children_is_haschildren(self):
        """DELETE of a mailbox with children answers NO [HASCHILDREN] (RFC 9051 §6.3.4)."""
        s = rev2()
        s.command(b"c CREATE p")
        s.command(b"c CREATE p/q")
        self.assertTrue(s.command(b"d DELETE p").startswith(b"d NO [HASCHILDREN] "))

    def test_delete_of_missing_mailbox_is_nonexistent(self):
        """DELETE of a mailbox that does not exist still answers NO [NONEXISTENT]."""
        self.assertTrue(rev2().command(b"d DELETE nope").startswith(b"d NO [NONEXISTENT] "))

    def test_rename_reports_oldname(self):
        """RENAME sends a LIST response with OLDNAME to IMAP4rev2 clients (RFC 9051 §6.3.6)."""
        s = rev2()
        s.command(b"c CREATE old")
        out = s.command(b"r RENAME old new")
        self.assertEqual(lines(out), [
            b'* LIST (\\HasNoChildren) "/" "new" ("OLDNAME" ("old"))', b"r OK Completed"])

    def test_rename_sends_no_list_to_rev1(self):
        """An IMAP4rev1 client gets only the tagged OK for RENAME."""
        s = rev1()
        s.command(b"c CREATE old")
        self.assertEqual(s.command(b"r RENAME old new"), b"r OK Completed\r\n")

    def test_mailbox_names_are_utf8(self):
        """Mailbox names travel as UTF-8, not modified UTF-7 (RFC 9051 §5.1)."""
        s = rev2()
        s.command("c CREATE \"Entwürfe\"".encode("utf-8"))
        out = s.command(b'l LIST "" "*"')
        self.assertIn("\"Entwürfe\"".encode("utf-8"), out)


class UnsolicitedFetchTests(SynchronousTestCase):
    def test_flag_change_elsewhere_carries_uid(self):
        """An unsolicited FETCH for a flag change includes the UID (RFC 9051 §7.5.2)."""
        from mailsuite.interfaces import FlagMode
        s = rev2(select=True)
        s.store.set_flags("alice", "INBOX", [2], frozenset({"\\Seen"}), FlagMode.ADD)
        self.assertIn(b"* 2 FETCH (UID 2 FLAGS (\\Seen))", s.command(b"n NOOP"))


class BadCharsetTests(SynchronousTestCase):
    def test_search_unknown_charset_is_no_badcharset(self):
        """SEARCH CHARSET with an unknown charset is NO [BADCHARSET ...], not BAD."""
        out = rev1(select=True).command(b"a SEARCH CHARSET KOI8-R ALL")
        self.assertTrue(out.startswith(b"a NO [BADCHARSET (UTF-8 US-ASCII)] "))

    def test_sort_unknown_charset_is_no_badcharset(self):
        """SORT with an unknown charset is NO [BADCHARSET ...] (RFC 5256 §3)."""
        out = rev1(select=True).command(b"a SORT (DATE) KOI8-R ALL")
        self.assertTrue(out.startswith(b"a NO [BADCHARSET (UTF-8 US-ASCII)] "))

    def test_refusal_is_a_parse_error(self):
        """The charset refusal is a ParseError subclass, so parsers stay pure."""
        with pytest.raises(Refusal):
            parse(b"a SEARCH CHARSET KOI8-R ALL")
        self.assertTrue(issubclass(Refusal, ParseError))

    def test_refusal_does_not_count_as_error(self):
        """Unsupported charsets do not count towards the session's error limit."""
        s = rev1(select=True)
        s.command(b"a SEARCH CHARSET KOI8-R ALL")
        self.assertEqual(s.server._errors, 0)
