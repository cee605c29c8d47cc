"""
`twistd mailsuite`: read the config, build the shared services (directory, store, portal,
TLS, delivery) and ask every component plugin for its service.
"""

from __future__ import annotations

import json
import os
import sys

from twisted.application import service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.plugin import getPlugins
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage
from twisted.python.threadpool import ThreadPool

from mailsuite import plugins as plugin_package
from mailsuite.auth import make_portal
from mailsuite.config import (
    IMPLICIT_TLS_LISTENERS,
    Config,
    ConfigError,
    load_config,
)
from mailsuite.interfaces import (
    Account,
    DirectoryError,
    IComponent,
    IStoreBackend,
    StoreError,
)
from mailsuite.limits import PerPeerLimit
from mailsuite.reload import Reloader, local_domains
from mailsuite.shutdown import wait_within
from mailsuite.tls import ReloadableTLS, TLSError, ensure_self_signed, load_context_factory

DEFAULT_CONFIG = "/etc/mailsuite/mailsuite.toml"

log = Logger()


class Options(usage.Options):
    synopsis = "[--config PATH]"
    longdesc = "Run the mailsuite mail and directory server."
    optParameters = [
        ["config", "c", DEFAULT_CONFIG, "The TOML configuration file."],
    ]


def makeService(options) -> service.MultiService:
    """
    Build the whole suite.  A configuration that cannot be used ends the start here, with
    one line on stderr and exit status 1, before anything listens.
    """
    from twisted.internet import reactor

    try:
        config = load_config(options["config"])
        suite = build_suite(config, reactor=reactor)
    except (ConfigError, TLSError, DirectoryError, StoreError) as e:
        sys.stderr.write(f"mailsuite: {e}\n")
        raise SystemExit(1)
    parent = getattr(options, "parent", None)
    uid = parent.get("uid") if parent is not None else None
    gid = parent.get("gid") if parent is not None else None
    if uid is not None and os.getuid() == 0:
        # `twistd --uid/--gid`: ports are bound as root, then twistd switches user; every file
        # below data_dir (and the store) must belong to that user by then.
        hand_over(config, uid, gid if gid is not None else -1)
    return suite.service


def hand_over(config: Config, uid: int, gid: int) -> None:
    """
    Give data_dir and the store, and everything in them, to ``uid``/``gid``.  Only what
    someone else owns is changed: after the first start that is a few files, not every
    message (a chown rewrites the inode even when nothing changes).
    """
    for top in dict.fromkeys((config.suite.data_dir, config.store_path)):
        if not os.path.exists(top):
            continue
        _give(top, uid, gid)
        for folder, subfolders, files in os.walk(top):
            for name in subfolders + files:
                _give(os.path.join(folder, name), uid, gid)


def _give(path: str, uid: int, gid: int) -> None:
    status = os.lstat(path)
    if status.st_uid != uid or (gid != -1 and status.st_gid != gid):
        os.chown(path, uid, gid, follow_symlinks=False)


class Suite:
    """
    The running suite as the component plugins see it: configuration, the shared services,
    and a way to add listeners.
    """

    def __init__(self, config: Config, *, reactor, tls, directory, store, queue, target,
                 portal, runner):
        self.config = config
        self.reactor = reactor
        self.tls = tls
        self.directory = directory
        self.store = store
        self.queue = queue
        self.target = target
        self.portal = portal
        self.runner = runner
        # Set by build_suite: the local zones, the caching resolver behind the dns
        # component, and the twisted.names IResolver every component looks names up with.
        self.authority = None
        self.resolver = None
        self.name_resolver = None
        self.relay = None
        self.reloader = None
        self.service = service.MultiService()
        self.listeners: dict[str, Listener] = {}

    @property
    def local_domains(self) -> frozenset[str]:
        return local_domains(self.config)

    def enabled(self, names) -> list[str]:
        """Which of the listener names are switched on in [listen]."""
        return [n for n in names if getattr(self.config.listen, n, "")]

    def listener(self, name: str, factory) -> "Listener":
        """
        A service listening on the endpoint configured as ``listen.<name>`` with ``factory``.
        Implicit-TLS listeners (submissions, imaps, pop3s, ldaps) given as plain tcp: endpoints
        are wrapped in TLS with the suite's certificate; every listener limits the connections
        one client address may hold ([security] max_connections_per_ip).
        """
        description = getattr(self.config.listen, name)
        if name in IMPLICIT_TLS_LISTENERS and not description.startswith("ssl:"):
            factory = TLSMemoryBIOFactory(self.tls, False, factory)
        # Outermost, so a client over its limit is dropped before any TLS handshake.
        factory = PerPeerLimit(factory, limit=self.config.security.max_connections_per_ip,
                               name=name, max_send_buffer=self.config.security.max_send_buffer,
                               clock=self.reactor)
        listener = Listener(name, serverFromString(self.reactor, description), factory)
        self.listeners[name] = listener
        return listener


class Listener(service.Service):
    """
    Listens on one endpoint.  Binding happens in privilegedStartService (so `twistd --uid`
    can bind ports below 1024 first) and a failure to bind stops the start.
    """

    def __init__(self, name, endpoint, factory):
        self.setName(name)
        self.endpoint = endpoint
        self.factory = factory
        self.port = None

    def privilegedStartService(self):
        super().privilegedStartService()
        result = []
        self.endpoint.listen(self.factory).addBoth(result.append)
        if not result:
            raise RuntimeError(f"listener {self.name}: endpoint did not bind synchronously")
        if isinstance(result[0], Exception) or hasattr(result[0], "raiseException"):
            result[0].raiseException()
        self.port = result[0]

    def startService(self):
        if self.port is None:
            self.privilegedStartService()
        super().startService()

    def stopService(self):
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return defer.maybeDeferred(port.stopListening)

    def address(self) -> str:
        host = self.port.getHost()
        if hasattr(host, "port"):
            return f"{host.host}:{host.port}"
        return str(getattr(host, "name", host))


class _ListeningReport(service.Service):
    """
    Writes <data_dir>/run/listening.json once every listener is bound, so administrators and
    tests see the real ports (also for port=0 endpoints).
    """

    def __init__(self, suite: Suite):
        self.suite = suite
        self.path = suite.config.data_path("run", "listening.json")

    def startService(self):
        super().startService()
        addresses = {name: l.address() for name, l in self.suite.listeners.items() if l.port}
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        temporary = self.path + ".tmp"
        with open(temporary, "w") as f:
            json.dump({"pid": os.getpid(), "listeners": addresses}, f)
        os.replace(temporary, self.path)
        for name, address in sorted(addresses.items()):
            log.info("listening for {listener} on {address}", listener=name, address=address)

    def stopService(self):
        super().stopService()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class _Deliveries(service.Service):
    """
    At shutdown, after the listeners have stopped accepting, waits (at most ``grace``
    seconds) for the deliveries being committed, so a message whose data is in gets its
    250 and is on disk before the store closes.
    """

    def __init__(self, router, reactor, grace: float = 30.0):
        self.router = router
        self.reactor = reactor
        self.grace = grace

    def stopService(self):
        super().stopService()
        if self.router.in_flight:
            log.info("waiting for {count} deliveries under way",
                     count=len(self.router.in_flight))
        return wait_within(self.reactor, self.router.in_flight, self.grace)


class _Resources(service.Service):
    """
    Owns the thread pool that blocking disk work (store, queue, password hashing) runs in,
    and the objects using it: at shutdown they are closed first, then the pool stops.
    """

    def __init__(self, pool: ThreadPool, *closables):
        self.pool = pool
        self.closables = closables

    def startService(self):
        super().startService()
        self.pool.start()

    def stopService(self):
        super().stopService()
        closing = defer.gatherResults(
            [defer.maybeDeferred(c.close) for c in self.closables if hasattr(c, "close")],
            consumeErrors=True,
        )
        closing.addErrback(lambda failure: log.failure("closing the store failed", failure))
        closing.addBoth(lambda _: self.pool.stop())
        return closing


def store_backends() -> dict:
    return {backend.name: backend for backend in getPlugins(IStoreBackend, plugin_package)}


def components() -> list:
    return sorted(getPlugins(IComponent, plugin_package), key=lambda c: c.name)


def open_directory(config: Config, *, runner=None, reactor=None):
    """The directory named by [directory]; also used by the admin command."""
    from mailsuite.directory.embedded import EmbeddedDirectory

    if config.directory.backend == "ldap":
        return _open_external_directory(config, reactor=reactor)
    if config.directory.backend != "embedded":
        raise ConfigError(config.path, "directory.backend",
                          f"backend {config.directory.backend!r} is not available in this version")
    seed = None
    if config.directory.seed_ldif:
        with open(config.directory.seed_ldif, "rb") as f:
            seed = f.read()
    os.makedirs(config.suite.data_dir, mode=0o750, exist_ok=True)
    return EmbeddedDirectory(
        config.data_path("directory.sqlite"),
        # A domain routed "local" in [relay] routes is delivered here like the mail domains.
        domains=sorted(local_domains(config)),
        base_dn=config.directory.base_dn,
        seed_ldif=seed,
        runner=runner,
    )


def _open_external_directory(config: Config, *, reactor):
    from mailsuite.directory.external import ExternalDirectory

    if reactor is None:
        # The admin command runs without a reactor: accounts live on the LDAP server.
        raise DirectoryError("the directory is an external LDAP server: "
                             "change accounts with that server's own tools")
    d = config.directory
    return ExternalDirectory(
        reactor=reactor, url=d.url, base_dn=d.base_dn, domains=sorted(local_domains(config)),
        bind_dn=d.bind_dn, bind_password=d.bind_password, user_filter=d.user_filter,
        group_filter=d.group_filter, uid_attribute=d.uid_attribute,
        mail_attribute=d.mail_attribute, alias_attribute=d.alias_attribute,
        forward_attribute=d.forward_attribute, starttls=d.starttls, ca_file=d.ca_file,
        tls_verify=d.tls_verify, timeout=d.timeout, cache_ttl=d.cache_ttl,
    )


def open_store(config: Config, *, runner):
    backends = store_backends()
    backend = backends.get(config.store.backend)
    if backend is None:
        raise ConfigError(config.path, "store.backend",
                          f"unknown backend {config.store.backend!r} "
                          f"(available: {', '.join(sorted(backends))})")
    os.makedirs(config.store_path, mode=0o750, exist_ok=True)
    return backend.open(config.store_path, runner=runner)


def open_queue(config: Config, *, runner):
    from mailsuite.smtp.queue import OutboundQueue

    os.makedirs(config.data_path("queue"), mode=0o750, exist_ok=True)
    return OutboundQueue(config.data_path("queue"), runner=runner)


def account_quota(directory, default: int | None):
    """``quota_for`` for the store: account uid -> the account's ``mailQuota``, else
    ``default`` ([store] quota).  A directory answering with a Deferred (the external one)
    is used only when the answer is already there (its cache); otherwise ``default``."""

    def quota_for(uid):
        found = directory.account(uid)
        if isinstance(found, defer.Deferred):
            box = []
            found.addBoth(box.append)
            found = box[0] if box else None
            if not isinstance(found, Account):
                # A failure here was consumed on purpose: the default applies instead.
                return default
        if found is not None and found.quota is not None:
            return found.quota
        return default

    return quota_for


def build_suite(config: Config, *, reactor, install_signals: bool = True) -> Suite:
    """Assemble every service of the suite from a validated Config."""
    from mailsuite.dns.client import SuiteResolver
    from mailsuite.dns.setup import build_dns
    from mailsuite.smtp.delivery import Router
    from mailsuite.smtp.relay import Relay
    from mailsuite.store.base import threadpool_runner

    _check_listeners(config)
    os.makedirs(config.suite.data_dir, mode=0o750, exist_ok=True)
    if config.tls.certificate:
        certificate, key = config.tls.certificate, config.tls.private_key
    else:
        certificate, key = ensure_self_signed(config.suite.data_dir, config.suite.hostname)
    tls = ReloadableTLS(certificate, key)

    pool = ThreadPool(minthreads=1, maxthreads=config.store.threads, name="mailsuite-io")
    runner = threadpool_runner(reactor, pool)
    directory = open_directory(config, runner=runner, reactor=reactor)
    store = open_store(config, runner=runner)
    store.quota_for = account_quota(directory, config.store.quota)
    queue = open_queue(config, runner=runner)
    router = Router(directory=directory, store=store, queue=queue,
                    own_names=(config.suite.hostname,))
    suite = Suite(
        config,
        reactor=reactor,
        tls=tls,
        directory=directory,
        store=store,
        queue=queue,
        target=router,
        portal=make_portal(directory, store, security=config.security, clock=reactor),
        runner=runner,
    )
    suite.authority, suite.resolver = build_dns(config, reactor=reactor, directory=directory)
    suite.name_resolver = SuiteResolver(suite.resolver)
    suite.relay = Relay(queue=queue, router=router, resolver=suite.name_resolver,
                        directory=directory, config=config.relay,
                        hostname=config.suite.hostname, reactor=reactor, runner=runner)
    router.on_queued = suite.relay.queued
    # Stop order is the reverse of start order: listeners stop first, then the relay
    # (waiting for deliveries under way), the pool and the store last, so in-flight work
    # finishes against an open store.
    _Resources(pool, store, directory).setServiceParent(suite.service)
    _Deliveries(router, reactor).setServiceParent(suite.service)
    suite.relay.setServiceParent(suite.service)
    for component in components():
        if suite.enabled(component.listeners):
            component.makeService(suite).setServiceParent(suite.service)
    _ListeningReport(suite).setServiceParent(suite.service)
    suite.reloader = Reloader(suite, install_signal=install_signals)
    suite.reloader.setServiceParent(suite.service)
    return suite


def _check_listeners(config: Config) -> None:
    served = {name for component in components() for name in component.listeners}
    wanted = dict(config.listen.enabled())
    if config.listen.dns:
        wanted["dns"] = config.listen.dns
    for name in wanted:
        if name not in served:
            raise ConfigError(config.path, f"listen.{name}",
                              "no installed component serves this listener; set it to \"\"")


def check_suite(config: Config) -> list[str]:
    """
    What `mailsuite check` reports: raises like the start would on a problem, else lines
    describing what the suite would listen on and where it keeps its data.
    """
    _check_listeners(config)
    if config.tls.certificate:
        load_context_factory(config.tls.certificate, config.tls.private_key)
        certificate = config.tls.certificate
    else:
        certificate = "self-signed, generated in data_dir on first start"
    if config.store.backend not in store_backends():
        open_store(config, runner=None)  # raises the ConfigError naming the backends
    lines = [f"configuration {config.path} is valid"]
    lines += [f"  {name:<12} {description}" for name, description in config.listen.enabled().items()]
    if config.listen.dns:
        lines.append(f"  {'dns':<12} {config.listen.dns} (udp and tcp)")
    lines += [
        f"  hostname     {config.suite.hostname}",
        f"  domains      {', '.join(config.suite.domains)}",
        f"  data_dir     {config.suite.data_dir}",
        f"  directory    {config.directory.backend}",
        f"  store        {config.store.backend} in {config.store_path}",
        f"  certificate  {certificate}",
    ]
    return lines
