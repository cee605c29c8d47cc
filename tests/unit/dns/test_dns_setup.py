"""Building the DNS objects from the configuration (mailsuite.dns.setup)."""

import sys
import types

import dns.rdatatype
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from mailsuite.config import ConfigError, parse_config
from mailsuite.dns.authority import Authority
from mailsuite.dns.setup import build_authority, build_dns, load_zones

from .dns_fakes import name, write


def make_config(tmp_path, **dns_keys):
    return parse_config({
        "suite": {"domains": ["example.test"], "hostname": "mail.example.test",
                  "data_dir": "var"},
        "listen": {"imap": "tcp:port=10143:interface=127.0.0.1"},
        "dns": {"addresses": ["192.0.2.10"], "ttl": "10m", **dns_keys},
    }, path=str(tmp_path / "mailsuite.toml"))


def ask(authority, qname, rdtype):
    return authority.answer(name(qname), dns.rdatatype.from_text(rdtype))


def test_authority_from_config(tmp_path):
    """[suite] domains and hostname, [dns] addresses and ttl, and [listen] ports are used."""
    authority = build_authority(make_config(tmp_path))
    [a] = ask(authority, "mail.example.test", "A").answer
    assert a.ttl == 600 and a[0].address == "192.0.2.10"
    [srv] = ask(authority, "_imap._tcp.example.test", "SRV").answer
    assert srv[0].port == 10143
    # Listeners switched off in [listen] are published as not offered.
    [pop3] = ask(authority, "_pop3._tcp.example.test", "SRV").answer
    assert pop3[0].target == name(".")


def test_directory_domains_are_added(tmp_path):
    """The directory's local_domains get zones too."""
    directory = types.SimpleNamespace(local_domains=frozenset({"example.test", "extra.test"}))
    origins = {z.origin for z in load_zones(make_config(tmp_path), directory=directory)}
    assert origins == {name("example.test"), name("extra.test")}


def test_dkim_key_from_data_dir(tmp_path):
    """<data_dir>/dkim/<domain>/<dkim_selector>.key is published."""
    key_dir = tmp_path / "var" / "dkim" / "example.test"
    key_dir.mkdir(parents=True)
    (key_dir / "s1.key").write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    authority = build_authority(make_config(tmp_path, dkim_selector="s1"))
    [txt] = ask(authority, "s1._domainkey.example.test", "TXT").answer
    assert txt[0].strings[0].startswith(b"v=DKIM1; k=ed25519; p=")


def test_zone_files_are_loaded(tmp_path):
    """[dns] zone_files (relative to the config file) are served."""
    write(tmp_path, "extra.zone", "$ORIGIN extra.test.\n$TTL 60\n@ SOA ns hm 1 2 3 4 5\n"
          "@ NS ns\nns A 192.0.2.1\n")
    authority = build_authority(make_config(tmp_path, zone_files=["extra.zone"]))
    assert ask(authority, "ns.extra.test", "A").authoritative


def test_bad_zone_file_is_a_config_error(tmp_path):
    """A broken zone file stops the start with ConfigError naming the key, file and line."""
    path = write(tmp_path, "bad.zone", "$ORIGIN x.test.\n$TTL 60\nfoo BOGUS 1\n")
    with pytest.raises(ConfigError) as raised:
        build_authority(make_config(tmp_path, zone_files=["bad.zone"]))
    assert raised.value.key == "dns.zone_files"
    assert f"{path}:3: unknown rdatatype" in str(raised.value)


def test_bad_dkim_key_is_a_config_error(tmp_path):
    """An unusable DKIM key file stops the start with ConfigError naming the file."""
    key_dir = tmp_path / "var" / "dkim" / "example.test"
    key_dir.mkdir(parents=True)
    (key_dir / "mail.key").write_text("garbage")
    with pytest.raises(ConfigError) as raised:
        build_authority(make_config(tmp_path))
    assert raised.value.key == "dns.dkim_selector" and "mail.key" in str(raised.value)


def test_build_dns_passes_config_to_the_resolver(tmp_path, monkeypatch):
    """CachingResolver gets the reactor, the authority and the [dns] resolver settings."""
    made = []

    class CachingResolver:
        def __init__(self, reactor, **kwargs):
            made.append((reactor, kwargs))

    module = types.ModuleType("mailsuite.dns.resolver")
    module.CachingResolver = CachingResolver
    monkeypatch.setitem(sys.modules, "mailsuite.dns.resolver", module)
    hints = write(tmp_path, "named.root", ". 3600000 NS a.root-servers.net.\n")
    config = make_config(tmp_path, upstream=["192.0.2.53:53", "[2001:db8::53]:5353"],
                         root_hints="named.root", cache_size=77, timeout="3s")
    reactor = object()
    authority, resolver = build_dns(config, reactor=reactor)
    assert isinstance(authority, Authority) and isinstance(resolver, CachingResolver)
    [(given_reactor, kwargs)] = made
    assert given_reactor is reactor
    assert kwargs == {"authority": authority,
                      "upstream": [("192.0.2.53", 53), ("2001:db8::53", 5353)],
                      "root_hints": hints, "cache_size": 77, "timeout": 3.0}


def test_build_dns_without_root_hints_passes_none(tmp_path, monkeypatch):
    """An empty root_hints means the resolver's built-in list: None is passed."""
    module = types.ModuleType("mailsuite.dns.resolver")
    module.CachingResolver = lambda reactor, **kwargs: kwargs
    monkeypatch.setitem(sys.modules, "mailsuite.dns.resolver", module)
    _, kwargs = build_dns(make_config(tmp_path), reactor=None)
    assert kwargs["root_hints"] is None and kwargs["upstream"] == []
