"""The POP3 component: pop3 (STLS) and pop3s (implicit TLS)."""

from twisted.application.service import MultiService
from twisted.plugin import IPlugin
from zope.interface import implementer

from mailsuite.interfaces import IComponent


@implementer(IPlugin, IComponent)
class POP3Component:
    name = "pop3"
    listeners = ("pop3", "pop3s")

    def makeService(self, suite):
        from mailsuite.pop3.server import POP3Factory, POP3Limits

        config = suite.config
        limits = POP3Limits(
            max_errors=config.pop3.max_errors,
            idle_timeout=config.pop3.idle_timeout,
        )
        parent = MultiService()
        for name in suite.enabled(self.listeners):
            factory = POP3Factory(
                hostname=config.suite.hostname,
                portal=suite.portal,
                tls=suite.tls,
                implicit_tls=name == "pop3s",
                allow_plaintext_auth=config.security.allow_plaintext_auth,
                limits=limits,
                clock=suite.reactor,
            )
            suite.listener(name, factory).setServiceParent(parent)
        return parent


component = POP3Component()
