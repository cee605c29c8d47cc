"""The LDAP component: ldap (StartTLS) and ldaps (implicit TLS) over the embedded directory."""

from twisted.application.service import MultiService
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from mailsuite.interfaces import IComponent

log = Logger()


@implementer(IPlugin, IComponent)
class LDAPComponent:
    name = "ldap"
    listeners = ("ldap", "ldaps")

    def makeService(self, suite):
        from mailsuite.ldap.search import SearchLimits
        from mailsuite.ldap.server import LDAPFactory, LDAPLimits

        config = suite.config
        limits = LDAPLimits(
            max_message_size=config.ldap.max_message_size,
            idle_timeout=config.ldap.idle_timeout,
            search=SearchLimits(max_size=config.ldap.size_limit, max_time=config.ldap.time_limit),
        )
        parent = MultiService()
        if not hasattr(suite.directory, "entries"):
            # An external directory is served by its own LDAP server.
            log.warn("ldap listeners need the embedded directory; not started")
            return parent
        for name in suite.enabled(self.listeners):
            factory = LDAPFactory(
                hostname=config.suite.hostname,
                directory=suite.directory,
                tls=suite.tls,
                implicit_tls=name == "ldaps",
                admin_dn=config.directory.admin_dn,
                admin_password=config.directory.admin_password,
                anonymous_search=config.ldap.anonymous_search,
                allow_plaintext_auth=config.security.allow_plaintext_auth,
                limits=limits,
                clock=suite.reactor,
                throttle=getattr(suite.portal, "throttle", None),
            )
            suite.listener(name, factory).setServiceParent(parent)
        return parent


component = LDAPComponent()
