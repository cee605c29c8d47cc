"""
A minimal blocking LDAPv3 client for the LDAP benchmark: hand-encoded BER requests (RFC 4511
§4.2 bind, §4.5.1 search, §4.3 unbind) and just enough decoding of replies to count entries
and read result codes, so the client costs as little as possible per operation.
"""

from __future__ import annotations

import socket

# RFC 4511 §4.2 - §4.5 protocolOp tags ([APPLICATION n]).
BIND_REQUEST = 0x60
BIND_RESPONSE = 0x61
UNBIND_REQUEST = 0x42
SEARCH_REQUEST = 0x63
SEARCH_ENTRY = 0x64
SEARCH_DONE = 0x65
SEARCH_REFERENCE = 0x73

SUCCESS = 0
SIZE_LIMIT_EXCEEDED = 4

SCOPE_SUBTREE = 2


class LDAPWireError(Exception):
    """The server closed the connection or sent something this client cannot read."""


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _length(len(value)) + value


def integer(value: int, tag: int = 0x02) -> bytes:
    return tlv(tag, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def octets(value: str | bytes, tag: int = 0x04) -> bytes:
    return tlv(tag, value.encode() if isinstance(value, str) else value)


def sequence(*parts: bytes, tag: int = 0x30) -> bytes:
    return tlv(tag, b"".join(parts))


# RFC 4511 §4.5.1.7 filter choices.
def f_or(*filters: bytes) -> bytes:
    return sequence(*filters, tag=0xA1)


def f_equal(attribute: str, value: str) -> bytes:
    return sequence(octets(attribute), octets(value), tag=0xA3)


def f_contains(attribute: str, fragment: str) -> bytes:
    """``(attribute=*fragment*)``: one ``any`` substring."""
    return sequence(octets(attribute), sequence(octets(fragment, 0x81)), tag=0xA4)


def message(message_id: int, op: bytes) -> bytes:
    return sequence(integer(message_id), op)


def bind_request(dn: str, password: str) -> bytes:
    return sequence(integer(3), octets(dn), octets(password, 0x80), tag=BIND_REQUEST)


def search_request(base: str, filter_: bytes, attributes: list[str], *,
                   size_limit: int = 0) -> bytes:
    return sequence(
        octets(base), integer(SCOPE_SUBTREE, 0x0A), integer(0, 0x0A),
        integer(size_limit), integer(0), tlv(0x01, b"\x00"), filter_,
        sequence(*(octets(a) for a in attributes)), tag=SEARCH_REQUEST)


def _read_header(data: bytes | memoryview, at: int) -> tuple[int, int, int] | None:
    """(tag, start of value, end of value) of the TLV at ``at``, or None if incomplete."""
    if len(data) < at + 2:
        return None
    tag = data[at]
    first = data[at + 1]
    if first < 0x80:
        start = at + 2
        return tag, start, start + first
    count = first & 0x7F
    if len(data) < at + 2 + count:
        return None
    length = int.from_bytes(bytes(data[at + 2:at + 2 + count]), "big")
    start = at + 2 + count
    return tag, start, start + length


class Connection:
    """One LDAP session over a blocking socket; requests run one at a time."""

    def __init__(self, host: str, port: int, *, timeout: float = 30.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.next_id = 1

    def _send(self, op: bytes) -> int:
        message_id = self.next_id
        self.next_id = message_id + 1 if message_id < 0x7FFFFFFF else 1
        self.sock.sendall(message(message_id, op))
        return message_id

    def _next_reply(self) -> tuple[int, bytes]:
        """(protocolOp tag, protocolOp value) of the next complete LDAPMessage."""
        while True:
            header = _read_header(self.buffer, 0)
            if header is not None and len(self.buffer) >= header[2]:
                _, start, end = header
                _, _, id_end = _read_header(self.buffer, start)
                op_tag, op_start, op_end = _read_header(self.buffer, id_end)
                op = self.buffer[op_start:op_end]
                self.buffer = self.buffer[end:]
                return op_tag, op
            chunk = self.sock.recv(262144)
            if not chunk:
                raise LDAPWireError("connection closed by the server")
            self.buffer += chunk

    @staticmethod
    def _result_code(op: bytes) -> int:
        _, start, end = _read_header(op, 0)
        return int.from_bytes(op[start:end], "big")

    def bind(self, dn: str, password: str) -> int:
        """The bind's result code."""
        self._send(bind_request(dn, password))
        tag, op = self._next_reply()
        if tag != BIND_RESPONSE:
            raise LDAPWireError(f"unexpected reply tag {tag:#x} to a bind")
        return self._result_code(op)

    def search(self, request: bytes) -> tuple[int, int]:
        """(result code, entries returned) of an encoded SearchRequest."""
        self._send(request)
        entries = 0
        while True:
            tag, op = self._next_reply()
            if tag == SEARCH_ENTRY:
                entries += 1
            elif tag == SEARCH_DONE:
                return self._result_code(op), entries
            elif tag != SEARCH_REFERENCE:
                raise LDAPWireError(f"unexpected reply tag {tag:#x} to a search")

    def close(self) -> None:
        try:
            self._send(tlv(UNBIND_REQUEST, b""))
        except OSError:
            pass
        self.sock.close()
