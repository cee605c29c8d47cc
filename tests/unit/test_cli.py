"""The `mailsuite` admin command: every action, and one-line errors."""

import io
import os
import shutil
from datetime import datetime, timezone

import pytest
from twisted.internet import defer

from mailsuite.cli import main
from mailsuite.interfaces import Envelope

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def config_path(tmp_path):
    shutil.copy(os.path.join(ROOT, "etc", "directory.ldif"), tmp_path / "directory.ldif")
    path = tmp_path / "mailsuite.toml"
    path.write_text(
        '[suite]\ndomains = ["example.test"]\ndata_dir = "var"\n'
        '[directory]\nbase_dn = "dc=example,dc=test"\nseed_ldif = "directory.ldif"\n'
        '[listen]\nsmtp = "tcp:port=10025:interface=127.0.0.1"\n'
    )
    return str(path)


def run(config_path, *args, stdin=""):
    out, err = io.StringIO(), io.StringIO()
    status = main(["--config", config_path, *args], stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


def test_user_add_list_passwd_del(config_path):
    """A user is added, listed, gets a new password, and is removed."""
    status, out, err = run(config_path, "user", "add", "carol@example.test", "--name", "Carol",
                           "--password-stdin", stdin="first-password\n")
    assert (status, err) == (0, "")
    assert "carol@example.test" in run(config_path, "user", "list")[1]

    assert run(config_path, "user", "passwd", "carol@example.test", "--password-stdin",
               stdin="second-password\n")[0] == 0
    from mailsuite.config import load_config
    from mailsuite.tap import open_directory

    directory = open_directory(load_config(config_path))
    assert directory.check_password("carol@example.test", "second-password") is not None
    assert directory.check_password("carol@example.test", "first-password") is None

    assert run(config_path, "user", "del", "carol@example.test")[0] == 0
    assert "carol@example.test" not in run(config_path, "user", "list")[1]


def test_alias_add_and_del(config_path):
    """An alias delivers to its target until it is removed."""
    assert run(config_path, "alias", "add", "sales@example.test", "bob@example.test")[0] == 0
    assert "sales@example.test" in run(config_path, "user", "list")[1]
    assert run(config_path, "alias", "del", "sales@example.test")[0] == 0
    assert "sales@example.test" not in run(config_path, "user", "list")[1]


def test_directory_export_then_import_round_trips(config_path, tmp_path):
    """An exported directory imports again, and carries hashed passwords only."""
    exported = tmp_path / "out.ldif"
    assert run(config_path, "directory", "export", str(exported))[0] == 0
    text = exported.read_text()
    assert "uid=alice" in text
    assert "alice-password" not in text
    status, out, _ = run(config_path, "directory", "import", str(exported))
    assert status == 0
    assert out.startswith("imported ")


def test_errors_are_one_line_and_change_nothing(config_path):
    """A duplicate user, a foreign domain or a missing password: one line, status 1."""
    before = run(config_path, "user", "list")[1]
    for args, stdin in [(("user", "add", "alice@example.test", "--password-stdin"), "x\n"),
                        (("user", "add", "eve@elsewhere.test", "--password-stdin"), "x\n"),
                        (("user", "add", "eve@example.test", "--password-stdin"), "\n"),
                        (("user", "del", "nobody@example.test"), ""),
                        (("directory", "import", "/nonexistent.ldif"), "")]:
        status, _, err = run(config_path, *args, stdin=stdin)
        assert status == 1, args
        assert err.startswith("mailsuite: ") and err.count("\n") == 1, err
    assert run(config_path, "user", "list")[1] == before


def test_password_is_not_read_from_a_pipe_without_the_flag(config_path):
    """Without a terminal and without --password-stdin, the command refuses rather than guess."""
    status, _, err = run(config_path, "user", "add", "eve@example.test")
    assert status == 1
    assert "--password-stdin" in err


def test_queue_list_on_an_empty_queue(config_path):
    """queue list says so when nothing is queued; deleting an unknown id fails."""
    assert "empty" in run(config_path, "queue", "list")[1]
    assert run(config_path, "queue", "delete", "20260101000000-0123456789abcdef")[0] == 1
    assert run(config_path, "queue", "delete", "../../etc/passwd")[0] == 1


def test_check_reports_listeners(config_path):
    """check validates and prints the listeners."""
    status, out, _ = run(config_path, "check")
    assert status == 0
    assert "tcp:port=10025:interface=127.0.0.1" in out


def test_bad_config_is_one_line(tmp_path):
    """A config error is reported the same way as any other."""
    path = tmp_path / "bad.toml"
    path.write_text('[suite]\ndomains = ["example.test"]\nwhatever = 1\n')
    status, _, err = run(str(path), "user", "list")
    assert status == 1
    assert err == f"mailsuite: {path}: suite.whatever: unknown key\n"


# ---------------------------------------------------------------------- queue

QUEUED = (b"From: Alice <alice@example.test>\r\nTo: dave@remote.test\r\n"
          b"Subject: figures\r\n\r\nThe figures.\r\n")


def open_test_queue(config_path):
    from mailsuite.config import load_config
    from mailsuite.tap import open_queue

    return open_queue(load_config(config_path),
                      runner=lambda f, *a, **k: defer.maybeDeferred(f, *a, **k))


def queue_message(config_path, recipients=("dave@remote.test",)):
    queued = []
    envelope = Envelope(mail_from="alice@example.test", id="tx9",
                        received_at=datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc))
    open_test_queue(config_path).enqueue(envelope, list(recipients), QUEUED).addCallback(
        queued.append)
    return queued[0]


def record_attempt(config_path, queue_id, error="451 4.3.0 mailbox busy, come back later"):
    def change(record):
        record["attempts"] = 2
        record["next_attempt"] = datetime(2030, 1, 1, tzinfo=timezone.utc)
        record["recipients"][0].update(attempts=2, last_error=error, last_code=451,
                                       status_code="4.3.0", remote_mta="mx.remote.test")
        if len(record["recipients"]) > 1:
            record["recipients"][1]["status"] = "delivered"

    open_test_queue(config_path).update(queue_id, change)


def test_queue_list_shows_pending_count_and_last_error(config_path):
    """Each line: id, size, arrival, sender, pending/total, recipients, short last error."""
    queue_id = queue_message(config_path, ["dave@remote.test", "erin@remote.test"])
    record_attempt(config_path, queue_id, error="451 4.3.0 " + "very " * 40 + "busy")
    status, out, err = run(config_path, "queue", "list")
    assert (status, err) == (0, "")
    fields = out.rstrip("\n").split("\t")
    assert fields[0] == queue_id
    assert fields[1] == str(len(QUEUED))
    assert fields[3] == "<alice@example.test>"
    assert fields[4] == "1/2 pending"
    assert fields[5] == "dave@remote.test, erin@remote.test"
    assert fields[6].startswith("451 4.3.0 very") and fields[6].endswith("...")
    assert len(fields[6]) <= 60


def test_queue_show_prints_envelope_recipients_and_headers(config_path):
    """show: id, sender, arrival, size, attempts, next attempt, recipients, then headers."""
    queue_id = queue_message(config_path, ["dave@remote.test", "erin@remote.test"])
    record_attempt(config_path, queue_id)
    status, out, err = run(config_path, "queue", "show", queue_id)
    assert (status, err) == (0, "")
    assert f"id:            {queue_id}" in out
    assert "sender:        <alice@example.test>" in out
    assert "arrival:       2024-05-01 12:00:00+00:00" in out
    assert f"size:          {len(QUEUED)}" in out
    assert "attempts:      2" in out
    assert "next attempt:  2030-01-01 00:00:00+00:00" in out
    assert "recipients:    1 of 2 pending" in out
    assert "  dave@remote.test  pending, 2 attempts, 4.3.0, at mx.remote.test" in out
    assert "    last error: 451 4.3.0 mailbox busy, come back later" in out
    assert "  erin@remote.test  delivered" in out
    headers = out.split("\n\n", 1)[1]
    assert headers == ("From: Alice <alice@example.test>\nTo: dave@remote.test\n"
                       "Subject: figures\n")


def test_queue_show_keeps_control_characters_off_the_terminal(config_path):
    """An error text from a remote server cannot send escape sequences to the terminal."""
    queue_id = queue_message(config_path)
    record_attempt(config_path, queue_id, error="550 \x1b[2Jgone\r\nX")
    out = run(config_path, "queue", "show", queue_id)[1]
    assert "\x1b" not in out and "\r" not in out
    assert "last error: 550  [2Jgone  X" in out


def test_queue_flush_all_and_one(config_path):
    """flush makes entries due now and says how many; with an id, just that one."""
    first = queue_message(config_path)
    second = queue_message(config_path)
    record_attempt(config_path, first)
    record_attempt(config_path, second)
    queue = open_test_queue(config_path)
    assert run(config_path, "queue", "flush", first) == (
        0, "1 entry will be retried now\n", "")
    assert queue.get(first).next_attempt.year < 2030
    assert queue.get(second).next_attempt.year == 2030
    assert queue.wakeup_stamp() is not None
    assert run(config_path, "queue", "flush") == (0, "2 entries will be retried now\n", "")
    assert queue.get(second).next_attempt.year < 2030


def test_queue_bounce_marks_the_entry(config_path):
    """bounce asks the relay to return the message and says so."""
    queue_id = queue_message(config_path)
    status, out, err = run(config_path, "queue", "bounce", queue_id)
    assert (status, out, err) == (0, f"{queue_id} will be returned to the sender\n", "")
    assert open_test_queue(config_path).get(queue_id).bounce_requested


def test_queue_delete_removes_the_entry(config_path):
    """delete removes the entry without a word to the sender."""
    queue_id = queue_message(config_path)
    assert run(config_path, "queue", "delete", queue_id) == (0, f"deleted {queue_id}\n", "")
    assert open_test_queue(config_path).entries() == []


@pytest.mark.parametrize("action", ["show", "flush", "bounce", "delete"])
@pytest.mark.parametrize("queue_id", ["20260101000000-0123456789abcdef", "../../etc/passwd"])
def test_queue_actions_on_a_missing_or_malformed_id_fail_in_one_line(config_path, action,
                                                                     queue_id):
    """An unknown or malformed id: one line on stderr, status 1, nothing on stdout."""
    status, out, err = run(config_path, "queue", action, queue_id)
    assert (status, out) == (1, "")
    assert err.startswith("mailsuite: ") and err.count("\n") == 1, err


# ---------------------------------------------------------------------- check --store


def store_dir(config_path, *parts):
    from mailsuite.config import load_config

    return os.path.join(load_config(config_path).store_path, *parts)


def fill_store(config_path, count=2):
    from mailsuite.config import load_config
    from mailsuite.store.base import inline_runner
    from mailsuite.tap import open_store

    store = open_store(load_config(config_path), runner=inline_runner)
    for n in range(count):
        store.append("alice", "INBOX", b"Subject: %d\r\n\r\nbody\r\n" % n)
    store.close()


def test_check_store_on_a_sound_store_exits_zero(config_path):
    """check --store on an undamaged store prints one summary line and exits 0."""
    fill_store(config_path)
    status, out, err = run(config_path, "check", "--store")
    assert (status, err) == (0, "")
    assert out == (f"sqlite store {store_dir(config_path)}: 2 messages in 5 mailboxes, "
                   f"no problems\n")


def test_check_store_reports_problems_and_exits_one(config_path):
    """Each problem is one line; the summary counts them; the status is 1; nothing changes."""
    fill_store(config_path)
    leftover = store_dir(config_path, "tmp", "abc123")
    with open(leftover, "wb") as f:
        f.write(b"partial")
    status, out, err = run(config_path, "check", "--store")
    assert (status, err) == (1, "")
    assert out.splitlines() == [
        "problem: tmp: leftover of an interrupted write: tmp/abc123",
        f"sqlite store {store_dir(config_path)}: 2 messages in 5 mailboxes, 1 problem found, "
        f"1 of them repairable with --repair",
    ]
    assert os.path.exists(leftover)


def test_check_store_repair_says_what_it_did(config_path):
    """--repair prints the problems, then each repair, then the summary; a second check is
    clean."""
    fill_store(config_path)
    with open(store_dir(config_path, "tmp", "abc123"), "wb") as f:
        f.write(b"partial")
    status, out, err = run(config_path, "check", "--store", "--repair")
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "problem: tmp: leftover of an interrupted write: tmp/abc123"
    assert lines[1] == "repaired: removed tmp/abc123"
    assert lines[2].endswith("1 problem found, 0 remain")
    assert run(config_path, "check", "--store")[0] == 0


def test_check_store_repair_exits_one_when_damage_remains(config_path):
    """Damage the repair leaves alone is listed as remaining, with status 1."""
    fill_store(config_path, count=1)
    [bucket] = os.listdir(store_dir(config_path, "messages", "alice"))
    [name] = os.listdir(store_dir(config_path, "messages", "alice", bucket))
    with open(store_dir(config_path, "messages", "alice", bucket, name), "ab") as f:
        f.write(b"extra")
    status, out, _ = run(config_path, "check", "--store", "--repair")
    assert status == 1
    assert [line.split(":")[0] for line in out.splitlines()[:-1]] == ["problem", "remains"]
    assert out.splitlines()[-1].endswith("1 problem found, 1 remain")


def test_check_store_checks_a_maildir_store(config_path):
    """With [store] backend = "maildir" the maildir check runs and repairs."""
    with open(config_path, "a") as f:
        f.write('[store]\nbackend = "maildir"\n')
    fill_store(config_path)
    inbox = store_dir(config_path, "alice", "Maildir")
    with open(os.path.join(inbox, "new", "1700000000.M1P1Q1.host,S=4"), "wb") as f:
        f.write(b"abcd")
    status, out, _ = run(config_path, "check", "--store")
    assert status == 1
    assert "problem: alice/INBOX: file 1700000000.M1P1Q1.host,S=4 is not in dovecot-uidlist" \
        in out
    status, out, _ = run(config_path, "check", "--store", "--repair")
    assert status == 0
    assert "repaired: alice/INBOX: file 1700000000.M1P1Q1.host,S=4 added as UID 3" in out
    assert out.splitlines()[-1].startswith("maildir store ")


def test_check_store_refuses_while_the_server_runs(config_path):
    """With a live server pid in run/listening.json the check refuses in one line."""
    import json
    import subprocess
    import sys

    from mailsuite.config import load_config

    data_dir = load_config(config_path).suite.data_dir
    os.makedirs(os.path.join(data_dir, "run"), exist_ok=True)
    server = subprocess.Popen([sys.executable, "-c",
                               "import time; print('ready', flush=True); time.sleep(60)",
                               "mailsuite"], stdout=subprocess.PIPE)
    try:
        assert server.stdout.readline() == b"ready\n"
        with open(os.path.join(data_dir, "run", "listening.json"), "w") as f:
            json.dump({"pid": server.pid, "listeners": {}}, f)
        status, out, err = run(config_path, "check", "--store", "--repair")
        assert (status, out) == (1, "")
        assert err == (f"mailsuite: the server is running (pid {server.pid}): stop it before "
                       f"checking the store\n")
    finally:
        server.kill()
        server.wait()
        server.stdout.close()
    # Killed, it leaves the file behind: a dead pid does not stop the check.
    assert run(config_path, "check", "--store")[0] == 0


def test_check_repair_without_store_is_refused(config_path):
    """--repair alone is an error, not a silent config check."""
    status, out, err = run(config_path, "check", "--repair")
    assert (status, out) == (1, "")
    assert err == "mailsuite: --repair goes with --store\n"
