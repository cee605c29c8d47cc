"""Tests for mailsuite.smtp.command, the pure SMTP command-line parsers."""

import pytest

from mailsuite.smtp import replies
from mailsuite.smtp.command import (
    CommandError,
    decode_xtext,
    is_xtext,
    parse_auth,
    parse_bdat,
    parse_command,
    parse_helo,
    parse_mail,
    parse_rcpt,
)


def _error(call, *args, **kwargs):
    with pytest.raises(CommandError) as info:
        call(*args, **kwargs)
    return info.value.reply


def test_command_verb_is_upper_cased_and_argument_kept():
    """The verb is case-insensitive; the argument follows the first space."""
    command = parse_command(b"mail FROM:<a@b.example> SIZE=10")
    assert (command.verb, command.argument) == ("MAIL", "FROM:<a@b.example> SIZE=10")


def test_command_without_argument_has_empty_argument():
    """A bare verb has an empty argument."""
    assert parse_command(b"DATA").argument == ""


@pytest.mark.parametrize("line", [b"MAIL\x00FROM", b"NOOP \x01", b"\xff\xfe"])
def test_command_with_control_or_invalid_bytes_is_refused(line):
    """NUL, control characters and non-UTF-8 bytes give 500 5.5.2."""
    assert _error(parse_command, line) == replies.INVALID_CHARACTERS


@pytest.mark.parametrize("line", [b"", b"   ", b"12 x", b"M@IL FROM:<>"])
def test_command_with_bad_verb_is_unknown(line):
    """Something that is not a verb is an unrecognized command."""
    assert _error(parse_command, line) == replies.UNKNOWN_COMMAND


@pytest.mark.parametrize("name", ["client.example.net", "[192.0.2.1]", "[IPv6:2001:db8::1]", "localhost"])
def test_helo_accepts_domains_and_address_literals(name):
    """EHLO takes a domain or an address literal (RFC 5321 §4.1.1.1)."""
    assert parse_helo(name) == name


@pytest.mark.parametrize("name", ["", "bad name", "a..b", "-x.example", "x>y", "x;y"])
def test_helo_refuses_malformed_names(name):
    """A malformed EHLO argument gives 501 5.5.4."""
    assert _error(parse_helo, name) == replies.BAD_HELO


def test_mail_simple_path():
    """MAIL FROM:<a@b> gives the sender with the domain lower-cased."""
    mail = parse_mail("FROM:<Alice@Example.TEST>")
    assert mail.sender == "Alice@example.test"
    assert (mail.size, mail.body, mail.smtputf8) == (None, "7BIT", False)


def test_mail_null_sender():
    """The null reverse-path <> is the empty sender."""
    assert parse_mail("FROM:<>").sender == ""


def test_mail_tolerates_space_after_colon():
    """'MAIL FROM: <a@b>' is accepted."""
    assert parse_mail("FROM: <a@b.example>").sender == "a@b.example"


def test_mail_source_route_is_dropped():
    """A source route is ignored (RFC 5321 §4.1.2 / Appendix C)."""
    assert parse_mail("FROM:<@relay.example,@x.example:a@b.example>").sender == "a@b.example"


def test_mail_quoted_local_part():
    """A quoted local part may hold spaces and @."""
    assert parse_mail('FROM:<"a b@c"@d.example>').sender == '"a b@c"@d.example'


def test_mail_parameters_are_parsed():
    """SIZE, BODY, SMTPUTF8, RET, ENVID and AUTH are understood."""
    mail = parse_mail("FROM:<a@b.example> SIZE=1000 BODY=8bitmime RET=HDRS ENVID=x+2By AUTH=<>")
    assert mail.size == 1000
    assert mail.body == "8BITMIME"
    assert mail.params["ENVID"] == "x+2By"
    assert mail.params["RET"] == "HDRS"


@pytest.mark.parametrize(
    "argument",
    [
        "FROM:a@b.example",
        "FROM:<a@b.example",
        "FROM:<a@@b.example>",
        "FROM:<a@b.example>x",
        "FROM:<a b@c.example>",
        "FROM:<.a@b.example>",
        "FROM:<a@b..example>",
        "TO:<a@b.example>",
        "FROM:<" + "a" * 65 + "@b.example>",
    ],
)
def test_mail_bad_path_is_501_517(argument):
    """A malformed reverse-path gives 501 5.1.7."""
    assert _error(parse_mail, argument) == replies.BAD_SENDER_SYNTAX


def test_mail_unknown_parameter_is_555():
    """An unknown MAIL parameter gives 555 5.5.4."""
    assert _error(parse_mail, "FROM:<a@b.example> FOO=bar") == replies.UNKNOWN_PARAMETER


@pytest.mark.parametrize(
    "params",
    ["SIZE=abc", "SIZE", "BODY=9BIT", "SMTPUTF8=yes", "RET=ALL", "ENVID=a=b", "SIZE=1 SIZE=2", "=x"],
)
def test_mail_bad_parameter_value_is_501_554(params):
    """A known parameter with a bad value, or repeated, gives 501 5.5.4."""
    assert _error(parse_mail, "FROM:<a@b.example> " + params) == replies.BAD_SYNTAX


def test_mail_non_ascii_sender_needs_smtputf8():
    """A UTF-8 address without SMTPUTF8 gives 553 5.6.7 (RFC 6531 §3.5)."""
    assert _error(parse_mail, "FROM:<jörg@bücher.example>") == replies.NON_ASCII_ADDRESS


def test_mail_non_ascii_sender_with_smtputf8():
    """A UTF-8 address with SMTPUTF8 is accepted."""
    mail = parse_mail("FROM:<jörg@bücher.example> SMTPUTF8")
    assert mail.sender == "jörg@bücher.example" and mail.smtputf8


def test_rcpt_simple_path():
    """RCPT TO:<a@b> gives the recipient."""
    assert parse_rcpt("TO:<bob@Example.test>", smtputf8=False).recipient == "bob@example.test"


def test_rcpt_bare_postmaster():
    """<Postmaster> without domain is recognized (RFC 5321 §4.5.1)."""
    rcpt = parse_rcpt("TO:<Postmaster>", smtputf8=False)
    assert rcpt.is_bare_postmaster


@pytest.mark.parametrize("argument", ["TO:bob", "TO:<bob>", "TO:<>", "FROM:<a@b.example>", "TO:<a@b.example"])
def test_rcpt_bad_path_is_501_513(argument):
    """A malformed forward-path gives 501 5.1.3."""
    assert _error(parse_rcpt, argument, smtputf8=False) == replies.BAD_RECIPIENT_SYNTAX


def test_rcpt_dsn_parameters():
    """NOTIFY and ORCPT are accepted (RFC 3461)."""
    rcpt = parse_rcpt("TO:<a@b.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+40b", smtputf8=False)
    assert rcpt.params == {"NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;a+40b"}


@pytest.mark.parametrize("params", ["NOTIFY=NEVER,SUCCESS", "NOTIFY=SOMETIMES", "ORCPT=rfc822", "ORCPT=;x"])
def test_rcpt_bad_dsn_parameters(params):
    """Malformed NOTIFY or ORCPT give 501 5.5.4."""
    assert _error(parse_rcpt, "TO:<a@b.example> " + params, smtputf8=False) == replies.BAD_SYNTAX


def test_rcpt_unknown_parameter_is_555():
    """An unknown RCPT parameter gives 555 5.5.4."""
    assert _error(parse_rcpt, "TO:<a@b.example> X=1", smtputf8=False) == replies.UNKNOWN_PARAMETER


def test_rcpt_non_ascii_needs_smtputf8_transaction():
    """A UTF-8 recipient is refused unless MAIL had SMTPUTF8."""
    assert _error(parse_rcpt, "TO:<ö@example.test>", smtputf8=False) == replies.NON_ASCII_ADDRESS
    assert parse_rcpt("TO:<ö@example.test>", smtputf8=True).recipient == "ö@example.test"


@pytest.mark.parametrize(
    "argument, expected", [("0 LAST", (0, True)), ("1000", (1000, False)), ("5 last", (5, True))]
)
def test_bdat_arguments(argument, expected):
    """BDAT takes a size and an optional LAST (RFC 3030 §2)."""
    bdat = parse_bdat(argument)
    assert (bdat.size, bdat.last) == expected


@pytest.mark.parametrize("argument", ["", "x", "-1", "10 FIRST", "1 LAST more", "1" * 21])
def test_bdat_bad_arguments(argument):
    """A BDAT without a valid size gives 501 5.5.4."""
    assert _error(parse_bdat, argument) == replies.BAD_SYNTAX


def test_auth_mechanism_and_initial_response():
    """AUTH splits mechanism (upper-cased) and initial response."""
    assert parse_auth("plain AGEAYg==") == ("PLAIN", b"AGEAYg==")
    assert parse_auth("LOGIN") == ("LOGIN", None)


def test_auth_with_too_many_words_is_refused():
    """AUTH with three words gives 501 5.5.4."""
    assert _error(parse_auth, "PLAIN a b") == replies.BAD_SYNTAX


def test_xtext_roundtrip():
    """xtext "+XX" escapes decode to their characters; "=" is not xtext."""
    assert is_xtext("a+2Bb") and not is_xtext("a=b") and not is_xtext("a+2")
    assert decode_xtext("a+2Bb+3D") == "a+b="
