"""
The configuration: one TOML file read once into typed, validated objects.

Every key has a default (see etc/mailsuite.toml, which documents each one).  Unknown sections
or keys, values of the wrong type and unusable paths or endpoints raise ConfigError, whose
message is one line naming the file and the key.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field, fields
from typing import Any, Callable


class ConfigError(Exception):
    """The configuration cannot be used; ``str(error)`` is one line naming file and key."""

    def __init__(self, path: str, key: str, problem: str):
        super().__init__(f"{path}: {key}: {problem}")
        self.path = path
        self.key = key
        self.problem = problem


class _Invalid(ValueError):
    """Raised by a converter; turned into a ConfigError naming the key."""


# --------------------------------------------------------------------------- value converters


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_kind(value)}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {_kind(value)}")
    return value


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _Invalid(f"expected a positive whole number, got {value!r}")
    return value


def _count(value: Any) -> int:
    """A whole number, 0 or more (0 usually meaning "no limit")."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Invalid(f"expected a whole number, 0 or more, got {value!r}")
    return value


def _string_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Invalid(f"expected a list of strings, got {_kind(value)}")
    return tuple(value)


_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(value: Any) -> int:
    """Bytes from ``10485760``, ``"10M"``, ``"512K"`` or ``"1G"``."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)i?B?\s*", str(value), re.IGNORECASE)
    if not isinstance(value, str) or not match or int(match.group(1)) == 0:
        raise _Invalid(f"expected a size such as 50M, got {value!r}")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]


def _optional_size(value: Any) -> int | None:
    """A size, or "" for none (no limit)."""
    return None if value == "" else parse_size(value)


def parse_duration(value: Any) -> float:
    """Seconds from ``300``, ``"300s"``, ``"5m"``, ``"2h"``, ``"5d"`` or ``"1w"``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", str(value))
    if not isinstance(value, str) or not match or float(match.group(1)) == 0:
        raise _Invalid(f"expected a duration such as 30s, 5m, 2h or 5d, got {value!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def _host_port(value: Any) -> str:
    value = _string(value)
    if value and _split_host_port(value) is None:
        raise _Invalid(f"expected host:port, got {value!r}")
    return value


def _split_host_port(value: str) -> tuple[str, int] | None:
    match = re.fullmatch(r"\[?([^\[\]]+?)\]?:(\d{1,5})", value)
    if not match or not 0 <= int(match.group(2)) <= 65535:
        return None
    return match.group(1), int(match.group(2))


def split_host_port(value: str) -> tuple[str, int]:
    """("host", port) from a validated "host:port" or "[v6]:port" value."""
    parts = _split_host_port(value)
    if parts is None:
        raise ValueError(f"not host:port: {value!r}")
    return parts


def _host_port_list(value: Any) -> tuple[str, ...]:
    return tuple(_host_port(v) for v in _string_list(value))


def _networks(value: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(v, strict=False) for v in _string_list(value))
    except ValueError as e:
        raise _Invalid(str(e)) from None


def _addresses(value: Any) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    try:
        return tuple(ipaddress.ip_address(v) for v in _string_list(value))
    except ValueError as e:
        raise _Invalid(str(e)) from None


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise _Invalid(f"expected a port number from 1 to 65535, got {value!r}")
    return value


def _domains(value: Any) -> tuple[str, ...]:
    domains = _string_list(value)
    if not domains:
        raise _Invalid("at least one mail domain is needed")
    for domain in domains:
        if not re.fullmatch(r"(?=.{1,253}$)([A-Za-z0-9-]{1,63}\.)*[A-Za-z0-9-]{1,63}", domain):
            raise _Invalid(f"not a domain name: {domain!r}")
    return tuple(d.lower() for d in domains)


def _routes(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _Invalid(f"expected a table of domain = \"host:port\" or \"local\", got {_kind(value)}")
    routes = {}
    for domain, target in value.items():
        if not isinstance(target, str) or (target != "local" and _split_host_port(target) is None):
            raise _Invalid(f"route for {domain!r} must be \"host:port\" or \"local\"")
        routes[domain.lower()] = target
    return routes


def _one_of(*choices: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in choices:
            raise _Invalid(f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    return convert


def _kind(value: Any) -> str:
    return {str: "a string", bool: "a boolean", int: "a number", float: "a number",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _key(convert: Callable[[Any], Any], default: Any, *, path: bool = False):
    """A config field: its converter, its default, and whether it is a path to resolve."""
    factory = (lambda: default) if isinstance(default, (dict, list)) else None
    metadata = {"convert": convert, "path": path}
    if factory:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class SuiteConfig:
    hostname: str = _key(_string, "")
    domains: tuple[str, ...] = _key(_domains, ())
    data_dir: str = _key(_string, "var", path=True)


LISTENERS = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s",
             "ldap", "ldaps")

#: Listeners whose connections are TLS from the first byte.
IMPLICIT_TLS_LISTENERS = frozenset({"submissions", "imaps", "pop3s", "ldaps"})


@dataclass(frozen=True)
class ListenConfig:
    smtp: str = _key(_string, "")
    submission: str = _key(_string, "")
    submissions: str = _key(_string, "")
    imap: str = _key(_string, "")
    imaps: str = _key(_string, "")
    pop3: str = _key(_string, "")
    pop3s: str = _key(_string, "")
    ldap: str = _key(_string, "")
    ldaps: str = _key(_string, "")
    dns: str = _key(_host_port, "")

    def enabled(self) -> dict[str, str]:
        """The stream listeners that are switched on, name -> endpoint description."""
        return {name: getattr(self, name) for name in LISTENERS if getattr(self, name)}


@dataclass(frozen=True)
class TLSConfig:
    certificate: str = _key(_string, "", path=True)
    private_key: str = _key(_string, "", path=True)


def _ldap_url(value: Any) -> str:
    value = _string(value)
    if value and not re.fullmatch(r"ldaps?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?/?",
                                  value):
        raise _Invalid(f"expected ldap://host:port or ldaps://host:port, got {value!r}")
    return value


def _ldap_filter(value: Any) -> str:
    value = _string(value)
    if "%s" not in value or not (value.startswith("(") and value.endswith(")")):
        raise _Invalid(f"expected a parenthesised LDAP filter using %s, got {value!r}")
    if value.count("(") != value.count(")"):
        raise _Invalid(f"unbalanced parentheses in {value!r}")
    return value


def _attribute_name(value: Any) -> str:
    value = _string(value)
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", value):
        raise _Invalid(f"not an LDAP attribute name: {value!r}")
    return value


@dataclass(frozen=True)
class DirectoryConfig:
    backend: str = _key(_one_of("embedded", "ldap"), "embedded")
    base_dn: str = _key(_string, "dc=example,dc=test")
    seed_ldif: str = _key(_string, "", path=True)
    admin_dn: str = _key(_string, "")
    admin_password: str = _key(_string, "")
    # backend = "ldap": the external server and how entries are found on it.
    url: str = _key(_ldap_url, "")
    bind_dn: str = _key(_string, "")
    bind_password: str = _key(_string, "")
    user_filter: str = _key(
        _ldap_filter, "(&(objectClass=inetOrgPerson)(|(mail=%s)(uid=%s)(mailLocalAddress=%s)))")
    group_filter: str = _key(
        _ldap_filter,
        "(&(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))(mail=%s))")
    uid_attribute: str = _key(_attribute_name, "uid")
    mail_attribute: str = _key(_attribute_name, "mail")
    alias_attribute: str = _key(_attribute_name, "mailLocalAddress")
    forward_attribute: str = _key(_attribute_name, "mailRoutingAddress")
    starttls: bool = _key(_bool, False)
    ca_file: str = _key(_string, "", path=True)
    tls_verify: bool = _key(_bool, True)
    timeout: float = _key(parse_duration, 10.0)
    cache_ttl: float = _key(parse_duration, 30.0)

    def check(self, path: str) -> None:
        """Checks spanning the directory keys; ConfigError naming the key."""
        if self.backend == "ldap" and not self.url:
            raise ConfigError(path, "directory.url", 'backend "ldap" needs the server\'s url')
        if self.starttls and self.url.startswith("ldaps:"):
            raise ConfigError(path, "directory.starttls",
                              "StartTLS cannot be used on an ldaps:// connection")
        if self.ca_file and not os.access(self.ca_file, os.R_OK):
            raise ConfigError(path, "directory.ca_file", f"cannot read {self.ca_file}")


@dataclass(frozen=True)
class StoreConfig:
    backend: str = _key(_string, "sqlite")
    path: str = _key(_string, "", path=True)  # "" = <data_dir>/store
    threads: int = _key(_positive_int, 8)
    quota: int | None = _key(_optional_size, None)  # per account; None = no limit


@dataclass(frozen=True)
class SecurityConfig:
    allow_plaintext_auth: bool = _key(_bool, False)
    max_connections_per_ip: int = _key(_positive_int, 50)
    # Output queued for a client that has stopped reading; past it the connection is cut.
    max_send_buffer: int = _key(parse_size, 64 * 1024 * 1024)
    # Failed logins (SMTP AUTH, IMAP, POP3) per login name and per client address before
    # each further attempt waits auth_failure_delay, doubling up to auth_max_delay.
    auth_failure_threshold: int = _key(_positive_int, 5)
    auth_failure_threshold_per_ip: int = _key(_positive_int, 20)
    auth_failure_window: float = _key(parse_duration, 900.0)
    auth_failure_delay: float = _key(parse_duration, 1.0)
    auth_max_delay: float = _key(parse_duration, 30.0)
    # Authenticated submission: per account and per client address, over the last hour;
    # 0 = no limit.
    max_messages_per_hour: int = _key(_count, 0)
    max_recipients_per_hour: int = _key(_count, 0)
    max_messages_per_hour_per_ip: int = _key(_count, 0)
    max_recipients_per_hour_per_ip: int = _key(_count, 0)

    def check(self, path: str) -> None:
        """Checks spanning the [security] keys; ConfigError naming the key."""
        if self.auth_failure_delay > self.auth_max_delay:
            raise ConfigError(path, "security.auth_failure_delay",
                              "must not be longer than security.auth_max_delay")


#: The shortest idle timeouts the protocols allow, with the rule that sets each.
IDLE_TIMEOUT_MINIMUMS = {
    "smtp": (300.0, "RFC 5321 §4.5.3.2.7 asks for at least 5 minutes"),
    "pop3": (600.0, "RFC 1939 §3 asks for at least 10 minutes"),
    "imap": (1800.0, "RFC 9051 §5.4 asks for at least 30 minutes"),
}


@dataclass(frozen=True)
class SMTPConfig:
    max_message_size: int = _key(parse_size, 50 * 1024 * 1024)
    max_recipients: int = _key(_positive_int, 100)
    max_line_length: int = _key(_positive_int, 8192)
    max_errors: int = _key(_positive_int, 10)
    idle_timeout: float = _key(parse_duration, 300.0)


@dataclass(frozen=True)
class POP3Config:
    max_errors: int = _key(_positive_int, 10)
    idle_timeout: float = _key(parse_duration, 600.0)


@dataclass(frozen=True)
class IMAPConfig:
    max_line_length: int = _key(_positive_int, 64 * 1024)
    max_literal_size: int = _key(parse_size, 50 * 1024 * 1024)
    max_errors: int = _key(_positive_int, 20)
    idle_timeout: float = _key(parse_duration, 1800.0)


@dataclass(frozen=True)
class LDAPConfig:
    anonymous_search: bool = _key(_bool, True)
    max_message_size: int = _key(parse_size, 1024 * 1024)
    size_limit: int = _key(_positive_int, 1000)
    time_limit: float = _key(parse_duration, 30.0)
    idle_timeout: float = _key(parse_duration, 900.0)


@dataclass(frozen=True)
class DNSConfig:
    upstream: tuple[str, ...] = _key(_host_port_list, ())
    recursion_clients: tuple = _key(_networks, (ipaddress.ip_network("127.0.0.0/8"),
                                                ipaddress.ip_network("::1/128")))
    zone_files: tuple[str, ...] = _key(_string_list, (), path=True)
    addresses: tuple = _key(_addresses, ())
    ttl: float = _key(parse_duration, 3600.0)
    cache_size: int = _key(_positive_int, 10000)
    timeout: float = _key(parse_duration, 5.0)
    root_hints: str = _key(_string, "", path=True)
    dkim_selector: str = _key(_string, "mail")


@dataclass(frozen=True)
class RelayConfig:
    relayhost: str = _key(_host_port, "")
    relayhost_username: str = _key(_string, "")
    relayhost_password: str = _key(_string, "")
    routes: dict = _key(_routes, {})
    queue_lifetime: float = _key(parse_duration, 5 * 86400.0)
    delay_warning: float = _key(parse_duration, 4 * 3600.0)
    retry_min: float = _key(parse_duration, 300.0)
    retry_max: float = _key(parse_duration, 3600.0)
    smtp_port: int = _key(_port, 25)
    tls: str = _key(_one_of("none", "opportunistic", "verify"), "opportunistic")
    ca_file: str = _key(_string, "", path=True)
    concurrency: int = _key(_positive_int, 20)
    connect_timeout: float = _key(parse_duration, 30.0)


@dataclass(frozen=True)
class Config:
    """The whole configuration; ``path`` is the file it came from."""

    path: str
    suite: SuiteConfig
    listen: ListenConfig
    tls: TLSConfig
    directory: DirectoryConfig
    store: StoreConfig
    security: SecurityConfig
    smtp: SMTPConfig
    pop3: POP3Config
    imap: IMAPConfig
    ldap: LDAPConfig
    dns: DNSConfig
    relay: RelayConfig

    def data_path(self, *parts: str) -> str:
        """A path below data_dir."""
        return os.path.join(self.suite.data_dir, *parts)

    @property
    def store_path(self) -> str:
        return self.store.path or self.data_path("store")


_SECTIONS = {
    "suite": SuiteConfig, "listen": ListenConfig, "tls": TLSConfig,
    "directory": DirectoryConfig, "store": StoreConfig, "security": SecurityConfig,
    "smtp": SMTPConfig, "pop3": POP3Config, "imap": IMAPConfig, "ldap": LDAPConfig,
    "dns": DNSConfig,
    "relay": RelayConfig,
}


# --------------------------------------------------------------------------- loading


def load_config(path: str) -> Config:
    """Read and validate the TOML file at ``path``; raise ConfigError on any problem."""
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as e:
        raise ConfigError(path, "file", e.strerror or str(e)) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "syntax", str(e)) from None
    return parse_config(document, path=path)


def parse_config(document: dict, *, path: str) -> Config:
    """Build a Config from an already-parsed TOML document."""
    base = os.path.dirname(os.path.abspath(path))
    for name in document:
        if name not in _SECTIONS:
            raise ConfigError(path, f"[{name}]", "unknown section")
    sections = {
        name: _section(cls, document.get(name, {}), name, path=path, base=base)
        for name, cls in _SECTIONS.items()
    }
    config = Config(path=path, **sections)
    _check(config)
    return config


def _section(cls, table: Any, name: str, *, path: str, base: str):
    if not isinstance(table, dict):
        raise ConfigError(path, f"[{name}]", "expected a table")
    known = {f.name: f for f in fields(cls)}
    for key in table:
        if key not in known:
            raise ConfigError(path, f"{name}.{key}", "unknown key")
    values = {}
    for key, value in table.items():
        spec = known[key]
        try:
            converted = spec.metadata["convert"](value)
        except _Invalid as e:
            raise ConfigError(path, f"{name}.{key}", str(e)) from None
        if spec.metadata["path"] and converted:
            converted = _resolve(base, converted)
        values[key] = converted
    section = cls(**values)
    for spec in fields(cls):
        # Defaults that are paths are relative to the config file, as given values are.
        if spec.metadata["path"] and spec.name not in table and getattr(section, spec.name):
            object.__setattr__(section, spec.name, _resolve(base, getattr(section, spec.name)))
    return section


def _resolve(base: str, value: str | tuple[str, ...]):
    if isinstance(value, tuple):
        return tuple(os.path.normpath(os.path.join(base, v)) for v in value)
    return os.path.normpath(os.path.join(base, value))


def _check(config: Config) -> None:
    """Checks that span keys or touch the file system."""
    path = config.path
    if not config.suite.domains:
        raise ConfigError(path, "suite.domains", "at least one mail domain is needed")
    if not config.suite.hostname:
        object.__setattr__(config.suite, "hostname", socket.getfqdn())
    for name, description in config.listen.enabled().items():
        problem = endpoint_problem(description)
        if problem:
            raise ConfigError(path, f"listen.{name}", problem)
    tls = config.tls
    if bool(tls.certificate) != bool(tls.private_key):
        raise ConfigError(path, "tls.certificate" if not tls.certificate else "tls.private_key",
                          "certificate and private_key go together")
    for key in ("certificate", "private_key"):
        value = getattr(tls, key)
        if value and not os.access(value, os.R_OK):
            raise ConfigError(path, f"tls.{key}", f"cannot read {value}")
    config.directory.check(path)
    config.security.check(path)
    for section, (minimum, rule) in IDLE_TIMEOUT_MINIMUMS.items():
        timeout = getattr(config, section).idle_timeout
        if timeout < minimum:
            raise ConfigError(path, f"{section}.idle_timeout",
                              f"{_seconds(timeout)} is too short: {rule}")
    if config.directory.seed_ldif and not os.access(config.directory.seed_ldif, os.R_OK):
        raise ConfigError(path, "directory.seed_ldif", f"cannot read {config.directory.seed_ldif}")
    for zone in config.dns.zone_files:
        if not os.access(zone, os.R_OK):
            raise ConfigError(path, "dns.zone_files", f"cannot read {zone}")
    for key, value in (("dns.root_hints", config.dns.root_hints),
                       ("relay.ca_file", config.relay.ca_file)):
        if value and not os.access(value, os.R_OK):
            raise ConfigError(path, key, f"cannot read {value}")
    if bool(config.relay.relayhost_username) != bool(config.relay.relayhost_password):
        raise ConfigError(path, "relay.relayhost_password",
                          "relayhost_username and relayhost_password go together")
    if config.relay.retry_min > config.relay.retry_max:
        raise ConfigError(path, "relay.retry_min", "must not be longer than relay.retry_max")


def _seconds(value: float) -> str:
    return f"{value:g}s"


def endpoint_problem(description: str) -> str | None:
    """Why ``description`` is not a usable Twisted server endpoint description, or None."""
    from twisted.internet.endpoints import serverFromString

    if description.split(":", 1)[0] not in ("tcp", "tcp6", "ssl", "unix", "systemd"):
        return f"unsupported endpoint type in {description!r} (use tcp:, tcp6:, ssl:, unix: or systemd:)"
    try:
        # Building an endpoint object does not touch the reactor; only listen() would.
        serverFromString(_NO_REACTOR, description)
    except (ValueError, TypeError, KeyError, OSError) as e:
        return f"bad endpoint description {description!r}: {e}"
    except Exception as e:  # e.g. an unreadable certificate in an ssl: description
        return f"bad endpoint description {description!r}: {e}"
    return None


_NO_REACTOR = object()
