"""
How a stored message goes over the wire in a POP3 multi-line response (RFC 1939 §3):
every line ending as CRLF, byte-stuffed, ended by ".CRLF".  Pure functions on bytes.

The transformation works on whole lines only, so byte-stuffing never depends on where a
chunk happens to end.
"""

from __future__ import annotations

from collections.abc import Iterator

CRLF = b"\r\n"
TERMINATOR = b".\r\n"

#: About how many stored octets go into one chunk handed to the transport.
CHUNK_SIZE = 64 * 1024


def wire_size(data: bytes) -> int:
    """
    The size of ``data`` with every line ending as CRLF, counting the CRLF added after a
    last line that has none; byte-stuffing and the terminator are not counted.
    """
    if not data:
        return 0
    bare_lf = data.count(b"\n") - data.count(CRLF)
    missing_end = 0 if data.endswith(b"\n") else len(CRLF)
    return len(data) + bare_lf + missing_end


def _transform_lines(segment: bytes) -> bytes:
    # ``segment`` starts at the beginning of a line.  A stored CRLF stays one CRLF; a bare
    # LF becomes CRLF; a line starting with "." gets another one (RFC 1939 §3).
    out = segment.replace(CRLF, b"\n").replace(b"\n", CRLF)
    out = out.replace(b"\r\n.", b"\r\n..")
    if out.startswith(b"."):
        out = b"." + out
    return out


def wire_chunks(data: bytes, *, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """
    Yield ``data`` as a multi-line response body, terminator included, in chunks of whole
    lines of about ``chunk_size`` stored octets each (a longer line is one chunk).
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    end_of_data = len(data)
    ending = TERMINATOR if not data or data.endswith(b"\n") else CRLF + TERMINATOR
    position = 0
    while True:
        cut = data.find(b"\n", position + chunk_size - 1)
        end = end_of_data if cut < 0 else cut + 1
        out = _transform_lines(data[position:end])
        if end >= end_of_data:
            yield out + ending
            return
        yield out
        position = end


def top_slice(data: bytes, body_lines: int) -> bytes:
    """
    The part of ``data`` that TOP sends (RFC 1939 §7): the header, the blank line after it
    and the first ``body_lines`` lines of the body.  A message without a blank line is all
    header and is returned whole.
    """
    if data.startswith(b"\n") or data.startswith(CRLF):
        header_end = 0
    else:
        candidates = [i for i in (data.find(b"\n\n"), data.find(b"\n\r\n")) if i >= 0]
        if not candidates:
            return data
        header_end = min(candidates) + 1
    end = data.index(b"\n", header_end) + 1
    for _ in range(body_lines):
        if end >= len(data):
            break
        cut = data.find(b"\n", end)
        if cut < 0:
            return data
        end = cut + 1
    return data[:end]
