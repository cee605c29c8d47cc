"""
The `mailsuite` admin command: users, aliases, the directory, the queue, a config check and
a store check (``check --store [--repair]``, after a crash).

Every error is one line on stderr and a non-zero exit status; a command either does all of
its work or none of it (the directory writes each change in one transaction).  The store
check exits with status 1 while problems remain.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from mailsuite.config import ConfigError, load_config
from mailsuite.interfaces import DirectoryError, StoreError
from mailsuite.smtp.queue import QueueError
from mailsuite.tls import TLSError

DEFAULT_CONFIG = os.environ.get("MAILSUITE_CONFIG", "/etc/mailsuite/mailsuite.toml")


class CommandError(Exception):
    """A command cannot be carried out; the message is one readable line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailsuite",
        description="Administer a mailsuite server: users, aliases, directory, queue, "
                    "store checks.",
    )
    parser.add_argument("--config", "-c", default=DEFAULT_CONFIG,
                        help=f"the TOML configuration file (default: {DEFAULT_CONFIG})")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    user = commands.add_parser("user", help="add, change, remove and list accounts")
    user_commands = user.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = user_commands.add_parser("add", help="create an account")
    add.add_argument("address")
    add.add_argument("--name", help="the full name (cn); default: the local part")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input")
    add.set_defaults(run=_user_add)
    passwd = user_commands.add_parser("passwd", help="set an account's password")
    passwd.add_argument("address")
    passwd.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input")
    passwd.set_defaults(run=_user_passwd)
    delete = user_commands.add_parser("del", help="remove an account (its mail stays on disk)")
    delete.add_argument("address")
    delete.set_defaults(run=_user_del)
    listing = user_commands.add_parser("list", help="list accounts")
    listing.set_defaults(run=_user_list)

    alias = commands.add_parser("alias", help="add and remove alias addresses")
    alias_commands = alias.add_subparsers(dest="action", metavar="ACTION", required=True)
    alias_add = alias_commands.add_parser("add", help="make ALIAS deliver to the account TARGET")
    alias_add.add_argument("alias")
    alias_add.add_argument("target")
    alias_add.set_defaults(run=_alias_add)
    alias_del = alias_commands.add_parser("del", help="remove an alias")
    alias_del.add_argument("alias")
    alias_del.set_defaults(run=_alias_del)

    directory = commands.add_parser("directory", help="import and export the directory as LDIF")
    directory_commands = directory.add_subparsers(dest="action", metavar="ACTION", required=True)
    imp = directory_commands.add_parser("import", help="add or replace the entries of an LDIF file")
    imp.add_argument("file", help="LDIF file, or - for standard input")
    imp.set_defaults(run=_directory_import)
    exp = directory_commands.add_parser("export", help="write every entry as LDIF")
    exp.add_argument("file", nargs="?", default="-", help="LDIF file, or - for standard output")
    exp.set_defaults(run=_directory_export)

    queue = commands.add_parser("queue", help="inspect and act on the outbound queue")
    queue_commands = queue.add_subparsers(dest="action", metavar="ACTION", required=True)
    queue_list = queue_commands.add_parser("list", help="list queued messages")
    queue_list.set_defaults(run=_queue_list)
    queue_show = queue_commands.add_parser(
        "show", help="show a queued message: envelope, recipients and headers")
    queue_show.add_argument("id")
    queue_show.set_defaults(run=_queue_show)
    queue_flush = queue_commands.add_parser(
        "flush", help="retry one queued message, or all of them, now")
    queue_flush.add_argument("id", nargs="?")
    queue_flush.set_defaults(run=_queue_flush)
    queue_delete = queue_commands.add_parser(
        "delete", help="remove a queued message without notifying the sender")
    queue_delete.add_argument("id")
    queue_delete.set_defaults(run=_queue_delete)
    queue_bounce = queue_commands.add_parser(
        "bounce", help="return a queued message to its sender as undeliverable")
    queue_bounce.add_argument("id")
    queue_bounce.set_defaults(run=_queue_bounce)

    check = commands.add_parser(
        "check", help="validate the configuration and show the listeners; with --store, "
                      "verify the mail store")
    check.add_argument("--store", action="store_true",
                       help="verify the mail store against its files (the server must be "
                            "stopped); exit status 1 when problems remain")
    check.add_argument("--repair", action="store_true",
                       help="with --store: repair what can be repaired and say what was done")
    check.set_defaults(run=_check)
    return parser


def main(argv=None, *, stdin=None, stdout=None, stderr=None) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        status = args.run(config, args, _IO(stdin, stdout))
    except (CommandError, ConfigError, DirectoryError, StoreError, QueueError, TLSError) as e:
        stderr.write(f"mailsuite: {e}\n")
        return 1
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        stderr.write(f"mailsuite: {where}{e.strerror or e}\n")
        return 1
    except KeyboardInterrupt:
        stderr.write("mailsuite: interrupted\n")
        return 130
    return status or 0


class _IO:
    def __init__(self, stdin, stdout):
        self.stdin = stdin
        self.stdout = stdout

    def say(self, line: str) -> None:
        self.stdout.write(line + "\n")


def _directory(config):
    from mailsuite.tap import open_directory

    return open_directory(config)


def _read_password(args, io: _IO) -> str:
    if args.password_stdin:
        password = io.stdin.readline().rstrip("\r\n")
    elif io.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != password:
            raise CommandError("the two passwords differ")
    else:
        raise CommandError("no terminal to ask for the password: use --password-stdin")
    if not password:
        raise CommandError("the password is empty")
    return password


def _user_add(config, args, io):
    password = _read_password(args, io)
    account = _directory(config).add_user(args.address, password, cn=args.name)
    io.say(f"added {account.mail} (uid {account.uid})")


def _user_passwd(config, args, io):
    password = _read_password(args, io)
    _directory(config).set_password(args.address, password)
    io.say(f"password changed for {args.address}")


def _user_del(config, args, io):
    _directory(config).delete_user(args.address)
    io.say(f"removed {args.address}")


def _user_list(config, args, io):
    for account in _directory(config).users():
        aliases = sorted(account.addresses - {account.mail})
        extra = f"  aliases: {', '.join(aliases)}" if aliases else ""
        io.say(f"{account.mail}\tuid={account.uid}\t{account.display_name}{extra}")


def _alias_add(config, args, io):
    _directory(config).add_alias(args.alias, args.target)
    io.say(f"{args.alias} now delivers to {args.target}")


def _alias_del(config, args, io):
    _directory(config).delete_alias(args.alias)
    io.say(f"removed alias {args.alias}")


def _directory_import(config, args, io):
    if args.file == "-":
        data = io.stdin.buffer.read() if hasattr(io.stdin, "buffer") else io.stdin.read().encode()
    else:
        with open(args.file, "rb") as f:
            data = f.read()
    count = _directory(config).import_ldif(data)
    io.say(f"imported {count} entries")


def _directory_export(config, args, io):
    data = _directory(config).export_ldif()
    if args.file == "-":
        if hasattr(io.stdout, "buffer"):
            io.stdout.flush()
            io.stdout.buffer.write(data)
            io.stdout.buffer.flush()
        else:
            io.stdout.write(data.decode("utf-8"))
        return
    temporary = args.file + ".tmp"
    with open(temporary, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, args.file)


def _queue(config):
    from mailsuite.tap import open_queue

    return open_queue(config, runner=None)


def _queue_list(config, args, io):
    entries = _queue(config).entries()
    for entry in entries:
        recipients = ", ".join(entry.recipients)
        line = (f"{entry.id}\t{entry.size}\t{entry.created}\t<{entry.sender}>\t"
                f"{entry.pending}/{len(entry.recipients)} pending\t{recipients}")
        if entry.last_error:
            line += f"\t{_shorten(entry.last_error, _SHORT_ERROR)}"
        io.say(line)
    if not entries:
        io.say("the queue is empty")


def _queue_show(config, args, io):
    queue = _queue(config)
    entry = queue.get(args.id)
    if entry is None:
        raise CommandError(f"no queued message {args.id}")
    message = queue.read(args.id)
    io.say(f"id:            {entry.id}")
    if entry.envelope_id:
        io.say(f"transaction:   {entry.envelope_id}")
    io.say(f"sender:        <{entry.sender}>")
    io.say(f"arrival:       {entry.created}")
    io.say(f"size:          {entry.size}")
    io.say(f"attempts:      {entry.attempts}")
    io.say(f"next attempt:  {entry.next_attempt}")
    if entry.bounce_requested:
        io.say("bounce:        requested, the message will be returned to the sender")
    if entry.delay_warned:
        io.say("delay warning: sent")
    io.say(f"recipients:    {entry.pending} of {len(entry.states)} pending")
    for state in entry.states:
        detail = [state.status]
        if state.attempts:
            detail.append(f"{state.attempts} attempts")
        if state.status_code:
            detail.append(state.status_code)
        if state.remote_mta:
            detail.append(f"at {state.remote_mta}")
        io.say(f"  {state.address}  {', '.join(detail)}")
        if state.last_error:
            io.say(f"    last error: {_printable(state.last_error)}")
    io.say("")
    for line in _header_lines(message):
        io.say(line)


def _queue_flush(config, args, io):
    count = _queue(config).flush(args.id)
    noun = "entry" if count == 1 else "entries"
    io.say(f"{count} {noun} will be retried now")


def _queue_delete(config, args, io):
    if not _queue(config).delete(args.id):
        raise CommandError(f"no queued message {args.id}")
    io.say(f"deleted {args.id}")


def _queue_bounce(config, args, io):
    _queue(config).request_bounce(args.id)
    io.say(f"{args.id} will be returned to the sender")


_SHORT_ERROR = 60


def _printable(text: str) -> str:
    # Remote replies are untrusted: no control characters reach the terminal.
    return "".join(c if c.isprintable() else " " for c in text).strip()


def _shorten(text: str, limit: int) -> str:
    text = " ".join(_printable(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _header_lines(message: bytes) -> list[str]:
    """The header section of a queued message as printable lines."""
    lines = []
    for raw in message.splitlines():
        if not raw.strip():
            break
        text = raw.decode("utf-8", "replace")
        indent = text[: len(text) - len(text.lstrip(" \t"))]
        lines.append(indent + _printable(text))
    return lines


def _check(config, args, io):
    if args.repair and not args.store:
        raise CommandError("--repair goes with --store")
    if args.store:
        return _check_store(config, args, io)
    from mailsuite.tap import check_suite

    for line in check_suite(config):
        io.say(line)


def _check_store(config, args, io) -> int:
    from mailsuite.store.check import check_store, running_server

    pid = running_server(config.suite.data_dir)
    if pid is not None:
        raise CommandError(f"the server is running (pid {pid}): stop it before checking "
                           f"the store")
    report = check_store(config.store.backend, config.store_path, repair=args.repair)
    for problem in report.found:
        io.say(f"problem: {problem.line()}")
    for line in report.repaired:
        io.say(f"repaired: {line}")
    if args.repair:
        for problem in report.remaining:
            io.say(f"remains: {problem.line()}")
    summary = (f"{report.backend} store {report.path}: {report.messages} messages in "
               f"{report.mailboxes} mailboxes, ")
    if not report.found:
        summary += "no problems"
    elif args.repair:
        summary += (f"{_count(len(report.found), 'problem')} found, "
                    f"{len(report.remaining)} remain")
    else:
        fixable = sum(1 for problem in report.found if problem.repair is not None)
        summary += (f"{_count(len(report.found), 'problem')} found, {fixable} of them "
                    f"repairable with --repair")
    io.say(summary)
    return 0 if report.clean else 1


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
