"""The TOML configuration: typed values, defaults, and one-line errors naming the key."""

import os

import pytest

from mailsuite.config import ConfigError, load_config, parse_config, parse_duration, parse_size

BASE = {"suite": {"domains": ["example.test"]}}


def config(tmp_path, **sections):
    document = {**BASE, **sections}
    return parse_config(document, path=str(tmp_path / "mailsuite.toml"))


def error(tmp_path, **sections) -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        config(tmp_path, **sections)
    return raised.value


def test_defaults_fill_every_section(tmp_path):
    """A config with only the domains gets the documented defaults everywhere."""
    c = config(tmp_path)
    assert c.store.backend == "sqlite"
    assert c.smtp.max_message_size == 50 * 1024 * 1024
    assert c.smtp.idle_timeout == 300
    assert c.pop3.idle_timeout == 600
    assert c.security.allow_plaintext_auth is False
    assert c.listen.enabled() == {}
    assert c.relay.queue_lifetime == 5 * 86400


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    """data_dir (given or default) and store.path resolve against the file's folder."""
    c = config(tmp_path, suite={"domains": ["example.test"], "data_dir": "data"})
    assert c.suite.data_dir == str(tmp_path / "data")
    assert c.store_path == str(tmp_path / "data" / "store")
    assert config(tmp_path).suite.data_dir == str(tmp_path / "var")


def test_unknown_key_is_named(tmp_path):
    """An unknown key stops with file and dotted key in the message."""
    e = error(tmp_path, smtp={"max_recipent": 5})
    assert str(e) == f"{tmp_path / 'mailsuite.toml'}: smtp.max_recipent: unknown key"


def test_unknown_section_is_named(tmp_path):
    """An unknown section is named."""
    assert error(tmp_path, imapd={}).key == "[imapd]"


def test_wrong_type_is_named(tmp_path):
    """A string where a boolean belongs is refused, naming the key."""
    e = error(tmp_path, security={"allow_plaintext_auth": "yes"})
    assert e.key == "security.allow_plaintext_auth"
    assert "true or false" in e.problem


def test_bad_endpoint_is_refused(tmp_path):
    """A malformed endpoint description names the listener."""
    assert error(tmp_path, listen={"smtp": "tcp:port=twentyfive"}).key == "listen.smtp"
    assert error(tmp_path, listen={"pop3": "carrier-pigeon:port=1"}).key == "listen.pop3"


def test_missing_domains_are_refused(tmp_path):
    """Without a mail domain the suite cannot start."""
    with pytest.raises(ConfigError) as raised:
        parse_config({}, path=str(tmp_path / "x.toml"))
    assert raised.value.key == "suite.domains"


def test_missing_seed_ldif_is_refused(tmp_path):
    """A seed_ldif that cannot be read is named."""
    e = error(tmp_path, directory={"seed_ldif": "absent.ldif"})
    assert e.key == "directory.seed_ldif"


def test_certificate_needs_its_key(tmp_path):
    """tls.certificate without tls.private_key is refused."""
    (tmp_path / "c.pem").write_text("x")
    assert error(tmp_path, tls={"certificate": "c.pem"}).key == "tls.private_key"


def test_recursion_clients_must_be_networks(tmp_path):
    """dns.recursion_clients takes CIDR networks."""
    assert error(tmp_path, dns={"recursion_clients": ["10.0.0.0/33"]}).key == "dns.recursion_clients"


def test_routes_take_host_port_or_local(tmp_path):
    """relay.routes values are "host:port" or "local"."""
    c = config(tmp_path, relay={"routes": {"B.test": "127.0.0.1:2526", "c.test": "local"}})
    assert c.relay.routes == {"b.test": "127.0.0.1:2526", "c.test": "local"}
    assert error(tmp_path, relay={"routes": {"b.test": "nowhere"}}).key == "relay.routes"


@pytest.mark.parametrize("text,expected", [("50M", 50 * 2**20), ("512K", 512 * 1024),
                                           ("1G", 2**30), (1000, 1000), ("10MB", 10 * 2**20)])
def test_sizes(text, expected):
    """Sizes take K, M and G suffixes."""
    assert parse_size(text) == expected


@pytest.mark.parametrize("text,expected", [("30s", 30), ("5m", 300), ("2h", 7200),
                                           ("5d", 432000), (90, 90), ("1w", 604800)])
def test_durations(text, expected):
    """Durations take s, m, h, d and w suffixes."""
    assert parse_duration(text) == expected


def test_syntax_error_is_one_line(tmp_path):
    """A TOML syntax error is reported with the file name."""
    path = tmp_path / "broken.toml"
    path.write_text("[suite\n")
    with pytest.raises(ConfigError) as raised:
        load_config(str(path))
    assert raised.value.key == "syntax"
    assert "\n" not in str(raised.value)


def test_missing_file_is_reported(tmp_path):
    """A config file that does not exist is one clear error."""
    with pytest.raises(ConfigError) as raised:
        load_config(str(tmp_path / "absent.toml"))
    assert "No such file" in str(raised.value)


def test_sample_config_documents_every_key():
    """Every key the schema knows appears in etc/mailsuite.toml."""
    from dataclasses import fields

    from mailsuite.config import _SECTIONS

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "etc", "mailsuite.toml")) as f:
        sample = f.read()
    for section, cls in _SECTIONS.items():
        assert f"[{section}]" in sample
        for spec in fields(cls):
            assert f"\n{spec.name} " in sample or f"\n{spec.name}=" in sample, f"{section}.{spec.name}"
