"""
ISearchableStore for the maildir backend: MessageMeta cached per UID in the folder's index
(filled at append and copy, and for files other programs added on first need), searches
evaluated by mailsuite.store.search; header and text keys read the message files.
"""

from __future__ import annotations

from twisted.logger import Logger

from mailsuite.store.search import Candidate, evaluate, index_entry, needs_meta, sort_keys_of

log = Logger()


class _LazyInfo:
    """The MessageInfo fields of one message, each read from disk only when a key needs it."""

    __slots__ = ("uid", "_folder", "_entry")

    def __init__(self, folder, uid):
        self.uid = uid
        self._folder = folder
        self._entry = folder.entries[uid]

    @property
    def flags(self):
        return self._folder.flags(self._entry)

    @property
    def modseq(self):
        return self._entry.modseq

    @property
    def size(self):
        return self._folder.size(self.uid)

    @property
    def internal_date(self):
        return self._folder.info(self.uid).internal_date


def _read(folder, uid) -> bytes:
    try:
        with open(folder.file(uid), "rb") as f:
            return f.read()
    except FileNotFoundError:
        # Removed by another program since the last scan: it matches nothing.
        return b""


class MetaCache:
    """The cached MessageMeta of a folder's messages; what is missing is parsed and kept."""

    def __init__(self, folder, uids=None):
        self._folder = folder
        self._cached = folder.index.load_meta(uids)
        self._fresh = {}

    def get(self, uid):
        base = self._folder.entries[uid].base
        cached = self._cached.get(uid)
        if cached is not None and cached[0] == base:
            return cached[1]
        meta = index_entry(_read(self._folder, uid)).meta
        self._cached[uid] = self._fresh[uid] = (base, meta)
        return meta

    def note(self, uid, meta):
        """Keep ``meta``, computed while reading the file for another reason."""
        base = self._folder.entries[uid].base
        cached = self._cached.get(uid)
        if cached is None or cached[0] != base:
            self._cached[uid] = self._fresh[uid] = (base, meta)

    def save(self):
        if self._fresh:
            self._folder.index.save_meta(self._fresh)
            self._fresh = {}


def search_folder(folder, query) -> list[int]:
    """UIDs of the messages of ``folder`` matching ``query`` (account lock held)."""
    cache = MetaCache(folder) if needs_meta(query) else None

    def entry_of(uid):
        def load():
            entry = index_entry(_read(folder, uid))
            if cache is not None:
                cache.note(uid, entry.meta)
            return entry

        return load

    candidates = [
        Candidate(
            _LazyInfo(folder, uid),
            meta=(lambda uid=uid: cache.get(uid)),
            entry=entry_of(uid),
        )
        for uid in folder.entries
    ]
    found = evaluate(query, candidates)
    if cache is not None:
        cache.save()
    return found


def folder_meta(folder, uids) -> dict:
    """{uid: MessageMeta} for the UIDs of ``uids`` in ``folder`` (account lock held)."""
    present = sorted(set(u for u in uids if u in folder.entries))
    cache = MetaCache(folder, present)
    found = {uid: cache.get(uid) for uid in present}
    cache.save()
    return found


def folder_sort_keys(folder, uids) -> dict:
    """{uid: SortKeys} for the UIDs of ``uids`` in ``folder`` (account lock held)."""
    return {uid: sort_keys_of(meta) for uid, meta in folder_meta(folder, uids).items()}


def copied_meta(source, target_bases) -> dict:
    """{new uid: (new base, MessageMeta)} for copies, from the source's cache:
    ``target_bases`` maps source UID to (new uid, new base)."""
    cached = source.index.load_meta(list(target_bases))
    out = {}
    for uid, (new_uid, new_base) in target_bases.items():
        hit = cached.get(uid)
        if hit is not None and hit[0] == source.entries[uid].base:
            out[new_uid] = (new_base, hit[1])
    return out
