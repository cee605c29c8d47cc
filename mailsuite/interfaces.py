"""
The seams between mailsuite's components.

Protocols never talk to a concrete backend: they meet the directory, the mailbox store and the
delivery targets through the interfaces below.  Each interface lives here together with the
plain data objects and exceptions that cross it.

Conventions:
- Addresses are ``str``; comparisons of domains are case-insensitive, local parts are compared
  case-insensitively too (as every mainstream server does for its own users).
- Methods documented as returning a Deferred always do; methods documented as "value or
  Deferred" are called through ``defer.maybeDeferred`` by their users.
- Flags are IMAP spellings: system flags ``\\Seen``, ``\\Answered``, ``\\Flagged``,
  ``\\Deleted``, ``\\Draft``; anything else is a keyword.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from zope.interface import Attribute, Interface


# --------------------------------------------------------------------------- directory


class DirectoryError(Exception):
    """A directory operation failed; the message is one readable line."""


class EntryExists(DirectoryError):
    """An entry (or an address) that must be unique exists already."""


class NoSuchEntry(DirectoryError):
    """The named entry, account or address is not in the directory."""


class InvalidEntry(DirectoryError):
    """An entry or attribute value breaks the schema or the directory's rules."""


@dataclass(frozen=True)
class Account:
    """
    A mail account, as the protocols see it.

    ``uid`` is the account's identity everywhere in the suite (mailbox store key, cred
    avatarId); ``mail`` the primary address; ``addresses`` every address that reaches the
    account and that it may use as envelope sender (``mail`` plus ``mailLocalAddress``).
    """

    uid: str
    mail: str
    dn: str
    addresses: frozenset[str] = frozenset()
    display_name: str = ""
    mail_host: str | None = None
    forward: tuple[str, ...] = ()
    quota: int | None = None


class RecipientKind(enum.Enum):
    ACCOUNT = "account"
    GROUP = "group"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Recipient:
    """
    What the directory says about one address.

    ``via`` tells how an ACCOUNT was reached: ``"mail"``, ``"alias"`` (mailLocalAddress) or
    ``"subaddress"`` (``user+tag@domain``).  For a GROUP, ``members`` holds the member
    addresses (one level, not expanded).
    """

    kind: RecipientKind
    address: str
    account: Account | None = None
    via: str = ""
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class Expansion:
    """
    Where mail for an address finally goes, after aliases, groups (recursively, loops cut)
    and forwards (mailRoutingAddress): local accounts to store into, and addresses to relay.
    """

    accounts: tuple[Account, ...] = ()
    remote: tuple[str, ...] = ()


class IDirectory(Interface):
    """
    Accounts, aliases, groups and credentials.  Lookups return a value or a Deferred.
    """

    local_domains = Attribute("frozenset of lower-case domains whose mail is delivered here")

    def resolve(address):
        """
        Say what ``address`` is: a Recipient of kind ACCOUNT, GROUP or UNKNOWN.
        Plus-addressing is honoured: ``alice+tag@d`` resolves like ``alice@d``.
        """

    def expand(address):
        """
        The Expansion of ``address``; an unknown local address expands to nothing.
        """

    def account(uid):
        """The Account with this uid, or None."""

    def find_account(login):
        """The Account a login name (uid, primary mail or alias address) names, or None."""

    def check_password(login, password):
        """
        The Account if ``password`` (str) is right for the login name, else None.  A stored
        hash string given as the password never matches.
        """


class IDirectoryAdmin(Interface):
    """
    Changes to a writable directory (the embedded one).  Each change is persisted atomically
    before the call returns; errors are DirectoryError subclasses with a one-line message.
    """

    def add_user(address, password, *, cn=None, uid=None):
        """Create an account for ``address``; return its Account."""

    def set_password(login, password):
        """Store a new hashed password for the account named by ``login``."""

    def delete_user(login):
        """Remove the account named by ``login`` and its aliases."""

    def users():
        """All accounts, sorted by primary address."""

    def add_alias(alias, target):
        """Make ``alias`` deliver to the account named by ``target`` (mailLocalAddress)."""

    def delete_alias(alias):
        """Remove an alias address."""

    def import_ldif(data):
        """Add (or replace) the entries of LDIF ``data`` (bytes); return how many."""

    def export_ldif():
        """Every entry as LDIF bytes, passwords as stored (hashed)."""


# --------------------------------------------------------------------------- credentials


class IMailAccount(Interface):
    """
    The avatar that the shared cred Portal hands to SMTP, POP3, IMAP and the web after a
    successful login.
    """

    account = Attribute("the Account logged in")
    store = Attribute("the IMailStore holding the account's mailboxes")


# --------------------------------------------------------------------------- mailbox store


class StoreError(Exception):
    """A store operation failed; the message is one readable line."""


class NoSuchMailbox(StoreError):
    pass


class MailboxExists(StoreError):
    pass


class InvalidMailboxName(StoreError):
    """The name is empty, has a NUL or control character, an empty, '.' or '..' level, etc."""


class NoSuchMessage(StoreError):
    pass


class QuotaExceeded(StoreError):
    pass


class StoreUnavailable(StoreError):
    """A temporary failure (disk full, I/O error): the caller should answer with a 4xx/NO."""


class FlagMode(enum.Enum):
    SET = "set"
    ADD = "add"
    REMOVE = "remove"


SYSTEM_FLAGS = frozenset({"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"})

#: Created for every account on first use, with their RFC 6154 special-use attributes.
DEFAULT_MAILBOXES = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
)

#: The hierarchy separator of mailbox names as the store and IMAP see them.
HIERARCHY_SEPARATOR = "/"


@dataclass(frozen=True)
class MessageInfo:
    """Metadata of one stored message; ``internal_date`` is timezone-aware."""

    uid: int
    flags: frozenset[str]
    modseq: int
    internal_date: datetime
    size: int


@dataclass(frozen=True)
class MailboxInfo:
    name: str
    uidvalidity: int
    special_use: str | None = None
    subscribed: bool = True


@dataclass(frozen=True)
class MailboxStatus:
    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    messages: int
    unseen: int
    size: int


class ChangeKind(enum.Enum):
    NEW = "new"
    EXPUNGED = "expunged"
    FLAGS = "flags"
    MAILBOXES = "mailboxes"  # created, deleted or renamed


@dataclass(frozen=True)
class Change:
    """One event of the change feed; ``uids`` are the messages concerned."""

    kind: ChangeKind
    account: str
    mailbox: str
    uids: tuple[int, ...] = ()
    modseq: int = 0


class IMailStore(Interface):
    """
    The protocol-neutral mailbox store: per account a tree of mailboxes; per message a UID,
    flags, MODSEQ, internal date, size and the raw bytes.  Every method returns a Deferred
    (disk work runs off the reactor thread); listeners of the change feed are called on the
    reactor thread after the change is durable.  ``account`` is an Account.uid.
    """

    def ensure_account(account):
        """Create the account's default mailboxes if missing; Deferred[None]."""

    def mailboxes(account):
        """Deferred[list[MailboxInfo]], sorted by name (INBOX first)."""

    def create_mailbox(account, name, special_use=None):
        """Deferred[MailboxInfo]; MailboxExists, InvalidMailboxName."""

    def delete_mailbox(account, name):
        """Deferred[None]; NoSuchMailbox; INBOX cannot be deleted (StoreError)."""

    def rename_mailbox(account, old, new):
        """Deferred[None]; renames children too; NoSuchMailbox, MailboxExists."""

    def set_subscribed(account, name, subscribed):
        """Mark an existing mailbox (un)subscribed; Deferred[None]; NoSuchMailbox."""

    def status(account, name):
        """Deferred[MailboxStatus]; NoSuchMailbox."""

    def append(account, name, data, flags=frozenset(), internal_date=None):
        """
        Store ``data`` (bytes, the message as received) durably: file and directory are
        fsynced before the Deferred fires with the new MessageInfo.  Nothing is visible
        before that, and a failure leaves nothing behind.
        """

    def messages(account, name, *, changed_since=0):
        """
        Deferred[list[MessageInfo]] of the mailbox, in UID order.  With ``changed_since``
        (a MODSEQ), only the messages whose modseq is above it: what was appended or had
        its flags changed since then (RFC 7162 §3.1.4 CHANGEDSINCE semantics).
        """

    def read(account, name, uid):
        """Deferred[bytes], the message exactly as appended; NoSuchMessage."""

    def set_flags(account, name, uids, flags, mode=FlagMode.SET):
        """Change flags; Deferred[list[MessageInfo]] of the messages that exist."""

    def copy(account, name, uids, destination):
        """Deferred[dict[int, int]]: source UID -> new UID in ``destination``.
        QuotaExceeded (nothing copied) when the copies would pass the account's limit."""

    def usage(account):
        """Deferred[int]: the octets stored by ``account`` over all its mailboxes, the
        number its quota is measured against."""

    def move(account, name, uids, destination):
        """Like copy, then expunge the sources; Deferred[dict[int, int]]."""

    def expunge(account, name, uids):
        """Remove messages for good; Deferred[list[int]] of the UIDs removed."""

    def subscribe(listener):
        """
        Call ``listener(change)`` for every Change; return a callable that unsubscribes.
        """

    def close():
        """Release files, connections and threads; Deferred[None]."""


# --------------------------------------------------------------------------- delivery


class DeliveryError(Exception):
    """
    A recipient or a message was refused.  ``code`` is the SMTP reply code, ``status`` the
    enhanced status code (RFC 3463) and ``text`` the short text shown to the client.
    """

    def __init__(self, code: int, status: str, text: str):
        super().__init__(f"{code} {status} {text}")
        self.code = code
        self.status = status
        self.text = text

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500


@dataclass
class Envelope:
    """The SMTP transaction as data: who sent, from where, how."""

    mail_from: str  # "" for the null reverse-path
    helo: str = ""
    client_address: str = ""
    client_name: str = ""
    authenticated_as: str | None = None  # Account.uid after AUTH
    protocol: str = "ESMTP"  # as in the Received header: ESMTP, ESMTPS, ESMTPSA, ...
    smtputf8: bool = False
    body_type: str = "7BIT"  # 7BIT, 8BITMIME, BINARYMIME
    size: int | None = None  # SIZE= parameter
    mail_params: dict[str, str | None] = field(default_factory=dict)
    id: str = ""
    received_at: datetime | None = None


class IDelivery(Interface):
    """
    One message on its way to one target.  Nothing is visible to anyone before commit();
    abort() at any stage leaves nothing behind.
    """

    def add_recipient(address, params=None):
        """Deferred[None]; fails with DeliveryError (e.g. 550 5.1.1) to refuse it."""

    def body(data):
        """Deferred[None]: the whole message (bytes, CRLF line ends, Received prepended)."""

    def commit():
        """
        Deferred[None] firing only once every copy is durably stored or queued; fails with
        DeliveryError (temporary or permanent), in which case nothing was delivered.
        """

    def abort():
        """Forget the message; nothing is delivered."""


class IDeliveryTarget(Interface):
    """Where accepted mail goes: local delivery, the outbound queue, or a router of both."""

    def start(envelope):
        """Begin a delivery for ``envelope``; return an IDelivery."""


# --------------------------------------------------------------------------- checks


class Verdict(enum.Enum):
    ACCEPT = "accept"
    TEMPFAIL = "tempfail"
    REJECT = "reject"
    QUARANTINE = "quarantine"


@dataclass(frozen=True)
class CheckResult:
    verdict: Verdict = Verdict.ACCEPT
    reason: str = ""
    score: float = 0.0


class ICheck(Interface):
    """
    A step of the mail-protection pipeline.  Each hook returns a CheckResult or a Deferred
    firing with one; ``stage`` is one of "connect", "mail", "rcpt", "data".
    """

    name = Attribute("short name used in config and logs")

    def check(stage, envelope, data=None):
        """Judge the transaction at ``stage``; ``data`` is the message at "data"."""


# --------------------------------------------------------------------------- assembly


class IComponent(Interface):
    """
    A component plugin (SMTP, POP3, IMAP, LDAP, DNS, ...), found by twisted.plugin in
    ``mailsuite.plugins``.  A third party adds one by dropping a module there.
    """

    name = Attribute("short name, e.g. 'smtp'")
    listeners = Attribute("the [listen] keys this component serves, e.g. ('pop3', 'pop3s')")

    def makeService(suite):
        """Return an IService for the running suite (a mailsuite.tap.Suite)."""


class IStoreBackend(Interface):
    """A mailbox store backend plugin, chosen by ``[store] backend``."""

    name = Attribute("the value of [store] backend that selects it, e.g. 'sqlite'")

    def open(path, *, runner):
        """
        Return an IMailStore keeping its data below ``path`` (a str directory).  ``runner``
        is ``runner(f, *args, **kwargs) -> Deferred``: how blocking disk work is run (a
        thread pool in production, inline in unit tests; see mailsuite.store.base).
        """


# --------------------------------------------------------------------------- store search


class Op(enum.Enum):
    """How a message's value compares with the value a search key names."""

    LT = "<"
    LE = "<="
    EQ = "="
    GE = ">="
    GT = ">"


@dataclass(frozen=True)
class SearchAll:
    """Every message."""


@dataclass(frozen=True)
class SearchAnd:
    items: tuple = ()


@dataclass(frozen=True)
class SearchOr:
    items: tuple = ()


@dataclass(frozen=True)
class SearchNot:
    item: object


@dataclass(frozen=True)
class SearchUIDs:
    """UIDs within any of ``ranges``: (first, last) pairs, both included."""

    ranges: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, uids) -> SearchUIDs:
        """The ranges covering exactly the UIDs of ``uids`` (an iterable of int)."""
        ranges: list[list[int]] = []
        for uid in sorted(set(uids)):
            if ranges and ranges[-1][1] + 1 == uid:
                ranges[-1][1] = uid
            else:
                ranges.append([uid, uid])
        return cls(tuple((a, b) for a, b in ranges))


@dataclass(frozen=True)
class SearchFlag:
    """Messages that have (``present``) or lack the flag ``name`` (exact spelling)."""

    name: str
    present: bool = True


@dataclass(frozen=True)
class SearchHeader:
    """
    A top-level header field ``name`` whose RFC 2047-decoded value contains ``substring``,
    case-insensitively (RFC 3501 §6.4.4); an empty substring matches any message having the
    field.
    """

    name: str
    substring: str


@dataclass(frozen=True)
class SearchBody:
    """The decoded text of the message's text/* parts contains ``substring``."""

    substring: str


@dataclass(frozen=True)
class SearchText:
    """The decoded header ("name: value" lines) or the body text contains ``substring``."""

    substring: str


@dataclass(frozen=True)
class SearchSize:
    op: Op
    size: int


@dataclass(frozen=True)
class SearchInternalDate:
    """
    Compare the internal date with ``when``: a ``date`` compares days, disregarding time and
    timezone (RFC 3501 §6.4.4 BEFORE/ON/SINCE); an aware ``datetime`` compares instants
    (RFC 5032 OLDER/YOUNGER).
    """

    op: Op
    when: object


@dataclass(frozen=True)
class SearchSentDate:
    """Like SearchInternalDate, for the Date header; never matches a message without one."""

    op: Op
    when: object


@dataclass(frozen=True)
class SearchModSeq:
    op: Op
    modseq: int


SearchQuery = (
    SearchAll | SearchAnd | SearchOr | SearchNot | SearchUIDs | SearchFlag | SearchHeader
    | SearchBody | SearchText | SearchSize | SearchInternalDate | SearchSentDate | SearchModSeq
)


@dataclass(frozen=True)
class MetaAddress:
    """The first mailbox of an address header: display name (decoded) and addr-spec."""

    name: str | None
    address: str


@dataclass(frozen=True)
class MessageMeta:
    """
    What SORT, THREAD and FETCH ENVELOPE/BODY/BODYSTRUCTURE need of a message, parsed once
    when it is stored.  ``date`` is the Date header (aware) or None; text values are decoded;
    ``envelope``, ``body`` and ``bodystructure`` are the wire syntax of RFC 3501 §7.4.2.
    """

    date: datetime | None = None
    subject: str | None = None
    from_: MetaAddress | None = None
    to: MetaAddress | None = None
    cc: MetaAddress | None = None
    message_id: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    envelope: bytes = b""
    body: bytes = b""
    bodystructure: bytes = b""


class SortKeys(NamedTuple):
    """
    The SORT and THREAD (RFC 5256) inputs of a message, precomputed at delivery.  Text keys
    are i;ascii-casemapped (RFC 4790 §9.2); ``sent`` is the Date header as a UTC timestamp
    (None without a usable one); ``subject`` is the RFC 5256 §2.1 base subject and ``reply``
    whether extracting it removed a reply or forward marker; ``from_``, ``to``, ``cc`` the
    first address's addr-mailbox (RFC 5256 §3), ``display_from``/``display_to`` the RFC 5957
    §3 display text; msg-ids are bare (without "<" ">").  A plain tuple, so that a store can
    hand out tens of thousands cheaply.
    """

    sent: float | None = None
    subject: str = ""
    reply: bool = False
    from_: str = ""
    to: str = ""
    cc: str = ""
    display_from: str = ""
    display_to: str = ""
    message_id: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()


class ISearchableStore(Interface):
    """
    An IMailStore that answers searches and metadata from what it kept at delivery, without
    the caller reading messages.
    """

    def search(account, mailbox, query):
        """Deferred[list[int]]: UIDs of the messages matching ``query``, ascending;
        NoSuchMailbox."""

    def message_meta(account, mailbox, uids):
        """Deferred[dict[int, MessageMeta]] for the UIDs of ``uids`` that exist."""

    def sort_keys(account, mailbox, uids):
        """Deferred[dict[int, SortKeys]] for the UIDs of ``uids`` that exist: only what
        SORT and THREAD compare, computed when the message was stored."""
