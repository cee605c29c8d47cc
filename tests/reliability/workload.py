"""
The clients of the crash tests and the ledger of what the server acknowledged.

Every message carries a unique token in its Message-ID and Subject.  Before a client sends
anything that could change the store it records the outcome as "unknown"; it changes that to
"acked" only on a 250 / tagged OK and to "refused" on an error reply.  After a crash the
ledger says what must be there (acked), what must not (refused, expunged), and what may
(unknown).
"""

from __future__ import annotations

import random
import re
import smtplib
import threading
from dataclasses import dataclass, field

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from tests.integration.mailflow import without_received

USERS = {
    "alice@example.test": "alice-password",
    "bob@example.test": "bob-password",
}
MAILBOXES = ("INBOX", "Archive")
UNKNOWN_USER = "nobody@example.test"
REMOTE_DOMAIN = "remote.test"
TOKEN_DOMAIN = "reliability.test"
TIMEOUT = 10

UNKNOWN, ACKED, REFUSED = "unknown", "acked", "refused"
# An unacknowledged message found absent after a restart: it must never appear later.
ABSENT = "absent"

_TOKEN = re.compile(rb"^Message-ID: <([A-Za-z0-9.-]+)@" + re.escape(TOKEN_DOMAIN.encode())
                    + rb">", re.MULTILINE | re.IGNORECASE)
_APPENDUID = re.compile(rb"APPENDUID (\d+) (\d+)")

# What a dead or dying server looks like to a client: the outcome stays unknown.
CONNECTION_LOST = (OSError, smtplib.SMTPServerDisconnected, IMAPClientAbortError, EOFError)


def token_of(data: bytes) -> str | None:
    found = _TOKEN.search(data)
    return found.group(1).decode() if found else None


@dataclass
class Copy:
    """One message meant for one mailbox: its state, the UID it was seen with, whether an
    expunge or a flag change of it was asked for (and acknowledged)."""

    state: str
    via: str  # "smtp" (the server adds Received fields) or "imap" (stored as sent)
    flags: frozenset = frozenset()
    uid: int | None = None
    expunge: str | None = None
    flagged: str | None = None


@dataclass
class Ledger:
    """What the clients sent and what the server answered; shared by the worker threads."""

    sent: dict[str, bytes] = field(default_factory=dict)
    copies: dict[tuple[str, str, str], Copy] = field(default_factory=dict)
    refused: set[str] = field(default_factory=set)
    relayed: dict[str, str] = field(default_factory=dict)
    uidvalidity: dict[tuple[str, str], int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: int = 0

    def new_message(self, prefix: str, rng: random.Random, sender: str,
                    to: str) -> tuple[str, bytes]:
        with self.lock:
            self.counter += 1
            token = f"{prefix}.{self.counter}"
        filler = "".join(rng.choice("abcdefghij ") for _ in range(rng.randrange(50, 3000)))
        lines = [filler[i:i + 70] for i in range(0, len(filler), 70)]
        data = (
            f"From: {sender}\r\nTo: {to}\r\nSubject: {token}\r\n"
            f"Message-ID: <{token}@{TOKEN_DOMAIN}>\r\n\r\n"
            + "".join(f"{line}\r\n" for line in lines)
            + f"end of {token}\r\n"
        ).encode()
        with self.lock:
            self.sent[token] = data
        return token, data

    def expect(self, account, mailbox, token, *, via, flags=frozenset()) -> Copy:
        with self.lock:
            copy = self.copies[(account, mailbox, token)] = Copy(UNKNOWN, via, frozenset(flags))
        return copy

    def settle(self, copy: Copy, state: str) -> None:
        with self.lock:
            copy.state = state

    def expungeable(self, account, mailbox, rng) -> tuple[str, Copy] | None:
        with self.lock:
            choices = [(token, copy) for (a, m, token), copy in self.copies.items()
                       if a == account and m == mailbox and copy.state == ACKED
                       and copy.uid is not None and copy.expunge is None]
        return rng.choice(choices) if choices else None


class Worker(threading.Thread):
    """Runs ``step`` over and over until ``stop`` is set; a lost connection is made again."""

    def __init__(self, name, suite, ledger, stop, seed, prefix):
        super().__init__(name=name, daemon=True)
        self.suite = suite
        self.ledger = ledger
        self.stop = stop
        self.rng = random.Random(seed)
        self.prefix = prefix
        self.client = None
        self.error: BaseException | None = None

    def run(self):
        try:
            while not self.stop.is_set():
                try:
                    if self.client is None:
                        self.client = self.connect()
                    self.step()
                except CONNECTION_LOST:
                    self.drop()
                    self.stop.wait(0.05)
        except BaseException as e:  # reported by the test, with the thread's name
            self.error = e
        finally:
            self.drop()

    def drop(self):
        client, self.client = self.client, None
        if client is not None:
            try:
                client.close() if isinstance(client, smtplib.SMTP) else client.shutdown()
            except Exception:
                pass

    def connect(self):
        raise NotImplementedError

    def step(self):
        raise NotImplementedError


class MXWorker(Worker):
    """Mail from outside to alice, bob, both, or (refused) an unknown address."""

    PLANS = (("alice@example.test",), ("bob@example.test",),
             ("alice@example.test", "bob@example.test"),
             ("alice@example.test", UNKNOWN_USER), (UNKNOWN_USER,))

    def connect(self):
        client = smtplib.SMTP("127.0.0.1", self.suite.port("smtp"), timeout=TIMEOUT)
        client.ehlo("client.outside.test")
        return client

    def step(self):
        recipients = self.rng.choice(self.PLANS)
        token, data = self.ledger.new_message(self.prefix, self.rng, "carol@outside.test",
                                              ", ".join(recipients))
        local = [r for r in recipients if r in USERS]
        copies = {r: self.ledger.expect(r, "INBOX", token, via="smtp") for r in local}
        try:
            refused = self.client.sendmail("carol@outside.test", list(recipients), data)
        except smtplib.SMTPRecipientsRefused:
            refused = dict.fromkeys(recipients)
        except smtplib.SMTPResponseException:
            refused = dict.fromkeys(recipients)
            self.client.rset()
        for address, copy in copies.items():
            self.ledger.settle(copy, REFUSED if address in refused else ACKED)
        if all(r in refused for r in recipients):
            with self.ledger.lock:
                self.ledger.refused.add(token)


class SubmissionWorker(Worker):
    """Mail from alice to a remote domain (relayed to the sink), sometimes also to bob."""

    def connect(self):
        client = smtplib.SMTP("127.0.0.1", self.suite.port("submission"), timeout=TIMEOUT)
        client.ehlo("laptop.example.test")
        client.login("alice@example.test", USERS["alice@example.test"])
        return client

    def step(self):
        remote = f"user{self.rng.randrange(100)}@{REMOTE_DOMAIN}"
        recipients = [remote] + (["bob@example.test"] if self.rng.random() < 0.3 else [])
        token, data = self.ledger.new_message(self.prefix, self.rng, "alice@example.test",
                                              ", ".join(recipients))
        copies = {r: self.ledger.expect(r, "INBOX", token, via="smtp")
                  for r in recipients if r in USERS}
        with self.ledger.lock:
            self.ledger.relayed[token] = UNKNOWN
        try:
            self.client.sendmail("alice@example.test", recipients, data)
            state = ACKED
        except smtplib.SMTPResponseException:
            state = REFUSED
            self.client.rset()
        for copy in copies.values():
            self.ledger.settle(copy, state)
        with self.ledger.lock:
            self.ledger.relayed[token] = state
            if state == REFUSED:
                self.ledger.refused.add(token)


class AppendWorker(Worker):
    """IMAP APPEND to INBOX or Archive (sometimes with flags, sometimes then STORE
    \\Flagged), and now and then to a mailbox that does not exist (refused)."""

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user

    def connect(self):
        client = IMAPClient("127.0.0.1", port=self.suite.port("imap"), ssl=False,
                            timeout=TIMEOUT)
        client.login(self.user, USERS[self.user])
        return client

    def step(self):
        roll = self.rng.random()
        mailbox = "NoSuchMailbox" if roll < 0.05 else self.rng.choice(MAILBOXES)
        flags = (b"\\Seen",) if self.rng.random() < 0.3 else ()
        token, data = self.ledger.new_message(self.prefix, self.rng, self.user, self.user)
        copy = self.ledger.expect(self.user, mailbox, token, via="imap",
                                  flags={f.decode() for f in flags})
        try:
            answer = self.client.append(mailbox, data, flags=flags)
        except IMAPClientAbortError:
            raise
        except IMAPClientError:
            self.ledger.settle(copy, REFUSED)
            with self.ledger.lock:
                self.ledger.refused.add(token)
            return
        found = _APPENDUID.search(answer)
        with self.ledger.lock:
            copy.state = ACKED
            copy.uid = int(found.group(2))
        if self.rng.random() < 0.3:
            self.client.select_folder(mailbox)
            with self.ledger.lock:
                copy.flagged = UNKNOWN
            self.client.add_flags([copy.uid], [b"\\Flagged"])
            with self.ledger.lock:
                copy.flagged = ACKED


class ExpungeWorker(Worker):
    """STORE \\Deleted then EXPUNGE of a message the ledger knows by UID."""

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user

    def connect(self):
        client = IMAPClient("127.0.0.1", port=self.suite.port("imap"), ssl=False,
                            timeout=TIMEOUT)
        client.login(self.user, USERS[self.user])
        return client

    def step(self):
        mailbox = self.rng.choice(MAILBOXES)
        chosen = self.ledger.expungeable(self.user, mailbox, self.rng)
        if chosen is None:
            self.stop.wait(0.01)
            return
        _, copy = chosen
        self.client.select_folder(mailbox)
        with self.ledger.lock:
            copy.expunge = UNKNOWN
        self.client.add_flags([copy.uid], [b"\\Deleted"])
        self.client.expunge()
        with self.ledger.lock:
            copy.expunge = ACKED


def start_workers(suite, ledger, stop, rng, prefix) -> list[Worker]:
    """Seven concurrent clients of every kind; each with its own seeded random source."""
    def seed():
        return rng.randrange(1 << 30)

    workers = [
        MXWorker("mx-1", suite, ledger, stop, seed(), f"{prefix}-mx1"),
        MXWorker("mx-2", suite, ledger, stop, seed(), f"{prefix}-mx2"),
        SubmissionWorker("submit", suite, ledger, stop, seed(), f"{prefix}-sub"),
        AppendWorker("append-alice", suite, ledger, stop, seed(), f"{prefix}-apa",
                     user="alice@example.test"),
        AppendWorker("append-bob", suite, ledger, stop, seed(), f"{prefix}-apb",
                     user="bob@example.test"),
        ExpungeWorker("expunge-alice", suite, ledger, stop, seed(), f"{prefix}-exa",
                      user="alice@example.test"),
        ExpungeWorker("expunge-bob", suite, ledger, stop, seed(), f"{prefix}-exb",
                      user="bob@example.test"),
    ]
    for worker in workers:
        worker.start()
    return workers


# ------------------------------------------------------------------ checking


def read_mailboxes(suite) -> dict[tuple[str, str], tuple[int, list[tuple[int, set, bytes]]]]:
    """{(user, mailbox): (UIDVALIDITY, [(uid, flags, bytes)] in sequence order)} read over
    IMAP (by sequence number, so a UID given twice would show)."""
    found = {}
    for user, password in USERS.items():
        with IMAPClient("127.0.0.1", port=suite.port("imap"), ssl=False, timeout=30,
                        use_uid=False) as client:
            client.login(user, password)
            for mailbox in MAILBOXES:
                selected = client.select_folder(mailbox, readonly=True)
                messages = []
                if selected[b"EXISTS"]:
                    fetched = client.fetch(list(range(1, selected[b"EXISTS"] + 1)),
                                           ["UID", "FLAGS", "BODY.PEEK[]"])
                    for _, item in sorted(fetched.items()):
                        flags = {f.decode() if isinstance(f, bytes) else f
                                 for f in item[b"FLAGS"]}
                        messages.append((item[b"UID"], flags, item[b"BODY[]"]))
                found[(user, mailbox)] = (selected[b"UIDVALIDITY"], messages)
    return found


def verify_mailboxes(ledger: Ledger, seen, *, recovers_to_inbox: bool) -> list[str]:
    """
    The ways the mailboxes (from read_mailboxes) break the ledger's promises, as readable
    lines; records the UID each message was seen with, so the next round checks they stay.
    ``recovers_to_inbox``: the store repair adds unindexed body files to INBOX (sqlite), so
    an unacknowledged message meant for another mailbox of the user may show up there.
    """
    failures = []
    counts: dict[tuple[str, str, str], list[int]] = {}
    observed: dict[tuple[str, str, str], set] = {}
    for (user, mailbox), (uidvalidity, messages) in seen.items():
        known = ledger.uidvalidity.setdefault((user, mailbox), uidvalidity)
        if known != uidvalidity:
            failures.append(f"{user}/{mailbox}: UIDVALIDITY changed from {known} to "
                            f"{uidvalidity}")
        uids = [uid for uid, _, _ in messages]
        if len(set(uids)) != len(uids) or uids != sorted(uids):
            failures.append(f"{user}/{mailbox}: UIDs not unique and ascending: {uids}")
        for uid, flags, data in messages:
            token = token_of(data)
            where = f"{user}/{mailbox} UID {uid}"
            if token is None or token not in ledger.sent:
                failures.append(f"{where}: a message no client sent: {data[:80]!r}")
                continue
            copy = ledger.copies.get((user, mailbox, token))
            if copy is None and recovers_to_inbox and mailbox == "INBOX":
                copy = _recovered(ledger, user, token)
            if copy is None:
                failures.append(f"{where}: {token} was never meant for this mailbox")
                continue
            counts.setdefault((user, mailbox, token), []).append(uid)
            observed[(user, mailbox, token)] = flags
            stored = without_received(data) if copy.via == "smtp" else data
            if stored != ledger.sent[token]:
                failures.append(f"{where}: {token} is truncated or corrupt "
                                f"({len(stored)} octets, {len(ledger.sent[token])} sent)")
            if token in ledger.refused or copy.state == REFUSED:
                failures.append(f"{where}: {token} was refused yet is present")
            if copy.state == ABSENT:
                failures.append(f"{where}: {token} was absent after an earlier restart and "
                                f"is back")
            if copy.expunge == ACKED:
                failures.append(f"{where}: {token} was expunged (acknowledged) yet is back")
            if copy.uid is not None and copy.uid != uid:
                failures.append(f"{where}: {token} had UID {copy.uid}")
            if copy.state == ACKED and not copy.flags <= flags:
                failures.append(f"{where}: {token} lost its flags {sorted(copy.flags - flags)}")
            if copy.flagged == ACKED and copy.expunge is None and "\\Flagged" not in flags:
                failures.append(f"{where}: {token} lost \\Flagged, which was acknowledged")
    for key, copy in ledger.copies.items():
        uids = counts.get(key, [])
        user, mailbox, token = key
        if len(uids) > 1:
            failures.append(f"{user}/{mailbox}: {token} is there {len(uids)} times: {uids}")
        if copy.state == ACKED and copy.expunge is None and not uids:
            failures.append(f"{user}/{mailbox}: {token} was acknowledged ({copy.via}) and is "
                            f"missing")
        if uids and copy.uid is None:
            copy.uid = uids[0]
        if len(uids) == 1 and copy.state == UNKNOWN:
            # Present after the crash: from now on it is as good as acknowledged, with the
            # flags it has now (a body file the repair added to INBOX comes without them).
            copy.state = ACKED
            copy.flags = copy.flags & frozenset(observed[key])
        if not uids and copy.state == UNKNOWN:
            copy.state = ABSENT
        if not uids and copy.expunge == UNKNOWN:
            # Gone after the crash: from now on it must stay gone.
            copy.expunge = ACKED
    return failures


def _recovered(ledger: Ledger, user: str, token: str) -> Copy | None:
    """The ledger entry for ``token`` found in ``user``'s INBOX though meant for another of
    the user's mailboxes: allowed for an unacknowledged message only, and from now on held
    to be there (without flags: the repair does not know them)."""
    for (other_user, _, other_token), copy in list(ledger.copies.items()):
        if other_user == user and other_token == token and copy.state == UNKNOWN:
            return ledger.copies.setdefault((user, "INBOX", token), Copy(UNKNOWN, copy.via))
    return None


def verify_relayed(ledger: Ledger, received) -> list[str]:
    """The relayed messages: every acknowledged one reached the sink, intact; nothing
    refused did."""
    failures, arrived = [], {}
    for message in received:
        token = token_of(message.data)
        if token is None or token not in ledger.sent:
            failures.append(f"sink: a message no client sent: {message.data[:80]!r}")
            continue
        arrived.setdefault(token, []).append(message)
        if without_received(message.data) != ledger.sent[token]:
            failures.append(f"sink: {token} arrived truncated or corrupt")
        if ledger.relayed.get(token) == REFUSED:
            failures.append(f"sink: {token} was refused yet was relayed")
    for token, state in ledger.relayed.items():
        if state == ACKED and token not in arrived:
            failures.append(f"sink: {token} was acknowledged and never arrived")
    return failures


def missing_relayed(ledger: Ledger, received) -> int:
    arrived = {token_of(message.data) for message in received}
    return sum(1 for token, state in ledger.relayed.items()
               if state == ACKED and token not in arrived)


def create_mailboxes(suite) -> None:
    for user, password in USERS.items():
        with IMAPClient("127.0.0.1", port=suite.port("imap"), ssl=False,
                        timeout=30) as client:
            client.login(user, password)
            for mailbox in MAILBOXES:
                if not client.folder_exists(mailbox):
                    client.create_folder(mailbox)

