"""
Abuse limits that outlive a connection: growing delays after failed logins, and the hourly
sending rate of authenticated submission.

Both keep their counters in an ExpiringTable: entries expire once unchanged for a while and
the table holds at most a fixed number of them, dropping the least recently changed first,
so a flood of made-up login names or client addresses costs bounded memory.  Clients are
counted by address; IPv6 clients by their /64 network, which one host usually holds whole.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.python.failure import Failure

#: Longer login names are cut to this many characters before they become a counter's key;
#: no real login is this long (an address has at most 254 octets, RFC 5321 §4.5.3.1.3).
MAX_KEY_LENGTH = 320

DEFAULT_MAX_ENTRIES = 100_000


def login_key(login) -> str:
    """The login name as a counter key: surrounding space dropped, case folded, bounded."""
    if isinstance(login, bytes):
        login = login.decode("utf-8", "replace")
    return str(login).strip().casefold()[:MAX_KEY_LENGTH]


def client_key(host) -> str | None:
    """
    The client address as a counter key: IPv4 as is (also when IPv4-mapped), IPv6 as its
    /64 network, anything else (a UNIX socket path) as given; None when unknown.
    """
    if not host:
        return None
    host = str(host)
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host[:MAX_KEY_LENGTH]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class ExpiringTable:
    """
    A mapping whose entries expire ``lifetime`` seconds after they were last stored and
    which holds at most ``max_entries``: storing one more drops the least recently stored.
    """

    def __init__(self, clock, *, lifetime: float, max_entries: int = DEFAULT_MAX_ENTRIES):
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self.clock = clock
        self.lifetime = lifetime
        self.max_entries = max_entries
        self._entries: OrderedDict = OrderedDict()  # key -> (stored at, value), oldest first

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key, default=None):
        found = self._entries.get(key)
        if found is None:
            return default
        if self.clock.seconds() - found[0] >= self.lifetime:
            del self._entries[key]
            return default
        return found[1]

    def put(self, key, value) -> None:
        now = self.clock.seconds()
        self._entries[key] = (now, value)
        self._entries.move_to_end(key)
        # Oldest first: expired entries are all at the front.
        while self._entries:
            stored_at = next(iter(self._entries.values()))[0]
            if len(self._entries) <= self.max_entries and now - stored_at < self.lifetime:
                break
            self._entries.popitem(last=False)

    def pop(self, key, default=None):
        found = self._entries.pop(key, None)
        return default if found is None else found[1]


# --------------------------------------------------------------------------- authentication


@dataclass
class Attempt:
    """One authentication attempt as the throttle sees it; ``delay`` is seconds to wait."""

    keys: tuple
    delay: float = 0.0
    # Keys already charged with this attempt as a failure (those that were over their
    # threshold when it began), so that concurrent attempts pay growing delays too.
    charged: set = field(default_factory=set)
    done: bool = False


class AuthThrottle:
    """
    Delays authentication once a login name or a client has failed too often.

    Failures are counted per login name (as given, case folded) and per client address.
    Once a counter reaches its threshold (``threshold`` for a login name,
    ``threshold_per_client`` for an address), every further attempt it touches waits
    ``first_delay``, then twice that, and so on up to ``max_delay``, before it is even
    checked: a right password costs the same wait as a wrong one, so the answer's timing
    tells nothing.  A counter is forgotten once ``window`` seconds pass without a failure;
    a successful login resets the login name's counter (not the address's, or one valid
    account would clear an attacker's record).
    """

    def __init__(self, clock, *, threshold: int = 5, threshold_per_client: int = 20,
                 window: float = 900.0, first_delay: float = 1.0, max_delay: float = 30.0,
                 max_entries: int = DEFAULT_MAX_ENTRIES):
        if threshold <= 0 or threshold_per_client <= 0:
            raise ValueError("thresholds must be positive")
        self.clock = clock
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._thresholds = {"login": threshold, "client": threshold_per_client}
        self._failures = ExpiringTable(clock, lifetime=window, max_entries=max_entries)

    def failures(self, *, login=None, client=None) -> int:
        """The failures currently counted against a login name or a client address."""
        key = ("login", login_key(login)) if login is not None else ("client", client_key(client))
        return self._failures.get(key, 0)

    def begin(self, login, client=None) -> Attempt:
        """Start an attempt for ``login`` from ``client`` (an address, or None)."""
        keys = [("login", login_key(login))]
        if client_key(client) is not None:
            keys.append(("client", client_key(client)))
        attempt = Attempt(tuple(keys))
        for key in attempt.keys:
            failures = self._failures.get(key, 0)
            over = failures - self._thresholds[key[0]]
            if over >= 0:
                attempt.delay = max(attempt.delay, self._delay(over))
                self._failures.put(key, failures + 1)
                attempt.charged.add(key)
        return attempt

    def guarded(self, login, client, check) -> defer.Deferred:
        """
        Run ``check()`` (which may return a Deferred) as one attempt: after the attempt's
        delay, on the clock.  A falsy result counts as a failure, a true one as a success,
        an exception as neither.  For password checks outside the Portal (an LDAP bind).
        """
        attempt = self.begin(login, client)
        waited = defer.Deferred()
        if attempt.delay > 0:
            self.clock.callLater(attempt.delay, waited.callback, None)
        else:
            waited.callback(None)

        def counted(result):
            if isinstance(result, Failure):
                self.abandoned(attempt)
            elif result:
                self.succeeded(attempt)
            else:
                self.failed(attempt)
            return result

        return waited.addCallback(lambda _: check()).addBoth(counted)

    def _delay(self, over: int) -> float:
        if self.first_delay >= self.max_delay:
            return self.max_delay
        # 2**over overflows nothing below 64; the cap is reached long before.
        return min(self.max_delay, self.first_delay * 2 ** min(over, 63))

    def failed(self, attempt: Attempt) -> None:
        """The credentials were wrong (or the login unknown)."""
        if attempt.done:
            return
        attempt.done = True
        for key in attempt.keys:
            if key not in attempt.charged:
                self._failures.put(key, self._failures.get(key, 0) + 1)

    def succeeded(self, attempt: Attempt) -> None:
        """The credentials were right: the login name's counter starts again."""
        if attempt.done:
            return
        attempt.done = True
        for key in attempt.keys:
            if key[0] == "login":
                self._failures.pop(key)
            elif key in attempt.charged:
                self._refund(key)

    def abandoned(self, attempt: Attempt) -> None:
        """The credentials could not be checked (the directory failed): nothing counts."""
        if attempt.done:
            return
        attempt.done = True
        for key in attempt.charged:
            self._refund(key)

    def _refund(self, key) -> None:
        failures = self._failures.get(key, 0)
        if failures > 1:
            self._failures.put(key, failures - 1)
        else:
            self._failures.pop(key)


# --------------------------------------------------------------------------- sending rate


class _History:
    """What one account or client sent within the period: (time, recipients) per message."""

    __slots__ = ("sent", "recipients")

    def __init__(self):
        self.sent: deque = deque()
        self.recipients = 0

    def prune(self, since: float) -> None:
        while self.sent and self.sent[0][0] <= since:
            self.recipients -= self.sent.popleft()[1]


@dataclass
class Sending:
    """A message counted against the rate; ``cancel`` it if it was not accepted after all."""

    entries: list  # (history, record) pairs


class SendRate:
    """
    Messages and recipients per ``period`` (an hour) for each authenticated account and
    each client address.  0 means no limit.  A message is counted when it is accepted,
    with its recipients; what has been counted falls out of the total ``period`` seconds
    later (a sliding window).
    """

    MESSAGES = "messages"
    RECIPIENTS = "recipients"

    def __init__(self, clock, *, max_messages: int = 0, max_recipients: int = 0,
                 max_messages_per_client: int = 0, max_recipients_per_client: int = 0,
                 period: float = 3600.0, max_entries: int = DEFAULT_MAX_ENTRIES):
        self.clock = clock
        self.period = period
        self._limits = {
            "account": (max_messages, max_recipients),
            "client": (max_messages_per_client, max_recipients_per_client),
        }
        self._histories = ExpiringTable(clock, lifetime=period, max_entries=max_entries)

    @property
    def enabled(self) -> bool:
        return any(any(limits) for limits in self._limits.values())

    def _keys(self, account, client) -> list:
        keys = []
        if account is not None and any(self._limits["account"]):
            keys.append(("account", str(account)))
        client = client_key(client)
        if client is not None and any(self._limits["client"]):
            keys.append(("client", client))
        return keys

    def _history(self, key, *, create: bool) -> _History | None:
        history = self._histories.get(key)
        if history is None and create:
            history = _History()
            self._histories.put(key, history)
        if history is not None:
            history.prune(self.clock.seconds() - self.period)
        return history

    def refusal(self, account, client, *, messages: int = 1, recipients: int = 0) -> str | None:
        """
        MESSAGES or RECIPIENTS if ``messages`` more messages with ``recipients`` more
        recipients would go over a limit of ``account`` or ``client``; else None.
        """
        for key in self._keys(account, client):
            max_messages, max_recipients = self._limits[key[0]]
            history = self._history(key, create=False)
            sent = len(history.sent) if history is not None else 0
            counted = history.recipients if history is not None else 0
            if max_messages and sent + messages > max_messages:
                return self.MESSAGES
            if max_recipients and counted + recipients > max_recipients:
                return self.RECIPIENTS
        return None

    def count(self, account, client, *, recipients: int) -> Sending | str:
        """
        Count one message with ``recipients`` recipients, or answer MESSAGES or RECIPIENTS
        (and count nothing) if it would go over a limit.
        """
        refused = self.refusal(account, client, messages=1, recipients=recipients)
        if refused is not None:
            return refused
        entries = []
        now = self.clock.seconds()
        for key in self._keys(account, client):
            history = self._history(key, create=True)
            record = (now, recipients)
            history.sent.append(record)
            history.recipients += recipients
            # Stored again so that the entry's lifetime starts from its last message.
            self._histories.put(key, history)
            entries.append((history, record))
        return Sending(entries)

    def cancel(self, sending: Sending) -> None:
        """Take back a message counted by ``count`` that was not accepted after all."""
        for history, record in sending.entries:
            try:
                history.sent.remove(record)
            except ValueError:
                continue  # already out of the window
            history.recipients -= record[1]
        sending.entries = []
