"""IMAP QUOTA with per-account limits: the directory's mailQuota is what GETQUOTAROOT reports,
and the store's refusal of a COPY over the limit is NO [OVERQUOTA]."""

from dataclasses import replace

from twisted.trial.unittest import SynchronousTestCase

from mailsuite.auth import make_portal
from mailsuite.imap.server import IMAPFactory, IMAPLimits
from mailsuite.plugins.imap import account_quota
from tests.unit.imap.imap_fakes import (
    ALICE,
    HOSTNAME,
    FakeDirectory,
    RecordingTransport,
    Session,
    TLSContext,
    deliver,
    lines,
)

KIB = 1024


class QuotaSession(Session):
    """A Session whose directory gives alice ``quota`` and whose store enforces it."""

    def __init__(self, *, quota, default=None):
        super().__init__()
        directory = FakeDirectory()
        directory.accounts["alice"] = replace(ALICE, quota=quota)
        self.store.quota_for = lambda uid: account_quota(directory.account(uid), default)
        self.factory = IMAPFactory(
            hostname=HOSTNAME, portal=make_portal(directory, self.store), tls=TLSContext(),
            implicit_tls=False, allow_plaintext_auth=True, limits=IMAPLimits(),
            clock=self.clock, quota_for=lambda account: account_quota(account, default),
        )
        self.transport = RecordingTransport()
        self.server = self.factory.buildProtocol(self.transport.getPeer())
        self.server.makeConnection(self.transport)


class AccountQuotaTests(SynchronousTestCase):
    def test_getquotaroot_reports_directory_quota(self):
        """GETQUOTAROOT gives the limit from the account's mailQuota, in KiB."""
        s = QuotaSession(quota=50 * KIB)
        deliver(s.store, "alice", b"x" * 1500)
        s.login()
        self.assertEqual(lines(s.command(b"q GETQUOTAROOT INBOX")),
                         [b'* QUOTAROOT INBOX ""', b'* QUOTA "" (STORAGE 2 50)',
                          b"q OK Completed"])

    def test_directory_quota_wins_over_config_default(self):
        """An account's mailQuota is reported instead of the [store] quota default."""
        s = QuotaSession(quota=50 * KIB, default=900 * KIB)
        s.login()
        self.assertIn(b'* QUOTA "" (STORAGE 0 50)', s.command(b'g GETQUOTA ""'))

    def test_config_default_applies_without_mail_quota(self):
        """An account without mailQuota gets the [store] quota default."""
        s = QuotaSession(quota=None, default=900 * KIB)
        s.login()
        self.assertIn(b'* QUOTA "" (STORAGE 0 900)', s.command(b'g GETQUOTA ""'))

    def test_copy_over_quota_is_overquota(self):
        """A COPY the store refuses for quota is NO [OVERQUOTA] and copies nothing."""
        s = QuotaSession(quota=2 * KIB)
        deliver(s.store, "alice", b"x" * 1500)
        s.login()
        s.select()
        self.assertIn(b"c NO [OVERQUOTA]", s.command(b"c COPY 1 Trash"))
        self.assertEqual(s.store.messages("alice", "Trash").result, [])
