"""
The incremental command reader (RFC 3501 §4.3, RFC 7888): cuts client input into complete
commands, collecting literal payloads, with bounded memory.

``feed()`` appends input; ``next_event()`` returns one event at a time, or None when more
input is needed.  A synchronising literal ``{n}`` yields Continue (the server then sends
"+"); ``{n+}`` (LITERAL+) does not.  Over-long lines and over-size literals are reported as
events and never held in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailsuite.imap.parser import LITERAL_HEADER, RawCommand, parse_tag

#: Literals one command may carry (MULTIAPPEND messages, strings); more make it too big.
MAX_LITERALS = 1000
#: How much of a line that is too long or too big is looked at for its tag.
MAX_TAG_LENGTH = 256


@dataclass(frozen=True)
class Complete:
    command: RawCommand


@dataclass(frozen=True)
class Continue:
    """
    A synchronising literal was announced: send a continuation request, or refuse it with
    ``Framer.refuse_literal`` (RFC 3501 §7.5: the server may answer with a tagged NO).
    ``first_line`` is the command's first line, ``literals_size`` the octets of its literals
    announced so far, this one included.
    """

    tag: str | None = field(default=None, compare=False)
    first_line: bytes = field(default=b"", compare=False)
    literals_size: int = field(default=0, compare=False)


@dataclass(frozen=True)
class LineTooLong:
    tag: str | None


@dataclass(frozen=True)
class LiteralTooBig:
    tag: str | None
    synchronising: bool


@dataclass(frozen=True)
class Line:
    """A plain line (IDLE's DONE, a SASL response), read in line mode."""

    data: bytes


class Framer:
    def __init__(self, *, max_line_length: int, max_literal_size: int,
                 max_command_size: int | None = None, max_literals: int = MAX_LITERALS):
        self.max_line_length = max_line_length
        self.max_literal_size = max_literal_size
        # A command may hold several literals (MULTIAPPEND, LOGIN); bound them together.
        self.max_command_size = max_command_size or (max_literal_size + 16 * max_line_length)
        # Each literal costs a line and a bytes object however small it is: count them too.
        self.max_literals = max_literals
        self._buffer = bytearray()
        self._lines: list[bytes] = []
        self._literals: list[bytes] = []
        self._size = 0
        self._literal_needed: int | None = None
        self._discard_line = False  # skipping to the end of an over-long line
        self._discard_tag: str | None = None

    def limit_literals(self, max_literal_size: int) -> None:
        """Change the literal limit (and the command limit that follows from it) for the
        commands still to come."""
        self.max_literal_size = max_literal_size
        self.max_command_size = max_literal_size + 16 * self.max_line_length

    def feed(self, data: bytes) -> None:
        if self._discard_line and b"\n" not in data:
            return
        self._buffer += data

    def clear(self) -> None:
        """Drop everything buffered (RFC 3501 §6.2.1: input before TLS starts is discarded)."""
        self._buffer.clear()
        self._reset()
        self._discard_line = False

    def _reset(self) -> None:
        self._lines = []
        self._literals = []
        self._size = 0
        self._literal_needed = None

    @property
    def pending(self) -> int:
        """Octets buffered and not yet handed out."""
        return len(self._buffer)

    @property
    def in_command(self) -> bool:
        """True while a command is partly read (its literal being awaited)."""
        return bool(self._lines)

    def next_event(self, *, line_mode: bool = False):
        # A loop, not recursion: a command may chain many literals, each read in turn.
        while True:
            if self._literal_needed is not None:
                if not self._take_literal():
                    return None
                line_mode = False  # the rest of a command is never a plain line
            newline = self._buffer.find(b"\n")
            if self._discard_line:
                if newline < 0:
                    self._buffer.clear()
                    return None
                del self._buffer[: newline + 1]
                self._discard_line = False
                tag, self._discard_tag = self._discard_tag, None
                self._reset()
                return LineTooLong(tag)
            if newline < 0:
                if len(self._buffer) > self.max_line_length:
                    self._discard_tag = self._current_tag()
                    self._buffer.clear()
                    self._discard_line = True
                return None
            line = bytes(self._buffer[:newline])
            del self._buffer[: newline + 1]
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self.max_line_length:
                tag = self._current_tag(line)
                self._reset()
                return LineTooLong(tag)
            if line_mode:
                return Line(line)
            self._lines.append(line)
            self._size += len(line)
            match = LITERAL_HEADER.search(line)
            if match is None:
                command = RawCommand(tuple(self._lines), tuple(self._literals))
                self._reset()
                return Complete(command)
            size = int(match.group(2))
            synchronising = not match.group(3)
            if (size > self.max_literal_size or self._size + size > self.max_command_size
                    or len(self._lines) > self.max_literals):
                tag = self._current_tag()
                self._reset()
                if not synchronising:
                    # The literal is on its way and cannot be refused; the caller ends the
                    # session.
                    self._buffer.clear()
                return LiteralTooBig(tag, synchronising)
            self._literal_needed = size
            if synchronising:
                announced = sum(len(x) for x in self._literals) + size
                return Continue(self._current_tag(), self._lines[0], announced)

    def refuse_literal(self) -> None:
        """Forget the command whose synchronising literal was just announced."""
        self._reset()

    def _take_literal(self) -> bool:
        """Move the awaited literal out of the buffer; False while it is incomplete."""
        needed = self._literal_needed
        if len(self._buffer) < needed:
            return False
        self._literals.append(bytes(self._buffer[:needed]))
        del self._buffer[:needed]
        self._size += needed
        self._literal_needed = None
        return True

    def _current_tag(self, line: bytes | None = None) -> str | None:
        """The tag of the command being read, when it can be told: a tag not followed by a
        space within MAX_TAG_LENGTH octets is unknown (None, an untagged reply)."""
        first = self._lines[0] if self._lines else (line if line is not None else self._buffer)
        head = bytes(first[:MAX_TAG_LENGTH + 1])
        if b" " not in head:
            return None
        return parse_tag(RawCommand((head,)))
