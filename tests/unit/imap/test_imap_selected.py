"""The selected mailbox snapshot: sequence numbers, UIDs and untagged updates."""

from datetime import datetime, timezone

from mailsuite.imap.parser import STAR, SequenceSet
from mailsuite.imap.selected import Need, SelectedMailbox
from mailsuite.interfaces import Change, ChangeKind, MessageInfo

WHEN = datetime(2024, 1, 1, tzinfo=timezone.utc)


def info(uid, flags=(), modseq=1):
    return MessageInfo(uid, frozenset(flags), modseq, WHEN, 10)


def mailbox(*uids):
    return SelectedMailbox("INBOX", uidvalidity=1, uidnext=max(uids, default=0) + 1,
                           highestmodseq=1, messages=[info(u) for u in uids], read_only=False)


def test_uid_ranges_map_to_positions():
    """UID sets select by UID, "*" being the largest UID in use."""
    box = mailbox(3, 5, 9, 12)
    assert box.positions(SequenceSet(((4, 9),)), uid=True) == [1, 2]
    assert box.positions(SequenceSet(((STAR, STAR),)), uid=True) == [3]
    assert box.positions(SequenceSet(((13, STAR),)), uid=True) == [3]  # RFC 3501 §6.4.8


def test_sync_reports_expunges_before_exists_with_current_numbers():
    """Vanished messages give EXPUNGE with numbers valid at send time, then FETCH, EXISTS."""
    box = mailbox(1, 2, 3, 4)
    out = box.sync([info(1), info(3, ["\\Seen"], 2), info(5)], allow_expunge=True)
    assert out == [b"* 2 EXPUNGE\r\n", b"* 3 EXPUNGE\r\n",
                   b"* 2 FETCH (UID 3 FLAGS (\\Seen))\r\n", b"* 3 EXISTS\r\n"]
    assert box.uids == [1, 3, 5]


def test_expunges_wait_while_not_allowed():
    """RFC 3501 §7.4.1: during FETCH/STORE/SEARCH the expunged stay as ghosts."""
    box = mailbox(1, 2, 3)
    assert box.sync([info(1), info(3)], allow_expunge=False) == []
    assert box.uids == [1, 2, 3] and box.ghosts == {2}
    assert box.flush_expunges() == [b"* 2 EXPUNGE\r\n"]


def test_own_flag_change_needs_no_listing():
    """A FLAGS change already in the snapshot (the session's own STORE) is skipped."""
    box = mailbox(1, 2)
    box.update([info(2, ["\\Seen"], modseq=5)])
    box.note(Change(ChangeKind.FLAGS, "alice", "INBOX", (2,), 5))
    assert box.take_pending() is Need.NOTHING
    box.note(Change(ChangeKind.FLAGS, "alice", "INBOX", (1,), 6))
    assert box.take_pending() is Need.CHANGES
