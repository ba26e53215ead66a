"""Run Debian's real ``auditd`` for tests: the kernel's audit records of one folder, in a log of the test's own.

`AuditDaemon` writes an ``auditd.conf`` into a caller-supplied work dir (RAW
records to ``audit.log`` there, no plugins) and starts ``/usr/sbin/auditd -n``
(in the foreground, not the system service). The kernel accepts one audit
daemon at a time, so a machine already running one is refused with the reason.
:meth:`watch` adds a syscall rule for permission changes below a folder under a
key of the test's own; :meth:`stop` removes the test's rules, stops the daemon and
puts the kernel's ``enabled`` flag back as it found it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.integration.servers.process import ServerProcess, log_tail
from tests.integration.servers.started import StartedInWith

BINARY = Path("/usr/sbin/auditd")
AUDITCTL = "/usr/sbin/auditctl"
SYSCALLS = "chmod,fchmodat,chown,fchownat,lchown,setxattr,lsetxattr,removexattr,lremovexattr"


class AuditDaemonError(RuntimeError):
    """auditd is missing, another one runs, or it would not start."""


def _status() -> dict[str, str]:
    shown = subprocess.run([AUDITCTL, "-s"], capture_output=True, text=True, check=True, timeout=30).stdout
    return dict(line.split(" ", 1) for line in shown.splitlines() if " " in line)


class AuditDaemon(StartedInWith):
    def __init__(self, workdir: Path, *, start_timeout: float = 30.0) -> None:
        self.workdir = Path(workdir).resolve()
        self.start_timeout = start_timeout
        self._server = ServerProcess("auditd", self.workdir / "auditd.out", AuditDaemonError)
        self._rules: list[list[str]] = []
        self._enabled_before: str | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "audit.log"

    def start(self) -> None:
        if not BINARY.exists():
            raise AuditDaemonError(f"{BINARY} not found: scripts/install.sh --test installs auditd")
        status = _status()
        if status.get("pid", "0") != "0":
            raise AuditDaemonError(f"an audit daemon (pid {status['pid']}) runs already: the kernel takes one")
        self._enabled_before = status.get("enabled", "0")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "plugins.d").mkdir(exist_ok=True)
        config = self.workdir / "auditd.conf"
        config.write_text(self._config(), encoding="utf-8")
        config.chmod(0o600)  # auditd refuses a config others may write
        self._server.spawn([str(BINARY), "-n", "-c", str(self.workdir)], cwd=self.workdir)
        try:
            self._server.wait_ready(
                lambda: _status().get("pid", "0") != "0" and self.log_path.exists(),
                timeout=self.start_timeout,
                where="the kernel's audit netlink",
                logs=lambda: log_tail(self._server.log_path),
            )
        except BaseException:
            self.stop()
            raise

    def watch(self, folder: Path, key: str) -> None:
        """Record permission changes of paths below ``folder`` (by path-taking calls), under ``key``."""
        rule = ["always,exit", "-F", "arch=b64", "-S", SYSCALLS, "-F", f"dir={folder}", "-k", key]
        subprocess.run([AUDITCTL, "-a", *rule], check=True, capture_output=True, timeout=30)
        self._rules.append(rule)

    def stop(self, timeout: float = 10.0) -> None:
        for rule in self._rules:
            subprocess.run([AUDITCTL, "-d", *rule], capture_output=True, timeout=30)
        self._rules.clear()
        self._server.stop(timeout)
        if self._enabled_before is not None:
            subprocess.run([AUDITCTL, "-e", self._enabled_before], capture_output=True, timeout=30)

    def records(self, key: str) -> list[str]:
        """The log's lines of events under ``key`` (for a test's messages)."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""
        serials = set(re.findall(rf'msg=audit\([\d.]+:(\d+)\):.* key="{re.escape(key)}"', text))
        return [line for line in text.splitlines() if any(f":{s}):" in line for s in serials)]

    def _config(self) -> str:
        return f"""\
local_events = yes
write_logs = yes
log_file = {self.log_path}
log_group = root
log_format = RAW
flush = INCREMENTAL_ASYNC
freq = 1
max_log_file = 64
num_logs = 2
max_log_file_action = ROTATE
space_left = 2
space_left_action = ignore
admin_space_left = 1
admin_space_left_action = ignore
disk_full_action = ignore
disk_error_action = ignore
plugin_dir = {self.workdir / "plugins.d"}
name_format = none
"""
