"""
Add, Modify, Delete and ModifyDN (RFC 4511 §4.6-4.9) against the embedded directory: the
requests as ldaptor decoded them in, an LDAP result code and a short text out.  Every change
goes through the directory, which checks its rules, hashes cleartext passwords and stores the
change atomically.
"""

from __future__ import annotations

from ldaptor.protocols import pureber

from mailsuite.directory.entry import DNError, Entry, join_dn, split_dn
from mailsuite.interfaces import DirectoryError, EntryExists, InvalidEntry, NoSuchEntry
from mailsuite.ldap import codec

MOD_ADD, MOD_DELETE, MOD_REPLACE = 0, 1, 2  # RFC 4511 §4.6


class WriteError(Exception):
    def __init__(self, code: int, text: str):
        super().__init__(text)
        self.code = code
        self.text = text


def _value(raw) -> str | bytes:
    if not isinstance(raw, bytes):
        raise WriteError(codec.PROTOCOL_ERROR, "malformed value")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _name(raw) -> str:
    name = _value(raw)
    if not isinstance(name, str) or not name or ";" in name:
        raise WriteError(codec.UNDEFINED_ATTRIBUTE_TYPE, "bad attribute description")
    return name


def _dn(raw) -> str:
    dn = _value(raw)
    if not isinstance(dn, str):
        raise WriteError(codec.INVALID_DN_SYNTAX, "invalid DN")
    try:
        if not split_dn(dn):
            raise DNError("empty")
    except DNError:
        raise WriteError(codec.INVALID_DN_SYNTAX, "invalid DN") from None
    return dn


def _attribute_list(sequence) -> list[tuple[str, list]]:
    """[(name, values)] of an AttributeList / PartialAttribute (RFC 4511 §4.1.7)."""
    try:
        pairs = [(item.data[0].value, [v.value for v in item.data[1].data])
                 for item in sequence.data]
    except (AttributeError, IndexError, TypeError):
        raise WriteError(codec.PROTOCOL_ERROR, "malformed attribute list") from None
    return [(_name(name), [_value(v) for v in values]) for name, values in pairs]


def _directory_error(e: DirectoryError) -> WriteError:
    if isinstance(e, EntryExists):
        return WriteError(codec.ENTRY_ALREADY_EXISTS, "entry or address exists already")
    if isinstance(e, NoSuchEntry):
        return WriteError(codec.NO_SUCH_OBJECT, "no such object")
    if isinstance(e, DNError):
        return WriteError(codec.INVALID_DN_SYNTAX, "invalid DN")
    if isinstance(e, InvalidEntry):
        return WriteError(codec.OBJECT_CLASS_VIOLATION, str(e))
    return WriteError(codec.BUSY, "the directory is unavailable; try again")


def add(directory, request) -> None:
    dn = _dn(request.entry)
    attributes: dict[str, list] = {}
    for name, values in _attribute_list(request.attributes):
        if not values:
            raise WriteError(codec.PROTOCOL_ERROR, f"{name} has no values")
        if name.lower() in {n.lower() for n in attributes}:
            raise WriteError(codec.ATTRIBUTE_OR_VALUE_EXISTS, f"{name} given twice")
        attributes[name] = values
    try:
        directory.add_entry(Entry(dn, attributes))
    except DirectoryError as e:
        raise _directory_error(e) from None


def modify(directory, request) -> None:
    dn = _dn(request.object)
    entry = directory.get(dn)
    if entry is None:
        raise WriteError(codec.NO_SUCH_OBJECT, "no such object")
    for change in request.modification or ():
        try:
            operation = change.data[0].value
            name, values = _attribute_list(pureber.BERSequence([change.data[1]]))[0]
        except (AttributeError, IndexError):
            raise WriteError(codec.PROTOCOL_ERROR, "malformed modification") from None
        entry = _apply(entry, operation, name, values)
    try:
        directory.replace_entry(entry)
    except DirectoryError as e:
        raise _directory_error(e) from None


def _fold(value):
    return value.lower() if isinstance(value, str) else value


def _apply(entry: Entry, operation: int, name: str, values: list) -> Entry:
    current = {_fold(v) for v in entry.get(name)}
    if operation == MOD_ADD:
        if not values:
            raise WriteError(codec.PROTOCOL_ERROR, "add needs values")
        if any(_fold(v) in current for v in values):
            raise WriteError(codec.ATTRIBUTE_OR_VALUE_EXISTS, f"{name} has that value")
        return entry.with_added(name, values)
    if operation == MOD_DELETE:
        if not entry.has(name):
            raise WriteError(codec.NO_SUCH_ATTRIBUTE, f"no attribute {name}")
        if not values:
            return entry.with_values(name, [])
        if any(_fold(v) not in current for v in values):
            raise WriteError(codec.NO_SUCH_ATTRIBUTE, f"{name} lacks that value")
        return entry.with_removed(name, values)
    if operation == MOD_REPLACE:
        return entry.with_values(name, values)
    raise WriteError(codec.UNWILLING_TO_PERFORM, "unsupported modification")


def delete(directory, request) -> None:
    dn = _dn(request.value)
    if directory.get(dn) is None:
        raise WriteError(codec.NO_SUCH_OBJECT, "no such object")
    if directory.children(dn):
        raise WriteError(codec.NOT_ALLOWED_ON_NON_LEAF, "the entry has entries below it")
    try:
        directory.delete_entry(dn)
    except DirectoryError as e:
        raise _directory_error(e) from None


def modify_dn(directory, request) -> None:
    dn = _dn(request.entry)
    entry = directory.get(dn)
    if entry is None:
        raise WriteError(codec.NO_SUCH_OBJECT, "no such object")
    if directory.children(dn):
        raise WriteError(codec.NOT_ALLOWED_ON_NON_LEAF, "the entry has entries below it")
    new_rdn = split_dn(_dn(request.newrdn))
    if len(new_rdn) != 1:
        raise WriteError(codec.INVALID_DN_SYNTAX, "the new RDN must be one RDN")
    parent = entry.rdns[1:]
    if request.newSuperior is not None:
        parent = split_dn(_dn(request.newSuperior))
    moved = Entry(join_dn(new_rdn + parent), entry.attributes)
    if request.deleteoldrdn:
        for attr, value in entry.rdns[0]:
            moved = moved.with_removed(attr, [value])
    for attr, value in new_rdn[0]:
        moved = moved.with_added(attr, [value])
    try:
        directory.rename_entry(dn, moved)
    except DirectoryError as e:
        raise _directory_error(e) from None
