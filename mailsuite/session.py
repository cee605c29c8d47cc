"""The factory shape shared by the session protocols (IMAP, POP3)."""

from __future__ import annotations

from twisted.internet import protocol


class SessionFactory(protocol.Factory):
    """
    Builds one ``protocol`` session per connection, passing it the listener's settings as
    keyword arguments.  ``tls`` is the context factory for STARTTLS/STLS; on an implicit-TLS
    listener the connection is already encrypted, so no upgrade is offered.
    """

    # Listeners are logged once by the suite; per-factory start/stop lines are noise.
    noisy = False

    def __init__(self, *, tls, implicit_tls: bool = False, clock=None, **settings):
        if clock is None:
            from twisted.internet import reactor as clock
        self.tls = None if implicit_tls else tls
        self.implicit_tls = implicit_tls
        self.clock = clock
        self.settings = settings
        for name, value in settings.items():
            setattr(self, name, value)

    def buildProtocol(self, addr):
        session = self.protocol(tls=self.tls, implicit_tls=self.implicit_tls, clock=self.clock,
                                **self.settings)
        session.factory = self
        return session
