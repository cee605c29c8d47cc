"""ESEARCH, SEARCHRES, WITHIN, UNAUTHENTICATE, BINARY APPEND, COMPRESS=DEFLATE, QUOTA and
IMAP4rev2 behaviour."""

import zlib
from datetime import datetime, timezone

import pytest
from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from mailsuite.imap.commands.search import esearch
from tests.unit.imap.imap_fakes import Session, deliver, lines, message


def selected(count: int = 3, **kwargs) -> Session:
    s = Session(**kwargs)
    deliver(s.store, "alice", *(message(f"m{n}") for n in range(count)))
    s.login()
    s.select()
    return s


# RFC 4731 §3.1 / RFC 5182 examples of ESEARCH responses.
@pytest.mark.parametrize("found,options,uid,expected", [
    ([2, 10, 11], ("MIN", "COUNT"), False, b'* ESEARCH (TAG "A282") MIN 2 COUNT 3'),
    ([2, 10, 11, 12], ("ALL",), False, b'* ESEARCH (TAG "A282") ALL 2,10:12'),
    ([], ("MIN", "MAX", "COUNT"), False, b'* ESEARCH (TAG "A282") COUNT 0'),
    ([4, 17], ("MIN", "MAX"), True, b'* ESEARCH (TAG "A282") UID MIN 4 MAX 17'),
    ([], ("ALL",), True, b'* ESEARCH (TAG "A282") UID'),
])
def test_esearch_encoding(found, options, uid, expected):
    """ESEARCH results follow the RFC 4731 examples."""
    assert esearch("A282", found, options, uid=uid) == expected + b"\r\n"


class SearchExtensionTests(SynchronousTestCase):
    def test_search_return(self):
        """RFC 4731: SEARCH RETURN (MIN MAX COUNT) answers one ESEARCH."""
        s = selected(3)
        self.assertEqual(lines(s.command(b"A282 SEARCH RETURN (MIN MAX COUNT) ALL")),
                         [b'* ESEARCH (TAG "A282") MIN 1 MAX 3 COUNT 3', b"A282 OK Completed"])

    def test_search_return_empty_means_all(self):
        """RFC 4731 §3.1: RETURN () is RETURN (ALL)."""
        s = selected(3)
        self.assertIn(b'* ESEARCH (TAG "a") UID ALL 1:3', s.command(b"a UID SEARCH RETURN () ALL"))

    def test_unknown_return_option_is_bad(self):
        """An unknown RETURN option is BAD."""
        s = selected(1)
        self.assertIn(b"a BAD", s.command(b"a SEARCH RETURN (BOGUS) ALL"))

    def test_save_then_dollar(self):
        """RFC 5182: RETURN (SAVE) sends nothing and "$" then names the result."""
        s = selected(4)
        s.command(b"a STORE 2,4 +FLAGS (\\Flagged)")
        self.assertEqual(lines(s.command(b"b SEARCH RETURN (SAVE) FLAGGED")), [b"b OK Completed"])
        self.assertEqual(lines(s.command(b"c FETCH $ (UID)")),
                         [b"* 2 FETCH (UID 2)", b"* 4 FETCH (UID 4)", b"c OK Completed"])
        self.assertEqual(lines(s.command(b"d SEARCH $"))[0], b"* SEARCH 2 4")

    def test_save_with_min_keeps_only_min(self):
        """RFC 5182 §2.4: SAVE with MIN alone saves only the minimum."""
        s = selected(3)
        s.command(b"a SEARCH RETURN (SAVE MIN) ALL")
        self.assertEqual(lines(s.command(b"b UID SEARCH UID $"))[0], b"* SEARCH 1")

    def test_within(self):
        """RFC 5032: OLDER and YOUNGER compare the internal date with the clock."""
        now = 1_700_000_000
        clock = task.Clock()
        clock.advance(now)
        s = Session(clock=clock)
        s.store.ensure_account("alice")
        for age in (10, 1000):
            when = datetime.fromtimestamp(now - age, timezone.utc)
            s.store.append("alice", "INBOX", message(), frozenset(), when)
        s.login()
        s.select()
        self.assertEqual(lines(s.command(b"a SEARCH YOUNGER 100"))[0], b"* SEARCH 1")
        self.assertEqual(lines(s.command(b"b SEARCH OLDER 100"))[0], b"* SEARCH 2")


class SessionExtensionTests(SynchronousTestCase):
    def test_unauthenticate(self):
        """RFC 8437: UNAUTHENTICATE returns to not authenticated; LOGIN works again."""
        s = selected(1)
        s.command(b"e ENABLE CONDSTORE")
        self.assertEqual(lines(s.command(b"u UNAUTHENTICATE")), [b"u OK Not authenticated any more"])
        self.assertIn(b"BAD", s.command(b"x SELECT INBOX"))
        self.assertTrue(s.login(b"bob", b"bob secret").startswith(b"L1 OK"))
        self.assertEqual(s.server.enabled, set())

    def test_binary_append_literal8(self):
        """RFC 3516 §4.4: APPEND of a literal8 with NUL stores the bytes as sent."""
        s = Session()
        s.login()
        data = b"Subject: x\r\n\r\nA\x00B\r\n"
        s.send(b"a APPEND INBOX ~{%d}\r\n" % len(data))
        self.assertEqual(s.output(), b"+ Ready for literal data\r\n")
        s.send(data + b"\r\n")
        self.assertIn(b"a OK [APPENDUID", s.output())
        self.assertEqual(s.store.read("alice", "INBOX", 1).result, data)

    def test_nul_in_plain_literal_is_refused(self):
        """RFC 3501 §4.3: a NUL in a plain literal is BAD."""
        s = Session()
        s.login()
        s.send(b"a APPEND INBOX {3+}\r\nA\x00B\r\n")
        self.assertIn(b"a BAD", s.output())


class CompressTests(SynchronousTestCase):
    def test_deflate_both_ways(self):
        """RFC 4978: after OK, input and output are raw deflate streams."""
        s = selected(1)
        self.assertEqual(lines(s.command(b"z COMPRESS DEFLATE")), [b"z OK DEFLATE active"])
        out, inp = zlib.decompressobj(-15), zlib.compressobj(6, zlib.DEFLATED, -15)
        s.send(inp.compress(b"n NOOP\r\n") + inp.flush(zlib.Z_SYNC_FLUSH))
        self.assertEqual(out.decompress(s.output()), b"n OK Completed\r\n")
        s.send(inp.compress(b"c CAPABILITY\r\n") + inp.flush(zlib.Z_SYNC_FLUSH))
        self.assertNotIn(b"COMPRESS=DEFLATE", out.decompress(s.output()))

    def test_second_compress_is_refused(self):
        """RFC 4978 §3: COMPRESS when active is NO [COMPRESSIONACTIVE]."""
        s = selected(1)
        s.command(b"z COMPRESS DEFLATE")
        out, inp = zlib.decompressobj(-15), zlib.compressobj(6, zlib.DEFLATED, -15)
        s.send(inp.compress(b"y COMPRESS DEFLATE\r\n") + inp.flush(zlib.Z_SYNC_FLUSH))
        self.assertIn(b"y NO [COMPRESSIONACTIVE]", out.decompress(s.output()))

    def test_corrupt_stream_closes(self):
        """Corrupt compressed input ends the session."""
        s = selected(1)
        s.command(b"z COMPRESS DEFLATE")
        s.send(b"\xff\xff\xff\xff not deflate")
        self.assertTrue(s.transport.disconnecting)

    def test_unknown_mechanism(self):
        """COMPRESS with another mechanism is BAD."""
        s = selected(1)
        self.assertIn(b"z BAD", s.command(b"z COMPRESS LZ4"))


KIB = 1024


class QuotaTests(SynchronousTestCase):
    def test_no_quota(self):
        """RFC 9208 §4.3: without a limit the mailbox has no quota root."""
        s = Session()
        s.login()
        self.assertEqual(lines(s.command(b"q GETQUOTAROOT INBOX")),
                         [b"* QUOTAROOT INBOX", b"q OK Completed"])
        self.assertIn(b"q NO [NONEXISTENT]", s.command(b'q GETQUOTA ""'))

    def test_quotaroot_reports_usage_in_kib(self):
        """GETQUOTAROOT names root "" with STORAGE usage (KiB, rounded up) and limit."""
        s = Session(quota_for=lambda account: 100 * KIB)
        deliver(s.store, "alice", b"x" * 1500)
        s.login()
        self.assertEqual(lines(s.command(b"q GETQUOTAROOT INBOX")),
                         [b'* QUOTAROOT INBOX ""', b'* QUOTA "" (STORAGE 2 100)', b"q OK Completed"])
        self.assertIn(b'* QUOTA "" (STORAGE 2 100)', s.command(b'g GETQUOTA ""'))
        self.assertIn(b"QUOTA=RES-STORAGE", s.command(b"c CAPABILITY"))

    def test_setquota_refused(self):
        """SETQUOTA is NO: quotas are set by the administrator."""
        s = Session(quota_for=lambda account: KIB)
        s.login()
        self.assertIn(b"s NO", s.command(b's SETQUOTA "" (STORAGE 10)'))

    def test_append_over_quota_refused_before_literal(self):
        """RFC 9208: an APPEND that cannot fit gets NO [OVERQUOTA] instead of "+"."""
        s = Session(quota_for=lambda account: 2 * KIB)
        deliver(s.store, "alice", b"x" * 1500)
        s.login()
        s.output()
        s.send(b"a APPEND INBOX {1000}\r\n")
        self.assertEqual(s.output(), b"a NO [OVERQUOTA] Quota exceeded\r\n")
        self.assertIn(b"n OK", s.command(b"n NOOP"))

    def test_append_within_quota_accepted(self):
        """An APPEND that fits gets the continuation request."""
        s = Session(quota_for=lambda account: 2 * KIB)
        s.login()
        s.output()
        s.send(b"a APPEND INBOX {10}\r\n")
        self.assertEqual(s.output(), b"+ Ready for literal data\r\n")

    def test_nonsync_literal_over_quota(self):
        """A LITERAL+ APPEND over the limit is refused after reading, nothing stored."""
        s = Session(quota_for=lambda account: KIB)
        s.login()
        s.send(b"a APPEND INBOX {2000+}\r\n" + b"x" * 2000 + b"\r\n")
        self.assertIn(b"a NO [OVERQUOTA]", s.output())
        self.assertEqual(s.store.messages("alice", "INBOX").result, [])


class Rev2Tests(SynchronousTestCase):
    def test_capabilities_list_both_revisions(self):
        """IMAP4rev1 and IMAP4rev2 are both advertised."""
        caps = lines(Session().command(b"c CAPABILITY"))[0].split()
        self.assertIn(b"IMAP4rev1", caps)
        self.assertIn(b"IMAP4rev2", caps)

    def test_rev2_select_has_no_recent_and_a_list(self):
        """RFC 9051 §6.3.2: no RECENT, no UNSEEN code, a LIST response for the mailbox."""
        s = Session()
        deliver(s.store, "alice", message())
        s.login()
        s.command(b"e ENABLE IMAP4rev2")
        out = s.select()
        self.assertNotIn(b"RECENT", out)
        self.assertNotIn(b"[UNSEEN", out)
        self.assertIn(b'* LIST (\\HasNoChildren) "/" INBOX\r\n', out)

    def test_rev2_search_answers_esearch(self):
        """RFC 9051 §6.4.4: after ENABLE IMAP4rev2, SEARCH answers ESEARCH."""
        s = selected(2)
        s.command(b"e ENABLE IMAP4rev2")
        self.assertEqual(lines(s.command(b"a UID SEARCH ALL"))[0], b'* ESEARCH (TAG "a") UID ALL 1:2')

    def test_status_deleted(self):
        """RFC 9051 §6.3.11: STATUS DELETED and SIZE."""
        s = selected(2)
        s.command(b"a STORE 1 +FLAGS (\\Deleted)")
        self.assertIn(b"(DELETED 1 SIZE ", s.command(b"b STATUS INBOX (DELETED SIZE)"))
