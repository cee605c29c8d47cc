"""
Mailbox path traversal: names such as "../x", "/etc", "~", "%2e%2e", a NUL or ".." hidden in
modified UTF-7, sent to every IMAP command that names a mailbox, on every store backend, get
a tagged OK or NO and never create, read or remove anything outside the account.
"""

from __future__ import annotations

import os

import pytest
from twisted.internet import task

from mailsuite.auth import make_portal
from mailsuite.imap.server import IMAPFactory, IMAPLimits
from mailsuite.store.base import inline_runner
from mailsuite.testing.memstore import MemoryMailStore
from tests.fuzz.harness import Connection, LoggedFailures
from tests.unit.ldap.ldap_fakes import demo_directory

NAMES = [
    b"../outside", b"../../outside", b"../../../outside/x", b"INBOX/../../outside",
    b"a/../../../outside", b'"/etc"', b'"/etc/passwd"', b"/tmp/x", b"~", b"~/x", b"~root",
    b".", b"..", b"a/./b", b"a/../b", b"%2e%2e/outside", b"%2e%2e%2foutside",
    b"&AC4ALg-/&AC4ALg-/outside",  # ".." written in modified UTF-7
    b"&AC8-outside",  # "/" written in modified UTF-7
    b'"..\\\\..\\\\outside"', b'"a\\\\b"', b"{3}\r\na\x00b", b".Trash", b"a.b", b"cur",
    b"tmp", b"new", b"Maildir", b"INBOX.outside", b"outside/", b'"a//b"', b'""',
    b"&-&-", b"&Jjo-",
]
COMMANDS = [
    b"CREATE {name}", b"SELECT {name}", b"EXAMINE {name}", b"STATUS {name} (MESSAGES)",
    b"APPEND {name} {{5+}}\r\nhello", b"RENAME Victim {name}", b"RENAME {name} Elsewhere",
    b"SUBSCRIBE {name}", b"UNSUBSCRIBE {name}", b'LIST {name} "*"', b'LIST "" {name}',
    b"GETQUOTAROOT {name}", b"DELETE {name}",
]


def store_for(kind: str, root: str):
    if kind == "memory":
        return MemoryMailStore()
    if kind == "sqlite":
        from mailsuite.store.sqlite import SQLiteMailStore

        return SQLiteMailStore(root, runner=inline_runner)
    from mailsuite.store.maildir import MaildirMailStore

    return MaildirMailStore(root, runner=inline_runner)


def snapshot(path: str) -> set[str]:
    found = set()
    for directory, subdirectories, files in os.walk(path):
        for name in subdirectories + files:
            found.add(os.path.relpath(os.path.join(directory, name), path))
    return found


@pytest.mark.parametrize("kind", ["memory", "sqlite", "maildir"])
def test_hostile_names_stay_inside_the_account(tmp_path, kind):
    """Every command with every hostile name gets a tagged OK, NO or BAD, logs no failure,
    and the files outside the store's directory are exactly those there before."""
    root = tmp_path / "store"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("untouched")
    store = store_for(kind, str(root))
    directory = demo_directory()
    factory = IMAPFactory(hostname="mail.example.test", portal=make_portal(directory, store),
                          tls=object(), allow_plaintext_auth=True, clock=task.Clock(),
                          limits=IMAPLimits(max_errors=100_000))
    with LoggedFailures():
        conn = Connection(factory)
        assert b"l OK" in conn.send(b"l LOGIN alice@example.test alice-password\r\n")
        before = snapshot(str(tmp_path))
        for number, template in enumerate(COMMANDS):
            for name in NAMES:
                conn.send(b"c CREATE Victim\r\n")
                line = template.replace(b"{name}", name).replace(b"{{", b"{").replace(b"}}", b"}")
                tag = b"t%d" % number
                out = conn.send(tag + b" " + line + b"\r\n")
                if conn.protocol.framer.in_command:
                    out += conn.send(b"\r\n")  # a refused literal: finish the command
                assert not conn.closed, (line, out)
                last = out.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1]
                assert last.startswith((tag + b" OK", tag + b" NO", tag + b" BAD")), (line, out)
        assert snapshot(str(outside)) == {"keep"}
        assert (outside / "keep").read_text() == "untouched"
        escaped = snapshot(str(tmp_path)) - before
        inside = [path == "store" or path.startswith("store" + os.sep) for path in escaped]
        assert all(inside), escaped
        names = [info.name for info in store.mailboxes("alice").result]
        assert not any(part in ("", ".", "..") for n in names for part in n.split("/")), names
        conn.send(b"z LOGOUT\r\n")
    if kind != "memory":
        store.close()
