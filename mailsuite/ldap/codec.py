"""
The LDAP wire layer without I/O: framing of BER messages, decoding with ldaptor's codec,
result codes and OIDs as named constants, and the small BER values of controls and extended
operations that ldaptor does not model.
"""

from __future__ import annotations

from dataclasses import dataclass

from ldaptor.protocols import pureber, pureldap

from mailsuite.ldap import fastber

# RFC 4511 §4.1.9 resultCode
SUCCESS = 0
OPERATIONS_ERROR = 1
PROTOCOL_ERROR = 2
TIME_LIMIT_EXCEEDED = 3
SIZE_LIMIT_EXCEEDED = 4
COMPARE_FALSE = 5
COMPARE_TRUE = 6
AUTH_METHOD_NOT_SUPPORTED = 7
UNAVAILABLE_CRITICAL_EXTENSION = 12
CONFIDENTIALITY_REQUIRED = 13
SASL_BIND_IN_PROGRESS = 14
NO_SUCH_ATTRIBUTE = 16
UNDEFINED_ATTRIBUTE_TYPE = 17
CONSTRAINT_VIOLATION = 19
ATTRIBUTE_OR_VALUE_EXISTS = 20
NO_SUCH_OBJECT = 32
INVALID_DN_SYNTAX = 34
INAPPROPRIATE_AUTHENTICATION = 48
INVALID_CREDENTIALS = 49
INSUFFICIENT_ACCESS_RIGHTS = 50
BUSY = 51
UNAVAILABLE = 52
UNWILLING_TO_PERFORM = 53
NAMING_VIOLATION = 64
OBJECT_CLASS_VIOLATION = 65
NOT_ALLOWED_ON_NON_LEAF = 66
ENTRY_ALREADY_EXISTS = 68
OTHER = 80

OID_START_TLS = b"1.3.6.1.4.1.1466.20037"  # RFC 4511 §4.14
OID_WHO_AM_I = b"1.3.6.1.4.1.4203.1.11.3"  # RFC 4532
OID_PASSWORD_MODIFY = b"1.3.6.1.4.1.4203.1.11.1"  # RFC 3062
OID_PAGED_RESULTS = b"1.2.840.113556.1.4.319"  # RFC 2696
OID_NOTICE_OF_DISCONNECTION = b"1.3.6.1.4.1.1466.20036"  # RFC 4511 §4.4.1

SCOPE_BASE, SCOPE_ONE, SCOPE_SUB = 0, 1, 2

_UNIVERSAL_SEQUENCE = 0x30


class ProtocolError(Exception):
    """The client sent something that is not an LDAP message; the session must end."""


class MessageTooLarge(ProtocolError):
    """A message's announced length is above the server's limit."""


def frame_length(buffer: bytes | bytearray, *, max_size: int) -> int | None:
    """
    The length of the complete BER message at the start of ``buffer``, or None if more bytes
    are needed.  ProtocolError unless it starts with a SEQUENCE (RFC 4511 §4.1.1) in definite
    length form (RFC 4511 §5.1); MessageTooLarge above ``max_size``.
    """
    if not buffer:
        return None
    if buffer[0] != _UNIVERSAL_SEQUENCE:
        raise ProtocolError("a message must be a SEQUENCE")
    if len(buffer) < 2:
        return None
    first = buffer[1]
    if first < 0x80:
        length, header = first, 2
    else:
        count = first & 0x7F
        if count == 0 or count > 4:
            raise ProtocolError("unsupported BER length form")
        if len(buffer) < 2 + count:
            return None
        length = int.from_bytes(buffer[2:2 + count], "big")
        header = 2 + count
    total = header + length
    if total > max_size:
        raise MessageTooLarge(f"message of {total} bytes")
    return total if len(buffer) >= total else None


def _decoder():
    ops = pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext())
    return pureldap.LDAPBERDecoderContext_TopLevel(
        inherit=pureldap.LDAPBERDecoderContext_LDAPMessage(fallback=ops, inherit=ops)
    )


_DECODER = _decoder()


@dataclass(frozen=True)
class Request:
    """One decoded LDAPMessage: its id, the protocol op and the controls (oid, critical, value)."""

    id: int
    op: object
    controls: tuple[tuple[bytes, bool, bytes | None], ...]


def decode_message(frame: bytes) -> Request:
    """
    Decode one complete framed message; ProtocolError when it is malformed.  Binds,
    searches and unbinds take fastber's path; everything else goes through ldaptor.
    """
    frame = bytes(frame)
    fast = fastber.decode(frame)
    if fast is not None:
        return Request(fast[0], fast[1], ())
    # Checked first: ldaptor prints unknown tags to stdout instead of reporting them.
    if pureldap.LDAPBERDecoderContext.Identities.get(_op_tag(frame)) is None:
        raise ProtocolError("unknown protocol operation")
    try:
        message, used = pureber.berDecodeObject(_DECODER, frame)
        op = message.value
        message_id = message.id
    except Exception as e:  # ldaptor signals bad input with asserts, IndexError, KeyError...
        raise ProtocolError(f"undecodable message: {e.__class__.__name__}") from None
    if used != len(frame) or not isinstance(message_id, int) or message_id < 0:
        raise ProtocolError("malformed message envelope")
    controls = tuple(
        (oid, bool(critical), value) for oid, critical, value in (message.controls or ())
    )
    return Request(message_id, op, controls)


def encode(message_id: int, op, controls=None) -> bytes:
    """The wire bytes of a response ``op`` for request ``message_id``."""
    return pureldap.LDAPMessage(op, controls=controls, id=message_id).toWire()


def _op_tag(frame: bytes) -> int | None:
    """The tag of the protocol op inside a framed message, None if it cannot be found."""
    try:
        _, size = pureber.berDecodeLength(frame, offset=1)
        start = 1 + size
        if frame[start] != 0x02:  # messageID INTEGER
            return None
        id_length, size = pureber.berDecodeLength(frame, offset=start + 1)
        return frame[start + 1 + size + id_length] & (pureber.CLASS_MASK | pureber.TAG_MASK)
    except (IndexError, pureber.BERException, pureber.BERExceptionInsufficientData):
        # ldaptor's "insufficient data" is not a BERException: a length that runs past
        # the frame must end as a protocol error, not escape.
        return None


# ----------------------------------------------------------------------- small BER values


def _decode_value(data: bytes, context) -> list:
    try:
        obj, used = pureber.berDecodeObject(context, data)
    except Exception:
        raise ProtocolError("malformed control or request value") from None
    if obj is None or used != len(data) or not isinstance(obj, pureber.BERSequence):
        raise ProtocolError("malformed control or request value")
    return list(obj.data)


def decode_paged_control(value: bytes | None) -> tuple[int, bytes]:
    """(page size, cookie) of a paged results control value (RFC 2696 §2)."""
    if not value:
        raise ProtocolError("the paged results control needs a value")
    items = _decode_value(value, pureber.BERDecoderContext())
    if (len(items) != 2 or not isinstance(items[0], pureber.BERInteger)
            or not isinstance(items[1], pureber.BEROctetString) or items[0].value < 0):
        raise ProtocolError("malformed paged results control")
    return items[0].value, items[1].value


def encode_paged_control(size: int, cookie: bytes) -> bytes:
    return pureber.BERSequence([pureber.BERInteger(size), pureber.BEROctetString(cookie)]).toWire()


class _PasswordModifyContext(pureber.BERDecoderContext):
    Identities = {0x80: pureber.BEROctetString, 0x81: pureber.BEROctetString,
                  0x82: pureber.BEROctetString}


def decode_password_modify(value: bytes | None) -> dict[int, bytes]:
    """
    The fields of a Password Modify request value (RFC 3062 §2) by context tag number:
    0 userIdentity, 1 oldPasswd, 2 newPasswd.  An absent value has no fields.
    """
    if not value:
        return {}
    fields = {}
    for item in _decode_value(value, pureber.BERDecoderContext(inherit=_PasswordModifyContext())):
        number = item.tag & 0x1F
        if item.tag & 0xE0 != 0x80 or number > 2 or number in fields:
            raise ProtocolError("malformed Password Modify request")
        fields[number] = item.value
    return fields


def encode_generated_password(password: bytes) -> bytes:
    """PasswdModifyResponseValue with genPasswd [0] (RFC 3062 §2)."""
    return pureber.BERSequence([pureber.BEROctetString(password, tag=0x80)]).toWire()
