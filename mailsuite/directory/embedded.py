"""
The embedded directory: entries persisted in one SQLite file, served from in-memory indexes.

Every change is one SQLite transaction (WAL, synchronous=FULL), so a crash never leaves a
half-written directory.  Another process (the admin command, another worker) may change the
same file: ``PRAGMA data_version`` reveals that cheaply and the indexes are rebuilt.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import json
import sqlite3
from collections.abc import Callable, Iterable

from twisted.logger import Logger
from zope.interface import implementer

from mailsuite.directory.entry import (
    DNError,
    Entry,
    escape_dn_value,
    is_under,
    normalize_dn,
    parent_of_normalized,
)
from mailsuite.directory.ldif import parse_ldif, write_ldif
from mailsuite.directory.passwords import (
    DEFAULT_SCHEME,
    cheap_to_verify,
    hash_password,
    verify_password,
)
from mailsuite.directory.schema import (
    ACCOUNT_OBJECT_CLASSES,
    account_of,
    addresses_of,
    base_entry,
    domain_of,
    is_account,
    is_address,
    is_group,
    normalize_address,
    prepare_entry,
    valid_uid,
)
from mailsuite.directory.substring_index import SubstringIndex
from mailsuite.interfaces import (
    Account,
    DirectoryError,
    EntryExists,
    Expansion,
    IDirectory,
    IDirectoryAdmin,
    InvalidEntry,
    NoSuchEntry,
    Recipient,
    RecipientKind,
)

log = Logger()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    ndn TEXT PRIMARY KEY,
    dn TEXT NOT NULL,
    attributes TEXT NOT NULL
)
"""

# Group expansion stops after this many entries: a safety net beside loop detection.
MAX_EXPANSION = 10_000
# Nesting of groups and forwards deeper than this is cut (and logged).
MAX_DEPTH = 50

# Compared against when the login is unknown, so that both cases cost a hash verification.
_DUMMY_HASH = hash_password("not a password")


# One encoder for every row: json.dumps with options builds a new one per call.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# A value that is not UTF-8 is stored as {"base64": "..."}.
_BINARY_MARK = '{"base64":'


def _encode(entry: Entry) -> str:
    try:
        return _JSON.encode(dict(entry.items()))
    except TypeError:  # bytes values
        pass
    return _JSON.encode({
        name: [v if isinstance(v, str) else {"base64": base64.b64encode(v).decode("ascii")}
               for v in values]
        for name, values in entry.items()
    })


class _Shared:
    """
    One string object for each attribute name and objectClass value seen during a load:
    100,000 entries otherwise hold 100,000 copies of each, tens of megabytes.
    """

    def __init__(self):
        self.names: dict[str, tuple[str, str]] = {}  # spelling -> (spelling, lower-cased)
        self.classes: dict[str, str] = {}

    def name(self, spelling: str) -> tuple[str, str]:
        known = self.names.get(spelling)
        if known is None:
            known = self.names[spelling] = (spelling, spelling.lower())
        return known

    def object_classes(self, values) -> tuple:
        classes = self.classes
        return tuple(classes.setdefault(v, v) if isinstance(v, str) else v for v in values)


def _decode(dn: str, text: str, ndn: str | None = None, shared: _Shared | None = None) -> Entry:
    attrs = json.loads(text)
    if _BINARY_MARK in text:
        for values in attrs.values():
            for k, v in enumerate(values):
                if not isinstance(v, str):
                    values[k] = base64.b64decode(v["base64"])
    shared = shared or _Shared()
    folded = {}
    for name, values in attrs.items():
        spelling, key = shared.name(name)
        if key in folded or not values:  # let Entry sort out empty or case-duplicate names
            entry = Entry(dn, attrs)
            entry._ndn = ndn
            return entry
        folded[key] = (spelling, shared.object_classes(values) if key == "objectclass"
                       else tuple(values))
    return Entry.trusted(dn, folded, ndn)


# Loads and imports of at least this many entries are frozen out of the collector's sight
# (when the directory is opened, see _bulk) and substring-indexed in the background.
_LARGE_LOAD = 20_000


@contextlib.contextmanager
def _bulk(size: Callable[[], int] | None = None):
    """
    Pause the cyclic garbage collector while many long-lived objects are built: collections
    triggered by the allocations would otherwise triple the time of a large load.

    ``size()``, if given, tells afterwards how many entries were loaded; for a large load the
    objects alive then are frozen (gc.freeze): entries hold no reference cycles, reference
    counting still frees them, and later collections do not walk millions of them again
    (three full walks, about a second and a half at 100,000 entries).  Only worth doing
    while the directory is opened: later, live connections would be frozen with them, and
    their reference cycles never collected once they end.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if size is not None and size() >= _LARGE_LOAD:
            gc.freeze()
        if was_enabled:
            gc.enable()


def _verify_any(stored: list[str], password: str) -> bool:
    return any(verify_password(value, password) for value in stored)


class _Staging:
    """
    The directory as a change in progress would leave it: reads fall through to the committed
    indexes except for entries staged here.
    """

    def __init__(self, directory: EmbeddedDirectory):
        self._d = directory
        self.puts: dict[str, Entry] = {}
        self.deletes: set[str] = set()
        self._addresses: dict[str, str] = {}
        self._uids: dict[str, str] = {}

    def entry(self, ndn: str) -> Entry | None:
        if ndn in self.deletes:
            return None
        if ndn in self.puts:
            return self.puts[ndn]
        return self._d._entries.get(ndn)

    def _touched(self, ndn: str) -> bool:
        return ndn in self.puts or ndn in self.deletes

    def address_owner(self, address: str) -> str | None:
        if address in self._addresses:
            return self._addresses[address]
        owner = self._d._by_address.get(address)
        return None if owner is None or self._touched(owner) else owner

    def uid_owner(self, uid: str) -> str | None:
        if uid in self._uids:
            return self._uids[uid]
        owner = self._d._by_uid.get(uid)
        return None if owner is None or self._touched(owner) else owner

    def put(self, entry: Entry) -> None:
        ndn = entry.ndn
        self._forget(ndn)
        self.deletes.discard(ndn)
        self.puts[ndn] = entry
        for address in addresses_of(entry):
            self._addresses[address] = ndn
        for uid in entry.get("uid"):
            self._uids[uid.lower()] = ndn

    def delete(self, ndn: str) -> None:
        self._forget(ndn)
        self.puts.pop(ndn, None)
        self.deletes.add(ndn)

    def _forget(self, ndn: str) -> None:
        previous = self.puts.get(ndn)
        if previous is not None:
            for address in addresses_of(previous):
                self._addresses.pop(address, None)
            for uid in previous.get("uid"):
                self._uids.pop(uid.lower(), None)


@implementer(IDirectory, IDirectoryAdmin)
class EmbeddedDirectory:
    """
    See IDirectory and IDirectoryAdmin.  ``path`` is the SQLite file (None or ":memory:" for
    a private in-memory directory); ``domains`` the local mail domains; ``base_dn`` the suffix
    every entry lives under; ``seed_ldif`` is imported when the directory is empty;
    ``runner(f, *args) -> Deferred``, if given, runs password verification (which may be slow)
    so that check_password returns a Deferred.  ``password_scheme`` is used for new hashes.
    """

    def __init__(
        self,
        path: str | None,
        *,
        domains: Iterable[str],
        base_dn: str,
        seed_ldif: bytes | None = None,
        runner: Callable | None = None,
        password_scheme: str = DEFAULT_SCHEME,
        busy_timeout: float = 5.0,
    ):
        self.local_domains = frozenset(d.lower().rstrip(".") for d in domains)
        self.base_dn = base_dn
        try:
            self._base = normalize_dn(base_dn)
        except DNError as e:
            raise InvalidEntry(f"bad base DN: {e}") from None
        if not self._base:
            raise InvalidEntry("the base DN must not be empty")
        self._runner = runner
        self._scheme = password_scheme
        # Unknown logins are checked against a hash of the scheme accounts are stored with,
        # so they cost what a wrong password costs (a different scheme would be a timing
        # oracle for which names exist).  Making it also rejects an unusable scheme now.
        self._dummy_hash = (_DUMMY_HASH if password_scheme == DEFAULT_SCHEME
                            else hash_password("not a password", password_scheme))
        self._db = sqlite3.connect(path or ":memory:", isolation_level=None)
        # How long a write waits for another process's write to finish.
        self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.execute(_SCHEMA)
        self._version = None
        # Building the substring index in steps on a clock (build_indexes_in_background):
        # (clock, entries per step), and the pending call.
        self._builder: tuple | None = None
        self._builder_call = None
        self._opening = True  # see _bulk
        self._clear()
        self.reload()
        if seed_ldif is not None and not self._entries:
            self._seed(seed_ldif)
        self._opening = False

    def close(self) -> None:
        if self._builder_call is not None and self._builder_call.active():
            self._builder_call.cancel()
        self._builder_call = None
        self._db.close()

    # ----------------------------------------------------------------------- loading

    def _clear(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._by_address: dict[str, str] = {}
        self._by_uid: dict[str, str] = {}
        self._children: dict[str, set[str]] = {}
        self._groups: set[str] = set()
        self._accounts: dict[str, Account] = {}
        self._substrings = SubstringIndex()
        # Entries not yet in the substring index (None once it is complete): the index is
        # built after a load, in steps or at the first substring lookup, so that a large
        # directory starts serving sooner.
        self._substrings_pending: list[str] | None = None

    def _data_version(self) -> int:
        return self._db.execute("PRAGMA data_version").fetchone()[0]

    def reload(self) -> None:
        """Rebuild the in-memory indexes from the database."""
        version = self._data_version()
        with _bulk(lambda: len(self._entries) if self._opening else 0):
            rows = self._db.execute("SELECT ndn, dn, attributes FROM entries").fetchall()
            self._clear()
            shared = _Shared()
            for ndn, dn, text in rows:
                self._index(_decode(dn, text, ndn, shared), substrings=False)
            del rows
        self._version = version
        self._restart_substrings()
        log.debug("directory loaded: {count} entries", count=len(self._entries))

    def _fresh(self) -> None:
        if self._data_version() != self._version:
            log.info("directory changed by another process; reloading")
            self.reload()

    def _index(self, entry: Entry, *, substrings: bool = True) -> None:
        ndn = entry.ndn
        self._entries[ndn] = entry
        for address in addresses_of(entry):
            self._by_address[address] = ndn
        for uid in entry.values("uid"):
            if isinstance(uid, str):
                self._by_uid[uid.lower()] = ndn
        if ndn != self._base:
            parent = parent_of_normalized(ndn)
            siblings = self._children.get(parent)
            if siblings is None:
                self._children[parent] = {ndn}
            else:
                siblings.add(ndn)
        if is_group(entry):
            self._groups.add(ndn)
        if substrings:
            # Also while the index is being built: the builder skips what is indexed.
            self._substrings.add(entry)

    def _unindex(self, ndn: str) -> None:
        entry = self._entries.pop(ndn, None)
        if entry is None:
            return
        for address in addresses_of(entry):
            if self._by_address.get(address) == ndn:
                del self._by_address[address]
        for uid in entry.get("uid"):
            if isinstance(uid, str) and self._by_uid.get(uid.lower()) == ndn:
                del self._by_uid[uid.lower()]
        parent = parent_of_normalized(ndn)
        siblings = self._children.get(parent)
        if siblings is not None:
            siblings.discard(ndn)
            if not siblings:
                del self._children[parent]
        self._groups.discard(ndn)
        self._accounts.pop(ndn, None)
        self._substrings.discard(ndn)

    # ----------------------------------------------------------------------- writing

    def _change(self, plan: Callable[[_Staging], object]):
        """
        Run ``plan`` against fresh state under SQLite's write lock, then store what it staged
        in one transaction.  Nothing is written if ``plan`` raises.
        """
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            log.error("directory storage unavailable: {error}", error=e)
            raise DirectoryError("the directory is busy or unavailable; try again") from e
        try:
            if self._data_version() != self._version:
                self.reload()
            staging = _Staging(self)
            result = plan(staging)
            db.executemany("DELETE FROM entries WHERE ndn = ?", [(n,) for n in staging.deletes])
            db.executemany(
                "INSERT OR REPLACE INTO entries (ndn, dn, attributes) VALUES (?, ?, ?)",
                [(ndn, e.dn, _encode(e)) for ndn, e in staging.puts.items()],
            )
            db.execute("COMMIT")
        except BaseException as e:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                log.error("directory change failed: {error}", error=e)
                raise DirectoryError("the directory could not store the change") from e
            raise
        for ndn in staging.deletes:
            self._unindex(ndn)
        with _bulk(lambda: len(staging.puts) if self._opening else 0):
            for ndn, entry in staging.puts.items():
                self._unindex(ndn)
                self._index(entry, substrings=False)
        if len(staging.puts) >= _LARGE_LOAD:
            # A large import: index its entries in the background like a load.
            self._restart_substrings()
        else:
            for entry in staging.puts.values():
                self._substrings.add(entry)
            if self._substrings.wants_rebuild:
                self._restart_substrings()
        return result

    def _stage(self, staging: _Staging, entry: Entry, *, mode: str) -> None:
        """
        Check ``entry`` (already prepared) against the directory and stage it.  ``mode``:
        "add" (must be new), "replace" (must exist) or "upsert".
        """
        ndn = entry.ndn
        if not is_under(ndn, self._base):
            raise InvalidEntry(f"{entry.dn} is not below the base DN {self.base_dn}")
        existing = staging.entry(ndn)
        if existing is not None and mode == "add":
            raise EntryExists(f"entry {entry.dn} exists already")
        if existing is None and mode == "replace":
            raise NoSuchEntry(f"no entry {entry.dn}")
        if ndn != self._base and staging.entry(parent_of_normalized(ndn)) is None:
            raise NoSuchEntry(f"the parent of {entry.dn} does not exist")
        for address in addresses_of(entry):
            owner = staging.address_owner(address)
            if owner is not None and owner != ndn:
                raise EntryExists(f"address {address} is in use")
        for uid in entry.get("uid"):
            owner = staging.uid_owner(uid.lower())
            if owner is not None and owner != ndn:
                raise EntryExists(f"uid {uid} is in use")
        staging.put(entry)

    def _prepare(self, entry: Entry) -> Entry:
        return prepare_entry(entry, scheme=self._scheme)

    def _seed(self, data: bytes) -> None:
        with _bulk():
            entries = [self._prepare(e) for e in parse_ldif(data)]

            def plan(staging):
                if self._entries:  # seeded meanwhile by another process
                    return
                for entry in entries:
                    self._stage(staging, entry, mode="upsert")

            self._change(plan)
        log.info("directory seeded with {count} entries", count=len(entries))

    # ----------------------------------------------------------------------- entries

    def get(self, dn: str) -> Entry | None:
        """The entry named ``dn``, or None."""
        self._fresh()
        try:
            return self._entries.get(normalize_dn(dn))
        except DNError:
            return None

    def entries(self) -> list[Entry]:
        """Every entry, each parent before its children."""
        self._fresh()
        out = []
        roots = sorted(
            n for n in self._entries
            if n == self._base or parent_of_normalized(n) not in self._entries
        )
        stack = list(reversed(roots))
        seen = set()
        while stack:
            ndn = stack.pop()
            if ndn in seen:
                continue
            seen.add(ndn)
            out.append(self._entries[ndn])
            stack.extend(sorted(self._children.get(ndn, ()), reverse=True))
        return out

    def children(self, dn: str) -> list[Entry]:
        """The entries directly below ``dn``."""
        self._fresh()
        try:
            ndn = normalize_dn(dn)
        except DNError:
            return []
        return [self._entries[n] for n in sorted(self._children.get(ndn, ()))]

    def add_entry(self, entry: Entry) -> Entry:
        """Store a new entry; EntryExists, NoSuchEntry (no parent), InvalidEntry."""
        entry = self._prepare(entry)
        self._change(lambda staging: self._stage(staging, entry, mode="add"))
        return entry

    def replace_entry(self, entry: Entry) -> Entry:
        """Replace the entry with the same DN; NoSuchEntry if there is none."""
        entry = self._prepare(entry)
        self._change(lambda staging: self._stage(staging, entry, mode="replace"))
        return entry

    def delete_entry(self, dn: str) -> None:
        """Remove a leaf entry; NoSuchEntry, InvalidEntry if it has children."""
        try:
            ndn = normalize_dn(dn)
        except DNError as e:
            raise InvalidEntry(str(e)) from None

        def plan(staging):
            if staging.entry(ndn) is None:
                raise NoSuchEntry(f"no entry {dn}")
            if self._children.get(ndn):
                raise InvalidEntry(f"{dn} has entries below it")
            staging.delete(ndn)

        self._change(plan)

    def rename_entry(self, dn: str, entry: Entry) -> Entry:
        """
        Move the leaf entry ``dn`` to ``entry`` (a new DN and its attributes) in one change;
        NoSuchEntry, EntryExists, InvalidEntry if it has children.
        """
        try:
            old = normalize_dn(dn)
        except DNError as e:
            raise InvalidEntry(str(e)) from None
        entry = self._prepare(entry)

        def plan(staging):
            if staging.entry(old) is None:
                raise NoSuchEntry(f"no entry {dn}")
            if self._children.get(old):
                raise InvalidEntry(f"{dn} has entries below it")
            staging.delete(old)
            self._stage(staging, entry, mode="add")

        self._change(plan)
        return entry

    def ndns_with_value(self, attribute: str, value: str) -> set[str] | None:
        """
        Normalised DNs of the entries that may hold ``value`` in ``attribute``, from the
        indexes (a superset of the exact matches), or None if no index covers ``attribute``.
        """
        self._fresh()
        name = attribute.lower()
        if name in ("mail", "maillocaladdress"):
            ndn = self._by_address.get(normalize_address(value))
            return {ndn} if ndn is not None else set()
        if name == "uid":
            ndn = self._by_uid.get(value.strip().lower())
            return {ndn} if ndn is not None else set()
        return None

    def ndns_with_substrings(self, attribute: str, initial: str | None,
                             middle: Iterable[str], final: str | None) -> set[str] | None:
        """
        Normalised DNs of the entries whose ``attribute`` matches the substring assertion
        (RFC 4511 §4.5.1.7.2), from the substring index, or None if the index cannot narrow
        the search and every entry must be tested.
        """
        self._fresh()
        if self._substrings_pending is not None:
            if self._builder is not None:
                return None  # being built: a scan answers meanwhile
            self._build_substrings(None)
        return self._substrings.lookup(attribute, initial, middle, final,
                                       entry_of=self._entries.get)

    # ----------------------------------------------------------------------- substring index

    def build_indexes_in_background(self, clock, *, step: int = 1000) -> None:
        """
        Build the substring index (and rebuild it after each reload) in steps of ``step``
        entries, one step per turn of ``clock`` (an IReactorTime), instead of all at once at
        the first substring search.  Substring lookups answer None (scan) until it is done.
        Calling it again changes nothing.
        """
        if self._builder is not None:
            return
        self._builder = (clock, step)
        self._schedule_build()

    @property
    def substring_index_ready(self) -> bool:
        return self._substrings_pending is None

    def _restart_substrings(self) -> None:
        """Start the substring index afresh: every entry is pending."""
        self._substrings = SubstringIndex()
        self._substrings_pending = list(self._entries)
        self._schedule_build()

    def _schedule_build(self) -> None:
        if self._builder is None or self._substrings_pending is None:
            return
        if self._builder_call is None or not self._builder_call.active():
            self._builder_call = self._builder[0].callLater(0, self._build_step)

    def _build_step(self) -> None:
        self._builder_call = None
        if not self._build_substrings(self._builder[1]):
            self._schedule_build()
        else:
            log.info("substring index ready: {count} entries", count=len(self._substrings))

    def _build_substrings(self, limit: int | None) -> bool:
        """Index up to ``limit`` (None: all) pending entries; True once none is pending."""
        pending = self._substrings_pending
        if pending is None:
            return True
        index, entries = self._substrings, self._entries
        count = len(pending) if limit is None else min(limit, len(pending))
        for _ in range(count):
            ndn = pending.pop()
            entry = entries.get(ndn)
            if entry is not None and ndn not in index:
                index.add(entry)
        if pending:
            return False
        self._substrings_pending = None
        return True

    # ----------------------------------------------------------------------- IDirectory

    def _account_at(self, ndn: str) -> Account | None:
        account = self._accounts.get(ndn)
        if account is None:
            entry = self._entries.get(ndn)
            if entry is None or not is_account(entry):
                return None
            account = self._accounts[ndn] = account_of(entry)
        return account

    def _is_local(self, address: str) -> bool:
        return domain_of(address) in self.local_domains

    def _recipient(self, address: str, ndn: str, via_subaddress: bool) -> Recipient:
        entry = self._entries[ndn]
        account = self._account_at(ndn)
        if account is not None:
            if via_subaddress:
                via = "subaddress"
            elif address in (normalize_address(v) for v in entry.get("mail")):
                via = "mail"
            else:
                via = "alias"
            return Recipient(RecipientKind.ACCOUNT, address, account=account, via=via)
        return Recipient(
            RecipientKind.GROUP,
            address,
            via="subaddress" if via_subaddress else "mail",
            members=tuple(self._member_addresses(entry)),
        )

    def _member_addresses(self, entry: Entry) -> list[str]:
        out = []
        for member in entry.get("member"):
            target = self._member_entry(member)
            if target is None:
                continue
            mail = target.first("mail")
            if isinstance(mail, str):
                address = normalize_address(mail)
                if address not in out:
                    out.append(address)
        return out

    def _member_entry(self, member) -> Entry | None:
        try:
            return self._entries.get(normalize_dn(member))
        except (DNError, AttributeError):
            return None

    def _lookup(self, address: str) -> tuple[str, bool] | None:
        """
        (ndn, reached through a subaddress) of the account or group a normalised address
        reaches; the exact address wins over plus-addressing.  None if neither.
        """
        ndn = self._by_address.get(address)
        if ndn is not None and self._reachable(ndn):
            return ndn, False
        local, _, domain = address.rpartition("@")
        base = local.partition("+")[0]
        if base and base != local:
            ndn = self._by_address.get(f"{base}@{domain}")
            if ndn is not None and self._reachable(ndn):
                return ndn, True
        return None

    def _reachable(self, ndn: str) -> bool:
        entry = self._entries[ndn]
        return self._account_at(ndn) is not None or (is_group(entry) and entry.has("mail"))

    def resolve(self, address: str) -> Recipient:
        self._fresh()
        address = normalize_address(address) if isinstance(address, str) else ""
        if is_address(address) and self._is_local(address):
            found = self._lookup(address)
            if found is not None:
                return self._recipient(address, *found)
        return Recipient(RecipientKind.UNKNOWN, address)

    def expand(self, address: str) -> Expansion:
        self._fresh()
        accounts: dict[str, Account] = {}
        remote: dict[str, None] = {}
        visited_groups: set[str] = set()
        forwarding: set[str] = set()
        budget = [MAX_EXPANSION]

        def deliver_to_entry(ndn: str, depth: int) -> None:
            budget[0] -= 1
            if budget[0] < 0 or depth > MAX_DEPTH:
                log.warn("expansion of {address} cut at {ndn}", address=address, ndn=ndn)
                return
            account = self._account_at(ndn)
            if account is None:
                if ndn in visited_groups:  # a group nested in itself
                    return
                visited_groups.add(ndn)
                for member in self._entries[ndn].get("member"):
                    target = self._member_entry(member)
                    if target is not None:
                        deliver_to_member(target, depth + 1)
            elif account.forward and account.uid not in forwarding:
                forwarding.add(account.uid)
                for target in account.forward:
                    if target in account.addresses:
                        accounts.setdefault(account.uid, account)
                    else:
                        deliver_to_address(target, depth + 1)
                forwarding.discard(account.uid)
            else:
                # No forward, or a chain of forwards came back here: keep the mail.
                accounts.setdefault(account.uid, account)

        def deliver_to_member(entry: Entry, depth: int) -> None:
            if is_account(entry) or is_group(entry):
                deliver_to_entry(entry.ndn, depth)
                return
            mail = entry.first("mail")
            if isinstance(mail, str):
                deliver_to_address(normalize_address(mail), depth)

        def deliver_to_address(target: str, depth: int) -> None:
            if not is_address(target):
                return
            if not self._is_local(target):
                remote.setdefault(target, None)
                return
            found = self._lookup(target)
            if found is not None:
                deliver_to_entry(found[0], depth)

        deliver_to_address(normalize_address(address) if isinstance(address, str) else "", 0)
        return Expansion(accounts=tuple(accounts.values()), remote=tuple(remote))

    def account(self, uid: str) -> Account | None:
        self._fresh()
        if not isinstance(uid, str):
            return None
        ndn = self._by_uid.get(uid.lower())
        return self._account_at(ndn) if ndn is not None else None

    def _login_ndn(self, login: str) -> str | None:
        if not isinstance(login, str):
            return None
        name = normalize_address(login)
        if "@" in name:
            ndn = self._by_address.get(name)
        else:
            ndn = self._by_uid.get(name)
        return ndn if ndn is not None and self._account_at(ndn) is not None else None

    def find_account(self, login: str) -> Account | None:
        self._fresh()
        ndn = self._login_ndn(login)
        return self._account_at(ndn) if ndn is not None else None

    def check_password(self, login: str, password: str):
        self._fresh()
        ndn = self._login_ndn(login) if isinstance(password, str) and password else None
        account = self._account_at(ndn) if ndn is not None else None
        stored = []
        if account is not None:
            stored = [v for v in self._entries[ndn].get("userPassword") if isinstance(v, str)]
        if not stored:
            account, stored = None, [self._dummy_hash]
        candidate = password if isinstance(password, str) else ""

        def outcome(ok: bool):
            return account if ok and account is not None else None

        if self._runner is not None and not all(cheap_to_verify(v) for v in stored):
            return self._runner(_verify_any, stored, candidate).addCallback(outcome)
        return outcome(_verify_any(stored, candidate))

    # ----------------------------------------------------------------------- IDirectoryAdmin

    def _local_address(self, address: str) -> str:
        normal = normalize_address(address) if isinstance(address, str) else ""
        if not is_address(normal):
            raise InvalidEntry(f"{address!r} is not a mail address")
        if not self._is_local(normal):
            raise InvalidEntry(f"{normal} is not in a local domain")
        return normal

    def _hash(self, password: str) -> str:
        if not isinstance(password, str) or not password:
            raise InvalidEntry("the password must not be empty")
        return hash_password(password, self._scheme)

    def _require_account(self, login: str) -> str:
        ndn = self._login_ndn(login)
        if ndn is None:
            raise NoSuchEntry(f"no account {login}")
        return ndn

    def add_user(self, address, password, *, cn=None, uid=None):
        address = self._local_address(address)
        local = address.rpartition("@")[0]
        uid = uid if uid is not None else local
        if not valid_uid(uid):
            raise InvalidEntry(f"{uid!r} is not a valid uid (letters, digits, '.', '_', '-')")
        cn = cn or local
        people = f"ou=people,{self.base_dn}"
        entry = self._prepare(Entry(f"uid={escape_dn_value(uid)},{people}", {
            "objectClass": list(ACCOUNT_OBJECT_CLASSES),
            "uid": [uid],
            "cn": [cn],
            "sn": [cn],
            "mail": [address],
            "userPassword": [self._hash(password)],
        }))

        def plan(staging):
            if staging.address_owner(address) is not None:
                raise EntryExists(f"address {address} is in use")
            if staging.uid_owner(uid.lower()) is not None:
                raise EntryExists(f"uid {uid} is in use")
            if staging.entry(self._base) is None:
                staging.put(base_entry(self.base_dn))
            if staging.entry(normalize_dn(people)) is None:
                staging.put(Entry(people, {"objectClass": ["top", "organizationalUnit"],
                                           "ou": ["people"]}))
            self._stage(staging, entry, mode="add")

        self._change(plan)
        return self._account_at(entry.ndn)

    def set_password(self, login, password):
        hashed = self._hash(password)

        def plan(staging):
            ndn = self._require_account(login)
            staging.put(self._entries[ndn].with_values("userPassword", [hashed]))

        self._change(plan)

    def delete_user(self, login):
        def plan(staging):
            ndn = self._require_account(login)
            if self._children.get(ndn):
                raise InvalidEntry(f"{self._entries[ndn].dn} has entries below it")
            staging.delete(ndn)
            for group in self._groups:
                entry = self._entries[group]
                members = entry.get("member")
                kept = [m for m in members if self._normal_or_none(m) != ndn]
                if len(kept) != len(members):
                    staging.put(entry.with_values("member", kept))

        self._change(plan)

    @staticmethod
    def _normal_or_none(dn):
        try:
            return normalize_dn(dn)
        except (DNError, AttributeError):
            return None

    def users(self):
        self._fresh()
        found = (self._account_at(ndn) for ndn in set(self._by_uid.values()))
        return sorted((a for a in found if a is not None), key=lambda a: a.mail)

    def add_alias(self, alias, target):
        alias = self._local_address(alias)

        def plan(staging):
            ndn = self._require_account(target)
            if staging.address_owner(alias) is not None:
                raise EntryExists(f"address {alias} is in use")
            entry = self._entries[ndn]
            if not entry.has_object_class("inetLocalMailRecipient"):
                entry = entry.with_added("objectClass", ["inetLocalMailRecipient"])
            self._stage(staging, entry.with_added("mailLocalAddress", [alias]), mode="upsert")

        self._change(plan)

    def delete_alias(self, alias):
        normal = normalize_address(alias) if isinstance(alias, str) else ""

        def plan(staging):
            ndn = self._by_address.get(normal)
            if ndn is None:
                raise NoSuchEntry(f"no alias {alias}")
            entry = self._entries[ndn]
            aliases = [v for v in entry.get("mailLocalAddress") if isinstance(v, str)]
            if normal not in {normalize_address(v) for v in aliases}:
                raise InvalidEntry(f"{normal} is a primary address, not an alias")
            kept = [v for v in aliases if normalize_address(v) != normal]
            staging.put(entry.with_values("mailLocalAddress", kept))

        self._change(plan)

    def import_ldif(self, data):
        with _bulk():
            entries = [self._prepare(e) for e in parse_ldif(data)]

            def plan(staging):
                for entry in entries:
                    self._stage(staging, entry, mode="upsert")

            self._change(plan)
        return len(entries)

    def export_ldif(self):
        return write_ldif(self.entries())
