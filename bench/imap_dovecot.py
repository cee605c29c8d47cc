"""
A throw-away Dovecot IMAP instance for the benchmark: its own minimal config, plaintext IMAP
on a loopback port, one passwd-file user, mail in Maildir under a given root
(``<root>/<user part>/Maildir``).  Mail processes run as the calling user, or as ``nobody``
when the benchmark runs as root (Dovecot refuses mail access as uid 0).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time

CONFIG = """\
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = {login_user}
default_internal_user = {internal_user}
first_valid_uid = {uid}
last_valid_uid = {uid}
mail_location = maildir:{mail_root}/%n/Maildir
mail_uid = {uid}
mail_gid = {gid}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={mail_root}/%n
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service imap {{
  process_limit = 64
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mail_owner() -> tuple[int, int, str]:
    """uid, gid and user name for mail processes."""
    if os.geteuid() != 0:
        return os.getuid(), os.getgid(), pwd.getpwuid(os.getuid()).pw_name
    nobody = pwd.getpwnam("nobody")
    return nobody.pw_uid, nobody.pw_gid, "nobody"


class Dovecot:
    def __init__(self, base: str, mail_root: str, users: dict[str, str]):
        self.base = base
        self.mail_root = mail_root
        self.port = free_port()
        self.config = os.path.join(base, "dovecot.conf")
        self.binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
        self.process: subprocess.Popen | None = None
        uid, gid, name = mail_owner()
        if os.geteuid() == 0:
            login_user, internal_user = "dovenull", "dovecot"
        else:
            login_user = internal_user = name
        os.makedirs(os.path.join(base, "run"), exist_ok=True)
        os.makedirs(os.path.join(base, "state"), exist_ok=True)
        with open(os.path.join(base, "users"), "w") as f:
            f.writelines(f"{user}:{password}\n" for user, password in users.items())
        with open(self.config, "w") as f:
            f.write(CONFIG.format(base=base, mail_root=mail_root, port=self.port, uid=uid,
                                  gid=gid, login_user=login_user, internal_user=internal_user))
        if os.geteuid() == 0:
            for folder, dirs, names in os.walk(mail_root):
                for name in [*dirs, *names]:
                    os.lchown(os.path.join(folder, name), uid, gid)
            os.chown(mail_root, uid, gid)
            os.chmod(os.path.join(base, "users"), 0o644)

    def start(self, timeout: float = 30.0) -> "Dovecot":
        self.process = subprocess.Popen([self.binary, "-F", "-c", self.config],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self.process.stderr.read().decode()}\n"
                                   f"{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"dovecot did not listen within {timeout} s\n{self.log()}")

    def log(self) -> str:
        try:
            with open(os.path.join(self.base, "dovecot.log"), errors="replace") as f:
                return f.read()[-3000:]
        except FileNotFoundError:
            return ""

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
