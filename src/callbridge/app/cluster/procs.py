"""Child processes of `callbridge cluster`: started in their own session, logged to a file, watched.

Each child gets its own process group, so a Ctrl-C in the terminal reaches the launcher alone, and the
launcher decides the order things stop in (workers drain before the proxy and Redis go).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

log = logging.getLogger("callbridge.cluster")

# Where Debian puts kamailio and kamcmd: not on every user's PATH.
SYSTEM_BIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")
STOP_TIMEOUT_S = 10.0
GROUP_EXIT_S = 3.0  # how long a group's other members get to exit after its leader
GROUP_POLL_S = 0.05
LOG_TAIL_LINES = 15
LOG_TAIL_BYTES = 8192


class StartError(RuntimeError):
    """The cluster could not start; the message says what to do."""


def find_binary(name: str) -> str:
    """The program's path, or StartError telling how to install it."""
    path = shutil.which(name) or shutil.which(name, path=os.pathsep.join(SYSTEM_BIN_DIRS))
    if path is None:
        raise StartError(f"{name} is not installed: run scripts/setup.sh (it installs kamailio and redis-server)")
    return path


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class ManagedProcess:
    """One child: start, watch, signal, stop. ``on_exit`` runs when it ends without being stopped."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, *, cwd: Path | None = None,
                 env: Mapping[str, str] | None = None, group: bool = False) -> None:
        self.name = name
        # Signal the whole process group: Kamailio's children outlive a main process that was killed.
        self.group = group
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.on_exit: Callable[[ManagedProcess], None] | None = None
        self.stopping = False
        self._process: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task[int] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.returncode

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            try:
                self._process = await asyncio.create_subprocess_exec(
                    *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
                    cwd=self.cwd, env=self.env, start_new_session=True)
            except OSError as exc:
                raise StartError(f"cannot start {self.name} ({self.argv[0]}): {exc.strerror}") from None
        self._watch = asyncio.get_running_loop().create_task(self._watch_exit(), name=f"watch-{self.name}")

    async def _watch_exit(self) -> int:
        assert self._process is not None
        returncode = await self._process.wait()
        if not self.stopping and self.on_exit is not None:
            self.on_exit(self)
        return returncode

    async def wait(self) -> int:
        assert self._watch is not None, "not started"
        return await asyncio.shield(self._watch)

    def send(self, sig: signal.Signals) -> None:
        if self._process is None:
            return
        try:
            if self.group:  # its own session (start_new_session), so its pid is the group's id
                os.killpg(self._process.pid, sig)
            elif self.running:
                self._process.send_signal(sig)
        except ProcessLookupError:  # it (and its group) ended between the check and the signal
            pass

    def _group_alive(self) -> bool:
        assert self._process is not None
        try:
            os.killpg(self._process.pid, 0)
        except ProcessLookupError:
            return False
        return True

    async def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """Signal, wait up to ``timeout``, then SIGKILL. Returns the exit status (None if never started)."""
        if self._process is None:
            return None
        self.stopping = True
        self.send(sig)
        try:
            returncode = await asyncio.wait_for(self.wait(), timeout)
        except TimeoutError:
            log.warning("%s did not stop in %.0f s: killing it", self.name, timeout, extra={"pid": self.pid})
            self.send(signal.SIGKILL)
            returncode = await self.wait()
        if self.group:
            # The children are not ours to wait on: give them a moment to follow, then make sure.
            deadline = time.monotonic() + GROUP_EXIT_S
            while self._group_alive() and time.monotonic() < deadline:
                await asyncio.sleep(GROUP_POLL_S)
            self.send(signal.SIGKILL)
        return returncode

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            with self.log_path.open("rb") as file:
                file.seek(max(0, file.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
                text = file.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
