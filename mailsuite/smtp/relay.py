"""
The relay: takes entries from the outbound queue and delivers them.

For each pending recipient it picks a route (a per-domain route, the smart host, the
recipient's home node for a user homed elsewhere, or the domain's MX hosts), talks SMTP to
it with mailsuite.smtp.client, and records the outcome in the entry.  Temporary failures
are retried with a doubling delay (``retry_min`` up to ``retry_max``) until the entry is
``queue_lifetime`` old; permanent failures, expiry and an administrator's ``queue bounce``
send an RFC 3464 report to the envelope sender (never to ``<>``), and a delay warning goes
out once when a message has waited ``delay_warning``.

Order of writes, so a crash loses nothing: the report is on disk (delivered or queued)
before the entry records the recipients as done, and the entry is removed only when no
recipient is pending.  A crash in between means at most a repeated delivery or report.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from twisted.application import service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from mailsuite.interfaces import DeliveryError, Envelope
from mailsuite.shutdown import wait_within
from mailsuite.smtp import dsn
from mailsuite.smtp.client import OutboundMessage, TLSPolicy, deliver
from mailsuite.smtp.mx import DestinationError, host_destinations, mx_destinations
from mailsuite.smtp.queue import NoSuchQueueEntry, QueueError, iso_time, parse_time

log = Logger()

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"

#: How often the schedule is looked at (and the admin command's wake-up stamp checked).
TICK = 1.0

#: At shutdown, deliveries under way get this long to finish; the rest stay queued and are
#: tried again after the restart (at-least-once: a remote may then see a message twice).
SHUTDOWN_GRACE = 10.0

_TLS_POLICIES = {"none": TLSPolicy.NONE, "opportunistic": TLSPolicy.OPPORTUNISTIC,
                 "verify": TLSPolicy.VERIFY}


@dataclass(frozen=True)
class Route:
    """Where a recipient goes: ``kind`` is "mx" (``host`` is the domain), "host" or "local"."""

    kind: str
    host: str = ""
    port: int = 0
    auth: tuple[str, str] | None = None


@dataclass
class Outcome:
    """What happened to one recipient in one attempt."""

    state: str  # DELIVERED, FAILED (permanent) or PENDING (temporary)
    code: int
    status: str  # enhanced status code, e.g. "5.1.1"
    text: str
    remote_mta: str | None = None


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def _status_of(code: int, enhanced: str) -> str:
    if enhanced:
        return enhanced
    return "5.0.0" if 500 <= code < 600 else "4.0.0"


class Relay(service.Service):
    """
    Delivers the entries of ``queue``.  ``router`` (an IDeliveryTarget) takes reports and
    mail routed "local"; ``resolver`` is a twisted.names IResolver; ``config`` the [relay]
    section; ``own_names`` the host names of this server (MX loop detection, mailHost).
    ``send`` is mailsuite.smtp.client.deliver (replaceable in tests).
    """

    def __init__(self, *, queue, router, resolver, directory, config, hostname: str,
                 reactor, runner, own_names=(), send=deliver):
        self.queue = queue
        self.router = router
        self.resolver = resolver
        self.directory = directory
        self.config = config
        self.hostname = hostname
        self.reactor = reactor
        self.runner = runner
        self.own_names = frozenset(n.lower() for n in (hostname, *own_names))
        self.send = send
        self._heap: list[tuple[float, str]] = []
        self._due: dict[str, float] = {}
        self._active: dict[str, defer.Deferred] = {}
        self._stamp = None
        self._loop = LoopingCall(self._tick)
        self._loop.clock = reactor

    # ------------------------------------------------------------------ service

    def startService(self):
        super().startService()
        self.queue.cleanup(min_age=3600)
        self._stamp = self.queue.wakeup_stamp()
        self._rescan()
        self._loop.start(TICK, now=True)

    def stopService(self):
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        # Deliveries under way finish before the store and queue close, within the grace time.
        return wait_within(
            self.reactor, self._active.values(), SHUTDOWN_GRACE,
            lambda: log.warn("{count} deliveries still under way at shutdown; they stay queued",
                             count=len(self._active)))

    def queued(self, queue_id: str) -> None:
        """A new entry was written: deliver it now."""
        self._schedule(queue_id, self.reactor.seconds())
        if self.running:
            self._tick()

    def busy(self) -> bool:
        """Whether a delivery is under way (tests wait on this)."""
        return bool(self._active)

    # ------------------------------------------------------------------ schedule

    def _schedule(self, queue_id: str, when: float) -> None:
        self._due[queue_id] = when
        heapq.heappush(self._heap, (when, queue_id))

    def _rescan(self) -> None:
        try:
            entries = self.queue.entries()
        except OSError as e:
            log.error("cannot read the queue: {error}", error=str(e))
            return
        for entry in entries:
            if entry.id not in self._active:
                self._schedule(entry.id, entry.next_attempt.timestamp())

    def _tick(self) -> None:
        stamp = self.queue.wakeup_stamp()
        if stamp != self._stamp:
            # The admin command flushed or bounced something: its times are in the files.
            self._stamp = stamp
            self._heap, self._due = [], {}
            self._rescan()
        now = self.reactor.seconds()
        while self._heap and len(self._active) < self.config.concurrency:
            when, queue_id = self._heap[0]
            if when > now:
                break
            heapq.heappop(self._heap)
            if self._due.get(queue_id) != when or queue_id in self._active:
                continue  # superseded by a later schedule, or already being worked on
            del self._due[queue_id]
            d = self._attempt(queue_id)
            self._active[queue_id] = d
            d.addErrback(self._failed, queue_id)
            d.addBoth(lambda _, q=queue_id: self._finished(q))

    def _failed(self, failure, queue_id: str) -> None:
        # A bug or an unreadable entry must not leave the message stranded until a restart.
        log.failure("delivery of {id} failed; trying again later", failure, id=queue_id)
        self._schedule(queue_id, self.reactor.seconds() + self.config.retry_min)

    def _finished(self, queue_id: str) -> None:
        self._active.pop(queue_id, None)
        if self.running:
            self._tick()

    # ------------------------------------------------------------------ one attempt

    @defer.inlineCallbacks
    def _attempt(self, queue_id: str):
        try:
            record = yield self.runner(self.queue.record, queue_id)
        except NoSuchQueueEntry:
            return
        except QueueError as e:
            log.error("queue entry {id}: {error}", id=queue_id, error=str(e))
            return
        now = _utc(self.reactor.seconds())
        pending = [r for r in record["recipients"] if r.get("status", PENDING) == PENDING]
        if not pending:
            yield self.runner(self.queue.finish, queue_id)
            return
        arrival = parse_time(record["received_at"])
        expires = arrival + timedelta(seconds=self.config.queue_lifetime)
        data = yield self.runner(self.queue.read, queue_id)
        if record.get("bounce_requested"):
            outcomes = {r["address"]: Outcome(FAILED, 550, "5.0.0",
                                              "returned to the sender by the postmaster")
                        for r in pending}
        elif now >= expires:
            outcomes = {r["address"]: Outcome(
                FAILED, r.get("last_code") or 450, "4.4.7",
                "message expired in the queue" + (f"; last error: {r['last_error']}"
                                                  if r.get("last_error") else ""),
                r.get("remote_mta")) for r in pending}
        else:
            outcomes = yield self._deliver_all(record, pending, data)
        yield self._report(record, data, outcomes, now, arrival, expires)
        attempts = int(record.get("attempts", 0)) + 1
        delay = min(self.config.retry_max, self.config.retry_min * 2 ** (attempts - 1))
        retry_at = min(now + timedelta(seconds=delay), expires)
        warn = self._delay_warning_due(record, outcomes, now, arrival)
        if warn:
            yield self._send_report(record, data, warn, "delayed", arrival, now, expires)

        def change(entry):
            entry["attempts"] = int(entry.get("attempts", 0)) + 1
            entry["next_attempt"] = iso_time(retry_at)
            entry.pop("bounce_requested", None)
            if warn:
                entry["delay_warned"] = True
            for recipient in entry["recipients"]:
                outcome = outcomes.get(recipient["address"])
                if outcome is None or recipient.get("status", PENDING) != PENDING:
                    continue
                recipient["status"] = outcome.state
                recipient["attempts"] = int(recipient.get("attempts", 0)) + 1
                recipient["last_code"] = outcome.code
                recipient["status_code"] = outcome.status
                recipient["last_error"] = "" if outcome.state == DELIVERED else outcome.text
                recipient["remote_mta"] = outcome.remote_mta

        try:
            updated = yield self.queue.update_async(queue_id, change)
        except NoSuchQueueEntry:
            return  # deleted by the administrator meanwhile
        if all(r.get("status", PENDING) != PENDING for r in updated["recipients"]):
            yield self.runner(self.queue.finish, queue_id)
            log.info("queue entry {id} done", id=queue_id)
        else:
            self._schedule(queue_id, retry_at.timestamp())

    def _delay_warning_due(self, record, outcomes, now, arrival):
        if record.get("delay_warned") or now - arrival < timedelta(
                seconds=self.config.delay_warning):
            return []
        return [r for r in record["recipients"]
                if outcomes.get(r["address"]) is not None
                and outcomes[r["address"]].state == PENDING]

    # ------------------------------------------------------------------ routing

    @defer.inlineCallbacks
    def _route(self, address: str):
        domain = _domain(address)
        routes = self.config.routes
        if domain in self.directory.local_domains:
            # Only users homed on another node (mailHost) are queued for a local domain.
            recipient = yield defer.maybeDeferred(self.directory.resolve, address)
            account = getattr(recipient, "account", None)
            host = (account.mail_host or "").lower() if account is not None else ""
            if host and host not in self.own_names:
                return Route("host", host, self.config.smtp_port)
            return Route("local")
        if domain in routes:
            target = routes[domain]
            if target == "local":
                return Route("local")
            host, _, port = target.rpartition(":")
            return Route("host", host.strip("[]"), int(port))
        if self.config.relayhost:
            host, _, port = self.config.relayhost.rpartition(":")
            auth = None
            if self.config.relayhost_username:
                auth = (self.config.relayhost_username, self.config.relayhost_password)
            return Route("host", host.strip("[]"), int(port), auth)
        return Route("mx", domain, self.config.smtp_port)

    @defer.inlineCallbacks
    def _deliver_all(self, record, pending, data):
        groups: dict[Route, list[dict]] = {}
        for recipient in pending:
            try:
                route = yield self._route(recipient["address"])
            except Exception as e:
                log.warn("cannot route {address}: {error}", address=recipient["address"],
                         error=str(e))
                route = None
            groups.setdefault(route, []).append(recipient)
        outcomes: dict[str, Outcome] = {}
        results = yield defer.gatherResults(
            [self._deliver_group(route, recipients, record, data)
             for route, recipients in groups.items()], consumeErrors=True)
        for result in results:
            outcomes.update(result)
        return outcomes

    @defer.inlineCallbacks
    def _deliver_group(self, route, recipients, record, data):
        addresses = [r["address"] for r in recipients]
        if route is None:
            return {a: Outcome(PENDING, 451, "4.3.0", "directory lookup failed")
                    for a in addresses}
        if route.kind == "local":
            result = yield self._deliver_locally(record, addresses, data)
            return result
        try:
            if route.kind == "mx":
                destinations = yield mx_destinations(self.resolver, route.host,
                                                     port=route.port, own_names=self.own_names)
            else:
                destinations = yield host_destinations(self.resolver, route.host, route.port)
        except DestinationError as e:
            state = FAILED if e.permanent else PENDING
            code = 550 if e.permanent else 451
            return {a: Outcome(state, code, e.status, e.text) for a in addresses}
        message = OutboundMessage(
            mail_from=record["mail_from"],
            recipients=[(r["address"], self._rcpt_params(r)) for r in recipients],
            data=data,
            mail_params=self._mail_params(record),
        )
        last = None
        for destination in destinations:
            for address in destination.addresses:
                session = yield self.send(
                    self.reactor, address, destination.port, [message],
                    helo_name=self.hostname,
                    tls=_TLS_POLICIES[self.config.tls],
                    tls_hostname=destination.hostname,
                    ca_file=self.config.ca_file or None,
                    auth=route.auth,
                    connect_timeout=self.config.connect_timeout,
                )
                results = session.results[0]
                remote = f"dns; {destination.hostname}"
                last = {r.address: Outcome(_state(r), r.code, _status_of(r.code, r.enhanced),
                                           r.text, remote) for r in results}
                if not all(_connection_failure(r) for r in results):
                    self._log_session(record, destination, address, session)
                    return last
                log.info("{host} [{address}]: {text}; trying the next host",
                         host=destination.hostname, address=address, text=results[0].text)
        return last

    def _log_session(self, record, destination, address, session):
        for result in session.results[0]:
            log.info("{id} to {rcpt} via {host} [{address}]{tls}: {code} {text}",
                     id=record["id"], rcpt=result.address, host=destination.hostname,
                     address=address, tls=" (TLS)" if session.tls else "",
                     code=result.code, text=result.text)

    @staticmethod
    def _mail_params(record) -> dict:
        params = record.get("mail_params") or {}
        wanted = {}
        for key in ("RET", "ENVID", "BODY"):
            if params.get(key):
                wanted[key] = params[key]
        if record.get("smtputf8"):
            wanted["SMTPUTF8"] = None
        return wanted

    @staticmethod
    def _rcpt_params(recipient) -> dict:
        params = {}
        if recipient.get("notify"):
            params["NOTIFY"] = recipient["notify"]
        if recipient.get("orcpt"):
            params["ORCPT"] = recipient["orcpt"]
        return params

    @defer.inlineCallbacks
    def _deliver_locally(self, record, addresses, data):
        envelope = self._envelope(record["mail_from"], record)
        outcomes = {}
        for address in addresses:
            delivery = self.router.start(envelope)
            try:
                yield delivery.add_recipient(address, {})
                yield delivery.body(data)
                yield delivery.commit()
            except DeliveryError as e:
                outcomes[address] = Outcome(FAILED if e.code >= 500 else PENDING, e.code,
                                            e.status, e.text, f"dns; {self.hostname}")
                delivery.abort()
                continue
            outcomes[address] = Outcome(DELIVERED, 250, "2.0.0", "delivered locally",
                                        f"dns; {self.hostname}")
        return outcomes

    def _envelope(self, mail_from: str, record=None) -> Envelope:
        return Envelope(
            mail_from=mail_from,
            helo=self.hostname,
            client_address="127.0.0.1",
            client_name=self.hostname,
            protocol="ESMTP",
            id=(record or {}).get("envelope_id", "") if record else "",
            received_at=_utc(self.reactor.seconds()),
        )

    # ------------------------------------------------------------------ reports

    @defer.inlineCallbacks
    def _report(self, record, data, outcomes, now, arrival, expires):
        """Failure reports (and success reports asked for with NOTIFY=SUCCESS)."""
        by_address = {r["address"]: r for r in record["recipients"]}
        failed = [by_address[a] for a, o in outcomes.items()
                  if o.state == FAILED and dsn.wants_notice(by_address[a].get("notify"),
                                                             "failed")]
        relayed = [by_address[a] for a, o in outcomes.items()
                   if o.state == DELIVERED and by_address[a].get("notify")
                   and dsn.wants_notice(by_address[a].get("notify"), "relayed")]
        if failed:
            yield self._send_report(record, data, failed, "failed", arrival, now, expires,
                                    outcomes)
        if relayed:
            yield self._send_report(record, data, relayed, "relayed", arrival, now, expires,
                                    outcomes)

    @defer.inlineCallbacks
    def _send_report(self, record, data, recipients, action, arrival, now, expires,
                     outcomes=None):
        sender = record["mail_from"]
        if not sender:
            log.info("{id}: no {action} report, the sender is <>", id=record["id"],
                     action=action)
            return
        outcomes = outcomes or {}
        statuses = []
        for recipient in recipients:
            outcome = outcomes.get(recipient["address"])
            code = outcome.code if outcome else recipient.get("last_code")
            text = outcome.text if outcome else recipient.get("last_error") or "delayed"
            status = outcome.status if outcome else recipient.get("status_code") or "4.0.0"
            remote = outcome.remote_mta if outcome else recipient.get("remote_mta")
            statuses.append(dsn.RecipientStatus(
                address=recipient["address"],
                original=dsn.decode_xtext(recipient["orcpt"]) if recipient.get("orcpt") else None,
                action=action,
                status="2.0.0" if action == "relayed" else status,
                diagnostic=f"smtp; {code} {text}" if code else None,
                remote_mta=remote,
                last_attempt=now,
                will_retry_until=expires if action == "delayed" else None,
            ))
        params = record.get("mail_params") or {}
        postmaster = f"MAILER-DAEMON@{self.hostname}"
        report = dsn.build_dsn(
            reporting_mta=self.hostname, postmaster=postmaster, to=sender,
            envid=dsn.decode_xtext(params["ENVID"]) if params.get("ENVID") else None,
            ret=params.get("RET"), arrival=arrival, recipients=statuses, original=data,
            smtputf8=bool(record.get("smtputf8")), now=now,
            message_id_domain=self.hostname,
        )
        envelope = self._envelope("")
        if any(byte > 127 for byte in report):
            envelope.mail_params["BODY"] = "8BITMIME"
            envelope.body_type = "8BITMIME"
            envelope.smtputf8 = bool(record.get("smtputf8"))
        delivery = self.router.start(envelope)
        try:
            yield delivery.add_recipient(sender, {})
            yield delivery.body(report)
            yield delivery.commit()
        except Exception as e:
            delivery.abort()
            log.warn("{id}: the {action} report to {sender} could not be delivered: {error}",
                     id=record["id"], action=action, sender=sender, error=str(e))
            return
        log.info("{id}: {action} report sent to {sender} for {count} recipient(s)",
                 id=record["id"], action=action, sender=sender, count=len(statuses))


def _connection_failure(result) -> bool:
    """The session broke before this recipient's transaction began: try the next host."""
    return result.stage in ("connect", "greeting", "ehlo", "starttls") and result.code < 500


def _state(result) -> str:
    if 200 <= result.code < 300:
        return DELIVERED
    if 500 <= result.code < 600:
        return FAILED
    return PENDING
