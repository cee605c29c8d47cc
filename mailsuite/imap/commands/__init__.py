"""
The command registry: each module of this package registers its handlers with ``command``.
A later extension (SORT, QUOTA, ...) adds a module here and an argument parser in
mailsuite.imap.parser; nothing else changes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


ANY = frozenset({State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED})
NOT_AUTHENTICATED = frozenset({State.NOT_AUTHENTICATED})
AUTHENTICATED = frozenset({State.AUTHENTICATED, State.SELECTED})
SELECTED = frozenset({State.SELECTED})


@dataclass(frozen=True)
class Handler:
    """
    ``run(session, command)`` is a coroutine function returning a Reply (or None for OK).
    ``allow_expunge``: whether EXPUNGE responses may be sent at the end (RFC 3501 §7.4.1
    forbids them during FETCH, STORE and SEARCH).
    """

    run: Callable
    states: frozenset
    allow_expunge: bool = True


REGISTRY: dict[str, Handler] = {}


def command(*names: str, states: frozenset, allow_expunge: bool = True):
    def register(run):
        for name in names:
            REGISTRY[name] = Handler(run, states, allow_expunge)
        return run

    return register


def load() -> dict[str, Handler]:
    """Import every command module (they register themselves) and return the registry."""
    from mailsuite.imap.commands import (  # noqa: F401
        append,
        fetch,
        mailboxes,
        messages,
        quota,
        search,
        session,
        sort,
    )

    return REGISTRY
