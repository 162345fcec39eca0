"""Child processes of ``phd demo``: start, watch, and stop them without leaving orphans.

What it is for: every long-running part of the demo (mosquitto, the server, the gateway) runs
as a child process in its own session (process group), with its output in a log file under
the demo directory. :class:`Supervisor` stops them in reverse start order: SIGTERM to the
group, then SIGKILL after a timeout. It is a context manager, so an exception or Ctrl-C in the
demo still stops every child.

What it must never do: signal a process it did not start (it only signals the process groups
it created), or print a child's output to the console (logs may be read by the operator; the
demo only names the file).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = [
    "Child",
    "ChildExitedError",
    "DemoSetupError",
    "Supervisor",
    "check_port_free",
    "free_port",
    "require_binary",
]

log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class DemoSetupError(Exception):
    """The demo cannot start; ``hint`` says what to do next. Root of this package's errors."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


class ChildExitedError(DemoSetupError):
    """A child process ended while the demo still needed it."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the kernel reports free on ``host`` now (bind to 0, read, release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_port_free(port: int, host: str = "127.0.0.1", *, what: str) -> None:
    """Refuse early, with advice, when a port the operator asked for is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise DemoSetupError(
                f"port {port} on {host} ({what}) is already in use",
                f"stop whatever listens there (ss -ltnp 'sport = :{port}') or pick another "
                "port, or leave the port option out to use a free one",
            ) from exc


def require_binary(path_or_name: str, *, package: str) -> str:
    """Absolute path of an executable, or a DemoSetupError saying how to install it."""
    found = shutil.which(path_or_name)
    if found is None:
        raise DemoSetupError(
            f"{path_or_name} was not found",
            f"install it (Debian/Ubuntu: apt-get install {package}) or pass its path",
        )
    return found


@dataclass
class Child:
    """One started child process and the file its output goes to."""

    name: str
    argv: tuple[str, ...]
    log_path: Path
    proc: subprocess.Popen[bytes]
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check(self) -> None:
        """Raise ChildExitedError (with the log tail location) if the process has ended."""
        code = self.proc.poll()
        if code is not None:
            raise ChildExitedError(
                f"{self.name} exited with status {code}",
                f"read its log: {self.log_path}",
            )

    def log_tail(self, limit: int = 2000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-limit:].decode("utf-8", "replace")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM the child's process group, SIGKILL it after ``timeout``; its exit status."""
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s; killing it", self.name, timeout)
                self._signal(signal.SIGKILL)
                self.proc.wait()
        # Grandchildren left in the group (a server's worker processes) go too.
        self._signal(signal.SIGKILL)
        return self.proc.returncode

    def _signal(self, sig: signal.Signals) -> None:
        # The child leads its own session, so its process group id is its pid; never signal
        # anything else (ProcessLookupError: the group is already empty).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)


class Supervisor:
    """Starts children and guarantees they are stopped (reverse order) on exit."""

    def __init__(self, log_dir: Path, *, stop_timeout: float = STOP_TIMEOUT) -> None:
        self.log_dir = log_dir
        self.stop_timeout = stop_timeout
        self.children: list[Child] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        merged = dict(os.environ)
        if env:
            merged.update(env)
        command = list(argv)
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            # Safety net for a demo killed with SIGKILL (no clean-up code runs then): the
            # kernel sends SIGTERM to the child when this process dies. (util-linux setpriv;
            # a preexec_fn calling prctl would be unsafe in a process with threads.)
            command = [setpriv, "--pdeathsig", "TERM", "--", *command]
        with log_path.open("ab") as out:
            proc = subprocess.Popen(  # noqa: S603 - argv built by the demo, no shell
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=merged,
                cwd=cwd,
                start_new_session=True,  # own process group: signalled as one, never by Ctrl-C
            )
        child = Child(name=name, argv=tuple(argv), log_path=log_path, proc=proc)
        self.children.append(child)
        log.info("started %s (pid %d)", name, proc.pid)
        return child

    def check(self) -> None:
        for child in self.children:
            child.check()

    def stop_one(self, child: Child, sig: signal.Signals = signal.SIGTERM) -> int | None:
        """Stop one child now and forget it (a fault test's crash, or a restart).

        SIGKILL is a crash: no clean-up runs in the child, and its whole process group goes.
        Anything else gets the normal stop (``sig``, then SIGKILL after the timeout).
        """
        if child not in self.children:
            raise ValueError(f"{child.name} is not a child of this supervisor")
        self.children.remove(child)
        if sig == signal.SIGKILL:
            child._signal(signal.SIGKILL)
            child.proc.wait()
            return child.proc.returncode
        if child.proc.poll() is None and sig != signal.SIGTERM:
            child._signal(sig)
        return child.stop(self.stop_timeout)

    def stop_all(self) -> dict[str, int | None]:
        """Stop every child, newest first; returns each one's exit status."""
        statuses: dict[str, int | None] = {}
        # A second Ctrl-C, a SIGTERM or the terminal going away while stopping must not leave
        # the rest running: ignore them until every child is stopped.
        previous: dict[signal.Signals, Any] = {}
        for sig in _STOP_SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread: cannot change them
                previous[sig] = signal.signal(sig, signal.SIG_IGN)
        try:
            while self.children:
                child = self.children.pop()
                statuses[child.name] = child.stop(self.stop_timeout)
        finally:
            for sig, handler in previous.items():
                with contextlib.suppress(ValueError, TypeError):
                    signal.signal(sig, handler)
        return statuses

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
