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

``enqueue`` runs its disk work through ``runner`` (a thread pool in production); the other
methods are synchronous and meant for the admin command and start-up.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from twisted.internet import defer
from twisted.logger import Logger

from mailsuite.interfaces import Envelope

log = Logger()

#: Version of the JSON envelope layout, stored in every entry.
FORMAT_VERSION = 1

STATUS_PENDING = "pending"

_MESSAGE_SUFFIX = ".eml"
_ENVELOPE_SUFFIX = ".json"
_TEMP_PREFIX = ".tmp-"

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
class QueueEntry:
    """One queued message as the admin command lists it; times are timezone-aware UTC."""

    id: str
    sender: str
    recipients: tuple[str, ...]
    size: int
    created: datetime
    attempts: int
    next_attempt: datetime


def validate_id(queue_id: str) -> str:
    """Return ``queue_id`` if it is a well-formed queue id, else raise InvalidQueueId."""
    if not isinstance(queue_id, str) or not _ID_PATTERN.fullmatch(queue_id):
        raise InvalidQueueId("invalid queue id")
    return queue_id


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat()


def _parse_time(value: Any) -> datetime:
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

    def enqueue(self, envelope: Envelope, recipients: list[str], data: bytes) -> defer.Deferred:
        """
        Queue ``data`` for ``recipients`` (a non-empty list of addresses); Deferred[str] firing
        with the new queue id once the entry is durable.  On failure nothing is left behind.
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
            "recipients": [
                {"address": address, "status": STATUS_PENDING} for address in unique
            ],
            "helo": envelope.helo,
            "client_address": envelope.client_address,
            "client_name": envelope.client_name,
            "authenticated_as": envelope.authenticated_as,
            "protocol": envelope.protocol,
            "smtputf8": envelope.smtputf8,
            "body_type": envelope.body_type,
            "mail_params": dict(envelope.mail_params),
            "received_at": _iso(created),
            "size": len(data),
            "attempts": 0,
            # Due at once: the relay picks new entries up immediately.
            "next_attempt": _iso(now),
        }
        encoded = json.dumps(record, indent=1, sort_keys=True).encode("utf-8") + b"\n"
        self._writing.add(queue_id)
        d = self._runner(self._write_entry, queue_id, data, encoded)

        def done(result):
            self._writing.discard(queue_id)
            return result

        d.addBoth(done)
        d.addCallback(lambda _: queue_id)
        return d

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
            if not name.endswith(_ENVELOPE_SUFFIX):
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
        validate_id(queue_id)
        envelope = self._file(queue_id, _ENVELOPE_SUFFIX)
        try:
            # The envelope goes first: once it is gone the entry no longer exists, and a
            # crash before the message file is removed leaves only an orphan for cleanup().
            os.unlink(envelope)
        except FileNotFoundError:
            return False
        _remove_quietly(self._file(queue_id, _MESSAGE_SUFFIX))
        _fsync_directory(self.path)
        log.info("queue entry {queue_id} deleted", queue_id=queue_id)
        return True

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
        return QueueEntry(
            id=validate_id(record["id"]),
            sender=str(record["mail_from"]),
            recipients=tuple(str(r["address"]) for r in recipients),
            size=int(record["size"]),
            created=_parse_time(record["received_at"]),
            attempts=int(record["attempts"]),
            next_attempt=_parse_time(record["next_attempt"]),
        )
