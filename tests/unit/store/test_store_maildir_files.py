"""The Maildir++ file formats: dovecot-uidlist and dovecot-keywords parsing, file names."""

from mailsuite.store.maildir_files import (
    read_keywords,
    read_uidlist,
    size_from_base,
    split_filename,
    write_uidlist,
)


def test_uidlist_next_uid_is_max_of_header_and_records(tmp_path):
    """Records appended after the header raise the next UID above a stale N."""
    path = tmp_path / "dovecot-uidlist"
    path.write_text("3 V7 N2\n1 :a\n2 :b\n5 :c\n")
    parsed = read_uidlist(str(path))
    assert (parsed.uidvalidity, parsed.nextuid) == (7, 6)
    assert parsed.listed == {"a": 1, "b": 2, "c": 5} and parsed.clean


def test_uidlist_header_next_uid_wins_when_larger(tmp_path):
    """N above every record (the last ones expunged) is kept."""
    path = tmp_path / "dovecot-uidlist"
    path.write_text("3 V7 N40\n1 :a\n")
    assert read_uidlist(str(path)).nextuid == 40


def test_uidlist_extension_fields_skipped(tmp_path):
    """Dovecot's extension fields between UID and ':' do not end up in the file name."""
    path = tmp_path / "dovecot-uidlist"
    path.write_text("3 V7 N1 G123\n3 W1234 S1200 :1700.M1P2.host,S=1200\n")
    assert read_uidlist(str(path)).listed == {"1700.M1P2.host,S=1200": 3}


def test_uidlist_torn_last_line_marks_unclean(tmp_path):
    """A last record without its newline is dropped and the file flagged for rewriting."""
    path = tmp_path / "dovecot-uidlist"
    path.write_text("3 V7 N1\n1 :a\n2 :b")
    parsed = read_uidlist(str(path))
    assert parsed.listed == {"a": 1} and not parsed.clean


def test_uidlist_missing_or_foreign_version_unclean(tmp_path):
    """No file, or a version other than 3, gives no UIDVALIDITY and asks for a rewrite."""
    assert not read_uidlist(str(tmp_path / "none")).clean
    path = tmp_path / "dovecot-uidlist"
    path.write_text("1 7 1\n")
    parsed = read_uidlist(str(path))
    assert parsed.uidvalidity == 0 and not parsed.clean


def test_uidlist_write_round_trip(tmp_path):
    """What write_uidlist writes, read_uidlist reads back."""
    path = str(tmp_path / "dovecot-uidlist")
    write_uidlist(path, 9, 4, [(1, "x"), (3, "y")])
    parsed = read_uidlist(path)
    assert (parsed.uidvalidity, parsed.nextuid, parsed.listed) == (9, 4, {"x": 1, "y": 3})


def test_keywords_skip_out_of_order_lines(tmp_path):
    """Keyword lines must count up from 0; a gap ends the usable list."""
    path = tmp_path / "dovecot-keywords"
    path.write_text("0 $Work\n1 Later\n3 Gap\n")
    assert read_keywords(str(path)) == ["$Work", "Later"]


def test_split_filename_and_size():
    """A file name splits into base and ':2,' letters; S= gives the size."""
    assert split_filename("1.M2P3.h,S=12:2,FS") == ("1.M2P3.h,S=12", "FS")
    assert split_filename("1.M2P3.h") == ("1.M2P3.h", None)
    assert size_from_base("1.M2P3.h,S=12") == 12 and size_from_base("1.M2P3.h") is None
