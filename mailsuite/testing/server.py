"""
Start the real `twistd -n mailsuite` in a subprocess for integration tests and benchmarks:
an inline config on port-0 endpoints, the bound ports read from listening.json.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEMO_USERS = {
    "alice@example.test": "alice-password",
    "bob@example.test": "bob-password",
}

DEFAULT_LISTEN = {
    "smtp": "tcp:port=0:interface=127.0.0.1",
    "submission": "tcp:port=0:interface=127.0.0.1",
    "submissions": "tcp:port=0:interface=127.0.0.1",
    "pop3": "tcp:port=0:interface=127.0.0.1",
    "pop3s": "tcp:port=0:interface=127.0.0.1",
    "imap": "tcp:port=0:interface=127.0.0.1",
    "ldap": "tcp:port=0:interface=127.0.0.1",
}


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))


def render_config(sections: dict) -> str:
    """TOML text for a {section: {key: value}} mapping."""
    lines = []
    for section, keys in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in keys.items()]
        lines.append("")
    return "\n".join(lines)


def free_port(*hosts: str) -> int:
    """A TCP port free on every one of ``hosts`` right now (the servers bind it next)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind((hosts[0], 0))
            port = first.getsockname()[1]
            others = []
            try:
                for host in hosts[1:]:
                    other = socket.socket()
                    others.append(other)
                    other.bind((host, port))
                return port
            except OSError:
                continue
            finally:
                for other in others:
                    other.close()
    raise RuntimeError("no common free port")


def free_udp_port(host: str) -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            udp.bind((host, 0))
            port = udp.getsockname()[1]
            try:
                tcp.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free DNS port")


class RunningSuite:
    """
    One mailsuite server process.  ``port(name)`` gives a listener's bound port; ``stop()``
    ends it with SIGTERM, ``kill()`` with SIGKILL; ``start()`` starts it again on the same
    data (with new ports).
    """

    def __init__(self, folder: str, *, store: str = "sqlite", listen: dict | None = None,
                 extra: dict | None = None, plaintext: bool = True,
                 twistd_args: tuple[str, ...] = ()):
        self.folder = folder
        self.data_dir = os.path.join(folder, "var")
        self.config_path = os.path.join(folder, "mailsuite.toml")
        self.log_path = os.path.join(folder, "twistd.log")
        os.makedirs(folder, exist_ok=True)
        shutil.copy(os.path.join(ROOT, "etc", "directory.ldif"), os.path.join(folder, "directory.ldif"))
        sections = {
            "suite": {"hostname": "mail.example.test", "domains": ["example.test"],
                      "data_dir": "var"},
            "listen": dict(DEFAULT_LISTEN if listen is None else listen),
            "directory": {"base_dn": "dc=example,dc=test", "seed_ldif": "directory.ldif"},
            "store": {"backend": store},
            "security": {"allow_plaintext_auth": plaintext},
        }
        for section, keys in (extra or {}).items():
            sections.setdefault(section, {}).update(keys)
        with open(self.config_path, "w") as f:
            f.write(render_config(sections))
        self.twistd_args = tuple(twistd_args)
        self.process: subprocess.Popen | None = None
        self.listeners: dict[str, str] = {}

    @property
    def listening_path(self) -> str:
        return os.path.join(self.data_dir, "run", "listening.json")

    def environment(self) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def command(self) -> list[str]:
        return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", "--logfile", self.log_path, *self.twistd_args,
                "mailsuite", "--config", self.config_path]

    def start(self, timeout: float = 30.0) -> "RunningSuite":
        if os.path.exists(self.listening_path):
            os.unlink(self.listening_path)
        self.process = subprocess.Popen(
            self.command(), cwd=self.folder, env=self.environment(),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mailsuite exited with {self.process.returncode}: "
                                   f"{self.process.stderr.read().decode()}\n{self.log()}")
            try:
                with open(self.listening_path) as f:
                    report = json.load(f)
                if report["pid"] == self.process.pid:
                    self.listeners = report["listeners"]
                    return self
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"mailsuite did not start within {timeout} s\n{self.log()}")

    def port(self, name: str) -> int:
        return int(self.listeners[name].rsplit(":", 1)[1])

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-5000:]
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        return self.process.wait()

    def admin(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        """Run the `mailsuite` admin command against this suite's config."""
        return subprocess.run(
            [sys.executable, "-m", "mailsuite", "--config", self.config_path, *args],
            input=input, capture_output=True, text=True, env=self.environment(), cwd=self.folder,
            timeout=60,
        )
