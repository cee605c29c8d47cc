"""
The delivery router: where an accepted message goes.

Recipients in a local domain are resolved against the directory and stored into each account's
INBOX; every other recipient (and every forward the directory names) goes into the outbound
queue as one entry.  A commit either stores every copy durably or leaves nothing behind.
"""

from __future__ import annotations

import errno

import re

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailsuite.interfaces import (
    DeliveryError,
    Envelope,
    IDelivery,
    IDeliveryTarget,
    QuotaExceeded,
    RecipientKind,
    StoreError,
    StoreUnavailable,
)

log = Logger()

INBOX = "INBOX"

# RFC 5321 §6.3: a message that has passed through too many hops is looping.
MAX_RECEIVED_HEADERS = 30

# (code, enhanced status, text shown to the client)
USER_UNKNOWN = (550, "5.1.1", "User unknown")
BAD_ADDRESS = (501, "5.1.3", "Bad recipient address syntax")
BAD_SEQUENCE = (503, "5.5.1", "Bad sequence of commands")
NO_RECIPIENTS = (554, "5.5.1", "No valid recipients")
MAIL_LOOP = (554, "5.4.6", "Mail loop detected")
TEMPORARY_FAILURE = (451, "4.3.0", "Temporary failure, try again later")
STORAGE_FULL = (452, "4.3.1", "Insufficient system storage")
MAILBOX_FULL = (552, "5.2.2", "Mailbox full")

_RECEIVED = re.compile(rb"received[ \t]*:", re.IGNORECASE)


def _error(reply: tuple[int, str, str]) -> DeliveryError:
    return DeliveryError(*reply)


def count_received_headers(data: bytes) -> int:
    """How many ``Received:`` fields the header section of ``data`` holds."""
    # RFC 5322 §2.1: an empty line ends the header section; only that part is looked at.
    ends = [i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0]
    header = data[: min(ends)] if ends else data
    return sum(1 for line in header.splitlines() if _RECEIVED.match(line))


def split_address(address: str) -> tuple[str, str]:
    """(local part, domain) of an address; the domain is empty when there is no '@'."""
    local, at, domain = address.rpartition("@")
    if not at:
        return address, ""
    return local, domain


@implementer(IDeliveryTarget)
class Router:
    """
    See IDeliveryTarget.  Local domains (``directory.local_domains``) go to ``store``; every
    other address, and forwards to remote addresses, go to ``queue`` (an OutboundQueue).
    """

    def __init__(self, *, directory, store, queue, own_names=(), on_queued=None):
        self.directory = directory
        self.store = store
        self.queue = queue
        # This server's host names: an account whose mailHost is another node is relayed
        # there instead of stored here.  Empty: every account is stored here.
        self.own_names = frozenset(n.lower() for n in own_names)
        # Called with each new queue id, so the relay starts on it at once.
        self.on_queued = on_queued
        # Commits under way: a shutdown waits for them before the store closes.
        self.in_flight: set[defer.Deferred] = set()

    def homed_elsewhere(self, account) -> bool:
        host = (account.mail_host or "").lower()
        return bool(host and self.own_names and host not in self.own_names)

    def start(self, envelope: Envelope) -> "RoutedDelivery":
        return RoutedDelivery(self, envelope)


_OPEN = "open"
_COMMITTING = "committing"
_DONE = "done"
_ABORTED = "aborted"


@implementer(IDelivery)
class RoutedDelivery:
    """
    See IDelivery.  After a successful commit, ``accounts`` holds the uids stored into and
    ``queue_id`` the outbound queue entry (None when nothing went remote).
    """

    def __init__(self, router: Router, envelope: Envelope):
        self._router = router
        self.envelope = envelope
        # lower-case key -> address as given; dicts keep the order recipients arrived in
        self._local: dict[str, str] = {}
        self._remote: dict[str, str] = {}
        # lower-case key -> RCPT parameters worth keeping for the relay (NOTIFY, ORCPT)
        self._params: dict[str, dict] = {}
        self._data: bytes | None = None
        self._state = _OPEN
        self.accounts: tuple[str, ...] = ()
        self.queue_id: str | None = None

    # ------------------------------------------------------------------ recipients

    def add_recipient(self, address, params=None):
        if self._state != _OPEN:
            return defer.fail(_error(BAD_SEQUENCE))
        local, domain = split_address(address)
        directory = self._router.directory
        local_domains = directory.local_domains
        if not domain:
            # RFC 5321 §4.5.1: "Postmaster" without a domain must be accepted.
            if local.lower() != "postmaster" or not local_domains:
                return defer.fail(_error(BAD_ADDRESS))
            domain = min(local_domains)
            address = f"{local}@{domain}"
        if not local:
            return defer.fail(_error(BAD_ADDRESS))
        if domain.lower() not in local_domains:
            key = f"{local}@{domain.lower()}"
            self._remote.setdefault(key, address)
            kept = {k: v for k, v in (params or {}).items() if k in ("NOTIFY", "ORCPT")}
            if kept:
                self._params.setdefault(address, kept)
            return defer.succeed(None)
        key = address.lower()
        if key in self._local:
            return defer.succeed(None)
        d = self._check_local(address)

        def accepted(_):
            if self._state == _OPEN:
                self._local.setdefault(key, address)

        return d.addCallback(accepted)

    @defer.inlineCallbacks
    def _check_local(self, address):
        directory = self._router.directory
        try:
            recipient = yield defer.maybeDeferred(directory.resolve, address)
        except Exception:
            log.failure("directory lookup of {address} failed", address=address)
            raise _error(TEMPORARY_FAILURE)
        if recipient is None or recipient.kind == RecipientKind.UNKNOWN:
            raise _error(USER_UNKNOWN)
        try:
            expansion = yield defer.maybeDeferred(directory.expand, address)
        except Exception:
            log.failure("directory expansion of {address} failed", address=address)
            raise _error(TEMPORARY_FAILURE)
        if not expansion.accounts and not expansion.remote:
            # An empty group (or an alias to nothing) would swallow the message silently.
            log.warn("{address} expands to no destination", address=address)
            raise _error(USER_UNKNOWN)

    # ------------------------------------------------------------------ message

    def body(self, data):
        if self._state != _OPEN:
            return defer.fail(_error(BAD_SEQUENCE))
        self._data = data if isinstance(data, bytes) else bytes(data)
        return defer.succeed(None)

    def commit(self):
        if self._state != _OPEN or self._data is None:
            return defer.fail(_error(BAD_SEQUENCE))
        if not self._local and not self._remote:
            return defer.fail(_error(NO_RECIPIENTS))
        self._state = _COMMITTING
        data, self._data = self._data, None
        if count_received_headers(data) > MAX_RECEIVED_HEADERS:
            self._state = _DONE
            log.warn("mail loop: message {id} from {sender} refused",
                     id=self.envelope.id, sender=self.envelope.mail_from or "<>")
            return defer.fail(_error(MAIL_LOOP))
        d = self._deliver(data)
        tracked = defer.Deferred()
        self._router.in_flight.add(tracked)

        def finished(result):
            self._state = _DONE
            self._router.in_flight.discard(tracked)
            tracked.callback(None)
            return result

        return d.addBoth(finished)

    def abort(self):
        # Once a commit has started its outcome stands; before that, nothing was stored.
        if self._state == _OPEN:
            self._state = _ABORTED
            self._data = None
            self._local.clear()
            self._remote.clear()

    # ------------------------------------------------------------------ delivery

    @defer.inlineCallbacks
    def _deliver(self, data: bytes):
        accounts, remote = yield self._destinations()
        store = self._router.store
        appended: list[tuple[str, int]] = []
        queue_id = None
        try:
            for account in accounts:
                yield defer.maybeDeferred(store.ensure_account, account.uid)
                info = yield defer.maybeDeferred(store.append, account.uid, INBOX, data)
                appended.append((account.uid, info.uid))
            if remote:
                # Last, so that nothing after it can fail and a queue entry never needs
                # undoing: once queued, the relay may already be sending it.  A failed
                # enqueue leaves no entry behind.
                params = {a: self._params[a] for a in remote if a in self._params}
                queue_id = yield defer.maybeDeferred(
                    self._router.queue.enqueue, self.envelope, remote, data,
                    **({"params": params} if params else {})
                )
        except Exception:
            failure = Failure()
            if failure.check(DeliveryError, StoreError):
                log.warn("delivery of {id} from {sender} failed: {error}",
                         id=self.envelope.id, sender=self.envelope.mail_from or "<>",
                         error=str(failure.value))
            else:
                log.failure("delivery of {id} from {sender} failed", failure,
                            id=self.envelope.id, sender=self.envelope.mail_from or "<>")
            yield self._undo(appended)
            raise _reply_for(failure)
        self.accounts = tuple(account.uid for account in accounts)
        self.queue_id = queue_id
        if queue_id is not None and self._router.on_queued is not None:
            self._router.on_queued(queue_id)
        log.info(
            "delivered {id} from {sender} to {accounts}; {remote} remote, queue id {queue_id}",
            id=self.envelope.id,
            sender=self.envelope.mail_from or "<>",
            accounts=list(self.accounts),
            remote=len(remote),
            queue_id=queue_id,
        )

    @defer.inlineCallbacks
    def _destinations(self):
        """(accounts deduplicated by uid, remote addresses deduplicated) of all recipients."""
        directory = self._router.directory
        accounts = {}
        remote = dict(self._remote)
        for address in self._local.values():
            try:
                expansion = yield defer.maybeDeferred(directory.expand, address)
            except Exception:
                log.failure("directory expansion of {address} failed", address=address)
                raise _error(TEMPORARY_FAILURE)
            if not expansion.accounts and not expansion.remote:
                # Accepted at RCPT but gone since: a retry gets the proper 550 at RCPT.
                log.warn("{address} no longer expands to any destination", address=address)
                raise _error(TEMPORARY_FAILURE)
            for account in expansion.accounts:
                if self._router.homed_elsewhere(account):
                    # The account lives on another node (mailHost): relay it there.
                    remote.setdefault(account.mail.lower(), account.mail)
                else:
                    accounts.setdefault(account.uid, account)
            for forward in expansion.remote:
                local, domain = split_address(forward)
                remote.setdefault(f"{local}@{domain.lower()}", forward)
        return list(accounts.values()), list(remote.values())

    @defer.inlineCallbacks
    def _undo(self, appended):
        store = self._router.store
        for account, uid in appended:
            try:
                yield defer.maybeDeferred(store.expunge, account, INBOX, [uid])
            except Exception:
                # The copy stays: a duplicate after the client's retry beats a lost message.
                log.failure("could not remove message {uid} of {account} after a failed "
                            "delivery", uid=uid, account=account)


def _reply_for(failure: Failure) -> DeliveryError:
    if failure.check(DeliveryError):
        return failure.value
    if failure.check(QuotaExceeded):
        return _error(MAILBOX_FULL)
    if failure.check(StoreUnavailable):
        return _error(STORAGE_FULL)
    if failure.check(OSError) and failure.value.errno in (errno.ENOSPC, errno.EDQUOT):
        # The queue (or anything else) found the disk full.
        return _error(STORAGE_FULL)
    return _error(TEMPORARY_FAILURE)
