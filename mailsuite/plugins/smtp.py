"""The SMTP component: MX (smtp), submission (STARTTLS) and submissions (implicit TLS)."""

from twisted.application.service import MultiService
from twisted.plugin import IPlugin
from zope.interface import implementer

from mailsuite.interfaces import IComponent


@implementer(IPlugin, IComponent)
class SMTPComponent:
    name = "smtp"
    listeners = ("smtp", "submission", "submissions")

    def makeService(self, suite):
        from mailsuite.smtp.server import SMTPFactory, SMTPLimits

        config = suite.config
        limits = SMTPLimits(
            max_message_size=config.smtp.max_message_size,
            max_recipients=config.smtp.max_recipients,
            max_line_length=config.smtp.max_line_length,
            max_errors=config.smtp.max_errors,
            idle_timeout=config.smtp.idle_timeout,
        )
        parent = MultiService()
        for name in suite.enabled(self.listeners):
            factory = SMTPFactory(
                hostname=config.suite.hostname,
                local_domains=suite.local_domains,
                target=suite.target,
                portal=suite.portal,
                tls=suite.tls,
                mode="mx" if name == "smtp" else "submission",
                implicit_tls=name == "submissions",
                allow_plaintext_auth=config.security.allow_plaintext_auth,
                limits=limits,
                clock=suite.reactor,
            )
            suite.listener(name, factory).setServiceParent(parent)
        return parent


component = SMTPComponent()
