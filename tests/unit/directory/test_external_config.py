"""The [directory] keys of the external LDAP backend and how the suite opens it."""

import pytest
from twisted.internet import task

from mailsuite.config import ConfigError, parse_config
from mailsuite.directory.external import ExternalDirectory
from mailsuite.interfaces import DirectoryError
from mailsuite.tap import open_directory


def config(tmp_path, **directory):
    document = {"suite": {"domains": ["example.test"], "data_dir": str(tmp_path / "var")},
                "directory": directory}
    return parse_config(document, path=str(tmp_path / "mailsuite.toml"))


def test_ldap_backend_without_url_names_the_url_key(tmp_path):
    """backend = "ldap" with no url stops the start naming directory.url."""
    with pytest.raises(ConfigError) as raised:
        config(tmp_path, backend="ldap")
    assert raised.value.key == "directory.url"


def test_url_with_other_scheme_is_refused(tmp_path):
    """A url that is not ldap:// or ldaps:// is a ConfigError naming directory.url."""
    with pytest.raises(ConfigError) as raised:
        config(tmp_path, backend="ldap", url="http://ldap.example.test")
    assert raised.value.key == "directory.url"


def test_user_filter_without_placeholder_is_refused(tmp_path):
    """A user_filter without %s is refused."""
    with pytest.raises(ConfigError) as raised:
        config(tmp_path, backend="ldap", url="ldap://h:389", user_filter="(uid=alice)")
    assert raised.value.key == "directory.user_filter"


def test_starttls_on_ldaps_is_refused(tmp_path):
    """starttls together with an ldaps:// url is a contradiction."""
    with pytest.raises(ConfigError) as raised:
        config(tmp_path, backend="ldap", url="ldaps://h:636", starttls=True)
    assert raised.value.key == "directory.starttls"


def test_ldap_keys_are_read(tmp_path):
    """The external-server keys are parsed into the DirectoryConfig."""
    c = config(tmp_path, backend="ldap", url="ldaps://ldap.example.test:636",
               bind_dn="cn=svc", bind_password="pw", timeout="5s", tls_verify=False)
    assert (c.directory.url, c.directory.bind_dn, c.directory.timeout) == (
        "ldaps://ldap.example.test:636", "cn=svc", 5.0)
    assert c.directory.tls_verify is False


def test_open_directory_builds_external_directory(tmp_path):
    """With a reactor, the ldap backend opens an ExternalDirectory for the local domains."""
    c = config(tmp_path, backend="ldap", url="ldap://127.0.0.1:1")
    directory = open_directory(c, reactor=task.Clock())
    assert isinstance(directory, ExternalDirectory)
    assert directory.local_domains == frozenset({"example.test"})


def test_admin_command_refuses_the_ldap_backend(tmp_path):
    """Without a reactor (the admin command) the ldap backend is one clear DirectoryError."""
    c = config(tmp_path, backend="ldap", url="ldap://127.0.0.1:1")
    with pytest.raises(DirectoryError):
        open_directory(c)
