"""
Argument parsers of the IMAP commands (RFC 3501 §6, §9 and the extensions' grammars), one
function per command, registered with ``arguments``.  Each reads what follows the command
name from a Reader and returns the command's arguments.
"""

from __future__ import annotations

from mailsuite.imap.parser import (
    MAX_NESTING,
    AppendMessage,
    Command,
    FetchArgs,
    FetchItem,
    ListArgs,
    QResyncParams,
    Reader,
    SearchArgs,
    SearchKey,
    Section,
    ParseError,
    SelectParams,
    StoreArgs,
    arguments,
    decode_mailbox,
)


class Refusal(ParseError):
    """
    A well-formed command asking for something the server does not offer: answered NO
    rather than BAD (RFC 3501 §6.4.4, RFC 5256 §3: NO [BADCHARSET] for an unknown charset).
    """


BADCHARSET = "BADCHARSET (UTF-8 US-ASCII)"


def unsupported_charset(r: Reader) -> Refusal:
    return Refusal("Unsupported charset", tag=r.tag, code=BADCHARSET)


# RFC 9051 Appendix E: what IMAP4rev1 had and IMAP4rev2 removed.
_REV1_COMMANDS = frozenset({"LSUB", "CHECK"})
_REV1_SEARCH_KEYS = frozenset({"NEW", "OLD", "RECENT"})


def removed_in_rev2(command: Command) -> str | None:
    """
    Why a client that enabled IMAP4rev2 may not send ``command`` (a short text for BAD),
    or None: LSUB and CHECK, the RECENT status item and the NEW, OLD and RECENT search
    keys are not in RFC 9051's grammar.
    """
    if command.name in _REV1_COMMANDS:
        return "Not part of IMAP4rev2"
    args = command.args
    if command.name == "STATUS" and "RECENT" in args[1]:
        return "RECENT is not part of IMAP4rev2"
    if isinstance(args, ListArgs) and "RECENT" in args.status_items:
        return "RECENT is not part of IMAP4rev2"
    key = getattr(args, "key", None)
    if isinstance(key, SearchKey) and _uses_rev1_keys(key):
        return "NEW, OLD and RECENT are not part of IMAP4rev2"
    return None


def _uses_rev1_keys(key: SearchKey) -> bool:
    stack = [key]
    while stack:
        node = stack.pop()
        if node.op in _REV1_SEARCH_KEYS:
            return True
        stack.extend(arg for arg in node.args if isinstance(arg, SearchKey))
    return False

@arguments("CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "CHECK", "CLOSE", "UNSELECT",
           "EXPUNGE", "IDLE", "NAMESPACE", "UNAUTHENTICATE")
def _no_arguments(r: Reader):
    return None


@arguments("LOGIN")
def _login(r: Reader):
    r.sp()
    user = r.text(r.astring())
    r.sp()
    password = r.text(r.astring())
    return user, password


@arguments("AUTHENTICATE")
def _authenticate(r: Reader):
    r.sp()
    mechanism = r.atom().upper()
    initial = None
    if r.accept(b" "):
        # RFC 4959 §3: the initial response, "=" for an empty one.
        initial = r._run(allow=frozenset(b"="))
        if not initial:
            raise r.error("Expected an initial response")
    return mechanism, initial


@arguments("ENABLE")
def _enable(r: Reader):
    names = []
    while r.accept(b" "):
        names.append(r.atom().upper())
    if not names:
        raise r.error("ENABLE needs a capability")
    return tuple(names)


@arguments("ID")
def _id(r: Reader):
    # RFC 2971 §3.1: "(" *(string SP nstring) ")" / NIL
    r.sp()
    if r.accept(b"NIL"):
        return None
    r.open_list()
    fields = {}
    if r.close_list():
        return fields
    while True:
        key = r.text(r.string())
        r.sp()
        value = r.nstring_or_nil()
        fields[key] = None if value is None else value.decode("utf-8", "replace")
        if r.close_list():
            return fields
        r.sp()


@arguments("SELECT", "EXAMINE")
def _select(r: Reader):
    r.sp()
    name = r.mailbox()
    if not r.accept(b" "):
        return name, SelectParams()
    # RFC 4466 §2.1 select-params; RFC 7162 §3.1.8 CONDSTORE, §3.2.5 QRESYNC.
    condstore = False
    qresync = None
    r.open_list()
    while True:
        word = r.atom().upper()
        if word == "CONDSTORE" and not condstore:
            condstore = True
        elif word == "QRESYNC" and qresync is None:
            r.sp()
            qresync = _qresync(r)
        else:
            raise r.error("Unknown SELECT parameter")
        if r.close_list():
            return name, SelectParams(condstore, qresync)
        r.sp()


def _qresync(r: Reader) -> QResyncParams:
    # "(" uidvalidity SP mod-sequence-value [SP known-uids] [SP seq-match-data] ")"
    r.open_list()
    uidvalidity = r.number(nonzero=True)
    r.sp()
    modseq = r.number64(nonzero=True)
    known = None
    seq_match = None
    if r.accept(b" ") and r.peek() != 0x28:
        known = r.sequence_set()
        if known.saved:
            raise r.error("Expected known UIDs")
        if not r.accept(b" "):
            r.expect(b")")
            return QResyncParams(uidvalidity, modseq, known)
    if r.peek() == 0x28:
        r.open_list()
        numbers = r.sequence_set()
        r.sp()
        uids = r.sequence_set()
        r.expect(b")")
        if numbers.saved or uids.saved:
            raise r.error("Expected sequence sets")
        seq_match = (numbers, uids)
    r.expect(b")")
    return QResyncParams(uidvalidity, modseq, known, seq_match)


def _parameter_list(r: Reader) -> tuple[str, ...]:
    """A parenthesised list of atoms (select and list options), upper-cased."""
    r.open_list()
    items = []
    if r.close_list():
        return ()
    while True:
        items.append(r.atom().upper())
        if r.close_list():
            return tuple(items)
        r.sp()


@arguments("CREATE")
def _create(r: Reader):
    r.sp()
    name = r.mailbox()
    special_use = None
    if r.accept(b" "):
        # RFC 6154 §3: CREATE name (USE (\Attr))
        r.open_list()
        r.expect(b"USE")
        r.sp()
        uses = r.flag_list()
        r.expect(b")")
        if len(uses) > 1:
            raise r.error("Only one special-use attribute per mailbox", code="USEATTR")
        special_use = uses[0] if uses else None
    return name, special_use


@arguments("DELETE", "SUBSCRIBE", "UNSUBSCRIBE")
def _one_mailbox(r: Reader):
    r.sp()
    return r.mailbox()


@arguments("RENAME")
def _rename(r: Reader):
    r.sp()
    old = r.mailbox()
    r.sp()
    return old, r.mailbox()


STATUS_ITEMS = frozenset({"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "SIZE",
                          "HIGHESTMODSEQ", "DELETED", "DELETED-STORAGE"})


def _status_items(r: Reader) -> tuple[str, ...]:
    items = _parameter_list(r)
    if not items:
        raise r.error("STATUS needs at least one item")
    for item in items:
        if item not in STATUS_ITEMS:
            raise r.error("Unknown STATUS item")
    return items


@arguments("STATUS")
def _status(r: Reader):
    r.sp()
    name = r.mailbox()
    r.sp()
    return name, _status_items(r)


_LIST_SELECTION = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
_LIST_RETURN = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})


@arguments("LIST")
def _list(r: Reader):
    # RFC 5258 §6: LIST [(selection)] reference patterns [RETURN (options)]
    r.sp()
    selection: tuple[str, ...] = ()
    extended = False
    if r.peek() == 0x28:
        selection = _parameter_list(r)
        extended = True
        for option in selection:
            if option not in _LIST_SELECTION:
                raise r.error("Unknown LIST selection option")
        r.sp()
    reference = decode_mailbox(r.astring(), utf8=r.utf8, error=r.error)
    r.sp()
    patterns = []
    if r.peek() == 0x28:
        extended = True
        r.open_list()
        while True:
            patterns.append(r.list_mailbox())
            if r.close_list():
                break
            r.sp()
    else:
        patterns.append(r.list_mailbox())
    returns = set()
    status_items: tuple[str, ...] = ()
    if r.accept(b" "):
        r.expect(b"RETURN")
        r.sp()
        extended = True
        r.open_list()
        if not r.close_list():
            while True:
                option = r.atom().upper()
                if option not in _LIST_RETURN:
                    raise r.error("Unknown LIST return option")
                if option == "STATUS":
                    r.sp()
                    status_items = _status_items(r)
                returns.add(option)
                if r.close_list():
                    break
                r.sp()
    if "RECURSIVEMATCH" in selection and not set(selection) - {"RECURSIVEMATCH"}:
        raise r.error("RECURSIVEMATCH needs another selection option")  # RFC 5258 §3
    return ListArgs(reference, tuple(patterns), frozenset(selection), frozenset(returns),
                    status_items, extended)


@arguments("LSUB")
def _lsub(r: Reader):
    r.sp()
    reference = decode_mailbox(r.astring(), utf8=r.utf8, error=r.error)
    r.sp()
    return ListArgs(reference, (r.list_mailbox(),), frozenset({"SUBSCRIBED"}))


@arguments("APPEND")
def _append(r: Reader):
    r.sp()
    name = r.mailbox()
    messages = []
    # RFC 3502 §6.3.11: MULTIAPPEND repeats flags, date and literal.
    while r.accept(b" "):
        flags: tuple[str, ...] = ()
        when = None
        if r.peek() == 0x28:
            flags = r.flag_list()
            r.sp()
        if r.peek() == 0x22:
            when = r.date_time()
            r.sp()
        if r.accept(b"UTF8 ("):
            # RFC 6855 §4: UTF8 (literal8)
            data = r._literal()
            if data is None:
                raise r.error("Expected a literal")
            r.expect(b")")
        else:
            if r.peek() not in (0x7B, 0x7E):
                raise r.error("Expected a literal")
            data = r._literal()
            if data is None:
                raise r.error("Expected a literal")
        messages.append(AppendMessage(flags, when, data))
    if not messages:
        raise r.error("APPEND needs a message")
    return name, tuple(messages)


@arguments("UID EXPUNGE")
def _uid_expunge(r: Reader):
    r.sp()
    return r.sequence_set()


@arguments("COPY", "MOVE", "UID COPY", "UID MOVE")
def _copy(r: Reader):
    r.sp()
    sequence = r.sequence_set()
    r.sp()
    return sequence, r.mailbox()


@arguments("STORE", "UID STORE")
def _store(r: Reader):
    r.sp()
    sequence = r.sequence_set()
    r.sp()
    unchangedsince = None
    if r.accept(b"("):
        # RFC 7162 §3.1.3: STORE seq (UNCHANGEDSINCE modseq) flags
        r.expect(b"UNCHANGEDSINCE")
        r.sp()
        unchangedsince = r.number64()
        r.expect(b")")
        r.sp()
    mode = "set"
    if r.accept(b"+"):
        mode = "add"
    elif r.accept(b"-"):
        mode = "remove"
    r.expect(b"FLAGS")
    silent = r.accept(b".SILENT")
    r.sp()
    if r.peek() == 0x28:
        flags = r.flag_list()
    else:
        flags = [r.flag()]
        while r.accept(b" "):
            flags.append(r.flag())
        flags = tuple(flags)
    return StoreArgs(sequence, mode, silent, flags, unchangedsince)


# ------------------------------------------------------------------ FETCH (RFC 3501 §6.4.5)

_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SIMPLE_ITEMS = frozenset({"FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE",
                           "BODYSTRUCTURE", "RFC822", "RFC822.HEADER", "RFC822.TEXT",
                           "BODY", "MODSEQ"})


@arguments("FETCH", "UID FETCH")
def _fetch(r: Reader):
    r.sp()
    sequence = r.sequence_set()
    r.sp()
    if r.peek() == 0x28:
        r.open_list()
        items = [_fetch_item(r)]
        while not r.close_list():
            r.sp()
            items.append(_fetch_item(r))
    else:
        start = r.pos
        word = r._run(extra=frozenset(b"[<")).decode("ascii").upper()
        if word in _MACROS:
            items = [FetchItem(name) for name in _MACROS[word]]
        else:
            r.pos = start
            items = [_fetch_item(r)]
    changedsince = None
    vanished = False
    if r.accept(b" ("):
        # RFC 7162 §3.1.4.1 CHANGEDSINCE, §3.2.6 VANISHED (UID FETCH only)
        while True:
            word = r.atom().upper()
            if word == "CHANGEDSINCE" and changedsince is None:
                r.sp()
                changedsince = r.number64(nonzero=True)
            elif word == "VANISHED" and not vanished:
                vanished = True
            else:
                raise r.error("Unknown FETCH modifier")
            if r.close_list():
                break
            r.sp()
        if vanished and changedsince is None:
            raise r.error("VANISHED needs CHANGEDSINCE")  # RFC 7162 §3.2.6
    return FetchArgs(sequence, tuple(items), changedsince, vanished)


def _fetch_item(r: Reader) -> FetchItem:
    word = r._run(extra=frozenset(b"[<")).decode("ascii").upper()
    if not word:
        raise r.error("Expected a fetch attribute")
    peek = word.endswith(".PEEK")
    base = word[: -len(".PEEK")] if peek else word
    if base in ("BODY", "BINARY", "BINARY.SIZE") and r.peek() == 0x5B:
        if base == "BINARY.SIZE" and peek:
            raise r.error("Unknown fetch attribute")
        r.pos += 1
        if base == "BODY":
            section = _section(r)
        else:
            section = Section(_part_numbers(r))
            if not r.accept(b"]"):
                raise r.error("Expected ']'")
        partial = None
        if base != "BINARY.SIZE" and r.accept(b"<"):
            start = r.number()
            r.expect(b".")
            length = r.number(nonzero=True)
            r.expect(b">")
            partial = (start, length)
        return FetchItem(base, section, partial, peek)
    if peek or word not in _SIMPLE_ITEMS:
        raise r.error("Unknown fetch attribute")
    return FetchItem(word)


def _part_numbers(r: Reader) -> tuple[int, ...]:
    parts = []
    while r.peek() is not None and 0x30 <= r.peek() <= 0x39:
        parts.append(r.number(nonzero=True))
        if not r.accept(b"."):
            break
        if r.peek() is None or not 0x30 <= r.peek() <= 0x39:
            r.pos -= 1  # the "." belongs to the section text
            break
    return tuple(parts)


def _section(r: Reader) -> Section:
    part = _part_numbers(r)
    text = ""
    fields: tuple[str, ...] = ()
    if part:
        if r.accept(b"]"):
            return Section(part)
        r.expect(b".")
    if r.accept(b"]"):
        if part:
            raise r.error("Bad section")
        return Section()
    word = r._run(extra=frozenset(b"[<")).decode("ascii").upper()
    if word in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        r.sp()
        r.open_list()
        names = [r.text(r.astring()).upper()]
        while not r.close_list():
            r.sp()
            names.append(r.text(r.astring()).upper())
        fields = tuple(names)
    elif word == "MIME":
        if not part:
            raise r.error("MIME needs a part number")  # RFC 3501 §6.4.5
    elif word not in ("HEADER", "TEXT"):
        raise r.error("Bad section")
    text = word
    r.expect(b"]")
    return Section(part, text, fields)


# ------------------------------------------------------------------ SEARCH (RFC 3501 §6.4.4)

_FLAG_KEYS = {
    "ANSWERED": ("FLAG", "\\Answered"), "DELETED": ("FLAG", "\\Deleted"),
    "DRAFT": ("FLAG", "\\Draft"), "FLAGGED": ("FLAG", "\\Flagged"), "SEEN": ("FLAG", "\\Seen"),
    "UNANSWERED": ("NOFLAG", "\\Answered"), "UNDELETED": ("NOFLAG", "\\Deleted"),
    "UNDRAFT": ("NOFLAG", "\\Draft"), "UNFLAGGED": ("NOFLAG", "\\Flagged"),
    "UNSEEN": ("NOFLAG", "\\Seen"),
}
_HEADER_KEYS = frozenset({"FROM", "TO", "CC", "BCC", "SUBJECT"})
_DATE_KEYS = frozenset({"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"})
SEARCH_CHARSETS = frozenset({"UTF-8", "US-ASCII"})
SEARCH_RETURN = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE"})  # RFC 4731, RFC 5182
_MODSEQ_ENTRY_TYPES = frozenset({"PRIV", "SHARED", "ALL"})


@arguments("SEARCH", "UID SEARCH")
def _search(r: Reader):
    r.sp()
    returns = None
    if r.accept(b"RETURN "):
        returns = _parameter_list(r)
        for option in returns:
            if option not in SEARCH_RETURN:
                raise r.error("Unknown SEARCH RETURN option")
        # RFC 4731 §3.1: RETURN () means RETURN (ALL).
        returns = tuple(dict.fromkeys(returns)) or ("ALL",)
        r.sp()
    charset = None
    if r.accept(b"CHARSET "):
        charset = r.text(r.astring()).upper()
        if charset not in SEARCH_CHARSETS:
            raise unsupported_charset(r)
        r.sp()
    keys = [search_key(r, 0)]
    while r.accept(b" "):
        keys.append(search_key(r, 0))
    key = keys[0] if len(keys) == 1 else SearchKey("AND", tuple(keys))
    return SearchArgs(charset, key, returns)


def search_key(r: Reader, depth: int) -> SearchKey:
    if depth > MAX_NESTING:
        raise r.error("Search nested too deeply")
    if r.accept(b"("):
        keys = [search_key(r, depth + 1)]
        while not r.close_list():
            r.sp()
            keys.append(search_key(r, depth + 1))
        return keys[0] if len(keys) == 1 else SearchKey("AND", tuple(keys))
    b = r.peek()
    if b is not None and (0x30 <= b <= 0x39 or b in b"*$"):
        return SearchKey("SEQ", (r.sequence_set(),))
    word = r._run().decode("ascii").upper()
    if not word:
        raise r.error("Expected a search key")
    if word == "ALL":
        return SearchKey("ALL")
    if word in ("NEW", "OLD", "RECENT"):
        return SearchKey(word)
    if word in _FLAG_KEYS:
        op, flag = _FLAG_KEYS[word]
        return SearchKey(op, (flag,))
    if word in ("KEYWORD", "UNKEYWORD"):
        r.sp()
        flag = r.atom()
        return SearchKey("FLAG" if word == "KEYWORD" else "NOFLAG", (flag,))
    if word in _HEADER_KEYS:
        r.sp()
        return SearchKey("HEADER", (word.lower(), r.text(r.astring())))
    if word == "HEADER":
        r.sp()
        name = r.text(r.astring())
        r.sp()
        return SearchKey("HEADER", (name.lower(), r.text(r.astring())))
    if word in ("BODY", "TEXT"):
        r.sp()
        return SearchKey(word, (r.text(r.astring()),))
    if word in _DATE_KEYS:
        r.sp()
        return SearchKey(word, (r.date(),))
    if word in ("LARGER", "SMALLER"):
        r.sp()
        return SearchKey(word, (r.number(),))
    if word == "UID":
        r.sp()
        return SearchKey("UID", (r.sequence_set(),))
    if word == "MODSEQ":
        # RFC 7162 §3.1.5: MODSEQ [entry-name entry-type-req] mod-sequence-value; the
        # store keeps one modseq per message, so the entry names all mean the same.
        r.sp()
        if r.peek() == 0x22:
            r.quoted()
            r.sp()
            if r.atom().upper() not in _MODSEQ_ENTRY_TYPES:
                raise r.error("Bad MODSEQ entry type")
            r.sp()
        return SearchKey("MODSEQ", (r.number64(),))
    if word in ("OLDER", "YOUNGER"):
        # RFC 5032 §3: interval in seconds
        r.sp()
        return SearchKey(word, (r.number(nonzero=True),))
    if word == "NOT":
        r.sp()
        return SearchKey("NOT", (search_key(r, depth + 1),))
    if word == "OR":
        r.sp()
        left = search_key(r, depth + 1)
        r.sp()
        return SearchKey("OR", (left, search_key(r, depth + 1)))
    raise r.error("Unknown search key")


@arguments("COMPRESS")
def _compress(r: Reader):
    # RFC 4978 §3: COMPRESS mechanism
    r.sp()
    return r.atom().upper()


@arguments("GETQUOTA")
def _getquota(r: Reader):
    # RFC 9208 §4.2: GETQUOTA quota-root
    r.sp()
    return r.text(r.astring())


@arguments("GETQUOTAROOT")
def _getquotaroot(r: Reader):
    r.sp()
    return r.mailbox()


@arguments("SETQUOTA")
def _setquota(r: Reader):
    # RFC 9208 §4.4: SETQUOTA quota-root (*(resource SP number)); parsed to be refused.
    r.sp()
    root = r.text(r.astring())
    r.sp()
    r.open_list()
    limits = {}
    if not r.close_list():
        while True:
            resource = r.atom().upper()
            r.sp()
            limits[resource] = r.number64()
            if r.close_list():
                break
            r.sp()
    return root, limits


# SORT and THREAD reuse the SEARCH criteria above, so their parsers load once these exist.
from mailsuite.imap import sort_arguments as _sort_arguments  # noqa: E402,F401
