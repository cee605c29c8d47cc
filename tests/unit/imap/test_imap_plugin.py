"""The imap component plugin."""

from types import SimpleNamespace

from mailsuite.config import IMAPConfig, StoreConfig

from twisted.application.service import Service
from zope.interface.verify import verifyObject

from mailsuite.imap.server import IMAPFactory
from mailsuite.interfaces import Account, IComponent
from mailsuite.plugins.imap import component


class FakeSuite:
    """What a component asks of mailsuite.tap.Suite."""

    def __init__(self, quota=None, **listen):
        self.config = SimpleNamespace(
            suite=SimpleNamespace(hostname="mail.example.test"),
            security=SimpleNamespace(allow_plaintext_auth=False),
            imap=IMAPConfig(),
            store=StoreConfig(quota=quota),
            listen=SimpleNamespace(imap=listen.get("imap", ""), imaps=listen.get("imaps", "")),
        )
        self.portal = object()
        self.tls = object()
        self.reactor = object()
        self.factories = {}

    def enabled(self, names):
        return [n for n in names if getattr(self.config.listen, n, "")]

    def listener(self, name, factory):
        self.factories[name] = factory
        return Service()


def test_component_provides_icomponent():
    """The plugin object provides IComponent with name "imap" and both listeners."""
    verifyObject(IComponent, component)
    assert component.name == "imap"
    assert component.listeners == ("imap", "imaps")


def test_one_factory_per_enabled_listener():
    """Each enabled listener gets an IMAPFactory; imaps is implicit TLS without STARTTLS."""
    suite = FakeSuite(imap="tcp:port=143", imaps="tcp:port=993")
    component.makeService(suite)
    assert set(suite.factories) == {"imap", "imaps"}
    assert all(isinstance(f, IMAPFactory) for f in suite.factories.values())
    assert suite.factories["imap"].tls is suite.tls
    assert suite.factories["imaps"].implicit_tls and suite.factories["imaps"].tls is None


def test_disabled_listener_gets_no_factory():
    """A listener left empty in [listen] is not served."""
    suite = FakeSuite(imap="tcp:port=143")
    component.makeService(suite)
    assert set(suite.factories) == {"imap"}


def test_store_quota_reaches_the_factory():
    """[store] quota becomes the limit IMAP reports for an account without its own."""
    suite = FakeSuite(quota=2 * 1024**3, imap="tcp:port=0")
    component.makeService(suite)
    factory = suite.factories["imap"]
    assert factory.quota_for(Account("a", "a@example.test", "uid=a")) == 2 * 1024**3
    assert FakeSuite(imap="tcp:port=0").factories == {}
    unlimited = FakeSuite(imap="tcp:port=0")
    component.makeService(unlimited)
    assert unlimited.factories["imap"].quota_for(Account("a", "a@example.test", "uid=a")) is None


def test_account_quota_wins_over_store_quota():
    """An account's mailQuota is the limit IMAP reports, whatever [store] quota says."""
    suite = FakeSuite(quota=2 * 1024**3, imap="tcp:port=0")
    component.makeService(suite)
    account = Account("a", "a@example.test", "uid=a", quota=5000)
    assert suite.factories["imap"].quota_for(account) == 5000
