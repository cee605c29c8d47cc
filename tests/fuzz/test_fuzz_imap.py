"""
Hostile input for IMAP: the framer and the command parser, and the session on a fake
transport before login (with and without plaintext logins), mid-SASL, authenticated, with a
mailbox selected, inside a literal, in IDLE and with COMPRESS=DEFLATE active.
"""

from __future__ import annotations

import re
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import task

from mailsuite.auth import make_portal
from mailsuite.imap import framing
from mailsuite.imap.parser import ParseError, RawCommand, parse_command
from mailsuite.imap.server import IMAPFactory, IMAPLimits
from mailsuite.testing.memstore import MemoryMailStore
from tests.fuzz.harness import (
    JUNK_PIECE,
    JUNK_SIZE,
    Connection,
    LoggedFailures,
    fuzz_settings,
    junk,
    line_ends,
    mutated,
    numbers,
    packets,
    stream,
)
from tests.unit.imap.imap_fakes import HOSTNAME, FakeDirectory, message

LIMITS = IMAPLimits(max_line_length=2048, max_literal_size=64 * 1024, max_errors=100_000)
MESSAGES = [
    message("one"),
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822"
    b"\r\n\r\nSubject: inner\r\n\r\nx\r\n--b\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"aGVsbG8=\r\n--b--\r\n",
    b"no header at all",
    b"",
    b"Subject: =?utf-8?b?w6k=?=\nTo: a@b, \"x\" <@r:y@z>\n\n\xff\xfe 8-bit\n",
]
STATES = ["not-authenticated", "logindisabled", "sasl", "authenticated", "selected",
          "literal", "idle"]
RESPONSE_TAG = re.compile(rb"[\x21-\x7e]+ (OK|NO|BAD)( |\r\n)")
LITERAL_END = re.compile(rb"~?\{(\d+)\}\r\n\Z")


# --------------------------------------------------------------------------- grammar


def literal(data: bytes, kind: bytes = b"") -> bytes:
    """``data`` as a literal: kind b"" synchronising, b"+" non-synchronising, b"~" literal8."""
    if kind == b"~":
        return b"~{%d}\r\n" % len(data) + data
    return b"{%d%s}\r\n" % (len(data), kind) + data


strings = st.one_of(
    st.sampled_from([b"INBOX", b"inbox", b"Archive", b"a/b/c", b'"a b"', b'"\\"q\\\\"',
                     b"&AOk-", b"&", b"&-", b"&Jjo!", b"..", b"../x", b"/etc", b"~root",
                     b"%2e%2e", b'""', b"NIL", b"x" * 300, b"INBOX/", b"a//b"]),
    st.builds(literal, st.binary(max_size=20), st.sampled_from([b"", b"+", b"~"])),
    junk,
)
patterns = st.one_of(
    st.sampled_from([b"*", b"%", b"INBOX*", b"a/%", b"*%*%*%*%*%*%*%*%*%x", b"%/%/%/%",
                     b'""', b'"*"', b"~", b"../*"]),
    st.lists(st.sampled_from([b"*", b"%", b"a", b"/"]), min_size=1, max_size=40).map(b"".join),
)
sequences = st.one_of(
    st.sampled_from([b"1", b"1:*", b"*", b"$", b"*:1", b"0", b"1,2,3", b"1:2:3", b"2:4,1",
                     b"4294967295", b"4294967296", b"1:4294967295", b",", b"1,"]),
    numbers,
)
fetch_items = st.sampled_from([
    b"FLAGS", b"UID", b"ALL", b"FAST", b"FULL", b"ENVELOPE", b"BODYSTRUCTURE", b"BODY",
    b"RFC822", b"RFC822.SIZE", b"RFC822.HEADER", b"RFC822.TEXT", b"INTERNALDATE", b"MODSEQ",
    b"BODY[]", b"BODY.PEEK[1]", b"BODY[1.2.MIME]", b"BODY[HEADER.FIELDS (Subject To)]",
    b"BODY[HEADER.FIELDS.NOT (X)]", b"BODY[TEXT]<0.10>", b"BODY[]<4294967295.1>",
    b"BINARY[1]", b"BINARY.PEEK[2]", b"BINARY.SIZE[1]", b"BODY[1.1.1.1.1.1]", b"BODY[0]",
    b"(FLAGS UID)", b"(BODY[)", b"BODY[999999999999]", b"PREVIEW", b"SAVEDATE",
])
search_keys = st.recursive(
    st.one_of(
        st.sampled_from([b"ALL", b"SEEN", b"UNSEEN", b"NEW", b"OLD", b"RECENT", b"DELETED",
                         b"SINCE 1-Jan-2000", b"BEFORE 31-Dec-9999", b"ON 30-Feb-2020",
                         b"SENTSINCE 1-Foo-2000", b"LARGER 10", b"SMALLER 4294967296",
                         b"HEADER Subject one", b"BODY x", b"TEXT {1}\r\nx", b"KEYWORD $x",
                         b"MODSEQ 1", b"OLDER 10", b"YOUNGER 0", b"UID 1:*", b"$",
                         b"SUBJECT \"\xc3\xa9\"", b"FROM \"\""]),
        sequences,
    ),
    lambda inner: st.one_of(
        st.builds(lambda a, b: b"OR " + a + b" " + b, inner, inner),
        inner.map(lambda a: b"NOT " + a),
        st.lists(inner, min_size=1, max_size=3).map(lambda keys: b"(" + b" ".join(keys) + b")"),
    ),
    max_leaves=6,
)
flag_lists = st.sampled_from([b"(\\Seen)", b"(\\Deleted \\Flagged)", b"()", b"(\\Bogus)",
                              b"($kw x)", b"(\\*)", b"(\\Recent)", b"(", b"\\Seen"])
commands_without_tag = st.one_of(
    st.sampled_from([b"CAPABILITY", b"NOOP", b"STARTTLS", b"NAMESPACE", b"CHECK", b"CLOSE",
                     b"UNSELECT", b"EXPUNGE", b"UNAUTHENTICATE", b"IDLE", b"LOGOUT",
                     b"LOGIN alice alice-secret", b"LOGIN alice wrong", b"LOGIN",
                     b"AUTHENTICATE PLAIN", b"AUTHENTICATE PLAIN AGFsaWNlAGFsaWNlLXNlY3JldA==",
                     b"AUTHENTICATE PLAIN =", b"AUTHENTICATE LOGIN", b"ENABLE CONDSTORE",
                     b"ENABLE QRESYNC", b"ENABLE IMAP4rev2 UTF8=ACCEPT", b"ENABLE",
                     b'ID ("name" "x")', b"ID NIL", b"ID (" + b'"k" "v" ' * 40 + b")",
                     b"GETQUOTAROOT INBOX", b'GETQUOTA ""', b'SETQUOTA "" (STORAGE 1)',
                     b"SELECT INBOX (CONDSTORE)", b"SELECT INBOX (QRESYNC (1 1 1:*))",
                     b"SORT (DATE) UTF-8 ALL", b"UID SORT (REVERSE SUBJECT) US-ASCII ALL",
                     b"THREAD REFERENCES UTF-8 ALL", b"THREAD ORDEREDSUBJECT UTF-8 ALL",
                     b"SEARCH CHARSET KOI8-R ALL", b"ESEARCH", b"UID", b"UID FROB 1"]),
    st.builds(lambda verb, name: verb + b" " + name,
              st.sampled_from([b"SELECT", b"EXAMINE", b"CREATE", b"DELETE", b"SUBSCRIBE",
                               b"UNSUBSCRIBE", b"GETQUOTAROOT"]), strings),
    st.builds(lambda a, b: b"RENAME " + a + b" " + b, strings, strings),
    st.builds(lambda a, b: b"LOGIN " + a + b" " + b, strings, strings),
    st.builds(lambda verb, ref, pattern: verb + b" " + ref + b" " + pattern,
              st.sampled_from([b"LIST", b"LSUB", b"LIST (SUBSCRIBED)",
                               b"LIST (SPECIAL-USE RECURSIVEMATCH)"]),
              st.sampled_from([b'""', b"INBOX", b"a/", b"~", b"/"]), patterns),
    st.builds(lambda ref, pattern, ret: b"LIST " + ref + b" " + pattern + b" RETURN " + ret,
              st.sampled_from([b'""', b"a"]), patterns,
              st.sampled_from([b"(CHILDREN)", b"(STATUS (MESSAGES UNSEEN SIZE))",
                               b"(SUBSCRIBED SPECIAL-USE)", b"()", b"(STATUS ())"])),
    st.builds(lambda name, items: b"STATUS " + name + b" " + items, strings,
              st.sampled_from([b"(MESSAGES)", b"(UIDNEXT UIDVALIDITY UNSEEN RECENT)",
                               b"(HIGHESTMODSEQ SIZE DELETED DELETED-STORAGE)", b"()",
                               b"(BOGUS)"])),
    st.builds(lambda name, flags, body, kind: b"APPEND " + name + b" " + flags + b" "
              + literal(body, kind),
              strings, flag_lists, st.one_of(st.binary(max_size=60), st.sampled_from(MESSAGES)),
              st.sampled_from([b"", b"+", b"~"])),
    st.builds(lambda verb, seq, items: verb + b" " + seq + b" " + items,
              st.sampled_from([b"FETCH", b"UID FETCH"]), sequences,
              st.one_of(fetch_items, st.lists(fetch_items, max_size=4).map(
                  lambda items: b"(" + b" ".join(items) + b")"))),
    st.builds(lambda verb, seq, mode, flags: verb + b" " + seq + b" " + mode + b" " + flags,
              st.sampled_from([b"STORE", b"UID STORE"]), sequences,
              st.sampled_from([b"FLAGS", b"+FLAGS", b"-FLAGS.SILENT", b"+FLAGS (UNCHANGEDSINCE 1)",
                               b"BOGUS"]), flag_lists),
    st.builds(lambda verb, seq, name: verb + b" " + seq + b" " + name,
              st.sampled_from([b"COPY", b"MOVE", b"UID COPY", b"UID MOVE"]), sequences, strings),
    st.builds(lambda verb, seq: verb + b" " + seq,
              st.sampled_from([b"UID EXPUNGE", b"FETCH", b"SEARCH UID"]), sequences),
    st.builds(lambda verb, ret, key: verb + ret + b" " + key,
              st.sampled_from([b"SEARCH", b"UID SEARCH"]),
              st.sampled_from([b"", b" RETURN (MIN MAX COUNT ALL)", b" RETURN (SAVE)",
                               b" RETURN ()", b" CHARSET UTF-8"]), search_keys),
    st.integers(min_value=1, max_value=80).map(lambda n: b"SEARCH " + b"(" * n + b"ALL" + b")" * n),
    st.integers(min_value=1, max_value=80).map(lambda n: b"SEARCH " + b"NOT " * n + b"ALL"),
)
tags = st.one_of(st.sampled_from([b"a1", b"A.2", b"*", b"+", b"", b"t\xff", b"t{", b"x" * 100]),
                 junk)
commands = st.builds(lambda tag, command, end: tag + b" " + command + (end or b"\r\n"),
                     tags, commands_without_tag, line_ends)
commands = st.one_of(
    commands,
    st.sampled_from([b"DONE\r\n", b"done\r\n", b"*\r\n", b"=\r\n",
                     b"AGFsaWNlAGFsaWNlLXNlY3JldA==\r\n"]),
    st.integers(min_value=1500, max_value=5000).map(lambda n: b"a NOOP " + b"x" * n + b"\r\n"),
    st.sampled_from([b"a APPEND INBOX {99999999}\r\n", b"a APPEND INBOX {99999999+}\r\nxx",
                     b"a LOGIN {5}\r\n", b"a LOGIN {5+}\r\nalice {12+}\r\nalice-secret\r\n",
                     b"a APPEND INBOX " + b"{0+}\r\n" * 2000 + b"\r\n"]),
)


# --------------------------------------------------------------------------- sessions


class IMAPSetting:
    """One factory over a shared store: alice has MESSAGES and a few mailboxes, bob one
    message."""

    def __init__(self, *, allow_plaintext_auth: bool = True):
        self.store = MemoryMailStore()
        for account, mailbox_messages in (("alice", MESSAGES), ("bob", MESSAGES[:1])):
            self.store.ensure_account(account)
            for data in mailbox_messages:
                self.store.append(account, "INBOX", data, frozenset({"\\Seen"}))
        for name in ("Archive", "a", "a/b", "a/b/c"):
            self.store.create_mailbox("alice", name)
        self.factory = IMAPFactory(
            hostname=HOSTNAME, portal=make_portal(FakeDirectory(), self.store), tls=object(),
            allow_plaintext_auth=allow_plaintext_auth, limits=LIMITS, clock=task.Clock(),
            quota_for=lambda account: 10**7)

    def connect(self, state: str, port: int = 40001) -> Connection:
        conn = Connection(self.factory, port=port)
        assert conn.greeting.startswith(b"* OK [CAPABILITY ")
        enter(conn, state)
        return conn


def setting_for(state: str) -> IMAPSetting:
    return IMAPSetting(allow_plaintext_auth=state != "logindisabled")


def enter(conn: Connection, state: str) -> None:
    if state == "sasl":
        assert conn.send(b"s AUTHENTICATE PLAIN\r\n") == b"+ \r\n"
        return
    if state in ("not-authenticated", "logindisabled"):
        return
    assert b"l OK " in conn.send(b"l LOGIN alice alice-secret\r\n")
    if state in ("selected", "idle"):
        assert b"s OK [READ-WRITE]" in conn.send(b"s SELECT INBOX\r\n")
    if state == "idle":
        assert conn.send(b"i IDLE\r\n") == b"+ idling\r\n"
    if state == "literal":
        assert conn.send(b"a APPEND INBOX {100}\r\n") == b"+ Ready for literal data\r\n"


def check_responses(output: bytes) -> None:
    """
    The output is a sequence of well-formed responses (RFC 3501 §7): untagged ("* "),
    continuation ("+") or tagged status lines, each ended by CRLF, with literals of exactly
    the announced size.
    """
    position = 0
    start_of_response = True
    while position < len(output):
        end = output.find(b"\r\n", position)
        assert end >= 0, output[position:position + 200]
        line = output[position:end + 2]
        if start_of_response:
            assert line.startswith((b"* ", b"+")) or RESPONSE_TAG.match(line), line[:200]
        position = end + 2
        match = LITERAL_END.search(line)
        if match is not None:
            position += int(match.group(1))
            assert position <= len(output), "literal runs past the output"
            start_of_response = False
        else:
            start_of_response = True
        assert b"\n" not in line[:-2] and b"\r" not in line[:-2], line[:200]


def check_bounded(conn: Connection) -> None:
    if conn.closed:
        return
    framer = conn.protocol.framer
    if framer._literal_needed is not None:
        assert framer.pending < framer._literal_needed <= LIMITS.max_literal_size
    else:
        assert framer.pending <= LIMITS.max_line_length
    assert framer._size <= framer.max_command_size


def still_usable(conn: Connection) -> None:
    """Closed, or the session comes back to reading commands and answers NOOP with OK."""
    output = conn.send(b"\r\n")
    for _ in range(8):
        if conn.closed:
            return
        p = conn.protocol
        if p._line_waiter is not None:
            output += conn.send(b"DONE\r\n")
        elif p.framer._literal_needed is not None:
            output += conn.send(b"x" * p.framer._literal_needed + b"\r\n")
        elif p.framer.in_command:
            output += conn.send(b"\r\n")
        else:
            break
    if conn.closed:
        return
    if p.compressed:
        # A fuzzed COMPRESS took effect: go on in a compressed session.
        return
    output += conn.send(b"zz NOOP\r\n")
    check_responses(output)
    if not conn.closed:
        assert output.endswith(b"zz OK Completed\r\n"), output[-300:]


def other_client_works(setting: IMAPSetting) -> None:
    """Another session of the factory logs in as bob and reads his message."""
    conn = Connection(setting.factory, port=40002)
    if conn.protocol.login_allowed is False:
        assert conn.send(b"t STARTTLS\r\n") == b"t OK Begin TLS negotiation now\r\n"
    out = conn.send(b"l LOGIN bob \"bob secret\"\r\ns SELECT INBOX\r\nf FETCH 1 BODY[]\r\n")
    assert out.endswith(b"f OK Completed\r\n"), out[-300:]
    assert MESSAGES[0] in out


# --------------------------------------------------------------------------- pure parts


@fuzz_settings(300)
@given(data=st.data(), content=stream(commands))
def test_framer_and_parser_raise_nothing_and_stay_bounded(data, content):
    """Any input cut into commands by the framer (answering every continuation) parses to a
    command or a ParseError, and the framer never holds more than its limits allow."""
    framer = framing.Framer(max_line_length=LIMITS.max_line_length,
                            max_literal_size=LIMITS.max_literal_size)
    for packet in data.draw(packets(content)):
        framer.feed(packet)
        while True:
            event = framer.next_event()
            if event is None:
                break
            if isinstance(event, framing.Complete):
                try:
                    parse_command(event.command)
                except ParseError:
                    pass
        assert framer.pending <= LIMITS.max_line_length + LIMITS.max_literal_size
        assert framer._size <= framer.max_command_size


@fuzz_settings(300)
@given(data=st.data(),
       lines=st.lists(st.one_of(commands_without_tag, mutated(commands_without_tag)),
                      min_size=1, max_size=3),
       utf8=st.booleans())
def test_parser_raises_only_parse_errors(data, lines, utf8):
    """Any lines with a literal after each but the last (as the framer hands them over),
    even when sizes disagree, parse or raise ParseError."""
    literals = data.draw(st.lists(st.binary(max_size=10), min_size=len(lines) - 1,
                                  max_size=len(lines) - 1))
    raw = RawCommand(tuple(b"t " + line.replace(b"\r\n", b"") if i == 0 else line
                           for i, line in enumerate(lines)), tuple(literals))
    try:
        parse_command(raw, utf8=utf8)
    except ParseError:
        pass


@pytest.mark.parametrize("state", STATES)
@fuzz_settings(40)
@given(data=st.data(), content=stream(commands))
def test_session_survives_hostile_input(state, data, content):
    """In every state, hostile input never raises or logs a failure, the output is well
    formed, buffers stay bounded, the session stays usable (or is closed) and another
    session of the same factory still works."""
    with LoggedFailures():
        setting = setting_for(state)
        conn = setting.connect(state)
        output = conn.send_packets(data.draw(packets(content)))
        if not conn.protocol.compressed:
            check_responses(output)
        check_bounded(conn)
        still_usable(conn)
        other_client_works(setting)


@pytest.mark.parametrize("state", ["not-authenticated", "authenticated", "selected"])
@fuzz_settings(40)
@given(line=st.builds(lambda tag, command: tag + b" " + command, st.sampled_from([b"a", b"*", b""]),
                      st.one_of(commands_without_tag, mutated(commands_without_tag))))
def test_every_command_gets_a_reply(state, line):
    """A complete command line is always answered: tagged, untagged BAD, or a continuation
    request when it announced a synchronising literal, IDLE or a SASL exchange."""
    line = line.replace(b"\r", b"").replace(b"\n", b"") + b"\r\n"
    with LoggedFailures():
        conn = setting_for(state).connect(state)
        output = conn.send(line)
        # Only a non-synchronising literal announced at the end leaves the command unfinished.
        assert output or conn.protocol.framer.in_command, line
        if not conn.protocol.compressed:
            check_responses(output)


class Compressed:
    """Both directions of a COMPRESS=DEFLATE session (RFC 4978)."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        self.inflate = zlib.decompressobj(-15)

    def send(self, data: bytes) -> bytes:
        packed = self.deflate.compress(data) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        return self.inflate.decompress(self.conn.send(packed))


@fuzz_settings(60)
@given(content=stream(commands), raw=st.booleans())
def test_compressed_session_survives_hostile_input(content, raw):
    """After COMPRESS DEFLATE, hostile input (compressed, or raw bytes that are a corrupt
    stream) leaves the session answering or closed, never raising."""
    with LoggedFailures():
        setting = setting_for("authenticated")
        conn = setting.connect("authenticated")
        assert conn.send(b"c COMPRESS DEFLATE\r\n") == b"c OK DEFLATE active\r\n"
        session = Compressed(conn)
        if raw:
            conn.send(content)
            output = b""
        else:
            output = session.send(content)
        if conn.closed or conn.protocol._line_waiter is not None:
            return
        framer = conn.protocol.framer
        if framer._literal_needed is None and not framer.in_command and not raw:
            output += session.send(b"\r\nzz NOOP\r\n")
            if not conn.closed:
                assert output.endswith(b"zz OK Completed\r\n"), output[-300:]
        other_client_works(setting)


@pytest.mark.parametrize("state", STATES)
def test_ten_megabytes_without_a_line_end_stay_bounded(state):
    """10 MB of junk without a line end, in any state, is never held in memory, and the
    session then carries on."""
    with LoggedFailures():
        setting = setting_for(state)
        conn = setting.connect(state)
        if state == "literal":
            conn.send(b"x" * 100)  # the APPEND's literal; the junk then ends its command
        piece = bytes(range(32, 127)) * (JUNK_PIECE // 95 + 1)
        written = 0
        for _ in range(JUNK_SIZE // JUNK_PIECE):
            written += len(conn.send(piece[:JUNK_PIECE]))
            check_bounded(conn)
        assert written < 4096
        assert not conn.closed
        still_usable(conn)
        other_client_works(setting)
