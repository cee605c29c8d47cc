"""
The outbound queue: a durable spool of messages for remote recipients.

Each entry is two files in the queue directory:

- ``<id>.eml``  the message bytes exactly as received;
- ``<id>.json`` the envelope (sender, recipients with their status, attempts, ...).

Both are written to temporary names, fsynced and renamed into place, and the directory is
fsynced after each rename.  The JSON file is written last and is what makes an entry exist:
a crash in between leaves an orphan ``.eml`` that ``entries()`` ignores and ``cleanup()``
removes.  Envelopes are JSON, never pickles, so a queue file can be read and repaired by hand
and reading one never runs code.

Changes to an entry (``update``, ``flush``, ``request_bounce``, ``delete``, ``finish``) hold an
exclusive lock (flock) on the entry's ``.eml`` file, which no change replaces, so the relay and
the admin command, in different processes, never lose each other's changes and a deleted
entry is never written back.  ``wake()`` moves the modification time of ``.wakeup`` forward;
the running relay polls it to learn that the admin command changed something.

``enqueue`` and ``update_async`` run their disk work through ``runner`` (a thread pool in
production); the other methods are synchronous and meant for the relay's worker threads, the
admin command and start-up.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from twisted.internet import defer
from twisted.logger import Logger

from mailsuite.interfaces import Envelope

log = Logger()

#: Version of the JSON envelope layout, stored in every entry.  Version 2 added the DSN
#: parameters and delivery fields per recipient; version 1 envelopes are read as well.
FORMAT_VERSION = 2

# Recipient status values; the relay moves a recipient from pending to one of the others.
STATUS_PENDING = "pending"
STATUS_DELIVERED = "delivered"
STATUS_FAILED = "failed"

_MESSAGE_SUFFIX = ".eml"
_ENVELOPE_SUFFIX = ".json"
_TEMP_PREFIX = ".tmp-"
_WAKEUP_NAME = ".wakeup"

# Letters, digits, '-' and '_' only: no '.', no '/', no NUL, so an id given on the command
# line can never name a file outside the queue directory.
_ID_PATTERN = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,63}")


class QueueError(Exception):
    """A queue operation failed; the message is one readable line."""


class InvalidQueueId(QueueError, ValueError):
    """The string is not a well-formed queue id."""


class NoSuchQueueEntry(QueueError):
    """No entry has this id."""


@dataclass(frozen=True)
class RecipientState:
    """
    One recipient of a queued message: ``status`` is pending, delivered or failed; the rest
    is what the relay recorded about its last attempt (None before the first) and the DSN
    parameters of its RCPT command as given (``orcpt`` still xtext-encoded).
    """

    address: str
    status: str = STATUS_PENDING
    attempts: int = 0
    last_error: str | None = None
    last_code: int | None = None
    remote_mta: str | None = None
    status_code: str | None = None
    notify: str | None = None
    orcpt: str | None = None


@dataclass(frozen=True)
class QueueEntry:
    """One queued message as the admin command lists it; times are timezone-aware UTC."""

    id: str
    sender: str
    recipients: tuple[str, ...]
    size: int
    created: datetime
    attempts: int
    next_attempt: datetime
    states: tuple[RecipientState, ...] = ()
    envelope_id: str = ""
    delay_warned: bool = False
    bounce_requested: bool = False

    @property
    def pending(self) -> int:
        """How many recipients still wait for delivery."""
        return sum(1 for state in self.states if state.status == STATUS_PENDING)

    @property
    def last_error(self) -> str | None:
        """The last error of the first pending recipient that has one, else of any recipient."""
        ordered = sorted(self.states, key=lambda state: state.status != STATUS_PENDING)
        return next((state.last_error for state in ordered if state.last_error), None)


def validate_id(queue_id: str) -> str:
    """Return ``queue_id`` if it is a well-formed queue id, else raise InvalidQueueId."""
    if not isinstance(queue_id, str) or not _ID_PATTERN.fullmatch(queue_id):
        raise InvalidQueueId("invalid queue id")
    return queue_id


def iso_time(moment: datetime) -> str:
    """How envelope times are written: ISO 8601 in UTC."""
    return moment.astimezone(timezone.utc).isoformat()


def parse_time(value: Any) -> datetime:
    """An envelope time read back, timezone-aware (naive values are UTC)."""
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment


def _fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _optional_int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _json_default(value: Any) -> Any:
    # Lets a change function store times as datetimes.
    if isinstance(value, datetime):
        return iso_time(value)
    raise TypeError(f"cannot store {type(value).__name__} in a queue envelope")


def _encode_record(record: dict) -> bytes:
    return json.dumps(record, indent=1, sort_keys=True, default=_json_default).encode(
        "utf-8") + b"\n"


def _param(params: dict, name: str) -> str | None:
    for key, value in params.items():
        if key.upper() == name:
            return None if value is None else str(value)
    return None


def _write_new_file(path: str, data: bytes) -> None:
    """Create ``path`` (it must not exist), write ``data`` and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class OutboundQueue:
    """
    The durable spool of outbound mail kept in directory ``path``.

    ``runner(f, *args, **kwargs) -> Deferred`` runs blocking disk work (see
    mailsuite.store.base); ``clock`` (an IReactorTime, e.g. the reactor) supplies the current
    time when an envelope carries no ``received_at``.
    """

    def __init__(
        self,
        path: str,
        *,
        runner: Callable[..., defer.Deferred],
        clock: Any = None,
    ):
        self.path = os.path.abspath(path)
        self._runner = runner
        self._clock = clock
        # Ids whose files are being written right now; cleanup() must not touch them.
        self._writing: set[str] = set()
        os.makedirs(self.path, mode=0o700, exist_ok=True)

    # ------------------------------------------------------------------ writing

    def enqueue(
        self,
        envelope: Envelope,
        recipients: list[str],
        data: bytes,
        params: dict[str, dict[str, str | None]] | None = None,
    ) -> defer.Deferred:
        """
        Queue ``data`` for ``recipients`` (a non-empty list of addresses); Deferred[str] firing
        with the new queue id once the entry is durable.  On failure nothing is left behind.
        ``params`` maps a recipient address to the parameters of its RCPT command; NOTIFY and
        ORCPT (RFC 3461) are kept with the recipient, as given.
        """
        unique = list(dict.fromkeys(recipients))
        if not unique:
            return defer.fail(QueueError("no recipients to queue"))
        if not isinstance(data, bytes):
            return defer.fail(TypeError("message data must be bytes"))
        now = self._now()
        queue_id = self._new_id(now)
        created = envelope.received_at or now
        record = {
            "version": FORMAT_VERSION,
            "id": queue_id,
            "envelope_id": envelope.id,
            "mail_from": envelope.mail_from,
            "recipients": [self._new_recipient(address, params or {}) for address in unique],
            "helo": envelope.helo,
            "client_address": envelope.client_address,
            "client_name": envelope.client_name,
            "authenticated_as": envelope.authenticated_as,
            "protocol": envelope.protocol,
            "smtputf8": envelope.smtputf8,
            "body_type": envelope.body_type,
            "mail_params": dict(envelope.mail_params),
            "received_at": iso_time(created),
            "size": len(data),
            "attempts": 0,
            # Due at once: the relay picks new entries up immediately.
            "next_attempt": iso_time(now),
            "delay_warned": False,
            "bounce_requested": False,
        }
        encoded = _encode_record(record)
        self._writing.add(queue_id)
        d = self._runner(self._write_entry, queue_id, data, encoded)

        def done(result):
            self._writing.discard(queue_id)
            return result

        d.addBoth(done)
        d.addCallback(lambda _: queue_id)
        return d

    @staticmethod
    def _new_recipient(address: str, params: dict) -> dict:
        given = params.get(address)
        if given is None:
            # The router keys remote recipients with the domain lower-cased.
            wanted = address.lower()
            given = next((value for key, value in params.items() if key.lower() == wanted), {})
        return {
            "address": address,
            "status": STATUS_PENDING,
            "notify": _param(given, "NOTIFY"),
            "orcpt": _param(given, "ORCPT"),
        }

    def _write_entry(self, queue_id: str, data: bytes, encoded: bytes) -> None:
        message = self._file(queue_id, _MESSAGE_SUFFIX)
        envelope = self._file(queue_id, _ENVELOPE_SUFFIX)
        message_temp = self._file(_TEMP_PREFIX + queue_id, _MESSAGE_SUFFIX)
        envelope_temp = self._file(_TEMP_PREFIX + queue_id, _ENVELOPE_SUFFIX)
        try:
            _write_new_file(message_temp, data)
            os.rename(message_temp, message)
            # The message must be on disk under its final name before the envelope that
            # makes the entry exist can be.
            _fsync_directory(self.path)
            _write_new_file(envelope_temp, encoded)
            os.rename(envelope_temp, envelope)
            _fsync_directory(self.path)
        except BaseException:
            for name in (envelope, envelope_temp, message, message_temp):
                _remove_quietly(name)
            raise

    # ------------------------------------------------------------------ reading (synchronous)

    def entries(self) -> list[QueueEntry]:
        """Every complete entry, oldest first.  Unreadable envelopes are logged and skipped."""
        found = []
        for name in self._names():
            if name.startswith(".") or not name.endswith(_ENVELOPE_SUFFIX):
                continue
            queue_id = name[: -len(_ENVELOPE_SUFFIX)]
            if not _ID_PATTERN.fullmatch(queue_id):
                continue
            try:
                found.append(self._entry(self.record(queue_id)))
            except (QueueError, OSError, ValueError, KeyError, TypeError) as e:
                log.warn("skipping unreadable queue entry {queue_id}: {error}",
                         queue_id=queue_id, error=str(e))
        found.sort(key=lambda entry: (entry.created, entry.id))
        return found

    def get(self, queue_id: str) -> QueueEntry | None:
        """The entry with this id, or None; InvalidQueueId for a malformed id."""
        try:
            return self._entry(self.record(queue_id))
        except NoSuchQueueEntry:
            return None

    def record(self, queue_id: str) -> dict:
        """The full JSON envelope of an entry; NoSuchQueueEntry, InvalidQueueId."""
        path = self._file(validate_id(queue_id), _ENVELOPE_SUFFIX)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raise NoSuchQueueEntry(f"no queue entry {queue_id}") from None
        try:
            record = json.loads(raw)
        except ValueError as e:
            raise QueueError(f"queue entry {queue_id} has a damaged envelope") from e
        if not isinstance(record, dict) or record.get("id") != queue_id:
            raise QueueError(f"queue entry {queue_id} has a damaged envelope")
        return record

    def read(self, queue_id: str) -> bytes:
        """The queued message's bytes; NoSuchQueueEntry, InvalidQueueId."""
        validate_id(queue_id)
        if not os.path.exists(self._file(queue_id, _ENVELOPE_SUFFIX)):
            raise NoSuchQueueEntry(f"no queue entry {queue_id}")
        try:
            with open(self._file(queue_id, _MESSAGE_SUFFIX), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise NoSuchQueueEntry(f"no queue entry {queue_id}") from None

    # ------------------------------------------------------------------ removing (synchronous)

    def delete(self, queue_id: str) -> bool:
        """Remove an entry; True if it existed.  InvalidQueueId for a malformed id."""
        return self._remove(queue_id, finished=False)

    def finish(self, queue_id: str) -> bool:
        """
        Remove an entry once every recipient is delivered, failed or reported on; the same
        as ``delete`` but logged as the end of delivery.  True if it existed.
        """
        return self._remove(queue_id, finished=True)

    def _remove(self, queue_id: str, *, finished: bool) -> bool:
        validate_id(queue_id)
        try:
            with self._locked(queue_id):
                pending = self._pending_count(queue_id) if finished else 0
                existed = self._unlink_entry(queue_id)
        except NoSuchQueueEntry:
            # No message file, so nothing can be updating the entry: remove what is left.
            pending = 0
            existed = self._unlink_entry(queue_id)
        if not existed:
            return False
        if not finished:
            log.info("queue entry {queue_id} deleted", queue_id=queue_id)
        elif pending:
            log.warn("queue entry {queue_id} finished with {pending} recipients pending",
                     queue_id=queue_id, pending=pending)
        else:
            log.info("queue entry {queue_id} finished", queue_id=queue_id)
        return True

    def _unlink_entry(self, queue_id: str) -> bool:
        try:
            # The envelope goes first: once it is gone the entry no longer exists, and a
            # crash before the message file is removed leaves only an orphan for cleanup().
            os.unlink(self._file(queue_id, _ENVELOPE_SUFFIX))
        except FileNotFoundError:
            return False
        _remove_quietly(self._file(queue_id, _MESSAGE_SUFFIX))
        _fsync_directory(self.path)
        return True

    def _pending_count(self, queue_id: str) -> int:
        try:
            recipients = self.record(queue_id).get("recipients") or []
            return sum(1 for r in recipients if r.get("status", STATUS_PENDING) == STATUS_PENDING)
        except (QueueError, AttributeError, TypeError):
            return 0

    # ------------------------------------------------------------------ changing (synchronous)

    def update(self, queue_id: str, change: Callable[[dict], None]) -> dict:
        """
        Apply ``change`` to the JSON envelope of an entry and write it back atomically
        (temporary file, fsync, rename, fsync of the directory); return the envelope as
        stored.  ``change`` mutates the dict it is given (datetimes are stored as ISO 8601
        strings) and must leave ``id`` alone.  Concurrent updates, also from other
        processes, happen one after the other.  NoSuchQueueEntry, InvalidQueueId; if
        ``change`` raises, nothing is written.
        """
        validate_id(queue_id)
        with self._locked(queue_id):
            record = self.record(queue_id)
            change(record)
            if not isinstance(record, dict) or record.get("id") != queue_id:
                raise QueueError(f"a change may not alter the id of queue entry {queue_id}")
            encoded = _encode_record(record)
            self._writing.add(queue_id)
            try:
                self._replace_envelope(queue_id, encoded)
            finally:
                self._writing.discard(queue_id)
        return json.loads(encoded)

    def update_async(self, queue_id: str, change: Callable[[dict], None]) -> defer.Deferred:
        """``update`` run through the runner: Deferred[dict].  ``change`` runs there too."""
        return self._runner(self.update, queue_id, change)

    def flush(self, queue_id: str | None = None) -> int:
        """
        Make one entry (or every entry) due now and wake the relay; return how many entries
        were changed.  NoSuchQueueEntry for an unknown ``queue_id``.
        """
        now = iso_time(self._now())

        def due(record: dict) -> None:
            record["next_attempt"] = now

        if queue_id is not None:
            self.update(queue_id, due)
            changed = 1
        else:
            changed = 0
            for entry in self.entries():
                try:
                    self.update(entry.id, due)
                except NoSuchQueueEntry:
                    continue  # delivered meanwhile
                except QueueError as e:
                    log.warn("cannot flush queue entry {queue_id}: {error}",
                             queue_id=entry.id, error=str(e))
                    continue
                changed += 1
        self.wake()
        return changed

    def request_bounce(self, queue_id: str) -> None:
        """
        Ask the relay to return an entry to its sender (its pending recipients fail) at its
        next look at the queue, which is now.  NoSuchQueueEntry for an unknown id.
        """
        now = iso_time(self._now())

        def bounce(record: dict) -> None:
            record["bounce_requested"] = True
            record["next_attempt"] = now

        self.update(queue_id, bounce)
        self.wake()

    def wake(self) -> None:
        """
        Tell the relay the queue changed: set the modification time of ``.wakeup`` (created
        if needed) to a value later than any it had before.
        """
        path = os.path.join(self.path, _WAKEUP_NAME)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        # A change must be visible even when two wakes fall in one clock tick.
        stamp = max(int(self._now().timestamp() * 1e9), os.stat(path).st_mtime_ns + 1000)
        os.utime(path, ns=(stamp, stamp))

    def wakeup_stamp(self) -> float | None:
        """The modification time of ``.wakeup``, or None when nothing has woken the relay."""
        try:
            return os.stat(os.path.join(self.path, _WAKEUP_NAME)).st_mtime
        except FileNotFoundError:
            return None

    @contextmanager
    def _locked(self, queue_id: str):
        # flock on the message file: it lives exactly as long as the entry and no change
        # replaces it.  Each call opens its own descriptor, so threads exclude each other too.
        try:
            fd = os.open(self._file(queue_id, _MESSAGE_SUFFIX), os.O_RDONLY)
        except FileNotFoundError:
            raise NoSuchQueueEntry(f"no queue entry {queue_id}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _replace_envelope(self, queue_id: str, encoded: bytes) -> None:
        envelope = self._file(queue_id, _ENVELOPE_SUFFIX)
        temp = self._file(_TEMP_PREFIX + queue_id, _ENVELOPE_SUFFIX)
        # Under the entry lock, a temporary file left here can only be from a crash.
        _remove_quietly(temp)
        try:
            _write_new_file(temp, encoded)
            os.rename(temp, envelope)
        except BaseException:
            _remove_quietly(temp)
            raise
        _fsync_directory(self.path)

    # ------------------------------------------------------------------ removing (synchronous)

    def cleanup(self, *, min_age: float = 0.0) -> int:
        """
        Remove orphan message files (no envelope) and leftover temporary files older than
        ``min_age`` seconds; return how many files were removed.  Entries this queue object
        is writing right now are never touched; with several processes sharing the queue,
        pass a ``min_age`` longer than any write can take.
        """
        names = set(self._names())
        now = self._now().timestamp()
        removed = 0
        for name in sorted(names):
            if name.startswith(_TEMP_PREFIX):
                stem = name[len(_TEMP_PREFIX):].rsplit(".", 1)[0]
            elif name.startswith("."):
                continue  # .wakeup and anything else hidden is not queue data
            elif name.endswith(_MESSAGE_SUFFIX):
                stem = name[: -len(_MESSAGE_SUFFIX)]
                if stem + _ENVELOPE_SUFFIX in names:
                    continue
            else:
                continue
            if stem in self._writing:
                continue
            path = os.path.join(self.path, name)
            try:
                if min_age > 0 and now - os.stat(path).st_mtime < min_age:
                    continue
                os.unlink(path)
            except FileNotFoundError:
                continue
            removed += 1
            log.info("removed orphan queue file {name}", name=name)
        if removed:
            _fsync_directory(self.path)
        return removed

    # ------------------------------------------------------------------ helpers

    def _names(self) -> list[str]:
        return os.listdir(self.path)

    def _file(self, stem: str, suffix: str) -> str:
        return os.path.join(self.path, stem + suffix)

    def _now(self) -> datetime:
        seconds = self._clock.seconds() if self._clock is not None else time.time()
        return datetime.fromtimestamp(seconds, tz=timezone.utc)

    def _new_id(self, now: datetime) -> str:
        # Time first so ids sort roughly by age; 64 random bits make collisions negligible,
        # and O_EXCL on the temporary files refuses one anyway.
        while True:
            queue_id = f"{now:%Y%m%d%H%M%S}-{secrets.token_hex(8)}"
            if queue_id not in self._writing and not os.path.exists(
                self._file(queue_id, _MESSAGE_SUFFIX)
            ):
                return queue_id

    def _entry(self, record: dict) -> QueueEntry:
        recipients = record["recipients"]
        if not isinstance(recipients, list):
            raise QueueError("recipients is not a list")
        states = tuple(_recipient_state(r) for r in recipients)
        return QueueEntry(
            id=validate_id(record["id"]),
            sender=str(record["mail_from"]),
            recipients=tuple(state.address for state in states),
            size=int(record["size"]),
            created=parse_time(record["received_at"]),
            attempts=int(record["attempts"]),
            next_attempt=parse_time(record["next_attempt"]),
            states=states,
            envelope_id=str(record.get("envelope_id") or ""),
            delay_warned=bool(record.get("delay_warned", False)),
            bounce_requested=bool(record.get("bounce_requested", False)),
        )


def _recipient_state(recipient: dict) -> RecipientState:
    # Envelopes written before the DSN fields existed hold only address and status.
    return RecipientState(
        address=str(recipient["address"]),
        status=str(recipient.get("status") or STATUS_PENDING),
        attempts=_optional_int(recipient.get("attempts")) or 0,
        last_error=_optional_str(recipient.get("last_error")),
        last_code=_optional_int(recipient.get("last_code")),
        remote_mta=_optional_str(recipient.get("remote_mta")),
        status_code=_optional_str(recipient.get("status_code")),
        notify=_optional_str(recipient.get("notify")),
        orcpt=_optional_str(recipient.get("orcpt")),
    )
