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
        from mailsuite.throttle import SendRate

        config = suite.config
        limits = SMTPLimits(
            max_message_size=config.smtp.max_message_size,
            max_recipients=config.smtp.max_recipients,
            max_line_length=config.smtp.max_line_length,
            max_errors=config.smtp.max_errors,
            idle_timeout=config.smtp.idle_timeout,
        )
        security = config.security
        # One count for all SMTP listeners: submission and submissions share the hour.
        rate = SendRate(
            suite.reactor,
            max_messages=security.max_messages_per_hour,
            max_recipients=security.max_recipients_per_hour,
            max_messages_per_client=security.max_messages_per_hour_per_ip,
            max_recipients_per_client=security.max_recipients_per_hour_per_ip,
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
                rate=rate,
            )
            suite.listener(name, factory).setServiceParent(parent)
        return parent


component = SMTPComponent()
