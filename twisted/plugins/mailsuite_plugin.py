"""The twistd plugin: `twistd mailsuite --config PATH`."""

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IServiceMaker, IPlugin)
class MailsuiteServiceMaker:
    tapname = "mailsuite"
    description = "All-in-one mail and directory server (SMTP, IMAP, POP3, LDAP, DNS)."

    @property
    def options(self):
        # Imported here so that `twistd --help` stays cheap and never fails on our code.
        from mailsuite.tap import Options

        return Options

    def makeService(self, options):
        from mailsuite.tap import makeService

        return makeService(options)


serviceMaker = MailsuiteServiceMaker()
