"""The IMAP component: imap (STARTTLS) and imaps (implicit TLS)."""

from twisted.application.service import MultiService
from twisted.plugin import IPlugin
from zope.interface import implementer

from mailsuite.interfaces import IComponent


@implementer(IPlugin, IComponent)
class IMAPComponent:
    name = "imap"
    listeners = ("imap", "imaps")

    def makeService(self, suite):
        from mailsuite.imap.server import IMAPFactory, IMAPLimits

        config = suite.config
        limits = IMAPLimits(
            max_line_length=config.imap.max_line_length,
            max_literal_size=config.imap.max_literal_size,
            max_errors=config.imap.max_errors,
            idle_timeout=config.imap.idle_timeout,
        )
        parent = MultiService()
        for name in suite.enabled(self.listeners):
            factory = IMAPFactory(
                hostname=config.suite.hostname,
                portal=suite.portal,
                tls=suite.tls,
                implicit_tls=name == "imaps",
                allow_plaintext_auth=config.security.allow_plaintext_auth,
                limits=limits,
                clock=suite.reactor,
                quota_for=lambda account: account_quota(account, config.store.quota),
            )
            suite.listener(name, factory).setServiceParent(parent)
        return parent


def account_quota(account, default):
    """The account's own limit (``mailQuota``) if it has one, else [store] quota."""
    return account.quota if account.quota is not None else default


component = IMAPComponent()
