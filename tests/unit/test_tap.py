"""Assembly: `twistd mailsuite` builds one MultiService from the component plugins."""

import json
import os
import shutil

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailsuite.config import ConfigError, parse_config
from mailsuite.interfaces import IComponent, IStoreBackend
from mailsuite.limits import PerPeerLimit
from mailsuite.tap import build_suite, components, store_backends

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_config(tmp_path, **listen):
    shutil.copy(os.path.join(ROOT, "etc", "directory.ldif"), tmp_path / "directory.ldif")
    return parse_config({
        "suite": {"domains": ["example.test"], "hostname": "mail.example.test"},
        "listen": listen,
        "directory": {"seed_ldif": "directory.ldif"},
    }, path=str(tmp_path / "mailsuite.toml"))


def test_builtin_plugins_are_discovered():
    """The SMTP and POP3 components and both store backends are found with twisted.plugin."""
    names = {c.name for c in components()}
    assert {"smtp", "pop3"} <= names
    assert all(IComponent.providedBy(c) for c in components())
    assert {"sqlite", "maildir"} <= set(store_backends())
    assert all(IStoreBackend.providedBy(b) for b in store_backends().values())


def test_enabled_listeners_are_bound_and_reported(tmp_path):
    """Each enabled listener listens; implicit-TLS ones are wrapped in TLS; ports are reported."""
    config = make_config(tmp_path, smtp="tcp:port=10025:interface=127.0.0.1",
                         submissions="tcp:port=10465:interface=127.0.0.1",
                         pop3="tcp:port=10110:interface=127.0.0.1")
    reactor = MemoryReactorClock()
    suite = build_suite(config, reactor=reactor)
    suite.service.privilegedStartService()
    suite.service.startService()
    try:
        ports = {port: factory for port, factory, _, _ in reactor.tcpServers}
        assert set(ports) == {10025, 10465, 10110}
        assert all(isinstance(f, PerPeerLimit) for f in ports.values())
        assert isinstance(ports[10465].wrappedFactory, TLSMemoryBIOFactory)
        assert not isinstance(ports[10025].wrappedFactory, TLSMemoryBIOFactory)
        with open(config.data_path("run", "listening.json")) as f:
            report = json.load(f)
        assert set(report["listeners"]) == {"smtp", "submissions", "pop3"}
    finally:
        suite.service.stopService()
        _stop_pool(suite)
    assert not os.path.exists(config.data_path("run", "listening.json"))


def _stop_pool(suite):
    """The memory reactor never runs the store's close(), so stop the pool threads here."""
    from mailsuite.tap import _Resources

    for child in suite.service:
        if isinstance(child, _Resources):
            child.pool.stop()


def test_listener_without_component_stops_the_start(tmp_path, monkeypatch):
    """A listener no installed component serves is a ConfigError naming it."""
    import mailsuite.tap

    only_smtp = [c for c in components() if c.name == "smtp"]
    monkeypatch.setattr(mailsuite.tap, "components", lambda: only_smtp)
    config = make_config(tmp_path, smtp="tcp:port=10025", pop3="tcp:port=10110")
    with pytest.raises(ConfigError) as raised:
        build_suite(config, reactor=MemoryReactorClock())
    assert raised.value.key == "listen.pop3"


def test_self_signed_certificate_is_generated(tmp_path):
    """Without [tls] paths, a certificate appears in data_dir so STARTTLS can be offered."""
    config = make_config(tmp_path)
    build_suite(config, reactor=MemoryReactorClock())
    assert os.path.exists(config.data_path("tls", "selfsigned.crt"))
