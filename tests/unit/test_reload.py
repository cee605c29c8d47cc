"""kill -HUP: a new configuration applied to the running suite, or refused whole."""

import os
import shutil

import dns.name
import dns.rdatatype
from twisted.internet.testing import MemoryReactorClock

from mailsuite.config import load_config
from mailsuite.tap import build_suite
from mailsuite.testing.server import render_config
from tests.unit.test_tap import _stop_pool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_config(tmp_path, domains, **relay):
    sections = {
        "suite": {"domains": domains, "hostname": "mail.example.test", "data_dir": "var"},
        "listen": {"smtp": "tcp:port=10025:interface=127.0.0.1"},
        "directory": {"seed_ldif": "directory.ldif"},
        "relay": relay,
    }
    path = tmp_path / "mailsuite.toml"
    path.write_text(render_config(sections))
    return str(path)


def started_suite(tmp_path, domains):
    shutil.copy(os.path.join(ROOT, "etc", "directory.ldif"), tmp_path / "directory.ldif")
    config = load_config(write_config(tmp_path, domains))
    suite = build_suite(config, reactor=MemoryReactorClock(), install_signals=False)
    suite.service.privilegedStartService()
    suite.service.startService()
    return suite


def smtp_factory(suite):
    factory = suite.listeners["smtp"].factory
    while not hasattr(factory, "local_domains"):
        factory = factory.wrappedFactory
    return factory


def test_a_new_domain_is_accepted_served_and_relayed_after_a_reload(tmp_path):
    suite = started_suite(tmp_path, ["example.test"])
    try:
        assert "new.test" not in smtp_factory(suite).local_domains
        assert suite.authority.answer(dns.name.from_text("new.test"), dns.rdatatype.MX) is None
        write_config(tmp_path, ["example.test", "new.test"],
                     routes={"routed.test": "local"}, retry_min="1m")
        assert suite.reloader.reload()
        assert {"new.test", "routed.test"} <= suite.directory.local_domains
        assert {"new.test", "routed.test"} <= smtp_factory(suite).local_domains
        answer = suite.authority.answer(dns.name.from_text("new.test"), dns.rdatatype.MX)
        assert answer is not None and answer.answer
        assert suite.relay.config.retry_min == 60.0
        assert suite.config.suite.domains == ("example.test", "new.test")
    finally:
        suite.service.stopService()
        _stop_pool(suite)


def test_a_broken_configuration_is_refused_and_the_running_one_stays(tmp_path):
    suite = started_suite(tmp_path, ["example.test"])
    try:
        before = suite.config
        (tmp_path / "mailsuite.toml").write_text("[suite]\ndomains = [\"new.test\"]\nbogus = 1\n")
        assert not suite.reloader.reload()
        assert suite.config is before
        assert suite.directory.local_domains == frozenset({"example.test"})
    finally:
        suite.service.stopService()
        _stop_pool(suite)


def test_listener_changes_wait_for_a_restart(tmp_path):
    suite = started_suite(tmp_path, ["example.test"])
    try:
        text = (tmp_path / "mailsuite.toml").read_text().replace("10025", "10026")
        (tmp_path / "mailsuite.toml").write_text(text)
        assert suite.reloader.reload()
        assert suite.config.listen.smtp == "tcp:port=10025:interface=127.0.0.1"
    finally:
        suite.service.stopService()
        _stop_pool(suite)
