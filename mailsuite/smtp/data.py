"""
Incremental readers for message content: DATA (dot-stuffed text, RFC 5321 §4.1.1.4 and
§4.5.2) and BDAT chunks (raw octets, RFC 3030).  Pure: bytes in, the message or a DataError
out.  Memory stays bounded by the size limit, whatever the client sends.
"""

from __future__ import annotations

import enum


class DataError(enum.Enum):
    """Why a message was refused; the first problem found wins."""

    BARE_LINE_ENDING = "bare CR or LF"
    LINE_TOO_LONG = "line too long"
    TOO_BIG = "message too big"


class DataReader:
    """
    Reads DATA content.  ``feed`` returns None while the end-of-data marker has not been
    seen, then the offset just past the marker; whatever follows is the client's next
    command.

    The only end of data is CRLF "." CRLF, the first CRLF being the end of the previous line
    or of the DATA command itself.  A bare LF still ends a line (so a long line or a bad line
    can never hide the marker that follows), but a line not ended by CRLF, or a CR elsewhere
    in a line, refuses the message, and such a line never forms part of the marker: "\\n.\\n",
    "\\r\\n.\\n", "\\n.\\r\\n", "\\r.\\r\\n" are content errors, not ends of data.
    """

    def __init__(self, *, max_line_length: int, max_size: int):
        self._max_line_length = max_line_length
        self._max_size = max_size
        self._line = bytearray()  # the current line, kept only up to max_line_length
        self._line_length = 0  # the current line's true length so far
        self._line_tail = b""  # its last two bytes, kept even when the line is not
        self._after_crlf = True  # RFC 5321 §4.1.1.4: the DATA command's CRLF counts
        self._parts: list[bytes] = []
        self._size = 0
        self.error: DataError | None = None
        self.done = False

    def feed(self, data: bytes, start: int = 0) -> int | None:
        """Read ``data[start:]``; the end offset returned is an index into ``data``."""
        position = start
        while position < len(data):
            newline = data.find(b"\n", position)
            if newline < 0:
                self._extend(data[position:])
                return None
            self._extend(data[position : newline + 1])
            position = newline + 1
            if self._end_line():
                self.done = True
                return position
        return None

    def message(self) -> bytes:
        """The unstuffed message (CRLF line ends); only when done and error is None."""
        if not self.done or self.error is not None:
            raise ValueError("no message: data not finished or refused")
        return b"".join(self._parts)

    @property
    def size(self) -> int:
        return self._size

    def _extend(self, chunk: bytes) -> None:
        self._line_length += len(chunk)
        self._line_tail = (self._line_tail + chunk[-2:])[-2:]
        if self._line_length <= self._max_line_length:
            self._line += chunk
        else:
            self._fail(DataError.LINE_TOO_LONG)
            self._line.clear()

    def _end_line(self) -> bool:
        """Finish the line just read; True when it was the end-of-data marker."""
        ended_by_crlf = self._line_tail == b"\r\n"
        if self._line_length > self._max_line_length:
            line = None
        else:
            line = bytes(self._line)
        after_crlf = self._after_crlf
        self._after_crlf = ended_by_crlf
        self._line.clear()
        self._line_length = 0
        self._line_tail = b""
        if line is None:
            return False
        if not ended_by_crlf or b"\r" in line[:-2]:
            self._fail(DataError.BARE_LINE_ENDING)
            return False
        if after_crlf and line == b".\r\n":
            return True
        if line.startswith(b"."):
            # RFC 5321 §4.5.2: the client doubled a leading period.
            line = line[1:]
        if self.error is None:
            self._size += len(line)
            if self._size > self._max_size:
                self._fail(DataError.TOO_BIG)
            else:
                self._parts.append(line)
        return False

    def _fail(self, error: DataError) -> None:
        if self.error is None:
            self.error = error
        self._parts.clear()


class ChunkReader:
    """
    Reads one BDAT chunk of exactly ``size`` octets, no dot processing (RFC 3030 §2).
    Octets beyond ``room`` are read and dropped so that the message stays bounded.
    """

    def __init__(self, size: int, *, room: int):
        self.remaining = size
        self._room = room
        self._parts: list[bytes] = []
        self.overflow = False

    def feed(self, data: bytes, start: int = 0) -> int:
        """Take what belongs to the chunk from ``data[start:]``; return how many bytes."""
        taken = min(self.remaining, len(data) - start)
        piece = data[start : start + taken]
        self.remaining -= taken
        if not self.overflow:
            if len(piece) > self._room:
                self.overflow = True
                self._parts.clear()
            else:
                self._room -= len(piece)
                self._parts.append(piece)
        return taken

    @property
    def done(self) -> bool:
        return self.remaining == 0

    def content(self) -> bytes:
        return b"".join(self._parts)
