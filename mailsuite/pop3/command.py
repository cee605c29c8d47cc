"""
POP3 command lines as data: one line (without its line ending) in, a Command or a
CommandError out.  No state and no I/O here; the server decides what a command means.
"""

from __future__ import annotations

from dataclasses import dataclass

# RFC 1939 §3 keywords are 3 or 4 characters; RFC 2449 §3 lets extensions use longer ones.
MAX_KEYWORD_LENGTH = 16

# RFC 1939 §3 / RFC 2449 §4: an argument is at most 255 octets.
MAX_ARGUMENT_LENGTH = 255

# Message numbers and line counts: far more digits than any maildrop needs, few enough that
# converting them is cheap.
MAX_NUMBER_DIGITS = 18

#: (least, most) arguments for every command the server knows.  PASS takes the rest of the
#: line as one argument (RFC 1939 §7 allows spaces in passwords).
ARITY: dict[str, tuple[int, int]] = {
    "CAPA": (0, 0),
    "USER": (1, 1),
    "PASS": (1, 1),
    "AUTH": (0, 2),
    "STLS": (0, 0),
    "QUIT": (0, 0),
    "STAT": (0, 0),
    "LIST": (0, 1),
    "RETR": (1, 1),
    "DELE": (1, 1),
    "NOOP": (0, 0),
    "RSET": (0, 0),
    "TOP": (2, 2),
    "UIDL": (0, 1),
}

#: Commands whose argument is the whole rest of the line.
REST_OF_LINE = frozenset({"PASS"})


class CommandError(ValueError):
    """The line is not a well-formed command; ``str(error)`` is the text for the client."""


class UnknownCommand(CommandError):
    """The keyword is well-formed but not one the server knows."""


@dataclass(frozen=True)
class Command:
    name: str  # upper case
    args: tuple[str, ...] = ()


def parse_command(line: bytes) -> Command:
    """
    Parse one command line (RFC 1939 §3): a case-insensitive keyword, then arguments
    separated by single spaces.  Arity is checked against ARITY.
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError("Invalid characters in command") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise CommandError("Invalid characters in command")
    keyword, space, rest = text.partition(" ")
    if not keyword:
        raise CommandError("Empty command")
    if len(keyword) > MAX_KEYWORD_LENGTH or not (keyword.isascii() and keyword.isalpha()):
        raise CommandError("Invalid command")
    name = keyword.upper()
    if name not in ARITY:
        raise UnknownCommand("Unknown command")
    if name in REST_OF_LINE:
        args: tuple[str, ...] = (rest,) if rest else ()
    else:
        args = tuple(rest.split())
    least, most = ARITY[name]
    if not least <= len(args) <= most:
        raise CommandError(f"Wrong number of arguments for {name}")
    if any(len(a.encode("utf-8")) > MAX_ARGUMENT_LENGTH for a in args):
        raise CommandError("Argument too long")
    return Command(name, args)


def parse_number(text: str, *, least: int = 0) -> int:
    """
    A decimal number as RFC 1939 uses them (digits only, no sign), at least ``least``;
    CommandError otherwise.
    """
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_NUMBER_DIGITS:
        raise CommandError("Invalid number")
    value = int(text)
    if value < least:
        raise CommandError("Invalid number")
    return value


def parse_message_number(text: str) -> int:
    """A message number (RFC 1939 §5: 1 is the first message)."""
    return parse_number(text, least=1)
