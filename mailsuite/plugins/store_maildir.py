"""The ``maildir`` store backend plugin: Dovecot-compatible Maildir++."""

from twisted.plugin import IPlugin
from zope.interface import implementer

from mailsuite.interfaces import IStoreBackend


@implementer(IPlugin, IStoreBackend)
class MaildirStoreBackend:
    name = "maildir"

    def open(self, path, *, runner):
        from mailsuite.store.maildir import MaildirMailStore

        return MaildirMailStore(path, runner=runner)


backend = MaildirStoreBackend()
