"""
Building the DNS component's shared objects from the configuration: the Authority over the
generated and loaded zones, and the caching resolver the whole suite looks names up with.
"""

from __future__ import annotations

import dns.zone

from mailsuite.config import Config, ConfigError, split_host_port
from mailsuite.dns.authority import Authority
from mailsuite.dns.zones import (
    SRV_SERVICES,
    ZoneError,
    ZoneFileError,
    build_zones,
    read_dkim_keys,
)


def load_zones(config: Config, *, directory=None) -> list[dns.zone.Zone]:
    """
    The zones to serve: one per local mail domain ([suite] domains, and the directory's
    ``local_domains`` when a directory is given), with DKIM keys from <data_dir>/dkim and the
    zone files of [dns] zone_files.  Also what a reload passes to ``Authority.replace``.
    A problem raises ConfigError naming the key concerned, e.g.
    ``mailsuite.toml: dns.zone_files: /etc/zones/x.zone:4: unbalanced parentheses``.
    """
    domains = list(config.suite.domains)
    for domain in sorted(getattr(directory, "local_domains", ()) or ()):
        if domain not in domains:
            domains.append(domain)
    try:
        keys = read_dkim_keys(config.data_path("dkim"), domains, config.dns.dkim_selector)
    except ZoneError as e:
        raise ConfigError(config.path, "dns.dkim_selector", str(e)) from None
    try:
        return build_zones(
            domains=domains,
            hostname=config.suite.hostname,
            addresses=config.dns.addresses,
            ttl=config.dns.ttl,
            listen={key: getattr(config.listen, key) for key, _ in SRV_SERVICES},
            dkim_keys=keys,
            zone_files=config.dns.zone_files,
        )
    except ZoneFileError as e:
        raise ConfigError(config.path, "dns.zone_files", str(e)) from None
    except ZoneError as e:
        raise ConfigError(config.path, "suite.hostname", str(e)) from None


def build_authority(config: Config, *, directory=None) -> Authority:
    """An Authority serving load_zones(config)."""
    return Authority(load_zones(config, directory=directory))


def build_dns(config: Config, *, reactor, directory=None):
    """
    ``(authority, resolver)``: the Authority over the local zones, and a CachingResolver
    that answers from it for local names and forwards to [dns] upstream (or iterates from
    the root hints when there is none) for the rest.
    """
    from mailsuite.dns.resolver import CachingResolver

    authority = build_authority(config, directory=directory)
    resolver = CachingResolver(
        reactor,
        authority=authority,
        upstream=[split_host_port(server) for server in config.dns.upstream],
        root_hints=config.dns.root_hints or None,
        cache_size=config.dns.cache_size,
        timeout=config.dns.timeout,
    )
    return authority, resolver
