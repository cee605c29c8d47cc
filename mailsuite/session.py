"""What the session protocols (IMAP, POP3) share: the factory shape and the idle timer."""

from __future__ import annotations

from twisted.internet import protocol

from mailsuite.auth import client_portal


class SessionFactory(protocol.Factory):
    """
    Builds one ``protocol`` session per connection, passing it the listener's settings as
    keyword arguments; a ``portal`` among them is handed over bound to the client's
    address, so failed logins count against it.  ``tls`` is the context factory for
    STARTTLS/STLS; on an implicit-TLS listener the connection is already encrypted, so no
    upgrade is offered.
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
        settings = self.settings
        if "portal" in settings:
            # Logins count against the client's address too (see ThrottledPortal).
            settings = {**settings,
                        "portal": client_portal(settings["portal"], getattr(addr, "host", None))}
        session = self.protocol(tls=self.tls, implicit_tls=self.implicit_tls, clock=self.clock,
                                **settings)
        session.factory = self
        return session


class IdleTimer:
    """
    The autologout timer of a session protocol (IMAP RFC 3501 §5.4, POP3 RFC 1939 §3).
    The protocol has ``clock``, ``limits.idle_timeout``, ``_closing``, ``_timer`` (None at
    first) and ``_timed_out()``, called when the client has been idle too long.
    """

    def _reset_timer(self) -> None:
        if self._closing:
            return
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.limits.idle_timeout)
        else:
            self._timer = self.clock.callLater(self.limits.idle_timeout, self._timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
