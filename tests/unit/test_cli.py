"""The `mailsuite` admin command: every action, and one-line errors."""

import io
import os
import shutil

import pytest

from mailsuite.cli import main

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
