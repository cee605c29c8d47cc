"""
`kill -HUP`: read the configuration again and apply what can change while running, without
dropping a single established session.

What a reload changes: the mail domains (accepted at RCPT, served by the DNS component),
the TLS certificate (new connections and STARTTLS get it; established sessions keep theirs),
the directory (read again from disk, or the external server's cache dropped), the zones
and the relay settings.  What it cannot change — listeners, store, directory backend,
data_dir — is reported in the log as needing a restart.  A configuration that does not load
is refused with one line in the log, and the running one stays.
"""

from __future__ import annotations

import signal

from twisted.application import service
from twisted.logger import Logger

from mailsuite.config import ConfigError, load_config
from mailsuite.tls import TLSError, ensure_self_signed

log = Logger()

#: Sections that need a restart to take effect.
_RESTART_SECTIONS = ("listen", "store", "directory")


def local_domains(config) -> frozenset[str]:
    """The mail domains plus every domain routed "local" in [relay] routes."""
    routed = (d for d, target in config.relay.routes.items() if target == "local")
    return frozenset(d.lower() for d in (*config.suite.domains, *routed))


def _factories(factory):
    """``factory`` and every factory it wraps (per-peer limits, TLS)."""
    seen = set()
    while factory is not None and id(factory) not in seen:
        seen.add(id(factory))
        yield factory
        factory = getattr(factory, "wrappedFactory", None)


class Reloader(service.Service):
    """Applies a new configuration to ``suite`` on SIGHUP (or when ``reload()`` is called)."""

    def __init__(self, suite, *, install_signal: bool = True):
        self.suite = suite
        self.install_signal = install_signal
        self._previous = None

    def startService(self):
        super().startService()
        if self.install_signal:
            self._previous = signal.signal(signal.SIGHUP, self._on_signal)

    def stopService(self):
        super().stopService()
        if self.install_signal and self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def _on_signal(self, signum, frame):
        # Signal handlers run between bytecodes; do the work in the reactor's own turn.
        self.suite.reactor.callFromThread(self.reload)

    def reload(self) -> bool:
        """Apply the configuration file as it is now; False when it was refused."""
        suite = self.suite
        old = suite.config
        try:
            new = load_config(old.path)
        except ConfigError as e:
            log.error("reload refused, the running configuration stays: {error}", error=str(e))
            return False
        if new.tls.certificate:
            certificate, key = new.tls.certificate, new.tls.private_key
        else:
            certificate, key = ensure_self_signed(new.suite.data_dir, new.suite.hostname)
        try:
            suite.tls.reload(certificate, key)
        except TLSError as e:
            log.error("reload refused, the running configuration stays: {error}", error=str(e))
            return False
        if new.suite.data_dir != old.suite.data_dir:
            log.warn("suite.data_dir changes at the next restart")
        for section in _RESTART_SECTIONS:
            if getattr(new, section) != getattr(old, section):
                log.warn("[{section}] changes take effect at the next restart", section=section)
        domains = local_domains(new)
        directory = suite.directory
        if hasattr(directory, "reload"):
            directory.reload()
        directory.local_domains = domains
        for listener in suite.listeners.values():
            for factory in _factories(getattr(listener, "factory", None)):
                if hasattr(factory, "local_domains"):
                    factory.local_domains = domains
        # Only what is restart-free takes the new values; the rest keeps the old ones.
        object.__setattr__(new, "listen", old.listen)
        object.__setattr__(new, "store", old.store)
        object.__setattr__(new, "directory", old.directory)
        object.__setattr__(new.suite, "data_dir", old.suite.data_dir)
        suite.config = new
        if suite.authority is not None:
            from mailsuite.dns.setup import load_zones

            try:
                suite.authority.replace(load_zones(new, directory=directory))
            except ConfigError as e:
                log.error("zones not reloaded: {error}", error=str(e))
        if suite.relay is not None:
            suite.relay.config = new.relay
        log.info("configuration reloaded from {path}: domains {domains}", path=new.path,
                 domains=", ".join(sorted(domains)))
        return True
