"""
The directory's entry model and distinguished-name helpers (RFC 4514).

An Entry is an immutable value: a DN and attributes whose names compare case-insensitively.
Values are ``str``; a value that is not valid UTF-8 (e.g. a ``jpegPhoto``) is kept as ``bytes``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from mailsuite.interfaces import InvalidEntry

Value = str | bytes


class DNError(InvalidEntry):
    """A distinguished name is malformed."""


# --------------------------------------------------------------------------- DNs

_HEX = "0123456789abcdefABCDEF"
# RFC 4512 §1.4: descr and numericoid
_DESCR_RE = re.compile(r"[A-Za-z][A-Za-z0-9-]*\Z")
_NUMERICOID_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*\Z")
# RFC 4514 §2.4: characters escaped when a value is written back.
_SPECIAL = frozenset('"+,;<>\\')
_NEEDS_ESCAPE_RE = re.compile(r'["+,;<>\\\0]|^[ #]| $')


def split_dn(dn: str) -> list[list[tuple[str, str]]]:
    """
    Parse ``dn`` into RDNs, each a list of (attribute type, unescaped value) pairs, as written
    (RFC 4514 §3).  Spaces around ``,``, ``+`` and ``=`` are dropped.  DNError when malformed.
    """
    rdns: list[list[tuple[str, str]]] = []
    if not dn.strip():
        return rdns
    if not any(c in dn for c in _SLOW_PATH):
        return _split_plain(dn)
    i, n = 0, len(dn)
    while True:
        rdn: list[tuple[str, str]] = []
        while True:
            eq = dn.find("=", i)
            if eq < 0:
                raise DNError(f"malformed DN {dn!r}: an attribute has no '='")
            attr = dn[i:eq].strip()
            if not attr or not _valid_attribute_type(attr):
                raise DNError(f"malformed DN {dn!r}: bad attribute type {attr!r}")
            value, i = _read_value(dn, eq + 1)
            rdn.append((attr, value))
            if i < n and dn[i] == "+":
                i += 1
                continue
            break
        rdns.append(rdn)
        if i >= n:
            return rdns
        if dn[i] not in ",;":
            raise DNError(f"malformed DN {dn!r}")
        i += 1


# Characters that need the full parser; every other DN splits on "," and "=".
_SLOW_PATH = ("\\", '"', "+", "#", ";")


def _split_plain(dn: str) -> list[list[tuple[str, str]]]:
    rdns = []
    for part in dn.split(","):
        attr, eq, value = part.partition("=")
        attr = attr.strip()
        if not eq or not _valid_attribute_type(attr):
            raise DNError(f"malformed DN {dn!r}: bad attribute type {attr!r}")
        rdns.append([(attr, value.strip(" "))])
    return rdns


# Attribute types already found valid: a directory uses a handful, checked once each.
_VALID_TYPES: set[str] = set()
_MAX_VALID_TYPES = 1024


def _valid_attribute_type(attr: str) -> bool:
    if attr in _VALID_TYPES:
        return True
    if not (_DESCR_RE.match(attr) or _NUMERICOID_RE.match(attr)):
        return False
    if len(_VALID_TYPES) < _MAX_VALID_TYPES:
        _VALID_TYPES.add(attr)
    return True


def _read_value(dn: str, i: int) -> tuple[str, int]:
    """Read one attribute value starting at ``i``; return (value, index of the separator)."""
    n = len(dn)
    while i < n and dn[i] == " ":
        i += 1
    if i < n and dn[i] == "#":
        # RFC 4514 §2.4: a hex-encoded BER value; kept as written.
        j = i + 1
        while j < n and dn[j] not in ",;+":
            j += 1
        return dn[i:j].strip(), j
    out = bytearray()
    trailing_unescaped = 0  # count of unescaped spaces at the end of ``out``
    while i < n:
        c = dn[i]
        if c in ",;+":
            break
        if c == "\\":
            if i + 1 >= n:
                raise DNError(f"malformed DN {dn!r}: dangling '\\'")
            nxt = dn[i + 1]
            if nxt in _HEX and i + 2 < n and dn[i + 2] in _HEX:
                out.append(int(dn[i + 1:i + 3], 16))
                i += 3
            else:
                out += nxt.encode("utf-8")
                i += 2
            trailing_unescaped = 0
            continue
        if c == '"':
            raise DNError(f"malformed DN {dn!r}: unescaped '\"'")
        out += c.encode("utf-8")
        trailing_unescaped = trailing_unescaped + 1 if c == " " else 0
        i += 1
    if trailing_unescaped:
        del out[-trailing_unescaped:]
    try:
        return out.decode("utf-8"), i
    except UnicodeDecodeError as e:
        raise DNError(f"malformed DN {dn!r}: escaped bytes are not UTF-8") from e


def escape_dn_value(value: str) -> str:
    """Escape ``value`` for use in a DN (RFC 4514 §2.4)."""
    if not _NEEDS_ESCAPE_RE.search(value):
        return value
    out = []
    last = len(value) - 1
    for k, c in enumerate(value):
        if c in _SPECIAL or (c == " " and (k == 0 or k == last)) or (c == "#" and k == 0):
            out.append("\\" + c)
        elif c == "\0":
            out.append("\\00")
        else:
            out.append(c)
    return "".join(out)


def join_dn(rdns: Iterable[Iterable[tuple[str, str]]]) -> str:
    """Write parsed RDNs back as a DN string, escaping values."""
    return ",".join(
        "+".join(f"{attr}={escape_dn_value(value)}" for attr, value in rdn) for rdn in rdns
    )


def normalize_dn(dn: str) -> str:
    """
    The comparison form of ``dn``: attribute types and values lower-cased, spaces around
    separators removed, escapes canonical, the AVAs of a multi-valued RDN sorted.
    """
    return _normalize_rdns(split_dn(dn))


def _normalize_rdns(rdns: list[list[tuple[str, str]]]) -> str:
    parts = []
    for rdn in rdns:
        if len(rdn) == 1:  # nearly every RDN: no sorting needed
            attr, value = rdn[0]
            parts.append(f"{attr.lower()}={escape_dn_value(value.lower())}")
        else:
            parts.append("+".join(f"{attr}={escape_dn_value(value)}" for attr, value in
                                  sorted((attr.lower(), value.lower()) for attr, value in rdn)))
    return ",".join(parts)


def parent_dn(dn: str) -> str:
    """The DN of the entry above ``dn`` (normalised); "" for a top-level DN."""
    return join_dn(
        sorted((attr.lower(), value.lower()) for attr, value in rdn) for rdn in split_dn(dn)[1:]
    )


def _separator_at(ndn: str, i: int) -> bool:
    """True if the "," at ``ndn[i]`` is not escaped (an even run of backslashes before it)."""
    run = 0
    while i - run - 1 >= 0 and ndn[i - run - 1] == "\\":
        run += 1
    return run % 2 == 0


def parent_of_normalized(ndn: str) -> str:
    """The parent of a normalised DN, without parsing it again; "" for a top-level DN."""
    i = ndn.find(",")
    while i >= 0 and not _separator_at(ndn, i):
        i = ndn.find(",", i + 1)
    return ndn[i + 1:] if i >= 0 else ""


def is_under(ndn: str, base: str) -> bool:
    """True if normalised ``ndn`` is ``base`` or below it (both normalised)."""
    if ndn == base or not base:
        return True
    cut = len(ndn) - len(base) - 1
    return cut > 0 and ndn.endswith(base) and ndn[cut] == "," and _separator_at(ndn, cut)


# --------------------------------------------------------------------------- entries


class Entry:
    """
    One directory entry.  Attribute names are case-insensitive; the spelling first seen is
    kept for output.  Instances are not changed after construction: the ``with_*`` methods
    return new entries.
    """

    __slots__ = ("dn", "_attrs", "_ndn", "_rdns")

    def __init__(self, dn: str, attributes: Mapping[str, Iterable[Value]]):
        self.dn = dn
        self._ndn: str | None = None
        self._rdns: list[list[tuple[str, str]]] | None = None
        attrs: dict[str, tuple[str, list[Value]]] = {}
        for name, values in attributes.items():
            if isinstance(values, (str, bytes)):
                values = [values]
            key = name.lower()
            if key in attrs:
                attrs[key][1].extend(values)
            else:
                attrs[key] = (name, list(values))
        # Tuples, not lists: smaller, and the garbage collector stops tracking them.
        self._attrs: dict[str, tuple[str, tuple[Value, ...]]] = {
            k: (name, tuple(values)) for k, (name, values) in attrs.items() if values
        }

    @classmethod
    def trusted(cls, dn: str, attributes: dict[str, tuple[str, tuple[Value, ...]]],
                ndn: str | None = None) -> Entry:
        """
        An entry built from ``attributes`` already in the internal form, without checks:
        lower-cased name -> (spelling, non-empty tuple of values).  ``ndn``, if given, must be
        normalize_dn(dn).  For loaders that produce many entries.
        """
        entry = cls.__new__(cls)
        entry.dn = dn
        entry._attrs = attributes
        entry._ndn = ndn
        entry._rdns = None
        return entry

    @property
    def rdns(self) -> list[list[tuple[str, str]]]:
        """The parsed DN (see split_dn); DNError if it is malformed."""
        if self._rdns is None:
            self._rdns = split_dn(self.dn)
        return self._rdns

    @property
    def ndn(self) -> str:
        """The normalised DN (see normalize_dn)."""
        if self._ndn is None:
            self._ndn = _normalize_rdns(self.rdns)
        return self._ndn

    @property
    def attributes(self) -> dict[str, list[Value]]:
        """A copy of the attributes, keyed by their original spelling."""
        return {name: list(values) for name, values in self._attrs.values()}

    def items(self) -> Iterable[tuple[str, tuple[Value, ...]]]:
        """(spelling, values) of every attribute, without copying."""
        return self._attrs.values()

    def names(self) -> list[str]:
        return [name for name, _ in self._attrs.values()]

    def get(self, name: str) -> list[Value]:
        """The values of attribute ``name`` (case-insensitive), or []."""
        found = self._attrs.get(name.lower())
        return list(found[1]) if found else []

    def values(self, name: str) -> tuple[Value, ...]:
        """The values of attribute ``name`` (case-insensitive), or (); not a copy."""
        found = self._attrs.get(name.lower())
        return found[1] if found else ()

    def first(self, name: str, default=None):
        """The first value of ``name``, or ``default``."""
        found = self._attrs.get(name.lower())
        return found[1][0] if found else default

    def has(self, name: str) -> bool:
        return name.lower() in self._attrs

    @property
    def object_classes(self) -> frozenset[str]:
        """The lower-cased objectClass values."""
        return frozenset(v.lower() for v in self.values("objectClass") if isinstance(v, str))

    def has_object_class(self, name: str) -> bool:
        wanted = name.lower()
        for value in self.values("objectClass"):
            if isinstance(value, str) and value.lower() == wanted:
                return True
        return False

    def with_values(self, name: str, values: Iterable[Value]) -> Entry:
        """A copy with ``name`` set to ``values`` (an empty list removes the attribute)."""
        key = name.lower()
        found = self._attrs.get(key)
        values = tuple(values)
        if found is not None and found[1] == values:
            return self  # unchanged; entries are immutable, so this one serves
        attrs = {k: v for k, v in self._attrs.items() if k != key}
        if values:
            attrs[key] = (found[0] if found else name, values)
        changed = Entry.trusted(self.dn, attrs, self._ndn)
        changed._rdns = self._rdns
        return changed

    def with_added(self, name: str, values: Iterable[Value]) -> Entry:
        """A copy with ``values`` appended to ``name``, skipping values already present."""
        current = self.get(name)
        seen = {_fold(v) for v in current}
        for v in values:
            if _fold(v) not in seen:
                current.append(v)
                seen.add(_fold(v))
        return self.with_values(name, current)

    def with_removed(self, name: str, values: Iterable[Value]) -> Entry:
        """A copy without ``values`` (compared case-insensitively) in ``name``."""
        drop = {_fold(v) for v in values}
        return self.with_values(name, [v for v in self.get(name) if _fold(v) not in drop])

    def __eq__(self, other):
        if not isinstance(other, Entry):
            return NotImplemented
        return self.ndn == other.ndn and {k: v[1] for k, v in self._attrs.items()} == {
            k: v[1] for k, v in other._attrs.items()
        }

    __hash__ = None

    def __repr__(self):
        return f"Entry({self.dn!r}, {self.attributes!r})"


def _fold(value: Value):
    return value.lower() if isinstance(value, str) else value
