"""Process management shared by the real-server test fixtures in this package.

Every fixture (Kafka, slapd, 389-ds, Samba, Alertmanager, Prometheus) runs its
server as a child in its own process group that dies with the thread that
started it (``setpriv --pdeathsig`` where it exists) and is killed at
interpreter exit. `ServerProcess` does that spawning, stopping and waiting for
readiness; `log_tail`, `port_accepts`, `free_loopback_ports` and `run_logged`
(a set-up tool whose output goes to a log) are the small helpers the fixtures
share. What is specific to one server (its config, its readiness check,
creating or provisioning it) stays in that server's module.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

HOST = "127.0.0.1"

# Every server we started and have not yet reaped; killed at interpreter exit,
# before the clean-ups registered with `at_exit`.
_LIVE: set[subprocess.Popen[bytes]] = set()
_AT_EXIT: list[Callable[[], None]] = []


def _kill_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the process group led by ``proc``; only call before it is reaped."""
    with contextlib.suppress(ProcessLookupError):  # the whole group is already gone
        os.killpg(proc.pid, sig)


@atexit.register
def _kill_all_live() -> None:
    for proc in list(_LIVE):
        if proc.poll() is None:
            _kill_group(proc, signal.SIGKILL)
            proc.wait()
        _LIVE.discard(proc)
    for cleanup in _AT_EXIT:
        cleanup()


def at_exit(cleanup: Callable[[], None]) -> Callable[[], None]:
    """Run ``cleanup`` at interpreter exit, after every live server has been killed."""
    _AT_EXIT.append(cleanup)
    return cleanup


def log_tail(path: Path, lines: int = 60) -> str:
    """The last ``lines`` lines of a log file, for error messages."""
    if not path.exists():
        return f"<{path} does not exist>"
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:])


def run_logged(
    command: Sequence[str],
    *,
    what: str,
    log_path: Path,
    timeout: float,
    error: type[Exception],
    cwd: Path,
    env: Mapping[str, str] | None = None,
) -> None:
    """Run a set-up tool (``what``: "dscreate from-file", "provisioning EXAMPLE.ORG") to its end, its output
    appended to ``log_path`` under a line naming ``what`` and the time (not the command: it may carry a password);
    raise ``error`` with the log's tail when it fails or outlives ``timeout`` seconds."""
    with log_path.open("ab") as log:
        log.write(f"\n=== {what} at {time.ctime()} ===\n".encode())
        log.flush()
        proc = _logging_to(log, command, cwd=cwd, env=env)
    try:
        returncode = proc.wait(timeout=timeout)
    except BaseException as exc:  # as subprocess.run: a tool outliving its wait (or an interrupt) is killed
        proc.kill()
        proc.wait()
        if isinstance(exc, subprocess.TimeoutExpired):
            raise error(f"{what} timed out after {timeout}s\n{log_tail(log_path)}") from exc
        raise
    if returncode != 0:
        raise error(f"{what} failed ({returncode})\n{log_tail(log_path)}")


def _logging_to(
    log: BinaryIO,
    command: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``command`` with no input and its stdout and stderr going to ``log``."""
    return subprocess.Popen(
        list(command),
        cwd=cwd,
        env=None if env is None else dict(env),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=new_session,
    )


def port_accepts(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds (a cheap probe before a real client)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _ephemeral_port_floor() -> int:
    """Lowest port the kernel hands out to outgoing connections (Linux), else 32768."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(encoding="ascii")
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_loopback_ports(count: int, error: type[Exception] = RuntimeError) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1, below the ephemeral range (else raise ``error``).

    Below the ephemeral range no outgoing connection can take a port while the
    server is stopped, so ``stop()`` + ``start()`` always gets the same ports back.
    """
    high = _ephemeral_port_floor() - 1
    low = max(1024, high - 20000)
    candidates = random.sample(range(low, high + 1), min(500, high - low + 1))
    sockets: list[socket.socket] = []
    try:
        for port in candidates:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((HOST, port))
            except OSError:
                sock.close()
                continue
            sockets.append(sock)
            if len(sockets) == count:
                return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
    raise error(f"no {count} free loopback ports in {low}-{high}")


class ServerProcess:
    """One server child process (at most one at a time) in its own process group.

    ``name`` appears in the start banner written to ``log_path`` and in errors;
    ``error`` is the exception type `wait_ready` raises.
    """

    def __init__(self, name: str, log_path: Path, error: type[Exception] = RuntimeError) -> None:
        self.name = name
        self.log_path = log_path
        self.error = error
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def spawn(
        self,
        command: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        pdeathsig: bool = True,
        banner: bool = True,
    ) -> None:
        """Start ``command`` with stdout/stderr appended to ``log_path``.

        With ``pdeathsig`` the command is wrapped in ``setpriv --pdeathsig KILL``
        (where it exists), so the server gets SIGKILL if the thread that started
        it dies, even by SIGKILL, and an aborted test run cannot leave it behind.
        """
        setpriv = shutil.which("setpriv") if pdeathsig and sys.platform.startswith("linux") else None
        if setpriv is not None:
            command = [setpriv, "--pdeathsig", "KILL", "--", *command]
        with self.log_path.open("ab") as log:
            if banner:
                log.write(f"\n=== starting {self.name} at {time.ctime()} ===\n".encode())
                log.flush()
            proc = _logging_to(log, command, cwd=cwd, env=env, new_session=True)
        self._proc = proc
        _LIVE.add(proc)

    def stop(self, timeout: float) -> None:
        """SIGTERM the process group; SIGKILL it if still alive after ``timeout`` s."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _kill_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc, signal.SIGKILL)
                proc.wait()
        self._forget(proc)

    def kill(self) -> None:
        """SIGKILL the process group immediately (an unclean crash)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _kill_group(proc, signal.SIGKILL)
            proc.wait()
        self._forget(proc)

    def wait_ready(
        self,
        probe: Callable[[], bool],
        *,
        timeout: float,
        where: str,
        logs: Callable[[], str],
        retry_on: tuple[type[BaseException], ...] = (OSError,),
        interval: float = 0.1,
    ) -> None:
        """Call ``probe`` every ``interval`` s until it returns true.

        ``probe`` may also raise one of ``retry_on`` (kept as the last error).
        Raises ``error`` with ``logs()`` if the server exits first or is not
        ready within ``timeout`` seconds; the caller decides whether to kill it.
        """
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise self.error(f"{self.name} exited with {code} during start\n{logs()}")
            try:
                if probe():
                    return
            except retry_on as exc:
                last_error = exc
            time.sleep(interval)
        raise self.error(f"{self.name} not ready at {where} after {timeout}s (last error: {last_error!r})\n{logs()}")

    def _forget(self, proc: subprocess.Popen[bytes]) -> None:
        _LIVE.discard(proc)
        if self._proc is proc:
            self._proc = None
