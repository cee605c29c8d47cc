"""
A fast path through the LDAP wire format for the requests and responses that make up nearly
all of a directory's traffic: Bind (simple and SASL), Search, Unbind in, LDAPResult and
SearchResultEntry out.  Decoding is strict: anything it does not fully recognise (controls,
unusual tags or lengths, deep filters) returns None and the caller decodes with ldaptor,
so the outcome of every request is the same either way.  SASL binds are decoded here rather
than by ldaptor, which reads a SaslCredentials with extra elements as one without
credentials.  Encoding produces the same bytes as
ldaptor's classes (minimal lengths, minimal two's-complement integers).
"""

from __future__ import annotations

from dataclasses import dataclass

# RFC 4511 §4.2, §4.3, §4.5.1 protocolOp tags as they appear on the wire.
_BIND_REQUEST = 0x60
_UNBIND_REQUEST = 0x42
# AuthenticationChoice (RFC 4511 §4.2): simple [0], sasl [3].
_SIMPLE, _SASL = 0x80, 0xA3
_SEARCH_REQUEST = 0x63
_SEARCH_RESULT_ENTRY = 0x64
_BIND_RESPONSE = 0x61

# RFC 4511 §4.5.1.7 Filter choices.
_AND, _OR, _NOT = 0xA0, 0xA1, 0xA2
_EQUALITY, _SUBSTRINGS, _GREATER, _LESS, _PRESENT, _APPROX = 0xA3, 0xA4, 0xA5, 0xA6, 0x87, 0xA8
_EXTENSIBLE = 0xA9
# MatchingRuleAssertion fields (RFC 4511 §4.5.1.7.7), in this order, all but matchValue optional.
_RULE, _TYPE, _MATCH_VALUE, _DN_ATTRIBUTES = 0x81, 0x82, 0x83, 0x84
_AVA_OPS = {_EQUALITY: "=", _GREATER: ">=", _LESS: "<=", _APPROX: "~="}
# SubstringFilter choices: initial [0], any [1], final [2].
_SUBSTRING_KINDS = {0x80: "initial", 0x81: "any", 0x82: "final"}
# Deeper filters go through ldaptor, which decides how to fail on them.
_MAX_FAST_DEPTH = 16


@dataclass(frozen=True, slots=True)
class SimpleBind:
    """A BindRequest with simple authentication; attribute names follow ldaptor's."""

    version: int
    dn: bytes
    auth: bytes
    sasl: bool = False


@dataclass(frozen=True, slots=True)
class SaslBind:
    """A BindRequest with SASL authentication (RFC 4511 §4.2): credentials None if absent."""

    version: int
    dn: bytes
    mechanism: bytes
    credentials: bytes | None
    sasl: bool = True


@dataclass(frozen=True, slots=True)
class Search:
    """
    A SearchRequest; ``filter`` is a wire filter tree for filters.from_wire: ("and"|"or",
    items), ("not", item), ("compare", op, attribute, value), ("present", attribute),
    ("substrings", attribute, ((kind, value), ...)) or ("extensible", rule, attribute, value,
    dnAttributes), values as bytes, an absent rule or attribute None.
    """

    baseObject: bytes
    scope: int
    derefAliases: int
    sizeLimit: int
    timeLimit: int
    typesOnly: bool
    filter: tuple
    attributes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Unbind:
    """An UnbindRequest."""


class _Fallback(Exception):
    """The fast decoder does not handle this message."""


def _header(data: bytes, at: int, end: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the TLV at ``at``, inside ``data[:end]``."""
    if at + 2 > end:
        raise _Fallback
    tag = data[at]
    if tag & 0x1F == 0x1F:  # high tag numbers never occur in LDAP
        raise _Fallback
    first = data[at + 1]
    if first < 0x80:
        start = at + 2
        stop = start + first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or at + 2 + count > end:
            raise _Fallback
        start = at + 2 + count
        stop = start + int.from_bytes(data[at + 2:start], "big")
    if stop > end:
        raise _Fallback
    return tag, start, stop


def _integer(data: bytes, start: int, stop: int) -> int:
    if not 1 <= stop - start <= 4:
        raise _Fallback
    return int.from_bytes(data[start:stop], "big", signed=True)


def _expect(data: bytes, at: int, end: int, tag: int) -> tuple[int, int]:
    found, start, stop = _header(data, at, end)
    if found != tag:
        raise _Fallback
    return start, stop


def decode(frame: bytes):
    """
    (message id, op) of a framed LDAPMessage the fast path handles, or None.  The frame has
    already been checked by codec.frame_length, so it is one whole SEQUENCE.
    """
    try:
        return _decode(frame)
    except _Fallback:
        return None


def _decode(data: bytes):
    end = len(data)
    start, stop = _expect(data, 0, end, 0x30)
    if stop != end:
        raise _Fallback
    id_start, at = _expect(data, start, end, 0x02)
    message_id = _integer(data, id_start, at)
    if message_id < 0:
        raise _Fallback
    tag, op_start, op_stop = _header(data, at, end)
    if op_stop != end:  # controls, or trailing bytes
        raise _Fallback
    if tag == _SEARCH_REQUEST:
        return message_id, _search(data, op_start, op_stop)
    if tag == _BIND_REQUEST:
        return message_id, _bind(data, op_start, op_stop)
    if tag == _UNBIND_REQUEST and op_start == op_stop:
        return message_id, Unbind()
    raise _Fallback


def _bind(data: bytes, at: int, end: int) -> SimpleBind | SaslBind:
    start, at = _expect(data, at, end, 0x02)
    version = _integer(data, start, at)
    start, at = _expect(data, at, end, 0x04)
    dn = data[start:at]
    tag, start, at = _header(data, at, end)
    if at != end:
        raise _Fallback
    if tag == _SIMPLE:
        return SimpleBind(version, dn, data[start:at])
    if tag != _SASL:
        raise _Fallback
    # SaslCredentials ::= SEQUENCE { mechanism LDAPString, credentials OCTET STRING OPTIONAL }
    mechanism_start, stop = _expect(data, start, at, 0x04)
    mechanism = data[mechanism_start:stop]
    credentials = None
    if stop < at:
        credentials_start, stop = _expect(data, stop, at, 0x04)
        credentials = data[credentials_start:stop]
    if stop != at:
        raise _Fallback
    return SaslBind(version, dn, mechanism, credentials)


def _search(data: bytes, at: int, end: int) -> Search:
    start, at = _expect(data, at, end, 0x04)
    base = data[start:at]
    numbers = []
    for tag in (0x0A, 0x0A, 0x02, 0x02):
        start, at = _expect(data, at, end, tag)
        numbers.append(_integer(data, start, at))
    start, at = _expect(data, at, end, 0x01)
    if at - start != 1:
        raise _Fallback
    types_only = data[start] != 0
    tree, at = _filter(data, at, end, 0)
    start, at = _expect(data, at, end, 0x30)
    if at != end:
        raise _Fallback
    attributes = []
    while start < at:
        value_start, start = _expect(data, start, at, 0x04)
        attributes.append(data[value_start:start])
    return Search(base, numbers[0], numbers[1], numbers[2], numbers[3], types_only, tree,
                  tuple(attributes))


def _filter(data: bytes, at: int, end: int, depth: int) -> tuple[tuple, int]:
    """(wire filter tree, end of the filter's TLV)."""
    if depth > _MAX_FAST_DEPTH:
        raise _Fallback
    tag, start, stop = _header(data, at, end)
    if tag in _AVA_OPS:
        value_start, mid = _expect(data, start, stop, 0x04)
        assertion_start, last = _expect(data, mid, stop, 0x04)
        if last != stop:
            raise _Fallback
        return ("compare", _AVA_OPS[tag], data[value_start:mid], data[assertion_start:last]), stop
    if tag == _PRESENT:
        return ("present", data[start:stop]), stop
    if tag == _AND or tag == _OR:
        items = []
        while start < stop:
            item, start = _filter(data, start, stop, depth + 1)
            items.append(item)
        if not items:
            raise _Fallback
        return ("and" if tag == _AND else "or", tuple(items)), stop
    if tag == _NOT:
        item, last = _filter(data, start, stop, depth + 1)
        if last != stop:
            raise _Fallback
        return ("not", item), stop
    if tag == _SUBSTRINGS:
        type_start, mid = _expect(data, start, stop, 0x04)
        seq_start, last = _expect(data, mid, stop, 0x30)
        if last != stop or seq_start == last:
            raise _Fallback
        parts = []
        while seq_start < last:
            kind, part_start, part_stop = _header(data, seq_start, last)
            if kind not in _SUBSTRING_KINDS:
                raise _Fallback
            parts.append((_SUBSTRING_KINDS[kind], data[part_start:part_stop]))
            seq_start = part_stop
        return ("substrings", data[type_start:mid], tuple(parts)), stop
    if tag == _EXTENSIBLE:
        return _extensible(data, start, stop), stop
    raise _Fallback


def _extensible(data: bytes, at: int, end: int) -> tuple:
    fields = {}
    for tag in (_RULE, _TYPE, _MATCH_VALUE, _DN_ATTRIBUTES):
        if at < end and data[at] == tag:
            start, at = _expect(data, at, end, tag)
            fields[tag] = data[start:at]
    if at != end or _MATCH_VALUE not in fields:
        raise _Fallback
    dn_attributes = fields.get(_DN_ATTRIBUTES, b"\x00")
    if len(dn_attributes) != 1:
        raise _Fallback
    return ("extensible", fields.get(_RULE), fields.get(_TYPE), fields[_MATCH_VALUE],
            dn_attributes != b"\x00")


# ----------------------------------------------------------------------- encoding


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def _tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        return bytes((tag, n)) + value
    return bytes((tag,)) + _length(n) + value


def _int_body(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True)


def _bytes(value) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def encode_result(message_id: int, tag: int, code: int, text: str | bytes = "",
                  matched: str | bytes = "") -> bytes:
    """An LDAPMessage carrying an LDAPResult (RFC 4511 §4.1.9) with protocolOp ``tag``."""
    body = (_tlv(0x0A, _int_body(code)) + _tlv(0x04, _bytes(matched))
            + _tlv(0x04, _bytes(text)))
    return _tlv(0x30, _tlv(0x02, _int_body(message_id)) + _tlv(tag, body))


def encode_bind_result(message_id: int, code: int, text: str | bytes = "",
                       server_credentials: bytes | None = None) -> bytes:
    """
    A BindResponse (RFC 4511 §4.2.2); ``server_credentials``, even empty, is sent as
    serverSaslCreds [7] (ldaptor leaves an empty one out).
    """
    body = (_tlv(0x0A, _int_body(code)) + _tlv(0x04, b"") + _tlv(0x04, _bytes(text)))
    if server_credentials is not None:
        body += _tlv(0x87, server_credentials)
    return _tlv(0x30, _tlv(0x02, _int_body(message_id)) + _tlv(_BIND_RESPONSE, body))


def encode_entry(message_id: int, dn: str | bytes,
                 attributes: list[tuple[str, list[bytes]]]) -> bytes:
    """An LDAPMessage carrying a SearchResultEntry (RFC 4511 §4.5.2)."""
    parts = []
    for name, values in attributes:
        encoded = b"".join([_tlv(0x04, _bytes(v)) for v in values])
        parts.append(_tlv(0x30, _tlv(0x04, _bytes(name)) + _tlv(0x31, encoded)))
    body = _tlv(0x04, _bytes(dn)) + _tlv(0x30, b"".join(parts))
    return _tlv(0x30, _tlv(0x02, _int_body(message_id)) + _tlv(_SEARCH_RESULT_ENTRY, body))
