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


@pytest.mark.parametrize("section, too_short, rule", [
    ("smtp", "299s", "RFC 5321"),
    ("pop3", "9m", "RFC 1939"),
    ("imap", "29m", "RFC 9051"),
])
def test_idle_timeouts_below_the_rfc_minimum_are_refused(tmp_path, section, too_short, rule):
    """An idle timeout shorter than its protocol allows stops the start, naming key and RFC."""
    e = error(tmp_path, **{section: {"idle_timeout": too_short}})
    assert e.key == f"{section}.idle_timeout"
    assert rule in e.problem
    assert "\n" not in str(e)


def test_idle_timeouts_at_the_rfc_minimum_are_accepted(tmp_path):
    """Exactly 5, 10 and 30 minutes are allowed."""
    c = config(tmp_path, smtp={"idle_timeout": "5m"}, pop3={"idle_timeout": "10m"},
               imap={"idle_timeout": "30m"})
    assert (c.smtp.idle_timeout, c.pop3.idle_timeout, c.imap.idle_timeout) == (300, 600, 1800)


def test_security_defaults():
    """Throttling is on by default, sending rates are unlimited, output is capped."""
    s = parse_config(BASE, path="/x/mailsuite.toml").security
    assert (s.auth_failure_threshold, s.auth_failure_threshold_per_ip) == (5, 20)
    assert (s.auth_failure_window, s.auth_failure_delay, s.auth_max_delay) == (900, 1, 30)
    assert s.max_messages_per_hour == s.max_recipients_per_hour == 0
    assert s.max_messages_per_hour_per_ip == s.max_recipients_per_hour_per_ip == 0
    assert s.max_send_buffer == 64 * 1024 * 1024


def test_security_values_are_converted(tmp_path):
    """Durations, sizes and counts in [security] take their usual forms."""
    s = config(tmp_path, security={"auth_failure_delay": "0.2s", "auth_max_delay": "2s",
                                   "auth_failure_window": "1h", "max_send_buffer": "1M",
                                   "max_messages_per_hour": 5}).security
    assert (s.auth_failure_delay, s.auth_max_delay, s.auth_failure_window) == (0.2, 2, 3600)
    assert (s.max_send_buffer, s.max_messages_per_hour) == (1024 * 1024, 5)


def test_a_negative_rate_limit_is_refused(tmp_path):
    """0 means no limit; below 0 is an error naming the key."""
    e = error(tmp_path, security={"max_recipients_per_hour": -1})
    assert e.key == "security.max_recipients_per_hour"


def test_a_zero_throttle_threshold_is_refused(tmp_path):
    """Failed-login throttling cannot be switched off by a zero threshold."""
    assert error(tmp_path, security={"auth_failure_threshold": 0}).key == \
        "security.auth_failure_threshold"


def test_first_delay_longer_than_the_cap_is_refused(tmp_path):
    """auth_failure_delay above auth_max_delay makes no sense and is named."""
    e = error(tmp_path, security={"auth_failure_delay": "1m", "auth_max_delay": "30s"})
    assert e.key == "security.auth_failure_delay"
