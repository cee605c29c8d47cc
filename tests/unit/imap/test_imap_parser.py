"""The pure IMAP command parser, checked against the RFCs' own examples."""

from datetime import date, datetime, timedelta, timezone

import pytest

from mailsuite.imap.parser import (
    STAR,
    FetchItem,
    ParseError,
    RawCommand,
    SearchKey,
    Section,
    SelectParams,
    SequenceSet,
    parse_command,
)


def parse(line: bytes, *literals: bytes, utf8: bool = False):
    """Parse a command whose lines are separated by the literals' payloads."""
    lines = tuple(line.split(b"\r\n"))
    return parse_command(RawCommand(lines, literals), utf8=utf8)


# RFC 3501 §8: the client side of the sample session parses.
RFC3501_SESSION = [
    (b'a001 login mrc secret', "LOGIN", ("mrc", "secret")),
    (b"a002 select inbox", "SELECT", ("INBOX", SelectParams())),
    (b'a004 fetch 12 body[header]', "FETCH", None),
    (b'a005 store 12 +flags \\deleted', "STORE", None),
    (b'a006 logout', "LOGOUT", None),
]


@pytest.mark.parametrize("line,name,args", RFC3501_SESSION)
def test_rfc3501_sample_session_commands_parse(line, name, args):
    """Each client command of RFC 3501 §8 parses to its command name (and arguments)."""
    command = parse(line)
    assert command.name == name
    if args is not None:
        assert command.args == args


def test_fetch_full_is_expanded_to_its_items():
    """RFC 3501 §8: "a003 fetch 12 full" is FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY."""
    command = parse(b"a003 fetch 12 full")
    assert [i.name for i in command.args.items] == [
        "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"]
    assert command.args.sequence == SequenceSet(((12, 12),))


@pytest.mark.parametrize("line,item", [
    # RFC 3501 §6.4.5 example
    (b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])",
     FetchItem("BODY", Section((), "HEADER.FIELDS", ("DATE", "FROM")))),
    (b"A1 FETCH 1 BODY.PEEK[1.2.TEXT]<0.2048>",
     FetchItem("BODY", Section((1, 2), "TEXT"), (0, 2048), peek=True)),
    (b"A1 FETCH 1 BODY[3.MIME]", FetchItem("BODY", Section((3,), "MIME"))),
    (b"A1 FETCH 1 BODY[]", FetchItem("BODY", Section())),
    (b"A1 FETCH 1 BODY[4.2]", FetchItem("BODY", Section((4, 2)))),
    (b"A1 FETCH 1 BINARY.PEEK[1]<0.10>", FetchItem("BINARY", Section((1,)), (0, 10), True)),
    (b"A1 FETCH 1 BINARY.SIZE[2]", FetchItem("BINARY.SIZE", Section((2,)))),
    (b"A1 FETCH 1 BODY[HEADER.FIELDS.NOT (X-A)]",
     FetchItem("BODY", Section((), "HEADER.FIELDS.NOT", ("X-A",)))),
])
def test_fetch_sections_are_parsed(line, item):
    """Section specs, .PEEK and <partial> of RFC 3501 §6.4.5 and RFC 3516 are understood."""
    items = parse(line).args.items
    assert item in items


@pytest.mark.parametrize("line", [
    b"A1 FETCH 1 BODY[MIME]",          # MIME needs a part number
    b"A1 FETCH 1 BODY[1.HEADER",       # unterminated
    b"A1 FETCH 1 BODY[0]",             # part numbers are non-zero
    b"A1 FETCH 1 (FLAGS",              # unterminated list
    b"A1 FETCH 0 FLAGS",               # sequence numbers are non-zero
    b"A1 FETCH 1 FOO",                 # unknown item
    b"A1 FETCH 1 BODY[]<5.0>",         # partial length is non-zero
])
def test_malformed_fetch_is_refused(line):
    """Malformed FETCH arguments raise ParseError carrying the tag."""
    with pytest.raises(ParseError) as raised:
        parse(line)
    assert raised.value.tag == "A1"


def test_sequence_sets_with_star_and_reversed_ranges():
    """RFC 3501 §9: "*" is the largest number, and "4:2" means the same as "2:4"."""
    command = parse(b"A1 FETCH 4:2,7,9:* FLAGS")
    sequence = command.args.sequence
    assert sequence.ranges == ((4, 2), (7, 7), (9, STAR))
    assert sequence.positions(10) == [1, 2, 3, 6, 8, 9]


def test_saved_search_result_is_recognised():
    """RFC 5182: "$" stands for the saved search result."""
    assert parse(b"A1 FETCH $ FLAGS").args.sequence.saved


# RFC 3501 §6.4.4 examples
def test_search_rfc3501_example_flagged_since_from():
    """SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith" becomes an AND of three keys."""
    key = parse(b'A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"').args.key
    assert key == SearchKey("AND", (
        SearchKey("FLAG", ("\\Flagged",)),
        SearchKey("SINCE", (date(1994, 2, 1),)),
        SearchKey("NOT", (SearchKey("HEADER", ("from", "Smith")),)),
    ))


def test_search_rfc3501_example_or_with_literal_charset():
    """SEARCH CHARSET UTF-8 TEXT {n} takes its string from the literal."""
    args = parse(b"A284 SEARCH CHARSET UTF-8 TEXT {6}\r\n", "Bärli".encode()).args
    assert args.charset == "UTF-8"
    assert args.key == SearchKey("TEXT", ("Bärli",))


def test_search_unknown_charset_is_badcharset():
    """RFC 3501 §6.4.4: an unsupported charset gives [BADCHARSET] with the supported list."""
    with pytest.raises(ParseError) as raised:
        parse(b"A285 SEARCH CHARSET WHATEVER TEXT \"XXXXXX\"")
    assert raised.value.code.startswith("BADCHARSET")


def test_search_or_and_parenthesised_groups():
    """OR takes two keys; a parenthesised list is an AND."""
    key = parse(b"A1 SEARCH OR (SEEN LARGER 100) UID 2:4").args.key
    assert key.op == "OR"
    assert key.args[0] == SearchKey("AND", (SearchKey("FLAG", ("\\Seen",)),
                                            SearchKey("LARGER", (100,))))
    assert key.args[1] == SearchKey("UID", (SequenceSet(((2, 4),)),))


def test_search_nesting_is_bounded():
    """Deeply nested search keys give ParseError instead of exhausting the stack."""
    with pytest.raises(ParseError):
        parse(b"A1 SEARCH " + b"(" * 200 + b"ALL" + b")" * 200)


def test_search_negative_literal_is_a_parse_error():
    """FINDINGS: "SEARCH {-100}" is no literal header; it is simply malformed."""
    with pytest.raises(ParseError) as raised:
        parse(b"A1 SEARCH {-100}")
    assert raised.value.tag == "A1"


def test_store_forms():
    """RFC 3501 §6.4.6: FLAGS, +FLAGS.SILENT and a bare flag list."""
    args = parse(b"A003 STORE 2:4 +FLAGS.SILENT (\\Deleted $Junk)").args
    assert (args.mode, args.silent, args.flags) == ("add", True, ("\\Deleted", "$Junk"))
    args = parse(b"A003 UID STORE 5 -FLAGS \\Seen").args
    assert (args.mode, args.silent, args.flags) == ("remove", False, ("\\Seen",))


def test_uid_commands_are_named_with_their_prefix():
    """RFC 4315 §2.1 UID EXPUNGE and RFC 6851 UID MOVE parse as "UID ..." commands."""
    assert parse(b"A003 UID EXPUNGE 3000:3002").name == "UID EXPUNGE"
    command = parse(b"a UID MOVE 42:69 foo")
    assert command.name == "UID MOVE"
    assert command.args == (SequenceSet(((42, 69),)), "foo")


def test_append_with_flags_date_and_literal():
    """RFC 3501 §6.3.11 example: flags, a date-time and the literal message."""
    body = b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n\r\nHello\r\n"
    command = parse(b'A003 APPEND saved-messages (\\Seen) "07-Feb-1994 21:52:25 -0800" {%d}\r\n'
                    % len(body), body)
    name, (message,) = command.args
    assert name == "saved-messages"
    assert message.flags == ("\\Seen",)
    assert message.internal_date == datetime(1994, 2, 7, 21, 52, 25,
                                             tzinfo=timezone(timedelta(hours=-8)))
    assert message.data == body


def test_multiappend_takes_several_messages():
    """RFC 3502: APPEND repeats (flags) literal per message."""
    command = parse(b"A1 APPEND Drafts (\\Draft) {3+}\r\n {4+}\r\n", b"one", b"four")
    assert [m.data for m in command.args[1]] == [b"one", b"four"]


def test_literal_length_must_match():
    """A literal whose payload has another length is refused."""
    with pytest.raises(ParseError):
        parse(b"A1 LOGIN {5}\r\n pw", b"abc")


def test_login_with_literal_and_quoted():
    """RFC 3501 §6.2.3: user and password are astrings: atom, quoted or literal."""
    assert parse(b'A1 LOGIN {5}\r\n "p\\"w"', b"alice").args == ("alice", 'p"w')


def test_mailbox_names_in_modified_utf7_are_decoded():
    """RFC 3501 §5.1.3: "&ZeVnLIqe-" is 日本語; inbox in any case is INBOX."""
    assert parse(b"A1 SELECT &ZeVnLIqe-").args[0] == "日本語"
    assert parse(b"A1 SELECT inbox/Sub").args[0] == "INBOX/Sub"


def test_mailbox_names_are_utf8_once_enabled():
    """RFC 6855 §3: after ENABLE UTF8=ACCEPT names are UTF-8 and "&" is literal."""
    assert parse('A1 SELECT "Bär&Co"'.encode(), utf8=True).args[0] == "Bär&Co"


def test_list_extended_selection_and_return_options():
    """RFC 5258 / RFC 5819: selection options, several patterns and RETURN (STATUS ...)."""
    args = parse(b'A1 LIST (SUBSCRIBED) "" ("INBOX" "Sent/%") '
                 b"RETURN (CHILDREN STATUS (MESSAGES UNSEEN))").args
    assert args.selection == {"SUBSCRIBED"}
    assert args.patterns == ("INBOX", "Sent/%")
    assert args.returns == {"CHILDREN", "STATUS"}
    assert args.status_items == ("MESSAGES", "UNSEEN")


def test_create_with_special_use():
    """RFC 6154 §3: CREATE name (USE (\\Attr))."""
    assert parse(b"A1 CREATE MySpecialArchive (USE (\\Archive))").args == (
        "MySpecialArchive", "\\Archive")


def test_authenticate_with_initial_response():
    """RFC 4959 §3: SASL-IR puts the initial response after the mechanism."""
    assert parse(b"A1 AUTHENTICATE PLAIN AGFsaWNlAHB3").args == ("PLAIN", b"AGFsaWNlAHB3")


def test_id_parameters():
    """RFC 2971 §3.1: a list of string/nstring pairs, or NIL."""
    assert parse(b'a023 ID ("name" "sodr" "version" NIL)').args == {
        "name": "sodr", "version": None}
    assert parse(b"a023 ID NIL").args is None


@pytest.mark.parametrize("line", [
    b"",
    b"+tag NOOP",
    b"A1",
    b"A1 FROB",
    b"A1 NOOP extra",
    b"A1 LOGIN onlyuser",
    b'A1 LOGIN "unterminated',
    b"A1 SELECT",
    b"A1 STATUS INBOX (BOGUS)",
    b"A1 APPEND INBOX",
    b"A1 FETCH 4294967296 FLAGS",
])
def test_malformed_commands_raise_parse_error(line):
    """Malformed commands raise ParseError, never another exception."""
    with pytest.raises(ParseError):
        parse(line)
